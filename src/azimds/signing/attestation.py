"""The attestation CA (root -> intermediate -> leaf) and PKCS#7 signing of attested documents.

The real service signs with a leaf whose SANs are ``<location>.metadata.<cloud domain>`` and
``metadata.<cloud domain>`` and whose AIA "CA Issuers" URI points at the intermediate; its
SignedData embeds the content, carries only the leaf, has no signed attributes and signs with
RSA and SHA-256 (reference section 4).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from azimds.signing.material import (
    certificate_pem,
    key_pem,
    load_certificate,
    load_rsa_key,
    new_rsa_key,
)

ROOT_YEARS = 25
INTERMEDIATE_YEARS = 5
LEAF_DAYS = 365

# Cloud domain by compute.azEnvironment (compared case-insensitively).
CLOUD_DOMAINS = {
    "azurepubliccloud": "azure.com",
    "azureusgovernmentcloud": "azure.us",
    "azurechinacloud": "azure.cn",
    "azuregermancloud": "microsoftazure.de",
}

# AlgorithmIdentifier DER (with NULL parameters) of sha256, and of sha256WithRSAEncryption,
# which Azure writes where a digest algorithm belongs. Both are 15 bytes long.
SHA256_ALGORITHM = bytes.fromhex("300d06096086480165030402010500")
AZURE_DIGEST_ALGORITHM = bytes.fromhex("300d06092a864886f70d01010b0500")


def cloud_domain(az_environment: str) -> str:
    return CLOUD_DOMAINS.get(az_environment.lower(), "azure.com")


@dataclass(frozen=True, slots=True)
class Signer:
    """A key and its certificate, loaded from the store."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    meta: dict[str, Any]  # what the record says besides the PEMs (e.g. the leaf's AIA URL)

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def expires_within(self, now: dt.datetime, days: int) -> bool:
        return self.certificate.not_valid_after_utc - now < dt.timedelta(days=days)


def _body(key: rsa.RSAPrivateKey, certificate: x509.Certificate, **meta: Any) -> dict[str, Any]:
    return {"privateKey": key_pem(key), "certificate": certificate_pem(certificate), **meta}


def load_signer(body: dict[str, Any]) -> Signer:
    meta = {k: v for k, v in body.items() if k not in ("privateKey", "certificate")}
    return Signer(load_rsa_key(body["privateKey"]), load_certificate(body["certificate"]), meta)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "azimds"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_certificate(
    subject: str, key: rsa.RSAPrivateKey, issuer: Signer | None, now: dt.datetime, years: int
) -> x509.Certificate:
    name = _name(subject)
    signing_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.certificate.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365 * years))
        .add_extension(
            x509.BasicConstraints(ca=True, path_length=None if issuer is None else 0), critical=True
        )
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    return builder.sign(signing_key, hashes.SHA256())


def new_root_body(now: dt.datetime) -> dict[str, Any]:
    key = new_rsa_key()
    return _body(key, _ca_certificate("azimds Attestation Root CA", key, None, now, ROOT_YEARS))


def new_intermediate_body(root: Signer, now: dt.datetime) -> dict[str, Any]:
    key = new_rsa_key()
    certificate = _ca_certificate("azimds Attestation CA 01", key, root, now, INTERMEDIATE_YEARS)
    return _body(key, certificate)


def new_leaf_body(
    intermediate: Signer, location: str, domain: str, aia_url: str, now: dt.datetime
) -> dict[str, Any]:
    """A signing leaf for one location of one cloud, its AIA pointing at ``aia_url``."""
    key = new_rsa_key()
    base = f"metadata.{domain}"
    names = [f"{location}.{base}", base] if location else [base]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(intermediate.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(
            min(now + dt.timedelta(days=LEAF_DAYS), intermediate.certificate.not_valid_after_utc)
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(aia_url),
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(intermediate.key.public_key()),
            critical=False,
        )
        .sign(intermediate.key, hashes.SHA256())
    )
    issuer_fingerprint = intermediate.certificate.fingerprint(hashes.SHA256()).hex()
    return _body(key, certificate, aiaUrl=aia_url, issuerFingerprint=issuer_fingerprint)


def sign(leaf: Signer, content: bytes, azure_digest_identifier: bool) -> bytes:
    """PKCS#7 SignedData (DER) over ``content``, as the real service makes it.

    With ``azure_digest_identifier`` the digest algorithm is written as
    sha256WithRSAEncryption, exactly as Azure does (parsers such as Go's pkcs7 need a
    workaround; openssl accepts it). The signature does not cover that identifier.
    """
    signed = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content)
        .add_signer(leaf.certificate, leaf.key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.NoAttributes])
    )
    if azure_digest_identifier:
        # digestAlgorithms and the SignerInfo's digestAlgorithm: the only two occurrences.
        if signed.count(SHA256_ALGORITHM) != 2:
            raise ValueError("unexpected PKCS#7 layout")
        signed = signed.replace(SHA256_ALGORITHM, AZURE_DIGEST_ALGORITHM)
    return signed
