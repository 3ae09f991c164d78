"""Raw HTTP/1.1 over real sockets, for the tests that send bytes no HTTP library would.

Requests are built as bytes; answers are parsed strictly (every byte accounted for), so a
stray or missing byte in what the server writes fails the test.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

TIMEOUT = 1.5  # the --request-timeout of the servers these tests start, seconds
LATE = TIMEOUT + 3.0  # by when a slow client must have been dropped (a loaded CI machine)
HOST = b"Host: 169.254.169.254\r\n"
MD = b"Metadata: true\r\n"
CLOSE = b"Connection: close\r\n"
INSTANCE = "/metadata/instance?api-version=2021-02-01"
REFUSAL_HEADERS = {"connection", "content-length", "date"}  # the server's own refusals


@dataclass(frozen=True)
class Answer:
    version: str
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass(frozen=True)
class Conversation:
    answers: list[Answer]
    closed: bool  # the server closed the connection (rather than the read timing out)
    elapsed: float  # seconds from sending to the close (or to the read timeout)


def parse(data: bytes) -> list[Answer]:
    """Every answer in ``data``, which must hold nothing else (no partial answer)."""
    answers = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"an incomplete answer: {data[:300]!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        version, code, _ = status_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            assert colon and name.lower() not in headers, head
            headers[name.lower()] = value.strip()
        status = int(code)
        length = 0 if status == 100 else int(headers["content-length"])
        assert len(rest) >= length, f"a body cut short: {data[:300]!r}"
        answers.append(Answer(version, status, headers, rest[:length]))
        data = rest[length:]
    return answers


def read_all(sock: socket.socket, wait: float) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection (True) or ``wait`` passes."""
    sock.settimeout(wait)
    received = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return bytes(received), False
        except ConnectionResetError:
            return bytes(received), True
        if not chunk:
            return bytes(received), True
        received += chunk


def converse(port: int, data: bytes, half_close: bool = False, wait: float = LATE) -> Conversation:
    """Send ``data`` on a new connection (then, with ``half_close``, shut our sending side) and
    read until the server closes it or ``wait`` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        started = time.monotonic()
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server closed first (it refused what it had read): read its answer
        received, closed = read_all(sock, wait)
        return Conversation(parse(received), closed, time.monotonic() - started)


def request(
    target: bytes, *headers: bytes, method: bytes = b"GET", body: bytes = b"", close: bool = True
) -> bytes:
    return (
        method + b" " + target + b" HTTP/1.1\r\n" + HOST + b"".join(headers)
        + (CLOSE if close else b"") + b"\r\n" + body
    )  # fmt: skip


def only(conversation: Conversation) -> Answer:
    """The one answer of a conversation the server then closed."""
    assert conversation.closed, conversation
    assert len(conversation.answers) == 1, conversation
    return conversation.answers[0]
