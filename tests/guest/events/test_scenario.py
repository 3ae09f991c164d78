"""Scenarios (timed sequences of events), the `azimds events` commands, and a scaled clock."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.admin.support import admin, refused
from tests.conftest import ServerThread
from tests.guest.events.support import (
    DEFAULT_VM,
    advance,
    all_events,
    clock,
    document,
    incarnation,
    iso,
    rfc1123,
    schedule,
    shown,
    status_of,
)
from tests.waiting import within


def test_a_scenario_entry_stays_invisible_until_the_clock_passes_its_after(
    node: ServerThread,
) -> None:
    t0 = iso(clock(node)["now"])
    scenario = {
        "events": [
            {"after": 0, "type": "Freeze", "vms": [DEFAULT_VM], "duration": 5},
            {"after": 600, "type": "Reboot", "vms": [DEFAULT_VM]},
        ]
    }
    freeze, reboot = admin(node).run_scenario(scenario["events"])
    assert (freeze["type"], freeze["status"]) == ("Freeze", "Scheduled")
    assert (reboot["type"], reboot["status"]) == ("Reboot", "Pending")
    assert iso(reboot["appearsAt"]) - t0 == dt.timedelta(seconds=600)
    assert iso(reboot["notBefore"]) - t0 == dt.timedelta(seconds=600 + 900)

    assert shown(node) == {freeze["eventId"]: "Scheduled"}
    before = incarnation(node)
    advance(node, 599)
    assert shown(node) == {freeze["eventId"]: "Scheduled"}
    assert incarnation(node) == before  # a pending event is no change to the list
    advance(node, 1)
    assert shown(node) == {freeze["eventId"]: "Scheduled", reboot["eventId"]: "Scheduled"}
    assert incarnation(node) > before
    listed = {e["EventId"]: e for e in document(node)["Events"]}
    assert listed[reboot["eventId"]]["NotBefore"] == rfc1123(reboot["notBefore"])


def test_an_invalid_scenario_schedules_nothing_and_names_the_entry(node: ServerThread) -> None:
    scenario = {
        "events": [
            {"after": 0, "type": "Freeze", "vms": [DEFAULT_VM]},
            {"after": 60, "type": "Reboot", "vms": [DEFAULT_VM], "notBefore": "+60"},
        ]
    }
    error = refused(lambda: admin(node).run_scenario(scenario["events"]))
    assert error.status == 400, error
    assert all_events(node) == {}  # all or nothing
    assert error.field == "events[1].notBefore"


# --- the CLI ----------------------------------------------------------------------------


def events_cli(node: ServerThread, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "azimds", "events", "--state-dir", str(node.state_dir)]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=30)


def ok(node: ServerThread, *args: str) -> list[str]:
    result = events_cli(node, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def rows(lines: list[str]) -> dict[str, list[str]]:
    """A printed event table by EVENT ID: [TYPE, STATUS, VMS, NOT BEFORE, DURATION]."""
    header, *body = lines
    assert header.split() == ["EVENT", "ID", "TYPE", "STATUS", "VMS", "NOT", "BEFORE", "DURATION"]
    return {row.split()[0]: row.split()[1:] for row in body}


def test_the_events_commands_do_what_their_help_says(node: ServerThread, tmp_path: Path) -> None:
    t0 = clock(node)["now"]
    rehearsal = tmp_path / "rehearsal.yaml"
    rehearsal.write_text(
        "events:\n"
        f"  - {{after: 0, type: Freeze, vms: [{DEFAULT_VM}], duration: 5}}\n"
        f"  - {{after: 10m, type: Reboot, vms: [{DEFAULT_VM}]}}\n"
    )
    table = rows(ok(node, "scenario", str(rehearsal)))
    events = all_events(node)
    assert set(table) == set(events)
    by_type = {e["type"]: e for e in events.values()}
    freeze, reboot = by_type["Freeze"], by_type["Reboot"]
    assert table[freeze["eventId"]] == ["Freeze", "Scheduled", DEFAULT_VM, freeze["notBefore"], "5"]
    assert table[reboot["eventId"]] == ["Reboot", "Pending", DEFAULT_VM, reboot["notBefore"], "-1"]
    assert iso(reboot["appearsAt"]) - iso(t0) == dt.timedelta(minutes=10)

    listing = ok(node, "list")  # pending events too, with the clock's time
    assert listing[0] == f"event clock: {t0}"
    assert set(rows(listing[1:])) == {freeze["eventId"], reboot["eventId"]}

    scheduled = ok(node, "schedule", "--vm", DEFAULT_VM, "--type", "Reboot", "--duration", "30")
    match = re.fullmatch(r"scheduled Reboot (\S+) \(Scheduled, not before (\S+)\)", scheduled[0])
    assert match, scheduled
    third = match.group(1)
    assert all_events(node)[third]["durationInSeconds"] == 30
    assert match.group(2) == all_events(node)[third]["notBefore"]

    t15 = (iso(t0) + dt.timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ok(node, "advance", "15m") == [f"event clock: {t15}"]
    assert status_of(node, freeze["eventId"]) == "Started"  # what fell due happened
    assert status_of(node, third) == "Started"
    assert status_of(node, reboot["eventId"]) == "Scheduled"  # appeared at 10m

    assert ok(node, "approve", reboot["eventId"]) == [f"{reboot['eventId']} is Started"]
    assert shown(node)[reboot["eventId"]] == "Started"

    fourth = schedule_id(ok(node, "schedule", "--vm", DEFAULT_VM, "--type", "Redeploy"))
    assert ok(node, "cancel", fourth) == [f"canceled {fourth}"]
    assert status_of(node, fourth) == "Canceled"
    refused = events_cli(node, "cancel", reboot["eventId"])  # Started: 409
    assert refused.returncode != 0
    assert "Error" in refused.stderr and reboot["eventId"] in refused.stderr

    assert ok(node, "clock") == [f"event clock: {t15} (manual)"]
    assert fourth not in rows(ok(node, "list")[1:])
    assert rows(ok(node, "list", "--all")[1:])[fourth][1] == "Canceled"
    as_json = json.loads(events_cli(node, "list", "--json").stdout)
    assert as_json["now"] == t15


def schedule_id(lines: list[str]) -> str:
    match = re.fullmatch(r"scheduled \w+ (\S+) \(.*\)", lines[0])
    assert match, lines
    return match.group(1)


# --- a scaled clock ---------------------------------------------------------------------


def test_time_scale_60_runs_the_event_clock_60_times_faster() -> None:
    node = ServerThread("--time-scale", "60", "--store", "memory:")
    try:
        first = clock(node)
        assert (first["mode"], first["scale"]) == ("real", 60)
        started = time.monotonic()
        time.sleep(1.0)
        second = clock(node)
        elapsed = time.monotonic() - started
        moved = (iso(second["now"]) - iso(first["now"])).total_seconds()
        assert abs(moved - 60 * elapsed) <= 2, (moved, elapsed)
        assert events_cli(node, "clock").stdout.strip().endswith("(x60)")

        # A Preempt's 30 s of notice pass in half a second of real time.
        event_id = schedule(node, type="Preempt")["eventId"]
        within(3.0, lambda: shown(node).get(event_id) == "Started", "the Preempt started")
    finally:
        node.stop()


def test_the_clock_only_moves_forward(node: ServerThread) -> None:
    before = clock(node)
    for seconds in (-1, "60", None, True):
        error = refused(admin(node).advance_clock, seconds)
        assert (error.status, error.field) == (400, "seconds"), error
    assert clock(node) == before
