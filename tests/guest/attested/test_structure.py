"""The attested document's PKCS#7 field by field, and the answer around it (reference section 4)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.conftest import ServerThread
from tests.guest.attested.tools import (
    DEFAULT_VM_ID,
    DOCS_SAMPLE_SIGNATURE,
    DOCUMENT,
    config_server,
    signature_der,
)
from tests.http import get

SHA256 = "2.16.840.1.101.3.4.2.1"
SHA256_WITH_RSA = "1.2.840.113549.1.1.11"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
JSON = "application/json; charset=utf-8"
NEWEST = (
    b'{"error":"Bad request. api-version is invalid or was not specified in the request. '
    b'For more information refer to aka.ms/azureimds",'
    b'"newest-versions":["2025-04-07","2024-07-17","2024-03-15"]}'
)
BAD_FORMAT_TEXT = (
    b'{ "error": "Parameter value is not allowed, or parameter value \\"text\\" is not allowed '
    b'for parameter \\"format\\". Please fix the request and retry." }'
)
SAMPLE = base64.b64decode(DOCS_SAMPLE_SIGNATURE)
# Where the documentation's sample keeps digestAlgorithms: SET { AlgorithmIdentifier }.
DIGEST_ALGORITHMS = slice(26, 43)


def signed_data(der: bytes) -> cms.SignedData:
    info = cms.ContentInfo.load(der)
    assert info["content_type"].native == "signed_data"
    content = info["content"]
    assert isinstance(content, cms.SignedData)
    return content


def content_of(der: bytes) -> bytes:
    value = signed_data(der)["encap_content_info"]["content"].native
    assert isinstance(value, bytes)
    return value


def document_of(der: bytes) -> dict[str, Any]:
    document = json.loads(content_of(der))
    assert isinstance(document, dict)
    return document


def smime_verify(der: bytes, directory: Path) -> subprocess.CompletedProcess[bytes]:
    path = directory / "decodedsignature"
    path.write_bytes(der)
    return subprocess.run(
        ["openssl", "smime", "-verify", "-in", str(path), "-inform", "DER", "-noverify"],
        capture_output=True,
    )


def leaf_of(data: cms.SignedData) -> x509.Certificate:
    return x509.load_der_x509_certificate(data["certificates"][0].chosen.dump())


def verify_signature(data: cms.SignedData) -> None:
    """RSA PKCS#1 v1.5 with SHA-256 directly over the content (no signed attributes)."""
    key = leaf_of(data).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    signer = data["signer_infos"][0]
    content = data["encap_content_info"]["content"].native
    key.verify(signer["signature"].native, content, padding.PKCS1v15(), hashes.SHA256())


