"""The guest plane as a raw RSGI application (granian's native interface).

No framework sits on this path: the app reads the two headers that matter, looks the request up
in a memo of finished responses, and hands pre-rendered bytes to the server in one call. Only a
request never seen before runs the pipeline. RSGI rather than ASGI because an answer is one
synchronous call instead of two awaited messages, and headers are read on demand rather than
copied into a list per request: the guest plane serves about 40% more requests a second
(docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from typing import Protocol

from azimds.defaults import REQUEST_TIMEOUT
from azimds.fleet.faults import Action, FaultRule
from azimds.fleet.snapshot import Fleet
from azimds.fleet.vm import VM
from azimds.guest.callers import CallerIdentifier
from azimds.guest.errors import IDENTITY_TOO_MANY_REQUESTS, TOO_MANY_REQUESTS
from azimds.guest.events import MAX_BODY
from azimds.guest.faults import Faults
from azimds.guest.limits import GENERAL, Limits, RateLimiter
from azimds.guest.observe import Recorder, Request, Sent
from azimds.guest.pipeline import NO_SERVICES, Outcome, check, run
from azimds.guest.responses import Response
from azimds.guest.routes import Call, Route, Services
from azimds.server import BodyAbandoned, read_body

# Enough for every (api-version, path, format) a real client asks, per VM, many times over.
MEMO_LIMIT = 8192
# Characters of path, query and Metadata value beyond which an answer is not kept: real
# requests are far shorter, and absurd ones (whose 404s echo the path) would fill memory.
MEMO_KEY_LIMIT = 1024
UNKNOWN_LOG_INTERVAL = 60.0  # seconds
ID_BATCH = 4096  # request ids formatted at once
HANG_LIMIT = 600.0  # seconds a "hang" fault holds a connection the client never gives up on

log = logging.getLogger(__name__)


class RequestHeaders(Protocol):
    """What the app reads of a request's headers (names in lower case). A value that is not
    UTF-8 is left out of ``get_all`` but its name is still ``in`` the headers."""

    def get_all(self, key: str) -> list[str]: ...

    def __contains__(self, key: str) -> bool: ...


class RequestScope(Protocol):
    """What the app reads of an RSGI scope. ``query_string`` holds the raw query's bytes as
    Latin-1 characters; ``client`` and ``server`` are ``host:port`` (IPv6 hosts in brackets)."""

    method: str
    path: str
    query_string: str
    client: str
    server: str

    @property
    def headers(self) -> RequestHeaders: ...


class Transport(Protocol):
    """The RSGI calls the app makes: read the body, wait for the client to go, answer."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def client_disconnect(self) -> Awaitable[None]: ...

    def response_bytes(
        self, status: int, headers: Sequence[tuple[str, str]], body: bytes
    ) -> None: ...


def request_ids() -> Iterator[str]:
    """GUID-shaped request ids, unique per process: a random v4 prefix and a counter.

    A fresh uuid4 per request costs more than the rest of a cached answer; formatting the
    counter in batches halves what is left.
    """
    head = str(uuid.uuid4())[:24]  # "xxxxxxxx-xxxx-4xxx-yxxx-"; the counter is the last group
    for start in itertools.count(0, ID_BATCH):
        yield from [f"{head}{n:012x}" for n in range(start, start + ID_BATCH)]


