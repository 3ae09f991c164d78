"""``azimds faults ...``: make a running node fail on purpose, the way the real service does."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import click

from azimds.cli.common import (
    client,
    control_plane_options,
    json_option,
    main,
    seconds_of,
    show,
    table,
)


@main.group()
@control_plane_options
def faults(state_dir: Path | None, admin: str | None, token: str | None) -> None:
    """Add, list and remove fault rules: 410, 429, 500, 503, slow answers, resets, hangs.

    \b
      azimds faults add 410 410                    # the next two requests get 410
      azimds faults add --path /metadata/identity --vm web-1 500
      azimds faults add --retry-after 5 --for 1m 429
      azimds faults add --probability 0.1 reset    # one request in ten: connection reset
      azimds faults add --delay 2                  # every answer two seconds late
      azimds faults add --count 1 hang             # one request never answered
      azimds faults list
      azimds faults remove <ID>
      azimds faults clear

    ACTIONS run in turn, once each, then the rule is spent (unless --count says more); one
    action repeats until --count runs out, or for ever. `pass` answers normally.
    """


def _when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _label(action: dict[str, Any]) -> str:
    name = str(action["status"]) if "status" in action else next(iter(action), "pass")
    extras = []
    if "retryAfter" in action:
        extras.append(f"retry-after {action['retryAfter']}")
    if action.get("delay"):
        extras.append(f"+{action['delay']:g}s")
    return name + (f" ({', '.join(extras)})" if extras else "")


def _row(rule: dict[str, Any]) -> list[str]:
    fired = f"{rule['fired']}/{rule['count']}" if rule["count"] is not None else str(rule["fired"])
    return [
        rule["id"],
        rule["vm"] or "*",
        rule["method"] or "*",
        rule["path"],
        ", ".join(_label(a) for a in rule["actions"]),
        f"{rule['probability']:g}",
        fired,
        _when(rule["until"]),
        "yes" if rule["active"] else "no",
    ]


HEADER = ["ID", "VM", "METHOD", "PATH", "ACTIONS", "P", "FIRED", "UNTIL", "ACTIVE"]


@faults.command("list")
@json_option
@click.pass_context
def faults_list(ctx: click.Context, as_json: bool) -> None:
    """List fault rules, oldest first (the first that fires wins), with firings on this node."""
    show(client(ctx).faults(), as_json, lambda rules: table([_row(r) for r in rules], HEADER))


@faults.command("add")
@click.argument("actions", nargs=-1, metavar="[ACTION]...")
@click.option("--vm", help="Only this VM (name or vmId); default every VM.")
@click.option("--path", default="/metadata", show_default=True, help="Only paths under this.")
@click.option("--method", type=click.Choice(["GET", "POST"], case_sensitive=False))
@click.option(
    "--probability", type=click.FloatRange(0, 1), default=1.0, show_default=True,
    help="The chance a matching request fires the rule.",
)  # fmt: skip
@click.option("--count", type=click.IntRange(1), help="Firings before the rule is spent.")
@click.option("--delay", help="Answer this late (0.5, 2s); alone: normal answers, late.")
@click.option("--retry-after", type=click.IntRange(0, 86400), help="Retry-After on 429/503.")
@click.option("--after", help="Start this long from now (30s, 5m); default now.")
@click.option("--for", "lasting", help="Stop this long after it starts (30s, 5m).")
@click.option("--json", "as_json", is_flag=True, help="Print the rule as JSON.")
@click.pass_context
def faults_add(
    ctx: click.Context,
    actions: tuple[str, ...],
    vm: str | None,
    path: str,
    method: str | None,
    probability: float,
    count: int | None,
    delay: str | None,
    retry_after: int | None,
    after: str | None,
    lasting: str | None,
    as_json: bool,
) -> None:
    """Add a rule. ACTION is 410, 429, 500, 503, reset, hang or pass."""
    body: dict[str, Any] = {"path": path, "probability": probability, "actions": list(actions)}
    optional = {"vm": vm, "count": count, "retryAfter": retry_after}
    body |= {key: value for key, value in optional.items() if value is not None}
    if method:
        body["method"] = method.upper()
    if delay is not None:
        body["delay"] = seconds_of(delay)
    start = seconds_of(after) if after is not None else 0.0
    if after is not None:
        body["from"] = f"+{start:g}"
    if lasting is not None:
        body["until"] = f"+{start + seconds_of(lasting):g}"
    rule = client(ctx).add_fault(body)
    if as_json:
        click.echo(json.dumps(rule, indent=2))
    else:
        click.echo(f"added fault rule {rule['id']}")


@faults.command("remove")
@click.argument("rule_ids", nargs=-1, required=True, metavar="ID...")
@click.pass_context
def faults_remove(ctx: click.Context, rule_ids: tuple[str, ...]) -> None:
    """Remove fault rules by id."""
    admin = client(ctx)
    for rule_id in rule_ids:
        admin.remove_fault(rule_id)
        click.echo(f"removed {rule_id}")


@faults.command("clear")
@click.pass_context
def faults_clear(ctx: click.Context) -> None:
    """Remove every fault rule (a fleet file's come back when it is applied again)."""
    click.echo(f"removed {client(ctx).clear_faults()} fault rule(s)")
