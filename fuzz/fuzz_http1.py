"""Fuzz the guest plane's HTTP/1.1 server: raw bytes a client sends on one connection.

Each input is what one client sends to ``azimds.serving.protocol``. Its first byte says how the
rest arrives:

- bit 0: the client then shuts its sending side (``eof_received``);
- bit 1: the event loop runs between reads (a slow client), not only after the last one;
- bit 2: a client slow to read: each write pauses writing (``pause_writing``) until the loop's
  next turn (``resume_writing``);
- bits 3 to 7: how the bytes split into reads: 0 one read; 31 a read per byte for the first
  256 bytes, then one read (a head is re-read on every read, so time grows with the square of
  the reads); 30 reads of 7 bytes; 29 the bytes repeated past ``MAX_REQUEST_HEAD``
  (pipelined requests, or one head too long) in reads of 4000 bytes; 28 the last byte repeated past
  ``GuestApp.body_limit`` (a body too long) in reads of 16 KiB; else up to seven points drawn
  by a PRNG seeded with these bits.

A fresh ``_Connection`` serves the ``GuestApp`` for the example VM (as fuzz_pipeline.py builds
it; its memo, and the server's cache of heads, emptied for each input) over a fake transport
that records what the server does with it: the bytes written, ``close()``, ``write_eof()``,
``abort()``, pausing and resuming. No socket is used and no timer fires (the request timeout is
an hour). The loop runs until the server waits for the client (an answer that needs a task has
gone out, or the app waits for a body); then the client goes (``connection_lost``) and whatever
is left, tasks and timers, is cancelled, so nothing carries over to the next input.

A crash is an exception escaping the server (from a callback or a task), anything
``azimds.serving.protocol`` logs at ERROR (the app raised: a 500), or a broken invariant:

- what was written parses as HTTP/1.1 answers and nothing else: ``HTTP/1.1 NNN Reason``,
  header lines (each name once), a body of ``content-length`` bytes (none for HEAD); a
  ``100 Continue`` has neither headers nor body; every other answer has a ``date``;
- statuses 100, 200, 400, 403, 404, 405, 408, 431 only; a 100 only for a request with
  ``Expect: 100-continue``, once, before its answer;
- one answer per request the app was handed, in order (only the last may still wait for its
  body), and at most the server's own refusal after them;
- a 400 or 431 with exactly ``connection``, ``content-length`` and ``date`` (the server's
  refusal) is the last answer, and so is any ``connection: close``: the server then closes, or
  half-closes with the close scheduled; nothing is written after ``close()`` or ``write_eof()``;
- after the client's EOF the server closes once its answers are out; an open connection left
  idle reads on (its reading not paused) and has its head timer; a closed one leaves its
  listener.

    python fuzz/fuzz_http1.py -max_total_time=60      # docs/reliability.md
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import re
import socket
import sys
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar, TypeVarTuple

import atheris
from harness import main

with atheris.instrument_imports(include=["azimds"]):
    from azimds.guest.app import GuestApp
    from azimds.guest.callers import SingleVM
    from azimds.kit.fleet import example_fleet, services
    from azimds.serving import protocol
    from azimds.serving.exchange import Exchange
    from azimds.serving.limits import MAX_REQUEST_HEAD
    from azimds.store.memory import MemoryStore

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

ALLOWED = {100, 200, 400, 403, 404, 405, 408, 431}
REFUSAL_HEADERS = {"connection", "content-length", "date"}  # the server's own refusals
REQUEST_TIMEOUT = 3600.0  # seconds: no head or body timer fires during an input
QUICK_TURNS = 16  # turns of the loop before waiting on tasks (a thread: an approval's write)
WAIT = 0.01  # seconds a wait on tasks lasts at most
HANG = 5.0  # seconds the server may take to answer what it has before it counts as hung

EOF, SETTLE_BETWEEN, SLOW_READER = 1, 2, 4
ONE_READ, BODY_FLOOD, HEAD_FLOOD, SHORT_READS, BYTE_READS = 0, 28, 29, 30, 31
BYTE_READ_LIMIT = 256  # bytes read one at a time, at most
SHORT_READ = 7  # bytes

_STATUS = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) ([^\r\n]+)")
_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+): ([\t\x20-\x7e\x80-\xff]*)")
_DATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov"
    r"|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)

STORE = MemoryStore()
FLEET = example_fleet(STORE)
SERVICES = services(STORE)
APP = GuestApp(FLEET, SingleVM(), SERVICES)


class Loop(asyncio.SelectorEventLoop):
    """The event loop, keeping the timers and tasks of the current input (to check and
    cancel them) and what its exception handler was given (an exception in a callback)."""

    def __init__(self) -> None:
        super().__init__()
        self.timers: list[tuple[Callable[..., object], asyncio.TimerHandle]] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.set_exception_handler(lambda loop, context: self.errors.append(context))

    def call_at(
        self,
        when: float,
        callback: Callable[[*Ts], object],
        *args: *Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        handle = super().call_at(when, callback, *args, context=context)
        self.timers.append((callback, handle))
        return handle

    def create_task(
        self,
        coro: Generator[Any, None, T] | Coroutine[Any, Any, T],
        *,
        name: object = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[T]:
        task = super().create_task(coro, name=name, context=context)
        self.tasks.append(task)
        return task

    def forget(self) -> None:
        self.timers.clear()
        self.tasks.clear()
        self.errors.clear()


LOOP = Loop()
UNUSED = socket.socket()  # what a _Listener needs: a bound socket (it is never listened on)
UNUSED.bind(("127.0.0.1", 0))


class ErrorLog(logging.Handler):
    """What ``azimds.serving.protocol`` logs at ERROR or above: the server's account of a 500."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