@pytest.fixture(scope="module")
def der(server: ServerThread) -> bytes:
    return signature_der(server.port)


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A VM with Azure Hybrid Benefit."""
    process = config_server(
        tmp_path_factory.mktemp("ahb"), "vm: {compute: {licenseType: Windows_Server}}\n"
    )
    yield process
    process.stop()


# --- SignedData ------------------------------------------------------------------------------


def test_content_info_is_signed_data_version_1(der: bytes):
    data = signed_data(der)
    assert data["version"].native == "v1"
    assert [a["algorithm"].dotted for a in data["digest_algorithms"]] == [SHA256_WITH_RSA]


def test_content_is_embedded_data_equal_to_what_openssl_prints(der: bytes, tmp_path: Path):
    data = signed_data(der)
    encap = data["encap_content_info"]
    assert encap["content_type"].native == "data"
    content = encap["content"].native
    assert isinstance(content, bytes)
    result = smime_verify(der, tmp_path)
    assert result.returncode == 0, result.stderr
    assert b"Verification successful" in result.stderr
    assert result.stdout == content
    assert json.loads(content)["vmId"] == DEFAULT_VM_ID


def test_only_the_leaf_certificate_is_included(der: bytes):
    certificates = signed_data(der)["certificates"]
    assert len(certificates) == 1
    assert certificates[0].name == "certificate"
    leaf = certificates[0].chosen
    assert isinstance(leaf, asn1_x509.Certificate)
    assert leaf.ca is False
    assert leaf.valid_domains == ["westus.metadata.azure.com", "metadata.azure.com"]


def test_one_signer_info_without_signed_attributes(der: bytes):
    data = signed_data(der)
    assert len(data["signer_infos"]) == 1
    signer = data["signer_infos"][0]
    assert signer["version"].native == "v1"
    assert signer["sid"].name == "issuer_and_serial_number"
    sid = signer["sid"].chosen
    leaf = data["certificates"][0].chosen
    assert sid["issuer"] == leaf.issuer
    assert sid["serial_number"].native == leaf.serial_number
    assert signer["digest_algorithm"]["algorithm"].dotted == SHA256_WITH_RSA
    assert not signer["signed_attrs"].native  # absent: the signature covers the content itself
    assert not signer["unsigned_attrs"].native
    assert signer["signature_algorithm"]["algorithm"].dotted == RSA_ENCRYPTION


def test_rsa_signature_covers_the_content(der: bytes):
    data = signed_data(der)
    verify_signature(data)
    key = leaf_of(data).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    assert key.key_size == 2048
    signature = data["signer_infos"][0]["signature"].native
    with pytest.raises(InvalidSignature):
        key.verify(signature, content_of(der) + b" ", padding.PKCS1v15(), hashes.SHA256())


def test_signature_algorithm_is_written_as_in_the_documentation_sample(der: bytes):
    ours = signed_data(der)["signer_infos"][0]["signature_algorithm"].dump()
    sample = signed_data(SAMPLE)["signer_infos"][0]["signature_algorithm"].dump()
    assert ours == sample == bytes.fromhex("300d06092a864886f70d0101010500")


# --- the digest algorithm identifier ----------------------------------------------------------


def test_default_digest_identifier_matches_the_documentation_sample(der: bytes):
    data, sample = signed_data(der), signed_data(SAMPLE)
    assert [a["algorithm"].dotted for a in sample["digest_algorithms"]] == [SHA256_WITH_RSA]
    assert data["digest_algorithms"].dump() == sample["digest_algorithms"].dump()
    # Same place in the encoding: SET (15) { SEQUENCE { OID 1.2.840.113549.1.1.11, NULL } }.
    assert SAMPLE[DIGEST_ALGORITHMS] == bytes.fromhex("310f300d06092a864886f70d01010b0500")
    assert der[DIGEST_ALGORITHMS] == SAMPLE[DIGEST_ALGORITHMS]
    signer, sample_signer = data["signer_infos"][0], sample["signer_infos"][0]
    assert signer["digest_algorithm"].dump() == sample_signer["digest_algorithm"].dump()
    assert signer["signature_algorithm"].dump() == sample_signer["signature_algorithm"].dump()
    assert not signer["signed_attrs"].native and not sample_signer["signed_attrs"].native
    assert data["version"].native == sample["version"].native == "v1"
    assert len(data["certificates"]) == len(sample["certificates"]) == 1


def test_sha256_digest_identifier_is_the_option(sha256: ServerThread):
    der = signature_der(sha256.port)
    data = signed_data(der)
    assert [a["algorithm"].dotted for a in data["digest_algorithms"]] == [SHA256]
    assert der[DIGEST_ALGORITHMS] == bytes.fromhex("310f300d06096086480165030402010500")
    assert data["signer_infos"][0]["digest_algorithm"]["algorithm"].dotted == SHA256
    verify_signature(data)


def test_sha256_digest_identifier_verifies_with_openssl(sha256: ServerThread, tmp_path):
    der = signature_der(sha256.port)
    result = smime_verify(der, tmp_path)
    assert result.returncode == 0, result.stderr
    assert b"Verification successful" in result.stderr
    assert result.stdout == content_of(der)


def test_documentation_sample_verifies_with_openssl(tmp_path: Path):
    """The reference point: openssl accepts Azure's own encoding."""
    result = smime_verify(SAMPLE, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b'{"nonce":"1234566766"')


