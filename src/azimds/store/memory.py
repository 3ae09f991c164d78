"""In-memory store for tests and throwaway runs: SQLite's ``:memory:`` database behind the
same SQL as the file store, so it behaves exactly like it, and a condition variable instead of
polling so followers wake at once."""

from __future__ import annotations

import threading
from typing import Any

from azimds.store.sqlite import SQLiteStore


class MemoryStore(SQLiteStore):
    def __init__(self) -> None:
        self._changed = threading.Condition()
        super().__init__(":memory:")
        self._latest = self.revision()

    def _begin_write(self, cursor: Any) -> None:
        cursor.execute("BEGIN")  # one connection: no other writer to lock out

    def _after_write(self, cursor: Any, revision: int) -> None:
        # Followers re-read after the commit; one woken a moment early just reads again.
        with self._changed:
            self._latest = revision
            self._changed.notify_all()

    def wait_for_change(self, revision: int, timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._latest > revision or self._woken.is_set(), timeout)

    def wake(self) -> None:
        with self._changed:
            self._woken.set()
            self._changed.notify_all()
