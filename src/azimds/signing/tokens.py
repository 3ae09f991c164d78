"""Managed-identity access tokens: RS256 JWTs with the claims Azure AD puts in them.

Signing knows nothing of the fleet model: ``mint`` takes any ``Subject`` (a fleet
``Identity`` is one), so the model may import signing and not the other way round.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Protocol

import jwt

from azimds.signing.keys import JwtKey, b64url


class Subject(Protocol):
    """What a token is about: the identity's ids, which become its claims."""

    @property
    def client_id(self) -> str: ...  # appid

    @property
    def object_id(self) -> str: ...  # oid and sub

    @property
    def tenant_id(self) -> str: ...  # tid, and the issuer's path

    @property
    def resource_id(self) -> str: ...  # xms_mirid


@dataclass(frozen=True, slots=True)
class Token:
    access_token: str
    client_id: str
    resource: str
    issued: int  # the request's time (unix seconds)
    not_before: int
    expires_on: int
    ext_expires_in: int


def issuer(base: str, tenant_id: str) -> str:
    """``https://sts.windows.net/<tenant>/`` on Azure; ``<base>/<tenant>/`` for azimds's own."""
    return f"{base.rstrip('/')}/{tenant_id}/"


def mint(
    key: JwtKey,
    identity: Subject,
    resource: str,
    issuer_base: str,
    now: int,
    lifetime: int,
    skew: int,
) -> Token:
    """Sign a token for ``identity`` to use at ``resource`` (the audience).

    As Azure AD does: ``iat`` and ``nbf`` lie ``skew`` seconds in the past, ``exp`` is
    ``lifetime`` seconds from now, and the claims are those of a managed identity's v1 token.
    """
    iss = issuer(issuer_base, identity.tenant_id)
    claims = {
        "aud": resource,
        "iss": iss,
        "iat": now - skew,
        "nbf": now - skew,
        "exp": now + lifetime,
        "aio": b64url(secrets.token_bytes(24)),
        "appid": identity.client_id,
        "appidacr": "2",
        "idp": iss,
        "idtyp": "app",
        "oid": identity.object_id,
        "rh": "0." + b64url(secrets.token_bytes(16)),
        "sub": identity.object_id,
        "tid": identity.tenant_id,
        "uti": b64url(secrets.token_bytes(16)),
        "ver": "1.0",
        "xms_mirid": identity.resource_id,
    }
    headers = {"typ": "JWT", "x5t": key.kid, "kid": key.kid}
    access_token = jwt.encode(claims, key.private_key, algorithm="RS256", headers=headers)
    return Token(
        access_token=access_token,
        client_id=identity.client_id,
        resource=resource,
        issued=now,
        not_before=now - skew,
        expires_on=now + lifetime,
        ext_expires_in=lifetime - 1,
    )
