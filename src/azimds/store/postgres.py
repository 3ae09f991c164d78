"""PostgreSQL for fleets: every node of a fleet shares one database.

Writes notify the channel ``azimds_changes`` inside their transaction, so followers hear of a
change the moment it commits (LISTEN/NOTIFY). When the database is unreachable, reads and
writes raise ``StoreUnavailable``; the node keeps serving its last snapshot, and the next
call reconnects.

Opening waits for a database that is not up yet (a host booting before its database, a
database restarting): the first connection is retried with backoff for up to ``RETRY_FOR``
seconds, then opening fails, and systemd's ``Restart=`` starts the node again. A database that
answers with a refusal (a wrong password, no such role or database) fails it at once, as does a
malformed URL: waiting would not mend those.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

from azimds.store.base import StoreError, StoreUnavailable, redact
from azimds.store.sql import SQLStore

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise StoreError(
        "PostgreSQL needs the psycopg package (azimds's postgres extra): "
        "pip install 'psycopg[binary]>=3.2'"
    ) from exc

log = logging.getLogger(__name__)

CHANNEL = "azimds_changes"
CONNECT_TIMEOUT = 5  # seconds
# The first connection's backoff: 0.5 s doubling to 10 s between attempts, for 2 minutes in
# all. Bounded, so that a node left waiting says so in its exit status (and `systemctl status`)
# rather than only in its log; under systemd, Restart= then tries again.
RETRY_FIRST = 0.5
RETRY_MAX = 10.0
RETRY_FOR = 120.0
# libpq's and psycopg's words when the server could not be reached (refused, no socket, no
# route, no DNS answer yet, timed out): worth waiting for...
UNREACHABLE = ("connection to server", "failed to resolve host", "timeout expired")
# ...unless it was reached and turned the connection down (FATAL: a wrong password, no such
# role or database) or there was nothing to authenticate with...
REFUSED = ("FATAL:", "fe_sendauth:")
# ...except when it only cannot take connections yet: starting up, shutting down, in recovery
# ("the database system is ..."), or out of connection slots.
NOT_YET = ("the database system is", "too many clients", "connection slots are reserved")


def worth_retrying(exc: psycopg.OperationalError) -> bool:
    """Whether a failed connection may succeed later (the server is unreachable or busy).
    Anything else (a refusal, an option libpq rejects before connecting) will fail again."""
    message = str(exc)
    if any(words in message for words in NOT_YET):
        return True
    return any(words in message for words in UNREACHABLE) and not any(
        words in message for words in REFUSED
    )


class PostgresStore(SQLStore):
    paramstyle = "format"
    lock_statement = "SELECT value FROM revision WHERE id = 1 FOR UPDATE"

    def __init__(self, url: str, stopping: threading.Event | None = None) -> None:
        super().__init__()
        self._dsn = url
        self.url = redact(url)
        self._db: Any = self._first_connection(stopping or threading.Event())
        self._listener: Any = None
        self.migrate()

    def _first_connection(self, stopping: threading.Event) -> Any:
        """Connect, waiting with backoff while the server is unreachable (module docstring),
        unless ``stopping`` is set meanwhile (the node is told to stop)."""
        try:
            params = conninfo_to_dict(self._dsn)
        except psycopg.ProgrammingError as exc:
            raise StoreError(f"invalid PostgreSQL URL {self.url}: {self._scrub(exc)}") from exc
        port = str(params.get("port") or 5432)
        if not all(part.isdigit() for part in port.split(",")):
            raise StoreError(f"invalid PostgreSQL URL {self.url}: port '{port}' is not a number")
        server = f"{params.get('host') or 'the default socket'}:{port}"
        deadline = time.monotonic() + RETRY_FOR
        delay = RETRY_FIRST
        while True:
            try:
                return psycopg.connect(self._dsn, connect_timeout=CONNECT_TIMEOUT)
            except psycopg.OperationalError as exc:
                reason = self._scrub(exc)
                if not worth_retrying(exc):
                    if any(words in reason for words in REFUSED):
                        raise StoreError(
                            f"PostgreSQL at {server} refused the connection: {reason}. Fix: "
                            f"check the user, password and database in the store URL ({self.url})"
                        ) from exc
                    raise StoreError(f"invalid PostgreSQL URL {self.url}: {reason}") from exc
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreUnavailable(
                        f"PostgreSQL at {server} is still unreachable after {RETRY_FOR:g} s, "
                        f"giving up: {reason}. Fix: start it, or correct the host in the "
                        f"store URL ({self.url})"
                    ) from exc
                delay = min(delay, left)
                log.warning(
                    "PostgreSQL at %s is unreachable (%s); retrying in %.1f s",
                    server,
                    reason.partition("\n")[0],
                    delay,
                )
                if stopping.wait(delay):
                    raise StoreUnavailable(
                        f"stopped while waiting for PostgreSQL at {server}: {reason}"
                    ) from exc
                delay = min(delay * 2, RETRY_MAX)

    def _scrub(self, exc: Exception) -> str:
        """The error's message without the URL's password, which libpq quotes when it cannot
        parse it (an invalid percent-encoding)."""
        message = str(exc).strip()
        for password in re.findall(r"://[^:/@]+:([^@]*)@|[?&]password=([^&]*)", self._dsn):
            for secret in filter(None, password):
                message = message.replace(secret, "***")
        return message

    def _connect(self) -> Any:
        try:
            return psycopg.connect(self._dsn, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot reach {self.url}: {exc}".strip()) from exc

    def _connection(self) -> Any:
        if self._db is None or self._db.closed or self._db.broken:
            self._db = self._connect()
        return self._db

    def _begin_write(self, cursor: Any) -> None:
        # Every write transaction reads before it writes (merge-patch a VM, add an identity,
        # check an address is free); under READ COMMITTED two nodes doing that at once would
        # both read the old row and the later commit would undo the earlier one. Taking the
        # counter's row lock first orders writers from their first read, as SQLite's BEGIN
        # IMMEDIATE does; they were serialised on that row at their first write anyway.
        cursor.execute(self.lock_statement)

    def _begin_migration(self, cursor: Any) -> None:
        # Nodes starting together take turns; the lock ends with the transaction.
        cursor.execute("SELECT pg_advisory_xact_lock(7469637)")

    def _after_write(self, cursor: Any, revision: int) -> None:
        cursor.execute(f"NOTIFY {CHANNEL}, '{int(revision)}'")

    def _is_driver_error(self, exc: Exception) -> bool:
        return isinstance(exc, psycopg.Error)

    def _translate(self, exc: Exception) -> Exception:
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return StoreUnavailable(f"{self.url} is unreachable: {exc}".strip())
        return StoreError(f"{self.url}: {exc}")

    def wait_for_change(self, revision: int, timeout: float) -> None:
        """Block on LISTEN until a notification or the timeout; reconnect if needed."""
        try:
            if self._listener is None or self._listener.closed or self._listener.broken:
                self._listener = psycopg.connect(
                    self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                )
                self._listener.execute(f"LISTEN {CHANNEL}")
                # A change may have committed before LISTEN took effect.
                if self.revision() > revision:
                    return
            for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                return
        except psycopg.Error as exc:
            if self._listener is not None:
                self._listener.close()
            self._listener = None
            raise StoreUnavailable(f"{self.url} is unreachable: {exc}".strip()) from exc

    def wake(self) -> None:
        """Nothing to do: a wait on LISTEN ends within its timeout (the node's 0.25 s)."""

    def close(self) -> None:
        with self._lock:
            for connection in (self._db, self._listener):
                if connection is not None:
                    connection.close()
