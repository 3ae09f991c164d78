"""PostgresStore against a real PostgreSQL server (the throwaway cluster of tests/pg.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from azimds.store import StoreError, StoreUnavailable, open_store
from azimds.store import postgres as postgres_module
from azimds.store.base import Transaction
from azimds.store.postgres import PostgresStore
from azimds.store.sql import SCHEMA_VERSION
from tests.pg import DATABASE, Postgres


@pytest.fixture
def url(postgres: Postgres) -> str:
    """A fresh, empty database for each test."""
    return postgres.new_database()


@pytest.fixture
def store(url: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(url)
    yield opened
    opened.close()


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Look at the database directly, not through the store."""
    with psycopg.connect(url) as connection:
        return connection.execute(sql).fetchall()  # type: ignore[arg-type]


def put(kind: str, id: str, body: dict[str, Any]) -> Callable[[Transaction], None]:
    return lambda txn: txn.put(kind, id, body)


def run_in_threads(count: int, target: Callable[[int], Any]) -> list[Any]:
    """Run ``target(i)`` in ``count`` threads released together; re-raise the first error."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


# --- migrations --------------------------------------------------------------------------


def test_opening_applies_the_migrations(url: str) -> None:
    store = open_store(url, state_dir=None)  # type: ignore[arg-type]
    try:
        assert isinstance(store, PostgresStore)
        assert store.revision() == 0
        assert store.changes_since(0) == []
    finally:
        store.close()
    assert query(url, "SELECT version FROM azimds_schema") == [(SCHEMA_VERSION,)]
    tables = {
        row[0] for row in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert {"objects", "revision", "azimds_schema"} <= tables


def test_opening_twice_changes_nothing(url: str) -> None:
    first = PostgresStore(url)
    _, revision = first.transact(put("vm", "a", {"n": 1}))
    first.close()

    second = PostgresStore(url)
    try:
        assert second.revision() == revision == 1
        record = second.get("vm", "a")
        assert record is not None and record.body == {"n": 1}
    finally:
        second.close()
    assert query(url, "SELECT version FROM azimds_schema") == [(SCHEMA_VERSION,)]
    assert query(url, "SELECT value FROM revision") == [(1,)]


def test_two_stores_opening_a_new_database_at_once(url: str) -> None:
    stores = run_in_threads(2, lambda i: PostgresStore(url))
    try:
        assert query(url, "SELECT version FROM azimds_schema") == [(SCHEMA_VERSION,)]
        assert query(url, "SELECT value FROM revision") == [(0,)]
        _, one = stores[0].transact(put("vm", "a", {}))
        _, two = stores[1].transact(put("vm", "b", {}))
        assert (one, two) == (1, 2)
    finally:
        for store in stores:
            store.close()


# --- opening while the database is down, or refuses us ------------------------------------


def test_opening_waits_for_a_database_that_is_down(
    postgres: Postgres, url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node started before its database: opening retries (0.5 s, 1 s, 2 s, ...), saying so,
    and succeeds once the database is up."""
    monkeypatch.setattr(postgres_module, "RETRY_FOR", 30.0)  # a failure ends the test sooner
    caplog.set_level(logging.WARNING, logger="azimds.store.postgres")
    with postgres.outage():
        back = threading.Timer(2.5, postgres.start)
        back.start()
        try:
            store = PostgresStore(url)
        finally:
            back.join()
    try:
        assert store.revision() == 0
    finally:
        store.close()
    retries = [record.getMessage() for record in caplog.records]
    assert len(retries) >= 2, retries
    assert "retrying in 0.5 s" in retries[0] and "retrying in 1.0 s" in retries[1]
    assert all(f"PostgreSQL at {postgres.socket_dir}:{postgres.port} is" in m for m in retries)


def test_opening_gives_up_when_the_database_stays_down(
    postgres: Postgres, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_module, "RETRY_FOR", 1.2)
    with postgres.outage():
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"still unreachable after 1\.2 s, giving up"):
            PostgresStore(url)
        assert time.monotonic() - started < 3.0


