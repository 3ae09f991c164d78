"""Servers for the scheduled-events tests, and the throwaway PostgreSQL cluster (tests/pg.py)."""

from __future__ import annotations

from tests.conftest import node_fixture
from tests.guest.events.support import MANUAL
from tests.pg import postgres, postgres_url  # noqa: F401

# A fresh single-mode node whose event clock moves only when a test advances it.
node = node_fixture(*MANUAL)
