"""The retry policy and one request's flow (negotiation, retries), without a network: a fake
clock, and answers scripted in place of the service's."""

from __future__ import annotations

import email.utils
import json
import logging
from collections.abc import Iterable
from typing import Any

import httpx
import pytest

from azimds.client import (
    ApiVersionError,
    Gone,
    IMDSClient,
    IMDSConnectionError,
    NotFound,
    RetryPolicy,
    ServerError,
    TooManyRequests,
)
from azimds.client.protocol import Call, Failure, Reply, Send, Session, Sleep, family
from azimds.client.retry import Retrier, retry_after
from tests.client.support import FakeTime

NEWEST_400 = json.dumps(
    {
        "error": "Bad request. api-version is invalid or was not specified in the request. "
        "For more information refer to aka.ms/azureimds",
        "newest-versions": ["2025-04-07", "2024-07-17", "2024-03-15"],
    }
).encode()


def answer(status: int, body: bytes = b"{}", **headers: str) -> Reply:
    names = {k.replace("_", "-").lower(): v for k, v in headers.items()}
    return Reply(status, names, body, "http://imds/")


def run(
    call: Call, script: Iterable[Reply | Exception], session: Session
) -> tuple[Reply | BaseException, list[float], list[str]]:
    """Drive ``session.exchange(call)`` with scripted outcomes (sleeping on the fake clock);
    returns the result (or what it raised), the sleeps and the URLs sent."""
    answers = iter(script)
    sleeps: list[float] = []
    urls: list[str] = []
    flow = session.exchange(call)
    outcome: Any = None
    try:
        while True:
            step = flow.send(outcome)
            if isinstance(step, Sleep):
                sleeps.append(step.seconds)
                CLOCKS[id(session)].now += step.seconds
                outcome = None
            else:
                assert isinstance(step, Send)
                urls.append(step.request.url)
                given = next(answers)
                outcome = Failure(given) if isinstance(given, Exception) else given
    except StopIteration as stop:
        return stop.value, sleeps, urls
    except Exception as exc:
        return exc, sleeps, urls


CLOCKS: dict[int, FakeTime] = {}  # each test session's fake clock, by id


def session(policy: RetryPolicy | None = None, chance: float = 0.5, **kw: Any) -> Session:
    """A session on a fake clock, with a fixed "random" number for jitter."""
    time = FakeTime()
    made = Session(
        "http://imds",
        policy=policy or RetryPolicy(),
        clock=time.monotonic,
        chance=lambda: chance,
        wall=lambda: 1_700_000_000.0,
        **kw,
    )
    CLOCKS[id(made)] = time
    return made


INSTANCE = Call("GET", "/metadata/instance")
TOKEN = Call("GET", "/metadata/identity/oauth2/token", [("resource", "https://vault.azure.net")])


# --- the policy ------------------------------------------------------------------------------


def test_backoff_doubles_from_two_seconds_up_to_thirty():
    policy = RetryPolicy(jitter=0)
    assert [policy.wait(n, 0.5) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]


def test_jitter_stays_within_its_band():
    policy = RetryPolicy(jitter=0.25)
    assert policy.wait(1, 0.0) == pytest.approx(1.5)
    assert policy.wait(1, 0.5) == pytest.approx(2.0)
    assert policy.wait(1, 0.999999) == pytest.approx(2.5, abs=1e-4)
    assert policy.wait(3, 0.0) == pytest.approx(6.0)


@pytest.mark.parametrize(
    ("status", "identity", "retried"),
    [
        (400, False, False),
        (400, True, False),
        (403, False, False),
        (404, False, False),
        (404, True, True),  # "IMDS endpoint is updating" while an identity propagates
        (405, False, False),
        (410, False, True),
        (429, False, True),
        (500, False, True),
        (502, True, True),
        (503, False, True),
        (599, False, True),
    ],
)
def test_which_statuses_are_retried(status: int, identity: bool, retried: bool):
    assert RetryPolicy().retried(status, identity) is retried


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=2)
    with pytest.raises(ValueError, match="retries"):
        RetryPolicy(retries=-1)
    with pytest.raises(ValueError, match="deadline"):
        RetryPolicy(deadline=0)


def test_retry_after_in_seconds_and_as_a_date():
    assert retry_after({"retry-after": "3"}) == 3
    assert retry_after({"retry-after": " 1.5 "}) == 1.5
    assert retry_after({}) is None
    assert retry_after({"retry-after": "soon"}) is None
    date = email.utils.formatdate(1_700_000_020, usegmt=True)
    assert retry_after({"retry-after": date}, now=lambda: 1_700_000_000.0) == 20
    assert retry_after({"retry-after": date}, now=lambda: 1_800_000_000.0) == 0


