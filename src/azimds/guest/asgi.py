"""The guest plane as a raw ASGI application.

No framework sits on this path: the app reads the two headers that matter, looks the request up
in a memo of finished responses, and sends pre-rendered bytes. Only a request never seen before
runs the pipeline.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from azimds.fleet.vm import VM
from azimds.guest.pipeline import Outcome, handle
from azimds.guest.responses import Response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Enough for every (api-version, path, format) a real client asks, per VM, many times over.
MEMO_LIMIT = 8192


class CallerIdentifier(Protocol):
    """Decides which VM a request comes from (``single`` mode: always the same one)."""

    def identify(self, scope: Scope) -> VM: ...


class SingleVM:
    """Every caller is the one VM: the local-development mode."""

    def __init__(self, vm: VM) -> None:
        self.vm = vm

    def identify(self, scope: Scope) -> VM:
        return self.vm


class GuestApp:
    def __init__(self, callers: CallerIdentifier) -> None:
        self.callers = callers
        self._memo: dict[tuple[Any, ...], Response] = {}

    def replace_callers(self, callers: CallerIdentifier) -> None:
        """Swap in new fleet data; answers rendered from the old data are dropped."""
        self.callers = callers
        self._memo = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)

    async def _http(self, scope: Scope, send: Send) -> None:
        metadata: bytes | None = None
        forwarded = False
        for name, value in scope["headers"]:
            if name == b"metadata":
                # Repeated headers combine as a list would ("true, true"), which is not "true".
                metadata = value if metadata is None else metadata + b", " + value
            elif name == b"x-forwarded-for":
                forwarded = True
        vm = self.callers.identify(scope)
        method: str = scope["method"]
        path: str = scope["path"]
        query: bytes = scope["query_string"]
        key = (id(vm), method, path, query, metadata, forwarded)
        response = self._memo.get(key)
        if response is None:
            outcome: Outcome = handle(method, path, query, metadata, forwarded, vm)
            response = outcome.response
            if outcome.cacheable:
                memo = self._memo
                if len(memo) >= MEMO_LIMIT:
                    del memo[next(iter(memo))]
                memo[key] = response
        headers: Any = response.headers
        if response.request_id:
            headers = [*headers, (b"x-ms-request-id", str(uuid.uuid4()).encode("ascii"))]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
