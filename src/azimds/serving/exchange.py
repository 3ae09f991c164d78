"""The contract between the guest plane's server and its app, in one place.

The server (``protocol.py``) hands the app (``App``, the guest plane's ``GuestApp``) each
request as one ``Exchange``: the request, its body and its answer. The app answers
synchronously where it can (``handle`` returns None) or returns an awaitable that answers.
``kit/inprocess.py`` keeps the same contract without a socket. The Protocols are for the type
checker only: nothing checks them at run time, the server calls ``handle`` directly.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

# An answer's headers as the app gives them: names in lower case, sent as given and in order.
ResponseHeaders = tuple[tuple[str, str], ...]

# How an answer closes its connection; the only header of the app's that the server reads.
CLOSE: tuple[str, str] = ("connection", "close")
# The headers of an empty refusal of a body that stopped short or came late.
ABANDONED_HEADERS: ResponseHeaders = (CLOSE,)


class RequestHeaders(Protocol):
    """What the app reads of a request's headers (names in lower case). A value that is not
    UTF-8 is left out of ``get_all`` but its name is still ``in`` the headers."""

    def get_all(self, key: str) -> list[str]: ...

    def __contains__(self, key: str) -> bool: ...


class Exchange(Protocol):
    """One request as the app sees it, and the calls it answers with. ``path`` is
    percent-decoded; ``query_string`` holds the raw query's bytes as Latin-1 characters;
    ``client`` is ``host:port`` (an IPv6 host in brackets)."""

    method: str
    path: str
    query_string: str
    client: str

    @property
    def headers(self) -> RequestHeaders: ...

    def read_body(self) -> Awaitable[bytes]:
        """The whole body, at most ``App.body_limit`` + 1 bytes of it (the app refuses more).
        Raises ``BodyAbandoned``."""
        ...

    def client_disconnect(self) -> Awaitable[None]:
        """Return once the client has gone."""
        ...

    def response_bytes(
        self, status: int, headers: ResponseHeaders, body: bytes, request_id: str = ""
    ) -> None:
        """Answer, once: ``headers`` as given, then ``x-ms-request-id`` (unless ""),
        ``content-length`` (unless among the headers) and ``date``. ``CLOSE`` among the
        headers closes the connection after the answer."""
        ...

    def reset(self) -> bool:
        """Drop the connection with a TCP reset instead of an answer (fault rules); False
        where it has already gone."""
        ...


class App(Protocol):
    """The guest plane's app as the server calls it."""

    body_limit: int  # bytes of a body the server keeps; read_body returns at most one more

    def handle(self, exchange: Exchange) -> Awaitable[None] | None:
        """Answer ``exchange`` (``response_bytes``) and return None, or return an awaitable
        that answers it. An app that ends without answering drops the connection; one that
        raises gets a logged 500."""
        ...


class BodyAbandoned(Exception):
    """A request's body stopped short (400: the client closed, or broke the chunked encoding)
    or did not arrive within ``request_timeout`` (408)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status

    def answer(self, exchange: Exchange) -> None:
        """Refuse the request: empty, and the connection closes."""
        exchange.response_bytes(self.status, ABANDONED_HEADERS, b"")
