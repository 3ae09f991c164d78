"""Malformed HTTP against a real ``azimds serve``: never a 500, never a crash.

Raw bytes over real sockets to one server process (``--request-timeout`` short, so slow
clients are dropped quickly). Every malformed request gets a documented 4xx, or, where HTTP
cannot answer at all (an HTTP/2 preface, a head that never finishes), the connection closes.
After every test the process must be alive and answer normal requests byte for byte as it did
at the start, and at the end its output must hold no traceback. What each class of input gets,
and the limits, are in docs/behaviour.md, "Malformed requests and limits".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import selectors
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from azimds.admin.client import AdminError
from azimds.guest import errors
from azimds.guest.events import MAX_BODY
from azimds.guest.query import MAX_QUERY_LENGTH, MAX_QUERY_PARAMETERS
from azimds.serving import asgi
from azimds.serving import listeners as serving
from azimds.serving.limits import MAX_CONNECTIONS, MAX_REQUEST_HEAD
from tests.admin.support import admin
from tests.conftest import ServerProcess
from tests.http import get
from tests.serving.raw_http import (
    CLOSE,
    HOST,
    INSTANCE,
    LATE,
    MD,
    REFUSAL_HEADERS,
    TIMEOUT,
    Answer,
    Conversation,
    converse,
    only,
    parse,
    read_all,
    request,
)

EVENTS = b"/metadata/scheduledevents?api-version=2020-07-01"
METADATA_400 = b'{ "error": "Bad request: . Required metadata header not specified" }'
IDENTITY_METADATA_400 = (
    b'{"error":"invalid_request","error_description":"Required metadata header not specified"}'
)
QUERY_400 = b'{ "error": "Unexpected request. Please check the query parameters and retry." }'
IDENTITY_QUERY_400 = (
    b'{"error":"invalid_request","error_description":'
    b'"Unexpected request. Please check the query parameters and retry."}'
)
NOT_FOUND_404 = b'{ "error": "Not found" }'
MALFORMED_BODY_400 = (
    b'{ "error": "Bad request. The body must be '
    b'{\\"StartRequests\\":[{\\"EventId\\":\\"...\\"}]}" }'
)
BODY_TOO_LARGE_400 = b'{ "error": "Request body is larger than MaxBodyLength: 65536" }'


# --- talking to the server ----------------------------------------------------------------


def assert_http_refusal(conversation: Conversation, status: int) -> None:
    """The server's own refusal of what it cannot parse: status, an empty body, closed."""
    answer = only(conversation)
    assert (answer.status, answer.body) == (status, b""), answer
    assert set(answer.headers) == REFUSAL_HEADERS, answer
    assert answer.headers["connection"] == "close"


def assert_body_refusal(conversation: Conversation, status: int) -> None:
    """The refusal of a body that stopped short (serving/exchange.py): empty, closed."""
    answer = only(conversation)
    assert (answer.status, answer.body) == (status, b""), answer
    assert answer.headers["connection"] == "close"
    assert answer.headers["content-length"] == "0"


def assert_imds(answer: Answer, status: int, body: bytes) -> None:
    assert (answer.status, answer.body) == (status, body), answer
    assert answer.headers["server"] == "IMDS/150.870.65.1854"
    assert answer.headers["content-type"] == "application/json; charset=utf-8"


def assert_iis_verb(answer: Answer, method: str) -> None:
    expected = errors.iis_invalid_verb(method)
    assert (answer.status, answer.body) == (400, expected.body), answer
    assert answer.headers["server"] == "Microsoft-IIS/10.0"


# --- the server ---------------------------------------------------------------------------


@dataclass
class Node:
    process: ServerProcess
    normal: dict[str, bytes]  # target -> the body it answered at the start

    @property
    def port(self) -> int:
        return self.process.port

    def assert_serving(self) -> None:
        """Alive, and answering normal requests exactly as at the start."""
        assert self.process.proc.poll() is None, "".join(self.process.output)
        for target, body in self.normal.items():
            reply = get(self.port, target)
            assert (reply.status, reply.body) == (200, body), (target, reply)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    # A process: a malformed request must not crash it; its exit code and output are read.
    process = ServerProcess("--request-timeout", str(TIMEOUT), "--clock", "manual")
    normal = {}
    for target in ("/metadata/versions", INSTANCE):
        reply = get(process.port, target)
        assert reply.status == 200, reply
        normal[target] = reply.body
    yield Node(process, normal)
    output = "".join(process.output)
    assert process.stop() == 0, output
    assert "Traceback" not in output, output  # no request made the app fail (Guarded logs)


@pytest.fixture(autouse=True)
def still_serving(node: Node) -> Iterator[None]:
    yield
    node.assert_serving()


# --- broken request lines: the server's 400, empty, and the connection closes -------------

GET_VERSIONS = b"GET /metadata/versions HTTP/1.1\r\n"


def head(first: bytes, *headers: bytes) -> bytes:
    """A request line (given with its line end, or without one) and headers, then the blank
    line."""
    return first + b"".join(headers) + b"\r\n"


