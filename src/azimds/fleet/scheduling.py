"""Changes to scheduled events, as store transactions: schedule, cancel, approve, advance;
and the checks of an event request before it (``parse_event``)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeGuard

from azimds.fleet.clock import parse_moment
from azimds.fleet.events import (
    DEFAULT_DURATION,
    DESCRIPTIONS,
    EVENT_KIND,
    FAILURE_DESCRIPTION,
    MIN_NOTICE,
    SOURCES,
    TYPES,
    VISIBLE,
    Event,
)
from azimds.fleet.operations import FleetError, delete_vm
from azimds.fleet.vm import VM, VM_KIND
from azimds.store.base import Transaction

# How far ahead an event or the event clock may be put (seconds): times stay printable dates.
MAX_AHEAD = 100 * 365 * 86400
REQUEST_FIELDS = (
    "type",
    "vms",
    "notBefore",
    "after",
    "duration",
    "description",
    "source",
    "unplanned",
)


def seconds_ahead(value: Any) -> TypeGuard[float]:
    """A number of seconds from now: 0 or more, at most ``MAX_AHEAD`` (not NaN)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= MAX_AHEAD
    )


def _moment(value: Any, now: float, where: str) -> float:
    moment = parse_moment(value, now)
    if moment is None or not 0 <= moment <= now + MAX_AHEAD:  # (NaN is neither)
        raise FleetError(
            "invalid",
            "a time is ISO 8601, epoch seconds or +SECONDS, at most 100 years ahead",
            where,
        )
    return moment


def parse_event(
    spec: Any, now: float, find_vm: Callable[[str], VM | None], where: str = ""
) -> tuple[dict[str, Any], dict[str, str]]:
    """Check an event request in its wire form (as ``schedule_event`` takes it); ``find_vm``
    finds a VM by name or vmId. Returns it with notBefore as epoch seconds, and its VMs
    (vmId -> name). ``where`` prefixes the field an error names (a scenario's entry)."""
    if not isinstance(spec, Mapping):
        raise FleetError("invalid", "an event is a JSON object with type and vms", where)
    unknown = set(spec) - set(REQUEST_FIELDS)
    if unknown:
        raise FleetError("invalid", f"unknown field {sorted(unknown)[0]}", where)
    names = spec.get("vms")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise FleetError("invalid", "vms is a list of VM names or vmIds", f"{where}vms")
    vms: dict[str, str] = {}
    for name in names:
        vm = find_vm(name)
        if vm is None:
            raise FleetError("not_found", f"no VM with vmId or name '{name}'", f"{where}vms")
        vms[vm.vm_id] = vm.name
    checked = dict(spec)
    if checked.get("notBefore") is not None:
        checked["notBefore"] = _moment(checked["notBefore"], now, f"{where}notBefore")
    after = checked.get("after")
    if after is not None and not seconds_ahead(after):
        raise FleetError(
            "invalid", "after is seconds from now (0 or more, at most 100 years)", f"{where}after"
        )
    return checked, vms


def _body(event: Event) -> dict[str, Any]:
    return {
        "type": event.type,
        "resources": list(event.resources),
        "names": list(event.names),
        "status": event.status,
        "appearsAt": event.appears_at,
        "notBefore": event.not_before,
        "startedAt": event.started_at,
        "duration": event.duration,
        "description": event.description,
        "source": event.source,
        "shown": event.shown or event.status in VISIBLE,
    }


def _event(txn: Transaction, event_id: str) -> Event:
    record = txn.get(EVENT_KIND, event_id)
    if record is None:
        raise FleetError("not_found", f"no event {event_id}")
    return Event.from_record(record.id, record.body, record.revision)


def _write(txn: Transaction, event: Event, **changes: Any) -> Event:
    updated = Event(**{**{f: getattr(event, f) for f in Event.__dataclass_fields__}, **changes})
    txn.put(EVENT_KIND, event.id, _body(updated))
    return updated


