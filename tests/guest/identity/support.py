"""Shared by the identity tests: a node with identities, token requests, JWT verification.

A token is verified the way a relying service verifies it: its ``iss`` leads to the OpenID
discovery document, that to the JWKS, and PyJWT checks the RS256 signature against it.
"""

from __future__ import annotations

import http.client
import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest

from tests.admin.support import admin
from tests.conftest import Server
from tests.http import Reply, get

VM = "examplevmname"
TOKEN_PATH = "/metadata/identity/oauth2/token"
MANAGEMENT = "https://management.azure.com/"
VAULT = "https://vault.azure.net"
DEFAULT_LIFETIME = 86400
NOT_BEFORE_SKEW = 300  # real tokens: expires_on - not_before = 86700
TOKEN_KEYS = [
    "access_token",
    "client_id",
    "expires_in",
    "expires_on",
    "ext_expires_in",
    "not_before",
    "resource",
    "token_type",
]
JSON_TYPE = "application/json; charset=utf-8"

HEADER_MISSING = (
    b'{"error":"invalid_request","error_description":"Required metadata header not specified"}'
)
RESOURCE_MISSING = (
    b'{"error":"invalid_request","error_description":'
    b"\"Required query variable 'resource' is missing\"}"
)
IDENTITY_NOT_FOUND = b'{"error":"invalid_request","error_description":"Identity not found"}'
MULTIPLE_IDENTITIES = (
    b'{"error":"invalid_request","error_description":"Multiple user assigned identities exist, '
    b'please specify the clientId / resourceId of the identity in the token request"}'
)
BAD_API_VERSION = (
    b'{"error":"Bad request. api-version is invalid or was not specified in the request. '
    b'For more information refer to aka.ms/azureimds",'
    b'"newest-versions":["2025-04-07","2024-07-17","2024-03-15"]}'
)


@dataclass(frozen=True)
class Expected:
    """What a token for one identity must say about it."""

    client_id: str
    object_id: str
    tenant_id: str
    mirid: str  # xms_mirid: the VM's resource id (system) or the identity's (user-assigned)


def new_guid() -> str:
    return str(uuid.uuid4())


def system_identity(node: Server) -> Expected:
    system = admin(node).identities(VM)["systemAssigned"]
    assert system["enabled"] is True
    # The VM's resource id as the VM itself sees it in IMDS.
    reply = get(
        node.port, "/metadata/instance/compute/resourceId?api-version=2021-02-01&format=text"
    )
    assert reply.status == 200, reply.body
    return Expected(system["clientId"], system["objectId"], system["tenantId"], reply.text)


def add_user_identity(node: Server, name: str, client_id: str | None = None) -> Expected:
    body: dict[str, str] = {"name": name}
    if client_id is not None:
        body["clientId"] = client_id
    added = admin(node).add_identity(VM, body)
    assert added["name"] == name
    assert added["resourceId"].endswith(f"/userAssignedIdentities/{name}")
    return Expected(added["clientId"], added["objectId"], added["tenantId"], added["resourceId"])


def disable_system_identity(node: Server) -> None:
    admin(node).disable_system_identity(VM)


def token_reply(port: int, query: str, path: str = TOKEN_PATH, **headers: str) -> Reply:
    return get(port, f"{path}?{query}", headers=headers or None)


def token_json(port: int, query: str, path: str = TOKEN_PATH) -> dict[str, str]:
    reply = token_reply(port, query, path)
    assert reply.status == 200, reply.body
    answer = json.loads(reply.body)
    assert isinstance(answer, dict)
    return answer


def fetch(url: str) -> tuple[int, bytes]:
    """GET without any proxy; (status, body)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", target)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def fetch_json(url: str) -> Any:
    status, body = fetch(url)
    assert status == 200, (url, body)
    return json.loads(body)


def jwks_url_from_discovery(issuer: str) -> str:
    """The JWKS a relying service finds from a token's ``iss``."""
    assert issuer.endswith("/"), issuer
    document = fetch_json(issuer + ".well-known/openid-configuration")
    assert document["issuer"] == issuer
    assert "RS256" in document["id_token_signing_alg_values_supported"]
    return str(document["jwks_uri"])


def jwks_kids(jwks_url: str) -> list[str]:
    return [key["kid"] for key in fetch_json(jwks_url)["keys"]]


def verify(
    access_token: str, audience: str, jwks_url: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the signature against the published keys; (header, claims)."""
    unverified = jwt.decode(access_token, options={"verify_signature": False})
    issuer = unverified["iss"]
    if jwks_url is None:
        jwks_url = jwks_url_from_discovery(issuer)
    keys = jwt.PyJWKClient(jwks_url, cache_keys=False, cache_jwk_set=False)
    signing_key = keys.get_signing_key_from_jwt(access_token)
    claims = jwt.decode(
        access_token,
        signing_key.key,
        algorithms=["RS256"],
        audience=audience,
        issuer=issuer,
        options={"require": ["aud", "iss", "exp", "nbf", "iat", "sub"]},
    )
    header = jwt.get_unverified_header(access_token)
    return header, claims


def check_token(
    access_token: str,
    resource: str,
    identity: Expected,
    issuer: str | None = None,
    lifetime: int = DEFAULT_LIFETIME,
    jwks_url: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify ``access_token`` and every claim a relying service or client reads."""
    header, claims = verify(access_token, resource, jwks_url)
    assert header["alg"] == "RS256"
    assert header["kid"]
    assert header["x5t"] == header["kid"]
    assert claims["aud"] == resource
    assert claims["tid"] == identity.tenant_id
    if issuer is not None:
        assert claims["iss"] == issuer
    assert claims["iss"].endswith(f"/{identity.tenant_id}/")
    assert claims["oid"] == identity.object_id
    assert claims["sub"] == claims["oid"]
    assert claims["appid"] == identity.client_id
    assert claims["idtyp"] == "app"
    assert claims["ver"] == "1.0"
    assert claims["xms_mirid"] == identity.mirid
    assert claims["exp"] - claims["nbf"] == lifetime + NOT_BEFORE_SKEW
    return header, claims


def local_issuer(node: Server, tenant_id: str) -> str:
    """The issuer of a node started with the default ``--issuer local``."""
    return f"{node.admin_url}/{tenant_id}/"


def point_sdks_at(monkeypatch: pytest.MonkeyPatch, node: Server) -> None:
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"http://127.0.0.1:{node.port}")
