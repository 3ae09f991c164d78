"""``azimds events ...``: rehearse maintenance and evictions on a running node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from azimds.admin.client import AdminClient, Event, Events
from azimds.cli.common import (
    client,
    control_plane_options,
    json_option,
    key_command,
    main,
    read_document,
    seconds_of,
    show,
    table,
)


@main.group()
@control_plane_options
def events(state_dir: Path | None, admin: str | None, token: str | None) -> None:
    """Schedule, list, cancel, approve scheduled events, and move their clock.

    \b
      azimds events schedule --vm web-1 --type Reboot --duration 30
      azimds events schedule --vm spot-1 --type Preempt
      azimds events list
      azimds events advance 15m          # what is due in between happens now
      azimds events approve <EventId>
      azimds events scenario rehearsal.yaml
    """


def _table(events_: list[Event]) -> str:
    rows = [
        [
            e["eventId"],
            e["type"],
            e["status"],
            ",".join(e["names"]),
            e["notBefore"],
            str(e["durationInSeconds"]),
        ]
        for e in events_
    ]
    return table(rows, ["EVENT ID", "TYPE", "STATUS", "VMS", "NOT BEFORE", "DURATION"])


@events.command("list")
@click.option("--all", "everything", is_flag=True, help="Also completed and canceled events.")
@json_option
@click.pass_context
def events_list(ctx: click.Context, everything: bool, as_json: bool) -> None:
    """List events (pending, scheduled, started), with the event clock's time."""
    show(client(ctx).events(everything), as_json, _listing)


def _listing(answer: Events) -> str:
    return f"event clock: {answer['now']}\n{_table(answer['events'])}"


@events.command("schedule")
@click.option(
    "--vm",
    "vms",
    multiple=True,
    required=True,
    help="A VM (name or vmId) it affects; repeat for several.",
)
@click.option(
    "--type",
    "kind",
    required=True,
    type=click.Choice(["Freeze", "Reboot", "Redeploy", "Preempt", "Terminate"]),
)
@click.option(
    "--not-before",
    help="When it may start: ISO 8601, epoch seconds, or +SECONDS. Default: the type's "
    "minimum notice from when it appears.",
)
@click.option("--after", "after", help="Appear this long from now (90, 15m, 2h); default now.")
@click.option("--duration", type=int, help="DurationInSeconds (-1 unknown, 0 no impact).")
@click.option("--description", help="Description (default: the type's usual one).")
@click.option("--source", type=click.Choice(["Platform", "User"]), help="EventSource.")
@click.option("--unplanned", is_flag=True, help="An unplanned failure: a Reboot already Started.")
@click.option("--json", "as_json", is_flag=True, help="Print the event as JSON.")
@click.pass_context
def events_schedule(
    ctx: click.Context,
    vms: tuple[str, ...],
    kind: str,
    not_before: str | None,
    after: str | None,
    duration: int | None,
    description: str | None,
    source: str | None,
    unplanned: bool,
    as_json: bool,
) -> None:
    """Schedule an event for one or more VMs."""
    body: dict[str, Any] = {"type": kind, "vms": list(vms)}
    if not_before is not None:
        body["notBefore"] = (
            float(not_before) if not_before.replace(".", "", 1).isdigit() else not_before
        )
    if after is not None:
        body["after"] = seconds_of(after)
    for key, value in (("duration", duration), ("description", description), ("source", source)):
        if value is not None:
            body[key] = value
    if unplanned:
        body["unplanned"] = True
    event = client(ctx).schedule_event(body)
    if as_json:
        click.echo(json.dumps(event, indent=2))
    else:
        when = f"{event['status']}, not before {event['notBefore']}"
        click.echo(f"scheduled {event['type']} {event['eventId']} ({when})")


key_command(
    events,
    "cancel",
    "EVENT_ID",
    "Cancel a pending or scheduled event, as the platform does.",
    AdminClient.cancel_event,
    "canceled {}",
)


@events.command("approve")
@click.argument("event_id", metavar="EVENT_ID")
@click.pass_context
def events_approve(ctx: click.Context, event_id: str) -> None:
    """Approve (start) an event, as one of its VMs would."""
    event = client(ctx).approve_event(event_id)
    click.echo(f"{event_id} is {event['status']}")


@events.command("advance")
@click.argument("duration", metavar="DURATION")
@click.pass_context
def events_advance(ctx: click.Context, duration: str) -> None:
    """Move the event clock forward (90, 15m, 2h); what falls due happens at once."""
    click.echo(f"event clock: {client(ctx).advance_clock(seconds_of(duration))}")


@events.command("clock")
@click.pass_context
def events_clock(ctx: click.Context) -> None:
    """Show the event clock: its time, and whether it runs or is manual."""
    answer = client(ctx).clock()
    scale = "manual" if answer["mode"] == "manual" else f"x{answer['scale']:g}"
    click.echo(f"event clock: {answer['now']} ({scale})")


@events.command("scenario")
@click.argument("source", metavar="FILE|-")
@click.pass_context
def events_scenario(ctx: click.Context, source: str) -> None:
    """Schedule a timed sequence of events from a YAML/JSON file (docs/events.md).

    \b
      events:
        - {after: 0, type: Freeze, vms: [web-1, web-2], duration: 5}
        - {after: 10m, type: Preempt, vms: [spot-1]}
    """
    document = read_document(source)
    entries = document.get("events") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise click.ClickException(f"{source}: expected events: followed by a list")
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("after"), str):
            entry["after"] = seconds_of(entry["after"])
    click.echo(_table(client(ctx).run_scenario(entries)))
