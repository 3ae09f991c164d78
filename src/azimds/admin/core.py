"""What every resource of the control plane shares: the route record its modules declare their
endpoints with, the error answer, the JSON body reader, and the context handlers are called with.

Each resource module (``vms``, ``identities``, ``events``, ``faults``, ``keys``, ``metrics``,
``public``) fills its own ``ROUTES`` with ``ROUTES.add(...)`` next to each handler; ``api``
assembles them into the one route table, from which ``openapi`` generates the document.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from azimds.fleet.operations import FleetError
from azimds.fleet.snapshot import Fleet
from azimds.fleet.vm import VM
from azimds.guest.endpoint import Services
from azimds.guest.faults import Faults
from azimds.guest.identity import TokenSettings
from azimds.guest.observe import Recorder
from azimds.serving.protocol import Clients
from azimds.store.base import Store, StoreError, Transaction

MAX_BODY = 1024 * 1024  # bytes; larger bodies get 413
JSON_TYPES = ("application/json", "application/merge-patch+json")
STATUS = {"invalid": 400, "not_found": 404, "conflict": 409}  # a FleetError's kind -> status
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Schema:
    """A JSON Schema the document names under ``components/schemas``; used as a ``$ref``."""

    name: str
    json: Mapping[str, Any]


ERROR = Schema(
    "Error",
    {
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
    },
)


class ApiError(Exception):
    """An answer other than success: a status and the JSON error body (``ERROR``)."""

    def __init__(self, status: int, code: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def response(self) -> JSONResponse:
        error = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        headers = {"WWW-Authenticate": 'Bearer realm="azimds"'} if self.status == 401 else None
        return JSONResponse({"error": error}, status_code=self.status, headers=headers)


def refused(exc: FleetError) -> ApiError:
    """The answer to a change or request the fleet refuses."""
    return ApiError(STATUS[exc.kind], exc.kind, str(exc), exc.where)


async def read_json(request: Request) -> Any:
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type not in JSON_TYPES:
        raise ApiError(415, "unsupported_media_type", f"send JSON, not {content_type}")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise ApiError(413, "too_large", f"the body is over {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise ApiError(413, "too_large", f"the body is over {MAX_BODY} bytes")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Observed:
    """What the control plane reports about the guest plane: its log and counters."""

    recorder: Recorder
    services: Services
    faults: Faults
    clients: Clients


class NodeView(Protocol):
    """What the control plane needs of its node (``node/follower.Node``), which builds it: the
    node depends on the control plane, never the other way round."""

    store: Store
    outage: bool

    @property
    def fleet(self) -> Fleet: ...  # the newest snapshot built
    @property
    def served(self) -> Fleet: ...  # the snapshot the guest plane serves
    def refresh(self) -> Fleet: ...
    async def write(self, work: Callable[[Transaction], T]) -> T: ...


@dataclass(slots=True)
class Control:
    """What the handlers of every resource are called with: the node and its settings."""

    node: NodeView
    caller_mode: str
    tokens: TokenSettings
    url: str  # where this control plane is reached (for jwks_uri)
    terminate_notice: int
    observed: Observed
    guest: list[str]  # the guest plane's URLs, for /v1/status
    routes: Sequence[Endpoint]  # the route table, for /openapi.json
    started: float = field(default_factory=time.monotonic)  # for the uptime /v1/status reports
    # The WireServer's URLs by category (wireserver, hostplugin; None: not served), for /v1/status
    wire: Mapping[str, str | None] = field(default_factory=dict)

    async def write(self, work: Callable[[Transaction], T]) -> T:
        """Run a change in one transaction; answer once this node serves it."""
        try:
            return await self.node.write(work)
        except FleetError as exc:
            raise refused(exc) from exc
        except StoreError as exc:  # unreachable, or refused: nothing was written either way
            raise ApiError(503, "store_unavailable", f"nothing was changed: {exc}") from exc

    async def resolve(self, request: Request) -> VM:
        """The VM the path's ``{vm}`` names, by vmId or name, also one another node wrote."""
        key = request.path_params["vm"]
        vm = self.node.served.find(key)
        if vm is None:
            try:
                await asyncio.to_thread(self.node.refresh)  # perhaps written by another node
            except StoreError as exc:
                raise ApiError(503, "store_unavailable", f"cannot look {key} up: {exc}") from exc
            vm = self.node.fleet.find(key)
        if vm is None:
            raise ApiError(404, "not_found", f"no VM with vmId or name '{key}'")
        return vm


Handler = Callable[[Control, Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Parameter:
    """A path or query parameter of an endpoint, as the document describes it."""

    name: str
    description: str = ""
    where: str = "path"  # or "query" (what ``Routes.add`` takes as ``query``)
    type: str = "string"


@dataclass(frozen=True, slots=True)
class Body:
    """An endpoint's request body: its schema and the media types it comes in."""

    schema: Schema | Mapping[str, Any]
    required: bool = True
    media: tuple[str, ...] = ("application/json",)


@dataclass(frozen=True, slots=True)
class Returns:
    """One documented answer: its status, what it means and, when it has a body, its schema."""

    status: int
    description: str
    schema: Schema | Mapping[str, Any] | None = None
    media: str = "application/json"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One route: where it is, what handles it, and what the document says of it.

    ``errors`` are the error statuses it answers besides those that follow from the rest:
    401 without the token (unless ``public``), 400, 413 and 415 for its body (``read_json``),
    503 for a write, which every method but GET is (the store may be unreachable).
    ``documented`` false keeps it out of the document.
    """

    method: str
    path: str
    handler: Handler
    summary: str
    replies: tuple[Returns, ...]
    errors: tuple[int, ...] = ()
    body: Body | None = None
    parameters: tuple[Parameter, ...] = ()
    public: bool = False
    documented: bool = True

    @property
    def statuses(self) -> list[int]:
        """Every error status it may answer, in order."""
        implied = {*self.errors, *(() if self.public else (401,))}
        implied |= {400, 413, 415} if self.body is not None else set()
        implied |= {503} if self.method != "GET" else set()
        return sorted(implied)


class Routes(list[Endpoint]):
    """A resource module's endpoints, in the order they are matched; ``path_parameters``
    describe the ``{name}`` parts of their paths, which each endpoint gets."""

    def __init__(self, *path_parameters: Parameter) -> None:
        super().__init__()
        self.path_parameters = {parameter.name: parameter for parameter in path_parameters}

    def add(
        self,
        method: str,
        path: str,
        *replies: Returns,
        errors: tuple[int, ...] = (),
        body: Body | Schema | Mapping[str, Any] | None = None,
        query: tuple[Parameter, ...] = (),
        public: bool = False,
        documented: bool = True,
        summary: str = "",
    ) -> Callable[[Handler], Handler]:
        """Declare the decorated handler as the endpoint for ``method`` on ``path``; its
        summary is the first line of the handler's docstring unless ``summary`` is given."""
        named = tuple(self.path_parameters[name] for name in re.findall(r"{(\w+)}", path))
        parameters = named + tuple(replace(parameter, where="query") for parameter in query)
        if body is not None and not isinstance(body, Body):
            body = Body(body)

        def declare(handler: Handler) -> Handler:
            said = summary or (handler.__doc__ or "").strip().splitlines()[0].rstrip(".")
            self.append(
                Endpoint(
                    method,
                    path,
                    handler,
                    said,
                    replies,
                    errors,
                    body,
                    parameters,
                    public,
                    documented,
                )
            )
            return handler

        return declare
