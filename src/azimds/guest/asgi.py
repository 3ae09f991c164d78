"""The guest plane as a raw ASGI application.

No framework sits on this path: the app reads the two headers that matter, looks the request up
in a memo of finished responses, and sends pre-rendered bytes. Only a request never seen before
runs the pipeline.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from azimds.fleet.snapshot import Fleet
from azimds.fleet.vm import VM
from azimds.guest.callers import CallerIdentifier
from azimds.guest.errors import IDENTITY_TOO_MANY_REQUESTS, TOO_MANY_REQUESTS
from azimds.guest.events import MAX_BODY
from azimds.guest.faults import Faults
from azimds.guest.limits import GENERAL, IDENTITY, RateLimiter
from azimds.guest.observe import Recorder
from azimds.guest.pipeline import NO_SERVICES, Outcome, check, handle, run
from azimds.guest.responses import Response
from azimds.guest.routes import Services

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Sent = tuple[int, bytes, str]  # the status sent (0: none), its request id, the fault rule's id

# Enough for every (api-version, path, format) a real client asks, per VM, many times over.
MEMO_LIMIT = 8192
# Bytes of path, query and Metadata value beyond which an answer is not kept: real requests
# are far shorter, and absurd ones (whose 404s echo the path) would fill memory.
MEMO_KEY_LIMIT = 1024
UNKNOWN_LOG_INTERVAL = 60.0  # seconds
HANG_LIMIT = 600.0  # seconds a "hang" fault holds a connection the client never gives up on

log = logging.getLogger(__name__)


def request_ids() -> Iterator[bytes]:
    """GUID-shaped request ids, unique per process: a random v4 prefix and a counter.

    A fresh uuid4 per request costs more than the rest of a cached answer.
    """
    prefix = uuid.uuid4().hex
    head = f"{prefix[:8]}-{prefix[8:12]}-{prefix[12:16]}"
    for n in itertools.count():
        yield f"{head}-{(n >> 48) & 0xFFFF:04x}-{n & 0xFFFFFFFFFFFF:012x}".encode("ascii")


class GuestApp:
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
        self._memo: dict[tuple[Any, ...], Response] = {}
        self._next_request_id = request_ids().__next__
        self._unknown_logged: dict[str, float] = {}

    def replace_fleet(self, fleet: Fleet) -> None:
        """Serve a new snapshot; answers rendered from the old one are dropped."""
        self.fleet = fleet
        self._memo = {}
        self.faults.forget_others(fleet.faults)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        metadata: bytes | None = None
        forwarded = False
        for name, value in scope["headers"]:
            if name == b"metadata":
                # Repeated headers combine as a list would ("true, true"), which is not "true".
                metadata = value if metadata is None else metadata + b", " + value
            elif name == b"x-forwarded-for":
                forwarded = True
        caller = self.callers.identify(scope, self.fleet)
        status, request_id, fault = await self._limited(
            scope, receive, send, caller, metadata, forwarded
        )
        if self.recorder is not None:
            client = scope.get("client")
            self.recorder.record(
                caller.vm_id if isinstance(caller, VM) else "",
                str(client[0]) if client else "",
                scope["method"],
                scope["path"],
                scope["query_string"],
                status,
                time.perf_counter() - started,
                request_id,
                fault,
            )

    async def _limited(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        caller: VM | str,
        metadata: bytes | None,
        forwarded: bool,
    ) -> Sent:
        """Answer, unless the VM is over its rate limits (then a 429)."""
        path: str = scope["path"]
        limiter = self.limiter
        if limiter is None or not isinstance(caller, VM) or path[:9].lower() != "/metadata":
            return await self._respond(scope, receive, send, caller, metadata, forwarded)
        limits = limiter.limits_for(caller.limits)
        category = IDENTITY if path[9:18] == "/identity" else GENERAL
        if not limiter.admit(caller.vm_id, category, limits):
            refusal = TOO_MANY_REQUESTS if category == GENERAL else IDENTITY_TOO_MANY_REQUESTS
            return refusal.status, await self._send(refusal, send), ""
        if category == GENERAL:
            return await self._respond(scope, receive, send, caller, metadata, forwarded)
        if not limiter.enter(caller.vm_id, limits):
            return 429, await self._send(IDENTITY_TOO_MANY_REQUESTS, send), ""
        try:
            return await self._respond(scope, receive, send, caller, metadata, forwarded)
        finally:
            limiter.leave(caller.vm_id, limits)

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        caller: VM | str,
        metadata: bytes | None,
        forwarded: bool,
    ) -> Sent:
        if self.fleet.faults and isinstance(caller, VM):
            return await self._faulted(scope, receive, send, caller, metadata, forwarded)
        response = await self._answer(scope, receive, caller, metadata, forwarded)
        return response.status, await self._send(response, send), ""

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        caller: VM | str,
        metadata: bytes | None,
        forwarded: bool,
    ) -> Response:
        method: str = scope["method"]
        path: str = scope["path"]
        query: bytes = scope["query_string"]
        key = (
            caller.vm_id if isinstance(caller, VM) else None,
            method,
            path,
            query,
            metadata,
            forwarded,
        )
        response = self._memo.get(key) if key[0] is not None and method == "GET" else None
        if response is not None:
            return response
        if not isinstance(caller, VM):
            self._log_unknown(caller)
        body = await _read_body(receive) if method == "POST" else b""
        outcome: Outcome = handle(
            method, path, query, metadata, forwarded, caller, self.fleet, self.services, body
        )
        response = await _resolved(outcome)
        if (
            outcome.cacheable
            and key[0] is not None
            and len(path) + len(query) + len(metadata or b"") <= MEMO_KEY_LIMIT
        ):
            memo = self._memo
            if len(memo) >= MEMO_LIMIT:
                del memo[next(iter(memo))]
            memo[key] = response
        return response

    async def _faulted(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        vm: VM,
        metadata: bytes | None,
        forwarded: bool,
    ) -> Sent:
        """Answer where fault rules exist: they fire on requests that pass every check (the
        memo is bypassed: a fleet with rules is under test, not under load). A fault that
        sends no answer reports status 0, and leaves the connection reset."""
        method: str = scope["method"]
        path: str = scope["path"]
        body = await _read_body(receive) if method == "POST" else b""
        checked = check(
            method, path, scope["query_string"], metadata, forwarded, vm, self.fleet,
            self.services, body,
        )  # fmt: skip
        fired = None if isinstance(checked, Outcome) else self.faults.pick(
            self.fleet.faults, vm.vm_id, method, path
        )  # fmt: skip
        if fired is None:
            response = await _resolved(checked if isinstance(checked, Outcome) else run(*checked))
            return response.status, await self._send(response, send), ""
        rule, action = fired
        if action.delay:
            await asyncio.sleep(action.delay)
        if action.kind == "reset":
            self.faults.reset(scope)  # False only when the client has already gone
            return 0, b"", rule.id
        if action.kind == "hang":
            try:
                await asyncio.wait_for(_disconnected(receive), HANG_LIMIT)
            except TimeoutError:
                self.faults.reset(scope)  # still no answer: the client sees the line drop
            return 0, b"", rule.id
        if action.kind == "status":
            response = self.faults.answer(action, path)
        else:
            assert not isinstance(checked, Outcome)
            response = await _resolved(run(*checked))
        return response.status, await self._send(response, send), rule.id

    async def _send(self, response: Response, send: Send) -> bytes:
        """Send the answer; returns the request id it carried (b"" for IIS answers)."""
        headers: Any = response.headers
        request_id = b""
        if response.request_id:
            request_id = self._next_request_id()
            headers = [*headers, (b"x-ms-request-id", request_id)]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})
        return request_id

    def _log_unknown(self, reason: str) -> None:
        """Log an unidentified caller, at most once a minute per reason (no log floods)."""
        now = time.monotonic()
        if now - self._unknown_logged.get(reason, -UNKNOWN_LOG_INTERVAL) >= UNKNOWN_LOG_INTERVAL:
            if len(self._unknown_logged) > MEMO_LIMIT:
                self._unknown_logged.clear()
            self._unknown_logged[reason] = now
            log.warning("refused a request: %s (caller mode %s)", reason, self.callers.name)


async def _read_body(receive: Receive) -> bytes:
    """The request body, read up to one byte past what any endpoint accepts."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if len(body) > MAX_BODY or not message.get("more_body", False):
            break
    return bytes(body[: MAX_BODY + 1])


async def _resolved(outcome: Outcome) -> Response:
    if outcome.deferred is not None:
        return await outcome.deferred()
    assert outcome.response is not None
    return outcome.response


async def _disconnected(receive: Receive) -> None:
    """Wait until the client goes away (reading and dropping any body it sends)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
