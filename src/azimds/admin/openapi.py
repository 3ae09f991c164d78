"""The admin API's OpenAPI document, with the VM schema taken from the fleet model."""

from __future__ import annotations

from typing import Any

from azimds import __version__
from azimds.fleet import schema
from azimds.fleet.identity import USER_KEYS
from azimds.fleet.limits import LIMIT_KEYS
from azimds.fleet.loadbalancer import SECTIONS
from azimds.fleet.scheduling import MAX_AHEAD

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {
                    "type": "string",
                    "enum": [
                        "invalid",
                        "invalid_json",
                        "unauthorized",
                        "not_found",
                        "method_not_allowed",
                        "conflict",
                        "too_large",
                        "unsupported_media_type",
                        "store_unavailable",
                    ],
                },
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
        }
    },
}


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


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Invalid input",
        401: "Missing or wrong bearer token",
        404: "No such VM",
        409: "Conflicts with the fleet (vmId or address taken)",
        413: "Body larger than the limit",
        415: "Body is not JSON",
        503: "The store is unreachable; nothing was changed",
    }
    return {
        str(s): {
            "description": reasons[s],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for s in statuses
    }


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


VM_PARAMETER = {
    "name": "vm",
    "in": "path",
    "required": True,
    "description": "The VM's vmId, or its name when no other VM has that name",
    "schema": {"type": "string"},
}
WRITE_ERRORS = (400, 401, 413, 415, 503)
EVENT_PARAMETER = {
    "name": "event",
    "in": "path",
    "required": True,
    "description": "The EventId",
    "schema": {"type": "string"},
}
EVENT_REQUEST = {
    "type": "object",
    "required": ["type", "vms"],
    "additionalProperties": False,
    "properties": {
        "type": {
            "type": "string",
            "enum": ["Freeze", "Reboot", "Redeploy", "Preempt", "Terminate"],
        },
        "vms": {"type": "array", "items": {"type": "string"}},
        "notBefore": {"type": ["string", "number"]},
        "after": {"type": "number", "minimum": 0, "maximum": MAX_AHEAD},
        "duration": {"type": "integer", "minimum": -1},
        "description": {"type": "string"},
        "source": {"type": "string", "enum": ["Platform", "User"]},
        "unplanned": {"type": "boolean"},
    },
}
FAULT_ACTION = {
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
FAULT_REQUEST = {
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
        "action": FAULT_ACTION,
        "actions": {"type": "array", "items": FAULT_ACTION},
    },
}
FAULT_PARAMETER = {
    "name": "fault",
    "in": "path",
    "required": True,
    "description": "The rule's id",
    "schema": {"type": "string"},
}
TENANT_PARAMETER = {
    "name": "tenant",
    "in": "path",
    "required": True,
    "description": "A tenant id (any: the keys are the same)",
    "schema": {"type": "string"},
}
USER_IDENTITY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        key: {"type": "string"}
        for key in ("name", "clientId", "objectId", "resourceId", "tenantId")
    },
}
SYSTEM_IDENTITY = {
    "type": "object",
    "properties": {"enabled": {"type": "boolean"}}
    | {key: {"type": "string"} for key in ("clientId", "objectId", "tenantId")},
}
SYSTEM_IDENTITY_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "description": "Ids to give the identity (GUIDs); those not given are derived",
    "properties": {"enabled": {"description": "Ignored: PUT turns the identity on"}}
    | {key: {"type": ["string", "null"]} for key in ("clientId", "objectId", "tenantId")},
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "azimds control plane",
            "version": __version__,
            "description": "Manage the VMs an azimds node serves. Every route but /openapi.json "
            "and /healthz needs `Authorization: Bearer <token>` (the token is in the node's "
            "state directory, file admin-token).",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": ERROR,
                "VM": _vm_schema(),
                "VMSummary": {
                    "type": "object",
                    "properties": {
                        k: {"type": "string"} for k in ("vmId", "name", "location", "vmSize")
                    }
                    | {"addresses": {"type": "array", "items": {"type": "string"}}},
                },
                "VMList": {
                    "type": "object",
                    "properties": {
                        "revision": {"type": "integer"},
                        "vms": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/VMSummary"},
                        },
                    },
                },
                "Status": {
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
                        "uptime": {"type": "number", "description": "seconds since start-up"},
                        "pid": {"type": "integer"},
                    },
                },
                "Requests": {"type": "object", "properties": {"requests": {"type": "array"}}},
                "EventRequest": EVENT_REQUEST,
                "Scenario": {
                    "type": "object",
                    "required": ["events"],
                    "properties": {"events": {"type": "array", "items": EVENT_REQUEST}},
                },
                "Event": {"type": "object", "properties": {"eventId": {"type": "string"}}},
                "Events": {"type": "object", "properties": {"events": {"type": "array"}}},
                "Clock": {"type": "object", "properties": {"now": {"type": "string"}}},
                "FaultRequest": FAULT_REQUEST,
                "Fault": {
                    "type": "object",
                    "description": "A rule, with fired, remaining and active on this node",
                    "properties": {"id": {"type": "string"}, "fired": {"type": "integer"}},
                },
                "Faults": {"type": "object", "properties": {"faults": {"type": "array"}}},
                "UserIdentity": USER_IDENTITY,
                "SystemIdentity": SYSTEM_IDENTITY,
                "SystemIdentityRequest": SYSTEM_IDENTITY_REQUEST,
                "Identities": {
                    "type": "object",
                    "properties": {
                        "systemAssigned": SYSTEM_IDENTITY,
                        "userAssigned": {"type": "array", "items": USER_IDENTITY},
                    },
                },
                "Keys": {"type": "object", "properties": {"keys": {"type": "array"}}},
                "Rotated": {
                    "type": "object",
                    "properties": {"kid": {"type": "string"}, "overlap": {"type": "integer"}},
                },
                "JWKS": {"type": "object", "properties": {"keys": {"type": "array"}}},
                "Discovery": {"type": "object", "properties": {"issuer": {"type": "string"}}},
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "security": [],
                    "responses": {"200": {"description": "The node runs"}},
                }
            },
            "/v1/status": {
                "get": {
                    "summary": "The node: revision served, store, VM count, listeners, uptime, pid",
                    "responses": {"200": {"description": "Status", "content": _json("Status")}}
                    | _errors(401),
                }
            },
            "/v1/vms": {
                "get": {
                    "summary": "List VMs",
                    "responses": {"200": {"description": "The VMs", "content": _json("VMList")}}
                    | _errors(401),
                },
                "post": {
                    "summary": "Create a VM (fields not given are empty; vmId generated if absent)",
                    "requestBody": {"required": True, "content": _json("VM")},
                    "responses": {"201": {"description": "Created", "content": _json("VM")}}
                    | _errors(*WRITE_ERRORS, 409),
                },
            },
            "/v1/vms/{vm}/identities": {
                "parameters": [VM_PARAMETER],
                "get": {
                    "summary": "The VM's managed identities",
                    "responses": {
                        "200": {"description": "Identities", "content": _json("Identities")}
                    }
                    | _errors(401, 404),
                },
                "post": {
                    "summary": "Assign a user-assigned identity (ids derived where not given)",
                    "requestBody": {"required": True, "content": _json("UserIdentity")},
                    "responses": {
                        "201": {"description": "Assigned", "content": _json("UserIdentity")}
                    }
                    | _errors(*WRITE_ERRORS, 404, 409),
                },
            },
            "/v1/vms/{vm}/identities/system": {
                "parameters": [VM_PARAMETER],
                "put": {
                    "summary": "Turn the system-assigned identity on",
                    "requestBody": {
                        "required": False,
                        "content": _json("SystemIdentityRequest"),
                    },
                    "responses": {"200": {"description": "On", "content": _json("SystemIdentity")}}
                    | _errors(*WRITE_ERRORS, 404),
                },
                "delete": {
                    "summary": "Turn the system-assigned identity off",
                    "responses": {"204": {"description": "Off"}} | _errors(401, 404, 503),
                },
            },
            "/v1/vms/{vm}/identities/{identity}": {
                "parameters": [
                    VM_PARAMETER,
                    {
                        "name": "identity",
                        "in": "path",
                        "required": True,
                        "description": "A user-assigned identity's name, client id or object id",
                        "schema": {"type": "string"},
                    },
                ],
                "delete": {
                    "summary": "Unassign a user-assigned identity",
                    "responses": {"204": {"description": "Unassigned"}} | _errors(401, 404, 503),
                },
            },
            "/v1/events": {
                "get": {
                    "summary": "Scheduled events (add ?all=true for completed and canceled)",
                    "responses": {"200": {"description": "Events", "content": _json("Events")}}
                    | _errors(401),
                },
                "post": {
                    "summary": "Schedule an event",
                    "requestBody": {"required": True, "content": _json("EventRequest")},
                    "responses": {"201": {"description": "Scheduled", "content": _json("Event")}}
                    | _errors(*WRITE_ERRORS, 404),
                },
            },
            "/v1/events/scenario": {
                "post": {
                    "summary": "Schedule a timed sequence of events (after: seconds from now)",
                    "requestBody": {"required": True, "content": _json("Scenario")},
                    "responses": {"201": {"description": "Scheduled", "content": _json("Events")}}
                    | _errors(*WRITE_ERRORS, 404),
                },
            },
            "/v1/events/{event}": {
                "parameters": [EVENT_PARAMETER],
                "delete": {
                    "summary": "Cancel a pending or scheduled event",
                    "responses": {"204": {"description": "Canceled"}} | _errors(401, 404, 409, 503),
                },
            },
            "/v1/events/{event}/approve": {
                "parameters": [EVENT_PARAMETER],
                "post": {
                    "summary": "Approve (start) an event, as one of its VMs would",
                    "responses": {"200": {"description": "Started", "content": _json("Event")}}
                    | _errors(401, 404, 503),
                },
            },
            "/v1/faults": {
                "get": {
                    "summary": "Fault rules, oldest first (the first that fires wins)",
                    "responses": {"200": {"description": "Rules", "content": _json("Faults")}}
                    | _errors(401),
                },
                "post": {
                    "summary": "Add a fault rule",
                    "requestBody": {"required": True, "content": _json("FaultRequest")},
                    "responses": {"201": {"description": "Added", "content": _json("Fault")}}
                    | _errors(*WRITE_ERRORS, 404),
                },
                "delete": {
                    "summary": "Remove every fault rule (the fleet file's return when it is "
                    "applied again)",
                    "responses": {"200": {"description": "How many were removed"}}
                    | _errors(401, 503),
                },
            },
            "/v1/faults/{fault}": {
                "parameters": [FAULT_PARAMETER],
                "get": {
                    "summary": "One fault rule",
                    "responses": {"200": {"description": "Rule", "content": _json("Fault")}}
                    | _errors(401, 404),
                },
                "delete": {
                    "summary": "Remove a fault rule",
                    "responses": {"204": {"description": "Removed"}} | _errors(401, 404, 503),
                },
            },
            "/v1/clock": {
                "get": {
                    "summary": "The event clock",
                    "responses": {"200": {"description": "Clock", "content": _json("Clock")}}
                    | _errors(401),
                }
            },
            "/v1/clock/advance": {
                "post": {
                    "summary": "Move the event clock forward; due transitions happen at once",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["seconds"],
                                    "properties": {
                                        "seconds": {
                                            "type": "number",
                                            "minimum": 0,
                                            "maximum": MAX_AHEAD,
                                            "description": "The clock stays within 100 years "
                                            "of real time",
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"200": {"description": "Advanced", "content": _json("Clock")}}
                    | _errors(400, 401, 503),
                }
            },
            "/v1/requests": {
                "get": {
                    "summary": "The guest requests this node answered (its last 10,000)",
                    "parameters": [
                        {"name": "since", "in": "query", "schema": {"type": "integer"}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                    ],
                    "responses": {"200": {"description": "Requests", "content": _json("Requests")}}
                    | _errors(400, 401),
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Metrics, text format 0.0.4",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/v1/keys": {
                "get": {
                    "summary": "The token-signing keys (public facts only)",
                    "responses": {"200": {"description": "Keys", "content": _json("Keys")}}
                    | _errors(401),
                }
            },
            "/v1/keys/rotate": {
                "post": {
                    "summary": "A new signing key; the old one stays published for the overlap",
                    "responses": {"200": {"description": "Rotated", "content": _json("Rotated")}}
                    | _errors(401, 503),
                }
            },
            **{
                f"/attestation/{name}.{ext}": {
                    "get": {
                        "summary": f"The attestation {name} certificate ({form})",
                        "security": [],
                        "responses": {
                            "200": {
                                "description": "Certificate",
                                "content": {
                                    media: {"schema": {"type": "string", "format": "binary"}}
                                },
                            },
                            "404": {"description": "The CA is not created yet"},
                        },
                    }
                }
                for name in ("root", "intermediate")
                for ext, form, media in (
                    ("cer", "DER", "application/pkix-cert"),
                    ("pem", "PEM", "application/x-pem-file"),
                )
            },
            "/discovery/keys": {
                "get": {
                    "summary": "JWKS: the keys that verify managed-identity tokens",
                    "security": [],
                    "responses": {"200": {"description": "JWKS", "content": _json("JWKS")}},
                }
            },
            "/{tenant}/discovery/keys": {
                "parameters": [TENANT_PARAMETER],
                "get": {
                    "summary": "JWKS, as Azure AD serves it per tenant",
                    "security": [],
                    "responses": {"200": {"description": "JWKS", "content": _json("JWKS")}},
                },
            },
            "/{tenant}/.well-known/openid-configuration": {
                "parameters": [TENANT_PARAMETER],
                "get": {
                    "summary": "OpenID Connect discovery (Azure AD v1 form)",
                    "security": [],
                    "responses": {
                        "200": {"description": "Discovery document", "content": _json("Discovery")}
                    },
                },
            },
            "/v1/vms/{vm}": {
                "parameters": [VM_PARAMETER],
                "get": {
                    "summary": "A VM's complete description",
                    "responses": {"200": {"description": "The VM", "content": _json("VM")}}
                    | _errors(401, 404),
                },
                "put": {
                    "summary": "Replace a VM's description (vmId stays)",
                    "requestBody": {"required": True, "content": _json("VM")},
                    "responses": {"200": {"description": "Replaced", "content": _json("VM")}}
                    | _errors(*WRITE_ERRORS, 404, 409),
                },
                "patch": {
                    "summary": "JSON Merge Patch (RFC 7396) of a VM's description",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/merge-patch+json": {"schema": {"type": "object"}},
                            "application/json": {"schema": {"type": "object"}},
                        },
                    },
                    "responses": {"200": {"description": "Patched", "content": _json("VM")}}
                    | _errors(*WRITE_ERRORS, 404, 409),
                },
                "delete": {
                    "summary": "Remove a VM",
                    "responses": {"204": {"description": "Removed"}} | _errors(401, 404, 503),
                },
            },
        },
    }
