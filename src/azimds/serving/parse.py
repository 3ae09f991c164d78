"""Reading HTTP/1.1 requests, sans I/O: the rules, with no socket and no event loop.

What a request's head may be and what it means (RFC 9112; docs/behaviour.md, "Malformed
requests and limits"): ``read_head`` reads a whole head
into what the server needs (method, path, query, ``Headers``, keep-alive, the body's framing,
100-continue); ``check_partial_head`` refuses a head still arriving as soon as it cannot
become a good one; ``Body`` takes a body's bytes as they come (``Content-Length`` or chunked)
and says when it is whole or broken. What cannot be read raises ``Refused`` (400, 431).
The connection, its buffer and its timers are ``protocol.py``'s.

Why the head is read here rather than by llhttp (httptools): llhttp refuses methods it does
not know (``BREW``), which IMDS answers with IIS's ``InvalidHttpVerb`` 400, so the app must
see them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NoReturn
from urllib.parse import unquote

from azimds.serving.limits import MAX_REQUEST_HEAD

MAX_HEADER_LINES = 100  # what hyper (granian's HTTP core, before this server) allowed
MAX_CHUNK_LINE = 1024  # bytes of a chunk's size line, extensions included
MAX_BLANK_LINES = 8  # empty lines tolerated before a request line (RFC 9112 2.2: "at least one")
MAX_CONTENT_LENGTH = 2**63 - 1  # what llhttp and hyper take; beyond: 400
CHUNKED = -1  # the framing of a chunked body (``read_head``, ``Body``)

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A chunk's size line (RFC 9112 7.1): the size in hex, then extensions, each a token with an
# optional value (a token or a quoted string), with optional spaces around ";" and "=".
_TOKEN_BYTES = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED_BYTES = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_CHUNK_SIZE = re.compile(
    rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[ \t]*%s(?:[ \t]*=[ \t]*(?:%s|%s))?)*"
    % (_TOKEN_BYTES, _TOKEN_BYTES, _QUOTED_BYTES)
)
# Bytes a head may hold: visible ASCII, obs-text, spaces and tabs, and CR LF between lines.
_HEAD_BYTES = bytes([9, 10, 13, *range(0x20, 0x7F), *range(0x80, 0x100)])
_VERSIONS = {"HTTP/1.1": False, "HTTP/1.0": True}  # -> whether it is HTTP/1.0
KEEP_ALIVE_LINE = b"connection: keep-alive\r\n"  # what an HTTP/1.0 client needs to hear
_OWS = " \t"  # the only spaces HTTP trims (``str.strip()`` also takes U+0085 and U+00A0)


class Refused(Exception):
    """A request the server refuses itself (400, 431), before any app sees it."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Headers(dict[str, tuple[str, ...]]):
    """A request's headers: lower-case name -> values, as Latin-1 characters of their bytes.
    ``get_all`` leaves out values that are not UTF-8 (they count as absent); their names are
    still ``in`` the headers. Read only (as werkzeug's ``ImmutableDict``), because a head read
    once is shared by every request that repeats it (``protocol.py`` keeps them); a dict, so
    that reading it costs what reading a dict does."""

    __slots__ = ()

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        fields: dict[str, tuple[str, ...]] = {}
        for name, value in pairs:
            fields[name] = (*fields[name], value) if name in fields else (value,)
        super().__init__(fields)

    def get_all(self, key: str) -> list[str]:
        values = self.get(key)
        if not values:
            return []
        if len(values) == 1 and values[0].isascii():
            return [values[0]]
        return [_utf8(value) for value in values if _is_utf8(value)]

    def _read_only(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a request's headers cannot be changed")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only
    __ior__ = _read_only


class Body:
    """A request body as it arrives: framed by ``Content-Length`` (``remaining``) or chunked
    (``length`` ``CHUNKED``, ``remaining`` None), kept up to ``limit`` bytes, the rest read and
    dropped. ``_changed`` runs when the body becomes whole, breaks off or passes ``limit``:
    the moments an app waiting for it (``protocol.py``) must be woken."""

    __slots__ = ("broken", "chunk_left", "data", "done", "full", "limit", "remaining", "trailer")

    def __init__(self, length: int, limit: int) -> None:
        self.remaining: int | None = None if length == CHUNKED else length
        self.limit = limit
        self.full = False  # more than ``limit`` bytes came: the app need not wait for the rest
        self.data = bytearray()
        self.done = length == 0
        self.broken = False
        self.chunk_left = -1  # chunked: bytes left of the current chunk; -1 before a size line
        self.trailer = False  # chunked: after the last chunk, waiting for the final CRLF

    def feed(self, data: bytes, at: int) -> int:
        """Take this body's bytes from ``data``, starting at ``at``; returns where the rest
        starts. Nothing before it is copied but the body's own bytes."""
        if self.remaining is not None:
            taken = min(self.remaining, len(data) - at)
            self._keep(data, at, taken)
            self.remaining -= taken
            if not self.remaining:
                self._finish()
            return at + taken
        end = len(data)
        while at < end and not (self.done or self.broken):
            if self.trailer:
                if end - at < 2:
                    break
                # A trailer field (anything but the final CRLF) is refused: no IMDS client
                # sends one, and the body's end must be unambiguous.
                self._finish(broken=data[at : at + 2] != b"\r\n")
                at += 2
            elif self.chunk_left < 0:
                line_end = data.find(b"\r\n", at, at + MAX_CHUNK_LINE)
                if line_end < 0:
                    if end - at >= MAX_CHUNK_LINE or data.find(b"\n", at) >= 0:
                        self._finish(broken=True)
                    break
                size = _CHUNK_SIZE.fullmatch(data, at, line_end)
                if size is None:
                    self._finish(broken=True)
                    break
                self.chunk_left = int(size[1], 16)
                at = line_end + 2
                if self.chunk_left == 0:
                    self.trailer = True
            elif self.chunk_left > 0:
                taken = min(self.chunk_left, end - at)
                self._keep(data, at, taken)
                self.chunk_left -= taken
                at += taken
            else:  # the CRLF after a chunk's data
                if end - at < 2:
                    break
                if data[at : at + 2] != b"\r\n":
                    self._finish(broken=True)
                    break
                at += 2
                self.chunk_left = -1
        return at

    def _keep(self, data: bytes, at: int, count: int) -> None:
        room = self.limit + 1 - len(self.data)
        if room > 0:
            self.data += data[at : at + min(room, count)]
            if count >= room:
                self.full = True
                self._changed()

    def _finish(self, broken: bool = False) -> None:
        self.done = not broken
        self.broken = broken
        self._changed()

    def cut_short(self) -> None:
        """The client stopped sending: a body not yet whole never will be."""
        if not (self.done or self.broken):
            self._finish(broken=True)

    def _changed(self) -> None:
        """The body became whole, broke off, or passed ``limit``."""


# A request's head as the server reads it: method, path, query, headers, whether the
# connection closes after the answer, the header line an HTTP/1.0 client needs to keep it
# open, the body's framing (``_framing``), and whether the client waits for 100 Continue.
Head = tuple[str, str, str, Headers, bool, bytes, int | None, bool]


def read_head(head: bytes) -> Head:
    """Everything the server needs of a request's head (without its closing blank line).
    Raises ``Refused``."""
    method, target, http_1_0, headers = _parse_head(head)
    path, query = split_target(target)
    hosts = headers.get("host", ())
    if len(hosts) > 1 or (not hosts and not http_1_0):
        raise Refused(400)  # RFC 9112 3.2: HTTP/1.1 needs one Host; no request has two
    closes = False
    keep_alive = b""
    if "connection" in headers or http_1_0:
        tokens = _tokens(headers.get("connection", ()))
        if http_1_0:
            closes = "keep-alive" not in tokens
            keep_alive = b"" if closes else KEEP_ALIVE_LINE
        else:
            closes = "close" in tokens
    length = _framing(headers, http_1_0)
    # RFC 9110 10.1.1: an HTTP/1.0 client's 100-continue is ignored.
    expects = length is not None and not http_1_0 and "100-continue" in _tokens(
        headers.get("expect", ())
    )  # fmt: skip
    return method, path, query, headers, closes, keep_alive, length, expects


def _tokens(values: tuple[str, ...]) -> set[str]:
    """A list header's tokens, in lower case (only ASCII letters are folded)."""
    return {t.strip(_OWS).lower() for value in values for t in value.split(",") if t.isascii()}


def _framing(headers: Headers, http_1_0: bool) -> int | None:
    """How the request's body is framed (RFC 9112 6): None (no body), its length, or
    ``CHUNKED``. Anything a reader could take two ways is refused: a Transfer-Encoding other
    than one ``chunked``, with Content-Length too, or on HTTP/1.0 (which has no chunked
    encoding); a Content-Length that is not digits alone, or given twice with different
    values. Raises ``Refused``."""
    encodings = headers.get("transfer-encoding")
    lengths = headers.get("content-length")
    if encodings is not None:
        if http_1_0 or lengths is not None or len(encodings) != 1:
            raise Refused(400)
        encoding = encodings[0]
        if not (encoding.isascii() and encoding.lower() == "chunked"):
            raise Refused(400)
        return CHUNKED
    if lengths is None:
        return None
    length = lengths[0]
    if not (length.isascii() and length.isdigit()) or any(other != length for other in lengths):
        raise Refused(400)
    value = int(length)
    if value > MAX_CONTENT_LENGTH:
        raise Refused(400)
    return value or None


def _parse_head(head: bytes) -> tuple[str, str, bool, Headers]:
    """A request's head (without its closing blank line) as (method, target as Latin-1
    characters, whether HTTP/1.0, headers). Raises ``Refused`` (400) for anything that is
    not HTTP/1.0 or 1.1: a byte no head may hold, a lone CR or LF, a broken line."""
    if head.translate(None, _HEAD_BYTES):
        raise Refused(400)
    lines = head.decode("latin-1").split("\r\n")
    if len(lines) > MAX_HEADER_LINES + 1:
        raise Refused(431)
    breaks = len(lines) - 1
    if head.count(b"\n") != breaks or head.count(b"\r") != breaks:
        raise Refused(400)
    method, target, http_1_0 = _request_line(lines[0])
    return method, target, http_1_0, Headers([_header_field(line) for line in lines[1:]])


def _request_line(line: str) -> tuple[str, str, bool]:
    """(method, target, whether HTTP/1.0). Raises ``Refused``."""
    method, _, rest = line.partition(" ")
    target, _, version = rest.partition(" ")
    http_1_0 = _VERSIONS.get(version)
    if http_1_0 is None or not target or "\t" in target or not _is_token(method):
        raise Refused(400)
    return method, target, http_1_0


def _header_field(line: str) -> tuple[str, str]:
    """(lower-case name, value without the spaces around it). Raises ``Refused``."""
    name, colon, value = line.partition(":")
    if not (colon and _is_token(name)):
        raise Refused(400)
    return name.lower(), value.strip(_OWS)


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


def check_partial_head(buffer: bytes, checked: int, lines: int) -> tuple[int, int]:
    """Refuse an unfinished head as soon as it cannot become a good one: too long, or a line
    already broken (a lone CR or LF, a bad request line or header). ``checked`` bytes at its
    front, holding ``lines`` whole lines, passed before: only what came since is looked at,
    so a head sent a byte at a time costs no more than one sent at once. Returns the new
    (checked, lines). Raises ``Refused``."""
    if len(buffer) >= MAX_REQUEST_HEAD:
        raise Refused(431)
    # A CR at the end may still get its LF: it is checked with what comes next.
    end = len(buffer) - 1 if buffer.endswith(b"\r") else len(buffer)
    fresh = buffer[checked:end]
    breaks = fresh.count(b"\r\n")
    if fresh.count(b"\r") != breaks or fresh.count(b"\n") != breaks:
        raise Refused(400)
    if fresh.translate(None, _HEAD_BYTES):
        raise Refused(400)
    if breaks:
        before = buffer.rfind(b"\r\n", 0, checked)  # the end of the last line checked
        first = before + 2 if before >= 0 else 0
        last = buffer.rfind(b"\r\n", 0, end)
        complete = buffer[first:last].decode("latin-1").split("\r\n")
        if lines + len(complete) > MAX_HEADER_LINES + 1:
            raise Refused(431)
        for number, line in enumerate(complete, start=lines):
            if number == 0:
                _request_line(line)
            else:
                _header_field(line)
        lines += len(complete)
    return end, lines


def split_target(target: str) -> tuple[str, str]:
    """A request target (Latin-1 characters of its bytes) as (path, query): the path
    percent-decoded (an escape that is no UTF-8 becomes U+FFFD), the query as it came.
    Raises ``Refused`` for a byte beyond ASCII: a URI has none (RFC 3986; clients
    percent-encode them), and llhttp and h11 refuse them too."""
    if not target.isascii():
        raise Refused(400)
    path, _, query = target.partition("?")
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
