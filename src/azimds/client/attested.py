"""Verifying an attested document: the PKCS#7 signature, the chain to a trusted root, the
signer's names and the document's times.

The real service's SignedData (reference section 4) embeds the content, carries only the
signing leaf, has no signed attributes and writes sha256WithRSAEncryption where a digest
algorithm belongs. ``cryptography`` reads PKCS#7 certificates but does not verify PKCS#7
signatures, so this module parses the SignedData with ``asn1crypto`` (its ``cms`` module),
checks the RSA signature with ``cryptography``, and builds and checks the chain (leaf ->
intermediate -> root) with ``cryptography``'s X.509 path validation. Signed attributes, when
present, are verified as CMS says (messageDigest over the content, the signature over the
attributes' DER re-tagged as a SET OF). Malformed input of any kind is an ``AttestationError``.

The intermediate is not in the document: give it, or let the client fetch it from the URL
the leaf names (its AIA "CA Issuers" entry), as the documentation's openssl steps do.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from asn1crypto import cms, core  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from azimds.client.errors import AttestationError
from azimds.client.models import AttestedDocument

# The signing certificate's names, by cloud ([DOC-IMDS]): the name itself or any subdomain.
METADATA_DOMAINS: tuple[str, ...] = (
    "metadata.azure.com",
    "metadata.azure.us",
    "metadata.azure.cn",
    "metadata.microsoftazure.de",
)

SIGNED_DATA = "1.2.840.113549.1.7.2"
DATA = "1.2.840.113549.1.7.1"
MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
# Digest algorithms by OID; Azure writes sha256WithRSAEncryption in their place.
DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
    "1.2.840.113549.1.1.11": hashes.SHA256,
    "1.2.840.113549.1.1.12": hashes.SHA384,
    "1.2.840.113549.1.1.13": hashes.SHA512,
}
RSA_SIGNATURES = {RSA_ENCRYPTION, "1.2.840.113549.1.1.11", "1.2.840.113549.1.1.12"}
RSA_SIGNATURES |= {"1.2.840.113549.1.1.13"}

CertificateLike = x509.Certificate | bytes | str


def _fail(message: str) -> AttestationError:
    return AttestationError(f"attested document: {message}")


# --- SignedData ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignedData:
    """The parts of a PKCS#7 SignedData with one signer that verification needs."""

    content: bytes
    certificates: tuple[x509.Certificate, ...]
    signer_issuer: bytes  # DER of the signer's issuer Name ("" when named by key id)
    signer_serial: int | None
    signer_key_id: bytes | None
    digest_algorithm: str
    signed_attributes: bytes | None  # DER of the SET OF Attribute the signature covers
    message_digest: bytes | None  # the messageDigest signed attribute, if any
    signature_algorithm: str
    signature: bytes

    def signer(self) -> x509.Certificate:
        for certificate in self.certificates:
            if self.signer_serial is not None:
                if (
                    certificate.serial_number == self.signer_serial
                    and certificate.issuer.public_bytes() == self.signer_issuer
                ):
                    return certificate
            elif self.signer_key_id is not None:
                try:
                    ski = certificate.extensions.get_extension_for_class(
                        x509.SubjectKeyIdentifier
                    ).value.digest
                except x509.ExtensionNotFound:
                    continue
                if ski == self.signer_key_id:
                    return certificate
        raise _fail("the signing certificate is not in the document")


def parse_signed_data(der: bytes) -> SignedData:
    """Read a DER PKCS#7 ContentInfo holding SignedData with embedded content."""
    # asn1crypto parses lazily, as fields are read: everything is read here, in the try.
    try:
        return _parse_signed_data(der)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise _fail(f"malformed PKCS#7: {exc}") from exc


