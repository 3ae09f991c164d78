"""Retries against a real azimds whose control plane scripts failures (fault rules): 410s,
429 with Retry-After, 5xx, connection resets and hangs. Waits run on a fake clock unless a
test needs real time (a hang), so each test takes well under a second."""

from __future__ import annotations

import pytest

from azimds.client import (
    Gone,
    IMDSClient,
    RetryPolicy,
    ServerError,
    TooManyRequests,
)
from tests.client.support import DEFAULT_VM_ID, FAST, FakeTime, Recording, add_fault, endpoint
from tests.conftest import ServerThread

VAULT = "https://vault.azure.net"


def client(server: ServerThread, **kw) -> tuple[IMDSClient, FakeTime, Recording]:
    time = FakeTime()
    transport = Recording()
    made = IMDSClient(
        endpoint(server), sleep=time.sleep, clock=time.monotonic, transport=transport, **kw
    )
    return made, time, transport


def test_two_410s_then_the_answer(faulty: ServerThread):
    add_fault(faulty, actions=[410, 410])
    imds, time, transport = client(faulty)
    with imds:
        assert imds.instance("compute/vmId") == DEFAULT_VM_ID
    assert len(time.sleeps) == 2
    # The two 410s, then the leaf refused as JSON and asked again as text.
    assert len(transport.requests) == 4


def test_410s_for_70_seconds_then_gone(faulty: ServerThread):
    add_fault(faulty, actions=[410])  # every request, for ever
    imds, time, _ = client(faulty)
    with imds, pytest.raises(Gone) as raised:
        imds.versions()
    assert sum(time.sleeps) == pytest.approx(70)
    assert raised.value.status == 410
    assert "available within 70 seconds" in raised.value.error


def test_429_with_retry_after_is_waited_out_exactly(faulty: ServerThread):
    add_fault(faulty, actions=[429], retryAfter=1, count=2)
    imds, time, _ = client(faulty)
    with imds:
        assert imds.versions()[-1] == "2025-04-07"
    assert time.sleeps == [1, 1]


def test_429_asking_for_more_than_the_deadline_fails_at_once(faulty: ServerThread):
    add_fault(faulty, actions=[429], retryAfter=60, count=1)
    imds, time, transport = client(faulty, retry=RetryPolicy(deadline=30))
    with imds, pytest.raises(TooManyRequests) as raised:
        imds.versions()
    assert time.sleeps == [] and len(transport.requests) == 1
    assert raised.value.text == "Too many requests"
    assert raised.value.headers["retry-after"] == "60"


def test_503_is_retried(faulty: ServerThread):
    add_fault(faulty, actions=[503, 503])
    imds, time, _ = client(faulty)
    with imds:
        assert imds.tags() == {"baz": "bash", "foo": "bar"}
    assert len(time.sleeps) == 2
    assert 1.5 <= time.sleeps[0] <= 2.5 and 3 <= time.sleeps[1] <= 5  # 2 and 4 s, jittered


def test_500s_past_the_retries_raise_server_error(faulty: ServerThread):
    add_fault(faulty, actions=[500], count=6)
    imds, time, transport = client(faulty)
    with imds, pytest.raises(ServerError) as raised:
        imds.versions()
    assert raised.value.status == 500
    assert len(transport.requests) == 6 and len(time.sleeps) == 5


def test_a_connection_reset_is_retried(faulty: ServerThread):
    add_fault(faulty, actions=["reset"], count=1)
    imds, time, _ = client(faulty)
    with imds:
        assert imds.instance("compute")["vmId"] == DEFAULT_VM_ID
    assert len(time.sleeps) == 1


def test_a_mixed_script(faulty: ServerThread):
    add_fault(faulty, actions=[410, {"status": 429, "retryAfter": 0}, 503, "reset", "pass"])
    imds, time, transport = client(faulty)
    with imds:
        assert imds.versions()
    assert len(transport.requests) == 5
    assert time.sleeps[1] == 0  # Retry-After: 0


def test_a_hung_answer_times_out_and_is_retried(faulty: ServerThread):
    add_fault(faulty, actions=["hang"], count=1)
    with IMDSClient(endpoint(faulty), retry=RetryPolicy(timeout=0.3, backoff=0.01)) as imds:
        assert imds.versions()


def test_identity_failures_are_retried(faulty: ServerThread):
    add_fault(faulty, path="/metadata/identity", actions=[500, 410, 503])
    imds, time, _ = client(faulty)
    with imds:
        assert imds.token(VAULT).resource == VAULT
        assert imds.instance("compute/vmId") == DEFAULT_VM_ID  # other paths never failed
    assert len(time.sleeps) == 3


def test_no_retries_sees_the_first_failure(faulty: ServerThread):
    add_fault(faulty, actions=[503], count=1)
    with IMDSClient(endpoint(faulty), retry=RetryPolicy.never()) as imds:
        with pytest.raises(ServerError):
            imds.versions()
        assert imds.versions()


def test_real_sleeps_with_a_fast_policy(faulty: ServerThread):
    add_fault(faulty, actions=[410, 503, "reset"])
    with IMDSClient(endpoint(faulty), retry=FAST) as imds:
        assert imds.instance("compute/vmId") == DEFAULT_VM_ID
