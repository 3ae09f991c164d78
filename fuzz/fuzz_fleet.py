"""Fuzz the fleet model: bytes -> JSON or YAML -> VM validation, writes and merge patches.

Each input is parsed as JSON, or else as YAML (what config and fleet files are), and the value
goes everywhere a user's VM description goes:

- ``fleet.vm.build_vm`` may refuse only with ``DocumentError``; a VM it accepts must be the same
  VM when rebuilt from its own description (what the store keeps and a snapshot reads back);
- ``fleet.operations``: ``create_vm``, ``replace_vm`` and ``patch_vm`` (the control plane's
  POST, PUT and PATCH) and ``apply_declarations`` (the config and fleet files) may refuse only
  with ``FleetError``, and whatever they write reads back as the VM they returned;
- ``fleet.merge_patch``: an empty patch changes nothing, a patch applied twice is applied once,
  and neither input is changed.

Writes run in a transaction that is always rolled back, so every input sees the same fleet: the
documentation's example VM and a second VM holding 10.0.0.5.

A crash is an exception other than those, or a broken law. The two bugs it found (a compute
that is no object; tags holding ';') are fixed, with regression tests in
tests/serving/test_fleet_regressions.py.

    python fuzz/fuzz_fleet.py -max_total_time=60      # docs/reliability.md
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys
from collections.abc import Mapping
from typing import Any

import atheris
import yaml
from harness import main

with atheris.instrument_imports(include=["azimds"]):
    from azimds.fleet.merge_patch import merge_patch
    from azimds.fleet.operations import (
        FleetError,
        apply_declarations,
        create_vm,
        patch_vm,
        replace_vm,
        set_default_vm,
    )
    from azimds.fleet.schema import DocumentError
    from azimds.fleet.snapshot import vm_from_record
    from azimds.fleet.vm import VM, VM_KIND, build_vm, example_description, example_vm
    from azimds.store.base import Transaction
    from azimds.store.memory import MemoryStore

EXAMPLE = example_vm()
EXAMPLE_DESCRIPTION = example_description()
OTHER = build_vm(
    {
        "compute": {"name": "other", "vmId": "11111111-2222-3333-4444-555555555555"},
        "network": {"interface": [{"ipv4": {"ipAddress": [{"privateIpAddress": "10.0.0.5"}]}}]},
    }
)
STORE = MemoryStore()


def _seed(txn: Transaction) -> None:
    apply_declarations(txn, "config", [EXAMPLE.description()], "vm")
    set_default_vm(txn, EXAMPLE.vm_id)
    create_vm(txn, OTHER.description())


STORE.transact(_seed)


class _RollBack(Exception):
    pass


def parse(data: bytes) -> Any:
    """JSON if it is JSON, else YAML; ``_RollBack`` (skip) when it is neither."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _RollBack from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError):
        # ValueError/TypeError/OverflowError: PyYAML's own constructors on odd scalars
        # (timestamps out of range and the like); parsing is not what is fuzzed here.
        raise _RollBack from None


def check_rebuild(vm: VM) -> None:
    """What the store keeps, read back, is the same VM."""
    again = vm_from_record({"description": vm.description()})
    assert same(again, vm), (vm.description(), again.description())


def check_build(value: Any) -> None:
    try:
        vm = build_vm(value)
    except DocumentError as exc:
        assert exc.where.startswith("vm"), exc
        return
    check_rebuild(vm)


def check_writes(value: Any) -> None:
    """The control plane's writes and a file's declarations, rolled back after."""

    def work(txn: Transaction) -> None:
        for write in (
            lambda: create_vm(txn, value),
            lambda: replace_vm(txn, EXAMPLE.vm_id, value),
            lambda: patch_vm(txn, EXAMPLE.vm_id, value),
        ):
            try:
                vm = write()
            except FleetError as exc:
                assert exc.kind in ("invalid", "not_found", "conflict"), exc
                continue
            record = txn.get(VM_KIND, vm.vm_id)
            assert record is not None
            assert same(vm_from_record(record.body), vm)
            check_rebuild(vm)
        declared = value if isinstance(value, list) else [value]
        try:
            apply_declarations(txn, "fleet", declared, "fleet")
        except FleetError as exc:
            assert exc.kind in ("invalid", "conflict"), exc
        raise _RollBack

    with contextlib.suppress(_RollBack):
        STORE.transact(work)


def same(a: Any, b: Any) -> bool:
    """Equal, counting NaN (which JSON and YAML both parse) as equal to itself."""
    return bool(a == b) or repr(a) == repr(b)


def check_merge_patch(patch: Any) -> None:
    for target in (EXAMPLE_DESCRIPTION, patch, {}, OTHER.description()):
        before = copy.deepcopy((target, patch))
        once = merge_patch(target, patch)
        assert same(merge_patch(once, patch), once), (target, patch)
        if isinstance(target, dict):
            assert same(merge_patch(target, {}), target)
        assert same((target, patch), before), "merge_patch changed its input"


def test_one_input(data: bytes) -> None:
    try:
        value = parse(data)
    except _RollBack:
        return
    check_merge_patch(value)
    if isinstance(value, Mapping):
        check_build(value)
    check_writes(value)


if __name__ == "__main__":
    main("fleet", test_one_input, smoke_runs=6_000)
    sys.exit(0)
