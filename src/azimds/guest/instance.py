"""``/metadata/instance``: route filtering and the json and text renderings (reference 3);
and ``/metadata/reprovisiondata``, the VM's other document."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from azimds.guest import errors
from azimds.guest.endpoint import ValidRequest
from azimds.guest.responses import XML_TYPE, Response, json_response, make, text_response

_MISSING = object()


def walk(document: Any, segments: Sequence[str]) -> Any:
    """Follow object keys (case-sensitive) and array indexes; ``_MISSING`` when absent."""
    node = document
    for segment in segments:
        if isinstance(node, Mapping):
            node = node.get(segment, _MISSING)
        elif isinstance(node, list) and segment.isascii() and segment.isdigit():
            # Compared as text first: int() refuses over 4300 digits (a 500, once).
            digits = segment.lstrip("0") or "0"
            index = int(digits) if len(digits) <= len(str(len(node))) else len(node)
            node = node[index] if index < len(node) else _MISSING
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def is_leaf(node: Any) -> bool:
    return not isinstance(node, Mapping | list)


def _leaf_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def text_listing(node: Any) -> str:
    """A leaf's raw value, or the children one per line with '/' after containers."""
    if is_leaf(node):
        return _leaf_text(node)
    items = node.items() if isinstance(node, Mapping) else enumerate(node)
    return "\n".join(f"{name}/" if not is_leaf(child) else f"{name}" for name, child in items)


def render(node: Any, text: bool) -> Response:
    return text_response(text_listing(node)) if text else json_response(node)


def found(node: Any) -> bool:
    return node is not _MISSING


def get_instance(request: ValidRequest) -> Response:
    """``/metadata/instance``: the version-shaped document, filtered by the route.

    Leaves need ``format=text``; the default json on a leaf is a 400 (reference section 3).
    """
    extended = request.params.get("extended", "").lower() == "true"
    node = walk(request.vm.instance(request.version, extended), request.segments)
    if not found(node):
        return errors.INSTANCE_NOT_FOUND
    if is_leaf(node) and not request.text:
        return errors.Family.INSTANCE.bad_parameter_value(
            "format", request.params.get("format", "json")
        )
    return render(node, request.text)


def get_reprovision_data(request: ValidRequest) -> Response:
    """``/metadata/reprovisiondata`` (cloud-init, pre-provisioned VMs).

    404 until the VM has reprovision data (cloud-init polls through 404s), then the OVF XML.
    """
    if not request.vm.reprovision_data:
        return errors.INSTANCE_NOT_FOUND
    return make(200, XML_TYPE, request.vm.reprovision_data.encode("utf-8"))