# --- api-version shaping ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "keys"),
    [
        ("2018-10-01", ["nonce", "plan", "timeStamp", "vmId"]),
        ("2019-04-30", ["nonce", "plan", "timeStamp", "vmId", "subscriptionId"]),
        ("2019-11-01", ["nonce", "plan", "timeStamp", "vmId", "subscriptionId", "sku"]),
        ("2020-09-01", ["nonce", "plan", "timeStamp", "vmId", "subscriptionId", "sku"]),
        ("2025-04-07", ["nonce", "plan", "timeStamp", "vmId", "subscriptionId", "sku"]),
    ],
)
def test_fields_by_api_version(server: ServerThread, version: str, keys: list[str]):
    document = document_of(signature_der(server.port, f"api-version={version}"))
    assert list(document) == keys
    assert list(document["plan"]) == ["name", "product", "publisher"]
    assert list(document["timeStamp"]) == ["createdOn", "expiresOn"]


@pytest.mark.parametrize(
    ("version", "keys"),
    [
        ("2019-11-01", ["nonce", "plan", "timeStamp", "vmId", "subscriptionId", "sku"]),
        (
            "2020-09-01",
            ["nonce", "plan", "timeStamp", "vmId", "licenseType", "subscriptionId", "sku"],
        ),
    ],
)
def test_license_type_for_hybrid_benefit_vms(hybrid: ServerThread, version: str, keys: list[str]):
    document = document_of(signature_der(hybrid.port, f"api-version={version}"))
    assert list(document) == keys
    if "licenseType" in keys:
        assert document["licenseType"] == "Windows_Server"


def test_version_before_attested_data_is_refused(server: ServerThread):
    reply = get(server.port, f"{DOCUMENT}?api-version=2018-04-02")
    assert (reply.status, reply.body) == (400, NEWEST)
    assert reply.headers["content-type"] == JSON


def test_text_format_is_refused(server: ServerThread):
    reply = get(server.port, f"{DOCUMENT}?api-version=2020-09-01&format=text")
    assert (reply.status, reply.body) == (400, BAD_FORMAT_TEXT)
    assert reply.headers["content-type"] == JSON


# --- the answer ------------------------------------------------------------------------------


def test_answer_is_compact_json_with_encoding_and_signature(server: ServerThread):
    reply = get(server.port, f"{DOCUMENT}?api-version=2020-09-01")
    assert reply.status == 200
    assert reply.headers["content-type"] == JSON
    assert re.fullmatch(rb'\{"encoding":"pkcs7","signature":"[A-Za-z0-9+/]+={0,2}"\}', reply.body)
    assert reply.headers["content-length"] == str(len(reply.body))
    signature = json.loads(reply.body)["signature"]
    assert signed_data(base64.b64decode(signature, validate=True))["version"].native == "v1"


def test_same_nonce_is_answered_from_the_cache(server: ServerThread):
    query = "api-version=2020-09-01&nonce=cache12345"
    first = get(server.port, f"{DOCUMENT}?{query}")
    time.sleep(1.1)  # a new timeStamp if it were signed again
    second = get(server.port, f"{DOCUMENT}?{query}")
    assert first.status == second.status == 200
    assert first.body == second.body


def test_different_nonces_get_different_documents(server: ServerThread):
    first = signature_der(server.port, "api-version=2020-09-01&nonce=1111111111")
    second = signature_der(server.port, "api-version=2020-09-01&nonce=2222222222")
    assert first != second
    one, two = document_of(first), document_of(second)
    assert (one["nonce"], two["nonce"]) == ("1111111111", "2222222222")
    assert one["vmId"] == two["vmId"] == DEFAULT_VM_ID