BROKEN = {
    "garbage": b"garbage\r\n\r\n",
    "binary": bytes(range(256)) + b"\r\n\r\n",
    "no version": head(b"GET /metadata/versions\r\n", HOST, MD),
    "HTTP/0.9": b"GET /metadata/versions\r\n",
    "HTTP/3.0": head(b"GET /metadata/versions HTTP/3.0\r\n", HOST, MD),
    "HTTP/1.1 in lower case": head(b"GET /metadata/versions http/1.1\r\n", HOST, MD),
    "no target": head(b"GET HTTP/1.1\r\n", HOST, MD),
    "a separator in the method": head(b"GE(T /metadata/versions HTTP/1.1\r\n", HOST, MD),
    "an @ in the method": head(b"FOO@BAR /metadata/versions HTTP/1.1\r\n", HOST, MD),
    "CR without LF after the request line": head(b"GET /metadata/versions HTTP/1.1\r", HOST, MD),
    "CR without LF everywhere": b"GET /metadata/versions HTTP/1.1\rHost: x\rMetadata: true\r\r",
    "CR without LF in a header": head(GET_VERSIONS, b"Host: x\rMetadata: true\r\n"),
    "NUL in the path": head(b"GET /metadata/ver\x00sions HTTP/1.1\r\n", HOST, MD),
    "NUL in the method": head(b"G\x00ET /metadata/versions HTTP/1.1\r\n", HOST, MD),
    "NUL in a header value": head(GET_VERSIONS, HOST, b"Metadata: tr\x00ue\r\n"),
    "a byte that is no UTF-8 in the path": head(b"GET /metadata/versions\xff HTTP/1.1\r\n", HOST),
    "a byte that is no UTF-8 in the query": head(
        b"GET /metadata/instance?api-version=2021-02-01&x=\xff\xfe HTTP/1.1\r\n", HOST, MD
    ),
    "a space in the path": head(b"GET /metadata/ver sions HTTP/1.1\r\n", HOST, MD),
    "a header without a colon": head(GET_VERSIONS, HOST, b"Metadata true\r\n"),
    "a space in a header name": head(GET_VERSIONS, HOST, b"Meta data: true\r\n"),
    "a space before the colon": head(GET_VERSIONS, HOST, b"Metadata : true\r\n"),
    "a folded header": head(GET_VERSIONS, HOST, MD, b" folded\r\n"),
    "Content-Length not a number": request(EVENTS, MD, b"Content-Length: abc\r\n", method=b"POST"),
    "Content-Length negative": request(EVENTS, MD, b"Content-Length: -1\r\n", method=b"POST"),
    "two Content-Lengths that differ": request(
        EVENTS, MD, b"Content-Length: 3\r\n", b"Content-Length: 4\r\n", method=b"POST", body=b"abcd"
    ),
    "Content-Length a list": request(EVENTS, MD, b"Content-Length: 1, 2\r\n", method=b"POST"),
    "Content-Length beyond 64 bits": request(
        EVENTS, MD, b"Content-Length: 99999999999999999999999\r\n", method=b"POST"
    ),
    "Transfer-Encoding other than chunked": request(
        EVENTS, MD, b"Transfer-Encoding: gzip\r\n", method=b"POST", body=b"abc"
    ),
    "a tab in the target": head(b"GET /metadata/ver\tsions HTTP/1.1\r\n", HOST, MD),
    "HTTP/1.1 without Host": head(GET_VERSIONS, MD),
    "two Host headers": head(GET_VERSIONS, HOST, HOST, MD),
    "two Host headers on HTTP/1.0": head(b"GET /metadata/versions HTTP/1.0\r\n", HOST, HOST, MD),
    "nine blank lines before the request": b"\r\n" * 9 + head(GET_VERSIONS, HOST, MD),
}
# Framing that two readers could take two ways: the smuggling levers (RFC 9112 6).
SMUGGLING = {
    "chunked then U+00A0": b"Transfer-Encoding: chunked\xa0\r\n",
    "U+0085 then chunked": b"Transfer-Encoding: \x85chunked\r\n",
    "chunked then a vertical tab": b"Transfer-Encoding: chunked\x0b\r\n",
    "chunked twice in a list": b"Transfer-Encoding: chunked, chunked\r\n",
    "chunked in two fields": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    "gzip, chunked": b"Transfer-Encoding: gzip, chunked\r\n",
    "an empty Transfer-Encoding": b"Transfer-Encoding: \r\n",
    "chunked and Content-Length": b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    "chunked and Content-Length 0x40": b"Transfer-Encoding: chunked\r\nContent-Length: 0x40\r\n",
    "chunked and Content-Length +5": b"Transfer-Encoding: chunked\r\nContent-Length: +5\r\n",
    "chunked and Content-Length -1": b"Transfer-Encoding: chunked\r\nContent-Length: -1\r\n",
    "chunked and Content-Length 5, 6": b"Transfer-Encoding: chunked\r\nContent-Length: 5, 6\r\n",
    "Content-Length +5": b"Content-Length: +5\r\n",
    "Content-Length 0x40": b"Content-Length: 0x40\r\n",
    "Content-Length 5, 5": b"Content-Length: 5, 5\r\n",
    "Content-Length with U+00A0": b"Content-Length: 5\xa0\r\n",
    "Content-Length in superscript digits": "Content-Length: \u00b9\r\n".encode("latin-1"),
}


