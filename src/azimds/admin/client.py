"""The control plane's client: one method per operation, over TCP or a Unix socket.

``AdminClient("http://127.0.0.1:16926", token)`` (or ``"unix:/path/admin.sock"``) is what the
CLI, the kit (``azimds.kit.local``), the benchmarks and the tests drive a node with. Every
admin URL path is written here once. A refusal raises ``AdminError`` carrying the API's JSON
error (status, code, message, field); ``send`` is the raw transport underneath, for callers
that look at the HTTP itself.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, cast
from urllib.parse import quote, urlencode, urlsplit

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"


class AdminError(Exception):
    """The control plane refused a request (``status`` 400 or more), or could not be reached
    (``status`` 0). ``str()`` is the line the CLI prints."""

    def __init__(self, message: str, status: int = 0, code: str = "", field: str = "") -> None:
        shown = f"{status} {code}: {message}{f' ({field})' if field else ''}" if status else message
        super().__init__(shown)
        self.status, self.code, self.message, self.field = status, code, message, field

    @classmethod
    def of(cls, status: int, body: bytes) -> AdminError:
        """The error an answer carries: ``{"error": {"code", "message", "field"}}``, or its
        text when it is not the API's JSON."""
        try:
            error = json.loads(body)["error"]
            return cls(str(error["message"]), status, str(error["code"]), error.get("field", ""))
        except (ValueError, TypeError, KeyError):
            return cls(body.decode("utf-8", "replace"), status)