def _parse_signed_data(der: bytes) -> SignedData:
    info = cms.ContentInfo.load(der, strict=True)  # strict: no trailing bytes
    if info["content_type"].dotted != SIGNED_DATA:
        raise _fail("not PKCS#7 SignedData")
    signed = info["content"]
    encapsulated = signed["encap_content_info"]
    if encapsulated["content_type"].dotted != DATA:
        raise _fail("the embedded content is not data")
    if isinstance(encapsulated["content"], core.Void):
        raise _fail("the document's content is not embedded")
    signers = signed["signer_infos"]
    if len(signers) != 1:
        raise _fail(f"expected one signer, found {len(signers)}")
    signer = signers[0]
    # asn1crypto parses lazily: read all of the signer and the digest algorithms here, so that
    # a wrong tag anywhere in them fails now.
    _ = signer.native, signed["digest_algorithms"].native
    issuer, serial, key_id = b"", None, None
    if signer["sid"].name == "issuer_and_serial_number":
        named = signer["sid"].chosen
        issuer, serial = named["issuer"].dump(), int(named["serial_number"].native)
    else:
        key_id = bytes(signer["sid"].chosen)
    digest = signer["digest_algorithm"]["algorithm"].dotted
    if digest not in {a["algorithm"].dotted for a in signed["digest_algorithms"]}:
        raise _fail("the signer's digest algorithm is not among the SignedData's")
    attributes, message_digest = None, None
    if not isinstance(signer["signed_attrs"], core.Void):
        attributes = signer["signed_attrs"].untag().dump()  # signed as a SET OF, not [0]
        for attribute in signer["signed_attrs"]:
            if attribute["type"].dotted == MESSAGE_DIGEST:
                (value,) = attribute["values"]
                message_digest = bytes(value)
    certificates: list[x509.Certificate] = []
    if not isinstance(signed["certificates"], core.Void):
        for choice in signed["certificates"]:
            try:
                certificates.append(x509.load_der_x509_certificate(choice.chosen.dump()))
            except (ValueError, x509.InvalidVersion) as exc:
                raise _fail(f"unreadable certificate: {exc}") from exc
    return SignedData(
        content=bytes(encapsulated["content"]),
        certificates=tuple(certificates),
        signer_issuer=issuer,
        signer_serial=serial,
        signer_key_id=key_id,
        digest_algorithm=digest,
        signed_attributes=attributes,
        message_digest=message_digest,
        signature_algorithm=signer["signature_algorithm"]["algorithm"].dotted,
        signature=bytes(signer["signature"]),
    )


def verify_signature(signed: SignedData) -> x509.Certificate:
    """Check the signer's RSA signature over the content; returns the signing certificate."""
    try:
        return _verify_signature(signed)
    except (ValueError, IndexError, UnsupportedAlgorithm) as exc:  # a malformed certificate
        raise _fail(f"unreadable signer: {exc}") from exc


def _verify_signature(signed: SignedData) -> x509.Certificate:
    certificate = signed.signer()
    digest = DIGESTS.get(signed.digest_algorithm)
    if digest is None:
        raise _fail(f"unsupported digest algorithm {signed.digest_algorithm}")
    if signed.signature_algorithm not in RSA_SIGNATURES:
        raise _fail(f"unsupported signature algorithm {signed.signature_algorithm}")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise _fail("the signing certificate's key is not RSA")
    data = signed.content
    if signed.signed_attributes is not None:  # CMS: the content's digest is among them
        if signed.message_digest is None:
            raise _fail("signed attributes without a message digest")
        hasher = hashes.Hash(digest())
        hasher.update(signed.content)
        if signed.message_digest != hasher.finalize():
            raise _fail("the signed message digest does not match the content")
        data = signed.signed_attributes
    try:
        key.verify(signed.signature, data, padding.PKCS1v15(), digest())
    except InvalidSignature as exc:
        raise _fail("the signature does not match the content") from exc
    return certificate


def signature_der(signature: str | bytes) -> bytes:
    """The DER of a ``signature`` field (base64 text); bytes are taken as DER already."""
    if isinstance(signature, bytes):
        return signature
    try:
        return base64.b64decode(signature, validate=True)
    except binascii.Error as exc:
        raise _fail(f"the signature is not base64: {exc}") from exc


def signer_of(signature: str | bytes) -> x509.Certificate:
    """The certificate whose signature over the content verifies (not yet its chain)."""
    return verify_signature(parse_signed_data(signature_der(signature)))


# --- certificates ----------------------------------------------------------------------------


def load_certificate(data: CertificateLike) -> x509.Certificate:
    """A certificate from PEM or DER bytes (or PEM text), or as it is."""
    if isinstance(data, x509.Certificate):
        return data
    raw = data.encode("ascii") if isinstance(data, str) else data
    try:
        if b"-----BEGIN" in raw:
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except ValueError as exc:
        raise _fail(f"not a PEM or DER certificate: {exc}") from exc


