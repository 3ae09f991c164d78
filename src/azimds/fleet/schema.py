"""The instance document's schema: every field, its type, and the api-version that introduced it.

This is the reference's field tables (section 3, "Schema") as data, the one place that decides
which field a client sees at which api-version. These operations use it:

- ``normalize`` turns user input (config, fleet file, admin API) into a complete document:
  unknown fields are refused with a suggestion, scalars become strings, absent fields are ``""``.
- ``shape`` cuts a complete document down to what one api-version shows.
- ``default`` gives the empty value of a node.
- ``masked`` hides the secrets (the admin password) of a complete document, for the control
  plane; ``shape`` never shows them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from azimds.errors import Problem


class DocumentError(Problem):
    """Input that does not fit the schema; ``where`` is a dotted path such as ``compute.zone``."""

    def __init__(self, where: str, problem: str, fix: str) -> None:
        super().__init__(problem, where=where, fix=fix)


@dataclass(frozen=True, slots=True)
class Leaf:
    boolean: bool = False  # IMDS sends strings everywhere but in extended.compute.hasCustomData


@dataclass(frozen=True, slots=True)
class Arr:
    item: SchemaNode


@dataclass(frozen=True, slots=True)
class Field:
    since: str
    node: SchemaNode
    # physicalZone: real 2023-11-15 answers omit it on VMs without one (reference section 3).
    omit_if_empty: bool = False
    # What IMDS shows instead of the stored value, computed from the (stored) parent object.
    served: Callable[[Mapping[str, Any]], Any] | None = None
    # False: never stored, only computed by ``served`` (tags, from tagsList), so the two forms
    # of one datum cannot drift apart.
    stored: bool = True
    # A leaf's value when missing or empty: Azure's zero value where it has one.
    zero: str = ""
    # A secret (the admin password): stored, never served by IMDS, masked by the control plane.
    secret: bool = False


@dataclass(frozen=True, slots=True)
class Obj:
    fields: Mapping[str, Field] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # IMDS writes keys in ordinal order; keep the table in that order once.
        object.__setattr__(self, "fields", dict(sorted(self.fields.items())))


# A place in the schema tree: a leaf value, an array of one shape, or an object of fields.
# (Union: a runtime alias, used before the classes are complete.)
SchemaNode = Union[Leaf, Arr, Obj]  # noqa: UP007

STRING = Leaf()
BOOLEAN = Leaf(boolean=True)
MASK = "***"  # what the control plane shows of a secret that is set


def leaves(since: str, *names: str) -> dict[str, Field]:
    return {name: Field(since, STRING) for name in names}


def obj(since: str, **fields: Field) -> Field:
    return Field(since, Obj(fields))


def arr(since: str, **fields: Field) -> Field:
    return Field(since, Arr(Obj(fields)))


V2017_04 = "2017-04-02"
V2019_06 = "2019-06-01"
V2021_11 = "2021-11-01"


def _disk_fields() -> dict[str, Field]:
    """Fields the OS disk and each data disk share."""
    encryption = obj(
        V2019_06,
        enabled=Field(V2019_06, STRING),
        diskEncryptionKey=obj(
            V2021_11,
            secretUrl=Field(V2021_11, STRING),
            sourceVault=obj(V2021_11, **leaves(V2021_11, "id")),
        ),
        keyEncryptionKey=obj(
            V2021_11,
            keyUrl=Field(V2021_11, STRING),
            sourceVault=obj(V2021_11, **leaves(V2021_11, "id")),
        ),
    )
    return {
        **leaves(V2019_06, "caching", "createOption", "diskSizeGB", "name", "osType"),
        **leaves(V2019_06, "writeAcceleratorEnabled"),
        "diffDiskSettings": obj(V2019_06, **leaves(V2019_06, "option")),
        "encryptionSettings": encryption,
        "image": obj(V2019_06, **leaves(V2019_06, "uri")),
        "managedDisk": obj(V2019_06, **leaves(V2019_06, "id", "storageAccountType")),
        "vhd": obj(V2019_06, **leaves(V2019_06, "uri")),
    }


def _ultra_only(name: str) -> Callable[[Mapping[str, Any]], Any]:
    """A throttle field as IMDS shows it: only Ultra disks carry one (reference section 3)."""

    def served(disk: Mapping[str, Any]) -> Any:
        return disk[name] if disk["isUltraDisk"].lower() == "true" else ""

    return served


def _tags_string(compute: Mapping[str, Any]) -> str:
    """``tags``, derived from ``tagsList``: the list is exact, the string is not (a value may
    hold ';' or ':')."""
    return ";".join(f"{tag['name']}:{tag['value']}" for tag in compute["tagsList"])


def _never_served(_: Mapping[str, Any]) -> str:
    """customData: "you can only get custom data through local system folder, not through
    IMDS" (the documentation); it is kept for the provisioning media."""
    return ""


