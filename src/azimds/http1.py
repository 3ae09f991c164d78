"""The guest plane's HTTP/1.1 server: an asyncio protocol on uvloop, answering in the loop.

Why not granian, which serves the control plane (``server.py``): granian parses HTTP on its
own I/O thread and wakes the Python thread for every request and again for every answer. On a
small VM those wakes cost more than the guest plane's whole answer (docs/benchmarks.md, "Where
the time goes"). Here a cached answer is parsed, looked up and written within one callback of
the event loop. Why the head is parsed here rather than by llhttp (httptools): llhttp refuses
methods it does not know (``BREW``), which IMDS answers with IIS's ``InvalidHttpVerb`` 400, so
the app must see them.

What the server does (docs/behaviour.md, "Malformed requests and limits"): it reads heads of
up to ``MAX_REQUEST_HEAD`` bytes and ``MAX_HEADER_LINES`` lines (else 431), refuses what is no
HTTP/1.0 or 1.1 (400), frames bodies (``Content-Length`` or chunked), keeps connections alive
and answers pipelined requests in order, closes connections that send no head within
``request_timeout``, and serves at most ``connections`` at once (the rest wait in the listen
backlog). Its own refusals carry ``connection``, ``content-length`` and ``date`` only.

The app sees each request as one ``Exchange`` (the request, its body and its answer) and
answers synchronously where it can (``handle`` returns None) or returns an awaitable.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import struct
import time
from collections.abc import Awaitable
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol
from urllib.parse import unquote

from azimds.defaults import MAX_REQUEST_HEAD

MAX_HEADER_LINES = 100  # what hyper (granian's HTTP core, before this server) allowed
MAX_CHUNK_LINE = 1024  # bytes of a chunk's size line, extensions included
SHUTDOWN_GRACE = 3.0  # seconds answers on their way get when the server stops
LINGER = 2.0  # seconds a closed connection still reads, and drops, a body the client sends
WRITE_HIGH_WATER = 256 * 1024  # bytes of answers buffered for a client before reading pauses

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[^\r\n]*)?")
# Bytes a head may hold: visible ASCII, obs-text, spaces and tabs, and CR LF between lines.
_HEAD_BYTES = bytes([9, 10, 13, *range(0x20, 0x7F), *range(0x80, 0x100)])
_VERSIONS = {"HTTP/1.1": False, "HTTP/1.0": True}  # -> whether it is HTTP/1.0
ANSWER_HEADS = 4096  # rendered answer heads kept, by (status, headers)
KNOWN_HEADS = 1024  # request heads kept once read (``_known_heads``)
KNOWN_HEAD_LIMIT = 1024  # bytes; longer request heads are read every time

# How the server closes an answer's connection; the only header it reads from the app's.
CLOSE: tuple[str, str] = ("connection", "close")
# An empty refusal the app or the server sends when a request's body stops short or is late.
ABANDONED_HEADERS: tuple[tuple[str, str], ...] = (CLOSE,)
_BODYLESS = frozenset({204, 304})
_LINGER_NONE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST
_CLOSE_LINE = b"connection: close\r\n"
_KEEP_ALIVE_LINE = b"connection: keep-alive\r\n"  # what an HTTP/1.0 client needs to hear

ResponseHeaders = tuple[tuple[str, str], ...]


class BodyAbandoned(Exception):
    """A request's body stopped short (400: the client closed, or broke the chunked encoding)
    or did not arrive within ``request_timeout`` (408)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status

    def answer(self, exchange: Responder) -> None:
        """Refuse the request: empty, and the connection closes."""
        exchange.response_bytes(self.status, ABANDONED_HEADERS, b"")


class Responder(Protocol):
    def response_bytes(
        self, status: int, headers: ResponseHeaders, body: bytes, request_id: str = ""
    ) -> None: ...


class App(Protocol):
    body_limit: int  # bytes of a body the server keeps; read_body returns at most one more

    def handle(self, exchange: Exchange) -> Awaitable[None] | None:
        """Answer ``exchange`` (``response_bytes``) and return None, or return an awaitable
        that answers it. An app that ends without answering drops the connection; one that
        raises gets a logged 500."""
        ...


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