ERRORS = ErrorLog()
logging.getLogger("azimds.serving.protocol").addHandler(ERRORS)


class Transport:
    """A stream transport that records what the server does with it. Like asyncio's, it
    tells the protocol it is lost on the loop's next turn after ``close()`` or ``abort()``,
    drops writes once lost, and (for a slow reader) pauses the protocol's writing when
    written to, resuming it on the next turn."""

    def __init__(self, loop: Loop, slow_reader: bool) -> None:
        self.loop = loop
        self.slow_reader = slow_reader
        self.protocol: protocol._Connection | None = None
        self.written = bytearray()
        self.late: list[bytes] = []  # written after close() or write_eof()
        self.closed = False  # close() or abort()
        self.aborted = False
        self.eof_written = False
        self.lost = False  # connection_lost was called
        self.lost_due = False  # ... or is about to be
        self.drain_due = False
        self.reading_paused = False
        self.writing_paused = False

    def write(self, data: bytes) -> None:
        assert isinstance(data, (bytes, bytearray, memoryview)), data
        if self.closed or self.eof_written:
            self.late.append(bytes(data))
            return
        if self.lost:
            return  # the client has gone: asyncio drops what is written
        self.written += data
        if self.slow_reader and not self.writing_paused:
            assert self.protocol is not None
            self.writing_paused = self.drain_due = True
            self.protocol.pause_writing()
            self.loop.call_soon(self._drain)

    def _drain(self) -> None:
        self.drain_due = False
        if self.writing_paused and not self.lost:
            self.writing_paused = False
            assert self.protocol is not None
            self.protocol.resume_writing()

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0  # what is written is taken at once (a slow reader pauses writing instead)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._lose()

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def _lose(self) -> None:
        if not (self.lost or self.lost_due):
            self.lost_due = True
            self.loop.call_soon(self.connection_lost)

    def connection_lost(self) -> None:
        self.lost_due = False
        if not self.lost:
            self.lost = True
            assert self.protocol is not None
            self.protocol.connection_lost(None)

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return None


@dataclass
class Request:
    """What the app was handed: the method, and whether the client expects 100 Continue."""

    method: str
    expects_continue: bool


class Recorded:
    """The app, noting each request the server hands it."""

    def __init__(self, app: GuestApp) -> None:
        self.app = app
        self.body_limit = app.body_limit
        self.requests: list[Request] = []

    def handle(self, exchange: Exchange) -> Any:
        expects = "100-continue" in exchange.headers.get_all("expect")
        self.requests.append(Request(exchange.method, expects))
        return self.app.handle(exchange)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes


def splits(data: bytes, pattern: int) -> list[bytes]:
    """``data`` as the reads a client's bytes arrive in (none empty)."""
    if len(data) < 2 or pattern == ONE_READ:
        return [data] if data else []
    if pattern == BYTE_READS:
        reads = [data[i : i + 1] for i in range(min(len(data), BYTE_READ_LIMIT))]
        return [*reads, data[BYTE_READ_LIMIT:]] if len(data) > BYTE_READ_LIMIT else reads
    if pattern == SHORT_READS:
        return [data[i : i + SHORT_READ] for i in range(0, len(data), SHORT_READ)]
    if pattern == HEAD_FLOOD:
        data *= MAX_REQUEST_HEAD // len(data) + 2
        return [data[i : i + 4000] for i in range(0, len(data), 4000)]
    if pattern == BODY_FLOOD:
        data += data[-1:] * (APP.body_limit + 1024)
        return [data[i : i + 16384] for i in range(0, len(data), 16384)]
    count = min(pattern % 7 + 1, len(data) - 1)
    points = sorted(random.Random(pattern).sample(range(1, len(data)), count))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def waits_for_body(connection: protocol._Connection) -> bool:
    """The app waits for a body the client has not sent (yet)."""
    body = connection.body
    return body is not None and body.waiter is not None and not body.waiter.done()


async def settle(connection: protocol._Connection, transport: Transport) -> None:
    """Run the loop until the server waits for the client."""
    current = asyncio.current_task()
    deadline = LOOP.time() + HANG
    turn = 0
    while LOOP.time() < deadline:
        turn += 1
        pending = [task for task in LOOP.tasks if task is not current and not task.done()]
        due = transport.drain_due or transport.lost_due or connection.waiting_turn
        if not due and (not pending or (len(pending) == 1 and waits_for_body(connection))):
            assert connection.closing or not connection.busy or pending, "busy with no task"
            return
        if turn <= QUICK_TURNS or due or not pending:
            await asyncio.sleep(0)
        else:
            await asyncio.wait(pending, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    raise AssertionError(f"no answer within {HANG:g} s: the server hangs")


def parse(data: bytes, requests: list[Request]) -> list[Answer]:
    """The answers in ``data``, checked against the requests the app was handed."""
    answers: list[Answer] = []
    final = 0  # answers to requests so far (not counting 100 Continue)
    continued = False  # a 100 Continue went out for request ``final``
    position = 0
    while position < len(data):
        end = data.find(b"\r\n\r\n", position)
        assert end >= 0, f"a partial answer: {data[position:][:300]!r}"
        status_line, *lines = data[position:end].split(b"\r\n")
        match = _STATUS.fullmatch(status_line)
        assert match, f"not a status line: {status_line!r}"
        status = int(match[1])
        assert status in ALLOWED, f"status {status}: {data[position:][:300]!r}"
        assert match[2].decode() == HTTPStatus(status).phrase, status_line
        headers: dict[str, str] = {}
        for line in lines:
            header = _HEADER.fullmatch(line)
            assert header, f"not a header line: {line!r} in {status_line!r}"
            name = header[1].decode().lower()
            assert name not in headers, f"{name} twice in {data[position:end]!r}"
            headers[name] = header[2].decode("latin-1")
        position = end + 4
        if status == 100:
            assert not headers, f"a 100 Continue with headers: {headers}"
            assert final < len(requests), "a 100 Continue for no request"
            assert requests[final].expects_continue, "a 100 Continue not asked for"
            assert not continued, "a second 100 Continue for a request"
            continued = True
            answers.append(Answer(status, headers, b""))
            continue
        assert "date" in headers and _DATE.fullmatch(headers["date"]), headers
        length = headers.get("content-length", "")
        assert length.isdigit(), f"content-length {length!r} in {headers}"
        if final < len(requests) and requests[final].method == "HEAD":
            body = b""
        else:
            body = data[position : position + int(length)]
            assert len(body) == int(length), f"a body cut short: {data[end:][:300]!r}"
        position += len(body)
        answers.append(Answer(status, headers, body))
        final += 1
        continued = False
    return answers


def check_transcript(
    transport: Transport, connection: protocol._Connection, requests: list[Request], eof: bool
) -> None:
    """What the client got, once the server waits for it."""
    assert not transport.late, f"written after close() or write_eof(): {transport.late!r}"
    answers = parse(bytes(transport.written), requests)
    finals = [answer for answer in answers if answer.status != 100]
    waiting = waits_for_body(connection)
    # One answer per request (the last may wait for its body), then at most a refusal.
    assert len(requests) - waiting <= len(finals) <= len(requests) + 1, (
        f"{len(finals)} answers to {len(requests)} requests: {requests} {answers}"
    )
    closing = transport.closed or (
        transport.eof_written and any(cb == connection._close_transport for cb, _ in LOOP.timers)
    )
    for index, answer in enumerate(finals):
        refusal = answer.status in (400, 431) and set(answer.headers) == REFUSAL_HEADERS
        if refusal:
            assert answer.headers["connection"] == "close", answer
            assert answer.headers["content-length"] == "0", answer
        if refusal or answer.headers.get("connection") == "close":
            assert index == len(finals) - 1 and answers[-1] is answer, ("not last", answers)
            assert closing, f"the connection stays open after {answer}"
    if len(finals) == len(requests) + 1:
        last = finals[-1]
        assert last.status in (400, 431) and set(last.headers) == REFUSAL_HEADERS, answers
    if eof and not waiting:
        assert closing, "the client sent EOF and got its answers, but the connection stays open"
    if not connection.closing and not transport.closed:
        assert not transport.reading_paused, "an open connection stopped reading"
        if not connection.busy:
            assert connection.timer is not None, "an idle connection without its head timer"


async def converse(data: bytes, app: Recorded, transport: Transport) -> None:
    control, data = data[0], data[1:]
    listener = protocol._Listener(app, UNUSED, REQUEST_TIMEOUT, 1)
    listener.accepting = True  # as if accepting: a closed connection must not start it
    connection = protocol._Connection(listener, ("10.144.133.132", 40000))
    transport.protocol = connection
    listener.open.add(connection)
    connection.connection_made(transport)  # type: ignore[arg-type]
    try:
        await send(connection, transport, control, data)
        check_reports()
        check_transcript(transport, connection, app.requests, bool(control & EOF))
        await leave(connection, transport, listener)
        check_reports()
    except BaseException:
        check_reports()  # what the server logged explains a broken invariant best
        raise
    finally:
        current = asyncio.current_task()
        left = [task for task in LOOP.tasks if task is not current and not task.done()]
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left, timeout=1.0)


