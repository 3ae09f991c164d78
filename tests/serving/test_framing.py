"""The guest plane's server frames requests as llhttp (httptools) and h11 do, or refuses them.

A proxy or load balancer in front of azimds, or a client library, reads the same bytes with its
own parser; wherever two readers disagree on where a request ends, a request can be smuggled
past one of them. So every input here (what one client sends on one connection) is read by
three readers: http1, the guest plane's own server (``azimds.serving.protocol``, in process,
over a transport that records what it is given), llhttp (Node.js's parser, through httptools)
and h11. Each yields the requests it reads, in order, as (method, path, query, body), and stops
where it refuses the input or the connection cannot go on. Two rules, for every input:

- no request is read differently: up to where either stops, http1 and each reference read the
  same requests;
- none is read that both refuse: every request http1 reads, one reference at least reads too
  (with everything before it). http1 may refuse more than both (it is stricter: no leading
  blank lines beyond a few, no Content-Length with Transfer-Encoding, no trailers).

The inputs are generated (hypothesis, derandomized: the same every run) from fragments of
requests, well and badly formed, plus a corpus of known smuggling classes (CL.TE and TE.CL
variants, obs-fold, Unicode whitespace, chunk-size overflow, bare LF and CR, NUL and high bytes
in names, duplicate Content-Length). The references disagree with each other in places (h11
refuses leading blank lines and HTTP/1.0 keep-alive, llhttp refuses methods it does not know):
the rules only need one of them to read what http1 reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import h11
import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azimds.serving import parse, protocol
from azimds.serving.exchange import BodyAbandoned, Exchange
from azimds.serving.limits import MAX_REQUEST_HEAD
from tests.serving.transport import Transport

Message = tuple[str, str, str, bytes]  # method, path, query, body
MAX_BODY = 1 << 20  # what the recording app keeps of a body: more than any input holds


def _target(raw: bytes) -> tuple[str, str] | None:
    """A reference's raw target as http1 hands it to the app, or None where http1 refuses it
    (its bytes are no UTF-8): the path and query are compared, not how they are decoded."""
    try:
        return parse.split_target(raw.decode("latin-1"))
    except parse.Refused:
        return None


# --- azimds.serving.protocol, in process ----------------------------------------------------


class Recording:
    """An app that reads every request's body whole, notes the request, and answers 200."""

    body_limit = MAX_BODY

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def handle(self, exchange: Exchange) -> Any:
        return self._read(exchange)

    async def _read(self, exchange: Exchange) -> None:
        try:
            body = await exchange.read_body()
        except BodyAbandoned:
            return  # not a request: the connection is dropped
        self.messages.append((exchange.method, exchange.path, exchange.query_string, body))
        exchange.response_bytes(200, (), b"")


LOOP = asyncio.new_event_loop()


