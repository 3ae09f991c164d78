"""The control plane's HTTP server: granian's HTTP core, embedded in the event loop.

The only module that configures granian. Embedding (rather than granian's own process manager)
lets every listener, the control plane and background tasks share one loop and one copy of
the fleet data.

granian parses HTTP/1.1 (HTTP/2 and WebSocket upgrades are off) and enforces the head's limits
(``limits.MAX_REQUEST_HEAD``, 100 headers), the time to send a head (``request_timeout``,
also the keep-alive idle time) and the number of connections served at once. What granian
leaves to the app, ``Guarded`` adds: a request's body must arrive whole and in time (else 400
or 408, empty, and the connection closes), and an app's crash is logged.
(docs/behaviour.md, "Malformed requests and limits".)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.server.embed import Server

from azimds.serving.limits import LISTEN_BACKLOG, MAX_REQUEST_HEAD, REQUEST_TIMEOUT

# granian warns on every start that embedding is experimental; the behaviour we rely on is
# covered by our own tests against real sockets.
logging.getLogger("_granian").setLevel(logging.ERROR)

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _Abandoned(Exception):
    """The request's body stopped short: raised into the app from ``receive``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _GuardedRequest:
    """One request's ``receive`` and ``send`` as ``Guarded`` hands them to the app."""

    __slots__ = ("_receive", "_send", "abandoned", "complete", "deadline", "started")

    def __init__(self, receive: Receive, send: Send, deadline: float) -> None:
        self._receive = receive
        self._send = send
        self.deadline = deadline
        self.complete = False  # the whole body has arrived
        self.abandoned = 0  # the status answered for a body that stopped short (408, 400)
        self.started = False  # a response has started

    async def receive(self) -> Message:
        if self.complete:  # only the disconnect is left to wait for, as long as it takes
            return await self._receive()
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self._receive()
        except TimeoutError:
            self.abandoned = 408
            raise _Abandoned(408) from None
        if message["type"] == "http.request":
            self.complete = not message.get("more_body", False)
            return message
        # granian reports a body cut short (the client closed, or broke the chunked
        # encoding) as a disconnect: the app must not act on the part it has.
        self.abandoned = 400
        raise _Abandoned(400)

    async def send(self, message: Message) -> None:
        if self.abandoned:
            return  # Guarded answers instead
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class Guarded:
    """An ASGI app behind the checks granian does not make.

    - A request's body must arrive whole within ``body_timeout`` seconds of its head: else
      408, empty, and the connection closes. A body cut short (the client closed its side, or
      sent broken chunked encoding) gets 400, empty, and the connection closes. Either way the
      app is stopped (``receive`` raises) before it acts on a partial body. GET requests, whose
      bodies no app reads, pass untouched: the fast path.
    - An exception the app lets escape is logged (granian then answers 500 on its own).
    """

    def __init__(self, app: ASGIApp, body_timeout: float = REQUEST_TIMEOUT) -> None:
        self.app = app
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["method"] == "GET":
            # The fast path (most requests): no app reads a GET's body. granian skips it, or
            # closes the connection after the answer where it never ends.
            try:
                await self.app(scope, receive, send)
            except Exception:
                log.exception("%s %s failed", scope["method"], scope.get("path"))
                raise
        else:
            await self._with_body(scope, receive, send)

    async def _with_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        request = _GuardedRequest(receive, send, loop.time() + self.body_timeout)
        try:
            await self.app(scope, request.receive, request.send)
        except Exception:
            if not request.abandoned:
                log.exception("%s %s failed", scope["method"], scope.get("path"))
                raise
        if request.abandoned and not request.started:
            await send(
                {
                    "type": "http.response.start",
                    "status": request.abandoned,
                    "headers": [(b"content-length", b"0"), (b"connection", b"close")],
                }
            )
            await send({"type": "http.response.body", "body": b""})


def _server(app: ASGIApp, host: str, port: int, request_timeout: float, connections: int) -> Server:
    options: dict[str, Any] = {
        "interface": Interfaces.ASGINL,
        "log_enabled": False,
        "http": HTTPModes.http1,
        "websockets": False,
        "backlog": LISTEN_BACKLOG,
        "backpressure": connections,
        "http1_settings": HTTP1Settings(
            header_read_timeout=max(1, round(request_timeout * 1000)),  # milliseconds
            keep_alive=True,
            max_buffer_size=MAX_REQUEST_HEAD,
        ),
    }
    guarded = Guarded(app, request_timeout)
    if host.startswith("unix:"):
        server = Server(guarded, uds=Path(host.removeprefix("unix:")), **options)
        server.uds_permissions = 0o600  # owner only; the embedded constructor has no such option
        return server
    return Server(guarded, address=host, port=port, **options)


async def serve(
    app: ASGIApp,
    host: str,
    port: int,
    stop: asyncio.Event,
    request_timeout: float,
    connections: int,
) -> None:
    """Serve ``app`` on ``host:port`` (or ``unix:PATH``, owner only) until ``stop`` is set;
    granian binds it. Raises what stopped granian before that."""
    server = _server(app, host, port, request_timeout, connections)
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    server.signal_handler_interrupt()  # type: ignore[no-untyped-call]
    await serving
