"""The admin REST API: VMs (create, read, list, replace, merge-patch, delete) and status.

Every route but ``/openapi.json`` and ``/healthz`` needs the node's bearer token. Writes go to
the store in one transaction through ``fleet.operations``; the answer waits until this node
serves the change, so a guest request sent after it sees the new data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from azimds import __version__
from azimds.admin.openapi import document
from azimds.fleet.clock import advance_clock
from azimds.fleet.events import Event
from azimds.fleet.faults import FaultError, add_fault, clear_faults, parse_rule, remove_fault
from azimds.fleet.operations import (
    FleetError,
    add_user_identity,
    create_vm,
    delete_vm,
    patch_vm,
    remove_user_identity,
    replace_vm,
    set_system_identity,
)
from azimds.fleet.scheduling import (
    MAX_AHEAD,
    approve_events,
    cancel_event,
    parse_event,
    schedule_event,
    seconds_ahead,
)
from azimds.fleet.signing_keys import rotate_jwt_key
from azimds.fleet.vm import VM
from azimds.guest.faults import Faults
from azimds.guest.identity import TOKEN_REFRESH_MARGIN, TokenSettings
from azimds.guest.observe import Recorder, prometheus
from azimds.guest.routes import Services
from azimds.node.follower import Node
from azimds.serving.http1 import Clients
from azimds.store.base import StoreError, Transaction

MAX_BODY = 1024 * 1024  # bytes; larger bodies get 413
# The attestation CA's certificates; the leaf's AIA names the intermediate's URL.
INTERMEDIATE_PATH = "/attestation/intermediate.cer"
CA_PATHS = {
    INTERMEDIATE_PATH: ("intermediate", "der"),
    "/attestation/intermediate.pem": ("intermediate", "pem"),
    "/attestation/root.cer": ("root", "der"),
    "/attestation/root.pem": ("root", "pem"),
}
PUBLIC_PATHS = frozenset({"/openapi.json", "/healthz", "/metrics", "/discovery/keys", *CA_PATHS})
# What relying services fetch to verify tokens, for any tenant: no token needed.
PUBLIC_PATTERN = re.compile(r"^/[^/]+/(\.well-known/openid-configuration|discovery/keys)$")
JSON_TYPES = ("application/json", "application/merge-patch+json")
STATUS = {"invalid": 400, "not_found": 404, "conflict": 409}
ENGINE_SETTLE = 0.5  # seconds an advance waits for the event engine to apply due transitions
T = TypeVar("T")


def _iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


CLAIMS: tuple[str, ...] = ("aud", "iss", "iat", "nbf", "exp", "appid", "appidacr", "idp")
CLAIMS += ("idtyp", "oid", "sub", "tid", "uti", "ver", "xms_mirid")


@dataclass(frozen=True, slots=True)
class Observed:
    """What the control plane reports about the guest plane: its log and counters."""

    recorder: Recorder
    services: Services
    faults: Faults
    clients: Clients


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def response(self) -> JSONResponse:
        error = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        headers = {"WWW-Authenticate": 'Bearer realm="azimds"'} if self.status == 401 else None
        return JSONResponse({"error": error}, status_code=self.status, headers=headers)


def summary(vm: VM) -> dict[str, Any]:
    compute = vm.document["compute"]
    return {
        "vmId": vm.vm_id,
        "name": vm.name,
        "addresses": list(vm.addresses),
        "location": compute["location"],
        "vmSize": compute["vmSize"],
    }


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


class AdminAPI:
    def __init__(
        self,
        node: Node,
        token: str,
        caller_mode: str,
        tokens: TokenSettings,
        url: str,
        terminate_notice: int = 600,
        observed: Observed | None = None,
        guest: list[str] | None = None,
    ) -> None:
        self.node = node
        self._token = token.encode()
        self.caller_mode = caller_mode
        self.tokens = tokens
        self.url = url  # where this control plane is reached (for jwks_uri)
        self.terminate_notice = terminate_notice
        self.observed = observed or Observed(Recorder(), Services(), Faults(), Clients())
        self.guest = guest or []  # the guest plane's URLs, for /v1/status
        self.started = time.monotonic()  # for the uptime /v1/status reports

    def app(self) -> Starlette:
        routes = [
            Route("/openapi.json", self.openapi),
            Route("/healthz", self.healthz),
            Route("/v1/status", self.status),
            Route("/v1/vms", self.list_vms, methods=["GET"]),
            Route("/v1/vms", self.create, methods=["POST"]),
            Route("/v1/vms/{vm}", self.show, methods=["GET"]),
            Route("/v1/vms/{vm}", self.replace, methods=["PUT"]),
            Route("/v1/vms/{vm}", self.patch, methods=["PATCH"]),
            Route("/v1/vms/{vm}", self.delete, methods=["DELETE"]),
            Route("/v1/vms/{vm}/identities", self.list_identities, methods=["GET"]),
            Route("/v1/vms/{vm}/identities", self.add_identity, methods=["POST"]),
            Route("/v1/vms/{vm}/identities/system", self.enable_system, methods=["PUT"]),
            Route("/v1/vms/{vm}/identities/system", self.disable_system, methods=["DELETE"]),
            Route("/v1/vms/{vm}/identities/{identity}", self.remove_identity, methods=["DELETE"]),
            Route("/v1/events", self.list_events, methods=["GET"]),
            Route("/v1/events", self.post_event, methods=["POST"]),
            Route("/v1/events/scenario", self.run_scenario, methods=["POST"]),
            Route("/v1/events/{event}", self.delete_event, methods=["DELETE"]),
            Route("/v1/events/{event}/approve", self.approve_event, methods=["POST"]),
            Route("/v1/clock", self.show_clock, methods=["GET"]),
            Route("/v1/clock/advance", self.post_clock_advance, methods=["POST"]),
            Route("/v1/faults", self.list_faults, methods=["GET"]),
            Route("/v1/faults", self.add_fault, methods=["POST"]),
            Route("/v1/faults", self.clear_faults, methods=["DELETE"]),
            Route("/v1/faults/{fault}", self.show_fault, methods=["GET"]),
            Route("/v1/faults/{fault}", self.remove_fault, methods=["DELETE"]),
            Route("/v1/requests", self.requests, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/v1/keys", self.list_keys, methods=["GET"]),
            Route("/v1/keys/rotate", self.rotate_keys, methods=["POST"]),
            *(Route(path, self.ca_certificate) for path in CA_PATHS),
            Route("/discovery/keys", self.jwks),
            Route("/{tenant}/discovery/keys", self.jwks),
            Route("/{tenant}/.well-known/openid-configuration", self.openid_configuration),
        ]
        app = Starlette(
            routes=routes,
            middleware=[Middleware(BaseHTTPMiddleware, dispatch=self._authenticate)],
        )
        app.add_exception_handler(ApiError, self._api_error)  # type: ignore[arg-type]
        app.add_exception_handler(404, self._not_found)
        app.add_exception_handler(405, self._method_not_allowed)
        return app

    # --- plumbing -----------------------------------------------------------------------

    async def _authenticate(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if path not in PUBLIC_PATHS and not PUBLIC_PATTERN.match(path):
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            # Constant-time comparison: the token's bytes must not leak through timing.
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self._token
            ):
                return ApiError(
                    401, "unauthorized", "send Authorization: Bearer <token>"
                ).response()
        return await call_next(request)

    async def _api_error(self, request: Request, exc: ApiError) -> Response:
        return exc.response()

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return ApiError(404, "not_found", f"no route {request.url.path}").response()

    async def _method_not_allowed(self, request: Request, exc: Exception) -> Response:
        response = ApiError(
            405, "method_not_allowed", f"{request.method} is not allowed here"
        ).response()
        return response

    async def _write(self, work: Callable[[Transaction], T]) -> T:
        """Run a change in one transaction; answer once this node serves it."""
        try:
            return await self.node.write(work)
        except FleetError as exc:
            raise ApiError(STATUS[exc.kind], exc.kind, str(exc), exc.where) from exc
        except StoreError as exc:  # unreachable, or refused: nothing was written either way
            raise ApiError(503, "store_unavailable", f"nothing was changed: {exc}") from exc

    async def _resolve(self, request: Request) -> VM:
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

    # --- routes ------------------------------------------------------------------------

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(document())

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def status(self, request: Request) -> Response:
        fleet = self.node.served
        return JSONResponse(
            {
                "version": __version__,
                "revision": fleet.revision,
                "store": self.node.store.url,
                "storeReachable": not self.node.outage,
                "callerMode": self.caller_mode,
                "vms": len(fleet.vms),
                "defaultVm": fleet.default_vm_id,
                "guest": self.guest,
                "controlPlane": self.url,
                "uptime": round(time.monotonic() - self.started, 3),
                "pid": os.getpid(),
            }
        )

    async def list_vms(self, request: Request) -> Response:
        fleet = self.node.served
        vms = sorted(fleet.vms.values(), key=lambda vm: (vm.name, vm.vm_id))
        return JSONResponse({"revision": fleet.revision, "vms": [summary(vm) for vm in vms]})

    async def show(self, request: Request) -> Response:
        vm = await self._resolve(request)
        return JSONResponse(vm.description())

    async def create(self, request: Request) -> Response:
        body = await read_json(request)
        vm = await self._write(lambda txn: create_vm(txn, body))
        return JSONResponse(
            vm.description(), status_code=201, headers={"Location": f"/v1/vms/{vm.vm_id}"}
        )

    async def replace(self, request: Request) -> Response:
        vm_id = (await self._resolve(request)).vm_id
        body = await read_json(request)
        vm = await self._write(lambda txn: replace_vm(txn, vm_id, body))
        return JSONResponse(vm.description())

    async def patch(self, request: Request) -> Response:
        vm_id = (await self._resolve(request)).vm_id
        body = await read_json(request)
        vm = await self._write(lambda txn: patch_vm(txn, vm_id, body))
        return JSONResponse(vm.description())

    async def delete(self, request: Request) -> Response:
        vm_id = (await self._resolve(request)).vm_id
        await self._write(lambda txn: delete_vm(txn, vm_id))
        return Response(status_code=204)

    # --- identities --------------------------------------------------------------------

    async def list_identities(self, request: Request) -> Response:
        vm = await self._resolve(request)
        return JSONResponse(vm.identity)

    async def add_identity(self, request: Request) -> Response:
        vm_id = (await self._resolve(request)).vm_id
        body = await read_json(request)
        vm = await self._write(lambda txn: add_user_identity(txn, vm_id, body))
        return JSONResponse(vm.identity["userAssigned"][-1], status_code=201)

    async def enable_system(self, request: Request) -> Response:
        vm_id = (await self._resolve(request)).vm_id
        body = await read_json(request) if await request.body() else {}
        if not isinstance(body, dict):
            raise ApiError(400, "invalid", "give an object with clientId, objectId, tenantId")
        vm = await self._write(lambda txn: set_system_identity(txn, vm_id, True, body))
        return JSONResponse(vm.identity["systemAssigned"])

    async def disable_system(self, request: Request) -> Response:
        vm_id = (await self._resolve(request)).vm_id
        await self._write(lambda txn: set_system_identity(txn, vm_id, False, {}))
        return Response(status_code=204)

    async def remove_identity(self, request: Request) -> Response:
        vm_id = (await self._resolve(request)).vm_id
        key = request.path_params["identity"]
        await self._write(lambda txn: remove_user_identity(txn, vm_id, key))
        return Response(status_code=204)

    # --- scheduled events and their clock ---------------------------------------------

    def _event_now(self) -> float:
        return self.node.served.clock.now(time.time())

    def _event_json(self, event: Event) -> dict[str, Any]:
        return {
            "eventId": event.id,
            "type": event.type,
            "status": event.status,
            "vms": list(event.resources),
            "names": list(event.names),
            "appearsAt": _iso(event.appears_at),
            "notBefore": _iso(event.not_before),
            "startedAt": _iso(event.started_at) if event.started_at is not None else None,
            "durationInSeconds": event.duration,
            "description": event.description,
            "source": event.source,
        }

    def _event_spec(
        self, body: Any, now: float, where: str = ""
    ) -> tuple[dict[str, Any], dict[str, str]]:
        try:
            return parse_event(body, now, self.node.served.find, where)
        except FleetError as exc:
            raise ApiError(STATUS[exc.kind], exc.kind, str(exc), exc.where) from exc

    async def _schedule(
        self, specs: list[tuple[dict[str, Any], dict[str, str]]], now: float, scenario: bool = False
    ) -> list[Event]:
        def work(txn: Transaction) -> list[Event]:
            events = []
            for index, (spec, vms) in enumerate(specs):
                try:
                    events.append(schedule_event(txn, spec, vms, now, self.terminate_notice))
                except FleetError as exc:
                    if scenario:  # name the entry, as the checks before do
                        raise FleetError(
                            exc.kind, str(exc), f"events[{index}].{exc.where}"
                        ) from exc
                    raise
            return events

        return await self._write(work)

    async def list_events(self, request: Request) -> Response:
        events = sorted(self.node.served.events.values(), key=lambda e: (e.appears_at, e.id))
        wanted = request.query_params.get("all") == "true"
        shown = [e for e in events if wanted or e.status not in ("Completed", "Canceled")]
        return JSONResponse(
            {"now": _iso(self._event_now()), "events": [self._event_json(e) for e in shown]}
        )

    async def post_event(self, request: Request) -> Response:
        now = self._event_now()
        spec = self._event_spec(await read_json(request), now)
        (event,) = await self._schedule([spec], now)
        return JSONResponse(self._event_json(event), status_code=201)

    async def run_scenario(self, request: Request) -> Response:
        """A timed sequence of events: each entry's ``after`` counts from now."""
        body = await read_json(request)
        entries = body.get("events") if isinstance(body, dict) else None
        if not isinstance(entries, list) or not entries:
            raise ApiError(400, "invalid", 'a scenario is {"events": [...]}', "events")
        now = self._event_now()
        specs = [self._event_spec(entry, now, f"events[{i}].") for i, entry in enumerate(entries)]
        events = await self._schedule(specs, now, scenario=True)
        return JSONResponse({"events": [self._event_json(e) for e in events]}, status_code=201)

    async def delete_event(self, request: Request) -> Response:
        event_id = request.path_params["event"]
        await self._write(lambda txn: cancel_event(txn, event_id))
        return Response(status_code=204)

    async def approve_event(self, request: Request) -> Response:
        event_id = request.path_params["event"]
        now = self._event_now()
        (event,) = await self._write(lambda txn: approve_events(txn, [event_id], None, now))
        return JSONResponse(self._event_json(event))

    async def show_clock(self, request: Request) -> Response:
        clock = self.node.served.clock
        mode = "manual" if clock.scale == 0 else "real"
        return JSONResponse({"now": _iso(self._event_now()), "mode": mode, "scale": clock.scale})

    async def post_clock_advance(self, request: Request) -> Response:
        body = await read_json(request)
        seconds = body.get("seconds") if isinstance(body, dict) else None
        if not seconds_ahead(seconds) or self._event_now() + seconds > time.time() + MAX_AHEAD:
            raise ApiError(
                400,
                "invalid",
                'give {"seconds": N} with N 0 or more, the clock at most 100 years ahead',
                "seconds",
            )
        clock = await self._write(lambda txn: advance_clock(txn, float(seconds), time.time()))
        # Let the event engine apply what fell due; the answer shows the state after it.
        await asyncio.sleep(ENGINE_SETTLE)
        return JSONResponse({"now": _iso(clock.now(time.time()))})

    # --- fault rules ---------------------------------------------------------------------

    async def list_faults(self, request: Request) -> Response:
        """Every rule, oldest first, with how often it fired on this node."""
        faults = self.observed.faults
        return JSONResponse({"faults": [faults.state(rule) for rule in self.node.served.faults]})

    async def add_fault(self, request: Request) -> Response:
        spec = await read_json(request)
        fleet = self.node.served

        def find_vm(key: str) -> str | None:
            vm = fleet.find(key)
            return vm.vm_id if vm is not None else None

        try:
            rule = parse_rule(spec, time.time(), find_vm)
        except FaultError as exc:
            status = 404 if exc.where == "vm" else 400
            code = "not_found" if status == 404 else "invalid"
            raise ApiError(status, code, str(exc), exc.where) from exc
        added = await self._write(lambda txn: add_fault(txn, rule))
        return JSONResponse(self.observed.faults.state(added), status_code=201)

    async def show_fault(self, request: Request) -> Response:
        rule_id = request.path_params["fault"]
        for rule in self.node.served.faults:
            if rule.id == rule_id:
                return JSONResponse(self.observed.faults.state(rule))
        raise ApiError(404, "not_found", f"no fault rule {rule_id}")

    async def remove_fault(self, request: Request) -> Response:
        rule_id = request.path_params["fault"]
        if not await self._write(lambda txn: remove_fault(txn, rule_id)):
            raise ApiError(404, "not_found", f"no fault rule {rule_id}")
        return Response(status_code=204)

    async def clear_faults(self, request: Request) -> Response:
        removed = await self._write(clear_faults)
        return JSONResponse({"removed": removed})

    # --- observability ------------------------------------------------------------------

    async def requests(self, request: Request) -> Response:
        """The request log: entries after ``since`` (a sequence number), oldest first."""
        try:
            since = int(request.query_params.get("since", "0"))
            limit = min(int(request.query_params.get("limit", "1000")), 10_000)
        except ValueError as exc:
            raise ApiError(400, "invalid", "since and limit are whole numbers") from exc
        entries = self.observed.recorder.since(since, limit)
        return JSONResponse({"requests": [entry.json() for entry in entries]})

    async def metrics(self, request: Request) -> Response:
        """Prometheus text format: requests, latency, tokens, documents, events, store lag."""
        fleet = self.node.served
        services = self.observed.services
        try:
            lag = float(await asyncio.to_thread(self.node.store.revision) - fleet.revision)
        except StoreError:
            lag = float("nan")
        states: dict[str, int] = {}
        for event in fleet.events.values():
            states[event.status] = states.get(event.status, 0) + 1
        gauges: dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]] = {
            "azimds_tokens_issued_total": (
                "Managed-identity tokens minted (cache misses).",
                {(): float(services.tokens.issued if services.tokens else 0)},
            ),
            "azimds_attested_documents_signed_total": (
                "Attested documents signed.",
                {(): float(services.attested.signed if services.attested else 0)},
            ),
            "azimds_events": (
                "Scheduled events by state.",
                {(("state", state),): float(count) for state, count in sorted(states.items())},
            ),
            "azimds_faults_total": (
                "Fault-rule firings on this node by action (410, 429, 500, 503, reset, hang, "
                "pass).",
                {
                    (("action", action),): float(count)
                    for action, count in sorted(self.observed.faults.outcomes.items())
                },
            ),
            "azimds_guest_connections": (
                "Guest-plane connections open.",
                {(): float(self.observed.clients.open)},
            ),
            "azimds_guest_connections_closed_total": (
                "Guest-plane connections the node ended itself, by reason: per_client (closed "
                "as they came: the address had --connections-per-client open), write_timeout "
                "(its answers went unread for --request-timeout).",
                {
                    (("reason", "per_client"),): float(self.observed.clients.refused),
                    (("reason", "write_timeout"),): float(self.observed.clients.write_timeouts),
                },
            ),
            "azimds_vms": ("VMs this node serves.", {(): float(len(fleet.vms))}),
            "azimds_store_revision_lag": (
                "Store revisions not yet served by this node (NaN: store unreachable).",
                {(): lag},
            ),
        }
        return Response(
            prometheus(self.observed.recorder, gauges), media_type="text/plain; version=0.0.4"
        )

    # --- token verification (public) and signing keys ---------------------------------

    async def jwks(self, request: Request) -> Response:
        now = time.time()
        keys = [key.jwk() for key in self.node.served.jwt_keys.values() if key.published(now)]
        return JSONResponse({"keys": keys})

    async def openid_configuration(self, request: Request) -> Response:
        """Azure AD's v1 discovery document, pointing at this node's JWKS."""
        tenant = request.path_params["tenant"]
        issuer = f"{self.tokens.issuer_base}/{tenant}/"
        base = f"{self.tokens.issuer_base}/{tenant}"
        return JSONResponse(
            {
                "token_endpoint": f"{base}/oauth2/token",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                "jwks_uri": f"{self.url}/{tenant}/discovery/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "token id_token", "token"],
                "scopes_supported": ["openid"],
                "issuer": issuer,
                "claims_supported": list(CLAIMS),
                "authorization_endpoint": f"{base}/oauth2/authorize",
            }
        )

    async def ca_certificate(self, request: Request) -> Response:
        """The attestation root or intermediate, DER (``.cer``, as AIA fetchers expect) or PEM."""
        which, form = CA_PATHS[request.url.path]
        signer = self.node.served.ca.get(which)
        if signer is None:
            raise ApiError(404, "not_found", "the attestation CA is not created yet")
        if form == "der":
            return Response(signer.der(), media_type="application/pkix-cert")
        return Response(signer.pem(), media_type="application/x-pem-file")

    async def list_keys(self, request: Request) -> Response:
        fleet = self.node.served
        keys = [
            {
                "kid": key.kid,
                "active": key.kid == fleet.active_kid,
                "created": key.created,
                "retires": key.retires,
            }
            for key in sorted(fleet.jwt_keys.values(), key=lambda k: k.created)
        ]
        return JSONResponse({"keys": keys})

    async def rotate_keys(self, request: Request) -> Response:
        """A new signing key; the old one stays in the JWKS until its tokens have expired."""
        overlap = self.tokens.lifetime + TOKEN_REFRESH_MARGIN
        now = dt.datetime.now(dt.UTC)
        kid = await self._write(lambda txn: rotate_jwt_key(txn, now, overlap))
        return JSONResponse({"kid": kid, "overlap": overlap})
