"""The routes that need no token (each declared ``public=True``): this API's OpenAPI document,
liveness, and what relying services fetch to verify tokens and attested documents, for any
tenant: the OpenID configuration, the JWKS and the attestation CA's certificates.
(``/metrics``, public too, is with the node's other reports in ``metrics``.)"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from azimds.admin.core import ERROR, ApiError, Control, Endpoint, Parameter, Returns, Routes, Schema
from azimds.admin.openapi import document

# The attestation CA's certificates; the leaf's AIA names the intermediate's URL.
INTERMEDIATE_PATH = "/attestation/intermediate.cer"
CA_PATHS = {
    INTERMEDIATE_PATH: ("intermediate", "der"),
    "/attestation/intermediate.pem": ("intermediate", "pem"),
    "/attestation/root.cer": ("root", "der"),
    "/attestation/root.pem": ("root", "pem"),
}
CERTIFICATE_MEDIA = {"der": "application/pkix-cert", "pem": "application/x-pem-file"}
CLAIMS: tuple[str, ...] = ("aud", "iss", "iat", "nbf", "exp", "appid", "appidacr", "idp")
CLAIMS += ("idtyp", "oid", "sub", "tid", "uti", "ver", "xms_mirid")
HEALTH = {"type": "object", "properties": {"status": {"type": "string"}}}
JWKS = Schema("JWKS", {"type": "object", "properties": {"keys": {"type": "array"}}})
DISCOVERY = Schema("Discovery", {"type": "object", "properties": {"issuer": {"type": "string"}}})
TENANT_PARAMETER = Parameter("tenant", "A tenant id (any: the keys are the same)")
ROUTES = Routes(TENANT_PARAMETER)


@ROUTES.add("GET", "/openapi.json", public=True, documented=False)
async def openapi(control: Control, request: Request) -> Response:
    """This API's OpenAPI document, generated from its route table."""
    return JSONResponse(document(control.routes))


@ROUTES.add("GET", "/healthz", Returns(200, "The node runs", HEALTH), public=True)
async def healthz(control: Control, request: Request) -> Response:
    """Liveness."""
    return JSONResponse({"status": "ok"})


async def ca_certificate(control: Control, request: Request) -> Response:
    """The attestation root or intermediate, DER (``.cer``, as AIA fetchers expect) or PEM."""
    which, form = CA_PATHS[request.url.path]
    signer = control.node.served.ca.get(which)
    if signer is None:
        raise ApiError(404, "not_found", "the attestation CA is not created yet")
    return Response(
        signer.der() if form == "der" else signer.pem(), media_type=CERTIFICATE_MEDIA[form]
    )


ROUTES.extend(
    Endpoint(
        "GET",
        path,
        ca_certificate,
        f"The attestation {which} certificate ({form.upper()})",
        (
            Returns(
                200, "Certificate", {"type": "string", "format": "binary"}, CERTIFICATE_MEDIA[form]
            ),
            Returns(404, "The CA is not created yet", ERROR),
        ),
        public=True,
    )
    for path, (which, form) in CA_PATHS.items()
)


@ROUTES.add("GET", "/discovery/keys", Returns(200, "JWKS", JWKS), public=True)
@ROUTES.add(
    "GET",
    "/{tenant}/discovery/keys",
    Returns(200, "JWKS", JWKS),
    public=True,
    summary="JWKS, as Azure AD serves it per tenant",
)
async def jwks(control: Control, request: Request) -> Response:
    """JWKS: the keys that verify managed-identity tokens."""
    now = time.time()
    keys = [key.jwk() for key in control.node.served.jwt_keys.values() if key.published(now)]
    return JSONResponse({"keys": keys})


@ROUTES.add(
    "GET",
    "/{tenant}/.well-known/openid-configuration",
    Returns(200, "Discovery document", DISCOVERY),
    public=True,
)
async def openid_configuration(control: Control, request: Request) -> Response:
    """OpenID Connect discovery (Azure AD v1 form).

    Azure AD's v1 discovery document, pointing at this node's JWKS.
    """
    tenant = request.path_params["tenant"]
    issuer = f"{control.tokens.issuer_base}/{tenant}/"
    base = f"{control.tokens.issuer_base}/{tenant}"
    return JSONResponse(
        {
            "token_endpoint": f"{base}/oauth2/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "jwks_uri": f"{control.url}/{tenant}/discovery/keys",
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
