"""Changes to the fleet, as transactions on the store: the rules every writer obeys.

The control plane, the config file and the fleet file all change VMs through these functions,
so the same validation applies everywhere: a complete valid document, a vmId that never
changes, and no private address claimed by two VMs (source-ip mode finds callers by it).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from azimds.errors import Problem
from azimds.fleet.provisioning import PROVISIONING_KIND
from azimds.fleet.schema import DocumentError
from azimds.fleet.snapshot import DEFAULT_VM_SETTING, SETTING_KIND, vm_from_record
from azimds.fleet.vm import VM, VM_KIND, build_vm, patch_description
from azimds.store.base import Transaction

ADDRESS_KIND = "address"  # body {"vmId": ...}: which VM holds a private address
# vmIds derived from names (declarations without one) are stable across restarts.
_DECLARED_NAMESPACE = uuid.UUID("6f0c2d43-3b8e-4c55-9a83-7b1f1f0e6a10")


class FleetError(Problem):
    """A change the fleet refuses; ``kind`` is invalid, not_found or conflict.

    Its text leaves ``where`` out: the control plane sends that as the error's ``field``."""

    def __init__(self, kind: str, message: str, where: str = "", *, fix: str = "") -> None:
        super().__init__(message, where=where, fix=fix)
        self.kind = kind

    def __str__(self) -> str:
        return self.advice


