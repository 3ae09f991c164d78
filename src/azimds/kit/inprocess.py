"""The guest app called in process, as the server (``serving/protocol.py``) calls it, without a
socket.

For property tests and fuzzers that put many requests a second through the guest app
(``guest/app.py``): the exchange keeps the server's side of the contract
(``serving/exchange.py``) where the app looks (header names in lower case, values that are not
UTF-8 left out of ``get_all``, the query as Latin-1 characters of its bytes, the body cut one
byte past the app's limit). End-to-end tests use a real node instead (``kit/local.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from azimds.serving.exchange import App, ResponseHeaders
from azimds.serving.parse import Headers


@dataclass(frozen=True)
class RecordedAnswer:
    """One ``response_bytes`` call, ``x-ms-request-id`` among the headers where it was given."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)


def headers_of(pairs: Sequence[tuple[bytes, bytes]]) -> Headers:
    """The server's ``Headers`` for the pairs as sent (any case, any bytes)."""
    return Headers(
        (name.lower().decode("latin-1"), value.decode("latin-1")) for name, value in pairs
    )


@dataclass
class InProcessExchange:
    """One request (``serving.exchange.Exchange``) whose answers are recorded, not sent."""

    method: str
    path: str
    query_string: str
    headers: Headers
    client: str
    body: bytes
    body_limit: int
    answers: list[RecordedAnswer] = field(default_factory=list)

    async def read_body(self) -> bytes:
        return self.body[: self.body_limit + 1]

    async def client_disconnect(self) -> None:
        return None  # the client has always gone by the time a hang would wait for it

    def response_bytes(
        self, status: int, headers: ResponseHeaders, body: bytes, request_id: str = ""
    ) -> None:
        extra = [("x-ms-request-id", request_id)] if request_id else []
        self.answers.append(RecordedAnswer(status, [*headers, *extra], body))

    def reset(self) -> bool:
        return False  # no connection to reset: the answer is simply absent


async def call(
    app: App,
    method: str,
    path: str,
    query: bytes = b"",
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    client: str = "127.0.0.1:50000",
) -> list[RecordedAnswer]:
    """Every answer ``app`` gave to one request (a correct app gives exactly one). ``path`` is
    percent-decoded, ``query`` as sent, ``client`` the peer as ``host:port``."""
    exchange = InProcessExchange(
        method, path, query.decode("latin-1"), headers_of(headers), client, body, app.body_limit
    )
    pending = app.handle(exchange)
    if pending is not None:
        await pending
    return exchange.answers