async def _read_by_http1(data: bytes, reads: int) -> list[Message]:
    app = Recording()
    with socket.socket() as unused:  # what a listener needs: a socket (never listened on)
        listener = protocol._Listener(app, unused, 3600.0, 1)
    listener.accepting = True  # as if accepting: a closed connection must not start it
    connection = protocol._Connection(listener, ("10.0.0.4", 50000))
    transport = Transport()
    connection.connection_made(transport)
    step = max(1, -(-len(data) // reads))
    for start in range(0, len(data), step):
        if transport.closed or connection.closing:
            break
        connection.data_received(data[start : start + step])
        for _ in range(200):  # until the server waits for the client
            await asyncio.sleep(0)
            if not (connection.busy or connection.waiting_turn):
                break
    connection.connection_lost(None)
    await asyncio.sleep(0)
    return app.messages


def read_by_http1(data: bytes, reads: int = 1) -> list[Message]:
    """The requests http1 hands its app, whole body and all, with ``data`` arriving in
    ``reads`` reads."""
    return LOOP.run_until_complete(_read_by_http1(data, reads))


# --- the references --------------------------------------------------------------------------


class _LLHTTP:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.url = b""
        self.body = bytearray()
        self.parser: Any = None

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        target = _target(self.url)
        method = self.parser.get_method().decode("latin-1")
        path, query = target if target is not None else ("<refused>", "")
        self.messages.append((method, path, query, bytes(self.body)))


def read_by_llhttp(data: bytes) -> list[Message]:
    reader = _LLHTTP()
    reader.parser = httptools.HttpRequestParser(reader)
    with contextlib.suppress(httptools.HttpParserError, httptools.HttpParserUpgrade):
        reader.parser.feed_data(data)
    return reader.messages


def read_by_h11(data: bytes) -> list[Message]:
    """h11's reading, one request per connection it makes, with two robustness rules h11 lacks
    that are no statement on framing: up to ``MAX_BLANK_LINES`` empty lines before a request
    are skipped (RFC 9112 2.2 asks servers to ignore "at least one"; h11 refuses any), and
    where h11 would close by its own policy after a whole request (it keeps no HTTP/1.0
    connection alive), the bytes after it are read on all the same."""
    messages: list[Message] = []
    rest = data
    while rest:
        for _ in range(parse.MAX_BLANK_LINES):
            rest = rest.removeprefix(b"\r\n")
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        connection.receive_data(rest)
        method, target, body = "", ("", ""), bytearray()
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError:
                return messages
            if isinstance(event, h11.Request):
                method = event.method.decode("latin-1")
                target = _target(event.target) or ("<refused>", "")
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:  # NEED_DATA: the request is not whole
                return messages
        messages.append((method, *target, bytes(body)))
        rest = connection.trailing_data[0]
    return messages


def assert_framed_alike(data: bytes, reads: int = 1) -> list[Message]:
    """The two rules (module docstring); returns what http1 read."""
    ours = read_by_http1(data, reads)
    references = {"llhttp": read_by_llhttp(data), "h11": read_by_h11(data)}
    for name, theirs in references.items():
        common = min(len(ours), len(theirs))
        assert ours[:common] == theirs[:common], (
            f"{name} reads the requests differently: {data!r}\nhttp1: {ours}\n{name}: {theirs}"
        )
    for index in range(len(ours)):
        assert any(len(theirs) > index for theirs in references.values()), (
            f"request {index} is read by http1 only: {data!r}\nhttp1: {ours}\n{references}"
        )
    return ours


# --- the corpus of smuggling classes ---------------------------------------------------------

HOST = b"Host: 169.254.169.254\r\n"
EVENTS = b"POST /metadata/scheduledevents?api-version=2020-07-01 HTTP/1.1\r\n"
SECOND = b"GET /metadata/versions HTTP/1.1\r\n" + HOST + b"Metadata: true\r\n\r\n"


def post(*headers: bytes, body: bytes = b"", first: bytes = EVENTS) -> bytes:
    return first + HOST + b"".join(headers) + b"\r\n" + body + SECOND


CL, TE = b"Content-Length: ", b"Transfer-Encoding: "
SMUGGLING: dict[str, bytes] = {
    # CL.TE and TE.CL: both framings at once, in every spelling.
    "CL then TE": post(CL + b"6\r\n", TE + b"chunked\r\n", body=b"0\r\n\r\nX"),
    "TE then CL": post(TE + b"chunked\r\n", CL + b"4\r\n", body=b"5c\r\nGPOST / HTTP/1.1\r\n"),
    "TE chunked U+00A0": post(TE + b"chunked\xa0\r\n", CL + b"5\r\n", body=b"0\r\n\r\n"),
    "TE U+0085 chunked": post(TE + b"\x85chunked\r\n", body=b"0\r\n\r\n"),
    "TE chunked alone U+00A0": post(TE + b"chunked\xa0\r\n", body=b"0\r\n\r\n"),
    "TE vertical tab": post(TE + b"\x0bchunked\r\n", body=b"0\r\n\r\n"),
    "TE form feed": post(TE + b"chunked\x0c\r\n", body=b"0\r\n\r\n"),
    "TE xchunked": post(TE + b"xchunked\r\n", CL + b"5\r\n", body=b"0\r\n\r\n"),
    "TE chunked-false": post(TE + b"chunked-false\r\n", body=b"0\r\n\r\n"),
    "TE in two fields": post(TE + b"chunked\r\n", TE + b"identity\r\n", body=b"0\r\n\r\n"),
    "TE identity, chunked": post(TE + b"identity, chunked\r\n", body=b"0\r\n\r\n"),
    "TE chunked, identity": post(TE + b"chunked, identity\r\n", body=b"0\r\n\r\n"),
    "TE quoted": post(TE + b'"chunked"\r\n', body=b"0\r\n\r\n"),
    "TE with a space before the colon": post(b"Transfer-Encoding : chunked\r\n", body=b"0\r\n\r\n"),
    "TE with an underscore": post(b"Transfer_Encoding: chunked\r\n", body=b"0\r\n\r\n"),
    "TE on HTTP/1.0": post(
        TE + b"chunked\r\n", body=b"0\r\n\r\n", first=EVENTS.replace(b"1.1", b"1.0")
    ),
    "TE folded": post(TE + b"\r\n chunked\r\n", body=b"0\r\n\r\n"),
    "obs-fold after a header": post(b"X: y\r\n chunked\r\n", CL + b"0\r\n"),
    "CL 0x40": post(CL + b"0x4\r\n", body=b"abcd"),
    "CL +4": post(CL + b"+4\r\n", body=b"abcd"),
    "CL -1": post(CL + b"-1\r\n", body=b"abcd"),
    "CL 4, 5": post(CL + b"4, 5\r\n", body=b"abcd"),
    "CL 4, 4": post(CL + b"4, 4\r\n", body=b"abcd"),
    "CL twice, different": post(CL + b"4\r\n", CL + b"5\r\n", body=b"abcde"),
    "CL twice, equal": post(CL + b"4\r\n", CL + b"4\r\n", body=b"abcd"),
    "CL U+00A0": post(CL + b"4\xa0\r\n", body=b"abcd"),
    "CL superscript one": post(CL + b"\xb9\r\n", body=b"a"),
    "CL beyond 64 bits": post(CL + b"18446744073709551620\r\n", body=b"abcd"),
    "CL leading zeros": post(CL + b"0004\r\n", body=b"abcd"),
    "CL empty": post(CL + b"\r\n", body=b"abcd"),
    "NUL in a name": post(b"Content-Length\x00: 4\r\n", body=b"abcd"),
    "high byte in a name": post(b"Content-L\xe9ngth: 4\r\n", body=b"abcd"),
    "space in a name": post(b"Content Length: 4\r\n", body=b"abcd"),
    "NUL in a value": post(CL + b"4\x00\r\n", body=b"abcd"),
    "bare LF between headers": post(CL + b"4\n", b"X: y\r\n", body=b"abcd"),
    "bare CR between headers": post(CL + b"4\r", b"X: y\r\n", body=b"abcd"),
    "bare LF ends the head": EVENTS + HOST + CL + b"4\r\n\nabcd" + SECOND,
    "chunk size overflow": post(TE + b"chunked\r\n", body=b"1" + b"0" * 16 + b"\r\nx\r\n0\r\n\r\n"),
    "chunk size 17 digits, leading zeros": post(
        TE + b"chunked\r\n", body=b"0" * 16 + b"1\r\nx\r\n0\r\n\r\n"
    ),
    "chunk size negative": post(TE + b"chunked\r\n", body=b"-1\r\nx\r\n0\r\n\r\n"),
    "chunk size 0x": post(TE + b"chunked\r\n", body=b"0x1\r\nx\r\n0\r\n\r\n"),
    "chunk size with a space": post(TE + b"chunked\r\n", body=b"1 \r\nx\r\n0\r\n\r\n"),
    "chunk extension with a control byte": post(
        TE + b"chunked\r\n", body=b"1;a=\x01\r\nx\r\n0\r\n\r\n"
    ),
    "chunk extension with a bare LF": post(TE + b"chunked\r\n", body=b"1;a\nb\r\nx\r\n0\r\n\r\n"),
    "chunk extension quoted": post(TE + b"chunked\r\n", body=b'1;a="b;c"\r\nx\r\n0\r\n\r\n'),
    "chunk data then no CRLF": post(TE + b"chunked\r\n", body=b"1\r\nxy\r\n0\r\n\r\n"),
    "chunk data then a bare LF": post(TE + b"chunked\r\n", body=b"1\r\nx\n0\r\n\r\n"),
    "last chunk then a trailer": post(TE + b"chunked\r\n", body=b"0\r\nX: y\r\n\r\n"),
    "last chunk then a bare LF": post(TE + b"chunked\r\n", body=b"0\r\n\n"),
    "blank lines before the request": b"\r\n\r\n" + post(CL + b"0\r\n"),
    "many blank lines before the request": b"\r\n" * 20 + post(CL + b"0\r\n"),
    "a bare LF before the request": b"\n" + post(CL + b"0\r\n"),
    "no Host": EVENTS + CL + b"0\r\n\r\n" + SECOND,
    "two Hosts": post(HOST, CL + b"0\r\n"),
    "a tab in the target": post(CL + b"0\r\n", first=EVENTS.replace(b"/metadata", b"/meta\tdata")),
    "HTTP/1.0 keep-alive then more": post(
        CL + b"0\r\n", b"Connection: keep-alive\r\n", first=EVENTS.replace(b"1.1", b"1.0")
    ),
    "Connection close then more": post(CL + b"0\r\n", b"Connection: close\r\n"),
    "Connection close U+00A0 then more": post(CL + b"0\r\n", b"Connection: close\xa0\r\n"),
    "a GET with a body": post(
        CL + b"4\r\n", body=b"abcd", first=SECOND.split(b"\r\n")[0] + b"\r\n"
    ),
}


@pytest.mark.parametrize("data", SMUGGLING.values(), ids=SMUGGLING.keys())
@pytest.mark.parametrize("reads", [1, 7], ids=["one read", "seven reads"])
def test_a_smuggling_class_is_framed_alike_or_refused(data: bytes, reads: int) -> None:
    assert_framed_alike(data, reads)


def test_the_references_see_what_the_rules_assume() -> None:
    """The comparison can fail: the references read a well-formed pipeline as http1 does, and
    each refuses what http1 once took (``chunked`` followed by U+00A0)."""
    pipeline = post(CL + b"2\r\n", body=b"{}")
    expected = [
        ("POST", "/metadata/scheduledevents", "api-version=2020-07-01", b"{}"),
        ("GET", "/metadata/versions", "", b""),
    ]
    assert read_by_http1(pipeline) == read_by_llhttp(pipeline) == read_by_h11(pipeline)
    assert read_by_http1(pipeline) == expected
    smuggled = SMUGGLING["TE chunked alone U+00A0"]
    assert read_by_llhttp(smuggled) == read_by_h11(smuggled) == read_by_http1(smuggled) == []


# --- generated inputs ------------------------------------------------------------------------

METHODS = [b"GET", b"POST", b"get", b"BREW", b"HEAD", b"G\x00T", b"GET ", b"P\xc3\xb6ST"]
TARGETS = [
    b"/metadata/versions", b"/metadata/instance?api-version=2021-02-01", b"*",
    b"http://169.254.169.254/metadata/versions", b"/a%20b?c=%ff", b"/\xc3\xa9", b"/a\tb",
    b"/a b", b"", b"/a\x7fb", b"/#frag",
]  # fmt: skip
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1.1 ", b"HTTP/2.0"]
ENDS = [b"\r\n"] * 12 + [b"\n", b"\r", b"\r\r\n", b"\n\r"]
VALUES = {
    b"Content-Length": [
        b"0", b"4", b"5", b"04", b" 4", b"4 ", b"+4", b"-1", b"0x4", b"4, 4", b"4,5", b"",
        b"99999999999999999999", b"4\xa0", b"\xb9", b"4\x0b",
    ],
    b"Transfer-Encoding": [
        b"chunked", b"Chunked", b" chunked ", b"chunked\xa0", b"\x85chunked", b"chunked\x0b",
        b"gzip, chunked", b"chunked, chunked", b"identity", b"", b"chunked;q=1", b"\tchunked",
    ],
    b"Connection": [b"close", b"keep-alive", b"close\xa0", b"Close, foo", b"upgrade"],
    b"Host": [b"169.254.169.254", b"", b"a b", b"\xff"],
    b"Expect": [b"100-continue"],
    b"Upgrade": [b"h2c", b"websocket"],
    b"Metadata": [b"true"],
}  # fmt: skip
ODD_NAMES = [
    b"Content-Length ", b"Content-Length\x00", b"Content_Length", b"Transfer-Encoding ",
    b" Transfer-Encoding", b"Tr\xe4nsfer-Encoding", b"", b"X\x7fY",
]  # fmt: skip
CHUNK_EXTENSIONS = [
    b"", b";a", b";a=b", b';a="b c"', b" ;a", b"; a", b";a =b", b";a=\x01", b';a="', b";",
    b";a=b;c=d", b"\t;a", b";a=\x80", b';a="\\"', b"; ",
]  # fmt: skip


@st.composite
def header_lines(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from([b" folded", b"\tfolded", b"no colon", b"X:\x00y"]))
    name = draw(st.sampled_from([*VALUES, *ODD_NAMES]))
    value = draw(st.sampled_from(VALUES.get(name, [b"4", b"chunked"])))
    return name + b": " + value


@st.composite
def chunked_bodies(draw: st.DrawFn) -> bytes:
    chunks = []
    for data in draw(st.lists(st.binary(min_size=1, max_size=6), max_size=3)):
        size = b"%x" % len(data)
        size = draw(
            st.sampled_from([size, size, size.upper(), b"0" + size, b"%x" % (len(data) + 1)])
        )
        extension = draw(st.sampled_from(CHUNK_EXTENSIONS))
        chunks.append(size + extension + draw(st.sampled_from(ENDS)) + data + b"\r\n")
    last = b"0" + draw(st.sampled_from(CHUNK_EXTENSIONS)) + b"\r\n"
    trailer = draw(st.sampled_from([b"\r\n"] * 6 + [b"X: y\r\n\r\n", b"\n", b""]))
    return b"".join(chunks) + last + trailer


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """A request: half of them with a good request line and line ends (so that the headers
    and bodies below are what gets tried), half from any fragments."""
    if draw(st.booleans()):
        methods, targets, versions, ends = METHODS[:4], TARGETS[:6], VERSIONS[:2], [b"\r\n"]
    else:
        methods, targets, versions, ends = METHODS, TARGETS, VERSIONS, ENDS
    line = b" ".join(
        [
            draw(st.sampled_from(methods)),
            draw(st.sampled_from(targets)),
            draw(st.sampled_from(versions)),
        ]
    )
    headers = [HOST.rstrip(b"\r\n")] if draw(st.integers(0, 5)) else []
    headers += draw(st.lists(header_lines(), max_size=3))
    headers = draw(st.permutations(headers))
    end = draw(st.sampled_from(ends))
    head = line + end + b"".join(header + draw(st.sampled_from(ends)) for header in headers)
    body = draw(st.one_of(st.binary(max_size=8), chunked_bodies()))
    return head + end + body


@st.composite
def connections(draw: st.DrawFn) -> bytes:
    blank = draw(st.sampled_from([b""] * 8 + [b"\r\n", b"\r\n" * 9, b"\n"]))
    pipeline = draw(st.lists(requests(), min_size=1, max_size=3))
    return blank + b"".join(pipeline) + draw(st.sampled_from([b"", SECOND, b"garbage"]))


@settings(
    max_examples=3000,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=connections(), reads=st.sampled_from([1, 1, 3]))
def test_generated_inputs_are_framed_alike_or_refused(data: bytes, reads: int) -> None:
    assert_framed_alike(data, reads)


def test_the_generator_reaches_requests_every_reader_accepts() -> None:
    """Not only refusals: a good share of generated inputs are read as requests by all three."""
    counts = {"http1": 0, "all": 0}

    @settings(max_examples=400, derandomize=True, deadline=None, database=None)
    @given(data=connections())
    def count(data: bytes) -> None:
        ours = read_by_http1(data)
        if ours:
            counts["http1"] += 1
            if read_by_llhttp(data)[:1] == read_by_h11(data)[:1] == ours[:1]:
                counts["all"] += 1

    count()
    assert counts["http1"] > 40 and counts["all"] > 20, counts
