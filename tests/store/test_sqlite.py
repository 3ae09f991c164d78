"""The embedded stores: SQLite files and the in-memory store (SQLite's :memory:)."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from azimds.store import Store, StoreError, open_store
from azimds.store.base import Transaction
from azimds.store.sql import SCHEMA_VERSION
from azimds.store.sqlite import SQLiteStore


@pytest.fixture(params=["memory:", "sqlite:"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened = open_store(request.param, tmp_path)
    yield opened
    opened.close()


def put(kind: str, id: str, body: dict[str, object]):  # type: ignore[no-untyped-def]
    def work(txn: Transaction) -> None:
        txn.put(kind, id, body)

    return work


def test_every_write_gets_the_next_revision(store: Store) -> None:
    assert store.revision() == 0
    _, first = store.transact(put("vm", "a", {"n": 1}))
    _, second = store.transact(put("vm", "b", {"n": 2}))
    assert (first, second) == (1, 2)
    assert store.revision() == 2
    record = store.get("vm", "a")
    assert record is not None and record.body == {"n": 1} and record.revision == 1


def test_one_transaction_is_one_revision(store: Store) -> None:
    def work(txn: Transaction) -> str:
        txn.put("vm", "a", {})
        txn.put("vm", "b", {})
        txn.put("address", "10.0.0.4", {"vmId": "a"})
        return "done"

    assert store.transact(work) == ("done", 1)
    assert {r.revision for r in store.changes_since(0)} == {1}


def test_reads_in_a_transaction_see_its_writes(store: Store) -> None:
    def work(txn: Transaction) -> tuple[bool, int]:
        txn.put("vm", "a", {"x": 1})
        return txn.get("vm", "a") is not None, len(txn.objects("vm"))

    assert store.transact(work)[0] == (True, 1)


def test_a_failing_transaction_writes_nothing(store: Store) -> None:
    store.transact(put("vm", "a", {"v": 1}))

    def work(txn: Transaction) -> None:
        txn.put("vm", "a", {"v": 2})
        txn.put("vm", "b", {})
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        store.transact(work)
    assert store.revision() == 1
    assert store.get("vm", "a").body == {"v": 1}  # type: ignore[union-attr]
    assert store.get("vm", "b") is None


def test_a_transaction_that_writes_nothing_makes_no_revision(store: Store) -> None:
    store.transact(put("vm", "a", {}))
    assert store.transact(lambda txn: txn.get("vm", "a") is not None) == (True, 1)


def test_deletes_leave_tombstones_in_the_feed(store: Store) -> None:
    store.transact(put("vm", "a", {"v": 1}))
    store.transact(put("vm", "b", {"v": 1}))
    deleted, revision = store.transact(lambda txn: txn.delete("vm", "a"))
    assert (deleted, revision) == (True, 3)
    assert store.transact(lambda txn: txn.delete("vm", "nope"))[0] is False
    assert store.get("vm", "a") is None
    assert [r.id for r in store.objects("vm")] == ["b"]
    changes = store.changes_since(2)
    assert [(r.id, r.deleted, r.revision) for r in changes] == [("a", True, 3)]
    # A deleted id can come back.
    store.transact(put("vm", "a", {"v": 2}))
    assert store.get("vm", "a").body == {"v": 2}  # type: ignore[union-attr]


def test_changes_since_lists_each_object_at_its_last_revision(store: Store) -> None:
    for n in range(3):
        store.transact(put("vm", "a", {"n": n}))
    store.transact(put("vm", "b", {}))
    assert [(r.id, r.revision, r.body) for r in store.changes_since(0)] == [
        ("a", 3, {"n": 2}),
        ("b", 4, {}),
    ]
    assert store.changes_since(4) == []


def test_wait_for_change_wakes_on_a_write(store: Store) -> None:
    threading.Timer(0.2, lambda: store.transact(put("vm", "a", {}))).start()
    started = time.monotonic()
    store.wait_for_change(0, timeout=5)
    assert time.monotonic() - started < 1.5
    assert store.revision() == 1


def test_wait_for_change_times_out(store: Store) -> None:
    started = time.monotonic()
    store.wait_for_change(0, timeout=0.3)
    assert 0.25 < time.monotonic() - started < 2


def test_unicode_and_nesting_survive(store: Store) -> None:
    body = {"tags": "café:☕", "nested": {"list": [1, "two", None, True]}}
    store.transact(put("vm", "ü", body))
    assert store.get("vm", "ü").body == body  # type: ignore[union-attr]


def test_sqlite_file_is_private_and_shared_between_processes(tmp_path: Path) -> None:
    path = tmp_path / "state" / "azimds.db"
    first = SQLiteStore(path)
    second = SQLiteStore(path)  # another process on the same host opens the same file
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        first.transact(put("vm", "a", {"from": "first"}))
        second.wait_for_change(0, timeout=2)
        assert second.get("vm", "a").body == {"from": "first"}  # type: ignore[union-attr]
        _, revision = second.transact(put("vm", "b", {}))
        assert revision == 2
        assert [r.id for r in first.changes_since(1)] == ["b"]
    finally:
        first.close()
        second.close()


def test_migrations_are_versioned_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "azimds.db"
    SQLiteStore(path).close()
    store = SQLiteStore(path)  # opening again applies nothing twice
    try:
        rows = store._read("SELECT version FROM azimds_schema")
        assert rows == [(SCHEMA_VERSION,)]
    finally:
        store.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "azimds.db"
    store = SQLiteStore(path)
    store._db.execute("UPDATE azimds_schema SET version = 99")
    store.close()
    with pytest.raises(StoreError, match="schema version 99, newer than this azimds knows"):
        SQLiteStore(path)


def test_unknown_store_url(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unknown store 'redis://x'"):
        open_store("redis://x", tmp_path)


def test_sqlite_url_forms(tmp_path: Path) -> None:
    default = open_store("sqlite:", tmp_path)
    explicit = open_store(f"sqlite:///{tmp_path}/other.db", tmp_path)
    try:
        assert default.url == f"sqlite:///{tmp_path}/azimds.db"
        assert explicit.url == f"sqlite:///{tmp_path}/other.db"
    finally:
        default.close()
        explicit.close()