@pytest.mark.parametrize("framing", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_ambiguous_framing_is_the_servers_400_and_closed(node: Node, framing: bytes) -> None:
    """One Transfer-Encoding, exactly ``chunked`` (only spaces and tabs trimmed), and never with
    Content-Length; Content-Length digits only: anything else is read two ways somewhere."""
    raw = request(EVENTS, MD, framing, method=b"POST", body=b"0\r\n\r\n", close=False)
    assert_http_refusal(converse(node.port, raw + request(b"/metadata/versions", MD)), 400)


def test_transfer_encoding_on_http_1_0_is_the_servers_400(node: Node) -> None:
    """HTTP/1.0 has no chunked encoding (RFC 9112 6.1): a reader could frame it either way."""
    raw = head(b"POST " + EVENTS + b" HTTP/1.0\r\n", HOST, MD, b"Transfer-Encoding: chunked\r\n")
    assert_http_refusal(converse(node.port, raw + b"0\r\n\r\n"), 400)


def test_a_few_blank_lines_before_a_request_are_skipped(node: Node) -> None:
    raw = b"\r\n" * 8 + request(b"/metadata/versions", MD, close=False) + b"\r\n" * 8
    conversation = converse(node.port, raw + request(b"/metadata/versions", MD))
    assert conversation.closed and len(conversation.answers) == 2, conversation
    for answer in conversation.answers:
        assert (answer.status, answer.body) == (200, node.normal["/metadata/versions"]), answer


@pytest.mark.parametrize("raw", BROKEN.values(), ids=BROKEN.keys())
def test_a_request_http_cannot_parse_is_400_and_closed(node: Node, raw: bytes) -> None:
    assert_http_refusal(converse(node.port, raw), 400)


def test_an_http2_preface_closes_the_connection_without_an_answer(node: Node) -> None:
    """The guest plane speaks HTTP/1.1 only, as the real service on port 80 does."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    settings_frame = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    conversation = converse(node.port, preface + settings_frame)
    assert conversation.closed and conversation.answers == [], conversation
    assert conversation.elapsed < TIMEOUT


@pytest.mark.parametrize(
    "upgrade",
    [
        b"Connection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n",
        b"Connection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    ],
    ids=["h2c", "websocket"],
)
def test_an_upgrade_request_is_answered_as_http_1_1(node: Node, upgrade: bytes) -> None:
    """No protocol switch: a normal answer."""
    raw = b"GET /metadata/versions HTTP/1.1\r\n" + HOST + MD + upgrade + b"\r\n"
    answer = only(converse(node.port, raw))
    assert (answer.status, answer.body) == (200, node.normal["/metadata/versions"]), answer


def test_an_empty_connection_and_blank_lines_close_without_an_answer(node: Node) -> None:
    for raw in (b"", b"\r\n\r\n\r\n"):
        conversation = converse(node.port, raw, half_close=True)
        assert conversation.closed and conversation.answers == [], (raw, conversation)


# --- methods and targets the app sees ------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "method"),
    [
        (b"BREW /metadata/versions HTTP/1.1", "BREW"),
        (b"A" * 2000 + b" /metadata/versions HTTP/1.1", "A" * 2000),
        (b"get /metadata/versions HTTP/1.1", "get"),
        (b"CONNECT 169.254.169.254:80 HTTP/1.1", "CONNECT"),
        (b"OPTIONS * HTTP/1.1", "OPTIONS"),
        (b"TRACE /metadata/versions HTTP/1.1", "TRACE"),
    ],
    ids=["BREW", "2000 letters", "lower case", "CONNECT", "OPTIONS *", "TRACE"],
)
def test_an_absurd_method_gets_the_iis_invalid_verb_400(
    node: Node, line: bytes, method: str
) -> None:
    answer = only(converse(node.port, line + b"\r\n" + HOST + MD + CLOSE + b"\r\n"))
    assert_iis_verb(answer, method)


def test_non_ascii_in_the_path_reaches_the_app_as_text(node: Node) -> None:
    # Percent-encoded, even when it is no UTF-8; raw, it is no URI (the server's 400).
    for target, path in (
        (b"/metadata/versions%C3%A9?api-version=2021-02-01", "/metadata/versionsé"),
        (b"/metadata/versions%FF?api-version=2021-02-01", "/metadata/versions\ufffd"),
    ):
        answer = only(converse(node.port, request(target, MD)))
        assert_imds(answer, 404, errors.Family.INSTANCE.api_not_found(path, "GET").body)
    answer = only(
        converse(node.port, request(b"/metadata/instance/comp%E2%82%AC?api-version=2021-02-01", MD))
    )
    assert_imds(answer, 404, NOT_FOUND_404)
    raw = request("/metadata/versionsé?api-version=2021-02-01".encode(), MD)
    assert_http_refusal(converse(node.port, raw), 400)


@pytest.mark.parametrize(
    "target",
    [
        b"/metadata/instance/%00?api-version=2021-02-01",
        b"/metadata/instance/network/interface/" + b"9" * 5000 + b"?api-version=2021-02-01",
        b"/metadata/instance/network/interface/0/ipv4/ipAddress/" + b"0" * 4999 + b"1"
        b"?api-version=2021-02-01&format=text",
        b"/metadata/instance/compute/..%2f..%2f?api-version=2021-02-01",
    ],
    ids=["NUL", "5000 digits", "leading zeros", "dot segments"],
)
def test_odd_segments_under_the_instance_are_404(node: Node, target: bytes) -> None:
    assert_imds(only(converse(node.port, request(target, MD))), 404, NOT_FOUND_404)


def test_an_absolute_target_is_served(node: Node) -> None:
    raw = request(b"http://169.254.169.254/metadata/versions", MD)
    answer = only(converse(node.port, raw))
    assert (answer.status, answer.body) == (200, node.normal["/metadata/versions"])


# --- sizes: the head, the query, the body --------------------------------------------------


def padded_head(size: int) -> bytes:
    """A normal request whose head (request line and headers) is exactly ``size`` bytes."""
    start = b"GET /metadata/versions HTTP/1.1\r\n" + HOST + MD + CLOSE + b"X-Pad: "
    return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"


def test_a_head_of_the_limit_is_served_and_one_byte_more_is_431(node: Node) -> None:
    head = padded_head(MAX_REQUEST_HEAD)
    assert len(head) == MAX_REQUEST_HEAD
    answer = only(converse(node.port, head))
    assert (answer.status, answer.body) == (200, node.normal["/metadata/versions"])
    assert_http_refusal(converse(node.port, padded_head(MAX_REQUEST_HEAD + 1)), 431)


@pytest.mark.parametrize(
    "raw",
    [
        request(b"/metadata/versions", MD, b"X-Huge: " + b"a" * 100_000 + b"\r\n"),
        request(b"/metadata/versions", MD, b"X-Huge: " + b"a" * 1_000_000 + b"\r\n"),
        request(b"/metadata/" + b"a" * 70_000, MD),
        request(b"/metadata/instance?api-version=2021-02-01&x=" + b"a" * 20_000, MD),
        request(INSTANCE.encode() + b"&" + b"&".join(b"p%d=1" % i for i in range(5000)), MD),
        request(b"/metadata/versions", MD, *(b"X-%d: 1\r\n" % i for i in range(5000))),
        request(b"/metadata/versions", MD, *(b"Metadata: true\r\n" for _ in range(2000))),
    ],
    ids=[
        "one 100 KB header",
        "one 1 MB header",
        "a 70 KB path",
        "a 20 KB query",
        "5000 query parameters",
        "5000 headers",
        "2000 Metadata headers",
    ],
)
def test_a_head_over_the_limit_is_431_and_closed(node: Node, raw: bytes) -> None:
    assert_http_refusal(converse(node.port, raw), 431)


def test_100_headers_are_served_and_101_are_431(node: Node) -> None:
    """hyper's fixed limit, kept by serving/parse.py, counting every header line."""

    def with_headers(count: int) -> bytes:
        fixed = [HOST, MD, CLOSE]
        extra = [b"X-%d: 1\r\n" % i for i in range(count - len(fixed))]
        return b"GET /metadata/versions HTTP/1.1\r\n" + b"".join(fixed + extra) + b"\r\n"

    answer = only(converse(node.port, with_headers(100)))
    assert (answer.status, answer.body) == (200, node.normal["/metadata/versions"])
    assert_http_refusal(converse(node.port, with_headers(101)), 431)


def query_of(
    length: int, path: bytes = b"/metadata/instance", version: bytes = b"2021-02-01"
) -> bytes:
    start = b"api-version=" + version + b"&pad="
    query = start + b"a" * (length - len(start))
    assert len(query) == length
    return path + b"?" + query


def test_a_query_of_the_limit_is_served_and_one_byte_more_is_the_query_400(node: Node) -> None:
    answer = only(converse(node.port, request(query_of(MAX_QUERY_LENGTH), MD)))
    assert (answer.status, answer.body) == (200, node.normal[INSTANCE])
    answer = only(converse(node.port, request(query_of(MAX_QUERY_LENGTH + 1), MD)))
    assert_imds(answer, 400, QUERY_400)
    identity = query_of(MAX_QUERY_LENGTH + 1, b"/metadata/identity/oauth2/token", b"2018-02-01")
    assert_imds(only(converse(node.port, request(identity, MD))), 400, IDENTITY_QUERY_400)


def test_the_query_limit_comes_after_the_metadata_header_check(node: Node) -> None:
    answer = only(converse(node.port, request(query_of(MAX_QUERY_LENGTH + 1))))
    assert_imds(answer, 400, METADATA_400)


def test_parameters_up_to_the_limit_are_served_and_one_more_is_the_query_400(node: Node) -> None:
    def with_parameters(count: int) -> bytes:
        extra = b"".join(b"&p%d=" % i for i in range(count - 1))
        return INSTANCE.encode() + extra

    answer = only(converse(node.port, request(with_parameters(MAX_QUERY_PARAMETERS), MD)))
    assert (answer.status, answer.body) == (200, node.normal[INSTANCE])
    answer = only(converse(node.port, request(with_parameters(MAX_QUERY_PARAMETERS + 1), MD)))
    assert_imds(answer, 400, QUERY_400)


@pytest.mark.parametrize(
    ("target", "headers", "body"),
    [
        (b"/metadata/versions", [MD, MD], METADATA_400),
        (b"/metadata/versions", [MD, b"Metadata: false\r\n"], METADATA_400),
        (b"/metadata/versions", [b"Metadata: true, true\r\n"], METADATA_400),
        (
            b"/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net",
            [MD, MD],
            IDENTITY_METADATA_400,
        ),
    ],
    ids=["true twice", "true and false", "one header listing true twice", "identity"],
)
def test_several_metadata_headers_are_the_missing_header_400(
    node: Node, target: bytes, headers: list[bytes], body: bytes
) -> None:
    assert_imds(only(converse(node.port, request(target, *headers))), 400, body)


@pytest.mark.parametrize(
    ("framing", "body"),
    [
        (b"Content-Length: 5\r\n", b"hello"),
        (b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
        (b"Content-Length: 40\r\n", b"GET /metadata/instance HTTP/1.1\r\nX: y\r\n\r\n"[:40]),
    ],
    ids=["Content-Length", "chunked", "a request as the body"],
)
def test_a_body_on_a_get_is_ignored_and_the_connection_goes_on(
    node: Node, framing: bytes, body: bytes
) -> None:
    first = request(b"/metadata/versions", MD, framing, body=body, close=False)
    conversation = converse(node.port, first + request(INSTANCE.encode(), MD))
    assert conversation.closed
    assert [(a.status, a.body) for a in conversation.answers] == [
        (200, node.normal["/metadata/versions"]),
        (200, node.normal[INSTANCE]),
    ]


def test_a_get_whose_body_never_ends_is_answered_and_closed(node: Node) -> None:
    raw = request(b"/metadata/versions", MD, b"Content-Length: 1000\r\n", body=b"ab", close=False)
    conversation = converse(node.port, raw)
    answer = only(conversation)
    assert (answer.status, answer.body) == (200, node.normal["/metadata/versions"])
    assert conversation.elapsed < TIMEOUT / 2  # closed at once: the rest is never waited for


def post(body: bytes, *framing: bytes, close: bool = True) -> bytes:
    framing = framing or (b"Content-Length: %d\r\n" % len(body),)
    return request(EVENTS, MD, b"Content-Type: application/json\r\n", *framing, method=b"POST",
                   body=body, close=close)  # fmt: skip


@pytest.mark.parametrize("size", [MAX_BODY + 1, 200_000, 1_000_000])
def test_a_post_body_over_64_kb_is_the_max_body_400(node: Node, size: int) -> None:
    conversation = converse(node.port, post(b"{" + b" " * (size - 2) + b"}"))
    assert_imds(conversation.answers[0], 400, BODY_TOO_LARGE_400)
    assert conversation.closed and len(conversation.answers) == 1


def test_a_chunked_body_over_64_kb_is_the_max_body_400(node: Node) -> None:
    chunk = b" " * 8192
    chunks = b"".join(b"2000\r\n" + chunk + b"\r\n" for _ in range(10))  # 80 KB
    raw = post(b"1\r\n{\r\n" + chunks + b"1\r\n}\r\n0\r\n\r\n", b"Transfer-Encoding: chunked\r\n")
    assert_imds(only(converse(node.port, raw)), 400, BODY_TOO_LARGE_400)


@pytest.mark.parametrize(
    "body",
    [
        b'{"StartRequests":[{"EventId":"\\ud800"}]}',
        b"[" * 60_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b"\xff\xfe\x00",
        b"",
    ],
    ids=["a lone surrogate", "60000 brackets", "nested 10000 deep", "no UTF-8", "empty"],
)
def test_a_malformed_approval_is_400(node: Node, body: bytes) -> None:
    assert_imds(only(converse(node.port, post(body))), 400, MALFORMED_BODY_400)


def test_chunk_extensions_as_rfc_9112_writes_them_are_read(node: Node) -> None:
    chunked = b'2 ; name ; x="a \\" b"; y = z\r\n{}\r\n0;last\r\n\r\n'
    answer = only(converse(node.port, post(chunked, b"Transfer-Encoding: chunked\r\n")))
    assert_imds(answer, 400, MALFORMED_BODY_400)  # the body, {}, reached the endpoint


def test_a_chunked_approval_is_read_like_any_other(node: Node) -> None:
    raw = post(b'5\r\n{"Sta\r\n6\r\nrtRequ\r\n0\r\n\r\n', b"Transfer-Encoding: chunked\r\n")
    assert_imds(only(converse(node.port, raw)), 400, MALFORMED_BODY_400)
    body = b'{"StartRequests":[{"EventId":"no-such-event"}]}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    answer = only(converse(node.port, post(chunked, b"Transfer-Encoding: chunked\r\n")))
    assert_imds(answer, 400, b'{ "error": "Bad request. no scheduled event no-such-event" }')


@pytest.mark.parametrize(
    "chunked",
    [
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"FFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcdef\r\n0\r\n\r\n",
        b"2;x=\x01\r\n{}\r\n0\r\n\r\n",
        b"2;\x7f\r\n{}\r\n0\r\n\r\n",
        b'2;x="\r\n{}\r\n0\r\n\r\n',
        b"2 \r\n{}\r\n0\r\n\r\n",
        b"2\n{}\r\n0\r\n\r\n",
    ],
    ids=[
        "a size that is no number",
        "a size beyond 64 bits",
        "a chunk longer than its size",
        "a control byte in an extension's value",
        "DEL as an extension",
        "an open quote",
        "a space after the size",
        "a bare LF after the size",
    ],
)
def test_broken_chunked_encoding_is_400_and_closed(node: Node, chunked: bytes) -> None:
    assert_body_refusal(converse(node.port, post(chunked, b"Transfer-Encoding: chunked\r\n")), 400)


def test_a_chunked_body_with_trailers_is_400_and_closed(node: Node) -> None:
    """Refused as under granian, which reported trailers as a body that broke off."""
    body = b'{"StartRequests":[]}'
    chunked = b"%x\r\n%s\r\n0\r\nX-Checksum: 1\r\n\r\n" % (len(body), body)
    assert_body_refusal(converse(node.port, post(chunked, b"Transfer-Encoding: chunked\r\n")), 400)


def test_header_values_that_are_not_utf_8_count_as_absent(node: Node) -> None:
    target = INSTANCE.encode()
    answer = only(converse(node.port, request(target, b"Metadata: \xff\xfe\r\n")))
    assert_imds(answer, 400, METADATA_400)
    forwarded = request(target, MD, b"X-Forwarded-For: \xff\r\n")
    assert_imds(
        only(converse(node.port, forwarded)),
        400,
        b'{ "error": "Bad request: . X-Forwarded-For header is not allowed" }',
    )
    # A second Metadata header the app never sees leaves the first alone (a documented choice).
    twice = request(target, MD, b"Metadata: \xff\r\n")
    answer = only(converse(node.port, twice))
    assert (answer.status, answer.body) == (200, node.normal[INSTANCE]), answer


def test_a_body_longer_than_its_content_length_leaves_the_rest_as_a_next_request(
    node: Node,
) -> None:
    """The excess is read as the next request, which HTTP cannot parse: 400, closed."""
    conversation = converse(
        node.port, post(b"{}", b"Content-Length: 2\r\n", close=False) + b"garbage\r\n\r\n"
    )
    first, second = conversation.answers
    assert_imds(first, 400, MALFORMED_BODY_400)
    assert (second.status, second.body) == (400, b"") and set(second.headers) == REFUSAL_HEADERS
    assert conversation.closed


def test_identical_content_lengths_are_one(node: Node) -> None:
    """RFC 9110 8.6 allows a repeated Content-Length with the same value."""
    raw = post(b"{}", b"Content-Length: 2\r\n", b"Content-Length: 2\r\n")
    assert_imds(only(converse(node.port, raw)), 400, MALFORMED_BODY_400)


@pytest.mark.parametrize("expect", [b"100-continue", b"100-Continue"])
def test_expect_100_continue_gets_continue_then_the_answer(node: Node, expect: bytes) -> None:
    with socket.create_connection(("127.0.0.1", node.port), timeout=LATE) as sock:
        # The head alone, as a client that waits for the go-ahead sends it.
        sock.sendall(post(b"", b"Content-Length: 2\r\n", b"Expect: " + expect + b"\r\n"))
        sock.settimeout(LATE)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"{}")
        received, closed = read_all(sock, LATE)
    assert closed
    assert_imds(parse(received)[0], 400, MALFORMED_BODY_400)


def test_expect_100_continue_on_http_1_0_is_ignored(node: Node) -> None:
    """RFC 9110 10.1.1: an HTTP/1.0 client's expectation is ignored (no 100 Continue)."""
    first = b"POST " + EVENTS + b" HTTP/1.0\r\n"
    expecting = head(first, HOST, MD, b"Content-Length: 2\r\n", b"Expect: 100-continue\r\n")
    with socket.create_connection(("127.0.0.1", node.port), timeout=LATE) as sock:
        sock.sendall(expecting)
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(100)  # nothing: the server waits for the body
        sock.sendall(b"{}")
        received, closed = read_all(sock, LATE)
    assert closed
    (answer,) = parse(received)
    assert_imds(answer, 400, MALFORMED_BODY_400)


# --- a body that stops short ---------------------------------------------------------------


@pytest.fixture
def event(node: Node) -> Iterator[str]:
    """A Reboot event for the default VM, Scheduled; canceled afterwards."""
    client = admin(node.process)
    event_id = client.schedule_event({"type": "Reboot", "vms": ["examplevmname"]})["eventId"]
    yield event_id
    with contextlib.suppress(AdminError):  # the test may have started it: then it stays
        client.cancel_event(event_id)


def event_status(node: Node, event_id: str) -> str:
    events = admin(node.process).events(everything=True)["events"]
    return next(e["status"] for e in events if e["eventId"] == event_id)


def approval(event_id: str) -> bytes:
    return json.dumps({"StartRequests": [{"EventId": event_id}]}).encode()


def test_a_body_cut_short_is_400_closed_and_never_acted_on(node: Node, event: str) -> None:
    """A complete approval, but Content-Length promised more and the client stopped sending:
    the endpoint must not approve on the part it has."""
    body = approval(event)
    raw = post(body, b"Content-Length: %d\r\n" % (len(body) + 10))
    assert_body_refusal(converse(node.port, raw, half_close=True), 400)
    assert event_status(node, event) == "Scheduled"
    chunked = post(b"%x\r\n%s\r\n" % (len(body), body), b"Transfer-Encoding: chunked\r\n")
    assert_body_refusal(converse(node.port, chunked, half_close=True), 400)
    assert event_status(node, event) == "Scheduled"
    answer = only(converse(node.port, post(body)))  # the same approval, whole
    assert (answer.status, answer.body) == (200, b""), answer
    assert event_status(node, event) == "Started"


def test_a_body_never_finished_is_408_after_the_timeout(node: Node, event: str) -> None:
    body = approval(event)
    conversation = converse(node.port, post(body, b"Content-Length: %d\r\n" % (len(body) + 1)))
    assert_body_refusal(conversation, 408)
    assert TIMEOUT * 0.8 <= conversation.elapsed <= LATE, conversation
    assert event_status(node, event) == "Scheduled"


# --- slow clients: dropped after the timeout, and nobody else waits meanwhile ---------------


class Slow:
    """A connection that sends ``parts`` one by one, ``pause`` seconds apart, on a thread, and
    records when the server closed it and what it answered."""

    def __init__(self, port: int, parts: list[bytes], pause: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=LATE + 5)
        self.parts, self.pause = parts, pause
        self.started = time.monotonic()
        self.closed_after: float | None = None
        self.received = b""
        self._stop = threading.Event()
        self._sender = threading.Thread(target=self._send, daemon=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._sender.start()
        self._reader.start()

    def _send(self) -> None:
        for part in self.parts:
            if self._stop.is_set():
                return
            try:
                self.sock.sendall(part)
            except OSError:
                return  # closed by the server
            self._stop.wait(self.pause)

    def _read(self) -> None:
        self.received, closed = read_all(self.sock, LATE + 5)
        if closed:
            self.closed_after = time.monotonic() - self.started

    def is_open(self) -> bool:
        return self._reader.is_alive()

    def finish(self) -> float | None:
        """Wait for the server to drop the connection; seconds it took (None: it did not)."""
        self._reader.join(LATE + 6)
        self._stop.set()
        self.sock.close()
        return self.closed_after


def assert_served_promptly(node: Node, times: int = 5) -> None:
    for _ in range(times):
        started = time.monotonic()
        node.assert_serving()
        assert time.monotonic() - started < TIMEOUT / 2


def dribble(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


HEAD = request(b"/metadata/versions", MD, b"X-Pad: " + b"a" * 2000 + b"\r\n")


@pytest.mark.parametrize(
    ("parts", "pause"),
    [
        ([], 0.0),  # connects and sends nothing
        (dribble(HEAD[:-2]), 0.02),  # a head, a byte at a time, never finished
        ([b"GET /metadata/versions HTTP/1.1\r\n"], 0.0),  # then nothing more
    ],
    ids=["silent", "a head dribbled byte by byte", "a request line and silence"],
)
def test_a_slow_head_is_dropped_after_the_timeout_without_an_answer(
    node: Node, parts: list[bytes], pause: float
) -> None:
    slow = Slow(node.port, parts, pause)
    assert_served_promptly(node)
    assert slow.is_open()
    closed_after = slow.finish()
    assert closed_after is not None, "the server never dropped the connection"
    assert TIMEOUT * 0.8 <= closed_after <= LATE
    assert slow.received == b""


def test_a_kept_alive_connection_left_idle_is_closed_after_the_timeout(node: Node) -> None:
    with socket.create_connection(("127.0.0.1", node.port), timeout=LATE) as sock:
        sock.sendall(request(b"/metadata/versions", MD, close=False))
        started = time.monotonic()
        received, closed = read_all(sock, LATE)
    assert closed and TIMEOUT * 0.8 <= time.monotonic() - started <= LATE
    assert [(a.status, a.body) for a in parse(received)] == [
        (200, node.normal["/metadata/versions"])
    ]


def test_a_body_dribbled_past_the_timeout_is_408(node: Node) -> None:
    """The timeout is for the whole body, not for each byte."""
    body = b'{"StartRequests":[{"EventId":"' + b"x" * 200 + b'"}]}'
    head = post(b"", b"Content-Length: %d\r\n" % len(body))
    slow = Slow(node.port, [head, *dribble(body)], TIMEOUT / 20)
    assert_served_promptly(node)
    closed_after = slow.finish()
    assert closed_after is not None and TIMEOUT * 0.8 <= closed_after <= LATE
    assert_body_refusal(Conversation(parse(slow.received), True, closed_after), 408)


def closed_by_server(socks: list[socket.socket], wait: float) -> dict[int, float]:
    """When (time.monotonic()) the server closed each of ``socks``, by index, within ``wait``."""
    closed: dict[int, float] = {}
    with selectors.DefaultSelector() as selector:
        for index, sock in enumerate(socks):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, index)
        deadline = time.monotonic() + wait
        while len(closed) < len(socks) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                try:
                    chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    closed[key.data] = time.monotonic()
                    selector.unregister(key.fileobj)
    return closed


def test_many_slow_connections_do_not_keep_others_waiting(node: Node) -> None:
    """More than 128 connections at once (granian's default, which let 128 silent
    connections stall every other client until they timed out), of three kinds: silent, a
    head never finished, a body never finished; from five addresses, each within its
    connection limit."""
    kinds = [b"", HEAD[:100], post(b'{"StartRequests":[]}', b"Content-Length: 1000\r\n")]
    socks: list[socket.socket] = []
    try:
        for i in range(300):
            source = (f"127.0.0.{10 + i % 5}", 0)
            sock = socket.create_connection(("127.0.0.1", node.port), LATE, source)
            sock.sendall(kinds[i % 3])
            socks.append(sock)
        connected = time.monotonic()
        assert_served_promptly(node, times=10)
        served = time.monotonic()
        closed = closed_by_server(socks, LATE + 1)
        assert len(closed) == len(socks), f"{len(socks) - len(closed)} were never closed"
        assert min(closed.values()) > served  # every one was still connected meanwhile
        assert max(closed.values()) - connected <= LATE
    finally:
        for sock in socks:
            sock.close()


def test_a_slow_client_does_not_hold_up_shutdown(tmp_path: Any) -> None:
    process = ServerProcess("--request-timeout", str(TIMEOUT), state_dir=tmp_path)  # SIGTERM
    slow = [
        Slow(process.port, dribble(HEAD[:-2]), 0.05),
        Slow(process.port, [post(b"{", b"Content-Length: 10\r\n")], 0.0),
    ]
    time.sleep(0.2)
    started = time.monotonic()
    process.proc.send_signal(signal.SIGTERM)
    try:
        code = process.proc.wait(timeout=LATE)  # it waited as long as the clients stayed
    finally:
        if process.proc.poll() is None:
            process.proc.kill()
        for s in slow:
            s.finish()
        process.stop()
    assert code == 0
    assert time.monotonic() - started >= TIMEOUT * 0.5  # they were in flight: it waited


# --- garbage at random ----------------------------------------------------------------------

VALID = [
    request(b"/metadata/instance?api-version=2021-02-01&format=json", MD),
    request(b"/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://x", MD),
    post(b'{"StartRequests":[{"EventId":"x"}]}'),
    post(b'5\r\n{"Sta\r\n0\r\n\r\n', b"Transfer-Encoding: chunked\r\n"),
]
DOCUMENTED = {200, 400, 404, 405, 408, 431}  # no 403 here: single mode


URI_BYTES = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/?%"
URI_WORDS = [b"%00", b"%FF", b"%C3%A9", b"&", b"=", b"/", b"9" * 50, b"api-version=", b"format="]


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """Anything, anywhere: mostly what HTTP itself cannot parse."""
    raw = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(raw) + 1)
        choice = rng.random()
        if choice < 0.3 and raw:
            raw[min(where, len(raw) - 1)] = rng.randrange(256)
        elif choice < 0.5:
            weird = [b"\r", b"\n", b"\x00", b" ", b":", b"%", b"\xff", "é".encode()]
            raw[where:where] = rng.choice(weird)
        elif choice < 0.7:
            del raw[where : where + rng.randint(1, 8)]
        elif choice < 0.85:
            raw[where:where] = rng.choice(VALID)[: rng.randint(1, 60)]
        else:
            raw[where:where] = bytes([rng.randrange(256)]) * rng.randint(1, 3000)
    return bytes(raw)


def mutate_target(rng: random.Random, data: bytes) -> bytes:
    """Edits to the target with what a URI may hold: what reaches the IMDS checks."""
    line, sep, rest = data.partition(b"\r\n")
    method, target, version = line.split(b" ")
    part = bytearray(target)
    for _ in range(rng.randint(1, 3)):
        where = rng.randrange(1, len(part) + 1)
        choice = rng.random()
        if choice < 0.4:
            part[where:where] = bytes(rng.choice(URI_BYTES) for _ in range(rng.randint(1, 6)))
        elif choice < 0.7:
            del part[where : where + rng.randint(1, 6)]
        else:
            part[where:where] = rng.choice(URI_WORDS)
    return b" ".join([method, bytes(part), version]) + sep + rest


def converse_many(port: int, raws: list[bytes], wait: float) -> list[Conversation]:
    """Each of ``raws`` on its own connection, all at once; read until the server closes each
    (a head that never finishes is closed by the server's timeout) or ``wait`` passes. The
    connections come from as many addresses as the connection limit per client needs."""
    socks = []
    for index, raw in enumerate(raws):
        source = (f"127.0.0.{10 + index % 16}", 0)
        sock = socket.create_connection(("127.0.0.1", port), wait, source)
        with contextlib.suppress(OSError):  # refused before it was all sent: read its answer
            sock.sendall(raw)
        socks.append(sock)
    received = [bytearray() for _ in socks]
    ended: dict[int, float] = {}
    started = time.monotonic()
    with selectors.DefaultSelector() as selector:
        for index, sock in enumerate(socks):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, index)
        while len(ended) < len(socks) and time.monotonic() - started < wait:
            for key, _ in selector.select(timeout=0.1):
                try:
                    chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except ConnectionResetError:
                    chunk = b""
                received[key.data] += chunk
                if not chunk:
                    ended[key.data] = time.monotonic() - started
                    selector.unregister(key.fileobj)
    for sock in socks:
        sock.close()
    return [
        Conversation(parse(bytes(data)), index in ended, ended.get(index, wait))
        for index, data in enumerate(received)
    ]


