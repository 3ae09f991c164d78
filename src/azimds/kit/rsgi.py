"""An RSGI app called in process, as granian would call it, without a server or a socket.

For property tests and fuzzers that put many requests a second through the guest app
(``guest/rsgi.py``): the scope and transport behave as granian's do where the app looks
(header names in lower case, values that are not UTF-8 left out of ``get_all``, the query as
Latin-1 characters of its bytes, the body stream ending with an empty chunk). End-to-end
tests use a real node instead (``kit/local.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class RSGIApp(Protocol):
    def __rsgi__(self, scope: Any, protocol: Any) -> Awaitable[None]: ...


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)


class Headers:
    """A request's headers as granian hands them over, from the pairs as sent (any case, any
    bytes)."""

    def __init__(self, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in pairs:
            values = self._values.setdefault(name.lower().decode("latin-1"), [])
            with contextlib.suppress(UnicodeDecodeError):  # granian leaves such values out
                values.append(value.decode("utf-8"))

    def get_all(self, key: str) -> list[str]:
        return list(self._values.get(key, ()))

    def __contains__(self, key: str) -> bool:
        return key in self._values


@dataclass(frozen=True)
class Scope:
    method: str
    path: str
    query_string: str
    headers: Headers
    client: str
    server: str = "127.0.0.1:80"


@dataclass
class Transport:
    body: bytes
    answers: list[Answer] = field(default_factory=list)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.body:
            yield self.body
        yield b""  # granian's end of the stream

    async def client_disconnect(self) -> None:
        return None  # the client has always gone by the time a hang would wait for it

    def response_bytes(self, status: int, headers: Sequence[tuple[str, str]], body: bytes) -> None:
        self.answers.append(Answer(status, list(headers), body))


async def call(
    app: RSGIApp,
    method: str,
    path: str,
    query: bytes = b"",
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    client: str = "127.0.0.1:50000",
) -> list[Answer]:
    """Every answer ``app`` gave to one request (a correct app gives exactly one). ``path`` is
    percent-decoded, ``query`` as sent, ``client`` the peer as ``host:port``."""
    scope = Scope(method, path, query.decode("latin-1"), Headers(headers), client)
    transport = Transport(body)
    await app.__rsgi__(scope, transport)
    return transport.answers
