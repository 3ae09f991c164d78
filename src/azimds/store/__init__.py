"""The store: one interface (``base.Store``), three backends chosen by URL."""

from __future__ import annotations

import threading
from pathlib import Path

from azimds.store.base import Record, Store, StoreError, StoreUnavailable, Transaction

__all__ = ["Record", "Store", "StoreError", "StoreUnavailable", "Transaction", "open_store"]


def open_store(url: str, state_dir: Path, stopping: threading.Event | None = None) -> Store:
    """``memory:``, ``sqlite:`` (the state directory's file), ``sqlite:///PATH`` (``////`` for an
    absolute PATH, as in SQLAlchemy), or
    ``postgresql://...``. Opening applies the schema migrations. ``stopping``, once set, ends
    a wait for a PostgreSQL server that is down (``StoreUnavailable``)."""
    if url == "memory:":
        from azimds.store.memory import MemoryStore

        return MemoryStore()
    if url.startswith(("postgresql://", "postgres://")):
        from azimds.store.postgres import PostgresStore

        return PostgresStore(url, stopping)
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:")
        if path.startswith("///"):  # as SQLAlchemy: sqlite:///rel.db, sqlite:////abs/path.db
            path = path[3:]
        from azimds.store.sqlite import SQLiteStore

        return SQLiteStore(Path(path) if path else state_dir / "azimds.db")
    raise StoreError(
        f"unknown store '{url}': use memory:, sqlite:, sqlite:///PATH or postgresql://..."
    )
