"""VMs: list, create, read, replace, merge-patch, delete; the VM schema from the fleet model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from azimds.admin.core import Body, Control, Parameter, Returns, Routes, Schema, read_json
from azimds.fleet import schema
from azimds.fleet.identity import USER_KEYS
from azimds.fleet.limits import LIMIT_KEYS
from azimds.fleet.loadbalancer import SECTIONS
from azimds.fleet.operations import create_vm, delete_vm, patch_vm, replace_vm
from azimds.fleet.vm import VM
from azimds.store.base import Transaction

NULLABLE_TEXT = {"type": ["string", "null"]}
# azimds's own parts of a VM description (fleet/identity.py, loadbalancer.py, limits.py): what
# they accept, which includes what a VM's description shows (ids filled in, ports as integers).
VM_IDENTITY = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "description": "Managed identities (docs/identity.md); ids not given are derived",
    "properties": {
        "systemAssigned": {
            "type": ["boolean", "object", "null"],
            "additionalProperties": False,
            "properties": {"enabled": {"type": "boolean"}}
            | {key: NULLABLE_TEXT for key in ("clientId", "objectId", "tenantId")},
        },
        "userAssigned": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {key: NULLABLE_TEXT for key in USER_KEYS},
            },
        },
    },
}
VM_LOAD_BALANCER = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "description": "What /metadata/loadbalancer shows; null: behind no Standard Load Balancer",
    "properties": {
        name: {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    key: {"type": ["integer", "string", "null"]}
                    if key in integers
                    else {"type": ["string", "number", "boolean", "null"]}
                    for key in keys
                },
            },
        }
        for name, (keys, integers) in SECTIONS.items()
    },
}
VM_LIMITS = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "description": "The VM's own rate limits (0: none); null: the node's",
    "properties": {key: {"type": "number", "minimum": 0} for key in LIMIT_KEYS},
}


def _vm_schema() -> dict[str, Any]:
    compute = schema.json_schema(schema.COMPUTE)
    compute["properties"]["tags"]["type"] = ["string", "object", "null"]
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "compute": compute,
            "network": schema.json_schema(schema.NETWORK),
            "extended": schema.json_schema(schema.EXTENDED),
            "reprovisionData": NULLABLE_TEXT,
            "identity": VM_IDENTITY,
            "loadBalancer": VM_LOAD_BALANCER,
            "limits": VM_LIMITS,
        },
    }


VM_SCHEMA = Schema("VM", _vm_schema())
VM_SUMMARY = Schema(
    "VMSummary",
    {
        "type": "object",
        "properties": {k: {"type": "string"} for k in ("vmId", "name", "location", "vmSize")}
        | {"addresses": {"type": "array", "items": {"type": "string"}}}
        | {"provisioning": {"type": "string", "description": "The provisioning state"}},
    },
)
VM_LIST = Schema(
    "VMList",
    {
        "type": "object",
        "properties": {
            "revision": {"type": "integer"},
            "vms": {"type": "array", "items": VM_SUMMARY},
        },
    },
)
VM_PARAMETER = Parameter("vm", "The VM's vmId, or its name when no other VM has that name")
MERGE_PATCH = Body({"type": "object"}, media=("application/merge-patch+json", "application/json"))
ROUTES = Routes(VM_PARAMETER)


def shown(vm: VM) -> dict[str, Any]:
    """A VM's description as the control plane shows it: its secrets masked (``***``)."""
    description = vm.description()
    description.update(schema.masked(schema.INSTANCE, vm.document))
    return description


def summary(vm: VM) -> dict[str, Any]:
    compute = vm.document["compute"]
    return {
        "vmId": vm.vm_id,
        "name": vm.name,
        "addresses": list(vm.addresses),
        "location": compute["location"],
        "vmSize": compute["vmSize"],
    }


async def change_vm(
    control: Control, request: Request, operation: Callable[[Transaction, str, Any], VM]
) -> VM:
    """Apply ``operation`` with the request's body to the VM the path names (a 404 before the
    body is read); the VM as changed."""
    vm_id = (await control.resolve(request)).vm_id
    body = await read_json(request)
    return await control.write(lambda txn: operation(txn, vm_id, body))


@ROUTES.add("GET", "/v1/vms", Returns(200, "The VMs", VM_LIST))
async def list_vms(control: Control, request: Request) -> Response:
    """List VMs."""
    fleet = control.node.served
    vms = sorted(fleet.vms.values(), key=lambda vm: (vm.name, vm.vm_id))
    shown = [summary(vm) | {"provisioning": fleet.provisioning_of(vm.vm_id).state} for vm in vms]
    return JSONResponse({"revision": fleet.revision, "vms": shown})


@ROUTES.add("POST", "/v1/vms", Returns(201, "Created", VM_SCHEMA), body=VM_SCHEMA, errors=(409,))
async def create(control: Control, request: Request) -> Response:
    """Create a VM (fields not given are empty; vmId generated if absent)."""
    body = await read_json(request)
    vm = await control.write(lambda txn: create_vm(txn, body))
    return JSONResponse(shown(vm), status_code=201, headers={"Location": f"/v1/vms/{vm.vm_id}"})


@ROUTES.add("GET", "/v1/vms/{vm}", Returns(200, "The VM", VM_SCHEMA), errors=(404,))
async def show(control: Control, request: Request) -> Response:
    """A VM's complete description."""
    vm = await control.resolve(request)
    return JSONResponse(shown(vm))


@ROUTES.add(
    "PUT",
    "/v1/vms/{vm}",
    Returns(200, "Replaced", VM_SCHEMA),
    body=VM_SCHEMA,
    errors=(404, 409),
    summary="Replace a VM's description (vmId stays)",
)
@ROUTES.add(
    "PATCH",
    "/v1/vms/{vm}",
    Returns(200, "Patched", VM_SCHEMA),
    body=MERGE_PATCH,
    errors=(404, 409),
    summary="JSON Merge Patch (RFC 7396) of a VM's description",
)
async def change(control: Control, request: Request) -> Response:
    """Replace (PUT) or merge-patch (PATCH) the VM the path names."""
    vm = await change_vm(control, request, replace_vm if request.method == "PUT" else patch_vm)
    return JSONResponse(shown(vm))


@ROUTES.add("DELETE", "/v1/vms/{vm}", Returns(204, "Removed"), errors=(404,))
async def delete(control: Control, request: Request) -> Response:
    """Remove a VM."""
    vm_id = (await control.resolve(request)).vm_id
    await control.write(lambda txn: delete_vm(txn, vm_id))
    return Response(status_code=204)
