"""A VM's provisioning state: the reports its agents sent the WireServer, the state they add
up to, and the goal state's incarnation, as store transactions.

One object per VM (kind ``provisioning``, id its vmId); a VM without one has never been
provisioned and is at incarnation 1. Every report is kept (the newest ``MAX_REPORTS``); only
one that echoes the current incarnation (or none, as azure-init's JSON does not) moves the
state, so a report left over from before a reset cannot make a re-imaged VM ready.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from azimds.fleet.vm import VM_KIND
from azimds.store.base import Transaction

PROVISIONING_KIND = "provisioning"
STATES = ("not_provisioned", "provisioning", "ready", "failed")
MAX_REPORTS = 100  # per VM: an agent that reports in a loop cannot fill the store
FAILED_SUBSTATUS = "ProvisioningFailed"


@dataclass(frozen=True, slots=True)
class Report:
    """One health report as an agent sent it."""

    time: float  # epoch seconds, when azimds received it
    agent: str  # the User-Agent (x-ms-guest-agent-name for azure-init): which agent sent it
    status: str  # "Ready" or "NotReady" as sent
    substatus: str = ""  # "Provisioning", "ProvisioningFailed", ...
    description: str = ""
    incarnation: int | None = None  # the goal state's incarnation it echoes, if any

    def json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "agent": self.agent,
            "status": self.status,
            "substatus": self.substatus,
            "description": self.description,
            "incarnation": self.incarnation,
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Report:
        return cls(
            float(body["time"]),
            str(body["agent"]),
            str(body["status"]),
            str(body.get("substatus", "")),
            str(body.get("description", "")),
            body.get("incarnation"),
        )


@dataclass(frozen=True, slots=True)
class Provisioning:
    """A VM's provisioning state; the default is a VM never provisioned."""

    state: str = "not_provisioned"
    incarnation: int = 1
    reports: tuple[Report, ...] = field(default_factory=tuple)  # oldest first

    def json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "incarnation": self.incarnation,
            "reports": [report.json() for report in self.reports],
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Provisioning:
        return cls(
            str(body["state"]),
            int(body["incarnation"]),
            tuple(Report.from_json(report) for report in body.get("reports", ())),
        )

    @property
    def failure(self) -> str:
        """The description of the report that made the state failed ("" unless failed)."""
        if self.state != "failed":
            return ""
        return next(
            (r.description for r in reversed(self.reports) if r.substatus == FAILED_SUBSTATUS),
            "",
        )


def state_of(status: str, substatus: str) -> str:
    """The state a report says the VM is in: Ready, else failed or still provisioning."""
    if status == "Ready":
        return "ready"
    return "failed" if substatus == FAILED_SUBSTATUS else "provisioning"


def provisioning_of(txn: Transaction, vm_id: str) -> Provisioning:
    record = txn.get(PROVISIONING_KIND, vm_id)
    return Provisioning() if record is None else Provisioning.from_json(record.body)


def add_report(txn: Transaction, vm_id: str, report: Report) -> Provisioning | None:
    """Keep ``report``; the state follows it unless it echoes another incarnation. None,
    and nothing kept, when the VM has gone meanwhile."""
    if txn.get(VM_KIND, vm_id) is None:
        return None
    current = provisioning_of(txn, vm_id)
    state = current.state
    if report.incarnation in (None, current.incarnation):
        state = state_of(report.status, report.substatus)
    changed = replace(current, state=state, reports=(*current.reports, report)[-MAX_REPORTS:])
    txn.put(PROVISIONING_KIND, vm_id, changed.json())
    return changed


def reset(txn: Transaction, vm_id: str) -> Provisioning:
    """Back to not provisioned with a new incarnation, as a re-image does; reports are kept."""
    current = provisioning_of(txn, vm_id)
    changed = replace(current, state="not_provisioned", incarnation=current.incarnation + 1)
    txn.put(PROVISIONING_KIND, vm_id, changed.json())
    return changed
