"""Attested documents verified by the client: against the node's root (the intermediate
fetched from the leaf's AIA, or given), the Azure digest-identifier quirk, and every way a
document must fail (another root, tampering, expiry, foreign names). Offline chains come from
azimds's own CA code (``azimds.signing.attestation``)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from azimds.client import AttestationError, IMDSClient, verify_attested
from azimds.client.attested import issuer_url, parse_signed_data, signer_of, verify_signature
from azimds.signing.attestation import (
    Signer,
    load_signer,
    new_intermediate_body,
    new_leaf_body,
    new_root_body,
    sign,
)
from tests.admin.support import admin
from tests.client.support import DEFAULT_VM_ID, endpoint
from tests.conftest import ServerThread
from tests.guest.attested.tools import DOCS_SAMPLE_SIGNATURE

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
STAMP = "%m/%d/%y %H:%M:%S -0000"


@dataclass(frozen=True)
class Chain:
    root: Signer
    intermediate: Signer
    leaf: Signer


def make_chain(location: str = "westus", domain: str = "azure.com") -> Chain:
    root = load_signer(new_root_body(NOW))
    intermediate = load_signer(new_intermediate_body(root, NOW))
    leaf = load_signer(new_leaf_body(intermediate, location, domain, "http://ca.test/i.cer", NOW))
    return Chain(root, intermediate, leaf)


@pytest.fixture(scope="module")
def chain() -> Chain:
    return make_chain()


def content(nonce: str = "1234567890", hours: int = 6) -> bytes:
    document = {
        "nonce": nonce,
        "plan": {"name": "", "product": "", "publisher": ""},
        "timeStamp": {
            "createdOn": NOW.strftime(STAMP),
            "expiresOn": (NOW + dt.timedelta(hours=hours)).strftime(STAMP),
        },
        "vmId": DEFAULT_VM_ID,
    }
    return json.dumps(document, separators=(",", ":")).encode()


@pytest.fixture(scope="module")
def sha256_digest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    process = ServerThread(
        "--attested-digest",
        "sha256",
        "--store",
        "memory:",
        state_dir=tmp_path_factory.mktemp("sha256-digest"),
    )
    yield process
    process.stop()


# --- against a node -----------------------------------------------------------------------------


def test_verified_against_the_nodes_root(server: ServerThread):
    root = admin(server).ca_certificate("root")
    with IMDSClient(endpoint(server)) as imds:
        document = imds.attested(root, nonce="abcdef0123")
    assert document.vm_id == DEFAULT_VM_ID
    assert document.nonce == "abcdef0123"
    assert document.subscription_id and document.sku == "18.04-LTS"
    assert document.plan == {
        "name": "planName",
        "product": "planProduct",
        "publisher": "planPublisher",
    }
    assert document.expires_on - document.created_on == dt.timedelta(hours=6)
    assert document.signer_names == ("westus.metadata.azure.com", "metadata.azure.com")
    assert json.loads(document.content) == dict(document.raw)


def test_intermediate_given_instead_of_fetched(server: ServerThread):
    root = admin(server).ca_certificate("root", "der")  # DER works as well as PEM
    intermediate = admin(server).ca_certificate("intermediate")
    with IMDSClient(endpoint(server)) as imds:
        assert imds.attested(root, intermediates=[intermediate]).vm_id == DEFAULT_VM_ID
        with pytest.raises(AttestationError, match="chain"):
            imds.attested(root, intermediates=[])


def test_the_leaf_names_the_control_plane_as_its_issuer(server: ServerThread):
    with IMDSClient(endpoint(server)) as imds:
        reply = imds.request("GET", "attested/document")
    leaf = signer_of(reply.json()["signature"])
    assert issuer_url(leaf) == f"{server.admin_url}/attestation/intermediate.cer"


def test_another_root_does_not_verify(server: ServerThread, chain: Chain):
    with IMDSClient(endpoint(server)) as imds, pytest.raises(AttestationError, match="chain"):
        imds.attested(chain.root.pem())


@pytest.mark.parametrize(
    ("node", "oid"),
    [
        ("server", "1.2.840.113549.1.1.11"),  # the default: sha256WithRSAEncryption, as Azure
        ("sha256_digest", "2.16.840.1.101.3.4.2.1"),  # --attested-digest sha256
    ],
)
def test_both_digest_identifiers_verify(request: pytest.FixtureRequest, node: str, oid: str):
    process: ServerThread = request.getfixturevalue(node)
    root = admin(process).ca_certificate("root")
    with IMDSClient(endpoint(process)) as imds:
        reply = imds.request("GET", "attested/document")
        der = base64.b64decode(reply.json()["signature"])
        assert parse_signed_data(der).digest_algorithm == oid
        assert imds.attested(root).vm_id == DEFAULT_VM_ID


# --- offline -------------------------------------------------------------------------------------


def test_the_documentations_sample_signature_verifies():
    """Azure's own sample: signed over the content as it stands, with Azure's digest OID (its
    self-signed MD5 certificate is no chain anyone should trust)."""
    signed = parse_signed_data(base64.b64decode(DOCS_SAMPLE_SIGNATURE))
    assert signed.content.startswith(b'{"nonce":"1234566766"')
    assert signed.signed_attributes is None
    assert signed.digest_algorithm == "1.2.840.113549.1.1.11"
    leaf = verify_signature(signed)
    assert leaf.subject.rfc4514_string() == "CN=testsubdomain.metadata.azure.com"


def test_a_good_document(chain: Chain):
    der = sign(chain.leaf, content(), azure_digest_identifier=True)
    document = verify_attested(
        der, chain.root.pem(), intermediates=chain.intermediate.der(), nonce="1234567890"
    )
    assert document.vm_id == DEFAULT_VM_ID
    text = base64.b64encode(der).decode()
    assert verify_attested(text, [chain.root.certificate], intermediates=[chain.intermediate.pem()])


def test_signed_attributes_are_verified(chain: Chain):
    der = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content())
        .add_signer(chain.leaf.certificate, chain.leaf.key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [])
    )
    assert parse_signed_data(der).signed_attributes is not None
    assert verify_attested(der, chain.root.pem(), intermediates=chain.intermediate.pem()).vm_id
    where = der.index(DEFAULT_VM_ID.encode())
    tampered = der[:where] + b"1" + der[where + 1 :]
    with pytest.raises(AttestationError, match="message digest"):
        verify_attested(tampered, chain.root.pem(), intermediates=chain.intermediate.pem())


def test_tampered_content_fails(chain: Chain):
    der = sign(chain.leaf, content(), azure_digest_identifier=False)
    where = der.index(DEFAULT_VM_ID.encode())
    tampered = der[:where] + b"1" + der[where + 1 :]
    with pytest.raises(AttestationError, match="signature does not match"):
        verify_attested(tampered, chain.root.pem(), intermediates=chain.intermediate.pem())


def test_tampered_signature_fails(chain: Chain):
    der = bytearray(sign(chain.leaf, content(), azure_digest_identifier=False))
    der[-10] ^= 1
    with pytest.raises(AttestationError, match="signature does not match"):
        verify_attested(bytes(der), chain.root.pem(), intermediates=chain.intermediate.pem())


def test_an_expired_document_fails(chain: Chain):
    der = sign(chain.leaf, content(), azure_digest_identifier=False)
    later = NOW + dt.timedelta(hours=7)
    with pytest.raises(AttestationError, match="expired"):
        verify_attested(der, chain.root.pem(), intermediates=chain.intermediate.pem(), now=later)


def test_a_certificate_outside_its_validity_fails(chain: Chain):
    der = sign(chain.leaf, content(hours=24 * 800), azure_digest_identifier=False)
    later = NOW + dt.timedelta(days=400)  # the leaf lives a year
    with pytest.raises(AttestationError, match="chain"):
        verify_attested(der, chain.root.pem(), intermediates=chain.intermediate.pem(), now=later)


def test_the_signer_must_be_named_for_metadata():
    other = make_chain(domain="example.org")
    der = sign(other.leaf, content(), azure_digest_identifier=False)
    with pytest.raises(AttestationError, match="names"):
        verify_attested(der, other.root.pem(), intermediates=other.intermediate.pem())
    document = verify_attested(
        der,
        other.root.pem(),
        intermediates=other.intermediate.pem(),
        domains=["metadata.example.org"],
    )
    assert document.signer_names == ("westus.metadata.example.org", "metadata.example.org")


def test_a_government_cloud_name_is_accepted():
    gov = make_chain("usgovvirginia", "azure.us")
    der = sign(gov.leaf, content(), azure_digest_identifier=True)
    assert verify_attested(der, gov.root.pem(), intermediates=gov.intermediate.pem()).vm_id


def test_a_wrong_nonce_fails(chain: Chain):
    der = sign(chain.leaf, content("aaa"), azure_digest_identifier=False)
    with pytest.raises(AttestationError, match="nonce"):
        verify_attested(der, chain.root.pem(), intermediates=chain.intermediate.pem(), nonce="b")


@pytest.mark.parametrize(
    "garbage", [b"", b"\x30\x03\x02\x01", b"not der at all", b"\x30\x80\x00\x00"]
)
def test_garbage_is_an_attestation_error(garbage: bytes, chain: Chain):
    with pytest.raises(AttestationError):
        verify_attested(garbage, chain.root.pem())


def test_a_signature_that_is_not_base64_fails(chain: Chain):
    with pytest.raises(AttestationError, match="base64"):
        verify_attested("not base64!", chain.root.pem())


def test_certificates_as_objects_der_pem_text_and_bundles(chain: Chain):
    der = sign(chain.leaf, content(), azure_digest_identifier=False)
    roots: list[Any] = [
        chain.root.certificate,
        chain.root.der(),
        chain.root.pem(),
        chain.root.pem().decode("ascii"),
        make_chain().root.pem() + chain.root.pem(),  # a bundle with a root that is not it
    ]
    for root in roots:
        document = verify_attested(der, root, intermediates=chain.intermediate.certificate)
        assert document.vm_id == DEFAULT_VM_ID


def test_any_corruption_is_an_attestation_error(chain: Chain):
    """Every byte flipped, every truncation: an AttestationError, never another exception."""
    der = sign(chain.leaf, content(), azure_digest_identifier=True)
    root, intermediate = chain.root.pem(), chain.intermediate.pem()
    broken = [der[:cut] for cut in range(0, len(der), 7)]
    broken += [der[:i] + bytes([der[i] ^ 0x80]) + der[i + 1 :] for i in range(0, len(der), 3)]
    for candidate in broken:
        with pytest.raises(AttestationError):
            verify_attested(candidate, root, intermediates=intermediate)
