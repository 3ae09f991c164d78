"""Scheduled events (schedule, a timed scenario, cancel, approve, list) and their clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from azimds.admin.core import (
    ApiError,
    Control,
    Parameter,
    Returns,
    Routes,
    Schema,
    read_json,
    refused,
)
from azimds.fleet.clock import advance_clock
from azimds.fleet.events import SOURCES, TYPES, Event
from azimds.fleet.operations import FleetError
from azimds.fleet.scheduling import (
    MAX_AHEAD,
    approve_events,
    cancel_event,
    parse_event,
    schedule_event,
    seconds_ahead,
)
from azimds.store.base import Transaction

ENGINE_SETTLE = 0.5  # seconds an advance waits for the event engine to apply due transitions
EVENT_REQUEST_JSON = {
    "type": "object",
    "required": ["type", "vms"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string", "enum": list(TYPES)},
        "vms": {"type": "array", "items": {"type": "string"}},
        "notBefore": {"type": ["string", "number"]},
        "after": {"type": "number", "minimum": 0, "maximum": MAX_AHEAD},
        "duration": {"type": "integer", "minimum": -1},
        "description": {"type": "string"},
        "source": {"type": "string", "enum": list(SOURCES)},
        "unplanned": {"type": "boolean"},
    },
}
EVENT_REQUEST = Schema("EventRequest", EVENT_REQUEST_JSON)
SCENARIO = Schema(
    "Scenario",
    {
        "type": "object",
        "required": ["events"],
        "properties": {"events": {"type": "array", "items": EVENT_REQUEST_JSON}},
    },
)
EVENT = Schema("Event", {"type": "object", "properties": {"eventId": {"type": "string"}}})
EVENTS = Schema("Events", {"type": "object", "properties": {"events": {"type": "array"}}})
CLOCK = Schema("Clock", {"type": "object", "properties": {"now": {"type": "string"}}})
ADVANCE = {
    "type": "object",
    "required": ["seconds"],
    "properties": {
        "seconds": {
            "type": "number",
            "minimum": 0,
            "maximum": MAX_AHEAD,
            "description": "The clock stays within 100 years of real time",
        }
    },
}
EVENT_PARAMETER = Parameter("event", "The EventId")
ROUTES = Routes(EVENT_PARAMETER)


def _iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now(control: Control) -> float:
    """The event clock's time, which may run ahead of real time."""
    return control.node.served.clock.now(time.time())


def _json(event: Event) -> dict[str, Any]:
    return {
        "eventId": event.id,
        "type": event.type,
        "status": event.status,
        "vms": list(event.resources),
        "names": list(event.names),
        "appearsAt": _iso(event.appears_at),
        "notBefore": _iso(event.not_before),
        "startedAt": _iso(event.started_at) if event.started_at is not None else None,
        "durationInSeconds": event.duration,
        "description": event.description,
        "source": event.source,
    }


def _parse(
    control: Control, body: Any, now: float, where: str = ""
) -> tuple[dict[str, Any], dict[str, str]]:
    try:
        return parse_event(body, now, control.node.served.find, where)
    except FleetError as exc:
        raise refused(exc) from exc


async def _schedule(
    control: Control,
    specs: list[tuple[dict[str, Any], dict[str, str]]],
    now: float,
    scenario: bool = False,
) -> list[Event]:
    def work(txn: Transaction) -> list[Event]:
        events = []
        for index, (spec, vms) in enumerate(specs):
            try:
                events.append(schedule_event(txn, spec, vms, now, control.terminate_notice))
            except FleetError as exc:
                if scenario:  # name the entry, as the checks before do
                    raise FleetError(exc.kind, str(exc), f"events[{index}].{exc.where}") from exc
                raise
        return events

    return await control.write(work)


@ROUTES.add("GET", "/v1/events", Returns(200, "Events", EVENTS))
async def list_events(control: Control, request: Request) -> Response:
    """Scheduled events (add ?all=true for completed and canceled)."""
    events = sorted(control.node.served.events.values(), key=lambda e: (e.appears_at, e.id))
    wanted = request.query_params.get("all") == "true"
    shown = [e for e in events if wanted or e.status not in ("Completed", "Canceled")]
    return JSONResponse({"now": _iso(_now(control)), "events": [_json(e) for e in shown]})


@ROUTES.add(
    "POST", "/v1/events", Returns(201, "Scheduled", EVENT), body=EVENT_REQUEST, errors=(404,)
)
async def post_event(control: Control, request: Request) -> Response:
    """Schedule an event."""
    now = _now(control)
    spec = _parse(control, await read_json(request), now)
    (event,) = await _schedule(control, [spec], now)
    return JSONResponse(_json(event), status_code=201)


@ROUTES.add(
    "POST", "/v1/events/scenario", Returns(201, "Scheduled", EVENTS), body=SCENARIO, errors=(404,)
)
async def run_scenario(control: Control, request: Request) -> Response:
    """Schedule a timed sequence of events (after: seconds from now)."""
    body = await read_json(request)
    entries = body.get("events") if isinstance(body, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ApiError(400, "invalid", 'a scenario is {"events": [...]}', "events")
    now = _now(control)
    specs = [_parse(control, entry, now, f"events[{i}].") for i, entry in enumerate(entries)]
    events = await _schedule(control, specs, now, scenario=True)
    return JSONResponse({"events": [_json(e) for e in events]}, status_code=201)


@ROUTES.add("DELETE", "/v1/events/{event}", Returns(204, "Canceled"), errors=(404, 409))
async def delete_event(control: Control, request: Request) -> Response:
    """Cancel a pending or scheduled event."""
    event_id = request.path_params["event"]
    await control.write(lambda txn: cancel_event(txn, event_id))
    return Response(status_code=204)


@ROUTES.add("POST", "/v1/events/{event}/approve", Returns(200, "Started", EVENT), errors=(404,))
async def approve_event(control: Control, request: Request) -> Response:
    """Approve (start) an event, as one of its VMs would."""
    event_id = request.path_params["event"]
    now = _now(control)
    (event,) = await control.write(lambda txn: approve_events(txn, [event_id], None, now))
    return JSONResponse(_json(event))


@ROUTES.add("GET", "/v1/clock", Returns(200, "Clock", CLOCK))
async def show_clock(control: Control, request: Request) -> Response:
    """The event clock."""
    clock = control.node.served.clock
    mode = "manual" if clock.scale == 0 else "real"
    return JSONResponse({"now": _iso(_now(control)), "mode": mode, "scale": clock.scale})


@ROUTES.add("POST", "/v1/clock/advance", Returns(200, "Advanced", CLOCK), body=ADVANCE)
async def advance(control: Control, request: Request) -> Response:
    """Move the event clock forward; due transitions happen at once."""
    body = await read_json(request)
    seconds = body.get("seconds") if isinstance(body, dict) else None
    if not seconds_ahead(seconds) or _now(control) + seconds > time.time() + MAX_AHEAD:
        raise ApiError(
            400,
            "invalid",
            'give {"seconds": N} with N 0 or more, the clock at most 100 years ahead',
            "seconds",
        )
    clock = await control.write(lambda txn: advance_clock(txn, float(seconds), time.time()))
    # Let the event engine apply what fell due; the answer shows the state after it.
    await asyncio.sleep(ENGINE_SETTLE)
    return JSONResponse({"now": _iso(clock.now(time.time()))})