def test_mutated_requests_never_get_a_500(node: Node) -> None:
    """400 mutations of valid requests (seeded: the same every run), half of them anywhere,
    half in the target only, sent at once, each on its own connection."""
    rng = random.Random(20261126)
    raws = []
    for _ in range(400):
        mutate = mutate_bytes if rng.random() < 0.5 else mutate_target
        raws.append(mutate(rng, rng.choice(VALID)))
    seen: dict[tuple[str, int], int] = {}  # (who answered, status) -> how often
    for raw, conversation in zip(raws, converse_many(node.port, raws, LATE), strict=True):
        assert conversation.closed, raw  # answered and closed, or dropped at the timeout
        for answer in conversation.answers:
            assert answer.status in DOCUMENTED, (raw, answer)
            who = answer.headers.get("server", "http1").split("/")[0]
            seen[who, answer.status] = seen.get((who, answer.status), 0) + 1
    # The mutations reach the server's parser and the IMDS checks alike.
    assert seen.get(("http1", 400), 0) > 50, seen
    assert sum(n for (who, _), n in seen.items() if who == "IMDS") > 100, seen
    assert seen.get(("IMDS", 200), 0) > 5 and seen.get(("IMDS", 404), 0) > 5, seen


# --- server.Guarded and the connection limit, in process ------------------------------------


