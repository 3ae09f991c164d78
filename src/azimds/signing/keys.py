"""RSA signing keys for managed-identity tokens, and their public form (JWKS).

Each key comes with a self-signed certificate, as Azure AD's do: the key id (``kid``) and
``x5t`` are both the base64url SHA-1 thumbprint of the certificate, and the JWKS entry carries
the certificate (``x5c``), so verifiers that want a certificate get one.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from azimds.signing.material import (
    certificate_pem,
    key_pem,
    load_certificate,
    load_rsa_key,
    new_rsa_key,
)

CERTIFICATE_YEARS = 5


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64url(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True, slots=True)
class JwtKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    created: int  # unix seconds
    retires: int | None  # unix seconds after which it leaves the JWKS; None while active

    def jwk(self) -> dict[str, Any]:
        numbers = self.private_key.public_key().public_numbers()
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": _int_b64url(numbers.n),
            "e": _int_b64url(numbers.e),
            "x5c": [base64.b64encode(der).decode("ascii")],
            "alg": "RS256",
        }

    def published(self, now: float) -> bool:
        return self.retires is None or self.retires > now


def new_jwt_key_body(now: dt.datetime) -> tuple[str, dict[str, Any]]:
    """A fresh key as a store record: (kid, body). The body holds the private key (PEM)."""
    key = new_rsa_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "azimds managed identity signing")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365 * CERTIFICATE_YEARS))
        .sign(key, hashes.SHA256())
    )
    kid = b64url(certificate.fingerprint(hashes.SHA1()))
    body = {
        "privateKey": key_pem(key),
        "certificate": certificate_pem(certificate),
        "created": int(now.timestamp()),
        "retires": None,
    }
    return kid, body


def load_jwt_key(kid: str, body: dict[str, Any]) -> JwtKey:
    return JwtKey(
        kid,
        load_rsa_key(body["privateKey"]),
        load_certificate(body["certificate"]),
        int(body["created"]),
        body.get("retires"),
    )
