"""The guest plane's own HTTP/1.1 server (azimds.serving.protocol) against a real ``azimds serve``.

What a client sees of the connection handling the server took over from granian: a request
followed by a half-close is answered, pipelined requests are answered in order, HTTP/1.0
keep-alive, HEAD without body bytes, the server's own 400 for bare LF line ends, a fault
rule's TCP reset, and the ``date`` and ``x-ms-request-id`` headers. Malformed input in
general is in test_malformed_http.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import pytest

from azimds.guest import errors
from azimds.serving import listeners as serving
from azimds.serving import protocol
from azimds.serving.exchange import Exchange
from tests.admin.support import admin
from tests.conftest import ServerProcess
from tests.http import get
from tests.serving.raw_http import (
    HOST,
    INSTANCE,
    MD,
    REFUSAL_HEADERS,
    TIMEOUT,
    Answer,
    converse,
    only,
    parse,
    read_all,
    request,
)

WAIT = 3.0  # how long a test waits for the server to close, at most
VERSIONS = "/metadata/versions"


class Node:
    def __init__(self, process: ServerProcess) -> None:
        self.process = process
        self.port = process.port
        self.normal: dict[str, bytes] = {}  # target -> the body it answered at the start
        for target in (VERSIONS, INSTANCE):
            reply = get(self.port, target)
            assert reply.status == 200, reply
            self.normal[target] = reply.body


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    # A process: bad input must not crash it; its exit code and output are read.
    process = ServerProcess("--request-timeout", str(TIMEOUT))
    yield Node(process)
    output = "".join(process.output)
    assert process.stop() == 0, output
    assert "Traceback" not in output, output
    assert "ERROR" not in output, output  # a fault's reset is no failure of the server


@pytest.fixture(autouse=True)
def still_serving(node: Node) -> Iterator[None]:
    yield
    assert node.process.proc.poll() is None, "".join(node.process.output)
    reply = get(node.port, VERSIONS)
    assert (reply.status, reply.body) == (200, node.normal[VERSIONS]), reply


def assert_ok(answer: Answer, body: bytes) -> None:
    assert (answer.version, answer.status, answer.body) == ("HTTP/1.1", 200, body), answer
    assert answer.headers["content-type"] == "application/json; charset=utf-8", answer


def connect(node: Node) -> socket.socket:
    return socket.create_connection(("127.0.0.1", node.port), timeout=WAIT)


def read_answer(sock: socket.socket) -> tuple[Answer, bytes]:
    """Read exactly one answer (headers and its content-length of body); returns it and any
    bytes that came after it."""
    sock.settimeout(WAIT)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")[1:]
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the whole body: {data!r}"
        rest += chunk
    [answer] = parse(head + b"\r\n\r\n" + rest[:length])
    return answer, rest[length:]


def only_answer(data: bytes) -> Answer:
    """The one answer ``data`` holds, whole."""
    [answer] = parse(data)
    return answer


def fresh(target: str) -> bytes:
    """``target`` with a parameter never sent before: an answer the memo does not hold."""
    return f"{target}&pad={uuid.uuid4().hex}".encode()


# --- 1. a half-close after the request ------------------------------------------------------


@pytest.mark.parametrize("target", [VERSIONS, INSTANCE])
def test_a_request_then_a_half_close_is_answered_then_closed(node: Node, target: str) -> None:
    """As ``nc -N`` sends: the whole request, then FIN. granian answered nothing."""
    raw = request(target.encode(), MD, close=False)
    conversation = converse(node.port, raw, half_close=True, wait=WAIT)
    assert_ok(only(conversation), node.normal[target])
    assert conversation.elapsed < TIMEOUT, conversation


def test_a_request_the_memo_cannot_answer_then_a_half_close_is_answered(node: Node) -> None:
    """An answer the app must await (a query never seen before): the FIN comes meanwhile."""
    target = fresh(INSTANCE)
    conversation = converse(node.port, request(target, MD, close=False), True, WAIT)
    assert_ok(only(conversation), node.normal[INSTANCE])


def test_half_a_head_then_a_half_close_is_closed_without_an_answer(node: Node) -> None:
    raw = request(VERSIONS.encode(), MD, close=False)[:-2]  # no blank line
    conversation = converse(node.port, raw, half_close=True, wait=WAIT)
    assert conversation.closed and conversation.answers == [], conversation
    assert conversation.elapsed < TIMEOUT, conversation


def test_pipelined_requests_then_a_half_close_are_all_answered(node: Node) -> None:
    raw = request(VERSIONS.encode(), MD, close=False) * 2
    conversation = converse(node.port, raw, half_close=True, wait=WAIT)
    assert conversation.closed, conversation
    assert [(a.status, a.body) for a in conversation.answers] == [
        (200, node.normal[VERSIONS]),
        (200, node.normal[VERSIONS]),
    ]


# --- 2. pipelining --------------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order_then_closed(node: Node) -> None:
    raw = (
        request(VERSIONS.encode(), close=False)  # no Metadata header: the 400
        + request(INSTANCE.encode(), MD, close=False)
        + request(VERSIONS.encode(), MD)  # Connection: close
    )
    conversation = converse(node.port, raw, wait=WAIT)
    assert conversation.closed, conversation
    first, second, third = conversation.answers
    assert (first.status, first.body) == (
        400,
        errors.Family.INSTANCE.metadata_header_missing().body,
    )
    assert_ok(second, node.normal[INSTANCE])
    assert_ok(third, node.normal[VERSIONS])
    assert "connection" not in first.headers and "connection" not in second.headers
    assert third.headers["connection"] == "close"
    ids = [a.headers["x-ms-request-id"] for a in conversation.answers]
    assert len(set(ids)) == 3, ids
    assert conversation.elapsed < TIMEOUT, conversation


def test_pipelined_answers_the_app_awaits_keep_their_order(node: Node) -> None:
    targets = [fresh(INSTANCE), VERSIONS.encode(), fresh(INSTANCE), VERSIONS.encode()]
    raw = b"".join(request(t, MD, close=False) for t in targets[:-1]) + request(targets[-1], MD)
    conversation = converse(node.port, raw, wait=WAIT)
    assert conversation.closed, conversation
    bodies = [node.normal[INSTANCE], node.normal[VERSIONS]] * 2
    assert [(a.status, a.body) for a in conversation.answers] == [(200, b) for b in bodies]


def test_requests_after_connection_close_are_not_answered(node: Node) -> None:
    raw = request(VERSIONS.encode(), MD) + request(INSTANCE.encode(), MD, close=False)
    conversation = converse(node.port, raw, wait=WAIT)
    assert_ok(only(conversation), node.normal[VERSIONS])
    assert conversation.answers[0].headers["connection"] == "close"


def test_a_kept_alive_connection_serves_requests_one_after_another(node: Node) -> None:
    with connect(node) as sock:
        for target in (VERSIONS, INSTANCE, VERSIONS):
            sock.sendall(request(target.encode(), MD, close=False))
            answer, extra = read_answer(sock)
            assert_ok(answer, node.normal[target])
            assert extra == b""
        sock.sendall(request(VERSIONS.encode(), MD))
        answer, extra = read_answer(sock)
        assert_ok(answer, node.normal[VERSIONS])
        assert extra == b""
        assert read_all(sock, WAIT) == (b"", True)


def test_an_idle_kept_alive_connection_closes_after_the_request_timeout(node: Node) -> None:
    with connect(node) as sock:
        sock.sendall(request(VERSIONS.encode(), MD, close=False))
        answer, _ = read_answer(sock)
        assert_ok(answer, node.normal[VERSIONS])
        started = time.monotonic()
        assert read_all(sock, TIMEOUT + WAIT) == (b"", True)
        assert TIMEOUT * 0.8 <= time.monotonic() - started < TIMEOUT + 1.5


# --- 3. HTTP/1.0 ----------------------------------------------------------------------------


def http_1_0(target: bytes, *headers: bytes) -> bytes:
    return b"GET " + target + b" HTTP/1.0\r\n" + HOST + MD + b"".join(headers) + b"\r\n"


def test_http_1_0_is_answered_and_closed(node: Node) -> None:
    conversation = converse(node.port, http_1_0(VERSIONS.encode()), wait=WAIT)
    answer = only(conversation)
    assert_ok(answer, node.normal[VERSIONS])
    assert answer.headers["connection"] == "close"
    assert conversation.elapsed < TIMEOUT, conversation


def test_http_1_0_with_keep_alive_stays_open(node: Node) -> None:
    keep_alive = b"Connection: keep-alive\r\n"
    with connect(node) as sock:
        sock.sendall(http_1_0(VERSIONS.encode(), keep_alive))
        answer, extra = read_answer(sock)
        assert_ok(answer, node.normal[VERSIONS])
        assert answer.headers["connection"] == "keep-alive"
        assert extra == b""
        sock.sendall(http_1_0(INSTANCE.encode(), keep_alive))  # the connection is still open
        answer, extra = read_answer(sock)
        assert_ok(answer, node.normal[INSTANCE])
        assert answer.headers["connection"] == "keep-alive"
        sock.sendall(http_1_0(VERSIONS.encode()))  # without keep-alive: the last one
        answer, extra = read_answer(sock)
        assert_ok(answer, node.normal[VERSIONS])
        assert answer.headers["connection"] == "close"
        assert (extra, *read_all(sock, WAIT)) == (b"", b"", True)


# --- 4. HEAD --------------------------------------------------------------------------------


def test_head_is_the_iis_invalid_verb_400_with_no_body_bytes(node: Node) -> None:
    expected = errors.iis_invalid_verb("HEAD")
    raw = request(VERSIONS.encode(), MD, method=b"HEAD", close=False) + request(
        VERSIONS.encode(), MD
    )
    with connect(node) as sock:
        sock.sendall(raw)
        data, closed = read_all(sock, WAIT)
    assert closed
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, data
    # The HEAD's answer: the 400's head, content-length and all, then no body at all.
    [answer] = parse(head + b"\r\n\r\n" + b"\0" * len(expected.body))
    assert answer.status == 400, answer
    assert answer.headers["server"] == "Microsoft-IIS/10.0"
    assert answer.headers["content-type"] == "text/xml; charset=utf-8"
    assert answer.headers["content-length"] == str(len(expected.body))
    assert "x-ms-request-id" not in answer.headers  # IIS's, not IMDS's
    assert "connection" not in answer.headers
    # What follows on the wire is the next answer, whole: no body bytes came between.
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n"), rest[:200]
    assert_ok(only_answer(rest), node.normal[VERSIONS])


def test_head_with_connection_close_is_answered_and_closed(node: Node) -> None:
    expected = errors.iis_invalid_verb("HEAD")
    with connect(node) as sock:
        sock.sendall(request(INSTANCE.encode(), MD, method=b"HEAD"))
        data, closed = read_all(sock, WAIT)
    assert closed
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert (sep, rest) == (b"\r\n\r\n", b""), data
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n"), head
    assert f"content-length: {len(expected.body)}".encode() in head.split(b"\r\n")
    assert b"connection: close" in head.split(b"\r\n")


# --- 5. bare LF line ends -------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /metadata/versions HTTP/1.1\nHost: x\nMetadata: true\n\n",
        b"GET /metadata/versions HTTP/1.1\r\nHost: x\nMetadata: true\r\n\r\n",
        b"GET /metadata/versions HTTP/1.1\nHost: x\r\nMetadata: true\r\n\r\n",
    ],
    ids=["everywhere", "in a header", "after the request line"],
)
def test_bare_lf_line_ends_get_the_servers_400(node: Node, raw: bytes) -> None:
    conversation = converse(node.port, raw, wait=WAIT)
    answer = only(conversation)
    assert (answer.version, answer.status, answer.body) == ("HTTP/1.1", 400, b""), answer
    assert set(answer.headers) == REFUSAL_HEADERS, answer
    assert answer.headers["connection"] == "close"
    assert answer.headers["content-length"] == "0"
    assert conversation.elapsed < TIMEOUT, conversation


# --- 6. a fault rule's reset ----------------------------------------------------------------


@contextlib.contextmanager
def one_reset(node: Node) -> Iterator[None]:
    """A fault rule that resets the next instance request's connection, removed after."""
    client = admin(node.process)
    rule = client.add_fault({"path": "/metadata/instance", "actions": ["reset"], "count": 1})
    try:
        yield
    finally:
        client.remove_fault(rule["id"])


