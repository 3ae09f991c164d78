"""The client's API, written once: each accessor a flow (``protocol.Flow``) saying what it asks
the service and how it reads the answers, and ``ClientBase``, what both clients hold.
``IMDSClient`` and ``AsyncIMDSClient`` expose each accessor under its name, with its
parameters and docstring, and run its flow (blocking, or awaited)."""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from azimds.client import attested as attestation
from azimds.client.errors import AttestationError, newest_versions
from azimds.client.models import (
    AccessToken,
    AttestedDocument,
    LoadBalancer,
    ScheduledEvent,
    ScheduledEvents,
    decode_user_data,
    tags_of,
    versions_of,
)
from azimds.client.protocol import (
    DEFAULT_API_VERSION,
    Call,
    Flow,
    Reply,
    Send,
    Session,
    checked,
    json_of,
    metadata_path,
    parsed,
    parsed_text,
    resolve_endpoint,
)
from azimds.client.retry import RetryPolicy

TOKEN_PATH = "/metadata/identity/oauth2/token"
SELECTORS = ("client_id", "object_id", "msi_res_id")
LEAF_MEMORY = 1024  # instance paths remembered as leaves (asked with format=text at once)

H = TypeVar("H")  # a client's httpx client: httpx.Client or httpx.AsyncClient
M = TypeVar("M", bound=Callable[..., Any])


def instance_path(path: str) -> str:
    """``compute/vmId`` (or ``/compute/vmId/``) -> ``/metadata/instance/compute/vmId``."""
    inner = "/".join(segment for segment in path.split("/") if segment)
    return "/metadata/instance" + (f"/{inner}" if inner else "")


class Operations:
    """Every accessor as a flow over one ``Session``."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._leaves: set[str] = set()  # instance paths known to be leaves

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        api_version: str | None = None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    ) -> Flow[Reply]:
        """Any request; the final ``Reply`` (after negotiation and retries) whatever its
        status: nothing is raised for non-2xx. A path without ``/metadata`` gets it
        (``instance/compute``)."""
        pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
        given = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        versions = [v for k, v in pairs if k == "api-version"]
        if versions and api_version is None:
            api_version = versions[-1]
        call = Call(method.upper(), metadata_path(path), pairs, body, api_version, given)
        return (yield from self.session.exchange(call))

    def instance(
        self, path: str = "", *, extended: bool = False, api_version: str | None = None
    ) -> Flow[Any]:
        """The instance document, or the part at ``path`` (``compute``, ``network/interface/0``):
        parsed JSON for objects and arrays, a string for a leaf (asked with ``format=text``,
        as the service requires for leaves)."""
        full = instance_path(path)
        params = [("extended", "true")] if extended else []
        if full in self._leaves:
            return (yield from self.instance_text(path, extended=extended, api_version=api_version))
        reply = yield from self.session.exchange(Call("GET", full, params, api_version=api_version))
        # A leaf asked for as JSON is a 400 (its body is UNCONFIRMED): ask again as text.
        if reply.status == 400 and full != "/metadata/instance" and not newest_versions(reply.body):
            text = yield from self.session.exchange(
                Call("GET", full, [*params, ("format", "text")], api_version=api_version)
            )
            if text.ok:
                if len(self._leaves) < LEAF_MEMORY:
                    self._leaves.add(full)
                return text.text
        return json_of(reply)

    def instance_text(
        self, path: str = "", *, extended: bool = False, api_version: str | None = None
    ) -> Flow[str]:
        """``format=text``: a leaf's value, or a listing of a node's children (one a line,
        ``/`` after objects and arrays)."""
        params = [("format", "text")] + ([("extended", "true")] if extended else [])
        call = Call("GET", instance_path(path), params, api_version=api_version)
        reply = yield from self.session.exchange(call)
        return checked(reply).text

    def tags(self) -> Flow[dict[str, str]]:
        """The VM's tags: from ``compute.tagsList`` where the api-version has it, else parsed
        from ``compute.tags`` (``"k:v;k2:v2"``)."""
        reply = yield from self.session.exchange(Call("GET", instance_path("compute")))
        return parsed(reply, tags_of)

    def user_data(self) -> Flow[bytes]:
        """``compute.userData``, base64-decoded (b"" when the VM has none)."""
        reply = yield from self.session.exchange(
            Call("GET", instance_path("compute/userData"), [("format", "text")])
        )
        return parsed_text(reply, decode_user_data)

    def versions(self) -> Flow[tuple[str, ...]]:
        """``/metadata/versions``: every api-version the service knows, ascending."""
        reply = yield from self.session.exchange(Call("GET", "/metadata/versions"))
        return parsed(reply, versions_of)

    def token(
        self,
        resource: str,
        *,
        client_id: str | None = None,
        object_id: str | None = None,
        msi_res_id: str | None = None,
        api_version: str | None = None,
    ) -> Flow[AccessToken]:
        """A managed-identity token for ``resource``; at most one of ``client_id``,
        ``object_id``, ``msi_res_id`` picks a user-assigned identity."""
        chosen = [
            (name, value)
            for name, value in zip(SELECTORS, (client_id, object_id, msi_res_id), strict=True)
            if value
        ]
        if len(chosen) > 1:
            raise ValueError("give at most one of client_id, object_id and msi_res_id")
        if not resource:
            raise ValueError("a token needs a resource, e.g. https://management.azure.com/")
        call = Call("GET", TOKEN_PATH, [("resource", resource), *chosen], api_version=api_version)
        reply = yield from self.session.exchange(call)
        return parsed(reply, AccessToken.from_json)

    def tenant_id(self) -> Flow[str]:
        """``/metadata/identity/info``: the system-assigned identity's tenant."""
        reply = yield from self.session.exchange(Call("GET", "/metadata/identity/info"))
        return parsed(reply, lambda body: str(body["tenantId"]))

    def attested(
        self,
        root: attestation.CertificateLike | Iterable[attestation.CertificateLike],
        *,
        nonce: str | None = None,
        intermediates: (
            attestation.CertificateLike | Iterable[attestation.CertificateLike] | None
        ) = None,
        now: dt.datetime | None = None,
        domains: Sequence[str] = attestation.METADATA_DOMAINS,
    ) -> Flow[AttestedDocument]:
        """The attested document, verified against ``root`` (see ``verify_attested``). With
        no ``intermediates`` the signer's issuer is fetched from its AIA URL."""
        params = [("nonce", nonce)] if nonce else []
        reply = yield from self.session.exchange(Call("GET", "/metadata/attested/document", params))
        signature = parsed(reply, _signature)
        if intermediates is None:
            url = attestation.issuer_url(attestation.signer_of(signature))
            if url is None:
                raise AttestationError(
                    "attested document: no intermediates given, and the signing certificate "
                    "names no issuer URL (AIA)"
                )
            fetched = yield from self.session.fetch(url)
            if not fetched.ok:
                raise AttestationError(
                    f"attested document: fetching the issuer certificate from {url} gave "
                    f"HTTP {fetched.status}",
                    status=fetched.status,
                    body=fetched.body,
                    url=url,
                )
            intermediates = [attestation.load_certificate(fetched.body)]
        return attestation.verify_attested(
            signature, root, intermediates=intermediates, now=now, domains=domains
        )

    def scheduled_events(self, *, api_version: str | None = None) -> Flow[ScheduledEvents]:
        """The VM's scheduled events and their ``DocumentIncarnation``."""
        call = Call("GET", "/metadata/scheduledevents", api_version=api_version)
        reply = yield from self.session.exchange(call)
        return parsed(reply, ScheduledEvents.from_json)

    def approve(self, *events: str | ScheduledEvent, api_version: str | None = None) -> Flow[None]:
        """Approve (start) events: ``POST {"StartRequests":[{"EventId":...}]}``. The service
        answers 200 for a valid id even when it was approved already, so retries are safe."""
        ids = [e.event_id if isinstance(e, ScheduledEvent) else str(e) for e in events]
        if not ids:
            raise ValueError("approve at least one event")
        body = json.dumps(
            {"StartRequests": [{"EventId": i} for i in ids]}, separators=(",", ":")
        ).encode()
        call = Call("POST", "/metadata/scheduledevents", body=body, api_version=api_version)
        reply = yield from self.session.exchange(call)
        checked(reply)
        return None

    def load_balancer(self) -> Flow[LoadBalancer]:
        """``/metadata/loadbalancer`` (``NotFound`` when the VM is behind no Standard LB)."""
        reply = yield from self.session.exchange(Call("GET", "/metadata/loadbalancer"))
        return parsed(reply, LoadBalancer.from_json)


