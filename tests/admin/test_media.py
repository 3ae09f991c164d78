"""The provisioning media through the control plane; the admin password it alone shows."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pycdlib
import pytest

from azimds.fleet.ovf import ovf_env
from azimds.fleet.vm import example_vm
from tests.admin.support import admin, new_vm, refused
from tests.conftest import ServerThread, node_fixture
from tests.http import get

node = node_fixture("--store", "memory:", scope="module")
SECRET = "correct horse"


@pytest.fixture(scope="module")
def with_password(node: ServerThread) -> str:
    vm = new_vm("media-vm", "10.9.0.4", osProfile={"adminUsername": "u", "adminPassword": SECRET})
    return str(admin(node).create_vm(vm)["compute"]["vmId"])


def test_xml_is_the_rendering(node: ServerThread) -> None:
    answer = admin(node).send("GET", "/v1/vms/examplevmname/media/ovf-env.xml")
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/xml"
    assert answer.body == ovf_env(example_vm())


def test_iso_holds_the_xml(node: ServerThread) -> None:
    answer = admin(node).send("GET", "/v1/vms/examplevmname/media")
    assert answer.headers["content-type"] == "application/x-iso9660-image"
    image = pycdlib.PyCdlib()
    image.open_fp(io.BytesIO(answer.body))
    out = io.BytesIO()
    image.get_file_from_iso_fp(out, udf_path="/ovf-env.xml")
    image.close()
    assert out.getvalue() == ovf_env(example_vm())


def test_unknown_vm(node: ServerThread) -> None:
    assert refused(admin(node).media, "no-such-vm").status == 404


def test_the_password_only_in_the_media(node: ServerThread, with_password: str) -> None:
    client = admin(node)
    assert SECRET.encode() in client.media(with_password, "xml")
    assert client.vm(with_password)["compute"]["osProfile"]["adminPassword"] == "***"
    changed = client.patch_vm(with_password, {"compute": {"location": "westus"}})
    assert changed["compute"]["osProfile"]["adminPassword"] == "***"
    assert SECRET.encode() in client.media(with_password, "xml")  # a patch keeps it
    shown = refused(client.replace_vm, with_password, client.vm(with_password))
    assert (shown.status, shown.field) == (400, "vm.compute.osProfile.adminPassword")
    # Not in the instance document at any version (the example VM is the one IMDS serves
    # without source-ip mode: give it a password too).
    client.patch_vm("examplevmname", {"compute": {"osProfile": {"adminPassword": SECRET}}})
    try:
        for version in ("2020-07-15", "2025-04-07"):
            reply = get(node.port, f"/metadata/instance?api-version={version}")
            assert b'"osProfile"' in reply.body and SECRET.encode() not in reply.body
            assert b"adminPassword" not in reply.body
    finally:
        client.patch_vm("examplevmname", {"compute": {"osProfile": {"adminPassword": None}}})


@pytest.mark.skipif(
    shutil.which("bsdtar") is None,
    reason="bsdtar is not installed (Debian libarchive-tools; .ci/run installs it)",
)
def test_bsdtar_reads_the_iso(node: ServerThread, tmp_path: Path) -> None:
    image = tmp_path / "media.iso"
    image.write_bytes(admin(node).media("examplevmname"))
    listed = subprocess.run(["bsdtar", "-tf", str(image)], capture_output=True, check=True)
    assert b"ovf-env.xml" in listed.stdout.split()
    read = subprocess.run(
        ["bsdtar", "-xOf", str(image), "ovf-env.xml"], capture_output=True, check=True
    )
    assert read.stdout == ovf_env(example_vm())
