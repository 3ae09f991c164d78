"""The documentation's Linux validation of an attested document, run verbatim against azimds.

Only the address changes (``http://169.254.169.254`` -> the test server), and the chain is
verified against the root that ``azimds ca export`` writes instead of DigiCert's.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509

from tests.admin.support import admin
from tests.conftest import ServerThread
from tests.guest.attested.tools import (
    DEFAULT_VM_ID,
    DOCUMENT,
    bash,
    ca_export,
    config_server,
    signature_der,
)
from tests.http import get

# Verbatim from the documentation ("Validation", Linux).
DOCS_VALIDATE = """\
# Get the signature
curl --silent -H Metadata:True --noproxy "*" "http://169.254.169.254/metadata/attested/document?api-version=2020-09-01" | jq -r '.["signature"]' > signature
# Decode the signature
base64 -d signature > decodedsignature
# Get PKCS7 format
openssl pkcs7 -in decodedsignature -inform DER -out sign.pk7
# Get Public key out of pkc7
openssl pkcs7 -in decodedsignature -inform DER  -print_certs -out signer.pem
# Get the intermediate certificate
curl -s -o intermediate.cer "$(openssl x509 -in signer.pem -text -noout | grep " CA Issuers -" | awk -FURI: '{print $2}')"
openssl x509 -inform der -in intermediate.cer -out intermediate.pem
# Verify the contents
openssl smime -verify -in sign.pk7 -inform pem -noverify
"""  # noqa: E501
DOCS_CHAIN = """\
# Verify the subject name for the main certificate
openssl x509 -noout -subject -in signer.pem
# Verify the issuer for the main certificate
openssl x509 -noout -issuer -in signer.pem
#Validate the subject name for intermediate certificate
openssl x509 -noout -subject -in intermediate.pem
# Verify the issuer for the intermediate certificate
openssl x509 -noout -issuer -in intermediate.pem
# Verify the certificate chain, for Microsoft Azure operated by 21Vianet the intermediate certificate will be from DigiCert Global Root CA
openssl verify -verbose -CAfile /etc/ssl/certs/DigiCert_Global_Root.pem -untrusted intermediate.pem signer.pem
"""  # noqa: E501
DOCS_ADDRESS = "http://169.254.169.254"
DOCS_ROOT = "/etc/ssl/certs/DigiCert_Global_Root.pem"
DOCS_QUERY = "?api-version=2020-09-01"
STAMP = "%m/%d/%y %H:%M:%S -0000"
JSON = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Validation:
    directory: Path
    result: subprocess.CompletedProcess[str]


def validate(port: int, directory: Path, extra_query: str = "") -> Validation:
    """The documentation's script, against the guest port (and extra query parameters)."""
    directory.mkdir(parents=True, exist_ok=True)
    script = DOCS_VALIDATE.replace(DOCS_ADDRESS, f"http://127.0.0.1:{port}")
    script = script.replace(DOCS_QUERY, DOCS_QUERY + extra_query)
    assert script != DOCS_VALIDATE
    return Validation(directory, bash(script, directory))


def check_chain(directory: Path, root_pem: Path) -> subprocess.CompletedProcess[str]:
    """The documentation's subject/issuer/verify steps, trusting ``root_pem``."""
    return bash(DOCS_CHAIN.replace(DOCS_ROOT, str(root_pem)), directory)


def san_names(signer_pem: Path) -> list[str]:
    result = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(signer_pem)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert lines[0].strip() == "X509v3 Subject Alternative Name:", result.stdout
    entries = [entry.strip() for entry in "".join(lines[1:]).split(",")]
    assert all(entry.startswith("DNS:") for entry in entries), entries
    return [entry.removeprefix("DNS:") for entry in entries]


