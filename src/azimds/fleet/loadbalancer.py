"""A VM's Standard Load Balancer data, as ``/metadata/loadbalancer`` shows it (reference 7).

Kept in the VM description under ``loadBalancer`` (azimds's own key). Keys come out in the
order real answers print them, and ports are integers, unlike every other IMDS value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azimds.fleet.schema import DocumentError

# Each list's entries: their keys in answer order, and which of them are integers.
SECTIONS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "publicIpAddresses": (("frontendIpAddress", "privateIpAddress"), frozenset()),
    "inboundRules": (
        ("frontendIpAddress", "protocol", "frontendPort", "backendPort", "privateIpAddress"),
        frozenset({"frontendPort", "backendPort"}),
    ),
    "outboundRules": (("frontendIpAddress", "privateIpAddress"), frozenset()),
    # Gateway Load Balancer backends only.
    "tunnelInterfaces": (
        (
            "gatewayIpAddress",
            "gatewayPort",
            "identifier",
            "type",
            "protocol",
            "localIpAddress",
            "localPort",
        ),
        frozenset({"gatewayPort", "identifier", "localPort"}),
    ),
}
ALWAYS = ("publicIpAddresses", "inboundRules", "outboundRules")


def _entry(
    value: Any, keys: tuple[str, ...], integers: frozenset[str], where: str
) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise DocumentError(where, "expected a mapping", "write one rule as a mapping")
    for key in value:
        if key not in keys:
            raise DocumentError(f"{where}.{key}", "unknown field", "use " + ", ".join(keys))
    entry: dict[str, Any] = {}
    for key in keys:
        given = value.get(key)
        if key in integers:
            if isinstance(given, bool) or not isinstance(given, int | str | None):
                raise DocumentError(f"{where}.{key}", "expected a port number", "write e.g. 443")
            text = str(given if given is not None else 0)
            if not text.isdigit() or int(text) > 65535 * 256:
                raise DocumentError(f"{where}.{key}", f"'{text}' is not a number", "write e.g. 443")
            entry[key] = int(text)
        else:
            entry[key] = "" if given is None else str(given)
    return entry


def normalize_load_balancer(value: Any, where: str) -> dict[str, Any] | None:
    """The complete section, or None: the VM is behind no Standard Load Balancer."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise DocumentError(
            where, "expected a mapping", "write publicIpAddresses:, inboundRules:, ..."
        )
    for key in value:
        if key not in SECTIONS:
            raise DocumentError(f"{where}.{key}", "unknown field", "use " + ", ".join(SECTIONS))
    section: dict[str, Any] = {}
    for name, (keys, integers) in SECTIONS.items():
        items = value.get(name)
        if items is None and name not in ALWAYS:
            continue
        if not isinstance(items, list | None):
            raise DocumentError(f"{where}.{name}", "expected a list", "write a list (or [])")
        section[name] = [
            _entry(item, keys, integers, f"{where}.{name}[{i}]")
            for i, item in enumerate(items or [])
        ]
    return section
