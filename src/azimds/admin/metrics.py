"""What the node reports about itself: its status, the guest request log, Prometheus metrics."""

from __future__ import annotations

import asyncio
import os
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from azimds import __version__
from azimds.admin.core import ApiError, Control, Parameter, Returns, Routes, Schema
from azimds.fleet.provisioning import STATES
from azimds.guest.observe import prometheus
from azimds.store.base import StoreError

STATUS = Schema(
    "Status",
    {
        "type": "object",
        "properties": {
            "version": {"type": "string"},
            "revision": {"type": "integer", "description": "store revision served"},
            "store": {"type": "string", "description": "its URL, no password"},
            "storeReachable": {"type": "boolean"},
            "callerMode": {"type": "string"},
            "vms": {"type": "integer"},
            "defaultVm": {"type": ["string", "null"]},
            "guest": {"type": "array", "items": {"type": "string"}},
            "controlPlane": {"type": "string"},
            "wireserver": {"type": ["string", "null"], "description": "null: not served"},
            "hostplugin": {"type": ["string", "null"], "description": "null: not served"},
            "uptime": {"type": "number", "description": "seconds since start-up"},
            "pid": {"type": "integer"},
        },
    },
)
TEXT = {"type": "string"}
REQUESTS = Schema("Requests", {"type": "object", "properties": {"requests": {"type": "array"}}})
ROUTES = Routes()


@ROUTES.add("GET", "/v1/status", Returns(200, "Status", STATUS))
async def status(control: Control, request: Request) -> Response:
    """The node: revision served, store, VM count, listeners (the WireServer's too), uptime,
    pid."""
    fleet = control.node.served
    return JSONResponse(
        {
            "version": __version__,
            "revision": fleet.revision,
            "store": control.node.store.url,
            "storeReachable": not control.node.outage,
            "callerMode": control.caller_mode,
            "vms": len(fleet.vms),
            "defaultVm": fleet.default_vm_id,
            "guest": control.guest,
            "controlPlane": control.url,
            "wireserver": control.wire.get("wireserver"),
            "hostplugin": control.wire.get("hostplugin"),
            "uptime": round(time.monotonic() - control.started, 3),
            "pid": os.getpid(),
        }
    )


@ROUTES.add(
    "GET",
    "/v1/requests",
    Returns(200, "Requests", REQUESTS),
    errors=(400,),
    query=(Parameter("since", type="integer"), Parameter("limit", type="integer")),
)
async def requests(control: Control, request: Request) -> Response:
    """The guest requests this node answered (its last 10,000).

    The entries after ``since`` (a sequence number), oldest first; ``limit`` of them at most
    (1,000 unless given, never over 10,000).
    """
    try:
        since = int(request.query_params.get("since", "0"))
        limit = min(int(request.query_params.get("limit", "1000")), 10_000)
    except ValueError as exc:
        raise ApiError(400, "invalid", "since and limit are whole numbers") from exc
    entries = control.observed.recorder.since(since, limit)
    return JSONResponse({"requests": [entry.json() for entry in entries]})


@ROUTES.add(
    "GET", "/metrics", Returns(200, "Metrics, text format 0.0.4", TEXT, "text/plain"), public=True
)
async def metrics(control: Control, request: Request) -> Response:
    """Prometheus metrics.

    Requests, latency, tokens, documents, events, store lag, in Prometheus's text format.
    """
    fleet = control.node.served
    observed = control.observed
    services = observed.services
    try:
        lag = float(await asyncio.to_thread(control.node.store.revision) - fleet.revision)
    except StoreError:
        lag = float("nan")
    states: dict[str, int] = {}
    for event in fleet.events.values():
        states[event.status] = states.get(event.status, 0) + 1
    provisioned = dict.fromkeys(STATES, 0)
    for vm_id in fleet.vms:
        provisioned[fleet.provisioning_of(vm_id).state] += 1
    gauges: dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]] = {
        "azimds_tokens_issued_total": (
            "Managed-identity tokens minted (cache misses).",
            {(): float(services.tokens.issued if services.tokens else 0)},
        ),
        "azimds_attested_documents_signed_total": (
            "Attested documents signed.",
            {(): float(services.attested.signed if services.attested else 0)},
        ),
        "azimds_events": (
            "Scheduled events by state.",
            {(("state", state),): float(count) for state, count in sorted(states.items())},
        ),
        "azimds_faults_total": (
            "Fault-rule firings on this node by action (410, 429, 500, 503, reset, hang, pass).",
            {
                (("action", action),): float(count)
                for action, count in sorted(observed.faults.outcomes.items())
            },
        ),
        "azimds_guest_connections": (
            "Guest-plane connections open.",
            {(): float(observed.clients.open)},
        ),
        "azimds_guest_connections_closed_total": (
            "Guest-plane connections the node ended itself, by reason: per_client (closed "
            "as they came: the address had --connections-per-client open), write_timeout "
            "(its answers went unread for --request-timeout).",
            {
                (("reason", "per_client"),): float(observed.clients.refused),
                (("reason", "write_timeout"),): float(observed.clients.write_timeouts),
            },
        ),
        "azimds_vms": ("VMs this node serves.", {(): float(len(fleet.vms))}),
        "azimds_vms_provisioning": (
            "VMs this node serves by provisioning state, as their agents reported it.",
            {(("state", state),): float(count) for state, count in provisioned.items()},
        ),
        "azimds_store_revision_lag": (
            "Store revisions not yet served by this node (NaN: store unreachable).",
            {(): lag},
        ),
    }
    return Response(prometheus(observed.recorder, gauges), media_type="text/plain; version=0.0.4")
