"""The store's interface: versioned JSON objects by (kind, id), with a change feed.

Every write runs in one transaction and gets the next revision number; a node follows the feed
(``wait_for_change`` then ``changes_since``) and rebuilds its immutable snapshot from what
changed. Deletions leave a tombstone so followers see them. A write that ``transact`` returned
from has been committed durably (SQLite with synchronous=FULL, PostgreSQL with fsync).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
Body = dict[str, Any]


class StoreError(Exception):
    """A problem with the store itself (unreachable, corrupt, wrong schema)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached right now; a node keeps serving its last snapshot."""


@dataclass(frozen=True, slots=True)
class Record:
    kind: str  # "vm", later "identity", "event", "key", ...
    id: str
    body: Body
    revision: int  # the revision of the write that last touched it
    deleted: bool = False


class Transaction(Protocol):
    """What a ``transact`` function may do; reads see the transaction's own writes."""

    def get(self, kind: str, id: str) -> Record | None: ...

    def objects(self, kind: str) -> list[Record]: ...

    def put(self, kind: str, id: str, body: Body) -> None: ...

    def lock(self) -> None:
        """Take the write lock now, before reading, so a read-then-write cannot race another
        node's (PostgreSQL reads do not block; the first write would be too late)."""
        ...

    def delete(self, kind: str, id: str) -> bool:
        """Tombstone the object; False if there was none."""
        ...


class Store(Protocol):
    url: str  # for messages; never holds a password

    def transact(self, work: Callable[[Transaction], T]) -> tuple[T, int]:
        """Run ``work`` in one write transaction; returns its result and the revision it made
        (the current revision if it wrote nothing). If ``work`` raises, nothing is written."""
        ...

    def get(self, kind: str, id: str) -> Record | None: ...

    def objects(self, kind: str) -> list[Record]: ...

    def revision(self) -> int: ...

    def changes_since(self, revision: int) -> list[Record]:
        """Every object (tombstones included) written after ``revision``, oldest first."""
        ...

    def wait_for_change(self, revision: int, timeout: float) -> None:
        """Return when the store may have passed ``revision``, or after ``timeout`` seconds."""
        ...

    def wake(self) -> None:
        """Make a ``wait_for_change`` blocked in another thread return now, and later ones at
        once (the node is stopping)."""
        ...

    def close(self) -> None: ...


def redact(url: str) -> str:
    """The URL without its password (user:password@ or ?password=), for messages and logs."""
    url = re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)
