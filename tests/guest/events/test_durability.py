"""Events and their clock live in the store: a restart neither loses nor repeats a
transition, and every node on one PostgreSQL database shows the same events."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.admin.support import admin
from tests.conftest import ServerThread
from tests.guest.events.support import (
    DEFAULT_VM,
    advance,
    all_events,
    approve_as_guest,
    clock,
    guest_get,
    schedule,
    shown,
    status_of,
)
from tests.pg import Postgres
from tests.waiting import within


def test_events_and_the_manual_clock_survive_a_restart_sqlite(tmp_path: Path) -> None:
    node = ServerThread("--clock", "manual", state_dir=tmp_path)
    try:
        assert "sqlite" in admin(node).status()["store"]
        advance(node, 3600)  # the clock is now an hour ahead of real time
        waiting = schedule(node, type="Reboot", notBefore="+7200")["eventId"]
        started = schedule(node, type="Reboot", unplanned=True)["eventId"]
        pending = schedule(node, type="Freeze", after=1800, notBefore="+9000")["eventId"]
        events = all_events(node)
        now = clock(node)["now"]
        document = guest_get(node).body
    finally:
        node.stop()
    time.sleep(1.5)  # real time moves on while the node is down; the manual clock does not

    node = ServerThread("--clock", "manual", state_dir=tmp_path)
    try:
        assert clock(node) == {"now": now, "mode": "manual", "scale": 0.0}
        assert all_events(node) == events  # the same events, ids and statuses: none repeated
        assert guest_get(node).body == document  # byte for byte, incarnation included
        assert shown(node) == {waiting: "Scheduled", started: "Started"}

        advance(node, 1800)  # the pending Freeze appears; the failure's Reboot completes
        assert status_of(node, pending) == "Scheduled"
        assert status_of(node, started) == "Completed"
        advance(node, 7200 - 1800)
        assert shown(node) == {waiting: "Started", pending: "Scheduled"}
        assert len(all_events(node)) == 3
    finally:
        node.stop()


@pytest.fixture
def two_nodes(postgres: Postgres) -> Iterator[tuple[ServerThread, ServerThread]]:
    url = postgres.new_database()
    nodes: list[ServerThread] = []
    try:
        for _ in range(2):
            nodes.append(ServerThread("--clock", "manual", "--store", url))
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            node.stop()


def test_an_event_scheduled_on_a_and_approved_through_bs_guest_plane_is_started_on_a(
    two_nodes: tuple[ServerThread, ServerThread],
) -> None:
    a, b = two_nodes
    assert clock(a)["now"] == clock(b)["now"]  # one clock for the fleet
    event_id = schedule(a, type="Reboot", vms=[DEFAULT_VM])["eventId"]
    within(2.0, lambda: shown(b) == {event_id: "Scheduled"}, "B's guest plane shows the event")

    reply = approve_as_guest(b, event_id)
    assert reply.status == 200, reply
    within(2.0, lambda: status_of(a, event_id) == "Started", "A's control plane: Started")
    within(2.0, lambda: shown(a) == {event_id: "Started"}, "A's guest plane: Started")
    assert guest_get(a).body == guest_get(b).body

    advance(b, 600)  # the clock moved through B: the event completes for A's guests too
    within(2.0, lambda: shown(a) == {}, "the completed event is gone from A's guest plane")
    assert clock(a)["now"] == clock(b)["now"]
    assert status_of(a, event_id) == "Completed"