class GuestApp:
    def __init__(
        self,
        fleet: Fleet,
        callers: CallerIdentifier,
        services: Services = NO_SERVICES,
        limiter: RateLimiter | None = None,
        recorder: Recorder | None = None,
        faults: Faults | None = None,
        body_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.fleet = fleet
        self.callers = callers
        self.services = services
        self.limiter = limiter
        self.recorder = recorder
        self.faults = faults or Faults()
        self.body_timeout = body_timeout  # seconds a request's body has to arrive whole
        self._memo: dict[tuple[str, Request], Response] = {}  # (vmId, request) -> answer
        self._next_request_id = request_ids().__next__
        self._unknown_logged: dict[str, float] = {}

    def replace_fleet(self, fleet: Fleet) -> None:
        """Serve a new snapshot; answers rendered from the old one are dropped."""
        self.fleet = fleet
        self._memo = {}
        self.faults.forget_others(fleet.faults)

    async def __rsgi__(self, scope: RequestScope, protocol: Transport) -> None:
        started = time.perf_counter()
        headers = scope.headers
        values = headers.get_all("metadata")
        request: Request = (
            scope.method,
            scope.path,
            scope.query_string,
            # Repeated headers combine as a list would ("true, true"), which is not "true".
            values[0] if len(values) == 1 else ", ".join(values) if values else None,
            "x-forwarded-for" in headers,
        )
        client = scope.client
        caller = self.callers.identify(client, self.fleet)
        try:
            if isinstance(caller, VM):
                sent = self._serve(caller, request, scope, protocol)
                if not isinstance(sent, tuple):
                    sent = await sent
            else:
                self._log_unknown(caller)
                sent = await self._answer(None, caller, request, scope, protocol)
        except Exception:
            log.exception("%s %s failed", request[0], request[1])
            raise  # granian answers 500
        if self.recorder is not None:
            vm_id = caller.vm_id if isinstance(caller, VM) else ""
            self.recorder.record(vm_id, client, request, sent, time.perf_counter() - started)

    def _serve(
        self, vm: VM, request: Request, scope: RequestScope, protocol: Transport
    ) -> Sent | Awaitable[Sent]:
        """A VM's request: a 429 when it is over its rate limits, else the answer. What was
        sent, or an awaitable for it where the memo does not hold the answer (the fast path
        starts no coroutine)."""
        limiter = self.limiter
        if limiter is None:
            return self._respond(vm, request, scope, protocol)
        category = limiter.category(request[1])
        if category is None:
            return self._respond(vm, request, scope, protocol)
        limits = limiter.limits_for(vm.limits)
        if not limiter.admit(vm.vm_id, category, limits):
            refusal = TOO_MANY_REQUESTS if category == GENERAL else IDENTITY_TOO_MANY_REQUESTS
            return refusal.status, self._send(refusal, protocol), ""
        if category == GENERAL:
            return self._respond(vm, request, scope, protocol)
        if not limiter.enter(vm.vm_id, limits):
            refusal = IDENTITY_TOO_MANY_REQUESTS
            return refusal.status, self._send(refusal, protocol), ""
        # Counted among the VM's identity requests in flight until answered, however that ends.
        try:
            answer = self._respond(vm, request, scope, protocol)
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

    def _respond(
        self, vm: VM, request: Request, scope: RequestScope, protocol: Transport
    ) -> Sent | Awaitable[Sent]:
        """The answer from the memo when the request was answered before, else from the
        pipeline. A fleet with fault rules is under test, not under load: the memo is
        bypassed, so that every request meets the rules."""
        if self.fleet.faults:
            return self._answer(None, vm, request, scope, protocol)
        key = (vm.vm_id, request)
        response = self._memo.get(key)
        if response is not None and (response.until is None or time.time() < response.until):
            return response.status, self._send(response, protocol), ""
        return self._answer(key, vm, request, scope, protocol)

    async def _answer(
        self,
        key: tuple[str, Request] | None,
        caller: VM | str,
        request: Request,
        scope: RequestScope,
        protocol: Transport,
    ) -> Sent:
        """Run the pipeline; keep the answer in the memo (under ``key``) where it may be.
        Fault rules fire on requests that passed every check."""
        method, path, query, metadata, forwarded = request
        try:
            body = await self._body(method, protocol)
        except BodyAbandoned as abandoned:
            abandoned.answer(protocol)
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
                return await self._fault(*fired, checked, path, scope, protocol)
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
        return response.status, self._send(response, protocol), ""

    async def _fault(
        self,
        rule: FaultRule,
        action: Action,
        checked: tuple[Route, Call],
        path: str,
        scope: RequestScope,
        protocol: Transport,
    ) -> Sent:
        """What a fault rule's action does to a request. One that sends no answer reports
        status 0 and leaves the connection reset."""
        if action.delay:
            await asyncio.sleep(action.delay)
        if action.kind == "reset":
            self.faults.reset(scope)  # False only when the client has already gone
            return 0, "", rule.id
        if action.kind == "hang":
            try:
                await asyncio.wait_for(protocol.client_disconnect(), HANG_LIMIT)
            except TimeoutError:
                self.faults.reset(scope)  # still no answer: the client sees the line drop
            return 0, "", rule.id
        if action.kind == "status":
            response = self.faults.answer(action, path)
        else:
            response = await _resolved(run(*checked))
        return response.status, self._send(response, protocol), rule.id

    async def _body(self, method: str, protocol: Transport) -> bytes:
        """A POST's body, read up to one byte past what any endpoint accepts; b"" otherwise
        (no endpoint reads another verb's body)."""
        if method != "POST":
            return b""
        return await read_body(protocol, MAX_BODY, self.body_timeout)

    def _send(self, response: Response, protocol: Transport) -> str:
        """Send the answer; returns the request id it carried ("" for IIS answers)."""
        if not response.request_id:
            protocol.response_bytes(response.status, response.headers, response.body)
            return ""
        request_id = self._next_request_id()
        headers = [*response.headers, ("x-ms-request-id", request_id)]
        protocol.response_bytes(response.status, headers, response.body)
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
    """A header value as the bytes the client sent (granian passes on only UTF-8 values)."""
    return None if value is None else value.encode("utf-8")


async def _resolved(outcome: Outcome) -> Response:
    if outcome.deferred is not None:
        return await outcome.deferred()
    assert outcome.response is not None
    return outcome.response
