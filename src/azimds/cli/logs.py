"""``azimds logs``: the guest requests a running node answered."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from azimds.cli.common import client, control_plane_options, main

POLL_INTERVAL = 0.5  # seconds between reads while following


def _line(entry: dict[str, Any]) -> str:
    target = entry["path"] + (f"?{entry['query']}" if entry["query"] else "")
    vm = entry["vm"] or f"({entry['caller']})"
    fault = f" fault {entry['fault']}" if entry.get("fault") else ""
    return (
        f"{entry['time']} {vm} {entry['method']} {target} {entry['status']} "
        f"{entry['latencyMs']:.2f}ms {entry['requestId'] or '-'}{fault}"
    )


@main.command()
@control_plane_options
@click.option("--follow", "-f", is_flag=True, help="Keep printing new requests until Ctrl+C.")
@click.option("--since", type=int, default=0, help="Only requests after this sequence number.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@click.pass_context
def logs(
    ctx: click.Context,
    state_dir: Path | None,
    admin: str | None,
    token: str | None,
    follow: bool,
    since: int,
    as_json: bool,
) -> None:
    """Show the guest requests the node answered (its last 10,000): time, VM, method,
    path, status (0: a fault sent no answer), latency, request id, and the fault rule that
    fired, if one did."""
    node = client(ctx)
    while True:
        for entry in node.requests(since):
            click.echo(json.dumps(entry) if as_json else _line(entry))
            since = entry["sequence"]
        if not follow:
            return
        try:
            time.sleep(POLL_INTERVAL)
        except KeyboardInterrupt:
            return
