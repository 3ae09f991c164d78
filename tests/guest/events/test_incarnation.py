"""DocumentIncarnation: it increases on every change of a VM's own list, and only then.

Two VMs in source-ip mode (loopback addresses declared in a fleet file), each reading its own
document; every step below changes exactly one VM's list.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.admin.support import admin, new_vm
from tests.conftest import ServerThread
from tests.guest.events.support import (
    MANUAL,
    advance,
    approve_as_guest,
    document,
    incarnation,
    schedule,
    shown,
    status_of,
)

A, B = "127.0.21.1", "127.0.21.2"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[ServerThread]:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({"vms": [new_vm("vm-a", A), new_vm("vm-b", B)]}))
    process = ServerThread(*MANUAL, "--caller-mode", "source-ip", "--fleet", str(fleet))
    yield process
    process.stop()


class Watch:
    """Each VM's incarnation, checked after every step."""

    def __init__(self, node: ServerThread) -> None:
        self.node = node
        self.last = {A: incarnation(node, A), B: incarnation(node, B)}

    def step(self, changed: str, what: str) -> None:
        now = {A: incarnation(self.node, A), B: incarnation(self.node, B)}
        other = B if changed == A else A
        assert now[changed] > self.last[changed], f"{what}: no new incarnation for {changed}"
        assert now[other] == self.last[other], f"{what}: {other}'s incarnation changed"
        self.last = now


def test_incarnation_rises_on_each_change_of_the_vms_own_list_only(pair: ServerThread) -> None:
    assert document(pair, source=A) == {"DocumentIncarnation": 0, "Events": []}
    assert document(pair, source=B) == {"DocumentIncarnation": 0, "Events": []}
    watch = Watch(pair)

    reboot = schedule(pair, type="Reboot", vms=["vm-a"])["eventId"]  # NotBefore +900
    watch.step(A, "Reboot scheduled for vm-a")
    assert shown(pair, A) == {reboot: "Scheduled"} and shown(pair, B) == {}

    freeze = schedule(pair, type="Freeze", vms=["vm-b"], duration=5, notBefore="+1200")
    watch.step(B, "Freeze scheduled for vm-b")

    assert approve_as_guest(pair, reboot, source=A).status == 200
    watch.step(A, "Reboot approved by vm-a")
    assert shown(pair, A) == {reboot: "Started"}

    # Reading again changes nothing.
    assert incarnation(pair, A) == watch.last[A] and incarnation(pair, B) == watch.last[B]

    advance(pair, 600)  # the approved Reboot (unknown duration) completes 600 s after start
    watch.step(A, "Reboot completed")
    assert shown(pair, A) == {}

    advance(pair, 600)  # the Freeze's NotBefore: it starts on its own
    watch.step(B, "Freeze started at NotBefore")
    assert shown(pair, B) == {freeze["eventId"]: "Started"}

    advance(pair, 5)
    watch.step(B, "Freeze completed after its 5 s")
    assert shown(pair, B) == {}

    redeploy = schedule(pair, type="Redeploy", vms=["vm-a"])["eventId"]
    watch.step(A, "Redeploy scheduled for vm-a")
    admin(pair).cancel_event(redeploy)
    watch.step(A, "Redeploy canceled")
    assert shown(pair, A) == {}
    assert status_of(pair, redeploy) == "Canceled"


def test_an_event_of_both_vms_changes_both_incarnations(pair: ServerThread) -> None:
    before = {A: incarnation(pair, A), B: incarnation(pair, B)}
    event = schedule(pair, type="Freeze", vms=["vm-a", "vm-b"])["eventId"]
    middle = {A: incarnation(pair, A), B: incarnation(pair, B)}
    assert middle[A] > before[A] and middle[B] > before[B]
    assert approve_as_guest(pair, event, source=B).status == 200
    after = {A: incarnation(pair, A), B: incarnation(pair, B)}
    assert after[A] > middle[A] and after[B] > middle[B]
    assert shown(pair, A) == shown(pair, B) == {event: "Started"}


def test_canceling_an_event_that_never_appeared_changes_nothing(node: ServerThread) -> None:
    """A Pending event was never on the list: canceling it leaves the document as it was."""
    before = document(node)
    pending = schedule(node, type="Reboot", after=600)
    assert document(node) == before
    admin(node).cancel_event(pending["eventId"])
    assert document(node) == before
    assert incarnation(node) == before["DocumentIncarnation"]