STORAGE_PROFILE = obj(
    V2019_06,
    imageReference=obj(
        V2019_06,
        **leaves(V2019_06, "id", "offer", "publisher", "sku", "version"),
        **leaves("2023-07-01", "communityGalleryImageId", "exactVersion", "sharedGalleryImageId"),
    ),
    osDisk=obj(V2019_06, **_disk_fields()),
    dataDisks=arr(
        V2019_06,
        **_disk_fields(),
        **leaves(V2019_06, "lun"),
        **leaves("2021-05-01", "diskCapacityBytes", "isSharedDisk", "isUltraDisk"),
        **{
            name: Field("2021-05-01", STRING, served=_ultra_only(name))
            for name in ("bytesPerSecondThrottle", "opsPerSecondThrottle")
        },
    ),
    # In kB; a VM without a resource disk shows "0" (reference section 3).
    resourceDisk=obj("2021-02-01", size=Field("2021-02-01", STRING, zero="0")),
)

COMPUTE = Obj(
    {
        **leaves(
            V2017_04,
            "location",
            "name",
            "offer",
            "osType",
            "platformFaultDomain",
            "platformUpdateDomain",
            "publisher",
            "sku",
            "version",
            "vmId",
            "vmSize",
        ),
        **leaves("2017-08-01", "placementGroupId", "resourceGroupName", "subscriptionId"),
        "tags": Field("2017-08-01", STRING, served=_tags_string, stored=False),
        **leaves("2017-12-01", "vmScaleSetName", "zone"),
        "plan": obj("2018-04-02", **leaves("2018-04-02", "name", "product", "publisher")),
        "publicKeys": arr("2018-04-02", **leaves("2018-04-02", "keyData", "path")),
        **leaves("2018-10-01", "azEnvironment", "provider"),
        "customData": Field("2019-02-01", STRING, served=_never_served),
        **leaves("2019-03-11", "resourceId"),
        "storageProfile": STORAGE_PROFILE,
        "tagsList": arr("2019-06-04", **leaves("2019-06-04", "name", "value")),
        **leaves("2020-06-01", "isHostCompatibilityLayerVm"),
        "securityProfile": obj(
            "2020-06-01",
            **leaves("2020-06-01", "secureBootEnabled", "virtualTpmEnabled"),
            **leaves(V2021_11, "encryptionAtHost"),
            **leaves("2021-12-13", "securityType"),
        ),
        "osProfile": obj(
            "2020-07-15",
            **leaves("2020-07-15", "adminUsername", "computerName"),
            **leaves("2020-10-01", "disablePasswordAuthentication"),
            # Only for the provisioning media's UserPassword (fleet/ovf.py), as on Azure.
            adminPassword=Field("2020-07-15", STRING, secret=True),
        ),
        **leaves("2020-09-01", "licenseType"),
        **leaves("2020-12-01", "evictionPolicy", "priority"),
        **leaves("2021-01-01", "userData"),
        "extendedLocation": obj("2021-03-01", **leaves("2021-03-01", "name", "type")),
        "virtualMachineScaleSet": obj("2021-03-01", **leaves("2021-03-01", "id")),
        **leaves("2021-10-01", "platformSubFaultDomain"),
        "additionalCapabilities": obj(V2021_11, **leaves(V2021_11, "hibernationEnabled")),
        "host": obj("2021-11-15", **leaves("2021-11-15", "id")),
        "hostGroup": obj("2021-11-15", **leaves("2021-11-15", "id")),
        # Undocumented; seen in a real 2023-11-15 answer in 2025 (reference section 3).
        **leaves("2023-11-15", "isVmInStandbyPool"),
        "physicalZone": Field("2023-11-15", STRING, omit_if_empty=True),
    }
)

NETWORK = Obj(
    {
        "interface": arr(
            V2017_04,
            ipv4=obj(
                V2017_04,
                ipAddress=arr(V2017_04, **leaves(V2017_04, "privateIpAddress", "publicIpAddress")),
                subnet=arr(V2017_04, **leaves(V2017_04, "address", "prefix")),
            ),
            ipv6=obj(V2017_04, ipAddress=arr(V2017_04, **leaves(V2017_04, "privateIpAddress"))),
            macAddress=Field(V2017_04, STRING),
        )
    }
)