def test_retrier_timeout_shrinks_to_what_the_deadline_leaves():
    time = FakeTime()
    retrier = Retrier(RetryPolicy(timeout=5, deadline=12), time.monotonic)
    assert retrier.timeout() == 5
    time.now += 9
    assert retrier.timeout() == pytest.approx(3)


# --- one request's retries -------------------------------------------------------------------


def test_410_is_retried_for_70_seconds_then_given_up():
    imds = session()
    result, sleeps, urls = run(INSTANCE, [answer(410)] * 50, imds)
    assert isinstance(result, Reply) and result.status == 410
    assert sum(sleeps) == pytest.approx(70)  # the last wait is cut to end at 70 s
    assert sleeps == pytest.approx([2, 4, 8, 16, 30, 10])
    assert len(urls) == len(sleeps) + 1


def test_410_then_an_answer():
    result, sleeps, _ = run(INSTANCE, [answer(410), answer(410), answer(200)], session())
    assert isinstance(result, Reply) and result.status == 200
    assert sleeps == [2, 4]


def test_410s_with_retry_after_zero_stop_after_gone_retries():
    script = [answer(410, retry_after="0")] * 30
    result, sleeps, urls = run(INSTANCE, script, session(RetryPolicy(gone_retries=3)))
    assert isinstance(result, Reply) and result.status == 410
    assert sleeps == [0, 0, 0] and len(urls) == 4


def test_410s_do_not_use_up_the_retries_of_other_failures():
    script = [answer(410)] * 3 + [answer(503)] * 2 + [answer(200)]
    result, sleeps, _ = run(INSTANCE, script, session(RetryPolicy(retries=2, jitter=0)))
    assert isinstance(result, Reply) and result.status == 200
    assert sleeps == [2, 4, 8, 2, 4]


def test_5xx_backs_off_exponentially_with_jitter_then_gives_up():
    result, sleeps, urls = run(INSTANCE, [answer(503)] * 10, session(chance=0.0))
    assert isinstance(result, Reply) and result.status == 503
    assert sleeps == pytest.approx([1.5, 3, 6, 12, 22.5])  # 2, 4, 8, 16, 30 less 25 %
    assert len(urls) == 6


def test_429_waits_as_retry_after_says():
    script = [answer(429, b"Too many requests", retry_after="3"), answer(200)]
    result, sleeps, _ = run(INSTANCE, script, session())
    assert isinstance(result, Reply) and result.ok
    assert sleeps == [3]


def test_retry_after_beyond_the_deadline_gives_up_at_once():
    script = [answer(429, retry_after="120"), answer(200)]
    result, sleeps, urls = run(INSTANCE, script, session(RetryPolicy(deadline=30)))
    assert isinstance(result, Reply) and result.status == 429
    assert sleeps == [] and len(urls) == 1


def test_the_deadline_ends_the_retries():
    policy = RetryPolicy(jitter=0, deadline=10)
    result, sleeps, _ = run(INSTANCE, [answer(500)] * 10, session(policy))
    assert isinstance(result, Reply) and result.status == 500
    assert sleeps == [2, 4]  # the next wait (8) would end past 10 s


def test_400_and_instance_404_are_answers_not_retried():
    for status in (400, 404, 405):
        result, sleeps, urls = run(INSTANCE, [answer(status), answer(200)], session())
        assert isinstance(result, Reply) and result.status == status
        assert sleeps == [] and len(urls) == 1


def test_identity_404_is_retried():
    result, sleeps, _ = run(TOKEN, [answer(404), answer(200)], session(chance=0.5))
    assert isinstance(result, Reply) and result.ok
    assert sleeps == [2]


def test_no_answer_is_retried_then_raised_with_its_cause():
    refused = httpx.ConnectError("refused")
    result, sleeps, urls = run(INSTANCE, [refused] * 10, session(RetryPolicy(retries=2)))
    assert isinstance(result, IMDSConnectionError)
    assert result.__cause__ is refused
    assert result.status is None
    assert "tries: 3" in str(result)
    assert len(sleeps) == 2 and len(urls) == 3


def test_no_answer_then_an_answer():
    script = [httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("reset"), answer(200)]
    result, sleeps, _ = run(INSTANCE, script, session(chance=0.5))
    assert isinstance(result, Reply) and result.ok
    assert sleeps == [2, 4]


def test_each_retry_is_logged_as_it_happens(caplog: pytest.LogCaptureFixture):
    script = [httpx.ConnectError("refused"), answer(503), answer(200)]
    with caplog.at_level(logging.INFO, logger="azimds.client"):
        result, _, urls = run(INSTANCE, script, session(chance=0.5))
    assert isinstance(result, Reply) and result.ok
    assert caplog.messages == [
        f"try 1 of {urls[0]}: no answer (ConnectError: refused); next try in 2.0 s",
        f"try 2 of {urls[1]}: HTTP 503; next try in 4.0 s",
    ]


