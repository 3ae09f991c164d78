"""Bugs the property tests and fuzzers found in the fleet model, fixed: their regression tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from azimds.fleet.operations import (
    FleetError,
    apply_declarations,
    create_vm,
    patch_vm,
    replace_vm,
    set_default_vm,
)
from azimds.fleet.schema import DocumentError
from azimds.fleet.vm import build_vm, example_vm
from azimds.guest.versions import API_VERSIONS
from azimds.store.base import Transaction
from azimds.store.memory import MemoryStore

EXAMPLE = example_vm()

WRITES: dict[str, Callable[[Transaction, Any], object]] = {
    "create": lambda txn, body: create_vm(txn, body),
    "replace": lambda txn, body: replace_vm(txn, EXAMPLE.vm_id, body),
    "patch": lambda txn, body: patch_vm(txn, EXAMPLE.vm_id, body),
    "declare": lambda txn, body: apply_declarations(txn, "fleet", [body], "vms"),
}


# A compute that is no object once failed with AttributeError, TypeError or ValueError, not
# FleetError: `serve --fleet` stopped with a traceback and `--watch` stopped watching.
@pytest.mark.parametrize("compute", [[1], "x", 5])
@pytest.mark.parametrize("write", list(WRITES))
def test_a_compute_that_is_no_object_is_refused_with_a_fleet_error(
    write: str, compute: object
) -> None:
    store = MemoryStore()

    def work(txn: Transaction) -> None:
        apply_declarations(txn, "config", [EXAMPLE.description()], "vm")
        set_default_vm(txn, EXAMPLE.vm_id)

    store.transact(work)
    with pytest.raises(FleetError) as refused:
        store.transact(lambda txn: WRITES[write](txn, {"compute": compute}))
    assert refused.value.kind == "invalid"


# The tags string was re-derived from itself on every build and cannot hold a ';': the tags
# changed each time the VM was rebuilt from its stored description (a node's snapshot).
@pytest.mark.parametrize("tags", [{"a": "b;c"}, {";": ""}])
def test_tags_with_separators_survive_a_rebuild(tags: dict[str, str]) -> None:
    vm = build_vm({"compute": {"tags": tags}})
    ((name, value),) = tags.items()
    again = build_vm(vm.description())
    assert again.document["compute"]["tagsList"] == vm.document["compute"]["tagsList"]
    assert again.instance(API_VERSIONS[-1], False)["compute"]["tags"] == f"{name}:{value}"


@pytest.mark.parametrize("compute", [[1], "d244d447-6fd9", 5])
def test_build_vm_refuses_a_compute_that_is_no_object_naming_it(compute: object) -> None:
    """Found by fuzz/fuzz_fleet.py: a raw ValueError from the model itself."""
    with pytest.raises(DocumentError) as refused:
        build_vm({"compute": compute})
    assert refused.value.where == "vm.compute"
