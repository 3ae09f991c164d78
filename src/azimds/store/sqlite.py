"""SQLite: the embedded default, one file in the state directory.

WAL mode with ``synchronous=FULL``: a committed write survives ``kill -9`` and power loss, and
readers never block the writer. Several processes on one host may share the file; each
follows changes by polling the revision (a one-row read).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from azimds.store.base import StoreError, StoreUnavailable
from azimds.store.sql import SQLStore

POLL_INTERVAL = 0.1  # seconds between revision checks while following


class SQLiteStore(SQLStore):
    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self._woken = threading.Event()
        self.path = str(path)
        self.url = f"sqlite:///{self.path}" if self.path != ":memory:" else "memory:"
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                # The file holds signing keys later: owner-only from its first byte.
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
                os.close(fd)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=30000")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open {self.url}: {exc}") from exc
        self.migrate()

    def _connection(self) -> Any:
        return self._db

    def _begin_write(self, cursor: Any) -> None:
        cursor.execute("BEGIN IMMEDIATE")

    def _is_driver_error(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.Error)

    def _translate(self, exc: Exception) -> Exception:
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return StoreUnavailable(f"{self.url} is locked by another process: {exc}")
        return StoreError(f"{self.url}: {exc}")

    def wait_for_change(self, revision: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.revision() <= revision:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._woken.wait(min(POLL_INTERVAL, remaining)):
                return

    def wake(self) -> None:
        self._woken.set()

    def close(self) -> None:
        with self._lock:
            self._db.close()
