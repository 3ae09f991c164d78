"""Serving apps on real sockets, all in one uvloop event loop.

The guest plane (an app with ``handle``) is served by azimds's own HTTP/1.1 server,
``protocol.py``: it answers within the loop's thread, which granian cannot (docs/benchmarks.md).
The control plane (ASGI) is served by granian's HTTP core, embedded in the same loop, behind
``Guarded``; this is the only module that configures granian. Embedding (rather than
granian's own process manager) lets every listener, the control plane and background tasks
share one loop and one copy of the fleet data.

granian parses HTTP/1.1 (HTTP/2 and WebSocket upgrades are off) and enforces the head's limits
(``defaults.MAX_REQUEST_HEAD``, 100 headers), the time to send a head (``request_timeout``,
also the keep-alive idle time) and the number of connections served at once. What granian
leaves to the app, ``Guarded`` adds: a request's body must arrive whole and in time (else 400
or 408, empty, and the connection closes), and an app's crash is logged.
(docs/behaviour.md, "Malformed requests and limits".)
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.server.embed import Server

from azimds.serving import protocol
from azimds.serving.limits import LISTEN_BACKLOG, MAX_CONNECTIONS, MAX_REQUEST_HEAD, REQUEST_TIMEOUT

# granian warns on every start that embedding is experimental; the behaviour we rely on is
# covered by our own tests against real sockets.
logging.getLogger("_granian").setLevel(logging.ERROR)

# Listeners' wildcard hosts, and the address that reaches each from this host.
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}
READY_TIMEOUT = 10.0  # seconds for every listener to accept connections
FD_RESERVE = 256  # descriptors kept for everything but connections (store, files, threads)

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class ListenError(OSError):
    pass


def claim_unix_socket(path: Path) -> None:
    """Remove a stale socket file left by a process that died; refuse one still in use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
            return
    raise ListenError(f"cannot listen on unix:{path}: another process serves it")


