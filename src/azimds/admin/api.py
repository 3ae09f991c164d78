"""The admin REST API: VMs (create, read, list, replace, merge-patch, delete) and status.

Every route but ``/openapi.json`` and ``/healthz`` needs the node's bearer token. Writes go to
the store in one transaction through ``fleet.operations``; the answer waits until this node
serves the change, so a guest request sent after it sees the new data.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from azimds import __version__
from azimds.admin.openapi import document
from azimds.fleet.operations import FleetError, create_vm, delete_vm, patch_vm, replace_vm
from azimds.fleet.vm import VM
from azimds.node import Node
from azimds.store.base import StoreError, StoreUnavailable, Transaction

MAX_BODY = 1024 * 1024  # bytes; larger bodies get 413
PUBLIC_PATHS = frozenset({"/openapi.json", "/healthz"})
JSON_TYPES = ("application/json", "application/merge-patch+json")
STATUS = {"invalid": 400, "not_found": 404, "conflict": 409}


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
    def __init__(self, node: Node, token: str, caller_mode: str) -> None:
        self.node = node
        self._token = token.encode()
        self.caller_mode = caller_mode

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
        if request.url.path not in PUBLIC_PATHS:
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

    async def _write(self, work: Callable[[Transaction], VM]) -> VM:
        try:
            vm, revision = await asyncio.to_thread(self.node.store.transact, work)
        except FleetError as exc:
            raise ApiError(STATUS[exc.kind], exc.kind, str(exc), exc.where) from exc
        except StoreUnavailable as exc:
            raise ApiError(503, "store_unavailable", f"nothing was changed: {exc}") from exc
        except StoreError as exc:
            raise ApiError(503, "store_unavailable", f"nothing was changed: {exc}") from exc
        await self.node.caught_up(revision)
        return vm

    async def _resolve(self, request: Request) -> VM:
        key = request.path_params["vm"]
        vm = self.node.served.find(key)
        if vm is None:
            await asyncio.to_thread(self.node.refresh)  # perhaps written by another node
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
