"""The guest plane's app: a request in, an answer out, with no framework on the path.

The app reads the two headers that matter, looks the request up in a memo of finished
responses, and hands pre-rendered bytes to the server (``serving/protocol.py``) in one call,
without starting a task. Only a request never seen before runs the pipeline.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Iterator

from azimds.fleet.faults import Action, FaultRule
from azimds.fleet.limits import Limits
from azimds.fleet.snapshot import Fleet
from azimds.fleet.vm import VM
from azimds.guest.callers import CallerIdentifier
from azimds.guest.endpoint import Services, ValidRequest
from azimds.guest.errors import IDENTITY_TOO_MANY_REQUESTS, TOO_MANY_REQUESTS
from azimds.guest.events import MAX_BODY
from azimds.guest.faults import Faults
from azimds.guest.limits import GENERAL, RateLimiter
from azimds.guest.observe import Recorder, Request, Sent
from azimds.guest.pipeline import NO_SERVICES, Outcome, check, run
from azimds.guest.responses import Response
from azimds.guest.routes import Route
from azimds.serving.exchange import BodyAbandoned, Exchange

# Enough for every (api-version, path, format) a real client asks, per VM, many times over.
MEMO_LIMIT = 8192
# Characters of path, query and Metadata value beyond which an answer is not kept: real
# requests are far shorter, and absurd ones (whose 404s echo the path) would fill memory.
MEMO_KEY_LIMIT = 1024
UNKNOWN_LOG_INTERVAL = 60.0  # seconds
ID_BATCH = 4096  # request ids formatted at once
HANG_LIMIT = 600.0  # seconds a "hang" fault holds a connection the client never gives up on

log = logging.getLogger(__name__)


def request_ids() -> Iterator[str]:
    """GUID-shaped request ids, unique per process: a random v4 prefix and a counter.

    A fresh uuid4 per request costs more than the rest of a cached answer; formatting the
    counter in batches halves what is left.
    """
    head = str(uuid.uuid4())[:24]  # "xxxxxxxx-xxxx-4xxx-yxxx-"; the counter is the last group
    for start in itertools.count(0, ID_BATCH):
        yield from [f"{head}{n:012x}" for n in range(start, start + ID_BATCH)]


class GuestApp:
    body_limit = MAX_BODY  # the largest body any endpoint reads (scheduled events' approvals)

    def __init__(
        self,
        fleet: Fleet,
        callers: CallerIdentifier,
        services: Services = NO_SERVICES,
        limiter: RateLimiter | None = None,
        recorder: Recorder | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.fleet = fleet
        self.callers = callers
        self.services = services
        self.limiter = limiter
        self.recorder = recorder
        self.faults = faults or Faults()
        self._memo: dict[tuple[str, Request], Response] = {}  # (vmId, request) -> answer
        self._next_request_id = request_ids().__next__
        self._unknown_logged: dict[str, float] = {}

    def replace_fleet(self, fleet: Fleet) -> None:
        """Serve a new snapshot; answers rendered from the old one are dropped."""
        self.fleet = fleet
        self._memo = {}
        self.faults.forget_others(fleet.faults)

    def handle(self, exchange: Exchange) -> Awaitable[None] | None:
        """EndpointAnswer a request: at once where the memo (or the rate limiter) can, returning
        None; else an awaitable the server runs, so a cached answer starts no task."""
        started = time.perf_counter()
        headers = exchange.headers
        values = headers.get_all("metadata")
        request: Request = (
            exchange.method,
            exchange.path,
            exchange.query_string,
            # Repeated headers combine as a list would ("true, true"), which is not "true".
            values[0] if len(values) == 1 else ", ".join(values) if values else None,
            "x-forwarded-for" in headers,
        )
        client = exchange.client
        caller = self.callers.identify(client, self.fleet)
        if isinstance(caller, VM):
            sent = self._serve(caller, request, exchange)
            if isinstance(sent, tuple):
                self._record(caller.vm_id, client, request, sent, started)
                return None
            return self._recorded(sent, caller.vm_id, client, request, started)
        self._log_unknown(caller)
        return self._recorded(
            self._answer(None, caller, request, exchange), "", client, request, started
        )

    async def _recorded(
        self, answer: Awaitable[Sent], vm_id: str, client: str, request: Request, started: float
    ) -> None:
        self._record(vm_id, client, request, await answer, started)

    def _record(
        self, vm_id: str, client: str, request: Request, sent: Sent, started: float
    ) -> None:
        if self.recorder is not None:
            self.recorder.record(vm_id, client, request, sent, time.perf_counter() - started)

    def _serve(self, vm: VM, request: Request, exchange: Exchange) -> Sent | Awaitable[Sent]:
        """A VM's request: a 429 when it is over its rate limits, else the answer. What was
        sent, or an awaitable for it where the memo does not hold the answer (the fast path
        starts no coroutine)."""
        limiter = self.limiter
        if limiter is None:
            return self._respond(vm, request, exchange)
        category = limiter.category(request[1])
        if category is None:
            return self._respond(vm, request, exchange)
        limits = limiter.limits_for(vm.limits)
        if not limiter.admit(vm.vm_id, category, limits):
            refusal = TOO_MANY_REQUESTS if category == GENERAL else IDENTITY_TOO_MANY_REQUESTS
            return refusal.status, self._send(refusal, exchange), ""
        if category == GENERAL:
            return self._respond(vm, request, exchange)
        if not limiter.enter(vm.vm_id, limits):
            refusal = IDENTITY_TOO_MANY_REQUESTS
            return refusal.status, self._send(refusal, exchange), ""
        # Counted among the VM's identity requests in flight until answered, however that ends.
        try:
            answer = self._respond(vm, request, exchange)
        except BaseException:
            limiter.leave(vm.vm_id, limits)
            raise
        if isinstance(answer, tuple):
            limiter.leave(vm.vm_id, limits)
            return answer
        return self._in_flight(answer, vm, limits)

    async def _in_flight(self, answer: Awaitable[Sent], vm: VM, limits: Limits) -> Sent:
        """``answer``, counted among the VM's identity requests in flight while it runs."""
        assert self.limiter is not None
        try:
            return await answer
        finally:
            self.limiter.leave(vm.vm_id, limits)

    def _respond(self, vm: VM, request: Request, exchange: Exchange) -> Sent | Awaitable[Sent]:
        """The answer from the memo when the request was answered before, else from the
        pipeline. A fleet with fault rules is under test, not under load: the memo is
        bypassed, so that every request meets the rules."""
        if self.fleet.faults:
            return self._answer(None, vm, request, exchange)
        key = (vm.vm_id, request)
        response = self._memo.get(key)
        if response is not None and (response.until is None or time.time() < response.until):
            return response.status, self._send(response, exchange), ""
        return self._answer(key, vm, request, exchange)

    async def _answer(
        self,
        key: tuple[str, Request] | None,
        caller: VM | str,
        request: Request,
        exchange: Exchange,
    ) -> Sent:
        """Run the pipeline; keep the answer in the memo (under ``key``) where it may be.
        Fault rules fire on requests that passed every check."""
        method, path, query, metadata, forwarded = request
        try:
            body = await exchange.read_body() if method == "POST" else b""
        except BodyAbandoned as abandoned:
            abandoned.answer(exchange)
            return abandoned.status, "", ""
        checked = check(
            method, path, query.encode("latin-1"), _utf8(metadata), forwarded, caller,
            self.fleet, self.services, body,
        )  # fmt: skip
        if isinstance(checked, Outcome):
            outcome = checked
        else:
            fired = None
            if self.fleet.faults and isinstance(caller, VM):
                fired = self.faults.pick(self.fleet.faults, caller.vm_id, method, path)
            if fired is not None:
                return await self._fault(*fired, checked, path, exchange)
            outcome = run(*checked)
        response = await _resolved(outcome)
        if (
            key is not None
            and outcome.cacheable
            and len(path) + len(query) + len(metadata or "") <= MEMO_KEY_LIMIT
        ):
            memo = self._memo
            if len(memo) >= MEMO_LIMIT:
                del memo[next(iter(memo))]
            memo[key] = response
        return response.status, self._send(response, exchange), ""

    async def _fault(
        self,
        rule: FaultRule,
        action: Action,
        checked: tuple[Route, ValidRequest],
        path: str,
        exchange: Exchange,
    ) -> Sent:
        """What a fault rule's action does to a request. One that sends no answer reports
        status 0 and leaves the connection reset."""
        if action.delay:
            await asyncio.sleep(action.delay)
        if action.kind == "reset":
            exchange.reset()  # False only when the client has already gone
            return 0, "", rule.id
        if action.kind == "hang":
            try:
                await asyncio.wait_for(exchange.client_disconnect(), HANG_LIMIT)
            except TimeoutError:
                exchange.reset()  # still no answer: the client sees the line drop
            return 0, "", rule.id
        if action.kind == "status":
            response = self.faults.answer(action, path)
        else:
            response = await _resolved(run(*checked))
        return response.status, self._send(response, exchange), rule.id

    def _send(self, response: Response, exchange: Exchange) -> str:
        """Send the answer; returns the request id it carried ("" for IIS answers)."""
        request_id = self._next_request_id() if response.request_id else ""
        exchange.response_bytes(response.status, response.headers, response.body, request_id)
        return request_id

    def _log_unknown(self, reason: str) -> None:
        """Log an unidentified caller, at most once a minute per reason (no log floods)."""
        now = time.monotonic()
        if now - self._unknown_logged.get(reason, -UNKNOWN_LOG_INTERVAL) >= UNKNOWN_LOG_INTERVAL:
            if len(self._unknown_logged) > MEMO_LIMIT:
                self._unknown_logged.clear()
            self._unknown_logged[reason] = now
            log.warning("refused a request: %s (caller mode %s)", reason, self.callers.name)


def _utf8(value: str | None) -> bytes | None:
    """A header value as the bytes the client sent (the app sees only UTF-8 values)."""
    return None if value is None else value.encode("utf-8")


async def _resolved(outcome: Outcome) -> Response:
    if outcome.deferred is not None:
        return await outcome.deferred()
    assert outcome.response is not None
    return outcome.response