INSTANCE = Obj({"compute": Field(V2017_04, COMPUTE), "network": Field(V2017_04, NETWORK)})

# Added by `extended=true` (cloud-init, azure-init); not gated by api-version.
EXTENDED = Obj(
    {
        "compute": Field(
            V2017_04,
            Obj({"hasCustomData": Field(V2017_04, BOOLEAN), **leaves(V2017_04, "ppsType")}),
        )
    }
)


# --- operations ---------------------------------------------------------------------------


def default(node: SchemaNode) -> Any:
    if isinstance(node, Leaf):
        return False if node.boolean else ""
    if isinstance(node, Arr):
        return []
    return {name: _field_default(f) for name, f in stored_fields(node).items()}


def stored_fields(node: Obj) -> dict[str, Field]:
    return {name: f for name, f in node.fields.items() if f.stored}


def _field_default(f: Field) -> Any:
    return f.zero or default(f.node)


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _normalize_leaf(leaf: Leaf, value: Any, where: str) -> Any:
    if leaf.boolean:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise DocumentError(
            where, f"expected true or false, got {_kind(value)}", "write true or false"
        )
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise DocumentError(
        where, f"expected a string, got {_kind(value)}", 'give a single value such as ""'
    )


def normalize(node: SchemaNode, value: Any, where: str) -> Any:
    """Validate ``value`` against ``node`` and return the complete, string-valued document."""
    if isinstance(node, Leaf):
        return _normalize_leaf(node, value, where)
    if isinstance(node, Arr):
        if value is None:
            return []
        if not isinstance(value, list):
            raise DocumentError(
                where, f"expected a list, got {_kind(value)}", "write a list (or [])"
            )
        return [normalize(node.item, item, f"{where}[{i}]") for i, item in enumerate(value)]
    if value is None:
        return default(node)
    if not isinstance(value, Mapping):
        raise DocumentError(
            where, f"expected an object, got {_kind(value)}", "write a mapping of fields"
        )
    fields = stored_fields(node)
    for key in value:
        if key not in fields:
            raise DocumentError(f"{where}.{key}", "unknown field", _suggest(str(key), node))
    result = {}
    for name, f in fields.items():
        given = normalize(f.node, value[name], f"{where}.{name}") if name in value else ""
        if f.secret and given == MASK:
            raise DocumentError(
                f"{where}.{name}",
                f"'{MASK}' is how the control plane shows a secret, not a value",
                "give the value itself (a merge patch that leaves the field out keeps it)",
            )
        result[name] = _field_default(f) if given == "" else given
    return result


def _suggest(key: str, node: Obj) -> str:
    close = difflib.get_close_matches(key, list(node.fields), n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return "remove it; known fields are " + ", ".join(node.fields)


def shape(node: SchemaNode, value: Any, version: str) -> Any:
    """The part of a normalized document that ``version`` shows, keys in IMDS order."""
    if isinstance(node, Leaf):
        return value
    if isinstance(node, Arr):
        return [shape(node.item, item, version) for item in value]
    shaped = {}
    for name, f in node.fields.items():
        if f.since > version or f.secret:
            continue
        served = value[name] if f.served is None else f.served(value)
        if not (f.omit_if_empty and served == ""):
            shaped[name] = shape(f.node, served, version)
    return shaped


def masked(node: SchemaNode, value: Any) -> Any:
    """A normalized document with each secret that is set shown as ``MASK``."""
    if isinstance(node, Leaf):
        return value
    if isinstance(node, Arr):
        return [masked(node.item, item) for item in value]
    shown = {}
    for name, item in value.items():
        f = node.fields[name]
        shown[name] = MASK if f.secret and item else masked(f.node, item)
    return shown


def json_schema(node: SchemaNode) -> dict[str, Any]:
    """JSON Schema of what ``normalize`` accepts for ``node`` (for the admin API's OpenAPI)."""
    if isinstance(node, Leaf):
        if node.boolean:
            return {"type": ["boolean", "string"]}
        return {"type": ["string", "number", "boolean", "null"]}
    if isinstance(node, Arr):
        return {"type": ["array", "null"], "items": json_schema(node.item)}
    return {
        "type": ["object", "null"],
        "additionalProperties": False,
        "properties": {
            name: {
                **json_schema(f.node),
                "description": "a secret: never served by IMDS nor shown by the control plane"
                if f.secret
                else f"IMDS shows it from api-version {f.since}",
            }
            for name, f in node.fields.items()
        },
    }
