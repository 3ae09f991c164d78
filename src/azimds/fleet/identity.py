"""Managed identities of a VM: the system-assigned one and any user-assigned ones.

A VM description may carry an ``identity`` section (azimds's own, not part of the instance
document):

    identity:
      systemAssigned: true            # or {clientId, objectId, tenantId}
      userAssigned:
        - name: app-identity          # any of name, clientId, objectId, resourceId
          clientId: ...

Missing ids are derived deterministically (UUID v5) from the VM or the identity's resource id,
so they are stable without being stored. ``select`` picks the identity a token request asks
for, with the real service's rules (reference section 5); why it picks none is an
``Unselected`` reason, which the guest plane words (``guest/errors.py``).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azimds.fleet.schema import DocumentError

# The tenant of identities that do not name one: a fixed, made-up directory id, the same on
# every node, so tokens and `/metadata/identity/info` agree across a fleet.
DEFAULT_TENANT_ID = "7f5c1b7e-2f41-4c9b-9d52-1a3e6b0c8d24"

_NAMESPACE = uuid.UUID("2b8f5e0a-6d0c-4f57-8c4e-3f9f3c5d1a77")
IDENTITY_KEYS = ("systemAssigned", "userAssigned")
USER_KEYS = ("name", "clientId", "objectId", "resourceId", "tenantId")

SELECTORS = ("client_id", "object_id", "msi_res_id", "mi_res_id")


class Unselected(enum.Enum):
    """Why a token request names no identity of the VM."""

    NOT_FOUND = "not_found"  # none matches, or the VM has none
    AMBIGUOUS = "ambiguous"  # several user-assigned ones, and the request names none
    SELECTORS = "selectors"  # more than one of SELECTORS given


@dataclass(frozen=True, slots=True)
class Identity:
    client_id: str
    object_id: str
    tenant_id: str
    resource_id: str  # the token's xms_mirid: the VM's id (system) or the identity's (user)
    system: bool
    name: str = ""


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts).lower()))


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DocumentError(where, f"expected a string, got {type(value).__name__}", 'write "..."')
    return value


def _guid(value: Any, where: str) -> str:
    text = _text(value, where)
    if text:
        try:
            return str(uuid.UUID(text))
        except ValueError:
            raise DocumentError(
                where, f"'{text}' is not a GUID", "write e.g. 1b0a8f31-..."
            ) from None
    return text


def vm_resource_id(compute: Mapping[str, Any]) -> str:
    """The VM's ARM id: compute.resourceId, or built from its subscription, group and name."""
    if compute.get("resourceId"):
        return str(compute["resourceId"])
    subscription = compute.get("subscriptionId") or "00000000-0000-0000-0000-000000000000"
    group = compute.get("resourceGroupName") or "azimds"
    return (
        f"/subscriptions/{subscription}/resourceGroups/{group}"
        f"/providers/Microsoft.Compute/virtualMachines/{compute.get('name', '')}"
    )


