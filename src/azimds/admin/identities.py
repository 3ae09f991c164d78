"""A VM's managed identities: list, assign and unassign user-assigned ones, turn the
system-assigned one on and off."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from azimds.admin.core import ApiError, Body, Control, Parameter, Returns, Routes, Schema, read_json
from azimds.admin.vms import VM_PARAMETER, change_vm
from azimds.fleet.operations import add_user_identity, remove_user_identity, set_system_identity

USER_IDENTITY_JSON = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        key: {"type": "string"}
        for key in ("name", "clientId", "objectId", "resourceId", "tenantId")
    },
}
SYSTEM_IDENTITY_JSON = {
    "type": "object",
    "properties": {"enabled": {"type": "boolean"}}
    | {key: {"type": "string"} for key in ("clientId", "objectId", "tenantId")},
}
USER_IDENTITY = Schema("UserIdentity", USER_IDENTITY_JSON)
SYSTEM_IDENTITY = Schema("SystemIdentity", SYSTEM_IDENTITY_JSON)
SYSTEM_IDENTITY_REQUEST = Schema(
    "SystemIdentityRequest",
    {
        "type": "object",
        "additionalProperties": False,
        "description": "Ids to give the identity (GUIDs); those not given are derived",
        "properties": {"enabled": {"description": "Ignored: PUT turns the identity on"}}
        | {key: {"type": ["string", "null"]} for key in ("clientId", "objectId", "tenantId")},
    },
)
IDENTITIES = Schema(
    "Identities",
    {
        "type": "object",
        "properties": {
            "systemAssigned": SYSTEM_IDENTITY_JSON,
            "userAssigned": {"type": "array", "items": USER_IDENTITY_JSON},
        },
    },
)
IDENTITY_PARAMETER = Parameter(
    "identity", "A user-assigned identity's name, client id or object id"
)
ROUTES = Routes(VM_PARAMETER, IDENTITY_PARAMETER)


@ROUTES.add("GET", "/v1/vms/{vm}/identities", Returns(200, "Identities", IDENTITIES), errors=(404,))
async def list_identities(control: Control, request: Request) -> Response:
    """The VM's managed identities."""
    vm = await control.resolve(request)
    return JSONResponse(vm.identity)


@ROUTES.add(
    "POST",
    "/v1/vms/{vm}/identities",
    Returns(201, "Assigned", USER_IDENTITY),
    body=USER_IDENTITY,
    errors=(404, 409),
)
async def add_identity(control: Control, request: Request) -> Response:
    """Assign a user-assigned identity (ids derived where not given)."""
    vm = await change_vm(control, request, add_user_identity)
    return JSONResponse(vm.identity["userAssigned"][-1], status_code=201)


@ROUTES.add(
    "PUT",
    "/v1/vms/{vm}/identities/system",
    Returns(200, "On", SYSTEM_IDENTITY),
    body=Body(SYSTEM_IDENTITY_REQUEST, required=False),
    errors=(404,),
)
async def enable_system(control: Control, request: Request) -> Response:
    """Turn the system-assigned identity on."""
    vm_id = (await control.resolve(request)).vm_id
    body = await read_json(request) if await request.body() else {}
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "give an object with clientId, objectId, tenantId")
    vm = await control.write(lambda txn: set_system_identity(txn, vm_id, True, body))
    return JSONResponse(vm.identity["systemAssigned"])


@ROUTES.add("DELETE", "/v1/vms/{vm}/identities/system", Returns(204, "Off"), errors=(404,))
async def disable_system(control: Control, request: Request) -> Response:
    """Turn the system-assigned identity off."""
    vm_id = (await control.resolve(request)).vm_id
    await control.write(lambda txn: set_system_identity(txn, vm_id, False, {}))
    return Response(status_code=204)


# After .../identities/system: "system" names the system-assigned identity, not a user-assigned one.
@ROUTES.add(
    "DELETE", "/v1/vms/{vm}/identities/{identity}", Returns(204, "Unassigned"), errors=(404,)
)
async def remove_identity(control: Control, request: Request) -> Response:
    """Unassign a user-assigned identity."""
    vm_id = (await control.resolve(request)).vm_id
    key = request.path_params["identity"]
    await control.write(lambda txn: remove_user_identity(txn, vm_id, key))
    return Response(status_code=204)
