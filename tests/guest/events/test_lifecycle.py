"""An event's life on the manual clock (reference section 6, Lifecycle):
Scheduled -> Started (at NotBefore) -> removed (after DurationInSeconds, or about 10 minutes
when unknown); platform cancellation; unplanned failures; minimum notices; and what a completed
Preempt does to its VM."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.admin.support import admin, new_vm, refused
from tests.conftest import ServerThread
from tests.guest.events.support import (
    DEFAULT_VM,
    FAILURE_DESCRIPTION,
    MANUAL,
    advance,
    all_events,
    approve_as_guest,
    document,
    guest_get,
    incarnation,
    iso,
    rfc1123,
    schedule,
    shown,
    status_of,
)


def test_a_reboot_starts_at_not_before_and_lingers_600_s_with_unknown_duration(
    node: ServerThread,
) -> None:
    event = schedule(node, type="Reboot")
    event_id = event["eventId"]
    assert event["status"] == "Scheduled" and event["durationInSeconds"] == -1
    (listed,) = document(node)["Events"]
    assert listed["NotBefore"] == rfc1123(event["notBefore"])

    advance(node, 899)
    assert shown(node) == {event_id: "Scheduled"}
    advance(node, 1)  # the clock reaches NotBefore (15 min, the Reboot's minimum notice)
    (started,) = document(node)["Events"]
    assert (started["EventStatus"], started["NotBefore"]) == ("Started", "")
    assert all_events(node)[event_id]["startedAt"] == event["notBefore"]

    advance(node, 599)
    assert shown(node) == {event_id: "Started"}
    advance(node, 1)
    assert document(node)["Events"] == []
    assert status_of(node, event_id) == "Completed"
    assert event_id not in {e["eventId"] for e in admin(node).events()["events"]}


def test_a_5_second_freeze_ends_5_seconds_after_it_starts(node: ServerThread) -> None:
    event_id = schedule(node, type="Freeze", duration=5)["eventId"]
    advance(node, 900)
    assert shown(node) == {event_id: "Started"}
    advance(node, 4)
    assert shown(node) == {event_id: "Started"}
    advance(node, 1)
    assert shown(node) == {}
    assert status_of(node, event_id) == "Completed"


def test_one_big_step_applies_every_transition_that_fell_in_between(node: ServerThread) -> None:
    event = schedule(node, type="Reboot", duration=30)
    before = incarnation(node)
    advance(node, 2 * 3600)
    assert document(node)["Events"] == []
    assert incarnation(node) > before
    done = all_events(node)[event["eventId"]]
    assert done["status"] == "Completed"
    # Each step happened when it was due, not when the clock jumped.
    assert done["startedAt"] == event["notBefore"]


def test_platform_cancellation_removes_a_scheduled_event(node: ServerThread) -> None:
    event_id = schedule(node, type="Reboot")["eventId"]
    before = incarnation(node)
    admin(node).cancel_event(event_id)
    assert document(node)["Events"] == []
    assert incarnation(node) > before
    assert status_of(node, event_id) == "Canceled"
    advance(node, 900)  # its NotBefore passes: it does not come back
    assert document(node)["Events"] == []
    assert status_of(node, event_id) == "Canceled"
    assert refused(admin(node).cancel_event, event_id).status == 409


def test_a_started_event_cannot_be_canceled_409(node: ServerThread) -> None:
    event_id = schedule(node, type="Reboot")["eventId"]
    assert approve_as_guest(node, event_id).status == 200
    error = refused(admin(node).cancel_event, event_id)
    assert (error.status, error.code) == (409, "conflict"), error
    assert shown(node) == {event_id: "Started"}


def test_canceling_an_unknown_event_is_404(node: ServerThread) -> None:
    error = refused(admin(node).cancel_event, "00000000-0000-0000-0000-000000000000")
    assert error.status == 404, error


def test_an_unplanned_failure_appears_started_at_once_and_lingers_600_s(
    node: ServerThread,
) -> None:
    event = admin(node).schedule_event({"type": "Reboot", "vms": [DEFAULT_VM], "unplanned": True})
    assert event["status"] == "Started"
    (listed,) = document(node)["Events"]
    assert listed == {
        "EventId": event["eventId"],
        "EventStatus": "Started",
        "EventType": "Reboot",
        "ResourceType": "VirtualMachine",
        "Resources": [DEFAULT_VM],
        "NotBefore": "",
        "Description": FAILURE_DESCRIPTION,
        "EventSource": "Platform",
        "DurationInSeconds": -1,
    }
    advance(node, 599)
    assert shown(node) == {event["eventId"]: "Started"}
    advance(node, 1)
    assert shown(node) == {}


def test_an_unplanned_failure_is_a_reboot(node: ServerThread) -> None:
    spec = {"type": "Freeze", "vms": [DEFAULT_VM], "unplanned": True}
    error = refused(admin(node).schedule_event, spec)
    assert (error.status, error.field) == (400, "unplanned"), error
    assert document(node)["Events"] == []


# --- minimum notices --------------------------------------------------------------------


@pytest.fixture(scope="module")
def notices() -> Iterator[ServerThread]:
    process = ServerThread(*MANUAL)
    yield process
    process.stop()


@pytest.mark.parametrize(
    ("kind", "notice"),
    [("Freeze", 900), ("Reboot", 900), ("Redeploy", 600), ("Preempt", 30), ("Terminate", 600)],
)
def test_minimum_notice_is_enforced_and_is_the_default(
    notices: ServerThread, kind: str, notice: int
) -> None:
    before = document(notices)
    spec = {"type": kind, "vms": [DEFAULT_VM], "notBefore": f"+{notice - 1}"}
    error = refused(admin(notices).schedule_event, spec)
    assert (error.status, error.field) == (400, "notBefore"), error
    assert document(notices) == before  # nothing was scheduled

    exact = schedule(notices, type=kind, notBefore=f"+{notice}")
    default = schedule(notices, type=kind)
    for event in (exact, default):
        assert event["status"] == "Scheduled"
        gap = iso(event["notBefore"]) - iso(event["appearsAt"])
        assert gap.total_seconds() == notice


def test_a_reboot_60_s_ahead_is_refused_a_preempt_30_s_ahead_is_fine(
    notices: ServerThread,
) -> None:
    spec = {"type": "Reboot", "vms": [DEFAULT_VM], "notBefore": "+60"}
    error = refused(admin(notices).schedule_event, spec)
    assert (error.status, error.field) == (400, "notBefore"), error
    assert schedule(notices, type="Preempt", notBefore="+30")["status"] == "Scheduled"


def test_terminate_notice_300_lowers_terminates_minimum_only() -> None:
    process = ServerThread(*MANUAL, "--terminate-notice", "300")
    try:
        spec = {"type": "Terminate", "vms": [DEFAULT_VM], "notBefore": "+299"}
        error = refused(admin(process).schedule_event, spec)
        assert (error.status, error.field) == (400, "notBefore"), error
        assert schedule(process, type="Terminate", notBefore="+300")["status"] == "Scheduled"
        default = schedule(process, type="Terminate")
        assert (iso(default["notBefore"]) - iso(default["appearsAt"])).total_seconds() == 300
        spec = {"type": "Redeploy", "vms": [DEFAULT_VM], "notBefore": "+300"}
        assert refused(admin(process).schedule_event, spec).status == 400  # still 600 s
    finally:
        process.stop()


@pytest.mark.parametrize("notice", ["299", "901"])
def test_terminate_notice_outside_300_to_900_is_refused_at_start(
    tmp_path: Path, notice: str
) -> None:
    command = [sys.executable, "-m", "azimds", "serve", "--state-dir", str(tmp_path)]
    command += ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--store", "memory:"]
    result = subprocess.run(
        [*command, "--terminate-notice", notice], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "--terminate-notice" in result.stderr and "300 to 900" in result.stderr


# --- what a completed Preempt does ------------------------------------------------------


def vm_names(node: ServerThread) -> list[str]:
    return sorted(vm["name"] for vm in admin(node).vms()["vms"])


def test_a_completed_preempt_deallocates_its_vm_gone_from_the_fleet(node: ServerThread) -> None:
    admin(node).create_vm(new_vm("spot-1", "10.7.0.4"))
    admin(node).create_vm(new_vm("steady-1", "10.7.0.5"))
    preempt = schedule(node, type="Preempt", vms=["spot-1"])["eventId"]  # NotBefore +30
    reboot = schedule(node, type="Reboot", vms=["steady-1"], notBefore="+900")["eventId"]
    advance(node, 30)
    assert status_of(node, preempt) == "Started"
    assert "spot-1" in vm_names(node)  # still there while the eviction is under way
    advance(node, 2 * 3600)  # both complete
    assert status_of(node, preempt) == "Completed"
    assert status_of(node, reboot) == "Completed"
    # The Preempt's VM is deallocated: gone; the rebooted VM stays.
    assert vm_names(node) == [DEFAULT_VM, "steady-1"]
    assert refused(admin(node).vm, "spot-1").status == 404


def test_a_completed_preempt_of_the_default_vm_in_single_mode_leaves_guests_403(
    node: ServerThread,
) -> None:
    schedule(node, type="Preempt")
    advance(node, 30)
    assert document(node)["Events"][0]["EventStatus"] == "Started"
    advance(node, 600)
    assert DEFAULT_VM not in vm_names(node)
    reply = guest_get(node)
    assert reply.status == 403
    assert reply.body.startswith(b'{ "error": "Forbidden')