def schedule_event(
    txn: Transaction,
    spec: Mapping[str, Any],
    vms: Mapping[str, str],
    now: float,
    terminate_notice: int,
) -> Event:
    """Create an event from a control-plane request or a scenario entry.

    ``spec``: type, vms (resolved by the caller to ``vms``: vmId -> name), and optionally
    notBefore (emulated epoch seconds), after (seconds from now until it appears), duration,
    description, source, unplanned.
    """
    kind = spec.get("type")
    if kind not in TYPES:
        raise FleetError("invalid", f"type must be one of {', '.join(TYPES)}", "type")
    if not vms:
        raise FleetError("invalid", "an event affects at least one VM", "vms")
    notice = terminate_notice if kind == "Terminate" else MIN_NOTICE[kind]
    appears = now + float(spec.get("after") or 0)
    unplanned = bool(spec.get("unplanned"))
    if unplanned and kind != "Reboot":
        raise FleetError("invalid", "an unplanned failure is a Reboot", "unplanned")
    not_before = spec.get("notBefore")
    if not_before is None:
        not_before = appears + notice
    elif not unplanned and float(not_before) < appears + notice:
        raise FleetError(
            "invalid",
            f"NotBefore must be at least {notice} s after the event appears for a {kind}",
            "notBefore",
        )
    duration = spec.get("duration", DEFAULT_DURATION[kind])
    if not isinstance(duration, int) or isinstance(duration, bool) or duration < -1:
        raise FleetError("invalid", "duration is whole seconds, -1 for unknown", "duration")
    source = spec.get("source") or "Platform"
    if source not in SOURCES:
        raise FleetError("invalid", "source must be Platform or User", "source")
    description = spec.get("description")
    if description is None:
        description = FAILURE_DESCRIPTION if unplanned else DESCRIPTIONS[kind]
    event = Event(
        id=str(uuid.uuid4()).upper(),
        type=str(kind),
        resources=tuple(vms),
        names=tuple(vms.values()),
        status="Started" if unplanned else ("Pending" if appears > now else "Scheduled"),
        appears_at=appears,
        not_before=now if unplanned else float(not_before),
        started_at=now if unplanned else None,
        duration=duration,
        description=str(description),
        source=str(source),
        revision=0,
    )
    txn.put(EVENT_KIND, event.id, _body(event))
    return event


def cancel_event(txn: Transaction, event_id: str) -> Event:
    """Platform cancellation: a Pending or Scheduled event disappears."""
    event = _event(txn, event_id)
    if event.status not in ("Pending", "Scheduled"):
        raise FleetError(
            "conflict", f"event {event_id} is {event.status}; only scheduled events can be canceled"
        )
    return _write(txn, event, status="Canceled")


def approve_events(
    txn: Transaction, event_ids: Iterable[str], vm_id: str | None, now: float
) -> list[Event]:
    """Start the events (approval by one VM starts an event for all its VMs).

    With ``vm_id`` (a VM's own request) every id must be a visible event of that VM.
    """
    events = []
    for event_id in event_ids:
        record = txn.get(EVENT_KIND, event_id)
        event = Event.from_record(record.id, record.body, record.revision) if record else None
        if event is None or event.status not in VISIBLE or (vm_id and vm_id not in event.resources):
            raise FleetError("not_found", f"no scheduled event {event_id}")
        events.append(event)
    return [
        _write(txn, event, status="Started", started_at=now)
        if event.status == "Scheduled"
        else event
        for event in events
    ]


def advance_events(txn: Transaction, now: float) -> list[tuple[str, str]]:
    """Apply every transition due at ``now``; returns (event id, new status) pairs."""
    txn.lock()
    done = []
    for record in txn.objects(EVENT_KIND):
        event = Event.from_record(record.id, record.body, record.revision)
        status = event.due(now)
        while status is not None:
            # A clock that jumped ahead still lets each step happen when it was due.
            started = event.not_before if status == "Started" else event.started_at
            event = _write(txn, event, status=status, started_at=started)
            done.append((event.id, status))
            if status == "Completed" and event.type in ("Preempt", "Terminate"):
                for vm_id in event.resources:  # deallocated: gone from the fleet
                    if txn.get(VM_KIND, vm_id) is not None:
                        delete_vm(txn, vm_id)
            status = event.due(now)
    return done
