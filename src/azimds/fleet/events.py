"""Scheduled events: the lifecycle of maintenance and eviction events (reference section 6).

An event lives in the store (kind ``event``) and moves through:

    Pending --(appearsAt)--> Scheduled --(approved by any VM, or NotBefore)--> Started
            --(duration, or LINGER when unknown)--> Completed (removed from the list)
    Scheduled --(platform cancellation)--> Canceled (removed)

An unplanned failure creates a Reboot already Started. When a Preempt or Terminate completes,
its VMs are deallocated: removed from the fleet. Every transition is a store write, so a
restart neither loses nor repeats one, and every node of a fleet shows the same state
(the writes are in ``fleet/scheduling.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from azimds.store.base import Transaction

EVENT_KIND = "event"
TYPES = ("Freeze", "Reboot", "Redeploy", "Preempt", "Terminate")
SOURCES = ("Platform", "User")
# The least notice each type gets, seconds (Terminate's is configurable, 5 to 15 minutes).
MIN_NOTICE = {"Freeze": 900, "Reboot": 900, "Redeploy": 600, "Preempt": 30, "Terminate": 600}
DESCRIPTIONS = {
    "Freeze": "Virtual machine is being paused because of a memory-preserving Live Migration "
    "operation.",
    "Reboot": "Virtual machine is going to be restarted as requested by authorized user.",
    "Redeploy": "Virtual machine is going to be redeployed as requested by authorized user.",
    "Preempt": "",
    "Terminate": "",
}
FAILURE_DESCRIPTION = "Virtual machine has encountered a failure."
DEFAULT_DURATION = {"Freeze": 5, "Reboot": -1, "Redeploy": -1, "Preempt": -1, "Terminate": -1}
LINGER = 600  # seconds a Started event with no known duration stays listed ("about 10 min")
VISIBLE = ("Scheduled", "Started")


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    resources: tuple[str, ...]  # vmIds
    names: tuple[str, ...]  # the VMs' names, as Resources lists them
    status: str
    appears_at: float
    not_before: float
    started_at: float | None
    duration: int  # DurationInSeconds: -1 unknown, 0 no impact
    description: str
    source: str
    revision: int
    shown: bool = False  # ever on a VM's list (Scheduled or Started)

    @classmethod
    def from_record(cls, id: str, body: Mapping[str, Any], revision: int) -> Event:
        return cls(
            id=id,
            type=body["type"],
            resources=tuple(body["resources"]),
            names=tuple(body["names"]),
            status=body["status"],
            appears_at=float(body["appearsAt"]),
            not_before=float(body["notBefore"]),
            started_at=body.get("startedAt"),
            duration=int(body["duration"]),
            description=body["description"],
            source=body["source"],
            revision=revision,
            shown=bool(body.get("shown", body["status"] != "Pending")),
        )

    def ends_at(self) -> float | None:
        if self.started_at is None:
            return None
        return self.started_at + (self.duration if self.duration > 0 else LINGER)

    def due(self, now: float) -> str | None:
        """The status this event should have at ``now``, if it differs."""
        if self.status == "Pending" and now >= self.appears_at:
            return "Scheduled"
        if self.status == "Scheduled" and now >= self.not_before:
            return "Started"
        end = self.ends_at()
        if self.status == "Started" and end is not None and now >= end:
            return "Completed"
        return None


def unknown_to(txn: Transaction, event_ids: Iterable[str], vm_id: str) -> str | None:
    """The first of ``event_ids`` that is no event the VM sees (Scheduled or Started, among
    its resources): what its approval is refused for. None: the VM may approve them all."""
    for event_id in event_ids:
        record = txn.get(EVENT_KIND, event_id)
        if record is None:
            return event_id
        event = Event.from_record(record.id, record.body, record.revision)
        if event.status not in VISIBLE or vm_id not in event.resources:
            return event_id
    return None
