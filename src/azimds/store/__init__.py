"""The store: one interface (``base.Store``), three backends chosen by URL."""

from __future__ import annotations

from pathlib import Path

from azimds.store.base import Record, Store, StoreError, StoreUnavailable, Transaction

__all__ = ["Record", "Store", "StoreError", "StoreUnavailable", "Transaction", "open_store"]


def open_store(url: str, state_dir: Path) -> Store:
    """``memory:``, ``sqlite:///PATH`` (or ``sqlite:`` for the state directory's file), or
    ``postgresql://...``. Opening applies the schema migrations."""
    if url == "memory:":
        from azimds.store.memory import MemoryStore

        return MemoryStore()
    if url.startswith(("postgresql://", "postgres://")):
        from azimds.store.postgres import PostgresStore

        return PostgresStore(url)
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:")
        path = path.removeprefix("//")  # sqlite:///abs/path -> /abs/path
        from azimds.store.sqlite import SQLiteStore

        return SQLiteStore(Path(path) if path else state_dir / "azimds.db")
    raise StoreError(
        f"unknown store '{url}': use memory:, sqlite:, sqlite:///PATH or postgresql://..."
    )