class _Refused(Exception):
    """A request the server refuses itself (400, 431), before any app sees it."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Headers(dict[str, list[str]]):
    """A request's headers: lower-case name -> values, as Latin-1 characters of their bytes.
    ``get_all`` leaves out values that are not UTF-8 (they count as absent); their names are
    still ``in`` the headers."""

    __slots__ = ()

    def get_all(self, key: str) -> list[str]:
        values = self.get(key)
        if not values:
            return []
        if len(values) == 1 and values[0].isascii():
            return values[:]
        return [_utf8(value) for value in values if _is_utf8(value)]


class _Body:
    """A request body as it arrives: framed by ``Content-Length`` (``remaining``) or chunked
    (``length`` ``CHUNKED``, ``remaining`` None), kept up to ``limit`` bytes, the rest read and
    dropped."""

    __slots__ = (
        "broken", "chunk_left", "data", "deadline", "done", "full", "limit", "remaining",
        "trailer", "waiter",
    )  # fmt: skip

    def __init__(self, length: int, limit: int, deadline: float) -> None:
        self.remaining: int | None = None if length == CHUNKED else length
        self.limit = limit
        self.deadline = deadline  # when the whole body must have come (else 408)
        self.full = False  # more than ``limit`` bytes came: the app need not wait for the rest
        self.data = bytearray()
        self.done = length == 0
        self.broken = False
        self.chunk_left = -1  # chunked: bytes left of the current chunk; -1 before a size line
        self.trailer = False  # chunked: after the last chunk, waiting for the final CRLF
        self.waiter: asyncio.Future[None] | None = None

    def feed(self, data: bytes) -> bytes:
        """Take this body's bytes from the front of ``data``; returns the rest."""
        buffer = bytearray(data)
        self._take(buffer)
        return bytes(buffer)

    def _take(self, buffer: bytearray) -> None:
        if self.remaining is not None:
            taken = min(self.remaining, len(buffer))
            self._keep(buffer, taken)
            self.remaining -= taken
            if not self.remaining:
                self._finish()
            return
        while buffer and not (self.done or self.broken):
            if self.trailer:
                if len(buffer) < 2:
                    return
                # A trailer field (anything but the final CRLF) is refused: no IMDS client
                # sends one, and the body's end must be unambiguous.
                self._finish(broken=buffer[:2] != b"\r\n")
                del buffer[:2]
            elif self.chunk_left < 0:
                end = buffer.find(b"\r\n", 0, MAX_CHUNK_LINE)
                if end < 0:
                    if len(buffer) >= MAX_CHUNK_LINE or b"\n" in buffer:
                        self._finish(broken=True)
                    return
                size = _CHUNK_SIZE.fullmatch(buffer, 0, end)
                if size is None:
                    self._finish(broken=True)
                    return
                self.chunk_left = int(size[1], 16)  # before the match's buffer changes
                del buffer[: end + 2]
                if self.chunk_left == 0:
                    self.trailer = True
            elif self.chunk_left > 0:
                taken = min(self.chunk_left, len(buffer))
                self._keep(buffer, taken)
                self.chunk_left -= taken
            else:  # the CRLF after a chunk's data
                if len(buffer) < 2:
                    return
                if buffer[:2] != b"\r\n":
                    self._finish(broken=True)
                    return
                del buffer[:2]
                self.chunk_left = -1

    def _keep(self, buffer: bytearray, count: int) -> None:
        room = self.limit + 1 - len(self.data)
        if room > 0:
            self.data += buffer[: min(room, count)]
            if count >= room:
                self.full = True
                self._wake()
        del buffer[:count]

    def _finish(self, broken: bool = False) -> None:
        self.done = not broken
        self.broken = broken
        self._wake()

    def cut_short(self) -> None:
        """The client stopped sending: a body not yet whole never will be."""
        if not (self.done or self.broken):
            self._finish(broken=True)

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Exchange:
    """One request and its answer: what the app reads (``method``; ``path`` percent-decoded;
    ``query_string`` as Latin-1 characters of its bytes; ``headers``; ``client`` as
    ``host:port``, an IPv6 host in brackets) and the calls it makes."""

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
    ) -> None:
        self._connection = connection
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.client = connection.client
        self._body = body
        self._continue = body is not None and any(
            value.strip().lower() == "100-continue" for value in headers.get("expect", ())
        )
        self.closes = closes  # the connection closes after the answer
        self._keep_alive = keep_alive  # the header line an HTTP/1.0 client needs, or b""
        self.answered = False

    async def read_body(self) -> bytes:
        """The whole body, at most ``App.body_limit`` + 1 bytes of it (the app refuses more).
        Raises ``BodyAbandoned``."""
        body = self._body
        if body is None:
            return b""
        connection = self._connection
        if self._continue:  # sent when the body is read, as hyper does, even if it came
            self._continue = False
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
        """Answer: ``headers`` as given, then ``x-ms-request-id`` (unless ""),
        ``content-length`` (unless among the headers) and ``date``. ``connection: close``
        among the headers closes the connection after the answer."""
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
        """Return once the client has gone."""
        await asyncio.shield(self._connection.gone)

    def reset(self) -> bool:
        """Drop the connection with a TCP reset instead of an answer (fault rules)."""
        return self._connection.reset()


