"""The admin REST API, assembled: the route table, bearer-token authentication, error answers.

The routes live with their resource (``vms``, ``identities``, ``provisioning``, ``media``,
``events``, ``faults``, ``keys``, ``metrics``, ``public``); ``ROUTES`` is their one table,
which the Starlette app serves and ``openapi`` describes. Every route needs the node's bearer
token but those declared public (``/metrics`` and the routes of ``public``; the OpenAPI
document's ``info`` lists them). Writes go to the store in one transaction through the node's
one write path; the answer waits until this node serves the change, so a guest request sent
after it sees the new data.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from functools import partial

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, compile_path

from azimds.admin import events, faults, identities, keys, media, metrics, provisioning, public, vms
from azimds.admin.core import ApiError, Control, Endpoint, NodeView, Observed
from azimds.guest.endpoint import Services
from azimds.guest.faults import Faults
from azimds.guest.identity import TokenSettings
from azimds.guest.observe import Recorder
from azimds.serving.protocol import Clients

# Matched in this order: within a module, a fixed path before the parameter it would match.
ROUTES: tuple[Endpoint, ...] = (
    *vms.ROUTES,
    *identities.ROUTES,
    *provisioning.ROUTES,
    *events.ROUTES,
    *faults.ROUTES,
    *metrics.ROUTES,
    *keys.ROUTES,
    *public.ROUTES,
    *media.ROUTES,
)


class AdminAPI:
    def __init__(
        self,
        node: NodeView,
        token: str,
        caller_mode: str,
        tokens: TokenSettings,
        url: str,
        terminate_notice: int = 600,
        observed: Observed | None = None,
        guest: list[str] | None = None,
        wire: Mapping[str, str | None] | None = None,
    ) -> None:
        self._token = token.encode()
        self.control = Control(
            node,
            caller_mode,
            tokens,
            url,
            terminate_notice,
            observed or Observed(Recorder(), Services(), Faults(), Clients()),
            guest or [],
            ROUTES,
            wire=wire or {},
        )
        # A path is public when a public route has it, whatever the method (a wrong method on
        # it is a 405, not a 401).
        self._public = [compile_path(e.path)[0] for e in ROUTES if e.public]

    def app(self) -> Starlette:
        routes = [
            Route(
                e.path,
                partial(e.handler, self.control),
                methods=[e.method],
                name=e.handler.__name__,
                include_in_schema=e.documented,
            )
            for e in ROUTES
        ]
        app = Starlette(
            routes=routes,
            middleware=[Middleware(BaseHTTPMiddleware, dispatch=self._authenticate)],
        )
        app.add_exception_handler(ApiError, self._api_error)  # type: ignore[arg-type]
        app.add_exception_handler(404, self._not_found)
        app.add_exception_handler(405, self._method_not_allowed)
        return app

    async def _authenticate(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if not any(pattern.match(path) for pattern in self._public):
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
        return ApiError(
            405, "method_not_allowed", f"{request.method} is not allowed here"
        ).response()
