"""Servers for the scheduled-events tests, and the throwaway PostgreSQL cluster (tests/pg.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import ServerProcess
from tests.guest.events.support import MANUAL
from tests.pg import postgres, postgres_url  # noqa: F401


@pytest.fixture
def node() -> Iterator[ServerProcess]:
    """A fresh single-mode node whose event clock moves only when a test advances it."""
    process = ServerProcess(*MANUAL)
    yield process
    process.stop()
