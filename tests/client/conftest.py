"""Servers for the client tests. The shared session ``server`` (the documentation's example
VM) is only read; anything that changes a node (fault rules, scheduled events) gets ``node``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.client.support import clear_faults
from tests.conftest import ServerProcess


@pytest.fixture(scope="session")
def node() -> Iterator[ServerProcess]:
    """A node of the client tests' own, in memory."""
    process = ServerProcess("--store", "memory:")
    yield process
    process.stop()


@pytest.fixture
def faulty(node: ServerProcess) -> Iterator[ServerProcess]:
    """``node``, with its fault rules cleared after the test."""
    clear_faults(node)
    yield node
    clear_faults(node)