def test_never_tries_once():
    result, sleeps, urls = run(INSTANCE, [answer(503), answer(200)], session(RetryPolicy.never()))
    assert isinstance(result, Reply) and result.status == 503
    assert sleeps == [] and len(urls) == 1


# --- api-version negotiation -----------------------------------------------------------------


def test_a_refused_version_is_replaced_by_the_newest_offered_and_remembered():
    imds = session(api_version="2099-01-01")
    result, sleeps, urls = run(INSTANCE, [answer(400, NEWEST_400), answer(200)], imds)
    assert isinstance(result, Reply) and result.ok
    assert result.api_version == "2025-04-07"
    assert sleeps == []  # no waiting: the answer said what to do
    assert [u.split("?")[1] for u in urls] == ["api-version=2099-01-01", "api-version=2025-04-07"]
    assert imds.negotiated == {"instance": "2025-04-07"}
    _, _, urls = run(INSTANCE, [answer(200)], imds)
    assert urls == ["http://imds/metadata/instance?api-version=2025-04-07"]


def test_negotiation_happens_once_per_request():
    imds = session(api_version="2099-01-01")
    result, _, urls = run(INSTANCE, [answer(400, NEWEST_400)] * 3, imds)
    assert isinstance(result, Reply) and result.status == 400
    assert len(urls) == 2
    assert imds.negotiated == {}


def test_no_negotiation_for_a_pinned_version_or_when_switched_off():
    pinned = Call("GET", "/metadata/instance", api_version="2099-01-01")
    result, _, urls = run(pinned, [answer(400, NEWEST_400), answer(200)], session())
    assert isinstance(result, Reply) and result.status == 400 and len(urls) == 1
    off = session(api_version="2099-01-01", negotiate=False)
    result, _, urls = run(INSTANCE, [answer(400, NEWEST_400), answer(200)], off)
    assert isinstance(result, Reply) and result.status == 400 and len(urls) == 1


def test_each_family_has_its_version():
    imds = session()
    assert imds.version_for("/metadata/instance/compute") == "2025-04-07"
    assert imds.version_for("/metadata/attested/document") == "2025-04-07"
    assert imds.version_for("/metadata/identity/oauth2/token") == "2018-02-01"
    assert imds.version_for("/metadata/scheduledevents") == "2020-07-01"
    assert imds.version_for("/metadata/versions") is None
    assert family("/METADATA/instance") == "instance"
    assert family("/other") == ""


def test_request_headers_and_query():
    imds = session(headers=[("x-ms-client-request-id", "abc")])
    request = imds.request(TOKEN, "2018-02-01")
    assert request.url == (
        "http://imds/metadata/identity/oauth2/token"
        "?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net"
    )
    headers = dict(request.headers)
    assert headers["Metadata"] == "true"
    assert headers["x-ms-client-request-id"] == "abc"
    assert "X-Forwarded-For" not in headers
    override = Call("GET", "/metadata/instance", headers=[("metadata", "false")])
    assert ("Metadata", "true") not in imds.request(override, None).headers


# --- the sync client over a mock transport: exceptions by status -----------------------------


def mock_client(*responses: httpx.Response, **kw: Any) -> tuple[IMDSClient, FakeTime]:
    queue = list(responses)
    time = FakeTime()

    def handler(request: httpx.Request) -> httpx.Response:
        return queue.pop(0)

    client = IMDSClient(
        "http://imds",
        transport=httpx.MockTransport(handler),
        sleep=time.sleep,
        clock=time.monotonic,
        **kw,
    )
    return client, time


@pytest.mark.parametrize(
    ("status", "error"),
    [(410, Gone), (429, TooManyRequests), (500, ServerError), (404, NotFound)],
)
def test_statuses_raise_their_exceptions(status: int, error: type[Exception]):
    client, _ = mock_client(
        *[httpx.Response(status, json={"error": "x"}) for _ in range(40)],
        retry=RetryPolicy(retries=1),
    )
    with client, pytest.raises(error) as raised:
        client.instance()
    assert raised.value.status == status  # type: ignore[attr-defined]
    assert raised.value.body == b'{"error":"x"}'  # type: ignore[attr-defined]


def test_api_version_error_names_the_newest_versions():
    client, _ = mock_client(httpx.Response(400, content=NEWEST_400))
    with client, pytest.raises(ApiVersionError) as raised:
        client.instance(api_version="2099-01-01")
    assert raised.value.newest_versions == ["2025-04-07", "2024-07-17", "2024-03-15"]