def _certificates(given: CertificateLike | Iterable[CertificateLike]) -> list[x509.Certificate]:
    if isinstance(given, x509.Certificate | bytes | str):
        if isinstance(given, bytes | str) and _pem_count(given) > 1:
            raw = given.encode("ascii") if isinstance(given, str) else given
            return x509.load_pem_x509_certificates(raw)
        return [load_certificate(given)]
    return [load_certificate(item) for item in given]


def _pem_count(data: bytes | str) -> int:
    raw = data.encode("ascii") if isinstance(data, str) else data
    return raw.count(b"-----BEGIN CERTIFICATE-----")


def issuer_url(certificate: x509.Certificate) -> str | None:
    """The leaf's AIA "CA Issuers" URL (where its intermediate is published), if any."""
    try:
        access = certificate.extensions.get_extension_for_class(
            x509.AuthorityInformationAccess
        ).value
    except (x509.ExtensionNotFound, ValueError):  # none, or none readable
        return None
    for description in access:
        if description.access_method == AuthorityInformationAccessOID.CA_ISSUERS and isinstance(
            description.access_location, x509.UniformResourceIdentifier
        ):
            url = str(description.access_location.value)
            if url.startswith(("http://", "https://")):
                return url
    return None


def _dns_names(certificate: x509.Certificate) -> tuple[str, ...]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(names.value.get_values_for_type(x509.DNSName))


def _named_for(names: Sequence[str], domains: Sequence[str]) -> bool:
    for name in names:
        lowered = name.lower().rstrip(".")
        for domain in domains:
            if lowered == domain or lowered.endswith("." + domain):
                return True
    return False


def _verify_chain(
    leaf: x509.Certificate,
    roots: list[x509.Certificate],
    intermediates: list[x509.Certificate],
    now: dt.datetime,
) -> None:
    builder = PolicyBuilder().store(Store(roots)).time(now)
    try:
        from cryptography.x509.verification import ExtensionPolicy
    except ImportError:  # cryptography < 45: its client profile (clientAuth EKU) applies
        pass
    else:
        # The signing leaf is not a TLS certificate: any extended key usage will do; the CAs
        # above it are held to the Web PKI profile.
        builder = builder.extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
        )
    try:
        builder.build_client_verifier().verify(leaf, intermediates)
    except VerificationError as exc:
        raise _fail(f"the signing certificate does not chain to the given root: {exc}") from exc


def verify_attested(
    signature: str | bytes,
    root: CertificateLike | Iterable[CertificateLike],
    *,
    intermediates: CertificateLike | Iterable[CertificateLike] = (),
    nonce: str | None = None,
    now: dt.datetime | None = None,
    domains: Sequence[str] = METADATA_DOMAINS,
) -> AttestedDocument:
    """Verify an attested document and return what it says.

    ``signature`` is the ``signature`` field of ``/metadata/attested/document`` (base64 text)
    or its DER bytes; ``root`` the trusted root(s) (PEM or DER, or ``x509.Certificate``);
    ``intermediates`` the CA certificates between root and leaf (Azure's are published at the
    URL in the leaf's AIA, see ``issuer_url``). Checks, in order: the PKCS#7 signature over the
    content, the chain to ``root`` at ``now``, a signer DNS name under one of ``domains``, the
    document's ``expiresOn``, and ``nonce`` if given. Raises ``AttestationError``.
    """
    moment = now or dt.datetime.now(dt.UTC)
    signed = parse_signed_data(signature_der(signature))
    leaf = verify_signature(signed)
    extra = [c for c in signed.certificates if c != leaf]
    try:
        _verify_chain(leaf, _certificates(root), _certificates(intermediates) + extra, moment)
        names = _dns_names(leaf)
    except ValueError as exc:  # a malformed extension or certificate
        raise _fail(f"unreadable certificate: {exc}") from exc
    if not _named_for(names, domains):
        raise _fail(f"the signer's names {list(names)} are not under {list(domains)}")
    try:
        document = AttestedDocument.from_content(signed.content, names)
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(f"unreadable signed content: {exc}") from exc
    if document.expires_on < moment:
        raise _fail(f"expired at {document.expires_on.isoformat()}")
    if nonce is not None and document.nonce != nonce:
        raise _fail(f"nonce {document.nonce!r} is not the one asked for ({nonce!r})")
    return document
