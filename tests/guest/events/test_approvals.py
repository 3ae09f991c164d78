"""POST /metadata/scheduledevents: a VM approves (starts) events with
{"StartRequests":[{"EventId":"..."}]} (reference section 6, POST).

Two VMs in source-ip mode: vm-a and vm-b on loopback addresses, vm-c in neither's events.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.admin.support import admin, new_vm
from tests.conftest import ServerThread
from tests.guest.events.support import (
    MANUAL,
    METADATA_400,
    NEWEST_VERSIONS_400,
    all_events,
    approve_as_guest,
    document,
    guest_post,
    schedule,
    shown,
    start_requests,
    status_of,
)

A, B, C = "127.0.22.1", "127.0.22.2", "127.0.22.3"
MAX_BODY = 64 * 1024


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[ServerThread]:
    declared = tmp_path / "fleet.yaml"
    vms = [new_vm("vm-a", A), new_vm("vm-b", B), new_vm("vm-c", C)]
    declared.write_text(yaml.safe_dump({"vms": vms}))
    process = ServerThread(*MANUAL, "--caller-mode", "source-ip", "--fleet", str(declared))
    yield process
    process.stop()


def instance_error(body: bytes) -> str:
    """The instance family's error shape: { "error": "..." }, with the spaces."""
    assert body.startswith(b'{ "error": ') and body.endswith(b" }"), body
    parsed = json.loads(body)
    assert list(parsed) == ["error"] and isinstance(parsed["error"], str)
    return str(parsed["error"])


def snapshot(node: ServerThread) -> tuple[dict[str, object], ...]:
    return tuple(document(node, source=s) for s in (A, B, C))


def test_one_vms_approval_starts_the_event_for_every_vm_it_lists(fleet: ServerThread) -> None:
    event_id = schedule(fleet, type="Freeze", vms=["vm-a", "vm-b"], duration=5)["eventId"]
    assert shown(fleet, A) == shown(fleet, B) == {event_id: "Scheduled"}
    for source in (A, B):  # each VM sees the event with every VM it affects
        assert document(fleet, source=source)["Events"][0]["Resources"] == ["vm-a", "vm-b"]
    reply = approve_as_guest(fleet, event_id, source=A)
    assert (reply.status, reply.body) == (200, b""), reply
    # An empty body carries no Content-Type (docs/behaviour.md): nothing for a client to parse.
    assert "content-type" not in reply.headers
    assert sorted(reply.headers) == [
        "connection",
        "content-length",
        "date",
        "server",
        "x-ms-request-id",
    ]
    assert reply.headers["content-length"] == "0"
    assert reply.headers["server"] == "IMDS/150.870.65.1854"
    assert shown(fleet, A) == shown(fleet, B) == {event_id: "Started"}
    assert document(fleet, source=B)["Events"][0]["NotBefore"] == ""
    assert status_of(fleet, event_id) == "Started"
    assert shown(fleet, C) == {}


def test_approving_a_started_event_again_is_200_even_from_the_other_vm(
    fleet: ServerThread,
) -> None:
    event_id = schedule(fleet, type="Reboot", vms=["vm-a", "vm-b"])["eventId"]
    assert approve_as_guest(fleet, event_id, source=A).status == 200
    started_at = all_events(fleet)[event_id]["startedAt"]
    before = snapshot(fleet)
    assert approve_as_guest(fleet, event_id, source=B).status == 200
    assert approve_as_guest(fleet, event_id, source=A).status == 200
    assert snapshot(fleet) == before  # nothing changed: not even the incarnation
    assert all_events(fleet)[event_id]["startedAt"] == started_at


def test_several_events_in_one_request(fleet: ServerThread) -> None:
    first = schedule(fleet, type="Reboot", vms=["vm-a"])["eventId"]
    second = schedule(fleet, type="Redeploy", vms=["vm-a"])["eventId"]
    assert guest_post(fleet, start_requests(first, second), source=A).status == 200
    assert shown(fleet, A) == {first: "Started", second: "Started"}


