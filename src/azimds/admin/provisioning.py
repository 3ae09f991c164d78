"""A VM's provisioning state: what its agents reported to the WireServer, and the reset a
re-image would be (``fleet/provisioning.py``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from azimds.admin.core import Control, Returns, Routes, Schema
from azimds.admin.vms import VM_PARAMETER
from azimds.fleet.provisioning import STATES, reset

PROVISIONING = Schema(
    "Provisioning",
    {
        "type": "object",
        "required": ["state", "incarnation", "reports"],
        "properties": {
            "state": {"type": "string", "enum": list(STATES)},
            "incarnation": {"type": "integer", "description": "The goal state's incarnation"},
            "reports": {
                "type": "array",
                "description": "The agents' health reports, oldest first",
                "items": {
                    "type": "object",
                    "properties": {
                        "time": {"type": "number", "description": "Epoch seconds"},
                        "agent": {"type": "string", "description": "User-Agent (or agent name)"},
                        "status": {"type": "string"},
                        "substatus": {"type": "string"},
                        "description": {"type": "string"},
                        "incarnation": {"type": ["integer", "null"]},
                    },
                },
            },
        },
    },
)
ROUTES = Routes(VM_PARAMETER)


@ROUTES.add(
    "GET", "/v1/vms/{vm}/provisioning", Returns(200, "The state", PROVISIONING), errors=(404,)
)
async def show(control: Control, request: Request) -> Response:
    """A VM's provisioning state: state, incarnation, the agents' reports."""
    vm = await control.resolve(request)
    return JSONResponse(control.node.served.provisioning_of(vm.vm_id).json())


@ROUTES.add(
    "POST", "/v1/vms/{vm}/provisioning/reset", Returns(200, "Reset", PROVISIONING), errors=(404,)
)
async def reset_provisioning(control: Control, request: Request) -> Response:
    """Make a VM not provisioned again, with a new incarnation (as a re-image would)."""
    vm_id = (await control.resolve(request)).vm_id
    return JSONResponse((await control.write(lambda txn: reset(txn, vm_id))).json())
