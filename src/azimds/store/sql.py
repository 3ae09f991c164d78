"""What the SQLite and PostgreSQL stores share: the schema, its migrations and every query.

A backend supplies a DB-API connection, its parameter style and its way of waiting for
changes; the SQL itself is written once, in the subset both databases accept.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

from azimds.store.base import Body, Record, StoreError, T

# Versioned migrations: index + 1 is the schema version they bring the database to.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE objects (
            kind TEXT NOT NULL,
            id TEXT NOT NULL,
            body TEXT NOT NULL,
            revision BIGINT NOT NULL,
            deleted BOOLEAN NOT NULL DEFAULT FALSE,
            PRIMARY KEY (kind, id)
        )""",
        "CREATE INDEX objects_by_revision ON objects (revision)",
        "CREATE TABLE revision (id INTEGER PRIMARY KEY, value BIGINT NOT NULL)",
        "INSERT INTO revision (id, value) VALUES (1, 0)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = "kind, id, body, revision, deleted"


def _record(row: Sequence[Any]) -> Record:
    kind, id_, body, revision, deleted = row
    return Record(kind, id_, json.loads(body), int(revision), bool(deleted))


def _encode(body: Body) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, sort_keys=False)


class _Txn:
    """A ``Transaction`` over an open DB-API cursor; the first write claims a new revision."""

    def __init__(self, store: SQLStore, cursor: Any) -> None:
        self._store = store
        self._cursor = cursor
        self.revision: int | None = None

    def _q(self, sql: str) -> str:
        return self._store.sql(sql)

    def _claim_revision(self) -> int:
        if self.revision is None:
            # The row lock on `revision` orders writers, so revisions commit in sequence.
            self._cursor.execute(
                self._q("UPDATE revision SET value = value + 1 WHERE id = 1 RETURNING value")
            )
            self.revision = int(self._cursor.fetchone()[0])
        return self.revision

    def lock(self) -> None:
        # Every revision must belong to a write, or followers would wait for one that never
        # shows in the feed: lock the counter's row without taking a number.
        if self._store.lock_statement:
            self._cursor.execute(self._store.lock_statement)

    def get(self, kind: str, id: str) -> Record | None:
        self._cursor.execute(
            self._q(f"SELECT {_COLUMNS} FROM objects WHERE kind = ? AND id = ? AND NOT deleted"),
            (kind, id),
        )
        row = self._cursor.fetchone()
        return None if row is None else _record(row)

    def objects(self, kind: str) -> list[Record]:
        self._cursor.execute(
            self._q(f"SELECT {_COLUMNS} FROM objects WHERE kind = ? AND NOT deleted ORDER BY id"),
            (kind,),
        )
        return [_record(row) for row in self._cursor.fetchall()]

    def put(self, kind: str, id: str, body: Body) -> None:
        revision = self._claim_revision()
        self._cursor.execute(
            self._q(
                "INSERT INTO objects (kind, id, body, revision, deleted) "
                "VALUES (?, ?, ?, ?, FALSE) ON CONFLICT (kind, id) DO UPDATE SET "
                "body = excluded.body, revision = excluded.revision, deleted = FALSE"
            ),
            (kind, id, _encode(body), revision),
        )

    def delete(self, kind: str, id: str) -> bool:
        if self.get(kind, id) is None:
            return False
        revision = self._claim_revision()
        self._cursor.execute(
            self._q(
                "UPDATE objects SET deleted = TRUE, body = '{}', revision = ? "
                "WHERE kind = ? AND id = ?"
            ),
            (revision, kind, id),
        )
        return True