class _Listener:
    """One listening socket: accepts up to ``connections`` at once."""

    def __init__(
        self, app: App, sock: socket.socket, request_timeout: float, connections: int
    ) -> None:
        self.app = app
        self.sock = sock
        self.request_timeout = request_timeout
        self.connections = connections
        self.open: set[_Connection] = set()
        self.loop = asyncio.get_running_loop()
        self.accepting = False

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
        self.open.discard(connection)
        if not self.accepting and len(self.open) < self.connections and self.sock.fileno() >= 0:
            self.start()

    def close(self) -> None:
        """Stop accepting and close idle connections; busy ones close after their answer."""
        self.pause()
        self.sock.close()
        for connection in list(self.open):
            connection.shutdown()


class _Connection(asyncio.Protocol):
    """One client's connection: reads heads and bodies, hands requests to the app in order."""

    def __init__(self, listener: _Listener, address: tuple[str, int]) -> None:
        self.listener = listener
        self.app = listener.app
        self.loop = listener.loop
        host, port = address[:2]
        if host.startswith("::ffff:") and "." in host:
            host = host.removeprefix("::ffff:")  # IPv4 on a ``::`` listener: the VM's address
        self.client = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.buffer = b""  # received, not yet read: usually empty between data_received calls
        self.body: _Body | None = None  # the body being read: the current request's, or one
        # left over from a request already answered (read and dropped before the next head)
        self.busy = False  # an answer is on its way (the app returned an awaitable)
        self.closing = False
        self.eof = False  # the client shut its sending side
        self.stopping = False  # the server is shutting down: close once idle
        self.reading_paused = False
        self.writing_paused = False
        self.head_deadline = 0.0  # when the connection closes unless a head comes; 0: none due
        self.head_checked = 0  # bytes of an unfinished head already checked (whole lines)
        self.head_lines = 0  # whole lines among them
        self.timer: asyncio.TimerHandle | None = None
        self.gone: asyncio.Future[None] = self.loop.create_future()

    # --- asyncio's callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream's is a Transport
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER)
        self._wait_for_head()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # what comes after the last answer (the rest of a body) is dropped
        if self.buffer:
            data = self.buffer + data
        body = self.body
        if body is not None and not (body.done or body.broken):
            data = body.feed(data)
        self.buffer = data
        if not self.busy:
            self._serve()
        elif len(data) > MAX_REQUEST_HEAD and not self.reading_paused:
            self.reading_paused = True  # pipelined requests wait until the answer is out
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        if not self.gone.done():  # a client that stops sending has given up waiting (a hang
            self.gone.set_result(None)  # fault ends); answers still due are still sent
        if self.closing:
            self.transport.close()
            return True
        if self.body is not None:
            self.body.cut_short()  # the app refuses it (400), or _serve closes
        if not self.busy:
            self._serve()
        return True  # keep the sending side open for the answers still due

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
        if self.body is not None:
            self.body.cut_short()
        if not self.gone.done():
            self.gone.set_result(None)
        self.listener.closed(self)

    def pause_writing(self) -> None:
        self.writing_paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if not self.reading_paused:
            self.transport.resume_reading()
        if not self.busy:
            self._serve()

    # --- serving ---------------------------------------------------------------------------

    def _serve(self) -> None:
        """Answer the requests in the buffer, in order, until one needs to wait."""
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
            try:
                exchange = self._next_request()
            except _Refused as refused:
                self.transport.write(_refusal(refused.status))
                self.close()
                return
            if exchange is None:
                if self.eof or self.stopping:
                    self.close()
                elif not self.closing:
                    self._wait_for_head()
                return
            self._dispatch(exchange)

    def _dispatch(self, exchange: Exchange) -> None:
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

    async def _finish(self, exchange: Exchange, pending: Awaitable[None]) -> None:
        try:
            await pending
        except Exception:
            self._failed(exchange)
            return
        if not exchange.answered:
            self.close()  # no answer: a fault rule reset the connection, or the client left
            return
        self.busy = False
        if self.reading_paused:
            self.reading_paused = False
            if not self.writing_paused:
                self.transport.resume_reading()
        self._serve()

    def _failed(self, exchange: Exchange) -> None:
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

    def _next_request(self) -> Exchange | None:
        """The next request whose head is in the buffer (its body may still be arriving), or
        None until a whole head has come. Raises ``_Refused``."""
        buffer = self.buffer
        if not buffer:
            return None
        while buffer.startswith(b"\r\n"):  # blank lines before a request are ignored
            buffer = self.buffer = buffer[2:]
        end = buffer.find(b"\r\n\r\n", max(0, self.head_checked - 3))
        if end < 0:
            self.head_checked, self.head_lines = _check_partial_head(
                buffer, self.head_checked, self.head_lines
            )
            return None
        if end + 4 > MAX_REQUEST_HEAD:
            raise _Refused(431)
        self.buffer = buffer[end + 4 :]
        self.head_deadline = 0.0
        self.head_checked = self.head_lines = 0
        head = buffer[:end]
        known = _known_heads.get(head)
        if known is None:
            try:
                known = _read_head(head)
            except _Refused:
                if head == b"PRI * HTTP/2.0":  # HTTP/2's preface: an HTTP/1.1 answer
                    self.close()  # cannot help this client
                    return None
                raise
            if len(head) <= KNOWN_HEAD_LIMIT:
                if len(_known_heads) >= KNOWN_HEADS:
                    _known_heads.clear()
                _known_heads[head] = known
        method, path, query, headers, closes, keep_alive, length = known
        if self.eof or self.stopping:
            closes, keep_alive = True, b""
        body = None
        if length is not None:
            deadline = self.loop.time() + self.listener.request_timeout
            body = self.body = _Body(length, self.app.body_limit, deadline)
        exchange = Exchange(self, method, path, query, headers, body, closes, keep_alive)
        if body is not None:
            self.buffer = body.feed(self.buffer)
        return exchange

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

    def close(self) -> None:
        """Close after the answers written. Where the client may still be sending a body,
        only our side closes at first (FIN): closing a socket with unread data makes Linux
        send a reset, which can destroy the answer before the client reads it."""
        if self.closing:
            return
        self.closing = True
        body = self.body
        if body is None or body.done or self.eof:
            self.transport.close()
            return
        self.transport.write_eof()
        self.loop.call_later(LINGER, self.transport.close)  # if the client never stops

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


