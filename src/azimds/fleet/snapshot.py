"""The fleet as one immutable snapshot: every VM at one store revision.

A node swaps whole snapshots, never edits one, so a guest sees the fleet before a change or
after it, never half of it. ``with_changes`` builds the next snapshot from the store's change
feed, re-validating only what changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from azimds.fleet.attestation_certs import CA_KIND, LEAF_KIND, leaf_key_of
from azimds.fleet.clock import CLOCK_SETTING, ClockState
from azimds.fleet.events import EVENT_KIND, Event
from azimds.fleet.faults import FAULT_KIND, FaultRule
from azimds.fleet.provisioning import PROVISIONING_KIND, Provisioning
from azimds.fleet.schema import DocumentError
from azimds.fleet.signing_keys import ACTIVE_SETTING, KEY_KIND
from azimds.fleet.vm import VM, VM_KIND, build_vm
from azimds.signing.attestation import Signer, load_signer
from azimds.signing.keys import JwtKey, load_jwt_key

log = logging.getLogger(__name__)

SETTING_KIND = "setting"
DEFAULT_VM_SETTING = "default-vm"  # body {"vmId": ...}: the VM `single` mode serves


@dataclass(frozen=True, slots=True)
class Fleet:
    revision: int = 0
    vms: Mapping[str, VM] = field(default_factory=dict)  # by vmId
    by_address: Mapping[str, VM] = field(default_factory=dict)  # primary private IP -> VM
    default_vm_id: str = ""
    jwt_keys: Mapping[str, JwtKey] = field(default_factory=dict)  # by kid
    active_kid: str = ""
    ca: Mapping[str, Signer] = field(default_factory=dict)  # "root", "intermediate"
    leaves: Mapping[str, Signer] = field(default_factory=dict)  # by leaf_key_of(...)
    events: Mapping[str, Event] = field(default_factory=dict)  # by EventId, every status
    clock: ClockState = field(default_factory=ClockState)
    faults: tuple[FaultRule, ...] = ()  # oldest first: the first that fires wins
    provisioning: Mapping[str, Provisioning] = field(default_factory=dict)  # by vmId

    def events_of(self, vm_id: str) -> list[Event]:
        """Every event (any status) that affects the VM, oldest first."""
        found = [event for event in self.events.values() if vm_id in event.resources]
        return sorted(found, key=lambda event: (event.appears_at, event.id))

    def leaf_for(self, vm: VM) -> Signer | None:
        """The attestation leaf that signs for ``vm`` (by its location and cloud)."""
        compute = vm.document["compute"]
        return self.leaves.get(leaf_key_of(compute["location"], compute["azEnvironment"]))

    def wanted_leaves(self) -> set[str]:
        return {
            leaf_key_of(vm.document["compute"]["location"], vm.document["compute"]["azEnvironment"])
            for vm in self.vms.values()
        }

    def provisioning_of(self, vm_id: str) -> Provisioning:
        """The VM's provisioning state (never provisioned if it has none)."""
        return self.provisioning.get(vm_id) or Provisioning()

    @property
    def jwt_key(self) -> JwtKey | None:
        """The key that signs new tokens."""
        return self.jwt_keys.get(self.active_kid)

    @property
    def default_vm(self) -> VM | None:
        return self.vms.get(self.default_vm_id)

    def find(self, key: str) -> VM | None:
        """A VM by vmId, or by name when exactly one VM has that name."""
        if key in self.vms:
            return self.vms[key]
        named = [vm for vm in self.vms.values() if vm.name == key]
        return named[0] if len(named) == 1 else None

    def with_changes(self, records: Iterable[Any], revision: int) -> Fleet:
        """The next snapshot: ``records`` are store records (kind, id, body, deleted)."""
        vms = dict(self.vms)
        default_vm_id = self.default_vm_id
        jwt_keys = dict(self.jwt_keys)
        active_kid = self.active_kid
        ca, leaves = dict(self.ca), dict(self.leaves)
        events, clock = dict(self.events), self.clock
        faults = {rule.id: rule for rule in self.faults}
        provisioning = dict(self.provisioning)
        for record in records:
            if record.kind == VM_KIND:
                vms.pop(record.id, None)
                if not record.deleted:
                    try:
                        vms[record.id] = vm_from_record(record.body)
                    except DocumentError as exc:
                        # Written by a newer or older azimds: skip it rather than stop serving.
                        log.error(
                            "VM %s in the store is invalid and is not served: %s", record.id, exc
                        )
            elif record.kind == SETTING_KIND and record.id == DEFAULT_VM_SETTING:
                default_vm_id = "" if record.deleted else str(record.body.get("vmId", ""))
            elif record.kind == KEY_KIND:
                jwt_keys.pop(record.id, None)
                if not record.deleted:
                    jwt_keys[record.id] = load_jwt_key(record.id, record.body)
            elif record.kind == SETTING_KIND and record.id == ACTIVE_SETTING:
                active_kid = "" if record.deleted else str(record.body.get("kid", ""))
            elif record.kind == EVENT_KIND:
                events.pop(record.id, None)
                if not record.deleted:
                    events[record.id] = Event.from_record(record.id, record.body, record.revision)
            elif record.kind == SETTING_KIND and record.id == CLOCK_SETTING:
                clock = ClockState() if record.deleted else ClockState.from_body(record.body)
            elif record.kind == FAULT_KIND:
                faults.pop(record.id, None)
                if not record.deleted:
                    faults[record.id] = FaultRule.from_body(record.body)
            elif record.kind == PROVISIONING_KIND:
                provisioning.pop(record.id, None)
                if not record.deleted:
                    provisioning[record.id] = Provisioning.from_json(record.body)
            elif record.kind in (CA_KIND, LEAF_KIND):
                signers = ca if record.kind == CA_KIND else leaves
                signers.pop(record.id, None)
                if not record.deleted:
                    signers[record.id] = load_signer(record.body)
        return Fleet(
            revision=revision,
            vms=vms,
            by_address=_index(vms.values()),
            default_vm_id=default_vm_id,
            jwt_keys=jwt_keys,
            active_kid=active_kid,
            ca=ca,
            leaves=leaves,
            events=events,
            clock=clock,
            faults=tuple(sorted(faults.values(), key=lambda rule: (rule.created, rule.id))),
            provisioning=provisioning,
        )


def vm_from_record(body: Mapping[str, Any]) -> VM:
    return build_vm(body["description"])


def _index(vms: Iterable[VM]) -> dict[str, VM]:
    by_address: dict[str, VM] = {}
    for vm in vms:
        for address in vm.caller_addresses:
            by_address[address] = vm
    return by_address
