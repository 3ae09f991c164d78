"""``/metadata/scheduledevents``: a VM's events, and approving them (reference section 6).

GET shows the VM's Scheduled and Started events, shaped by api-version; POST with
``{"StartRequests":[{"EventId":"..."}]}`` approves (starts) them for every VM they affect.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from azimds.fleet.events import VISIBLE, Event, unknown_to
from azimds.fleet.scheduling import approve_events
from azimds.fleet.snapshot import Fleet
from azimds.fleet.vm import VM
from azimds.guest import errors
from azimds.guest.endpoint import EndpointAnswer, ValidRequest
from azimds.guest.responses import Response, json_response, make
from azimds.store.base import StoreError, Transaction

MAX_BODY = 64 * 1024  # bytes of a POST body
# An approval's answer: 200, no body and so no Content-Type, which a client that parses by
# content type would choke on (docs/behaviour.md).
EMPTY_OK = make(200, None, b"")


def _rfc1123(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def render_event(event: Event, version: str) -> dict[str, Any] | None:
    """One event as ``version`` shows it; None for a type the version does not know."""
    if (event.type == "Preempt" and version < "2017-11-01") or (
        event.type == "Terminate" and version < "2019-01-01"
    ):
        return None
    # Before 2017-08-01 the names of IaaS VMs carried a leading underscore.
    names = [f"_{name}" for name in event.names] if version < "2017-08-01" else list(event.names)
    shown: dict[str, Any] = {
        "EventId": event.id,
        "EventStatus": event.status,
        "EventType": event.type,
        "ResourceType": "VirtualMachine",
        "Resources": names,
        "NotBefore": _rfc1123(event.not_before) if event.status == "Scheduled" else "",
    }
    if version >= "2019-04-01":
        shown["Description"] = event.description
    if version >= "2019-08-01":
        shown["EventSource"] = event.source
    if version >= "2020-07-01":
        shown["DurationInSeconds"] = event.duration
    return shown


def document(fleet: Fleet, vm: VM, version: str) -> Response:
    events = fleet.events_of(vm.vm_id)
    # Every change to this VM's list is a store write, so the newest revision among the events
    # that were ever on it only grows (and only when the list changes).
    incarnation = max((e.revision for e in events if e.shown), default=0)
    shown = [render_event(e, version) for e in events if e.status in VISIBLE]
    return json_response(
        {"DocumentIncarnation": incarnation, "Events": [e for e in shown if e is not None]}
    )


def _start_requests(body: bytes) -> list[str] | None:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        return None
    requests = parsed.get("StartRequests") if isinstance(parsed, dict) else None
    if not isinstance(requests, list) or not requests:
        return None
    ids = [r.get("EventId") for r in requests if isinstance(r, dict)]
    if len(ids) != len(requests) or not all(isinstance(i, str) and i for i in ids):
        return None
    found = [str(i) for i in ids]
    if not all(_encodable(i) for i in found):  # "\ud800": no store key, no answer can say it
        return None
    return found


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


T = TypeVar("T")


class Writer(Protocol):
    """Where approvals are written: the node (``node/follower.Node``), which runs the work in
    one store transaction and returns once it serves the change."""

    async def write(self, work: Callable[[Transaction], T]) -> T: ...


class EventsService:
    """Approvals write to the store; the node's snapshot then shows the change.

    With ``first_call_delay`` a VM's first request waits that long, as the real service
    does while it enables Scheduled Events for a VM ("up to two minutes").
    """

    def __init__(
        self,
        node: Writer,
        first_call_delay: float = 0.0,
        real_time: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.first_call_delay = first_call_delay
        self.real_time = real_time
        self._enabled: set[str] = set()

    def enabling(self, vm: VM) -> bool:
        """Whether this request is the VM's first, which waits."""
        return self.first_call_delay > 0 and vm.vm_id not in self._enabled

    async def enable(self, fleet: Fleet, vm: VM, version: str) -> Response:
        await asyncio.sleep(self.first_call_delay)
        self._enabled.add(vm.vm_id)
        return document(fleet, vm, version)

    async def approve(self, fleet: Fleet, vm: VM, body: bytes) -> Response:
        if len(body) > MAX_BODY:
            return errors.body_too_large(MAX_BODY)
        ids = _start_requests(body)
        if ids is None:
            return errors.BAD_APPROVAL_BODY
        now = fleet.clock.now(self.real_time())

        def work(txn: Transaction) -> str | None:
            """The id refused, checked in the same transaction that approves."""
            unknown = unknown_to(txn, ids, vm.vm_id)
            if unknown is None:
                approve_events(txn, ids, vm.vm_id, now)
            return unknown

        try:
            unknown = await self.node.write(work)
        except StoreError:
            return errors.Family.INSTANCE.unavailable(errors.SERVICE_UNAVAILABLE)
        return EMPTY_OK if unknown is None else errors.unknown_event(unknown)


def scheduled_events(request: ValidRequest) -> EndpointAnswer:
    """``/metadata/scheduledevents``: GET the VM's events, POST approvals."""
    events = request.services.events
    fleet, vm, version = request.fleet, request.vm, request.version
    if request.method == "POST":
        if events is None:
            return errors.Family.INSTANCE.unavailable(errors.SERVICE_UNAVAILABLE)
        body = request.body
        return lambda: events.approve(fleet, vm, body)
    if events is not None and events.enabling(vm):
        return lambda: events.enable(fleet, vm, version)
    return document(fleet, vm, version)
