"""The guest plane's HTTP/1.1 server: an asyncio protocol on uvloop, answering in the loop.

Why not granian, which serves the control plane (``asgi.py``): granian parses HTTP on its
own I/O thread and wakes the Python thread for every request and again for every answer. On a
small VM those wakes cost more than the guest plane's whole answer (docs/benchmarks.md, "Where
the time goes"). Here a cached answer is parsed, looked up and written within one callback of
the event loop.

What the server does (docs/behaviour.md, "Malformed requests and limits"): it reads heads of
up to ``MAX_REQUEST_HEAD`` bytes (what they may hold, and how bodies are framed, is
``parse.py``'s; what it cannot read it refuses: 400, 431), keeps connections alive and answers
pipelined requests in order, closes connections that send no head within
``request_timeout``, and serves at most ``connections`` at once (the rest wait in the listen
backlog). Its own refusals carry ``connection``, ``content-length`` and ``date`` only.

The guest plane faces untrusted VMs, so no client may hold more than its share
(docs/reliability.md, "One VM against the others"):

- at most ``Clients.per_client`` connections from one address; more are closed at once;
- a connection reads at most ``READ_SIZE`` bytes at a time and stops reading while more than a
  head's worth of its input waits, or while ``WRITE_HIGH_WATER`` bytes of its answers wait for
  it to read them; answers it leaves unread for ``request_timeout`` end it (the write deadline);
  the kernel holds at most ``SOCKET_BUFFER`` (doubled) each way (``listening_socket``);
- a connection is answered at most ``CONNECTION_TURN`` requests in a row, and while other
  clients are connected, one client at most ``CLIENT_TURN`` requests in a turn of the loop:
  the rest wait for the next turn, so one VM's burst cannot hold the loop from the others.

The app (``exchange.App``) sees each request as one ``exchange.Exchange`` (here a
``_ConnectionExchange``) and answers synchronously where it can (``handle`` returns None) or
returns an awaitable.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable
from email.utils import formatdate
from http import HTTPStatus

from azimds.serving.exchange import CLOSE, App, BodyAbandoned, ResponseHeaders
from azimds.serving.limits import MAX_CONNECTIONS_PER_CLIENT, MAX_REQUEST_HEAD
from azimds.serving.parse import (
    MAX_BLANK_LINES,
    Body,
    Head,
    Headers,
    Refused,
    check_partial_head,
    read_head,
)

SHUTDOWN_GRACE = 3.0  # seconds answers on their way get when the server stops
LINGER = 2.0  # seconds a closed connection still reads, and drops, what the client sends
READ_SIZE = 64 * 1024  # bytes read from a connection at once (uvloop's own reads: 256 KB)
WRITE_HIGH_WATER = 64 * 1024  # bytes of answers waiting for a client before reading pauses
# The kernel's buffers for each connection, each way (SO_SNDBUF, SO_RCVBUF; Linux doubles it
# for its bookkeeping). Left to Linux, a client that never reads grows the send buffer to
# tcp_wmem's maximum (4 MB), holding that much of the host's memory until the write deadline.
SOCKET_BUFFER = 64 * 1024
CONNECTION_TURN = 64  # requests a connection is answered in a row before others get a turn
CLIENT_TURN = 8  # requests one address is answered in a turn of the loop while others wait
REFUSAL_LOG_INTERVAL = 60.0  # seconds between warnings of connections refused to one client
ANSWER_HEADS = 4096  # rendered answer heads kept, by (status, headers)
KNOWN_HEADS = 1024  # request heads kept once read (``_known_heads``)
KNOWN_HEAD_LIMIT = 1024  # bytes; longer request heads are read every time

log = logging.getLogger(__name__)

_BODYLESS = frozenset({204, 304})
_LINGER_NONE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST
_CLOSE_LINE = b"connection: close\r\n"
# Heads read before, by their bytes: clients repeat the same request, and reading one costs
# more than the rest of a cached answer. Shared: ``Headers`` cannot be changed.
_known_heads: dict[bytes, Head] = {}


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


_STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}


class _DateHeader:
    """The ``date`` header's value, formatted once a second."""

    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second = -1
        self.value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self.second:
            self.second = second
            self.value = formatdate(second, usegmt=True).encode("ascii")
        return self.value


_http_date = _DateHeader().now

_answer_heads: dict[tuple[int, ResponseHeaders], tuple[bytes, bool, bool]] = {}


