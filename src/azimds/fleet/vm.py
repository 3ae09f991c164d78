"""A VM as data: its complete instance document and what azimds serves beside it.

A ``VM`` is immutable. Views of the document per api-version are computed on first use and
kept, so the guest plane shapes each version once per VM.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from azimds.fleet import schema
from azimds.fleet.identity import Identity, identities, normalize_identity
from azimds.fleet.limits import normalize_limits
from azimds.fleet.loadbalancer import normalize_load_balancer
from azimds.fleet.merge_patch import merge_patch
from azimds.fleet.schema import DocumentError

# Keys of a VM description: the instance document's own (compute, network), then azimds's.
VM_KIND = "vm"  # the store kind of a VM record
# Where a VM reaches IMDS: the link-local address the real service answers at.
IMDS_ADDRESS = "169.254.169.254"
IMDS_PORT = 80
# Where a VM reaches the WireServer and its host GA plugin: Azure's virtual public address.
WIRESERVER_ADDRESS = "168.63.129.16"
WIRESERVER_PORT = 80
HOSTPLUGIN_PORT = 32526
VM_KEYS = (
    "compute",
    "network",
    "extended",
    "reprovisionData",
    "identity",
    "loadBalancer",
    "limits",
)


@dataclass(frozen=True, slots=True)
class VM:
    vm_id: str  # compute.vmId, looked up on every request
    document: Mapping[str, Any]  # complete: every field of every api-version, as strings
    extended: Mapping[str, Any]  # what extended=true adds
    reprovision_data: str  # OVF XML for /metadata/reprovisiondata ("" = none yet)
    addresses: tuple[str, ...]  # the NICs' private IPv4 and IPv6 addresses, in order
    # The addresses IMDS answers the VM at: its primary NIC's primary IPv4 and IPv6 addresses.
    caller_addresses: tuple[str, ...]
    identity: Mapping[str, Any]  # the normalized identity section (fleet/identity.py)
    load_balancer: Mapping[str, Any] | None  # /metadata/loadbalancer's data; None: no LB
    limits: Mapping[str, float] | None  # the VM's own rate limits; None: the node's
    system_identity: Identity | None
    user_identities: tuple[Identity, ...]
    _views: dict[tuple[str, bool], Mapping[str, Any]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def description(self) -> dict[str, Any]:
        """The complete description, as stored and as the control plane shows it."""
        return {
            **self.document,
            "extended": self.extended,
            "reprovisionData": self.reprovision_data,
            "identity": self.identity,
            "loadBalancer": self.load_balancer,
            "limits": self.limits,
        }

    @property
    def name(self) -> str:
        return str(self.document["compute"]["name"])

    def instance(self, version: str, extended: bool) -> Mapping[str, Any]:
        """The instance document as ``version`` shows it (built once, then reused)."""
        key = (version, extended)
        view = self._views.get(key)
        if view is None:
            view = schema.shape(schema.INSTANCE, self.document, version)
            if extended:
                # After network, as real extended=true answers have it (not alphabetical).
                view = {**view, "extended": self.extended}
            self._views[key] = view
        return view


TagPairs = list[tuple[str, str]]


def _pairs_of_input(tags: Any, where: str) -> TagPairs | None:
    """``tags`` as written: the IMDS string ("a:b;c:d", split at ';' and each pair's first
    ':') or a mapping. None: not given."""
    if isinstance(tags, Mapping):
        return [(str(k), _text(v)) for k, v in tags.items()]
    if isinstance(tags, str):
        return [(i.partition(":")[0], i.partition(":")[2]) for i in tags.split(";") if i]
    if tags is None:
        return None
    raise DocumentError(
        where, "expected a string or a mapping", 'write "name:value;name2:value2" or a mapping'
    )


def _pairs_of_list(items: Any) -> TagPairs | None:
    """A tagsList as written, as pairs; None where it is no list of mappings (the schema then
    says what is wrong with it)."""
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        return None
    return [(_text(i.get("name")), _text(i.get("value"))) for i in items]


def _text(value: Any) -> str:
    """A tag's name or value as the schema stores it (``None`` "", booleans lower case)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _as_list(pairs: TagPairs) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in pairs]


def _tags_as_list(compute: Mapping[str, Any], where: str) -> dict[str, Any]:
    """compute with its tags as ``tagsList`` only: the list is what is stored, ``tags`` is
    derived from it when served (fleet/schema.py). ``tags`` given alone is parsed into the
    list; given with ``tagsList`` it must say the same."""
    result = dict(compute)
    tags = result.pop("tags", None)
    given = _pairs_of_input(tags, f"{where}.tags")
    if given is None:
        return result
    if result.get("tagsList") is None:
        result["tagsList"] = _as_list(given)
        return result
    listed = _pairs_of_list(result["tagsList"])
    # A string that joins the list exactly also agrees: a value holding ';' splits wrongly.
    joined = None if listed is None else ";".join(f"{n}:{v}" for n, v in listed)
    if listed != given and tags != joined:
        raise DocumentError(
            f"{where}.tags",
            "disagrees with tagsList",
            "give only tagsList (tags is derived from it), or make them say the same",
        )
    return result