def test_a_wrong_password_fails_at_once(postgres: Postgres) -> None:
    role = postgres.password_role("right-one")
    url = postgres.url_for(DATABASE, role, "s3cret-but-wrong")
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        PostgresStore(url)
    assert time.monotonic() - started < 2.0  # no retries
    assert not isinstance(caught.value, StoreUnavailable)
    message = str(caught.value)
    assert f'password authentication failed for user "{role}"' in message
    assert "Fix: check the user, password and database in the store URL" in message
    assert "s3cret-but-wrong" not in message and f"{role}:***@" in message
    psycopg.connect(postgres.url_for(DATABASE, role, "right-one")).close()  # the right one works


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("postgresql://azimds@/azimds?bogus=1", 'invalid URI query parameter: "bogus"'),
        ("postgresql://azimds@db.invalid:port/azimds", "port 'port' is not a number"),
        ("postgresql://azimds@/azimds?sslmode=bogus", 'invalid sslmode value: "bogus"'),
        ("postgresql://azimds:pa%zz@db.invalid/azimds", 'invalid percent-encoded token: "***"'),
    ],
)
def test_a_malformed_url_fails_at_once(url: str, said: str) -> None:
    started = time.monotonic()
    with pytest.raises(StoreError, match="invalid PostgreSQL URL") as caught:
        PostgresStore(url)
    assert said in str(caught.value)
    assert time.monotonic() - started < 1.0


def test_a_missing_database_fails_at_once(postgres: Postgres) -> None:
    started = time.monotonic()
    with pytest.raises(StoreError, match='database "nothere" does not exist'):
        PostgresStore(postgres.url_for("nothere"))
    assert time.monotonic() - started < 2.0


# --- transactions and the change feed ----------------------------------------------------


def test_transact_returns_increasing_revisions(store: PostgresStore) -> None:
    assert store.transact(put("vm", "a", {"n": 1})) == (None, 1)
    assert store.transact(put("vm", "b", {"n": 2})) == (None, 2)

    def two_writes(txn: Transaction) -> str:
        txn.put("vm", "c", {})
        txn.put("address", "10.0.0.4", {"vmId": "c"})
        return "done"

    assert store.transact(two_writes) == ("done", 3)  # one transaction, one revision
    assert store.transact(lambda txn: txn.get("vm", "a"))[1] == 3  # read-only: current
    assert store.revision() == 3


def test_writers_on_two_connections_get_distinct_revisions(url: str) -> None:
    stores = [PostgresStore(url), PostgresStore(url)]
    try:

        def write(i: int) -> list[int]:
            return [stores[i].transact(put("vm", f"{i}-{n}", {}))[1] for n in range(20)]

        first, second = run_in_threads(2, write)
        assert first == sorted(first) and second == sorted(second)
        assert sorted(first + second) == list(range(1, 41))
        feed = stores[0].changes_since(0)
        assert [record.revision for record in feed] == list(range(1, 41))
    finally:
        for store in stores:
            store.close()


def test_changes_since_returns_puts_and_tombstones_in_revision_order(
    store: PostgresStore,
) -> None:
    store.transact(put("vm", "a", {"n": 1}))  # 1
    store.transact(put("vm", "b", {"n": 2}))  # 2
    assert store.transact(lambda txn: txn.delete("vm", "a")) == (True, 3)
    store.transact(put("vm", "c", {"n": 3}))  # 4
    store.transact(put("vm", "b", {"n": 5}))  # 5
    assert store.transact(lambda txn: txn.delete("vm", "missing")) == (False, 5)

    feed = store.changes_since(0)
    assert [(r.id, r.revision, r.deleted) for r in feed] == [
        ("a", 3, True),
        ("c", 4, False),
        ("b", 5, False),
    ]
    assert feed[2].body == {"n": 5}
    assert [(r.id, r.revision) for r in store.changes_since(3)] == [("c", 4), ("b", 5)]
    assert store.changes_since(5) == []
    # Reads leave tombstones out.
    assert store.get("vm", "a") is None
    assert [r.id for r in store.objects("vm")] == ["b", "c"]


def test_a_failing_transaction_writes_nothing(store: PostgresStore) -> None:
    store.transact(put("vm", "a", {"n": 1}))

    def fails(txn: Transaction) -> None:
        txn.put("vm", "a", {"n": 2})
        txn.put("vm", "b", {})
        txn.delete("vm", "a")
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        store.transact(fails)
    assert store.revision() == 1
    assert [(r.id, r.body) for r in store.changes_since(0)] == [("a", {"n": 1})]
    assert store.get("vm", "b") is None
    assert store.transact(put("vm", "c", {})) == (None, 2)  # no revision was lost


# --- waiting for changes (LISTEN/NOTIFY) ---------------------------------------------------


def test_wait_for_change_times_out_without_a_write(store: PostgresStore) -> None:
    for _ in range(2):  # the first call connects the listener, the second reuses it
        started = time.monotonic()
        store.wait_for_change(store.revision(), timeout=0.5)
        assert 0.45 <= time.monotonic() - started < 1.5


