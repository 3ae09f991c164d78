"""ovf-env.xml and the media image from a VM, read as the agents read them: cloud-init's
OvfEnvXml finds every element namespace-qualified (``./wa:Name``); WALinuxAgent likewise."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pycdlib
import pytest

from azimds.fleet.ovf import iso_image, ovf_env
from azimds.fleet.schema import DocumentError
from azimds.fleet.vm import VM, build_vm, example_vm

NS = {
    "ovf": "http://schemas.dmtf.org/ovf/environment/1",
    "wa": "http://schemas.microsoft.com/windowsazure",
}
LINUX = "./wa:ProvisioningSection/wa:LinuxProvisioningConfigurationSet"
PLATFORM = "./wa:PlatformSettingsSection/wa:PlatformSettings"
DOCS = Path(__file__).parents[2] / "docs" / "provisioning-media.md"
# Needs escaping in XML; the password and customData of the full VM.
PASSWORD = "p<a>ss&'\"word"
CUSTOM_DATA = "I2Nsb3VkLWNvbmZpZwo="


def full_vm() -> VM:
    return build_vm(
        {
            "compute": {
                "name": "web-1",
                "osProfile": {
                    "adminUsername": "azureuser",
                    "computerName": "web-host",
                    "adminPassword": PASSWORD,
                },
                "publicKeys": [
                    {
                        "path": "/home/azureuser/.ssh/authorized_keys",
                        "keyData": "ssh-ed25519 AAAA a@b",
                    }
                ],
                "customData": CUSTOM_DATA,
            }
        }
    )


def parsed(data: bytes) -> ET.Element:
    root = ET.fromstring(data)
    assert root.tag == f"{{{NS['ovf']}}}Environment"
    return root


def text(root: ET.Element, path: str) -> str | None:
    found = root.findall(path, NS)
    assert len(found) == 1, path  # cloud-init refuses a repeated element
    return found[0].text


def test_the_example_vm() -> None:
    root = parsed(ovf_env(example_vm()))
    assert text(root, "./wa:ProvisioningSection/wa:Version") == "1.0"
    assert text(root, f"{LINUX}/wa:ConfigurationSetType") == "LinuxProvisioningConfiguration"
    assert text(root, f"{LINUX}/wa:HostName") == "examplevmname"
    assert text(root, f"{LINUX}/wa:UserName") == "admin"
    assert text(root, f"{LINUX}/wa:DisableSshPasswordAuthentication") == "true"
    assert root.find(f"{LINUX}/wa:UserPassword", NS) is None
    assert root.find(f"{LINUX}/wa:CustomData", NS) is None
    keys = root.findall(f"{LINUX}/wa:SSH/wa:PublicKeys/wa:PublicKey", NS)
    assert [(text(k, "./wa:Path"), text(k, "./wa:Value")) for k in keys] == [
        ("/home/user/.ssh/authorized_keys0", "ssh-rsa 0"),
        ("/home/user/.ssh/authorized_keys1", "ssh-rsa 1"),
    ]
    assert all(text(k, "./wa:Fingerprint") is None for k in keys)
    assert text(root, f"{PLATFORM}/wa:ProvisionGuestAgent") == "true"
    assert text(root, f"{PLATFORM}/wa:PreprovisionedVm") == "false"


def test_password_keys_and_custom_data() -> None:
    root = parsed(ovf_env(full_vm()))
    assert text(root, f"{LINUX}/wa:HostName") == "web-host"  # computerName before name
    assert text(root, f"{LINUX}/wa:UserName") == "azureuser"
    assert text(root, f"{LINUX}/wa:UserPassword") == PASSWORD
    # No setting given: password login only because a password is set.
    assert text(root, f"{LINUX}/wa:DisableSshPasswordAuthentication") == "false"
    assert text(root, f"{LINUX}/wa:CustomData") == CUSTOM_DATA
    key = root.find(f"{LINUX}/wa:SSH/wa:PublicKeys/wa:PublicKey", NS)
    assert key is not None and text(key, "./wa:Value") == "ssh-ed25519 AAAA a@b"
    # Azure's element order (WALinuxAgent's tests/data/ovf-env.xml).
    linux = root.find(LINUX, NS)
    assert linux is not None
    assert [child.tag.rpartition("}")[2] for child in linux] == [
        "ConfigurationSetType",
        "HostName",
        "UserName",
        "UserPassword",
        "DisableSshPasswordAuthentication",
        "SSH",
        "CustomData",
    ]


def test_the_documented_example_is_the_example_vms() -> None:
    documented = DOCS.read_text("utf-8").split("```xml\n", 1)[1].split("```", 1)[0]
    assert documented.encode() == ovf_env(example_vm())


def test_the_mask_is_no_password() -> None:
    with pytest.raises(DocumentError, match="adminPassword"):
        build_vm({"compute": {"osProfile": {"adminPassword": "***"}}})


def test_the_image_holds_the_same_bytes_in_both_trees() -> None:
    data = ovf_env(full_vm())
    image = pycdlib.PyCdlib()
    image.open_fp(io.BytesIO(iso_image(full_vm())))
    try:
        assert image.has_udf() and image.has_rock_ridge() and image.has_joliet()
        for where in (
            {"udf_path": "/ovf-env.xml"},
            {"iso_path": "/OVF_ENV.XML;1"},
            {"rr_path": "/ovf-env.xml"},
            {"joliet_path": "/ovf-env.xml"},
        ):
            out = io.BytesIO()
            image.get_file_from_iso_fp(out, **where)
            assert out.getvalue() == data, where
    finally:
        image.close()