def test_a_reset_fault_is_a_tcp_reset(node: Node) -> None:
    with one_reset(node):
        with connect(node) as sock:
            sock.sendall(request(INSTANCE.encode(), MD, close=False))
            sock.settimeout(WAIT)
            with pytest.raises(ConnectionResetError):
                sock.recv(65536)
        # The rule is used up: the next request is answered.
        after = only(converse(node.port, request(INSTANCE.encode(), MD), wait=WAIT))
        assert_ok(after, node.normal[INSTANCE])


def test_a_reset_fault_drops_what_was_pipelined_after_it(node: Node) -> None:
    with one_reset(node):
        raw = request(VERSIONS.encode(), MD, close=False) + request(INSTANCE.encode(), MD)
        with connect(node) as sock:
            sock.sendall(raw)
            answer, extra = read_answer(sock)  # the first answer comes before the reset
            assert_ok(answer, node.normal[VERSIONS])
            assert extra == b""
            sock.settimeout(WAIT)
            with pytest.raises(ConnectionResetError):
                sock.recv(65536)


# --- 7. date and x-ms-request-id ------------------------------------------------------------


def assert_recent_date(answer: Answer) -> None:
    sent = parsedate_to_datetime(answer.headers["date"])
    assert answer.headers["date"].endswith(" GMT"), answer
    assert abs((datetime.now(UTC) - sent).total_seconds()) < 5, answer


