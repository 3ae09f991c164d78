"""``azimds wait`` and ``azimds status``: is the local node ready, and what does it serve."""

from __future__ import annotations

import http.client
import time
from pathlib import Path
from urllib.parse import urlsplit

import click

from azimds.admin.client import AdminClient, AdminError, Status
from azimds.cli.common import (
    client,
    control_plane_options,
    main,
    seconds_of,
    show,
    state_dir_of,
    state_dir_option,
)
from azimds.host import state

POLL = 0.1  # seconds between checks
REPORT = 1.0  # seconds between progress lines
PROBE_TIMEOUT = 2.0  # seconds one check may take: a node that hangs is not ready


def _guest_status(url: str) -> int:
    """The status of ``GET /metadata/versions`` with ``Metadata: true``, as a guest asks."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port, timeout=PROBE_TIMEOUT
    )
    try:
        connection.request("GET", "/metadata/versions", headers={"Metadata": "true"})
        return connection.getresponse().status
    finally:
        connection.close()


def _not_ready(where: Path) -> str | None:
    """What is not ready yet, and where it was looked for; None when the node serves."""
    admin_file = where / state.ADMIN_FILE
    try:
        # Read again on every check: a node starting writes it once it serves.
        found = state.read_admin(where)
    except (OSError, ValueError, KeyError):
        return f"no node has written {admin_file}"
    url = found["url"]
    try:
        AdminClient(url, found["token"], PROBE_TIMEOUT).health()
    except AdminError as exc:
        if exc.status:
            return f"the control plane at {url} answers /healthz with {exc.status}"
        return f"{exc} (from {admin_file})"
    if not found["guest"]:
        return f"{admin_file} names no guest URL"
    guest = found["guest"][0]
    try:
        status = _guest_status(guest)
    except (OSError, http.client.HTTPException) as exc:
        return f"cannot reach the guest plane at {guest}: {exc} (from {admin_file})"
    # 403: in source-ip mode this host's address is no VM's; the guest plane serves all the same.
    if status not in (200, 403):
        return f"the guest plane at {guest} answers /metadata/versions with {status}"
    return None


@main.command()
@state_dir_option
@click.option(
    "--timeout",
    default="30",
    show_default=True,
    metavar="DURATION",
    callback=lambda ctx, param, value: seconds_of(value),
    help="How long to wait: 30, 90s, 2m.",
)
@click.pass_context
def wait(ctx: click.Context, state_dir: Path | None, timeout: float) -> None:
    """Wait until the local node serves: its control plane answers /healthz and its first
    guest URL answers GET /metadata/versions (with a 403 in source-ip mode, where this host
    is no VM). Exits 0 then, 1 after --timeout.

    The node is found through its state directory (admin.json), which may not exist yet:
    start `azimds serve &`, then `azimds wait`, in either order. Example:

    \b
      azimds serve --store memory: &
      azimds wait --timeout 60
    """
    where = state_dir_of(ctx)
    deadline = time.monotonic() + timeout
    reported = float("-inf")
    while (problem := _not_ready(where)) is not None:
        now = time.monotonic()
        if now >= deadline:
            raise click.ClickException(
                f"azimds is not ready after {timeout:g}s: {problem}. Is `azimds serve` "
                f"running with the state directory {where}? Give --state-dir to look elsewhere"
            )
        if now - reported >= REPORT:
            click.echo(f"waiting for azimds: {problem}", err=True)
            reported = now
        time.sleep(min(POLL, deadline - now))


def _duration(seconds: float) -> str:
    """``3725.2`` -> ``1h 2m 5s``."""
    whole = int(seconds)
    parts = [(whole // 86400, "d"), (whole // 3600 % 24, "h"), (whole // 60 % 60, "m")]
    shown = [f"{value}{unit}" for value, unit in parts if value]
    return " ".join([*shown, f"{whole % 60}s"])


def _report(status: Status) -> str:
    reachable = "reachable" if status["storeReachable"] else "UNREACHABLE"
    lines = [f"azimds {status['version']} (pid {status['pid']}), up {_duration(status['uptime'])}"]
    lines += [f"  guest plane    {url}" for url in status["guest"]]
    lines.append(f"  control plane  {status['controlPlane']}")
    # Null when not served; an older node, without a WireServer, has neither key.
    if wireserver := status.get("wireserver"):
        lines.append(f"  WireServer     {wireserver}")
    if hostplugin := status.get("hostplugin"):
        lines.append(f"  host plugin    {hostplugin}")
    lines += [
        f"  store          {status['store']} ({reachable}), revision {status['revision']} served",
        f"  VMs            {status['vms']} (caller mode {status['callerMode']})",
    ]
    return "\n".join(lines)


@main.command()
@control_plane_options
@click.option("--json", "as_json", is_flag=True, help="Print the control plane's JSON.")
@click.pass_context
def status(
    ctx: click.Context,
    state_dir: Path | None,
    admin: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Show the local node: version, pid, uptime, its listeners (the WireServer and its host
    plugin too, when served), its store (reachable?) and the revision it serves, its VMs.
    Exits 1 when no node answers."""
    show(client(ctx).status(), as_json, _report)