@dataclass(frozen=True, slots=True)
class Answer:
    """One raw answer: the status, the headers (names in lower case), the body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


# --- what the API answers (the OpenAPI document, GET /openapi.json, has every field) ---


class Status(TypedDict):
    version: str
    revision: int
    store: str
    storeReachable: bool
    callerMode: str
    vms: int
    defaultVm: str
    guest: list[str]
    controlPlane: str
    wireserver: str | None
    hostplugin: str | None
    uptime: float
    pid: int


class VMSummary(TypedDict):
    vmId: str
    name: str
    addresses: list[str]
    location: str
    vmSize: str
    provisioning: str  # the provisioning state


class VMList(TypedDict):
    revision: int
    vms: list[VMSummary]


class Provisioning(TypedDict):
    state: str  # not_provisioned, provisioning, ready, failed
    incarnation: int
    reports: list[dict[str, Any]]


class Identities(TypedDict):
    systemAssigned: dict[str, Any]
    userAssigned: list[dict[str, Any]]


class Event(TypedDict):
    eventId: str
    type: str
    status: str
    vms: list[str]
    names: list[str]
    appearsAt: str
    notBefore: str
    startedAt: str | None
    durationInSeconds: int
    description: str
    source: str


class Events(TypedDict):
    now: str
    events: list[Event]


class Clock(TypedDict):
    now: str
    mode: Literal["manual", "real"]
    scale: float


class SigningKey(TypedDict):
    kid: str
    active: bool
    created: int
    retires: int | None


class Rotation(TypedDict):
    kid: str
    overlap: int


Description = dict[str, Any]  # a VM's complete description (compute, network, ...)
FaultRule = dict[str, Any]  # a rule as docs/faults.md writes it, with fired/remaining/active
LogEntry = dict[str, Any]  # one guest request: sequence, time, vm, path, status, ...


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def _segment(key: str) -> str:
    """A name or id as one path segment (names may hold spaces, slashes, ...)."""
    return quote(key, safe="")


class AdminClient:
    """A node's control plane at ``url`` (``http://HOST:PORT`` or ``unix:PATH``)."""

    error: type[AdminError] = AdminError  # what refusals raise (the kit's is a subclass)

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout

    # --- transport -----------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        if self.url.startswith("unix:"):
            return _UnixConnection(self.url.removeprefix("unix:"), self.timeout)
        parts = urlsplit(self.url)
        return http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=self.timeout
        )

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """One request with the bearer token (none when the token is "": the public routes
        need none), as it is answered: no status is an error here."""
        sent = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        sent |= headers or {}
        connection = self._connection()
        try:
            try:
                connection.request(method, path, body=body, headers=sent)
                response = connection.getresponse()
            except (BrokenPipeError, ConnectionResetError):
                # Answered before the body was all sent (a 413), and closed: the answer
                # may still wait in the socket, as curl would read it.
                if connection.sock is None:
                    raise
                response = http.client.HTTPResponse(connection.sock, method=method)
                response.begin()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:  # none, or no whole answer
            raise self.error(f"cannot reach the control plane at {self.url}: {exc}") from exc
        finally:
            connection.close()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)

    def request(self, method: str, path: str, body: Any = None, content_type: str = JSON) -> Any:
        """One request with a JSON body (none when ``body`` is None); the decoded JSON
        answer, or None for an empty one. A status of 400 or more raises ``error``."""
        answer = self._checked(method, path, body, content_type)
        return answer.json()

    def _checked(
        self, method: str, path: str, body: Any = None, content_type: str = JSON
    ) -> Answer:
        payload = None if body is None else json.dumps(body).encode()
        answer = self.send(method, path, payload, {"Content-Type": content_type} if payload else {})
        if answer.status >= 400:
            raise self.error.of(answer.status, answer.body)
        return answer

    # --- the node --------------------------------------------------------------------------

    def health(self) -> None:
        """Returns when the control plane serves (``GET /healthz``, no token needed)."""
        self._checked("GET", "/healthz")

    def status(self) -> Status:
        return cast(Status, self.request("GET", "/v1/status"))

    def openapi(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("GET", "/openapi.json"))

    def metrics(self) -> str:
        """Prometheus text format."""
        return self._checked("GET", "/metrics").body.decode()

    def requests(self, since: int = 0, limit: int | None = None) -> list[LogEntry]:
        """The guest requests answered after sequence ``since``, oldest first (at most
        ``limit``; the node's default is 1,000)."""
        query = {"since": since, **({"limit": limit} if limit is not None else {})}
        answer = self.request("GET", f"/v1/requests?{urlencode(query)}")
        return cast(list[LogEntry], answer["requests"])

    # --- VMs ---------------------------------------------------------------------------------

    def vms(self) -> VMList:
        return cast(VMList, self.request("GET", "/v1/vms"))

    def vm(self, key: str) -> Description:
        """A VM's complete description, by vmId or name."""
        return cast(Description, self.request("GET", f"/v1/vms/{_segment(key)}"))

    def create_vm(self, description: Mapping[str, Any]) -> Description:
        """Add a VM; what is not given is empty, as on IMDS."""
        return cast(Description, self.request("POST", "/v1/vms", dict(description)))

    def replace_vm(self, key: str, description: Mapping[str, Any]) -> Description:
        return cast(Description, self.request("PUT", f"/v1/vms/{_segment(key)}", dict(description)))

    def patch_vm(self, key: str, patch: Any) -> Description:
        """A JSON Merge Patch (RFC 7396) of the description."""
        path = f"/v1/vms/{_segment(key)}"
        return cast(Description, self.request("PATCH", path, patch, MERGE_PATCH))

    def delete_vm(self, key: str) -> None:
        self._checked("DELETE", f"/v1/vms/{_segment(key)}")

    def provisioning(self, key: str) -> Provisioning:
        """A VM's provisioning state: state, incarnation, the agents' reports."""
        return cast(Provisioning, self.request("GET", f"/v1/vms/{_segment(key)}/provisioning"))

    def reset_provisioning(self, key: str) -> Provisioning:
        """Make a VM not provisioned again, with a new incarnation."""
        path = f"/v1/vms/{_segment(key)}/provisioning/reset"
        return cast(Provisioning, self.request("POST", path))

    def media(self, key: str, form: Literal["iso", "xml"] = "iso") -> bytes:
        """The VM's provisioning media: the CD-ROM image (``iso``) or its ovf-env.xml
        (``xml``). It holds the VM's admin password, if it has one."""
        suffix = {"iso": "", "xml": "/ovf-env.xml"}[form]
        return self._checked("GET", f"/v1/vms/{_segment(key)}/media{suffix}").body

    # --- managed identities --------------------------------------------------------------

    def identities(self, vm: str) -> Identities:
        return cast(Identities, self.request("GET", f"/v1/vms/{_segment(vm)}/identities"))

    def add_identity(self, vm: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Assign a user-assigned identity (name, clientId, objectId, resourceId, tenantId;
        what is not given is derived); returns it."""
        path = f"/v1/vms/{_segment(vm)}/identities"
        return cast(dict[str, Any], self.request("POST", path, dict(spec)))

    def remove_identity(self, vm: str, key: str) -> None:
        """Unassign a user-assigned identity by name, client id or object id."""
        self._checked("DELETE", f"/v1/vms/{_segment(vm)}/identities/{_segment(key)}")

    def enable_system_identity(
        self, vm: str, ids: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Turn the system-assigned identity on (clientId, objectId, tenantId derived unless
        given); returns it."""
        path = f"/v1/vms/{_segment(vm)}/identities/system"
        return cast(dict[str, Any], self.request("PUT", path, dict(ids or {})))

    def disable_system_identity(self, vm: str) -> None:
        self._checked("DELETE", f"/v1/vms/{_segment(vm)}/identities/system")

    # --- scheduled events and their clock -------------------------------------------------

    def events(self, everything: bool = False) -> Events:
        """Pending, scheduled and started events (``everything``: also the ended ones)."""
        return cast(Events, self.request("GET", "/v1/events" + ("?all=true" if everything else "")))

    def schedule_event(self, spec: Mapping[str, Any]) -> Event:
        """Schedule an event: type, vms, and notBefore, after, duration, description, source,
        unplanned as docs/events.md gives them."""
        return cast(Event, self.request("POST", "/v1/events", dict(spec)))

    def run_scenario(self, entries: Sequence[Mapping[str, Any]]) -> list[Event]:
        """A timed sequence of events, each entry's ``after`` counted from now."""
        answer = self.request("POST", "/v1/events/scenario", {"events": [dict(e) for e in entries]})
        return cast(list[Event], answer["events"])

    def approve_event(self, event_id: str) -> Event:
        return cast(Event, self.request("POST", f"/v1/events/{_segment(event_id)}/approve"))

    def cancel_event(self, event_id: str) -> None:
        self._checked("DELETE", f"/v1/events/{_segment(event_id)}")

    def clock(self) -> Clock:
        return cast(Clock, self.request("GET", "/v1/clock"))

    def advance_clock(self, seconds: float) -> str:
        """Move the event clock forward (what falls due happens); its time after."""
        return cast(str, self.request("POST", "/v1/clock/advance", {"seconds": seconds})["now"])

    # --- fault rules -------------------------------------------------------------------------

    def faults(self) -> list[FaultRule]:
        return cast(list[FaultRule], self.request("GET", "/v1/faults")["faults"])

    def fault(self, rule_id: str) -> FaultRule:
        return cast(FaultRule, self.request("GET", f"/v1/faults/{_segment(rule_id)}"))

    def add_fault(self, rule: Mapping[str, Any]) -> FaultRule:
        """Add a rule (docs/faults.md); returns it with its id."""
        return cast(FaultRule, self.request("POST", "/v1/faults", dict(rule)))

    def remove_fault(self, rule_id: str) -> None:
        self._checked("DELETE", f"/v1/faults/{_segment(rule_id)}")

    def clear_faults(self) -> int:
        """Remove every rule; how many there were."""
        return cast(int, self.request("DELETE", "/v1/faults")["removed"])

    # --- signing: token keys, their JWKS, the attestation CA ------------------------------

    def signing_keys(self) -> list[SigningKey]:
        return cast(list[SigningKey], self.request("GET", "/v1/keys")["keys"])

    def rotate_keys(self) -> Rotation:
        return cast(Rotation, self.request("POST", "/v1/keys/rotate"))

    def jwks(self, tenant: str | None = None) -> dict[str, Any]:
        """The keys tokens are signed with, as relying services fetch them (no token)."""
        prefix = f"/{_segment(tenant)}" if tenant is not None else ""
        return cast(dict[str, Any], self.request("GET", f"{prefix}/discovery/keys"))

    def openid_configuration(self, tenant: str) -> dict[str, Any]:
        path = f"/{_segment(tenant)}/.well-known/openid-configuration"
        return cast(dict[str, Any], self.request("GET", path))

    def ca_certificate(self, which: str, form: str = "pem") -> bytes:
        """The attestation CA's root or intermediate certificate, ``pem`` or ``der``."""
        suffix = {"pem": "pem", "der": "cer"}[form]
        return self._checked("GET", f"/attestation/{which}.{suffix}").body