def run_guarded(
    app: Any, messages: list[dict[str, Any]], method: str = "POST", timeout: float = 0.2
) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)  # a client that sends nothing more
        raise AssertionError("not reached")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/x"}
    asyncio.run(asgi.Guarded(app, timeout)(scope, receive, send))
    return sent


async def reading_app(scope: Any, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_guarded_passes_a_whole_body_through() -> None:
    sent = run_guarded(
        reading_app,
        [
            {"type": "http.request", "body": b"ab", "more_body": True},
            {"type": "http.request", "body": b"c", "more_body": False},
        ],
    )
    assert [m.get("status", m.get("body")) for m in sent] == [200, b"abc"]


@pytest.mark.parametrize(
    ("messages", "status"),
    [
        ([{"type": "http.request", "body": b"ab", "more_body": True}], 408),
        (
            [
                {"type": "http.request", "body": b"ab", "more_body": True},
                {"type": "http.disconnect"},
            ],
            400,
        ),
    ],
    ids=["late", "cut short"],
)
def test_guarded_answers_a_body_that_stops_short_itself(
    messages: list[dict[str, Any]], status: int
) -> None:
    sent = run_guarded(reading_app, messages)
    assert sent == [
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", b"0"), (b"connection", b"close")],
        },
        {"type": "http.response.body", "body": b""},
    ]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_guarded_logs_an_app_that_fails(caplog: pytest.LogCaptureFixture, method: str) -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    with (
        caplog.at_level(logging.ERROR, logger="azimds.serving.asgi"),
        pytest.raises(RuntimeError),
    ):
        run_guarded(failing, [], method)
    assert f"{method} /x failed" in caplog.text and "boom" in caplog.text


