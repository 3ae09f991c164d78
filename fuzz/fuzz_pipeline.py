"""Fuzz the guest plane's request path: raw bytes as an HTTP/1.1 request head and body.

Each input is read as a request line, header lines and a body (``\\r\\n\\r\\n`` between head
and body; lenient, as the point is what reaches the app, not HTTP parsing itself, which
``fuzz_http1.py`` fuzzes). The request is answered three ways, and each answer must be one
docs/behaviour.md documents:

- by the app (``GuestApp``, called as ``serving/protocol.py`` calls it: the header scan, the
  memo, the request id), for the example VM;
- by ``pipeline.handle`` directly, for the VM and for an unknown caller (403);
- by ``query.parse_query``, which may refuse only with ``QueryRefused``.

A crash is an exception escaping any of these, or a broken invariant: a status outside 200,
400, 403, 404, 405; a Content-Length that is not the body's length; a JSON body that does not
parse; an error body outside its family's template; a refusal out of the documented order.

    python fuzz/fuzz_pipeline.py -max_total_time=60      # docs/reliability.md
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from urllib.parse import unquote_to_bytes

import atheris
from harness import main

with atheris.instrument_imports(include=["azimds"]):
    from azimds.fleet.vm import VM, example_vm
    from azimds.guest import errors
    from azimds.guest.app import GuestApp
    from azimds.guest.callers import SingleVM
    from azimds.guest.pipeline import handle
    from azimds.guest.query import QueryRefused, parse_query
    from azimds.guest.responses import HTML_TYPE, JSON_TYPE, TEXT_TYPE, XML_TYPE, Response
    from azimds.kit.fleet import example_fleet, services
    from azimds.kit.inprocess import call
    from azimds.store.memory import MemoryStore

DOCUMENTED = {200, 400, 403, 404, 405}
IDENTITY_CODES = {400: "invalid_request", 403: "forbidden", 404: "not_found"}
IDENTITY_CODES |= {405: "method_not_allowed"}


STORE = MemoryStore()
FLEET = example_fleet(STORE)
VM_ = FLEET.vms[example_vm().vm_id]
SERVICES = services(STORE)
APP = GuestApp(FLEET, SingleVM(), SERVICES)
LOOP = asyncio.new_event_loop()


def parse_request(data: bytes) -> tuple[str, bytes, bytes, list[tuple[bytes, bytes]], bytes]:
    """Method, raw path, query, headers (lower-cased names) and body, leniently."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    words = lines[0].split(b" ")
    method = words[0].decode("latin-1") or "GET"
    target = words[1] if len(words) > 1 else b"/"
    raw_path, _, query = target.partition(b"?")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            headers.append((name.strip().lower(), value.strip()))
    return method, raw_path, query, headers, body


def check_wire_shape(response: Response, path: str) -> None:
    """The documented wire shape of an answer (docs/behaviour.md)."""
    assert response.status in DOCUMENTED, response
    headers = dict(response.headers)
    assert headers["content-length"] == str(len(response.body)), response
    content_type = headers["content-type"]
    assert content_type in (JSON_TYPE, TEXT_TYPE, XML_TYPE, HTML_TYPE), response
    if not response.request_id:  # the IIS front end's two answers
        assert (response.status, content_type) in ((400, XML_TYPE), (404, HTML_TYPE)), response
        return
    if content_type != JSON_TYPE:
        return
    parsed = json.loads(response.body)
    if response.status < 400:
        return
    below = [segment for segment in path.split("/") if segment][1:2]
    if isinstance(parsed, dict) and "newest-versions" in parsed:
        assert response.status == 400 and len(parsed["newest-versions"]) == 3, response
    elif below == ["identity"]:
        assert list(parsed) == ["error", "error_description"], response
        assert parsed["error"] == IDENTITY_CODES[response.status], response
    else:
        match = re.fullmatch(rb'\{ "error": (".*") \}', response.body, re.DOTALL)
        assert match and isinstance(json.loads(match.group(1)), str), response


def check_order(
    response: Response, method: str, path: str, metadata: bytes | None, forwarded: bool
) -> None:
    """The first checks' answers, in the documented order."""
    parts = [segment for segment in path.split("/") if segment]
    if method not in ("GET", "POST"):
        assert response == errors.iis_invalid_verb(method), response
    elif not parts or parts[0].lower() != "metadata":
        assert response is errors.IIS_NOT_FOUND, response
    elif metadata is None or metadata.strip().lower() != b"true":
        family = errors.Family.IDENTITY if parts[1:2] == ["identity"] else errors.Family.INSTANCE
        assert response == family.metadata_header_missing(), response
    elif forwarded:
        assert response.status == 400 and b"X-Forwarded-For" in response.body, response


def resolve(method: str, path: str, query: bytes, metadata: bytes | None, forwarded: bool,
            caller: VM | str, body: bytes) -> Response:  # fmt: skip
    outcome = handle(method, path, query, metadata, forwarded, caller, FLEET, SERVICES, body)
    if outcome.response is not None:
        return outcome.response
    assert outcome.deferred is not None
    return LOOP.run_until_complete(outcome.deferred())


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_one_input(data: bytes) -> None:
    method, raw_path, query, headers, body = parse_request(data)
    # What the server hands the app: the path percent-decoded, the query as sent.
    path = unquote_to_bytes(raw_path).decode("utf-8", "replace")

    try:
        params = parse_query(query)
        assert all(isinstance(v, str) and k == k.lower() for k, v in params.items())
    except QueryRefused:
        pass

    metadata: bytes | None = None
    forwarded = False
    for name, value in headers:
        if name == b"metadata" and _is_utf8(value):  # the server passes on only UTF-8 values
            metadata = value if metadata is None else metadata + b", " + value
        elif name == b"x-forwarded-for":
            forwarded = True

    response = resolve(method, path, query, metadata, forwarded, VM_, body)
    check_wire_shape(response, path)
    check_order(response, method, path, metadata, forwarded)

    unknown = resolve(method, path, query, metadata, forwarded, "no VM has 10.0.0.9", body)
    check_wire_shape(unknown, path)
    if method in ("GET", "POST") and unknown.request_id:
        assert unknown.status == 403, unknown

    answers = LOOP.run_until_complete(
        call(APP, method, path, query, headers, body, "10.144.133.132:40000")
    )
    assert len(answers) == 1, answers
    sent = answers[0]
    assert sent.status in DOCUMENTED, sent
    assert sent.header("content-length") == str(len(sent.body)), sent
    # Tokens and signed documents carry times; every other answer is the pipeline's.
    if sent.status != 200 or not ("/identity/" in path or "/attested/" in path):
        assert (sent.status, sent.body) == (response.status, response.body), sent


if __name__ == "__main__":
    main("pipeline", test_one_input, smoke_runs=60_000)
    sys.exit(0)
