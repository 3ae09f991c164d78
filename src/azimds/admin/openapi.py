"""The control plane's OpenAPI document, generated from its route table (``api.ROUTES``).

Each endpoint declares its parameters, body and answers on its handler (the summary is the
handler's docstring); here they become operations, and every named ``Schema`` they use becomes
a ``components/schemas`` entry that they ``$ref``. The VM schema comes from the fleet model
(``fleet/schema.py``, joined in ``admin/vms.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from azimds import __version__
from azimds.admin.core import ERROR, Endpoint, Parameter, Returns, Schema

REASONS = {
    400: "Invalid input",
    401: "Missing or wrong bearer token",
    404: "No such VM, identity, event or fault rule",
    409: "Conflicts with the fleet (vmId or address taken, event no longer scheduled)",
    413: "Body larger than the limit",
    415: "Body is not JSON",
    503: "The store is unreachable; nothing was changed",
}


def document(routes: Iterable[Endpoint]) -> dict[str, Any]:
    routes = list(routes)
    *others, last = sorted({endpoint.path for endpoint in routes if endpoint.public})
    public = f"{', '.join(others)} and {last}"
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in routes:
        if endpoint.documented:
            paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    schemas: dict[str, Any] = {}
    paths = _named(paths, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "azimds control plane",
            "version": __version__,
            "description": "Manage the VMs an azimds node serves. Every route but "
            f"{public} needs `Authorization: Bearer <token>` (the token is in the node's "
            "state directory, file admin-token).",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": endpoint.summary}
    if endpoint.public:
        operation["security"] = []
    if endpoint.parameters:
        operation["parameters"] = [_parameter(p) for p in endpoint.parameters]
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": endpoint.body.required,
            "content": {media: {"schema": endpoint.body.schema} for media in endpoint.body.media},
        }
    errors = (Returns(status, REASONS[status], ERROR) for status in endpoint.statuses)
    replies = [*endpoint.replies, *errors]
    operation["responses"] = {str(reply.status): _reply(reply) for reply in replies}
    return operation


def _parameter(parameter: Parameter) -> dict[str, Any]:
    rendered: dict[str, Any] = {"name": parameter.name, "in": parameter.where}
    if parameter.where == "path":
        rendered["required"] = True
    if parameter.description:
        rendered["description"] = parameter.description
    return rendered | {"schema": {"type": parameter.type}}


def _reply(reply: Returns) -> dict[str, Any]:
    if reply.schema is None:
        return {"description": reply.description}
    return {"description": reply.description, "content": {reply.media: {"schema": reply.schema}}}


def _named(value: Any, schemas: dict[str, Any]) -> Any:
    """``value`` with each ``Schema`` in it replaced by a ``$ref``; ``schemas`` gets them."""
    if isinstance(value, Schema):
        if value.name not in schemas:
            schemas[value.name] = _named(value.json, schemas)
        return {"$ref": f"#/components/schemas/{value.name}"}
    if isinstance(value, Mapping):
        return {key: _named(item, schemas) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_named(item, schemas) for item in value]
    return value
