"""``azimds vm ...`` driving a running node, as an operator would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ServerThread, node_fixture
from tests.http import get

# The node in process; the CLI under test runs as a process of its own.
node = node_fixture("--store", "memory:", scope="module")


def azimds(
    node: ServerThread, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "azimds", "vm", "--state-dir", str(node.state_dir), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=30,
    )


def test_list_is_a_readable_table(node: ServerThread) -> None:
    result = azimds(node, "list")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "VMID", "ADDRESSES", "LOCATION", "SIZE", "STATE"]
    assert any(
        row.split()[:2] == ["examplevmname", "02aab8a4-74ef-476e-8182-f6d2ba4166a6"] for row in rows
    )


def test_add_set_patch_show_rm(node: ServerThread, tmp_path: Path) -> None:
    added = azimds(
        node, "add", "--name", "cli-vm", "--ip", "10.8.0.4", "--set", "compute.location=uksouth"
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added VM cli-vm (vmId ")

    assert azimds(node, "set", "cli-vm", "compute.zone=2", "compute.tags.env=ci").returncode == 0
    patch = tmp_path / "patch.yaml"
    patch.write_text("compute:\n  vmSize: Standard_D2s_v5\n")
    assert azimds(node, "patch", "cli-vm", str(patch)).returncode == 0
    assert (
        azimds(node, "patch", "cli-vm", "-", stdin='{"compute": {"osType": "Linux"}}').returncode
        == 0
    )

    shown = json.loads(azimds(node, "show", "cli-vm").stdout)
    compute = shown["compute"]
    assert (compute["location"], compute["zone"], compute["vmSize"], compute["osType"]) == (
        "uksouth", "2", "Standard_D2s_v5", "Linux",
    )  # fmt: skip
    assert compute["tagsList"] == [{"name": "env", "value": "ci"}]
    assert "tags" not in compute  # stored as the list only; tags is derived when served
    listed = json.loads(azimds(node, "list", "--json").stdout)
    assert "cli-vm" in [vm["name"] for vm in listed["vms"]]

    removed = azimds(node, "rm", "cli-vm")
    assert (removed.returncode, removed.stdout) == (0, "removed VM cli-vm\n")
    assert "cli-vm" not in azimds(node, "list").stdout


def test_add_from_a_file(node: ServerThread, tmp_path: Path) -> None:
    description = tmp_path / "vm.yaml"
    description.write_text("compute: {name: from-file, vmSize: Standard_B1s}\n")
    result = azimds(node, "add", str(description), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["compute"]["vmSize"] == "Standard_B1s"


def test_set_changes_what_the_guest_sees(node: ServerThread) -> None:
    assert azimds(node, "set", "examplevmname", "compute.location=brazilsouth").returncode == 0
    reply = get(node.port, "/metadata/instance/compute/location?api-version=2021-02-01&format=text")
    assert reply.body == b"brazilsouth"


def test_set_adds_and_removes_single_tags(node: ServerThread) -> None:
    """The example VM's tags are baz:bash;foo:bar: one tag changes, the others stay."""
    assert (
        azimds(
            node, "set", "examplevmname", "compute.tags.env=dev", "compute.tags.foo=null"
        ).returncode
        == 0
    )
    reply = get(node.port, "/metadata/instance/compute/tags?api-version=2021-02-01&format=text")
    assert reply.body == b"baz:bash;env:dev"


def test_set_replaces_a_list_given_as_json(node: ServerThread) -> None:
    """A merge patch replaces a list whole; `:=` gives the new list as JSON."""
    public_keys = [{"path": "/home/azureuser/.ssh/authorized_keys", "keyData": "ssh-rsa AAAAB3 me"}]
    changed = azimds(node, "set", "examplevmname", f"compute.publicKeys:={json.dumps(public_keys)}")
    assert changed.returncode == 0, changed.stderr
    reply = get(node.port, "/metadata/instance/compute/publicKeys?api-version=2021-02-01")
    assert json.loads(reply.body) == public_keys
    not_json = azimds(node, "set", "examplevmname", "compute.publicKeys:=[")
    assert not_json.returncode == 2
    assert "the value after := is not JSON" in not_json.stderr


def test_errors_are_clear(node: ServerThread, tmp_path: Path) -> None:
    missing = azimds(node, "show", "no-such-vm")
    assert missing.returncode == 1
    assert "Error: 404 not_found: no VM with vmId or name 'no-such-vm'" in missing.stderr
    invalid = azimds(node, "set", "examplevmname", "compute.nosuch=1")
    assert invalid.returncode == 1
    assert (
        "400 invalid: unknown field" in invalid.stderr and "(vm.compute.nosuch)" in invalid.stderr
    )
    bad = azimds(node, "set", "examplevmname", "novalue")
    assert bad.returncode == 2 and "is not PATH=VALUE" in bad.stderr
    nowhere = subprocess.run(
        [sys.executable, "-m", "azimds", "vm", "--state-dir", str(tmp_path), "list"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert nowhere.returncode == 1
    assert f"no running azimds found in {tmp_path}" in nowhere.stderr


def test_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "azimds", "vm", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for word in ("list", "show", "add", "set", "patch", "rm", "--state-dir"):
        assert word in result.stdout
