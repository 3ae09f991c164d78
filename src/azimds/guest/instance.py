"""``/metadata/instance``: route filtering and the json and text renderings (reference 3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from azimds.guest.responses import Response, json_response, text_response

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
