"""Pre-rendered guest-plane responses: status, headers and body bytes, built once.

A ``Response`` is immutable and carries everything but the per-request ``x-ms-request-id``,
so the same object can be cached and sent any number of times.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from azimds.serving.exchange import ResponseHeaders

# The real service's Server header (build seen in 2026 captures, reference section 1).
IMDS_SERVER_HEADER = "IMDS/150.870.65.1854"

JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
XML_TYPE = "text/xml; charset=utf-8"
HTML_TYPE = "text/html"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: ResponseHeaders
    body: bytes
    # IMDS itself stamps every answer with a request id; the IIS front end does not.
    request_id: bool = True
    # The one rule of whether an answer may be sent again to the same request (the memo in
    # guest/app.py keeps what ``reusable`` allows, until then): None, for as long as the node
    # serves this fleet snapshot; a time.time() until which it stays right (a token's
    # expires_in counts seconds); NEVER, not at all (a signed document, a 503).
    until: float | None = None

    @property
    def reusable(self) -> bool:
        return self.until is None or self.until > NEVER


NEVER = 0.0  # an ``until`` long past: stale at once


def make(
    status: int,
    content_type: str | None,
    body: bytes,
    server: str = IMDS_SERVER_HEADER,
    until: float | None = None,
) -> Response:
    """``content_type`` None: no Content-Type header, for an empty body."""
    typed = (("content-type", content_type),) if content_type is not None else ()
    headers = (*typed, ("server", server), ("content-length", str(len(body))))
    return Response(status, headers, body, request_id=server == IMDS_SERVER_HEADER, until=until)


def compact_json(value: Any) -> bytes:
    """IMDS JSON: no whitespace, no trailing newline, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_response(value: Any, status: int = 200, until: float | None = None) -> Response:
    return make(status, JSON_TYPE, compact_json(value), until=until)


def text_response(text: str, status: int = 200) -> Response:
    return make(status, TEXT_TYPE, text.encode("utf-8"))