def _rendered(status: int, headers: ResponseHeaders) -> tuple[bytes, bool, bool]:
    """An answer's status line and headers as bytes, whether they hold ``content-length``
    and whether ``connection: close``; rendered once for each (status, headers)."""
    key = (status, headers)
    rendered = _answer_heads.get(key)
    if rendered is None:
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
        names = {name for name, _ in headers}
        rendered = (
            _STATUS_LINES[status] + lines.encode("latin-1"), "content-length" in names,
            CLOSE in headers,
        )  # fmt: skip
        if len(_answer_heads) >= ANSWER_HEADS:
            _answer_heads.clear()
        _answer_heads[key] = rendered
    return rendered


def _refusal(status: int) -> bytes:
    """The server's own refusal of what it cannot parse: empty, and the connection closes."""
    return (
        _STATUS_LINES[status]
        + b"connection: close\r\ncontent-length: 0\r\ndate: "
        + _http_date()
        + b"\r\n\r\n"
    )


class _Body(Body):
    """A request body as it arrives on a connection: ``deadline`` is when the whole body must
    have come (else 408); ``waiter`` is the app's, waiting in ``read_body``."""

    __slots__ = ("deadline", "waiter")

    def __init__(self, length: int, limit: int, deadline: float) -> None:
        super().__init__(length, limit)
        self.deadline = deadline
        self.waiter: asyncio.Future[None] | None = None

    def _changed(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class _ConnectionExchange:
    """One request on a connection and its answer (``exchange.Exchange``): what the app reads
    and the calls it makes."""

    __slots__ = (
        "_body", "_connection", "_continue", "_keep_alive", "answered", "client", "closes",
        "headers", "method", "path", "query_string",
    )  # fmt: skip

    def __init__(
        self,
        connection: _Connection,
        method: str,
        path: str,
        query_string: str,
        headers: Headers,
        body: _Body | None,
        closes: bool,
        keep_alive: bytes,
        expects_continue: bool,
    ) -> None:
        self._connection = connection
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.client = connection.client
        self._body = body
        self._continue = expects_continue  # sent 100-continue (HTTP/1.1, with a body)
        self.closes = closes  # the connection closes after the answer
        self._keep_alive = keep_alive  # the header line an HTTP/1.0 client needs, or b""
        self.answered = False

    async def read_body(self) -> bytes:
        """The body, waited for until it is whole or past the app's limit."""
        body = self._body
        if body is None:
            return b""
        connection = self._connection
        if self._continue:  # sent when the body is read, as hyper does, even if it came
            self._continue = False
            if not connection.closing:
                connection.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if not (body.done or body.broken or body.full):
            body.waiter = connection.loop.create_future()
            try:
                async with asyncio.timeout_at(body.deadline):
                    await body.waiter
            except TimeoutError:
                raise BodyAbandoned(408) from None
        if body.broken and not body.full:
            raise BodyAbandoned(400)
        return bytes(body.data)

    def response_bytes(
        self, status: int, headers: ResponseHeaders, body: bytes, request_id: str = ""
    ) -> None:
        """Write the answer, its head rendered once for each (status, headers)."""
        if self.answered:
            raise RuntimeError("a request is answered once")
        self.answered = True
        head, has_length, closes = _rendered(status, headers)
        if request_id:
            head += b"x-ms-request-id: " + request_id.encode("latin-1") + b"\r\n"
        if status in _BODYLESS:
            body = b""
        elif not has_length:
            head += b"content-length: %d\r\n" % len(body)
        if closes:
            self.closes = True
        elif self.closes:
            head += _CLOSE_LINE
        else:
            head += self._keep_alive
        if self.method == "HEAD":
            body = b""
        connection = self._connection
        if not connection.closing:
            connection.transport.write(head + b"date: " + _http_date() + b"\r\n\r\n" + body)
            if self.closes:
                connection.close()

    async def client_disconnect(self) -> None:
        await asyncio.shield(self._connection.gone)

    def reset(self) -> bool:
        return self._connection.reset()


class _Client:
    """One client address: its open connections and its share of the current turn."""

    __slots__ = ("host", "open", "served", "turn", "waiting")

    def __init__(self, host: str) -> None:
        self.host = host
        self.open = 0  # connections
        self.turn = -1  # the turn of the loop ``served`` counts in
        self.served = 0  # requests answered in that turn
        self.waiting: deque[_Connection] = deque()  # connections whose turn is over


class Clients:
    """The clients of one process's guest listeners, by address: how many connections each
    has open (at most ``per_client``), and whose turn it is.

    A turn of the loop lasts from one call of ``_next_turn`` to the next (``call_soon``: it
    runs before the loop next reads from its sockets). While more than one address is
    connected, each is answered at most ``CLIENT_TURN`` requests in a turn; a connection whose
    client's share is used up waits for the next turn, its input kept. A connection is also
    answered at most ``CONNECTION_TURN`` requests in a row. Alone, a client is never held back
    but by the latter, and the turn costs nothing."""

    def __init__(self, per_client: int = MAX_CONNECTIONS_PER_CLIENT) -> None:
        self.per_client = per_client
        self.by_host: dict[str, _Client] = {}
        self.refused = 0  # connections closed at once: their client had ``per_client`` open
        self.write_timeouts = 0  # connections ended: their answers went unread too long
        self._turn = 0
        self._turn_due = False  # ``_next_turn`` is scheduled
        self._waiting: dict[_Client, None] = {}  # clients with connections waiting, in order
        self._refusals_logged: dict[str, float] = {}

    @property
    def open(self) -> int:
        """Connections open on every listener."""
        return sum(client.open for client in self.by_host.values())

    def admit(self, host: str) -> bool:
        """Whether a new connection from ``host`` may be served; counts and logs refusals."""
        client = self.by_host.get(host)
        if client is None or client.open < self.per_client:
            return True
        self.refused += 1
        now = time.monotonic()
        if now - self._refusals_logged.get(host, -REFUSAL_LOG_INTERVAL) >= REFUSAL_LOG_INTERVAL:
            if len(self._refusals_logged) > 4096:
                self._refusals_logged.clear()
            self._refusals_logged[host] = now
            log.warning(
                "closing new connections from %s: it has %d open (--connections-per-client)",
                host, client.open,
            )  # fmt: skip
        return False

    def join(self, host: str) -> _Client:
        client = self.by_host.get(host)
        if client is None:
            client = self.by_host[host] = _Client(host)
        client.open += 1
        return client

    def leave(self, client: _Client) -> None:
        client.open -= 1
        if client.open <= 0 and self.by_host.get(client.host) is client:
            del self.by_host[client.host]

    def may_serve(self, connection: _Connection) -> bool:
        """Count one request of ``connection``'s client in this turn, where other clients are
        connected; False if its share is used up."""
        client = connection.peer
        if client.turn != self._turn:
            client.turn = self._turn
            client.served = 0
            self._schedule(connection.loop)
        elif client.served >= CLIENT_TURN:
            return False
        client.served += 1
        return True

    def wait_turn(self, connection: _Connection) -> None:
        """``connection`` is served again in the next turn."""
        client = connection.peer
        client.waiting.append(connection)
        self._waiting[client] = None
        self._schedule(connection.loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._turn_due:
            self._turn_due = True
            loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        """A new turn: connections waiting are served again, each client's in order, as far
        as its share goes (what is left waits for the turn after)."""
        self._turn += 1
        self._turn_due = False
        waiting, self._waiting = self._waiting, {}
        for client in waiting:
            queue = client.waiting
            while queue:
                connection = queue.popleft()
                connection.take_turn()
                if connection.waiting_turn:  # its share ran out: the rest wait (wait_turn)
                    break


class _Listener:
    """One listening socket: accepts up to ``connections`` at once."""

    def __init__(
        self,
        app: App,
        sock: socket.socket,
        request_timeout: float,
        connections: int,
        clients: Clients | None = None,
    ) -> None:
        self.app = app
        self.sock = sock
        self.request_timeout = request_timeout
        self.connections = connections
        self.clients = clients if clients is not None else Clients()
        self.open: set[_Connection] = set()
        self.loop = asyncio.get_running_loop()
        self.accepting = False
        # Where every connection of this listener reads into; each read is copied out at once.
        self.read_buffer = memoryview(bytearray(READ_SIZE))

    def start(self) -> None:
        if not self.accepting:
            self.accepting = True
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def pause(self) -> None:
        if self.accepting:
            self.accepting = False
            self.loop.remove_reader(self.sock.fileno())

    def _accept(self) -> None:
        while len(self.open) < self.connections:
            try:
                client, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, or the client left: try again later
                log.warning("accepting a connection failed: %s", exc)
                return
            if not self.clients.admit(_host_of(address)):
                client.close()
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(self, address)
            self.open.add(connection)
            self.loop.create_task(self._connect(client, connection))
        self.pause()  # the rest wait in the backlog until a connection closes

    async def _connect(self, client: socket.socket, connection: _Connection) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: connection, client)
        except OSError:
            client.close()
            self.closed(connection)

    def closed(self, connection: _Connection) -> None:
        """``connection`` has gone (called once for each)."""
        self.open.discard(connection)
        self.clients.leave(connection.peer)
        if not self.accepting and len(self.open) < self.connections and self.sock.fileno() >= 0:
            self.start()

    def close(self) -> None:
        """Stop accepting and close idle connections; busy ones close after their answer."""
        self.pause()
        self.sock.close()
        for connection in list(self.open):
            connection.shutdown()


def listening_socket(sock: socket.socket) -> None:
    """Set up a bound socket for ``serve``, before it listens: the connections it accepts
    inherit these buffer sizes (``SOCKET_BUFFER``)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)


def _host_of(address: tuple[str, int]) -> str:
    host: str = address[0]
    if host.startswith("::ffff:") and "." in host:
        return host.removeprefix("::ffff:")  # IPv4 on a ``::`` listener: the VM's address
    return host


class _Connection(asyncio.BufferedProtocol):
    """One client's connection: reads heads and bodies, hands requests to the app in order."""

    def __init__(self, listener: _Listener, address: tuple[str, int]) -> None:
        self.listener = listener
        self.app = listener.app
        self.loop = listener.loop
        host = _host_of(address)
        self.peer = listener.clients.join(host)
        self.client = f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.buffer = b""  # received; what is before ``at`` has been read
        self.at = 0
        self.body: _Body | None = None  # the body being read: the current request's, or one
        # left over from a request already answered (read and dropped before the next head)
        self.busy = False  # an answer is on its way (the app returned an awaitable)
        self.closing = False
        self.lost = False  # asyncio's connection_lost has come
        self.eof = False  # the client shut its sending side
        self.stopping = False  # the server is shutting down: close once idle
        self.reading_paused = False
        self.writing_paused = False
        self.waiting_turn = False  # its turn is over: it is served again in the next one
        self.head_deadline = 0.0  # when the connection closes unless a head comes; 0: none due
        self.head_checked = 0  # bytes of an unfinished head already checked (whole lines)
        self.head_lines = 0  # whole lines among them
        self.blank_lines = 0  # empty lines before the head being read
        self.timer: asyncio.TimerHandle | None = None  # the head timer; once closing, LINGER's
        self.write_timer: asyncio.TimerHandle | None = None  # the write deadline
        self.gone: asyncio.Future[None] = self.loop.create_future()

    # --- asyncio's callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream's is a Transport
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER)
        self._wait_for_head()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.listener.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.listener.read_buffer[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # what comes after the last answer (the rest of a body) is dropped
        if self.at < len(self.buffer):
            data = self.buffer[self.at :] + data
        self.buffer = data
        body = self.body
        self.at = body.feed(data, 0) if body is not None and not (body.done or body.broken) else 0
        if not (self.busy or self.waiting_turn):
            self._serve()
        else:
            self._update_reading()

    def eof_received(self) -> bool:
        self.eof = True
        if not self.gone.done():  # a client that stops sending has given up waiting (a hang
            self.gone.set_result(None)  # fault ends); answers still due are still sent
        if self.closing:
            self._close_transport()
            return True
        if self.body is not None:
            self.body.cut_short()  # the app refuses it (400), or _serve closes
        if not (self.busy or self.waiting_turn):
            self._serve()
        return True  # keep the sending side open for the answers still due

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = self.lost = True
        for timer in (self.timer, self.write_timer):
            if timer is not None:
                timer.cancel()
        if self.body is not None:
            self.body.cut_short()
        if not self.gone.done():
            self.gone.set_result(None)
        self.listener.closed(self)

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._start_write_deadline()
        self._update_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.write_timer is not None and not self.closing:
            self.write_timer.cancel()  # the client reads: its answers move again
            self.write_timer = None
        if not (self.busy or self.waiting_turn):
            self._serve()
        else:
            self._update_reading()

    # --- serving ---------------------------------------------------------------------------

    def take_turn(self) -> None:
        """A new turn of the loop (``Clients``): serve what waited."""
        self.waiting_turn = False
        if not self.busy:
            self._serve()

    def _serve(self) -> None:
        """Answer the requests in the buffer, in order, until one needs to wait, the
        connection's or its client's turn is over, or the client must read first."""
        turn = CONNECTION_TURN
        while not (self.closing or self.busy or self.writing_paused):
            body = self.body
            if body is not None:
                if body.broken:
                    self.close()  # the last request's body broke off after its answer
                    return
                if not body.done:
                    self.close()  # answered before its body came whole: the rest is not read
                    return
                self.body = None
            if self.at >= len(self.buffer):  # all read: wait for the next request
                self.buffer = b""
                self.at = 0
                if self.eof or self.stopping:
                    self.close()
                    return
                self._wait_for_head()
                if self.reading_paused:
                    self._update_reading()
                return
            # Alone, a client is held back by its connection's turn only (the fast path).
            clients = self.listener.clients
            if not turn or (len(clients.by_host) > 1 and not clients.may_serve(self)):
                self.waiting_turn = True
                clients.wait_turn(self)
                break
            turn -= 1
            try:
                exchange = self._next_request()
            except Refused as refused:
                self.transport.write(_refusal(refused.status))
                self.close(linger=True)
                return
            if exchange is None:  # a head not yet whole
                if self.closing:
                    return
                if self.eof or self.stopping:
                    self.close()
                    return
                self._wait_for_head()
                break
            self._dispatch(exchange)
        self._update_reading()

    def _update_reading(self) -> None:
        """Read while the client has room: no more than a head's worth of its input waits,
        and it reads its answers. A connection closing reads on (and drops what comes) until
        it is closed."""
        if self.closing:
            if self.lost or self.transport.is_closing():
                return
            pause = False
        else:
            pause = self.writing_paused or len(self.buffer) - self.at > MAX_REQUEST_HEAD
        if pause != self.reading_paused:
            self.reading_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _dispatch(self, exchange: _ConnectionExchange) -> None:
        try:
            pending = self.app.handle(exchange)
        except Exception:
            self._failed(exchange)
            return
        if pending is not None:
            self.busy = True
            self.loop.create_task(self._finish(exchange, pending))
        elif not exchange.answered:
            self.close()  # the app's way to drop a connection: no answer

    async def _finish(self, exchange: _ConnectionExchange, pending: Awaitable[None]) -> None:
        try:
            await pending
        except Exception:
            self._failed(exchange)
            return
        if not exchange.answered:
            self.close()  # no answer: a fault rule reset the connection, or the client left
            return
        self.busy = False
        if not self.waiting_turn:
            self._serve()

    def _failed(self, exchange: _ConnectionExchange) -> None:
        """An app that raised: logged, 500 (unless it had answered), closed."""
        if exchange.answered:
            if not self.closing:
                log.exception("%s %s failed after answering", exchange.method, exchange.path)
                self.close()
            return
        log.exception("%s %s failed", exchange.method, exchange.path)
        exchange.answered = True
        if not self.closing:
            self.transport.write(_refusal(500))
        self.close()

    def _next_request(self) -> _ConnectionExchange | None:
        """The next request whose head is in the buffer (its body may still be arriving), or
        None until a whole head has come. Raises ``Refused``."""
        buffer, at = self.buffer, self.at
        if buffer.startswith(b"\r\n", at):  # blank lines before a request are ignored, a few
            start = at
            while buffer.startswith(b"\r\n", at) and at - start <= 2 * MAX_BLANK_LINES:
                at += 2
            self.blank_lines += (at - start) // 2
            if self.blank_lines > MAX_BLANK_LINES:
                raise Refused(400)
            self.at = at
        end = buffer.find(b"\r\n\r\n", at + max(0, self.head_checked - 3))
        if end < 0:
            if at:  # keep only the unfinished head
                buffer = self.buffer = buffer[at:]
                self.at = 0
            if buffer:
                self.head_checked, self.head_lines = check_partial_head(
                    buffer, self.head_checked, self.head_lines
                )
            return None
        if end + 4 - at > MAX_REQUEST_HEAD:
            raise Refused(431)
        self.at = end + 4
        self.head_deadline = 0.0
        self.head_checked = self.head_lines = self.blank_lines = 0
        head = buffer[at:end]
        known = _known_heads.get(head)
        if known is None:
            try:
                known = read_head(head)
            except Refused:
                if head == b"PRI * HTTP/2.0":  # HTTP/2's preface: an HTTP/1.1 answer
                    self.close()  # cannot help this client
                    return None
                raise
            if len(head) <= KNOWN_HEAD_LIMIT:
                if len(_known_heads) >= KNOWN_HEADS:
                    _known_heads.clear()
                _known_heads[head] = known
        method, path, query, headers, closes, keep_alive, length, expects = known
        if self.eof or self.stopping:
            closes, keep_alive = True, b""
        body = None
        if length is not None:
            deadline = self.loop.time() + self.listener.request_timeout
            body = self.body = _Body(length, self.app.body_limit, deadline)
            self.at = body.feed(self.buffer, self.at)
        return _ConnectionExchange(
            self, method, path, query, headers, body, closes, keep_alive, expects
        )

    # --- timers and closing ----------------------------------------------------------------

    def _wait_for_head(self) -> None:
        """The connection waits for a head: it closes ``request_timeout`` after it began
        waiting (on connecting, or after the last answer) unless a whole head has come."""
        if not self.head_deadline:
            self.head_deadline = self.loop.time() + self.listener.request_timeout
            if self.timer is None:
                self.timer = self.loop.call_at(self.head_deadline, self._on_timer)

    def _on_timer(self) -> None:
        """Close a connection still waiting for a head when its time is up. Heads that came
        meanwhile moved the deadline: the timer is set again rather than cancelled for each."""
        self.timer = None
        if self.closing or not self.head_deadline:
            return  # busy: the next wait sets a timer
        if self.loop.time() < self.head_deadline:
            self.timer = self.loop.call_at(self.head_deadline, self._on_timer)
            return
        self.close()

    def _start_write_deadline(self) -> None:
        """Answers wait for the client to read them: unless it does within
        ``request_timeout``, the connection ends (its buffers would otherwise stay forever)."""
        if self.write_timer is None:
            self.write_timer = self.loop.call_later(
                self.listener.request_timeout, self._write_timed_out
            )

    def _write_timed_out(self) -> None:
        self.write_timer = None
        if self.lost:
            return
        self.listener.clients.write_timeouts += 1
        log.debug("%s left its answers unread for too long: connection aborted", self.client)
        self.closing = True
        self.transport.abort()

    def close(self, linger: bool = False) -> None:
        """Close after the answers written. Where the client may still be sending (a body, or
        requests after the last one answered, or anything after a refusal), only our side
        closes at first (FIN) and what comes is read and dropped for ``LINGER`` seconds:
        closing a socket with unread data makes Linux send a reset, which can destroy the
        answer before the client reads it."""
        if self.closing:
            return
        self.closing = True
        body = self.body
        sending = linger or self.at < len(self.buffer) or (body is not None and not body.done)
        if self.eof or not sending:
            self._close_transport()
            return
        self.transport.write_eof()
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(LINGER, self._close_transport)  # if it never stops
        self._update_reading()

    def _close_transport(self) -> None:
        if self.lost:
            return
        self.transport.close()
        if self.transport.get_write_buffer_size():
            self._start_write_deadline()  # close() would wait for the client to read forever

    def shutdown(self) -> None:
        """The server stops: close now if idle, else after the answer on its way."""
        self.stopping = True
        if not self.busy and (self.body is None or self.body.waiter is None):
            self.close()

    def reset(self) -> bool:
        """Abort the connection so the client sees a TCP reset (RST)."""
        if self.closing:
            return False
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_NONE)
        self.closing = True
        self.transport.abort()
        return True


async def serve(
    app: App,
    sock: socket.socket,
    stop: asyncio.Event,
    request_timeout: float,
    connections: int,
    clients: Clients | None = None,
) -> None:
    """Serve ``app`` on ``sock`` (listening, non-blocking) until ``stop`` is set. On stop,
    idle connections close at once and busy ones after their answer, or after
    ``SHUTDOWN_GRACE`` seconds; ``sock`` is closed. ``clients``: shared by every listener of
    the process, so that a client's connections count on all of them together."""
    listener = _Listener(app, sock, request_timeout, connections, clients)
    listener.start()
    try:
        await stop.wait()
    finally:
        listener.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(request_timeout, SHUTDOWN_GRACE)
        while listener.open and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(listener.open):
            connection.transport.abort()