# A request's head as the server reads it: method, path, query, headers, whether the
# connection closes after the answer, the header line an HTTP/1.0 client needs to keep it
# open, and the body's framing (``_framing``).
_Head = tuple[str, str, str, Headers, bool, bytes, int | None]
CHUNKED = -1  # the framing of a chunked body
# Heads read before, by their bytes: clients repeat the same request, and reading one costs
# more than the rest of a cached answer. Shared read-only (the app does not change headers).
_known_heads: dict[bytes, _Head] = {}


def _read_head(head: bytes) -> _Head:
    """Everything the server needs of a request's head (without its closing blank line).
    Raises ``_Refused``."""
    method, target, http_1_0, headers = _parse_head(head)
    path, query = _split_target(target)
    closes = False
    keep_alive = b""
    if "connection" in headers or http_1_0:
        tokens = {t.strip().lower() for v in headers.get("connection", ()) for t in v.split(",")}
        if http_1_0:
            closes = "keep-alive" not in tokens
            keep_alive = b"" if closes else _KEEP_ALIVE_LINE
        else:
            closes = "close" in tokens
    length = _framing(headers)
    if "content-length" in headers and "transfer-encoding" in headers:
        closes, keep_alive = True, b""  # both framings: read as chunked, then close (RFC 9112)
    return method, path, query, headers, closes, keep_alive, length


def _framing(headers: Headers) -> int | None:
    """How the request's body is framed: None (no body), its length, or ``CHUNKED``."""
    encodings = headers.get("transfer-encoding")
    if encodings is not None:
        if ",".join(encodings).strip().lower() != "chunked":
            raise _Refused(400)
        return CHUNKED
    lengths = headers.get("content-length")
    if lengths is None:
        return None
    if len(set(lengths)) != 1 or not (lengths[0].isascii() and lengths[0].isdigit()):
        raise _Refused(400)
    if len(lengths[0]) > 19:  # beyond 64 bits
        raise _Refused(400)
    return int(lengths[0]) or None


def _parse_head(head: bytes) -> tuple[str, str, bool, Headers]:
    """A request's head (without its closing blank line) as (method, target as Latin-1
    characters, whether HTTP/1.0, headers). Raises ``_Refused`` (400) for anything that is
    not HTTP/1.0 or 1.1: a byte no head may hold, a lone CR or LF, a broken line."""
    if head.translate(None, _HEAD_BYTES):
        raise _Refused(400)
    lines = head.decode("latin-1").split("\r\n")
    if len(lines) > MAX_HEADER_LINES + 1:
        raise _Refused(431)
    breaks = len(lines) - 1
    if head.count(b"\n") != breaks or head.count(b"\r") != breaks:
        raise _Refused(400)
    method, target, http_1_0 = _request_line(lines[0])
    headers = Headers()
    for line in lines[1:]:
        name, value = _header_field(line)
        if name in headers:
            headers[name].append(value)
        else:
            headers[name] = [value]
    return method, target, http_1_0, headers


