"""Scheduled events through the client: the list with its DocumentIncarnation, and approval
(POST StartRequests), on the tests' own node with events scheduled through its control plane."""

from __future__ import annotations

import datetime as dt

import pytest

from azimds.client import BadRequest, IMDSClient, RetryPolicy, ScheduledEvents
from tests.client.support import FakeTime, add_fault, endpoint
from tests.conftest import ServerThread
from tests.guest.events.support import schedule

REBOOT_DESCRIPTION = "Virtual machine is going to be restarted as requested by authorized user."


def mine(events: ScheduledEvents, event_id: str):
    found = [e for e in events.events if e.event_id == event_id]
    assert len(found) == 1, events
    return found[0]


def test_list_and_approve(node: ServerThread):
    with IMDSClient(endpoint(node)) as imds:
        before = imds.scheduled_events()
        event_id = schedule(node, type="Reboot")["eventId"]
        listed = imds.scheduled_events()
        assert listed.incarnation > before.incarnation
        event = mine(listed, event_id)
        assert (event.type, event.status) == ("Reboot", "Scheduled")
        assert event.resource_type == "VirtualMachine"
        assert event.resources == ("examplevmname",)
        assert event.description == REBOOT_DESCRIPTION
        assert event.source == "Platform"
        assert event.duration == -1
        assert event.not_before is not None
        now = dt.datetime.now(dt.UTC)
        assert dt.timedelta(minutes=14) < event.not_before - now <= dt.timedelta(minutes=15)

        imds.approve(event)
        started = imds.scheduled_events()
        assert mine(started, event_id).status == "Started"
        assert mine(started, event_id).not_before is None
        assert started.incarnation > listed.incarnation
        imds.approve(event_id)  # again, by id: still 200


def test_older_versions_show_fewer_fields(node: ServerThread):
    event_id = schedule(node, type="Freeze", duration=5)["eventId"]
    with IMDSClient(endpoint(node)) as imds:
        current = mine(imds.scheduled_events(), event_id)
        assert current.duration == 5
        old = mine(imds.scheduled_events(api_version="2017-11-01"), event_id)
        assert (old.duration, old.description, old.source) == (None, "", "")
        imds.approve(event_id)


def test_approving_an_unknown_event_is_a_bad_request(node: ServerThread):
    with IMDSClient(endpoint(node)) as imds, pytest.raises(BadRequest) as raised:
        imds.approve("00000000-0000-0000-0000-000000000000")
    assert raised.value.status == 400
    with IMDSClient(endpoint(node)) as imds, pytest.raises(ValueError, match="at least one"):
        imds.approve()


def test_an_approval_is_retried(faulty: ServerThread):
    event_id = schedule(faulty, type="Reboot")["eventId"]
    add_fault(faulty, method="POST", path="/metadata/scheduledevents", actions=[503, "reset"])
    time = FakeTime()
    with IMDSClient(
        endpoint(faulty), sleep=time.sleep, clock=time.monotonic, retry=RetryPolicy()
    ) as imds:
        imds.approve(event_id)
        assert mine(imds.scheduled_events(), event_id).status == "Started"
    assert len(time.sleeps) == 2