def _compute_of(description: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    compute = description.get("compute") or {}
    if not isinstance(compute, Mapping):
        raise FleetError("invalid", "compute is an object of fields", f"{where}.compute")
    return compute


def _validate(description: Any, where: str = "vm") -> VM:
    if not isinstance(description, Mapping):
        raise FleetError("invalid", "a VM description is a JSON object", where)
    try:
        vm = build_vm(description, where)
    except DocumentError as exc:
        raise FleetError("invalid", exc.problem, exc.where, fix=exc.fix) from exc
    if not vm.name:
        raise FleetError(
            "invalid", "every VM needs a name", f"{where}.compute.name", fix="set compute.name"
        )
    return vm


def _with_vm_id(description: Mapping[str, Any], vm_id: str) -> dict[str, Any]:
    compute = dict(_compute_of(description, "vm"))
    compute["vmId"] = vm_id
    return {**description, "compute": compute}


def _claim_addresses(txn: Transaction, vm: VM, previous: VM | None) -> None:
    for address in vm.addresses:
        holder = txn.get(ADDRESS_KIND, address)
        if holder is not None and holder.body["vmId"] != vm.vm_id:
            raise FleetError(
                "conflict", f"address {address} already belongs to VM {holder.body['vmId']}"
            )
    if previous is not None:
        for address in set(previous.addresses) - set(vm.addresses):
            txn.delete(ADDRESS_KIND, address)
    for address in vm.addresses:
        if previous is None or address not in previous.addresses:
            txn.put(ADDRESS_KIND, address, {"vmId": vm.vm_id})


def _current(txn: Transaction, vm_id: str) -> tuple[VM, Mapping[str, Any]]:
    record = txn.get(VM_KIND, vm_id)
    if record is None:
        raise FleetError("not_found", f"no VM {vm_id}")
    return vm_from_record(record.body), record.body


def _write(
    txn: Transaction, vm: VM, previous: VM | None, source: str, declared: str | None
) -> None:
    _claim_addresses(txn, vm, previous)
    txn.put(
        VM_KIND, vm.vm_id, {"description": vm.description(), "source": source, "declared": declared}
    )


def create_vm(txn: Transaction, description: Any, source: str = "api") -> VM:
    if not isinstance(description, Mapping):
        raise FleetError("invalid", "a VM description is a JSON object")
    vm_id = str(_compute_of(description, "vm").get("vmId") or uuid.uuid4())
    vm = _validate(_with_vm_id(description, vm_id))
    if txn.get(VM_KIND, vm.vm_id) is not None:
        raise FleetError("conflict", f"VM {vm.vm_id} already exists")
    _write(txn, vm, None, source, None)
    return vm


def replace_vm(txn: Transaction, vm_id: str, description: Any) -> VM:
    previous, body = _current(txn, vm_id)
    if not isinstance(description, Mapping):
        raise FleetError("invalid", "a VM description is a JSON object")
    given = _compute_of(description, "vm").get("vmId")
    if given not in (None, "", vm_id):
        raise FleetError(
            "invalid", "vmId cannot change", "vm.compute.vmId", fix="leave it out or keep it"
        )
    vm = _validate(_with_vm_id(description, vm_id))
    _write(txn, vm, previous, str(body.get("source", "api")), body.get("declared"))
    return vm


def patch_vm(txn: Transaction, vm_id: str, patch: Any) -> VM:
    """JSON Merge Patch (RFC 7396) of the VM's description."""
    previous, _ = _current(txn, vm_id)
    if not isinstance(patch, Mapping):
        raise FleetError("invalid", "a merge patch is a JSON object")
    return replace_vm(txn, vm_id, patch_description(previous.description(), patch))


def delete_vm(txn: Transaction, vm_id: str) -> VM:
    previous, _ = _current(txn, vm_id)
    for address in previous.addresses:
        txn.delete(ADDRESS_KIND, address)
    txn.delete(VM_KIND, vm_id)
    # A VM created again with this vmId is a new VM: not provisioned, incarnation 1.
    txn.delete(PROVISIONING_KIND, vm_id)
    return previous


def declaration_hash(description: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Applied:
    written: tuple[str, ...] = ()  # vmIds created or replaced
    removed: tuple[str, ...] = ()  # vmIds deleted (no longer declared)


def apply_declarations(
    txn: Transaction, source: str, descriptions: Iterable[Mapping[str, Any]], where: str
) -> Applied:
    """Make the store match what a file declares, where the declaration changed.

    A declared VM is written when it is new or its declaration differs from the one last
    applied; changes made through the control plane to a VM whose declaration did not change
    are kept. VMs this source declared before and no longer does are removed.
    """
    declared: dict[str, tuple[VM, str, str]] = {}
    for index, description in enumerate(descriptions):
        spot = f"{where}[{index}]"
        if not isinstance(description, Mapping):
            raise FleetError("invalid", "a VM description is a mapping", spot)
        compute = _compute_of(description, spot)
        name = str(compute.get("name") or "")
        vm_id = str(compute.get("vmId") or "")
        vm_id = vm_id or str(uuid.uuid5(_DECLARED_NAMESPACE, name))
        vm = _validate(_with_vm_id(description, vm_id), spot)
        if vm.vm_id in declared:
            raise FleetError("conflict", f"VM {vm.vm_id} is declared twice", spot)
        declared[vm.vm_id] = (vm, declaration_hash(description), spot)

    written, removed = [], []
    for record in txn.objects(VM_KIND):
        if record.body.get("source") == source and record.id not in declared:
            delete_vm(txn, record.id)
            removed.append(record.id)
    for vm_id, (vm, digest, spot) in declared.items():
        existing = txn.get(VM_KIND, vm_id)
        if existing is not None and existing.body.get("declared") == digest:
            continue
        try:
            _write(txn, vm, vm_from_record(existing.body) if existing else None, source, digest)
        except FleetError as exc:
            raise FleetError(exc.kind, exc.problem, exc.where or spot, fix=exc.fix) from exc
        written.append(vm_id)
    return Applied(tuple(written), tuple(removed))


def set_default_vm(txn: Transaction, vm_id: str) -> None:
    record = txn.get(SETTING_KIND, DEFAULT_VM_SETTING)
    if record is None or record.body.get("vmId") != vm_id:
        txn.put(SETTING_KIND, DEFAULT_VM_SETTING, {"vmId": vm_id})


def set_system_identity(
    txn: Transaction, vm_id: str, enabled: bool, given: Mapping[str, Any]
) -> VM:
    """Turn the VM's system-assigned identity on (with any ids given) or off."""
    previous, _ = _current(txn, vm_id)
    description = previous.description()
    section = dict(description["identity"])
    section["systemAssigned"] = {**section["systemAssigned"], **given, "enabled": enabled}
    if not enabled:
        section["systemAssigned"] = {"enabled": False}
    return replace_vm(txn, vm_id, {**description, "identity": section})


def add_user_identity(txn: Transaction, vm_id: str, spec: Any) -> VM:
    """Assign a user-assigned identity to the VM (ids derived where not given)."""
    previous, _ = _current(txn, vm_id)
    if not isinstance(spec, Mapping):
        raise FleetError(
            "invalid",
            "an identity is a JSON object (name, clientId, objectId, resourceId, tenantId)",
        )
    description = previous.description()
    section = dict(description["identity"])
    section["userAssigned"] = [*section["userAssigned"], dict(spec)]
    vm = replace_vm(txn, vm_id, {**description, "identity": section})
    added = vm.user_identities[-1]
    if any(u.client_id == added.client_id for u in vm.user_identities[:-1]):
        raise FleetError("conflict", f"VM {vm_id} already has identity {added.client_id}")
    return vm


def remove_user_identity(txn: Transaction, vm_id: str, key: str) -> VM:
    """Unassign the user-assigned identity with this client id, object id or name."""
    previous, _ = _current(txn, vm_id)
    wanted = key.lower()
    description = previous.description()
    section = dict(description["identity"])
    kept = [
        user
        for user in section["userAssigned"]
        if wanted not in {user["clientId"], user["objectId"], user["name"].lower()}
        and wanted != user["resourceId"].lower()
    ]
    if len(kept) == len(section["userAssigned"]):
        raise FleetError("not_found", f"VM {vm_id} has no user-assigned identity '{key}'")
    section["userAssigned"] = kept
    return replace_vm(txn, vm_id, {**description, "identity": section})