def aia_uri(signer_pem: Path) -> str:
    text = subprocess.run(
        ["openssl", "x509", "-in", str(signer_pem), "-text", "-noout"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    uris = re.findall(r"CA Issuers - URI:(\S+)", text)
    assert len(uris) == 1, text
    return uris[0]


def verified(validation: Validation) -> dict[str, object]:
    """The printed document, after checking that openssl verified it."""
    assert validation.result.returncode == 0, validation.result.stderr
    assert "Verification successful" in validation.result.stderr
    document = json.loads(validation.result.stdout)
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def docs(server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Validation:
    return validate(server.port, tmp_path_factory.mktemp("docs"))


@pytest.fixture(scope="module")
def exported(server: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ca") / "export"
    result = ca_export(server.state_dir, directory)
    assert result.returncode == 0, result.stderr
    return directory


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A VM in another cloud and location."""
    config = "vm: {compute: {location: usgovvirginia, azEnvironment: AzureUSGovernmentCloud}}\n"
    process = config_server(tmp_path_factory.mktemp("gov"), config)
    yield process
    process.stop()


# --- the documented validation ---------------------------------------------------------------


def test_docs_validation_verifies_and_prints_the_document(server: ServerThread, docs: Validation):
    document = verified(docs)
    assert list(document) == ["nonce", "plan", "timeStamp", "vmId", "subscriptionId", "sku"]
    assert document["vmId"] == DEFAULT_VM_ID
    assert "licenseType" not in document  # the default VM has no Azure Hybrid Benefit

    compute = json.loads(get(server.port, "/metadata/instance/compute?api-version=2021-02-01").body)
    assert document["subscriptionId"] == compute["subscriptionId"] != ""
    assert document["sku"] == compute["sku"] != ""
    plan = compute["plan"]
    assert document["plan"] == {k: plan[k] for k in ("name", "product", "publisher")}

    stamps = document["timeStamp"]
    assert isinstance(stamps, dict)
    assert list(stamps) == ["createdOn", "expiresOn"]
    assert re.fullmatch(r"\d\d/\d\d/\d\d \d\d:\d\d:\d\d -0000", stamps["createdOn"])
    created = dt.datetime.strptime(stamps["createdOn"], STAMP).replace(tzinfo=dt.UTC)
    expires = dt.datetime.strptime(stamps["expiresOn"], STAMP).replace(tzinfo=dt.UTC)
    assert expires - created == dt.timedelta(hours=6)
    now = dt.datetime.now(dt.UTC)
    # Documents are cached for a minute, so this one may be a little older than the request.
    assert now - dt.timedelta(seconds=120) <= created <= now + dt.timedelta(seconds=2)
    # No nonce asked for: the creation time, YYYYMMDD-HHMMSS (documentation samples).
    assert re.fullmatch(r"\d{8}-\d{6}", str(document["nonce"]))
    assert document["nonce"] == created.strftime("%Y%m%d-%H%M%S")


def test_printed_document_is_the_compact_signed_content(server: ServerThread, docs: Validation):
    verified(docs)
    content = docs.result.stdout.encode()
    assert content in (docs.directory / "decodedsignature").read_bytes()
    assert json.dumps(json.loads(content), separators=(",", ":")).encode() == content


def test_aia_curl_fetched_the_intermediate_from_the_control_plane(
    server: ServerThread, docs: Validation
):
    verified(docs)
    assert (
        aia_uri(docs.directory / "signer.pem") == f"{server.admin_url}/attestation/intermediate.cer"
    )
    fetched = (docs.directory / "intermediate.cer").read_bytes()
    assert fetched == admin(server).ca_certificate("intermediate", "der")
    intermediate = x509.load_der_x509_certificate(fetched)  # DER, as AIA fetchers expect
    constraints = intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    converted = x509.load_pem_x509_certificate((docs.directory / "intermediate.pem").read_bytes())
    assert converted == intermediate


# The digestAlgorithms SET as the documentation's sample has it (sha256WithRSAEncryption), and
# as --attested-digest sha256 writes it.
AZURE_DIGEST_SET = bytes.fromhex("310f300d06092a864886f70d01010b0500")
SHA256_DIGEST_SET = bytes.fromhex("310f300d06096086480165030402010500")


@pytest.mark.parametrize(
    ("node", "digest_set"),
    [("server", AZURE_DIGEST_SET), ("sha256", SHA256_DIGEST_SET)],
    ids=["azure", "sha256"],
)
def test_docs_steps_verify_both_digest_identifiers(
    request: pytest.FixtureRequest, node: str, digest_set: bytes, tmp_path: Path
):
    process: ServerThread = request.getfixturevalue(node)
    validation = validate(process.port, tmp_path / "docs")
    document = verified(validation)
    assert document["vmId"] == DEFAULT_VM_ID
    decoded = (validation.directory / "decodedsignature").read_bytes()
    assert decoded[26:43] == digest_set  # digestAlgorithms, where the sample has it
    signer = cms.ContentInfo.load(decoded)["content"]["signer_infos"][0]
    assert signer["digest_algorithm"].dump() == digest_set[2:]  # and the SignerInfo's
    exported = tmp_path / "ca"
    assert ca_export(process.state_dir, exported).returncode == 0
    chain = check_chain(validation.directory, exported / "root.pem")
    assert chain.returncode == 0, chain.stdout + chain.stderr
    assert chain.stdout.splitlines()[-1] == "signer.pem: OK"


def test_signer_is_the_only_certificate_and_no_ca(docs: Validation):
    verified(docs)
    certificates = x509.load_pem_x509_certificates((docs.directory / "signer.pem").read_bytes())
    assert len(certificates) == 1  # Azure sends only the leaf
    constraints = certificates[0].extensions.get_extension_for_class(x509.BasicConstraints).value
    assert not constraints.ca


def test_chain_runs_leaf_to_intermediate_to_root(docs: Validation, exported: Path):
    verified(docs)
    result = check_chain(docs.directory, exported / "root.pem")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5, result.stdout
    leaf_subject, leaf_issuer, intermediate_subject, intermediate_issuer, verify = lines
    assert leaf_subject == "subject=CN = westus.metadata.azure.com"
    assert leaf_issuer.removeprefix("issuer=") == intermediate_subject.removeprefix("subject=")
    root = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-issuer", "-in", str(exported / "root.pem")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    root_subject, root_issuer = (line.partition("=")[2] for line in root)
    assert intermediate_issuer.removeprefix("issuer=") == root_subject == root_issuer
    assert root_subject != intermediate_subject.removeprefix("subject=")
    assert verify == "signer.pem: OK"


def test_ca_export_writes_the_root_and_intermediate(server: ServerThread, exported: Path):
    assert sorted(p.name for p in exported.iterdir()) == [
        "intermediate.der",
        "intermediate.pem",
        "root.der",
        "root.pem",
    ]
    for name in ("root", "intermediate"):
        pem = (exported / f"{name}.pem").read_bytes()
        der = (exported / f"{name}.der").read_bytes()
        assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
        assert x509.load_pem_x509_certificate(pem) == x509.load_der_x509_certificate(der)
        assert der == admin(server).ca_certificate(name, "der")
        assert pem == admin(server).ca_certificate(name, "pem")
    root = x509.load_pem_x509_certificate((exported / "root.pem").read_bytes())
    assert root.subject == root.issuer
    root.verify_directly_issued_by(root)
    intermediate = x509.load_der_x509_certificate((exported / "intermediate.der").read_bytes())
    intermediate.verify_directly_issued_by(root)


def test_verify_fails_against_another_root(docs: Validation, tmp_path: Path):
    """openssl verify must really check the chain: a foreign root does not verify the leaf."""
    verified(docs)
    key = tmp_path / "key.pem"
    other = tmp_path / "other-root.pem"
    subject = "/C=US/O=azimds/CN=azimds Attestation Root CA"  # the same name, another key
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key)]
    subprocess.run(
        [*command, "-out", str(other), "-days", "1", "-subj", subject],
        capture_output=True,
        check=True,
    )
    result = check_chain(docs.directory, other)
    assert result.returncode != 0
    assert "signer.pem: OK" not in result.stdout


# --- the signing certificate's names ---------------------------------------------------------


def test_san_names_the_location_and_the_cloud(docs: Validation):
    verified(docs)
    assert san_names(docs.directory / "signer.pem") == [
        "westus.metadata.azure.com",
        "metadata.azure.com",
    ]


def test_other_cloud_and_location(gov: ServerThread, tmp_path: Path):
    validation = validate(gov.port, tmp_path / "docs")
    document = verified(validation)
    assert document["vmId"] == DEFAULT_VM_ID
    signer = validation.directory / "signer.pem"
    assert san_names(signer) == ["usgovvirginia.metadata.azure.us", "metadata.azure.us"]
    assert aia_uri(signer) == f"{gov.admin_url}/attestation/intermediate.cer"

    result = ca_export(gov.state_dir, tmp_path / "ca")
    assert result.returncode == 0, result.stderr
    chain = check_chain(validation.directory, tmp_path / "ca" / "root.pem")
    assert chain.returncode == 0, chain.stdout + chain.stderr
    assert chain.stdout.splitlines()[0] == "subject=CN = usgovvirginia.metadata.azure.us"
    assert chain.stdout.splitlines()[-1] == "signer.pem: OK"


def test_each_node_has_its_own_ca(docs: Validation, gov: ServerThread, tmp_path: Path):
    verified(docs)
    result = ca_export(gov.state_dir, tmp_path / "ca")
    assert result.returncode == 0, result.stderr
    chain = check_chain(docs.directory, tmp_path / "ca" / "root.pem")
    assert chain.returncode != 0
    assert "signer.pem: OK" not in chain.stdout


# --- tampering -------------------------------------------------------------------------------


def smime_verify(der: bytes, directory: Path) -> subprocess.CompletedProcess[str]:
    """The documentation's conversion and verification, on the given DER."""
    (directory / "decodedsignature").write_bytes(der)
    return bash(
        "openssl pkcs7 -in decodedsignature -inform DER -out sign.pk7\n"
        "openssl smime -verify -in sign.pk7 -inform pem -noverify\n",
        directory,
    )


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_untampered_signature_verifies(server: ServerThread, tmp_path: Path):
    result = smime_verify(signature_der(server.port), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Verification successful" in result.stderr


def test_tampered_signature_value_fails(server: ServerThread, tmp_path: Path):
    der = signature_der(server.port)
    # The SignerInfo's RSA signature (2048 bits) is the last element of the structure.
    result = smime_verify(flip(der, len(der) - 100), tmp_path)
    assert result.returncode != 0
    assert "Verification successful" not in result.stderr


def test_tampered_content_fails(server: ServerThread, tmp_path: Path):
    der = signature_der(server.port)
    where = der.index(DEFAULT_VM_ID.encode())
    result = smime_verify(flip(der, where), tmp_path)  # '0' -> '1' in the vmId
    assert result.returncode != 0
    assert "Verification successful" not in result.stderr
    assert DEFAULT_VM_ID not in result.stdout


# --- nonce -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "nonce",
    [
        "1234567890",  # the documentation's 10 digits
        "Az09-_bcdefghijklmnopqrstuvwxyzQ",  # 32 base64url characters, as Teleport sends
    ],
)
def test_nonce_is_echoed_in_the_signed_content(server: ServerThread, tmp_path: Path, nonce: str):
    assert len(nonce) <= 32
    document = verified(validate(server.port, tmp_path, f"&nonce={nonce}"))
    assert document["nonce"] == nonce
    assert document["vmId"] == DEFAULT_VM_ID


def test_nonce_over_32_characters_is_refused(server: ServerThread):
    nonce = "Az09-_bcdefghijklmnopqrstuvwxyzQ3"
    assert len(nonce) == 33
    reply = get(server.port, f"{DOCUMENT}?api-version=2020-09-01&nonce={nonce}")
    assert reply.status == 400
    assert reply.headers["content-type"] == JSON
    assert reply.body == (
        b'{ "error": "Parameter value is not allowed, or parameter value \\"'
        + nonce.encode()
        + b'\\" is not allowed for parameter \\"nonce\\". Please fix the request and retry." }'
    )