@pytest.mark.parametrize(("method", "answered"), [("GET", [200, b"abc"]), ("POST", [408, b""])])
def test_guarded_sets_no_deadline_on_a_get(method: str, answered: list[object]) -> None:
    """A GET's ``receive`` is granian's own (a "hang" fault waits on it for the client to
    leave); any other method's body must come in time."""
    sent: list[dict[str, Any]] = []
    parts = [(0.0, b"ab", True), (0.5, b"c", False)]  # the last part after the 0.2 s deadline

    async def receive() -> dict[str, Any]:
        delay, body, more = parts.pop(0)
        await asyncio.sleep(delay)
        return {"type": "http.request", "body": body, "more_body": more}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/x"}
    asyncio.run(asgi.Guarded(reading_app, 0.2)(scope, receive, send))
    assert [m.get("status", m.get("body")) for m in sent] == answered


@pytest.mark.parametrize(
    ("soft", "hard", "listeners", "expected"),
    [
        (1024, 1024, 3, (1024 - serving.FD_RESERVE) // 3),
        (1024, 1_000_000, 3, MAX_CONNECTIONS),
    ],
)
def test_the_connection_limit_fits_the_descriptor_limit(
    monkeypatch: pytest.MonkeyPatch, soft: int, hard: int, listeners: int, expected: int
) -> None:
    limits = {"now": (soft, hard)}
    monkeypatch.setattr(serving.resource, "getrlimit", lambda _: limits["now"])

    def setrlimit(_: int, value: tuple[int, int]) -> None:
        assert value[0] <= value[1] == hard
        limits["now"] = value

    monkeypatch.setattr(serving.resource, "setrlimit", setrlimit)
    assert serving.connection_limit(listeners) == expected