async def send(
    connection: protocol._Connection, transport: Transport, control: int, data: bytes
) -> None:
    """The client's reads, then its EOF if ``control`` says so; returns once the server waits
    for the client."""
    for read in splits(data, control >> 3):
        if transport.closed:
            return  # asyncio stops reading when the transport closes
        if control & SETTLE_BETWEEN or transport.reading_paused:
            await settle(connection, transport)
            assert not transport.reading_paused or transport.closed, "reading stays paused"
            if transport.closed:
                return
        connection.data_received(read)
    if control & EOF and not transport.closed:
        if control & SETTLE_BETWEEN or transport.reading_paused:
            await settle(connection, transport)
            assert not transport.reading_paused or transport.closed, "reading stays paused"
        if not transport.closed:
            connection.eof_received()
    await settle(connection, transport)


async def leave(
    connection: protocol._Connection, transport: Transport, listener: protocol._Listener
) -> None:
    """The client goes (its connection is lost): what is left of the exchange must wind down."""
    if not (transport.lost or transport.lost_due):
        transport.lost_due = True
        transport.connection_lost()
    await settle(connection, transport)
    current = asyncio.current_task()
    left = [task for task in LOOP.tasks if task is not current and not task.done()]
    assert not left, f"tasks still running after the client has gone: {left}"
    assert not transport.late, f"written after close() or write_eof(): {transport.late!r}"
    assert connection not in listener.open, "a lost connection stays in its listener"


def check_reports() -> None:
    """Nothing logged at ERROR by the HTTP/1.1 server, reported by the loop or raised by a task."""
    for record in ERRORS.records:
        raise AssertionError(
            f"azimds.serving.protocol logged an error: {logging.Formatter().format(record)}"
        )
    for context in LOOP.errors:
        exception = context.get("exception")
        if exception is not None:
            raise exception
        raise AssertionError(f"the event loop reported: {context}")
    for task in LOOP.tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    LOOP.forget()
    ERRORS.records.clear()
    APP.replace_fleet(FLEET)  # an empty memo: each input is answered as if it came first
    protocol._known_heads.clear()  # and each head is read afresh
    app = Recorded(APP)
    transport = Transport(LOOP, slow_reader=bool(data[0] & SLOW_READER))
    try:
        LOOP.run_until_complete(converse(data, app, transport))
    finally:
        for _, timer in LOOP.timers:
            timer.cancel()


if __name__ == "__main__":
    main("http1", test_one_input, smoke_runs=20_000)
    sys.exit(0)