class SQLStore:
    """The shared implementation; subclasses open connections and wait for changes."""

    url: str
    paramstyle = "qmark"  # "?" placeholders; PostgreSQL's driver wants "%s"
    # How a transaction takes the write lock before writing ("" where BEGIN already did).
    lock_statement = ""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # one connection, used by one thread at a time

    # --- for subclasses ---------------------------------------------------------------

    def _connection(self) -> Any:
        raise NotImplementedError

    def _begin_write(self, cursor: Any) -> None:
        """Start a write transaction (SQLite takes the write lock at once)."""

    def _begin_migration(self, cursor: Any) -> None:
        """Start the migration transaction; several nodes may start at once."""
        self._begin_write(cursor)

    def _after_write(self, cursor: Any, revision: int) -> None:
        """Inside the transaction, after a write (PostgreSQL notifies followers)."""

    def _translate(self, exc: Exception) -> Exception:
        """Map a driver error to StoreUnavailable or StoreError."""
        return StoreError(str(exc))

    # --- shared ----------------------------------------------------------------------

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.paramstyle == "format" else statement

    def migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION, one versioned step at a time."""
        with self._lock:
            connection = self._connection()
            cursor = connection.cursor()
            try:
                self._begin_migration(cursor)
                cursor.execute(
                    "CREATE TABLE IF NOT EXISTS azimds_schema (version INTEGER NOT NULL)"
                )
                cursor.execute("SELECT version FROM azimds_schema")
                row = cursor.fetchone()
                version = 0 if row is None else int(row[0])
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.url} has schema version {version}, newer than this azimds knows "
                        f"({SCHEMA_VERSION}); upgrade azimds"
                    )
                for statements in MIGRATIONS[version:]:
                    for statement in statements:
                        cursor.execute(statement)
                if row is None:
                    cursor.execute(
                        self.sql("INSERT INTO azimds_schema (version) VALUES (?)"),
                        (SCHEMA_VERSION,),
                    )
                elif version < SCHEMA_VERSION:
                    cursor.execute(
                        self.sql("UPDATE azimds_schema SET version = ?"), (SCHEMA_VERSION,)
                    )
                connection.commit()
            except Exception:
                connection.rollback()
                raise
            finally:
                cursor.close()

    def transact(self, work: Callable[[_Txn], T]) -> tuple[T, int]:
        with self._lock:
            try:
                connection = self._connection()
                cursor = connection.cursor()
            except StoreError:
                raise
            except Exception as exc:
                raise self._translate(exc) from exc
            try:
                self._begin_write(cursor)
                txn = _Txn(self, cursor)
                result = work(txn)
                if txn.revision is not None:
                    self._after_write(cursor, txn.revision)
                    connection.commit()
                    return result, txn.revision
                connection.rollback()
                return result, self.revision()
            except Exception as exc:
                with contextlib.suppress(Exception):  # the connection itself may be gone
                    connection.rollback()
                if self._is_driver_error(exc):
                    raise self._translate(exc) from exc
                raise
            finally:
                cursor.close()

    def _is_driver_error(self, exc: Exception) -> bool:
        return False

    def _read(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                connection = self._connection()
                cursor = connection.cursor()
                try:
                    cursor.execute(self.sql(statement), params)
                    rows = cursor.fetchall()
                finally:
                    cursor.close()
                connection.commit()  # end the read transaction: later reads see new writes
                return list(rows)
            except Exception as exc:
                if self._is_driver_error(exc):
                    raise self._translate(exc) from exc
                raise

    def get(self, kind: str, id: str) -> Record | None:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM objects WHERE kind = ? AND id = ? AND NOT deleted", (kind, id)
        )
        return _record(rows[0]) if rows else None

    def objects(self, kind: str) -> list[Record]:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM objects WHERE kind = ? AND NOT deleted ORDER BY id", (kind,)
        )
        return [_record(row) for row in rows]

    def revision(self) -> int:
        return int(self._read("SELECT value FROM revision WHERE id = 1")[0][0])

    def changes_since(self, revision: int) -> list[Record]:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM objects WHERE revision > ? ORDER BY revision, kind, id",
            (revision,),
        )
        return [_record(row) for row in rows]