def bind_tcp(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (a free port for port 0), with ``SO_REUSEADDR``
    only; raises ``ListenError`` saying what is wrong and how to fix it. ``::`` takes IPv4
    too where the system's default does (Linux: ``bindv6only`` 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"cannot listen on {host}:{port}: the port is in use") from exc
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ListenError(
                f"cannot listen on {host}:{port}: no interface of this host has that address"
                f" (add it, e.g. `ip addr add {host}/32 dev lo`, or listen elsewhere)"
            ) from exc
        if exc.errno == errno.EACCES:
            raise ListenError(
                f"cannot listen on {host}:{port}: permission denied (ports below 1024 need "
                "root or CAP_NET_BIND_SERVICE)"
            ) from exc
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def claim_port(host: str, port: int) -> int:
    """Check that ``host:port`` can be bound and return the port (a free one for port 0).

    For granian (the control plane), which binds by itself, with SO_REUSEPORT: that would let
    a second azimds share a port silently; a plain bind first turns that, and a missing
    address, into a clear error.
    """
    with bind_tcp(host, port) as probe:
        bound_port: int = probe.getsockname()[1]
        return bound_port


def claim_listener(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` for the guest plane (``protocol``), held from now on:
    no other socket, of this process or another, can take the port before it is served."""
    sock = bind_tcp(host, port)
    protocol.listening_socket(sock)
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


def claim(host: str, port: int) -> int:
    """Check an address (``unix:PATH`` or a host) before serving; returns the port."""
    if host.startswith("unix:"):
        claim_unix_socket(Path(host.removeprefix("unix:")))
        return 0
    return claim_port(host, port)


class _Abandoned(Exception):
    """The request's body stopped short: raised into the app from ``receive``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Exchange:
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

    def __init__(self, app: App, body_timeout: float = REQUEST_TIMEOUT) -> None:
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
        exchange = _Exchange(receive, send, loop.time() + self.body_timeout)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception:
            if not exchange.abandoned:
                log.exception("%s %s failed", scope["method"], scope.get("path"))
                raise
        if exchange.abandoned and not exchange.started:
            await send(
                {
                    "type": "http.response.start",
                    "status": exchange.abandoned,
                    "headers": [(b"content-length", b"0"), (b"connection", b"close")],
                }
            )
            await send({"type": "http.response.body", "body": b""})


def connection_limit(listeners: int) -> int:
    """Connections each of ``listeners`` may serve at once: ``MAX_CONNECTIONS``, or fewer
    where the process may not open that many descriptors. Raises the soft limit to fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_CONNECTIONS * listeners + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, (soft - FD_RESERVE) // listeners))


def _server(app: Any, host: str, port: int, request_timeout: float, connections: int) -> Server:
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
    app = Guarded(app, request_timeout)
    if host.startswith("unix:"):
        server = Server(app, uds=Path(host.removeprefix("unix:")), **options)
        server.uds_permissions = 0o600  # owner only; the embedded constructor has no such option
        return server
    return Server(app, address=host, port=port, **options)


def _accepts(host: str, port: int) -> bool:
    target: str | tuple[str, int]
    if host.startswith("unix:"):
        family, target = socket.AF_UNIX, host.removeprefix("unix:")
    else:
        host = WILDCARDS.get(host, host)
        family, target = (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, port)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        try:
            probe.connect(target)
        except OSError:
            return False
    return True


async def _until_accepting(
    addresses: list[tuple[str, int]], tasks: list[asyncio.Task[Any]]
) -> None:
    """Return once every listener accepts connections (granian binds in its own time)."""
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
    waiting = list(addresses)
    while waiting:
        if any(task.done() for task in tasks):
            return  # a listener failed; serve() reports it
        waiting = [a for a in waiting if not await asyncio.to_thread(_accepts, *a)]
        if waiting:
            if asyncio.get_running_loop().time() > deadline:
                late = ", ".join(f"{host}:{port}" for host, port in waiting)
                raise ListenError(f"not accepting connections after {READY_TIMEOUT:.0f} s: {late}")
            await asyncio.sleep(0.01)


async def serve(
    bindings: Sequence[tuple[Any, str, int]],
    listeners: Mapping[tuple[str, int], socket.socket],
    stop: asyncio.Event,
    started: asyncio.Event | None = None,
    request_timeout: float = REQUEST_TIMEOUT,
    clients: protocol.Clients | None = None,
) -> None:
    """Serve each (app, host, port) until ``stop`` is set; ports must already be claimed.
    An app with ``handle`` (the guest plane) is served by ``protocol``, on its socket in
    ``listeners`` (``claim_listener``); any other (ASGI) by granian.
    ``started`` is set once every listener accepts connections; if one fails first, this
    raises ``ListenError`` instead.

    ``request_timeout``: seconds a client has to send a request's head (from connecting, or
    from the previous answer on a kept-alive connection) and again its body.
    ``clients``: the guest plane's clients, shared by its listeners (``protocol.Clients``)."""
    connections = connection_limit(len(bindings))
    clients = clients if clients is not None else protocol.Clients()
    stopping = asyncio.Event()  # ``stop``, or a listener that failed
    servers = []
    tasks = []
    for app, host, port in bindings:
        if hasattr(app, "handle"):
            listening = protocol.serve(
                app, listeners[host, port], stopping, request_timeout, connections, clients
            )
            tasks.append(asyncio.create_task(listening))
        else:
            server = _server(app, host, port, request_timeout, connections)
            servers.append(server)
            tasks.append(asyncio.create_task(server.serve()))
    await _until_accepting([(host, port) for _, host, port in bindings], tasks)
    if started is not None and not any(task.done() for task in tasks):
        started.set()
    waiting = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stopping.set()
    for server in servers:
        server.signal_handler_interrupt()  # type: ignore[no-untyped-call]
    waiting.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task is not waiting and task.exception() is not None:
            raise ListenError(f"a listener stopped: {task.exception()}")