@pytest.mark.parametrize(
    ("raw", "request_id"),
    [
        (request(VERSIONS.encode(), MD), True),
        (request(INSTANCE.encode(), MD), True),
        (request(INSTANCE.encode()), True),  # the missing Metadata header's 400
        (request(b"/nothing", MD), False),  # IIS's 404
        (request(VERSIONS.encode(), MD, method=b"BREW"), False),  # IIS's 400
        (b"GET /metadata/versions HTTP/1.1\nHost: x\n\n", False),  # the server's own 400
    ],
    ids=["versions", "instance", "no Metadata", "IIS 404", "IIS verb", "server 400"],
)
def test_answers_carry_a_date_and_imds_answers_a_request_id(
    node: Node, raw: bytes, request_id: bool
) -> None:
    answer = only(converse(node.port, raw, wait=WAIT))
    assert_recent_date(answer)
    if request_id:
        assert answer.headers["server"] == "IMDS/150.870.65.1854"
        rid = answer.headers["x-ms-request-id"]
        assert len(rid) == 36 and rid.count("-") == 4, rid
    else:
        assert "x-ms-request-id" not in answer.headers, answer


def test_request_ids_differ_and_the_date_follows_the_clock(node: Node) -> None:
    answers = [
        only(converse(node.port, request(VERSIONS.encode(), MD), wait=WAIT)) for _ in range(3)
    ]
    assert len({a.headers["x-ms-request-id"] for a in answers}) == 3
    time.sleep(1.1)
    later = only(converse(node.port, request(VERSIONS.encode(), MD), wait=WAIT))
    assert parsedate_to_datetime(later.headers["date"]) > parsedate_to_datetime(
        answers[0].headers["date"]
    )


# --- addresses --------------------------------------------------------------------------------


class EchoClient:
    """An app that answers with the client's host, as the guest app sees it."""

    body_limit = 0

    def handle(self, exchange: Exchange) -> None:
        host = exchange.client.rpartition(":")[0]
        exchange.response_bytes(200, (), host.encode())


def test_an_ipv4_client_of_a_wildcard_ipv6_listener_is_seen_by_its_ipv4_address() -> None:
    """``[::]:PORT`` takes IPv4 too; source-ip mode must see 127.0.0.1, not ::ffff:127.0.0.1."""

    async def scenario() -> bytes:
        sock = serving.claim_listener("::", 0)
        port = sock.getsockname()[1]
        stop = asyncio.Event()
        listening = asyncio.create_task(protocol.serve(EchoClient(), sock, stop, WAIT, 8))
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), WAIT)
        writer.close()
        stop.set()
        await listening
        return answer

    (answer,) = parse(asyncio.run(scenario()))
    assert (answer.status, answer.body) == (200, b"127.0.0.1")