def _request_line(line: str) -> tuple[str, str, bool]:
    """(method, target, whether HTTP/1.0). Raises ``_Refused``."""
    method, _, rest = line.partition(" ")
    target, _, version = rest.partition(" ")
    http_1_0 = _VERSIONS.get(version)
    if http_1_0 is None or not target or not _is_token(method):
        raise _Refused(400)
    return method, target, http_1_0


def _header_field(line: str) -> tuple[str, str]:
    """(lower-case name, value without the spaces around it). Raises ``_Refused``."""
    name, colon, value = line.partition(":")
    if not (colon and _is_token(name)):
        raise _Refused(400)
    return name.lower(), value.strip(" \t")


def _is_token(text: str) -> bool:
    """An HTTP token (a method, a header's name): letters and digits, or the marks allowed."""
    if text.isascii() and text.replace("-", "").isalnum():
        return True
    return _TOKEN.fullmatch(text) is not None


def _utf8(value: str) -> str:
    """A header value (Latin-1 characters of its bytes) as the UTF-8 text it holds."""
    return value.encode("latin-1").decode("utf-8")


def _is_utf8(value: str) -> bool:
    try:
        _utf8(value)
    except UnicodeDecodeError:
        return False
    return True


def _check_partial_head(buffer: bytes, checked: int, lines: int) -> tuple[int, int]:
    """Refuse an unfinished head as soon as it cannot become a good one: too long, or a line
    already broken (a lone CR or LF, a bad request line or header). ``checked`` bytes at its
    front, holding ``lines`` whole lines, passed before: only what came since is looked at,
    so a head sent a byte at a time costs no more than one sent at once. Returns the new
    (checked, lines). Raises ``_Refused``."""
    if len(buffer) >= MAX_REQUEST_HEAD:
        raise _Refused(431)
    # A CR at the end may still get its LF: it is checked with what comes next.
    end = len(buffer) - 1 if buffer.endswith(b"\r") else len(buffer)
    fresh = buffer[checked:end]
    breaks = fresh.count(b"\r\n")
    if fresh.count(b"\r") != breaks or fresh.count(b"\n") != breaks:
        raise _Refused(400)
    if fresh.translate(None, _HEAD_BYTES):
        raise _Refused(400)
    if breaks:
        before = buffer.rfind(b"\r\n", 0, checked)  # the end of the last line checked
        first = before + 2 if before >= 0 else 0
        last = buffer.rfind(b"\r\n", 0, end)
        complete = buffer[first:last].decode("latin-1").split("\r\n")
        if lines + len(complete) > MAX_HEADER_LINES + 1:
            raise _Refused(431)
        for number, line in enumerate(complete, start=lines):
            if number == 0:
                _request_line(line)
            else:
                _header_field(line)
        lines += len(complete)
    return end, lines


def _split_target(target: str) -> tuple[str, str]:
    """A request target (Latin-1 characters of its bytes) as (path, query): the path
    percent-decoded (an escape that is no UTF-8 becomes U+FFFD), the query as it came.
    Raises ``_Refused`` for a target whose bytes are not UTF-8."""
    path, _, query = target.partition("?")
    if not target.isascii():
        if not _is_utf8(target):
            raise _Refused(400)
        path = _utf8(path)
    if "#" in target:
        path = path.partition("#")[0]
        query = query.partition("#")[0]
    if not path.startswith("/"):
        if path == "*":
            pass
        elif "://" in path:  # absolute form: served as its path
            path = "/" + path.partition("://")[2].partition("/")[2]
        else:  # authority form (CONNECT host:port): no path
            path = ""
    if "%" in path:
        path = unquote(path, errors="replace")
    return path, query


async def serve(
    app: App,
    sock: socket.socket,
    stop: asyncio.Event,
    request_timeout: float,
    connections: int,
) -> None:
    """Serve ``app`` on ``sock`` (listening, non-blocking) until ``stop`` is set. On stop,
    idle connections close at once and busy ones after their answer, or after
    ``SHUTDOWN_GRACE`` seconds; ``sock`` is closed."""
    listener = _Listener(app, sock, request_timeout, connections)
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
