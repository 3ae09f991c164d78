"""Waiting for something a server does in its own time."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def within(seconds: float, condition: Callable[[], bool], what: str) -> float:
    """Poll ``condition`` until it holds; fail after ``seconds``. Returns the time it took."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > seconds:
            pytest.fail(f"not within {seconds}s: {what}")
        time.sleep(0.01)