def normalize_identity(value: Any, compute: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The complete ``identity`` section: ids filled in, ready to store and to compare."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise DocumentError(where, "expected a mapping", "write systemAssigned: and userAssigned:")
    for key in value:
        if key not in IDENTITY_KEYS:
            raise DocumentError(
                f"{where}.{key}", "unknown field", "use systemAssigned or userAssigned"
            )
    vm_id = str(compute.get("vmId", ""))
    system = value.get("systemAssigned")
    spot = f"{where}.systemAssigned"
    if system not in (None, False, True) and not isinstance(system, Mapping):
        raise DocumentError(spot, "expected true, false or a mapping", "write systemAssigned: true")
    system_out: dict[str, Any]
    enabled = False
    if system is True or isinstance(system, Mapping):
        given: Mapping[str, Any] = system if isinstance(system, Mapping) else {}
        for key in given:
            if key not in ("enabled", "clientId", "objectId", "tenantId"):
                raise DocumentError(
                    f"{spot}.{key}", "unknown field", "use clientId, objectId, tenantId"
                )
        enabled = given.get("enabled", True)
        if not isinstance(enabled, bool):
            raise DocumentError(f"{spot}.enabled", "expected true or false", "write true or false")
    if system in (None, False) or not enabled:
        system_out = {"enabled": False}
    else:
        system_out = {
            "enabled": enabled,
            "clientId": _guid(given.get("clientId"), f"{spot}.clientId")
            or _uuid(vm_id, "system", "client"),
            "objectId": _guid(given.get("objectId"), f"{spot}.objectId")
            or _uuid(vm_id, "system", "object"),
            "tenantId": _guid(given.get("tenantId"), f"{spot}.tenantId") or DEFAULT_TENANT_ID,
        }

    users = value.get("userAssigned") or []
    if not isinstance(users, list):
        raise DocumentError(
            f"{where}.userAssigned", "expected a list", "write a list of identities"
        )
    return {
        "systemAssigned": system_out,
        "userAssigned": [
            _normalize_user(user, compute, f"{where}.userAssigned[{i}]")
            for i, user in enumerate(users)
        ],
    }


def _normalize_user(user: Any, compute: Mapping[str, Any], where: str) -> dict[str, str]:
    if not isinstance(user, Mapping):
        raise DocumentError(
            where, "expected a mapping", "give name, clientId, objectId or resourceId"
        )
    for key in user:
        if key not in USER_KEYS:
            raise DocumentError(f"{where}.{key}", "unknown field", "use " + ", ".join(USER_KEYS))
    name = _text(user.get("name"), f"{where}.name")
    resource_id = _text(user.get("resourceId"), f"{where}.resourceId")
    client_id = _guid(user.get("clientId"), f"{where}.clientId")
    object_id = _guid(user.get("objectId"), f"{where}.objectId")
    if not (name or resource_id or client_id or object_id):
        raise DocumentError(where, "an empty identity", "give at least a name or a clientId")
    if not name:
        name = (
            resource_id.rstrip("/").rsplit("/", 1)[-1]
            if resource_id
            else f"identity-{(client_id or object_id)[:8]}"
        )
    if not resource_id:
        subscription = compute.get("subscriptionId") or "00000000-0000-0000-0000-000000000000"
        group = compute.get("resourceGroupName") or "azimds"
        resource_id = (
            f"/subscriptions/{subscription}/resourceGroups/{group}"
            f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
        )
    seed = client_id or object_id or resource_id
    return {
        "name": name,
        "clientId": client_id or _uuid(seed, "client"),
        "objectId": object_id or _uuid(seed, "object"),
        "resourceId": resource_id,
        "tenantId": _guid(user.get("tenantId"), f"{where}.tenantId") or DEFAULT_TENANT_ID,
    }


def identities(
    section: Mapping[str, Any], compute: Mapping[str, Any]
) -> tuple[Identity | None, tuple[Identity, ...]]:
    """The VM's system-assigned identity (None when off) and its user-assigned ones."""
    system_section = section["systemAssigned"]
    system = None
    if system_section["enabled"]:
        system = Identity(
            client_id=system_section["clientId"],
            object_id=system_section["objectId"],
            tenant_id=system_section["tenantId"],
            resource_id=vm_resource_id(compute),
            system=True,
        )
    users = tuple(
        Identity(u["clientId"], u["objectId"], u["tenantId"], u["resourceId"], False, u["name"])
        for u in section["userAssigned"]
    )
    return system, users


def select(
    system: Identity | None, users: tuple[Identity, ...], params: Mapping[str, str]
) -> Identity | Unselected:
    """The identity a token request names, or why there is none.

    ``client_id`` and ``object_id`` match any identity of the VM, ``msi_res_id``/``mi_res_id``
    a user-assigned one's resource id (all compared case-insensitively: msal-node lower-cases
    the URL, and ARM ids ignore case). With none given: the system-assigned identity, else the
    only user-assigned one.
    """
    given = [(name, params[name]) for name in SELECTORS if params.get(name)]
    if len(given) > 1:
        return Unselected.SELECTORS
    everyone = ((system,) if system else ()) + users
    if given:
        name, value = given[0]
        wanted = value.strip().lower()
        for identity in everyone:
            if name == "client_id":
                found = identity.client_id == wanted
            elif name == "object_id":
                found = identity.object_id == wanted
            else:
                found = not identity.system and identity.resource_id.lower() == wanted.rstrip("/")
            if found:
                return identity
        return Unselected.NOT_FOUND
    if system is not None:
        return system
    if len(users) == 1:
        return users[0]
    return Unselected.AMBIGUOUS if users else Unselected.NOT_FOUND
