"""The attestation CA over a node's life: restarts, a changed public URL, and its secrets."""

from __future__ import annotations

import base64
import binascii
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from cryptography.x509.oid import AuthorityInformationAccessOID

from tests.admin.support import admin
from tests.conftest import ServerProcess, ServerThread
from tests.guest.attested.tools import (
    DEFAULT_VM_ID,
    DOCUMENT,
    admin_get,
    bash,
    free_port,
    signature_der,
)
from tests.http import get


def served_leaf(port: int) -> x509.Certificate:
    """The signing certificate inside the attested document a guest gets."""
    data = cms.ContentInfo.load(signature_der(port))["content"]
    return x509.load_der_x509_certificate(data["certificates"][0].chosen.dump())


def aia(certificate: x509.Certificate) -> list[str]:
    access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    return [
        str(d.access_location.value)
        for d in access.value
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    ]


def snapshot(server: ServerThread) -> dict[str, bytes]:
    return {
        "root": admin(server).ca_certificate("root", "der"),
        "intermediate": admin(server).ca_certificate("intermediate", "der"),
        "leaf": served_leaf(server.port).public_bytes(Encoding.DER),
    }


def start(state_dir: Path, admin_port: int, *args: str) -> ServerThread:
    return ServerThread("--admin-listen", f"127.0.0.1:{admin_port}", *args, state_dir=state_dir)


def test_ca_and_leaf_survive_a_restart(tmp_path: Path):
    admin_port = free_port()  # the same control-plane URL, so the same AIA
    first = start(tmp_path, admin_port)
    try:
        before = snapshot(first)
    finally:
        first.stop()
    second = start(tmp_path, admin_port)
    try:
        after = snapshot(second)
        leaf = served_leaf(second.port)
        intermediate = x509.load_der_x509_certificate(after["intermediate"])
        leaf.verify_directly_issued_by(intermediate)
    finally:
        second.stop()
    assert after == before


def test_public_url_change_reissues_the_leaf_only(tmp_path: Path):
    old_port, new_port = free_port(), free_port()
    first = start(tmp_path, old_port, "--public-url", f"http://127.0.0.1:{old_port}")
    try:
        before = snapshot(first)
        old_leaf = served_leaf(first.port)
    finally:
        first.stop()
    assert aia(old_leaf) == [f"http://127.0.0.1:{old_port}/attestation/intermediate.cer"]

    second = start(tmp_path, new_port, "--public-url", f"http://127.0.0.1:{new_port}")
    try:
        after = snapshot(second)
        new_leaf = served_leaf(second.port)
        # The documentation's AIA fetch reaches the new URL and gets the same intermediate.
        fetched = bash(
            'curl -s -o intermediate.cer "$(openssl x509 -in signer.pem -text -noout'
            ' | grep " CA Issuers -" | awk -FURI: \'{print $2}\')"',
            _write(tmp_path / "aia", "signer.pem", new_leaf),
        )
        assert fetched.returncode == 0, fetched.stderr
        assert (tmp_path / "aia" / "intermediate.cer").read_bytes() == after["intermediate"]
    finally:
        second.stop()
    assert aia(new_leaf) == [f"http://127.0.0.1:{new_port}/attestation/intermediate.cer"]
    assert after["root"] == before["root"]
    assert after["intermediate"] == before["intermediate"]
    assert new_leaf.serial_number != old_leaf.serial_number
    assert new_leaf.public_key() != old_leaf.public_key()
    assert new_leaf.subject == old_leaf.subject
    san = x509.SubjectAlternativeName
    assert new_leaf.extensions.get_extension_for_class(san).value == (
        old_leaf.extensions.get_extension_for_class(san).value
    )
    new_leaf.verify_directly_issued_by(x509.load_der_x509_certificate(after["intermediate"]))


def _write(directory: Path, name: str, certificate: x509.Certificate) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pem = certificate.public_bytes(Encoding.PEM)
    (directory / name).write_bytes(pem)
    return directory


def stored_private_keys(state_dir: Path) -> list[rsa.RSAPrivateKey]:
    """The attestation private keys as the store keeps them."""
    with sqlite3.connect(state_dir / "azimds.db") as db:
        rows = db.execute(
            "SELECT body FROM objects WHERE kind IN ('attestation-ca', 'attestation-leaf')"
        ).fetchall()
    keys = []
    for (body,) in rows:
        key = load_pem_private_key(json.loads(body)["privateKey"].encode(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        keys.append(key)
    assert len(keys) == 3  # root, intermediate, one leaf (westus, azure.com)
    return keys


def secrets_of(key: rsa.RSAPrivateKey) -> list[bytes]:
    """The first 32 bytes of the private exponent and of each prime."""
    numbers = key.private_numbers()
    return [
        n.to_bytes((n.bit_length() + 7) // 8, "big")[:32] for n in (numbers.d, numbers.p, numbers.q)
    ]


def views(body: bytes) -> list[bytes]:
    """The body, and every long base64 run in it decoded (PEM, the PKCS#7, JWKs)."""
    text = body.replace(b"\\n", b"").replace(b"\n", b"")  # join PEM lines, even JSON-escaped
    text = re.sub(rb"-----[A-Z0-9 ]+-----", b" ", text)  # and drop their armour
    decoded = [body]
    for run in re.findall(rb"[A-Za-z0-9+/_-]{64,}", text):
        normal = run.replace(b"-", b"+").replace(b"_", b"/")
        try:
            decoded.append(base64.b64decode(normal + b"=" * (-len(normal) % 4)))
        except binascii.Error:
            decoded.append(base64.b64decode(normal[: len(normal) // 4 * 4]))
    return decoded


@pytest.fixture
def process() -> Iterator[ServerProcess]:
    """A node in a process of its own: what it prints is searched too."""
    node = ServerProcess()
    yield node
    node.stop()


def test_private_keys_never_leave_the_node(process: ServerProcess):
    secrets = [s for key in stored_private_keys(process.state_dir) for s in secrets_of(key)]
    answers: dict[str, bytes] = {}
    for path in (
        "/attestation/root.pem",
        "/attestation/root.cer",
        "/attestation/intermediate.pem",
        "/attestation/intermediate.cer",
        "/discovery/keys",
        "/common/.well-known/openid-configuration",
        "/openapi.json",
    ):
        answers[path] = admin_get(process, path)
    client = admin(process)
    for name, answer in (
        ("status", client.status()),
        ("vms", client.vms()),
        ("vm", client.vm(DEFAULT_VM_ID)),
        ("keys", client.signing_keys()),
    ):
        answers[name] = json.dumps(answer).encode()
    for target in (
        f"{DOCUMENT}?api-version=2020-09-01",
        "/metadata/instance?api-version=2021-02-01",
    ):
        reply = get(process.port, target)
        assert reply.status == 200
        answers[target] = reply.body
    answers["server output"] = (process.banner + "".join(process.output)).encode()
    for where, body in answers.items():
        assert b"PRIVATE KEY" not in body, where
        for view in views(body):
            for secret in secrets:
                assert secret not in view, where
    # The search looks at the right bytes: the certificates' public keys are found.
    public = server_public_modulus(answers["/attestation/root.cer"])
    assert any(public in view for view in views(answers["/attestation/root.pem"]))


def server_public_modulus(der: bytes) -> bytes:
    key = x509.load_der_x509_certificate(der).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    n = key.public_numbers().n
    return n.to_bytes((n.bit_length() + 7) // 8, "big")[:32]
