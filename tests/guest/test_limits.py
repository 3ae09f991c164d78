"""Rate limits per VM (reference section 1): 5 a second, identity 20 a second and 5 at once."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from azimds.fleet.limits import DOCUMENTED, Limits
from azimds.guest.app import GuestApp
from azimds.guest.callers import SingleVM
from azimds.guest.limits import GENERAL, IDENTITY, RateLimiter
from azimds.kit.fleet import example_fleet, services
from azimds.kit.inprocess import call
from azimds.store.memory import MemoryStore
from tests.admin.support import new_vm
from tests.conftest import ServerThread
from tests.http import get

INSTANCE = "/metadata/instance/compute/name?api-version=2021-02-01&format=text"
TOKEN = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"


def burst(port: int, target: str, count: int, source: str | None = None) -> list[int]:
    return [get(port, target, source=source).status for _ in range(count)]


@pytest.fixture(scope="module")
def limited() -> Iterator[ServerThread]:
    process = ServerThread("--store", "memory:", "--rate-limit", "5")
    yield process
    process.stop()


def test_five_a_second_then_429_as_text(limited: ServerThread) -> None:
    time.sleep(1.1)  # a full bucket
    statuses = burst(limited.port, INSTANCE, 10)
    assert statuses[:5] == [200] * 5
    assert 429 in statuses[5:]
    reply = get(limited.port, INSTANCE)
    assert (reply.status, reply.body) == (429, b"Too many requests")
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert reply.headers["server"].startswith("IMDS/")
    time.sleep(1.1)
    assert get(limited.port, INSTANCE).status == 200  # the bucket refilled


def test_identity_has_its_own_twenty_a_second(limited: ServerThread) -> None:
    time.sleep(1.1)
    burst(limited.port, INSTANCE, 8)  # the general bucket is empty now...
    statuses = burst(limited.port, TOKEN, 25)
    assert statuses[:20] == [200] * 20  # ...which does not touch the identity bucket
    assert 429 in statuses[20:]
    reply = get(limited.port, TOKEN)
    assert reply.status == 429
    assert json.loads(reply.body) == {
        "error": "too_many_requests",
        "error_description": "Too many requests",
    }


def test_polling_through_429s_gets_there(limited: ServerThread) -> None:
    """cloud-init and WALinuxAgent retry 429s about once a second until they are served."""
    time.sleep(1.1)
    burst(limited.port, INSTANCE, 10)
    deadline = time.monotonic() + 5
    while (status := get(limited.port, INSTANCE).status) == 429:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert status == 200


def test_off_means_no_limits() -> None:
    node = ServerThread("--store", "memory:", "--rate-limit", "off")
    try:
        assert set(burst(node.port, INSTANCE, 40)) == {200}
    finally:
        node.stop()


@pytest.fixture(scope="module")
def two_vms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    fleet: Path = tmp_path_factory.mktemp("limits") / "fleet.yaml"
    slow = new_vm("slow", "127.0.30.1")
    slow["limits"] = {"rate": 2}
    fleet.write_text(
        yaml.safe_dump({"vms": [slow, new_vm("busy", "127.0.30.2"), new_vm("calm", "127.0.30.3")]})
    )
    process = ServerThread(
        "--caller-mode",
        "source-ip",
        "--fleet",
        str(fleet),
        "--store",
        "memory:",
        "--rate-limit",
        "5",
    )
    yield process
    process.stop()


def test_a_vm_can_have_its_own_limit(two_vms: ServerThread) -> None:
    time.sleep(1.1)
    statuses = burst(two_vms.port, INSTANCE, 5, source="127.0.30.1")
    assert statuses[:2] == [200, 200]
    assert statuses[2:].count(429) >= 2


def test_a_flooding_vm_does_not_hold_back_another(two_vms: ServerThread) -> None:
    stop = threading.Event()
    flood_statuses: list[int] = []

    def flood() -> None:
        while not stop.is_set():
            flood_statuses.append(get(two_vms.port, INSTANCE, source="127.0.30.2").status)

    flooders = [threading.Thread(target=flood) for _ in range(3)]
    for thread in flooders:
        thread.start()
    try:
        time.sleep(0.3)
        calm = []
        for _ in range(4):  # within the calm VM's own 5 a second
            calm.append(get(two_vms.port, INSTANCE, source="127.0.30.3"))
            time.sleep(0.25)
    finally:
        stop.set()
        for thread in flooders:
            thread.join()
    assert [(r.status, r.body) for r in calm] == [(200, b"calm")] * 4
    assert flood_statuses.count(429) > flood_statuses.count(200)


def test_buckets_refill_continuously_and_hold_one_second() -> None:
    now = [100.0]
    limiter = RateLimiter(DOCUMENTED, clock=lambda: now[0])
    admitted = [limiter.admit("vm", GENERAL, DOCUMENTED) for _ in range(7)]
    assert admitted == [True] * 5 + [False] * 2
    now[0] += 0.2  # a fifth of a second: one more request
    assert [limiter.admit("vm", GENERAL, DOCUMENTED) for _ in range(2)] == [True, False]
    now[0] += 60  # idle for a minute: still only one second's worth
    assert sum(limiter.admit("vm", GENERAL, DOCUMENTED) for _ in range(10)) == 5
    assert limiter.admit("other", GENERAL, DOCUMENTED)  # another VM's own bucket


def test_a_fractional_rate_keeps_its_fraction() -> None:
    """2.5 a second: a burst of 2, then the half token left needs 0.2 s to make a whole one."""
    now = [0.0]
    limits = Limits(rate=2.5, identity_rate=0, identity_concurrency=0)
    limiter = RateLimiter(limits, clock=lambda: now[0])
    assert [limiter.admit("vm", GENERAL, limits) for _ in range(3)] == [True, True, False]
    now[0] = 0.19
    assert not limiter.admit("vm", GENERAL, limits)
    now[0] = 0.2
    assert [limiter.admit("vm", GENERAL, limits) for _ in range(2)] == [True, False]


@pytest.mark.parametrize(
    ("path", "category"),
    [
        ("/metadata/instance", GENERAL),
        ("/METADATA/instance/compute", GENERAL),
        ("/metadata/identity/oauth2/token", IDENTITY),
        ("/metadata", GENERAL),
        ("/", None),
    ],
)
def test_which_limit_a_path_counts_against(path: str, category: str | None) -> None:
    assert RateLimiter(DOCUMENTED).category(path) == category


def test_identity_requests_in_flight_are_capped_at_five() -> None:
    limiter = RateLimiter(DOCUMENTED)
    assert [limiter.enter("vm", DOCUMENTED) for _ in range(6)] == [True] * 5 + [False]
    limiter.leave("vm", DOCUMENTED)
    assert limiter.enter("vm", DOCUMENTED)


def test_identity_requests_leave_the_count_when_answered() -> None:
    """With one identity request allowed in flight, requests one after another all pass:
    fresh answers (run through the pipeline) and reused ones (from the memo) alike."""
    store = MemoryStore()
    limiter = RateLimiter(Limits(rate=0, identity_rate=0, identity_concurrency=1))
    app = GuestApp(example_fleet(store), SingleVM(), services(store), limiter)
    path, _, query = TOKEN.partition("?")
    statuses = [
        answer.status
        for _ in range(4)
        for answer in asyncio.run(call(app, "GET", path, query.encode(), [(b"metadata", b"true")]))
    ]
    assert statuses == [200] * 4


def test_a_vms_own_limits_override_the_nodes() -> None:
    limiter = RateLimiter(DOCUMENTED)
    own = limiter.limits_for({"rate": 2, "identityConcurrency": 0})
    assert own == Limits(rate=2, identity_rate=20, identity_concurrency=0)
    assert limiter.limits_for(None) is DOCUMENTED
