"""The node's listeners: checked, bound and served, both planes in one uvloop event loop.

Addresses are checked before anything is served (``claim``, ``claim_listener``), so that a
port in use or a missing address is a clear error at start. The guest plane's sockets are
bound and held from then on, and served by azimds's own HTTP/1.1 server (``protocol.py``),
which answers within the loop's thread, as granian cannot (docs/benchmarks.md). The control
plane is served by granian, embedded in the same loop (``asgi.py``). ``serve`` runs both until
stopped, or until one listener fails.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from azimds.serving import asgi, protocol
from azimds.serving.exchange import App
from azimds.serving.limits import LISTEN_BACKLOG, MAX_CONNECTIONS, REQUEST_TIMEOUT

# Listeners' wildcard hosts, and the address that reaches each from this host.
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}
READY_TIMEOUT = 10.0  # seconds for every listener to accept connections
FD_RESERVE = 256  # descriptors kept for everything but connections (store, files, threads)


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
    guest: App,
    listeners: Mapping[tuple[str, int], socket.socket],
    control: asgi.ASGIApp,
    control_address: tuple[str, int],
    stop: asyncio.Event,
    started: asyncio.Event | None = None,
    request_timeout: float = REQUEST_TIMEOUT,
    clients: protocol.Clients | None = None,
    apps: Mapping[tuple[str, int], App] | None = None,
) -> None:
    """Serve the guest plane's app on each of ``listeners`` (``claim_listener``) and the
    control plane's on ``control_address`` (``claim``) until ``stop`` is set. ``started`` is
    set once every listener accepts connections; if one fails first, this raises
    ``ListenError`` instead.

    ``request_timeout``: seconds a client has to send a request's head (from connecting, or
    from the previous answer on a kept-alive connection) and again its body.
    ``clients``: the guest plane's clients, shared by its listeners (``protocol.Clients``).
    ``apps``: another app for some of the listeners (the WireServer's), by their address."""
    connections = connection_limit(len(listeners) + 1)
    clients = clients if clients is not None else protocol.Clients()
    stopping = asyncio.Event()  # ``stop``, or a listener that failed
    tasks = [
        asyncio.create_task(
            protocol.serve(
                (apps or {}).get(address, guest),
                sock,
                stopping,
                request_timeout,
                connections,
                clients,
            )
        )
        for address, sock in listeners.items()
    ]
    control_host, control_port = control_address
    tasks.append(
        asyncio.create_task(
            asgi.serve(control, control_host, control_port, stopping, request_timeout, connections)
        )
    )
    await _until_accepting([*listeners, control_address], tasks)
    if started is not None and not any(task.done() for task in tasks):
        started.set()
    waiting = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stopping.set()
    waiting.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task is not waiting and task.exception() is not None:
            raise ListenError(f"a listener stopped: {task.exception()}")
