"""Fault rules: list, add, read, remove one, remove all (docs/faults.md)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from azimds.admin.core import ApiError, Control, Parameter, Returns, Routes, Schema, read_json
from azimds.fleet.faults import FaultError, add_fault, clear_faults, parse_rule, remove_fault

ACTION = {
    "description": "410, 429, 500 or 503 (the real service's body), reset, hang or pass; or "
    "an object such as {status: 429, retryAfter: 5, delay: 0.2}",
    "oneOf": [
        {"type": "integer", "enum": [410, 429, 500, 503]},
        {"type": "string", "enum": ["410", "429", "500", "503", "reset", "hang", "pass"]},
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "status": {"type": "integer", "enum": [410, 429, 500, 503]},
                "retryAfter": {"type": "integer", "minimum": 0, "maximum": 86400},
                "delay": {"type": "number", "minimum": 0, "maximum": 300},
                "reset": {"type": "boolean"},
                "hang": {"type": "boolean"},
                "pass": {"type": "boolean"},
            },
        },
    ],
}
FAULT_REQUEST = Schema(
    "FaultRequest",
    {
        "type": "object",
        "additionalProperties": False,
        "description": "Which requests a rule fires on, and what it does: one action repeats, "
        "several run in turn once each (count defaults to their number) and the rule is spent.",
        "properties": {
            "vm": {"type": "string", "description": "A VM name or vmId (default: every VM)"},
            "path": {"type": "string", "description": "A path prefix (default /metadata)"},
            "method": {"type": "string", "enum": ["GET", "POST"]},
            "probability": {"type": "number", "minimum": 0, "maximum": 1},
            "count": {"type": "integer", "minimum": 1},
            "from": {"type": ["string", "number"], "description": "ISO 8601, epoch or +SECONDS"},
            "until": {"type": ["string", "number"], "description": "ISO 8601, epoch or +SECONDS"},
            "delay": {"type": "number", "minimum": 0, "maximum": 300},
            "retryAfter": {"type": "integer", "minimum": 0, "maximum": 86400},
            "action": ACTION,
            "actions": {"type": "array", "items": ACTION},
        },
    },
)
FAULT = Schema(
    "Fault",
    {
        "type": "object",
        "description": "A rule, with fired, remaining and active on this node",
        "properties": {"id": {"type": "string"}, "fired": {"type": "integer"}},
    },
)
FAULTS = Schema("Faults", {"type": "object", "properties": {"faults": {"type": "array"}}})
REMOVED = {"type": "object", "properties": {"removed": {"type": "integer"}}}
FAULT_PARAMETER = Parameter("fault", "The rule's id")
ROUTES = Routes(FAULT_PARAMETER)


@ROUTES.add("GET", "/v1/faults", Returns(200, "Rules", FAULTS))
async def list_faults(control: Control, request: Request) -> Response:
    """Fault rules, oldest first (the first that fires wins).

    Each with how often it fired on this node.
    """
    faults = control.observed.faults
    return JSONResponse({"faults": [faults.state(rule) for rule in control.node.served.faults]})


@ROUTES.add("POST", "/v1/faults", Returns(201, "Added", FAULT), body=FAULT_REQUEST, errors=(404,))
async def add(control: Control, request: Request) -> Response:
    """Add a fault rule."""
    spec = await read_json(request)
    fleet = control.node.served

    def find_vm(key: str) -> str | None:
        vm = fleet.find(key)
        return vm.vm_id if vm is not None else None

    try:
        rule = parse_rule(spec, time.time(), find_vm)
    except FaultError as exc:
        status = 404 if exc.where == "vm" else 400
        code = "not_found" if status == 404 else "invalid"
        raise ApiError(status, code, str(exc), exc.where) from exc
    added = await control.write(lambda txn: add_fault(txn, rule))
    return JSONResponse(control.observed.faults.state(added), status_code=201)


@ROUTES.add("DELETE", "/v1/faults", Returns(200, "How many were removed", REMOVED))
async def clear(control: Control, request: Request) -> Response:
    """Remove every fault rule (the fleet file's return when it is applied again)."""
    removed = await control.write(clear_faults)
    return JSONResponse({"removed": removed})


@ROUTES.add("GET", "/v1/faults/{fault}", Returns(200, "Rule", FAULT), errors=(404,))
async def show(control: Control, request: Request) -> Response:
    """One fault rule."""
    rule_id = request.path_params["fault"]
    for rule in control.node.served.faults:
        if rule.id == rule_id:
            return JSONResponse(control.observed.faults.state(rule))
    raise ApiError(404, "not_found", f"no fault rule {rule_id}")


@ROUTES.add("DELETE", "/v1/faults/{fault}", Returns(204, "Removed"), errors=(404,))
async def remove(control: Control, request: Request) -> Response:
    """Remove a fault rule."""
    rule_id = request.path_params["fault"]
    if not await control.write(lambda txn: remove_fault(txn, rule_id)):
        raise ApiError(404, "not_found", f"no fault rule {rule_id}")
    return Response(status_code=204)