def test_wait_for_change_wakes_on_another_connections_write(url: str) -> None:
    follower, writer = PostgresStore(url), PostgresStore(url)
    try:
        for n in range(3):  # first a new listener, then the same one again
            revision = follower.revision()
            timer = threading.Timer(0.3, writer.transact, args=(put("vm", f"v{n}", {}),))
            started = time.monotonic()
            timer.start()
            follower.wait_for_change(revision, timeout=10)
            elapsed = time.monotonic() - started
            timer.join()
            assert elapsed < 1.0, f"woke after {elapsed:.2f}s"
            assert follower.revision() == revision + 1
            assert [r.id for r in follower.changes_since(revision)] == [f"v{n}"]
    finally:
        follower.close()
        writer.close()


def test_wait_for_change_returns_at_once_when_already_passed(url: str) -> None:
    follower, writer = PostgresStore(url), PostgresStore(url)
    try:
        writer.transact(put("vm", "a", {}))  # before the follower listens
        started = time.monotonic()
        follower.wait_for_change(0, timeout=10)
        assert time.monotonic() - started < 1.0
    finally:
        follower.close()
        writer.close()


# --- outages ---------------------------------------------------------------------------


def expect_unavailable(call: Callable[[], Any], timeout: float = 4.0) -> StoreUnavailable:
    """``call`` raises StoreUnavailable (not some other error) and does so promptly."""
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        call()
    assert time.monotonic() - started < timeout
    assert isinstance(caught.value, StoreUnavailable), (
        f"{type(caught.value).__name__}, not StoreUnavailable: {caught.value}"
    )
    return caught.value


def test_writes_raise_store_unavailable_during_an_outage(
    postgres: Postgres, store: PostgresStore
) -> None:
    store.transact(put("vm", "a", {}))
    with postgres.outage():
        for _ in range(3):  # the stale connection, then failed reconnections
            expect_unavailable(lambda: store.transact(put("vm", "b", {})))


def test_reads_raise_store_unavailable_during_an_outage(
    postgres: Postgres, store: PostgresStore
) -> None:
    store.transact(put("vm", "a", {}))
    with postgres.outage():
        for _ in range(3):
            expect_unavailable(lambda: store.changes_since(0))
            expect_unavailable(store.revision)


def test_wait_for_change_raises_store_unavailable_during_an_outage(
    postgres: Postgres, store: PostgresStore
) -> None:
    store.wait_for_change(store.revision(), timeout=0.1)  # the listener is connected
    timer = threading.Timer(0.3, postgres.stop)
    timer.start()
    try:
        # A listener that loses its server says so instead of sitting out the timeout.
        expect_unavailable(lambda: store.wait_for_change(0, timeout=10), timeout=5)
        timer.join()
        for _ in range(2):  # and cannot reconnect while the server is down
            expect_unavailable(lambda: store.wait_for_change(0, timeout=10), timeout=5)
    finally:
        timer.join()
        postgres.start()


def test_the_same_store_works_again_after_an_outage(
    postgres: Postgres, url: str, store: PostgresStore
) -> None:
    store.transact(put("vm", "a", {}))
    store.wait_for_change(store.revision(), timeout=0.1)  # the listener is connected
    with postgres.outage():
        with pytest.raises(StoreError):
            store.transact(put("vm", "lost", {}))
        with pytest.raises(StoreError):
            store.changes_since(0)
        with pytest.raises(StoreError):
            store.wait_for_change(1, timeout=1)
    # Back: every operation reconnects, and nothing written during the outage appears.
    assert store.transact(put("vm", "b", {})) == (None, 2)
    assert [r.id for r in store.changes_since(0)] == ["a", "b"]
    writer = PostgresStore(url)
    try:
        timer = threading.Timer(0.3, writer.transact, args=(put("vm", "c", {}),))
        started = time.monotonic()
        timer.start()
        store.wait_for_change(2, timeout=10)
        elapsed = time.monotonic() - started
        timer.join()
        assert elapsed < 1.0, f"woke after {elapsed:.2f}s"
        assert [r.id for r in store.changes_since(2)] == ["c"]
    finally:
        writer.close()


# --- the URL ----------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_the_password_never_shows(postgres: Postgres, url: str, form: str) -> None:
    database = url.split("@/")[1].split("?")[0]
    if form == "userinfo":
        secret_url = postgres.url_for(database, password="s3cret-pw")
    else:
        secret_url = postgres.url_for(database) + "&password=s3cret-pw"
    store = PostgresStore(secret_url)  # trust auth: the password is not checked
    try:
        assert "s3cret-pw" not in store.url
        assert database in store.url
        if form == "userinfo":
            assert store.url == postgres.url_for(database, password="***")
        with postgres.outage():
            for call in (lambda: store.transact(put("vm", "a", {})), lambda: store.get("vm", "a")):
                with pytest.raises(StoreError) as caught:
                    call()
                assert "s3cret-pw" not in str(caught.value)
    finally:
        store.close()