def test_an_unknown_event_id_is_400(fleet: ServerThread) -> None:
    event_id = schedule(fleet, type="Reboot", vms=["vm-a"])["eventId"]
    before = snapshot(fleet)
    reply = approve_as_guest(fleet, "00000000-0000-0000-0000-000000000000", source=A)
    assert reply.status == 400
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    instance_error(reply.body)
    assert snapshot(fleet) == before
    assert status_of(fleet, event_id) == "Scheduled"


def test_a_request_with_one_unknown_id_starts_none_of_them(fleet: ServerThread) -> None:
    event_id = schedule(fleet, type="Reboot", vms=["vm-a"])["eventId"]
    before = snapshot(fleet)
    body = start_requests(event_id, "00000000-0000-0000-0000-000000000000")
    assert guest_post(fleet, body, source=A).status == 400
    assert snapshot(fleet) == before


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"{}",
        b"[]",
        b'{"StartRequests": []}',
        b'{"StartRequests": [{}]}',
        b'{"StartRequests": {"EventId": "X"}}',
        b'{"StartRequests": [{"EventId": 7}]}',
        b'{"StartRequests": [{"EventId": ""}]}',
        b'{"StartRequests": ["X"]}',
        b"\xff\xfe",
    ],
    ids=lambda body: body.decode("latin-1") or "empty",
)
def test_a_malformed_body_is_400_and_changes_nothing(fleet: ServerThread, body: bytes) -> None:
    schedule(fleet, type="Reboot", vms=["vm-a"])
    before = snapshot(fleet)
    reply = guest_post(fleet, body, source=A)
    assert reply.status == 400, reply
    instance_error(reply.body)
    assert snapshot(fleet) == before


def padded(event_id: str, size: int) -> bytes:
    """A valid approval padded with whitespace to exactly ``size`` bytes."""
    body = start_requests(event_id)
    return body[:-1] + b" " * (size - len(body)) + b"}"


def test_a_body_over_64_kb_is_400_and_64_kb_is_accepted(fleet: ServerThread) -> None:
    event_id = schedule(fleet, type="Reboot", vms=["vm-a"])["eventId"]
    before = snapshot(fleet)
    for size in (MAX_BODY + 1, 70_000):
        body = padded(event_id, size)
        assert len(body) == size and json.loads(body)
        reply = guest_post(fleet, body, source=A)
        assert reply.status == 400, (size, reply)
        assert "65536" in instance_error(reply.body)
    assert snapshot(fleet) == before
    reply = guest_post(fleet, padded(event_id, MAX_BODY), source=A)
    assert reply.status == 200, reply
    assert shown(fleet, A) == {event_id: "Started"}


def test_another_vms_event_id_is_400_and_changes_nothing(fleet: ServerThread) -> None:
    event_id = schedule(fleet, type="Reboot", vms=["vm-b"])["eventId"]
    before = snapshot(fleet)
    reply = approve_as_guest(fleet, event_id, source=A)
    assert reply.status == 400
    instance_error(reply.body)
    assert snapshot(fleet) == before
    assert status_of(fleet, event_id) == "Scheduled"


def test_a_pending_event_cannot_be_approved(fleet: ServerThread) -> None:
    event_id = schedule(fleet, type="Reboot", vms=["vm-a"], after=600)["eventId"]
    assert approve_as_guest(fleet, event_id, source=A).status == 400
    assert status_of(fleet, event_id) == "Pending"


def test_approval_without_metadata_header_is_the_400_and_changes_nothing(
    fleet: ServerThread,
) -> None:
    event_id = schedule(fleet, type="Reboot", vms=["vm-a"])["eventId"]
    reply = guest_post(fleet, start_requests(event_id), source=A, metadata=False)
    assert (reply.status, reply.body) == (400, METADATA_400)
    for version in ("2021-02-01", None):
        reply = guest_post(fleet, start_requests(event_id), source=A, version=version)
        assert (reply.status, reply.body) == (400, NEWEST_VERSIONS_400)
    assert status_of(fleet, event_id) == "Scheduled"


def test_approval_through_the_control_plane(fleet: ServerThread) -> None:
    event_id = schedule(fleet, type="Reboot", vms=["vm-a", "vm-b"])["eventId"]
    assert admin(fleet).approve_event(event_id)["status"] == "Started"
    assert shown(fleet, A) == shown(fleet, B) == {event_id: "Started"}
