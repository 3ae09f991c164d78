"""What the client's accessors return, and how each is read from the service's JSON.

Every ``from_json`` raises ``KeyError``, ``TypeError`` or ``ValueError`` on a document it
cannot read; the client turns those into ``IMDSResponseError``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NOT_BEFORE_FORMAT = "%a, %d %b %Y %H:%M:%S GMT"  # scheduled events (RFC 1123)
ATTESTED_TIME_FORMAT = "%m/%d/%y %H:%M:%S -0000"  # attested documents' timeStamp


def _int(value: Any) -> int:
    """Integers the service sends as strings (tokens) or numbers (events, ports)."""
    if isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value.strip())
    raise TypeError(f"expected an integer, got {value!r}")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _object(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a JSON array, got {type(value).__name__}")
    return value


# --- instance metadata -------------------------------------------------------------------------


def parse_tags(tags: str) -> dict[str, str]:
    """``compute.tags`` (``"k:v;k2:v2"``) as a dict. Split at ``;`` and each pair's first
    ``:``; ``compute.tagsList`` is exact where the api-version has it (2019-06-04+)."""
    found: dict[str, str] = {}
    for pair in tags.split(";"):
        if pair:
            name, _, value = pair.partition(":")
            found[name] = value
    return found


def tags_of(compute: Any) -> dict[str, str]:
    """The VM's tags from ``/metadata/instance/compute``: ``tagsList`` if present, else
    ``tags``."""
    compute = _object(compute)
    if "tagsList" in compute:
        return {
            _str(_object(tag)["name"]): _str(_object(tag)["value"])
            for tag in _list(compute["tagsList"])
        }
    return parse_tags(_str(compute.get("tags", "")))


def decode_user_data(text: str) -> bytes:
    """``compute.userData``: base64 (whitespace ignored, as cloud-init reads it)."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"userData is not base64: {exc}") from exc


def versions_of(document: Any) -> tuple[str, ...]:
    """``/metadata/versions``: every api-version, ascending."""
    return tuple(_str(v) for v in _list(_object(document)["apiVersions"]))


