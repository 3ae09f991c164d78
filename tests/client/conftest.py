"""Servers for the client tests. The shared session ``server`` (the documentation's example
VM) is only read; anything that changes a node (fault rules, scheduled events) gets ``node``
(or ``faulty``, tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.conftest import ServerThread


@pytest.fixture
def node(scratch: ServerThread) -> ServerThread:
    """The client tests' node: the tests' own node in memory."""
    return scratch