class ClientBase(Generic[H]):
    """What ``IMDSClient`` and ``AsyncIMDSClient`` hold alike: the session (where IMDS is, its
    api-versions, the retry policy), the operations over it, and their httpx clients (``H``),
    made by ``new_http(external)``. Each client adds only how it performs a flow's steps."""

    def __init__(
        self,
        endpoint: str | None,
        api_version: str | None,
        retry: RetryPolicy | None,
        negotiate: bool,
        headers: Mapping[str, str] | None,
        clock: Callable[[], float],
        new_http: Callable[[bool], H],
    ) -> None:
        self.session = Session(
            endpoint=resolve_endpoint(endpoint),
            api_version=api_version or DEFAULT_API_VERSION,
            policy=retry or RetryPolicy(),
            negotiate=negotiate,
            headers=tuple((headers or {}).items()),
            clock=clock,
        )
        self._operations = Operations(self.session)
        self._new_http = new_http
        self._http = new_http(False)
        self._external: H | None = None  # for URLs outside IMDS, made when first needed

    @property
    def endpoint(self) -> str:
        return self.session.endpoint

    @property
    def api_version(self) -> str:
        """The api-version instance requests use now (after any negotiation)."""
        return self.session.negotiated.get("instance", self.session.api_version)

    def _http_for(self, step: Send) -> H:
        if not step.external:
            return self._http
        if self._external is None:
            self._external = self._new_http(True)
        return self._external

    def _opened(self) -> list[H]:
        """The httpx clients to close."""
        return [self._http] if self._external is None else [self._http, self._external]


def as_method(method: M, operation: Callable[..., Any], owner: str) -> M:
    """``method``, a client's runner of ``operation``, named and documented as ``operation``
    for ``help()``: its parameters and docstring, but not its return (a flow, run away)."""
    functools.update_wrapper(method, operation)
    method.__qualname__ = f"{owner}.{operation.__name__}"
    signature = inspect.signature(operation).replace(return_annotation=inspect.Signature.empty)
    method.__signature__ = signature  # type: ignore[attr-defined]
    return method


def _signature(body: Any) -> str:
    if body.get("encoding", "pkcs7") != "pkcs7":
        raise ValueError(f"unknown encoding {body.get('encoding')!r}")
    return str(body["signature"])