def build_vm(description: Mapping[str, Any], where: str = "vm") -> VM:
    """Validate a VM description (the instance document plus extras) and build the VM."""
    for key in description:
        if key not in VM_KEYS:
            raise DocumentError(f"{where}.{key}", "unknown field", "a VM has " + ", ".join(VM_KEYS))
    compute = description.get("compute") or {}
    if not isinstance(compute, Mapping):
        raise DocumentError(f"{where}.compute", "expected a mapping", "write compute: {name: ...}")
    document = {
        "compute": _tags_as_list(compute, f"{where}.compute"),
        "network": description.get("network"),
    }
    reprovision = description.get("reprovisionData") or ""
    if not isinstance(reprovision, str):
        raise DocumentError(
            f"{where}.reprovisionData", "expected a string", "give the OVF XML text"
        )
    normalized = schema.normalize(schema.INSTANCE, document, where)
    identity = normalize_identity(
        description.get("identity"), normalized["compute"], f"{where}.identity"
    )
    system_identity, user_identities = identities(identity, normalized["compute"])
    return VM(
        vm_id=str(normalized["compute"]["vmId"]),
        document=normalized,
        extended=schema.normalize(
            schema.EXTENDED, description.get("extended"), f"{where}.extended"
        ),
        reprovision_data=reprovision,
        addresses=_private_addresses(normalized, where),
        caller_addresses=_primary_addresses(normalized),
        identity=identity,
        load_balancer=normalize_load_balancer(
            description.get("loadBalancer"), f"{where}.loadBalancer"
        ),
        limits=normalize_limits(description.get("limits"), f"{where}.limits"),
        system_identity=system_identity,
        user_identities=user_identities,
    )


def _private_addresses(document: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """Every NIC's private addresses, validated: source-ip mode finds callers by them."""
    found: list[str] = []
    for n, nic in enumerate(document["network"]["interface"]):
        for family in ("ipv4", "ipv6"):
            for i, entry in enumerate(nic[family]["ipAddress"]):
                text = entry["privateIpAddress"]
                if not text:
                    continue
                field = f"{where}.network.interface[{n}].{family}.ipAddress[{i}].privateIpAddress"
                try:
                    address = ipaddress.ip_address(text)
                except ValueError:
                    raise DocumentError(
                        field, f"'{text}' is not an IP address", "write e.g. 10.0.0.4"
                    ) from None
                if (address.version == 4) != (family == "ipv4"):
                    raise DocumentError(
                        field,
                        f"'{text}' is not an {family} address",
                        f"put it under {'ipv6' if family == 'ipv4' else 'ipv4'}",
                    )
                found.append(str(address))
    return tuple(found)


def _primary_addresses(document: Mapping[str, Any]) -> tuple[str, ...]:
    """The first NIC's first private address of each family (validated by
    ``_private_addresses``): the real service answers a VM only from its primary NIC and
    primary IP (the documentation), so source-ip mode identifies callers by these alone."""
    nics = document["network"]["interface"]
    if not nics:
        return ()
    found = []
    for family in ("ipv4", "ipv6"):
        entries = nics[0][family]["ipAddress"]
        if entries and entries[0]["privateIpAddress"]:
            found.append(str(ipaddress.ip_address(entries[0]["privateIpAddress"])))
    return tuple(found)


def example_description() -> dict[str, Any]:
    """The documentation's example VM (Linux), with extended=true's usual values."""
    text = resources.files("azimds.fleet").joinpath("example-vm.json").read_text("utf-8")
    description: dict[str, Any] = json.loads(text)
    description["extended"] = {"compute": {"hasCustomData": False, "ppsType": "None"}}
    # Tokens out of the box for local development: a system-assigned identity.
    description["identity"] = {"systemAssigned": True}
    return description


def patch_description(
    base: Mapping[str, Any], patch: Mapping[str, Any], merge_tags: bool = True
) -> dict[str, Any]:
    """Apply a JSON Merge Patch (RFC 7396) to a VM description.

    Tags are stored as ``tagsList`` only. A patch that sets ``tags`` or ``tagsList`` replaces
    the tags, except that with ``merge_tags`` a mapping of ``tags`` merges into the current
    list, so ``{"compute": {"tags": {"env": "prod"}}}`` adds or changes one tag and ``null``
    removes it; without, it replaces them (a config file's VM gets exactly its own tags).
    """
    base = dict(base)
    compute_patch = patch.get("compute")
    if (
        isinstance(compute_patch, Mapping)
        and isinstance(base.get("compute"), Mapping)
        and {"tags", "tagsList"} & set(compute_patch)
    ):
        compute = _tags_as_list(base["compute"], "compute")
        tags_patch = compute_patch.get("tags")
        if merge_tags and isinstance(tags_patch, Mapping) and "tagsList" not in compute_patch:
            merged = dict(_pairs_of_list(compute.get("tagsList") or []) or [])
            for name, value in tags_patch.items():
                if value is None:
                    merged.pop(str(name), None)
                else:
                    merged[str(name)] = _text(value)
            rest = {k: v for k, v in compute_patch.items() if k != "tags"}
            patch = {**patch, "compute": {**rest, "tagsList": _as_list(list(merged.items()))}}
        compute.pop("tagsList", None)
        base["compute"] = compute
    result: dict[str, Any] = merge_patch(base, patch)
    return result


def vm_from_patch(patch: Mapping[str, Any] | None, where: str = "vm") -> VM:
    """The example VM changed by a merge patch, as config files describe it."""
    base = example_description()
    return build_vm(patch_description(base, patch, merge_tags=False) if patch else base, where)


def example_vm() -> VM:
    return vm_from_patch(None)
