"""Verifying an attested document: the PKCS#7 signature, the chain to a trusted root, the
signer's names and the document's times.

The real service's SignedData (reference section 4) embeds the content, carries only the
signing leaf, has no signed attributes and writes sha256WithRSAEncryption where a digest
algorithm belongs. ``cryptography`` reads PKCS#7 certificates but does not verify PKCS#7
signatures, so this module reads the few fields it needs from the DER itself, checks the RSA
signature with ``cryptography``, and builds and checks the chain (leaf -> intermediate ->
root) with ``cryptography``'s X.509 path validation. Signed attributes, when present, are
verified as CMS says (messageDigest over the content, the signature over the attributes).

The intermediate is not in the document: give it, or let the client fetch it from the URL
the leaf names (its AIA "CA Issuers" entry), as the documentation's openssl steps do.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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


# --- a minimal DER reader --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Node:
    tag: int
    content: bytes
    encoded: bytes  # tag, length and content

    @property
    def children(self) -> list[_Node]:
        items, offset = [], 0
        while offset < len(self.content):
            item, offset = _read(self.content, offset)
            items.append(item)
        return items


def _read(data: bytes, offset: int = 0) -> tuple[_Node, int]:
    try:
        start, tag = offset, data[offset]
        if tag & 0x1F == 0x1F:
            raise _fail("unsupported DER tag")
        first = data[offset + 1]
        offset += 2
        if first < 0x80:
            length = first
        elif first == 0x80:
            raise _fail("indefinite lengths are not DER")
        else:
            count = first & 0x7F
            length = int.from_bytes(data[offset : offset + count], "big")
            offset += count
    except IndexError:
        raise _fail("truncated DER") from None
    end = offset + length
    if end > len(data):
        raise _fail("truncated DER")
    return _Node(tag, data[offset:end], data[start:end]), end


def _expect(node: _Node, tag: int, what: str) -> _Node:
    if node.tag != tag:
        raise _fail(f"{what}: expected tag 0x{tag:02x}, found 0x{node.tag:02x}")
    return node


def _oid(node: _Node) -> str:
    body = _expect(node, 0x06, "object identifier").content
    if not body:
        raise _fail("empty object identifier")
    parts, value = [], 0
    for byte in body:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    if body[-1] & 0x80:
        raise _fail("truncated object identifier")
    first = min(parts[0] // 40, 2)
    return ".".join(str(p) for p in (first, parts[0] - 40 * first, *parts[1:]))


def _integer(node: _Node) -> int:
    return int.from_bytes(_expect(node, 0x02, "integer").content, "big", signed=True)


def _octets(node: _Node) -> bytes:
    """An OCTET STRING, primitive or (BER) constructed of primitive pieces."""
    if node.tag == 0x04:
        return node.content
    if node.tag == 0x24:
        return b"".join(_octets(child) for child in node.children)
    raise _fail(f"expected an octet string, found tag 0x{node.tag:02x}")


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
    signed_attributes: bytes | None  # DER, as encoded ([0] IMPLICIT SET OF Attribute)
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
    try:
        return _parse_signed_data(der)
    except (ValueError, IndexError) as exc:  # a structure of the wrong shape
        raise _fail(f"malformed PKCS#7: {exc}") from exc


def _parse_signed_data(der: bytes) -> SignedData:
    info, end = _read(der)
    if end != len(der):
        raise _fail("trailing bytes after the PKCS#7 structure")
    parts = _expect(info, 0x30, "ContentInfo").children
    if len(parts) != 2 or _oid(parts[0]) != SIGNED_DATA:
        raise _fail("not PKCS#7 SignedData")
    (signed,) = _expect(parts[1], 0xA0, "ContentInfo.content").children
    items = _expect(signed, 0x30, "SignedData").children
    if len(items) < 4:
        raise _fail("SignedData is incomplete")
    _integer(items[0])  # version
    digests = {
        _oid(_expect(a, 0x30, "AlgorithmIdentifier").children[0])
        for a in _expect(items[1], 0x31, "digestAlgorithms").children
    }
    encapsulated = _expect(items[2], 0x30, "EncapsulatedContentInfo").children
    if len(encapsulated) != 2:
        raise _fail("the document's content is not embedded")
    if _oid(encapsulated[0]) != DATA:
        raise _fail("the embedded content is not data")
    (wrapped,) = _expect(encapsulated[1], 0xA0, "eContent").children
    content = _octets(wrapped)
    rest = items[3:]
    certificates: list[x509.Certificate] = []
    if rest and rest[0].tag == 0xA0:
        for node in rest.pop(0).children:
            try:
                certificates.append(x509.load_der_x509_certificate(node.encoded))
            except ValueError as exc:
                raise _fail(f"unreadable certificate: {exc}") from exc
    if rest and rest[0].tag == 0xA1:  # CRLs
        rest.pop(0)
    if len(rest) != 1:
        raise _fail("SignedData has no signer infos")
    signers = _expect(rest[0], 0x31, "SignerInfos").children
    if len(signers) != 1:
        raise _fail(f"expected one signer, found {len(signers)}")
    fields = _expect(signers[0], 0x30, "SignerInfo").children
    if len(fields) < 5:
        raise _fail("SignerInfo is incomplete")
    _integer(fields[0])  # version
    identifier = fields[1]
    issuer, serial, key_id = b"", None, None
    if identifier.tag == 0x30:
        name, number = identifier.children
        issuer, serial = name.encoded, _integer(number)
    elif identifier.tag == 0x80:
        key_id = identifier.content
    else:
        raise _fail("unknown signer identifier")
    digest = _oid(_expect(fields[2], 0x30, "digestAlgorithm").children[0])
    if digest not in digests:
        raise _fail("the signer's digest algorithm is not among the SignedData's")
    index = 3
    attributes = None
    if fields[index].tag == 0xA0:
        attributes = fields[index].encoded
        index += 1
    if len(fields) < index + 2:
        raise _fail("SignerInfo is incomplete")
    algorithm = _oid(_expect(fields[index], 0x30, "signatureAlgorithm").children[0])
    signature = _expect(fields[index + 1], 0x04, "signature").content
    return SignedData(
        content=content,
        certificates=tuple(certificates),
        signer_issuer=issuer,
        signer_serial=serial,
        signer_key_id=key_id,
        digest_algorithm=digest,
        signed_attributes=attributes,
        signature_algorithm=algorithm,
        signature=signature,
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
    if signed.signed_attributes is not None:
        _check_message_digest(signed.signed_attributes, signed.content, digest())
        data = b"\x31" + signed.signed_attributes[1:]  # signed as a SET OF, not [0]
    try:
        key.verify(signed.signature, data, padding.PKCS1v15(), digest())
    except InvalidSignature as exc:
        raise _fail("the signature does not match the content") from exc
    return certificate


def _check_message_digest(
    attributes: bytes, content: bytes, algorithm: hashes.HashAlgorithm
) -> None:
    node, _ = _read(attributes)
    for attribute in node.children:
        kind, values = _expect(attribute, 0x30, "Attribute").children
        if _oid(kind) == MESSAGE_DIGEST:
            (value,) = values.children
            hasher = hashes.Hash(algorithm)
            hasher.update(content)
            if _octets(value) != hasher.finalize():
                raise _fail("the signed message digest does not match the content")
            return
    raise _fail("signed attributes without a message digest")


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