# --- managed identity --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A managed-identity token (``/metadata/identity/oauth2/token``). The service sends every
    field as a string; the numbers here are ints (Unix seconds, or seconds)."""

    access_token: str
    token_type: str
    resource: str
    client_id: str
    expires_in: int
    expires_on: int
    not_before: int | None = None
    ext_expires_in: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __repr__(self) -> str:  # never print the token itself
        return (
            f"AccessToken(token_type={self.token_type!r}, resource={self.resource!r}, "
            f"client_id={self.client_id!r}, expires_on={self.expires_on})"
        )

    @property
    def expires_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.expires_on, dt.UTC)

    @classmethod
    def from_json(cls, document: Any) -> AccessToken:
        body = _object(document)

        def optional(name: str) -> int | None:
            return _int(body[name]) if body.get(name) not in (None, "") else None

        return cls(
            access_token=_str(body["access_token"]),
            token_type=_str(body.get("token_type", "Bearer")),
            resource=_str(body.get("resource", "")),
            client_id=_str(body.get("client_id", "")),
            expires_in=_int(body["expires_in"]),
            expires_on=_int(body["expires_on"]),
            not_before=optional("not_before"),
            ext_expires_in=optional("ext_expires_in"),
            raw=dict(body),
        )


# --- scheduled events --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduledEvent:
    event_id: str
    status: str  # Scheduled, Started
    type: str  # Freeze, Reboot, Redeploy, Preempt, Terminate
    resource_type: str
    resources: tuple[str, ...]
    not_before: dt.datetime | None  # None once Started
    description: str = ""  # 2019-04-01+
    source: str = ""  # Platform, User (2019-08-01+)
    duration: int | None = None  # DurationInSeconds (2020-07-01+): -1 unknown
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, document: Any) -> ScheduledEvent:
        body = _object(document)
        not_before = _str(body.get("NotBefore", ""))
        return cls(
            event_id=_str(body["EventId"]),
            status=_str(body["EventStatus"]),
            type=_str(body["EventType"]),
            resource_type=_str(body.get("ResourceType", "")),
            resources=tuple(_str(r) for r in _list(body.get("Resources", []))),
            not_before=(
                dt.datetime.strptime(not_before, NOT_BEFORE_FORMAT).replace(tzinfo=dt.UTC)
                if not_before
                else None
            ),
            description=_str(body.get("Description", "")),
            source=_str(body.get("EventSource", "")),
            duration=_int(body["DurationInSeconds"]) if "DurationInSeconds" in body else None,
            raw=dict(body),
        )


@dataclass(frozen=True, slots=True)
class ScheduledEvents:
    """The VM's scheduled events; ``incarnation`` (DocumentIncarnation) changes whenever the
    list does."""

    incarnation: int
    events: tuple[ScheduledEvent, ...]

    @classmethod
    def from_json(cls, document: Any) -> ScheduledEvents:
        body = _object(document)
        return cls(
            incarnation=_int(body["DocumentIncarnation"]),
            events=tuple(ScheduledEvent.from_json(e) for e in _list(body["Events"])),
        )


# --- load balancer -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublicIpAddress:
    frontend_ip_address: str
    private_ip_address: str


@dataclass(frozen=True, slots=True)
class InboundRule:
    frontend_ip_address: str
    protocol: str
    frontend_port: int
    backend_port: int
    private_ip_address: str


@dataclass(frozen=True, slots=True)
class OutboundRule:
    frontend_ip_address: str
    private_ip_address: str


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    """``/metadata/loadbalancer``: the VM's Standard Load Balancer. ``raw`` keeps everything
    (e.g. a Gateway LB's ``tunnelInterfaces``)."""

    public_ip_addresses: tuple[PublicIpAddress, ...]
    inbound_rules: tuple[InboundRule, ...]
    outbound_rules: tuple[OutboundRule, ...]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, document: Any) -> LoadBalancer:
        body = _object(_object(document)["loadbalancer"])
        return cls(
            public_ip_addresses=tuple(
                PublicIpAddress(
                    _str(_object(a).get("frontendIpAddress", "")),
                    _str(_object(a).get("privateIpAddress", "")),
                )
                for a in _list(body.get("publicIpAddresses", []))
            ),
            inbound_rules=tuple(
                InboundRule(
                    frontend_ip_address=_str(r.get("frontendIpAddress", "")),
                    protocol=_str(r.get("protocol", "")),
                    frontend_port=_int(r.get("frontendPort", 0)),
                    backend_port=_int(r.get("backendPort", 0)),
                    private_ip_address=_str(r.get("privateIpAddress", "")),
                )
                for r in map(_object, _list(body.get("inboundRules", [])))
            ),
            outbound_rules=tuple(
                OutboundRule(
                    _str(_object(r).get("frontendIpAddress", "")),
                    _str(_object(r).get("privateIpAddress", "")),
                )
                for r in _list(body.get("outboundRules", []))
            ),
            raw=dict(body),
        )


# --- attested data -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttestedDocument:
    """The signed content of ``/metadata/attested/document``, after its signature and
    certificate chain verified. Fields a version does not sign are "" (``license_type`` is
    only there for Azure Hybrid Benefit VMs)."""

    nonce: str
    vm_id: str
    subscription_id: str
    sku: str
    license_type: str
    plan: Mapping[str, str]
    created_on: dt.datetime
    expires_on: dt.datetime
    content: bytes = field(repr=False)  # the signed bytes, exactly
    signer_names: tuple[str, ...] = ()  # the signing certificate's DNS names
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_content(cls, content: bytes, signer_names: tuple[str, ...]) -> AttestedDocument:
        body = _object(json.loads(content))
        stamps = _object(body["timeStamp"])

        def moment(name: str) -> dt.datetime:
            parsed = dt.datetime.strptime(_str(stamps[name]), ATTESTED_TIME_FORMAT)
            return parsed.replace(tzinfo=dt.UTC)

        plan = _object(body.get("plan", {}))
        return cls(
            nonce=_str(body.get("nonce", "")),
            vm_id=_str(body.get("vmId", "")),
            subscription_id=_str(body.get("subscriptionId", "")),
            sku=_str(body.get("sku", "")),
            license_type=_str(body.get("licenseType", "")),
            plan={_str(k): _str(v) for k, v in plan.items()},
            created_on=moment("createdOn"),
            expires_on=moment("expiresOn"),
            content=content,
            signer_names=signer_names,
            raw=dict(body),
        )
