"""Helpers for the scheduled-events tests: the guest plane's document and approvals, and the
control plane's events and clock."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from tests.admin.support import admin
from tests.conftest import Server
from tests.http import Reply, get, send_raw

MANUAL = ("--clock", "manual", "--store", "memory:")
SE = "/metadata/scheduledevents"
CURRENT = "2020-07-01"
DEFAULT_VM = "examplevmname"  # the documentation's example VM: the caller in single mode
DEFAULT_VM_ID = "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
FIELDS = (
    "EventId",
    "EventStatus",
    "EventType",
    "ResourceType",
    "Resources",
    "NotBefore",
    "Description",
    "EventSource",
    "DurationInSeconds",
)
REBOOT_DESCRIPTION = "Virtual machine is going to be restarted as requested by authorized user."
FREEZE_DESCRIPTION = (
    "Virtual machine is being paused because of a memory-preserving Live Migration operation."
)
FAILURE_DESCRIPTION = "Virtual machine has encountered a failure."
NEWEST_VERSIONS_400 = (
    b'{"error":"Bad request. api-version is invalid or was not specified in the request. '
    b'For more information refer to aka.ms/azureimds",'
    b'"newest-versions":["2020-07-01","2019-08-01","2019-04-01"]}'
)
METADATA_400 = b'{ "error": "Bad request: . Required metadata header not specified" }'


def guest_get(
    node: Server, version: str | None = CURRENT, source: str | None = None, **kw: Any
) -> Reply:
    target = SE if version is None else f"{SE}?api-version={version}"
    return get(node.port, target, source=source, **kw)


def document(node: Server, version: str = CURRENT, source: str | None = None) -> dict[str, Any]:
    """The VM's scheduled-events document (200 and JSON asserted)."""
    reply = guest_get(node, version, source)
    assert reply.status == 200, reply
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    parsed = json.loads(reply.body)
    assert list(parsed) == ["DocumentIncarnation", "Events"]
    assert type(parsed["DocumentIncarnation"]) is int
    return parsed  # type: ignore[no-any-return]


def incarnation(node: Server, source: str | None = None) -> int:
    return int(document(node, source=source)["DocumentIncarnation"])


def shown(node: Server, source: str | None = None) -> dict[str, str]:
    """EventId -> EventStatus of the events the VM sees."""
    return {e["EventId"]: e["EventStatus"] for e in document(node, source=source)["Events"]}


def guest_post(
    node: Server,
    body: bytes,
    source: str | None = None,
    version: str | None = CURRENT,
    metadata: bool = True,
) -> Reply:
    target = SE if version is None else f"{SE}?api-version={version}"
    head = [
        f"POST {target} HTTP/1.1",
        "Host: 169.254.169.254",
        "Connection: close",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if metadata:
        head.append("Metadata: true")
    raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    return send_raw(node.port, raw, method="POST", source=source)


def start_requests(*event_ids: str) -> bytes:
    return json.dumps({"StartRequests": [{"EventId": i} for i in event_ids]}).encode()


def approve_as_guest(node: Server, event_id: str, source: str | None = None) -> Reply:
    return guest_post(node, start_requests(event_id), source)


def schedule(node: Server, **spec: Any) -> dict[str, Any]:
    """POST /v1/events (201 asserted); ``vms`` defaults to the default VM."""
    spec.setdefault("vms", [DEFAULT_VM])
    return dict(admin(node).schedule_event(spec))


def advance(node: Server, seconds: float) -> str:
    return admin(node).advance_clock(seconds)


def clock(node: Server) -> dict[str, Any]:
    return dict(admin(node).clock())


def all_events(node: Server) -> dict[str, dict[str, Any]]:
    """Every event the control plane knows, completed and canceled too, by eventId."""
    return {e["eventId"]: dict(e) for e in admin(node).events(everything=True)["events"]}


def status_of(node: Server, event_id: str) -> str:
    return str(all_events(node)[event_id]["status"])


def iso(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def rfc1123(text: str) -> str:
    """The control plane's ISO time as the guest plane's NotBefore shows it."""
    return iso(text).strftime("%a, %d %b %Y %H:%M:%S GMT")
