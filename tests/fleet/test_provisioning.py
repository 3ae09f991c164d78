"""A VM's provisioning state in the store: reports, incarnations, and a VM created again."""

from __future__ import annotations

from pathlib import Path

from azimds.fleet.operations import create_vm, delete_vm
from azimds.fleet.provisioning import Report, add_report, provisioning_of, reset
from azimds.store import open_store

VM = {"compute": {"name": "web-1", "vmId": "11111111-2222-3333-4444-555555555555"}}
VM_ID = VM["compute"]["vmId"]


def test_a_vm_created_again_starts_unprovisioned(tmp_path: Path) -> None:
    store = open_store("memory:", tmp_path)
    store.transact(lambda txn: create_vm(txn, VM))
    store.transact(lambda txn: reset(txn, VM_ID))  # incarnation 2
    ready = Report(1.0, "Cloud-Init/22.4.2", "Ready", incarnation=2)
    store.transact(lambda txn: add_report(txn, VM_ID, ready))
    assert store.transact(lambda txn: provisioning_of(txn, VM_ID))[0].state == "ready"

    store.transact(lambda txn: delete_vm(txn, VM_ID))
    store.transact(lambda txn: create_vm(txn, VM))
    again, _ = store.transact(lambda txn: provisioning_of(txn, VM_ID))
    assert (again.state, again.incarnation, again.reports) == ("not_provisioned", 1, ())


def test_a_report_for_an_earlier_incarnation_is_kept_but_changes_nothing(tmp_path: Path) -> None:
    store = open_store("memory:", tmp_path)
    store.transact(lambda txn: create_vm(txn, VM))
    store.transact(lambda txn: reset(txn, VM_ID))
    late = Report(1.0, "WALinuxAgent/2.7.3.0", "Ready", incarnation=1)
    after, _ = store.transact(lambda txn: add_report(txn, VM_ID, late))
    assert after is not None
    assert (after.state, after.incarnation, after.reports) == ("not_provisioned", 2, (late,))
