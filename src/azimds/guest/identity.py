"""``/metadata/identity``: managed-identity tokens and the tenant (reference section 5).

Tokens are cached like the real service caches them: the same token for the same identity and
resource until shortly before it expires, with ``expires_in`` counting down;
``bypass_cache=true`` forces a new one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from azimds.fleet.identity import Identity, Unselected, select
from azimds.guest import errors
from azimds.guest.endpoint import ValidRequest
from azimds.guest.responses import JSON_TYPE, NEVER, Response, json_response, make
from azimds.signing.keys import JwtKey
from azimds.signing.tokens import Token, mint

# How long before expiry a cached token is replaced.
TOKEN_REFRESH_MARGIN = 300  # seconds
# Real tokens' not_before lies this far before issue (expires_on - not_before = 86700).
TOKEN_NOT_BEFORE_SKEW = 300

CACHE_LIMIT = 100_000  # cached tokens per node


@dataclass(frozen=True, slots=True)
class TokenSettings:
    issuer_base: str  # tokens' iss is <issuer_base>/<tenant>/
    lifetime: int  # seconds
    resources: frozenset[str] = frozenset()  # allowed resources (normalized); empty: any


def _normalized_resource(resource: str) -> str:
    return resource.strip().rstrip("/").lower()


class TokenService:
    """Mints and caches tokens for a node; the signing key comes from the current snapshot."""

    def __init__(self, settings: TokenSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self._cache: dict[tuple[str, str], Token] = {}
        self.issued = 0  # tokens minted (for metrics)

    def token(self, identity: Identity, resource: str, bypass_cache: bool, key: JwtKey) -> Token:
        now = int(self.clock())
        cache_key = (identity.client_id, resource)
        cached = self._cache.get(cache_key)
        if (
            cached is not None
            and not bypass_cache
            and cached.expires_on - now > TOKEN_REFRESH_MARGIN
        ):
            return cached
        token = mint(
            key,
            identity,
            resource,
            self.settings.issuer_base,
            now,
            self.settings.lifetime,
            TOKEN_NOT_BEFORE_SKEW,
        )
        if len(self._cache) >= CACHE_LIMIT:
            del self._cache[next(iter(self._cache))]
        self._cache[cache_key] = token
        self.issued += 1
        return token

    def respond(self, token: Token, reusable: bool = True) -> Response:
        """The 200 body: eight string fields, compact, in the real service's order.
        ``reusable``: the same bytes answer the same request until the second ends (when
        ``expires_in`` changes); not for a token minted on request (``bypass_cache``)."""
        now = int(self.clock())
        return json_response(
            {
                "access_token": token.access_token,
                "client_id": token.client_id,
                "expires_in": str(max(token.expires_on - now, 0)),
                "expires_on": str(token.expires_on),
                "ext_expires_in": str(token.ext_expires_in),
                "not_before": str(token.not_before),
                "resource": token.resource,
                "token_type": "Bearer",
            },
            until=now + 1 if reusable else NEVER,
        )

    def allows(self, resource: str) -> bool:
        return (
            not self.settings.resources or _normalized_resource(resource) in self.settings.resources
        )


def get_token(request: ValidRequest) -> Response:
    """``/metadata/identity/oauth2/token``: a managed-identity access token."""
    key = request.fleet.jwt_key
    service = request.services.tokens
    if service is None or key is None:
        return errors.Family.IDENTITY.unavailable(errors.NO_SIGNING_KEY)
    params = request.params
    resource = params.get("resource", "")
    if not resource.strip():
        return errors.identity_refused(errors.RESOURCE_MISSING)
    chosen = select(request.vm.system_identity, request.vm.user_identities, params)
    if isinstance(chosen, Unselected):
        return errors.identity_refused(errors.UNSELECTED[chosen])
    if not service.allows(resource):
        return errors.invalid_resource(resource, chosen.tenant_id, service.clock())
    bypass = params.get("bypass_cache", "").lower() == "true"
    return service.respond(service.token(chosen, resource, bypass, key), reusable=not bypass)


def get_info(request: ValidRequest) -> Response:
    """``/metadata/identity/info``: the system-assigned identity's tenant."""
    system = request.vm.system_identity
    if system is None:
        return errors.identity_refused(errors.IDENTITY_NOT_FOUND)
    return make(
        200, JSON_TYPE, json.dumps({"tenantId": system.tenant_id}, separators=(",", ":")).encode()
    )
