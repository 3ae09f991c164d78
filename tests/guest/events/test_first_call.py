"""--events-first-call-delay: a VM's first scheduled-events request waits, later ones do not."""

from __future__ import annotations

import time

from tests.conftest import ServerThread
from tests.http import get


def test_first_call_waits_then_answers_at_once() -> None:
    node = ServerThread("--store", "memory:", "--events-first-call-delay", "1.5")
    try:
        target = "/metadata/scheduledevents?api-version=2020-07-01"
        started = time.monotonic()
        first = get(node.port, target)
        waited = time.monotonic() - started
        assert (first.status, first.body) == (200, b'{"DocumentIncarnation":0,"Events":[]}')
        assert waited >= 1.4
        started = time.monotonic()
        assert get(node.port, target).status == 200
        assert time.monotonic() - started < 0.5
    finally:
        node.stop()
