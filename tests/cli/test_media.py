"""``azimds vm media``: the provisioning media written to a file, owner-only."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pycdlib

from azimds.fleet.ovf import ovf_env
from azimds.fleet.vm import example_vm
from tests.cli.test_vm import azimds
from tests.conftest import ServerThread, node_fixture

node = node_fixture("--store", "memory:", scope="module")


def test_iso_by_default(node: ServerThread, tmp_path: Path) -> None:
    output = tmp_path / "media.iso"
    result = azimds(node, "media", "examplevmname", "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {output}\n"
    assert stat.S_IMODE(output.stat().st_mode) == 0o600  # it may hold the admin password
    image = pycdlib.PyCdlib()
    image.open_fp(io.BytesIO(output.read_bytes()))
    read = io.BytesIO()
    image.get_file_from_iso_fp(read, udf_path="/ovf-env.xml")
    image.close()
    assert read.getvalue() == ovf_env(example_vm())


def test_xml(node: ServerThread, tmp_path: Path) -> None:
    output = tmp_path / "ovf-env.xml"
    result = azimds(node, "media", "examplevmname", "-o", str(output), "--format", "xml")
    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == ovf_env(example_vm())


def test_unknown_vm(node: ServerThread, tmp_path: Path) -> None:
    result = azimds(node, "media", "nope", "--output", str(tmp_path / "x.iso"))
    assert result.returncode != 0 and "404" in result.stderr
    assert not (tmp_path / "x.iso").exists()
