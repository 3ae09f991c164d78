"""The provisioning media: ovf-env.xml, as Azure writes it for a new Linux VM, and the CD-ROM
image that carries it.

Azure attaches a CD-ROM holding ``ovf-env.xml`` to a VM's first boot; cloud-init, WALinuxAgent
and azure-init read the admin user, password, SSH keys, host name and custom data from it
(docs/provisioning-media.md). Both functions are pure: they return bytes and write nothing.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

import pycdlib

from azimds.fleet.vm import VM

OVF = "http://schemas.dmtf.org/ovf/environment/1"
WA = "http://schemas.microsoft.com/windowsazure"
# The prefix Azure's documents give the windowsazure namespace (ElementTree's registry is
# process-wide; without it the document says ns1:, which the agents read as well).
ET.register_namespace("wa", WA)

MEDIA_NAME = "ovf-env.xml"
ISO_MEDIA = "application/x-iso9660-image"
XML_MEDIA = "application/xml"


def _add(parent: ET.Element, name: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, f"{{{WA}}}{name}")
    element.text = text
    return element


def _disable_password_authentication(os_profile: Mapping[str, Any], password: str) -> str:
    """The VM's setting, else Azure's default: password login only when a password is set."""
    given = str(os_profile["disablePasswordAuthentication"]).lower()
    if given in ("true", "false"):
        return given
    return "false" if password else "true"


def ovf_env(vm: VM) -> bytes:
    """The VM's ovf-env.xml (UTF-8, with its XML declaration).

    Elements in the order of Azure's own documents (WALinuxAgent's tests/data/ovf-env.xml):
    optional ones (UserPassword, CustomData) only when the VM has them. Each key's
    Fingerprint is empty: on Azure it is the thumbprint of a certificate in the goal state,
    and every agent installs a key from its Value when it has one.
    """
    compute = vm.document["compute"]
    os_profile = compute["osProfile"]
    password = str(os_profile["adminPassword"])
    root = ET.Element(f"{{{OVF}}}Environment")
    provisioning = _add(root, "ProvisioningSection")
    _add(provisioning, "Version", "1.0")
    linux = _add(provisioning, "LinuxProvisioningConfigurationSet")
    _add(linux, "ConfigurationSetType", "LinuxProvisioningConfiguration")
    _add(linux, "HostName", os_profile["computerName"] or compute["name"])
    _add(linux, "UserName", os_profile["adminUsername"])
    if password:
        _add(linux, "UserPassword", password)
    _add(
        linux,
        "DisableSshPasswordAuthentication",
        _disable_password_authentication(os_profile, password),
    )
    if compute["publicKeys"]:
        keys = _add(_add(linux, "SSH"), "PublicKeys")
        for key in compute["publicKeys"]:
            entry = _add(keys, "PublicKey")
            _add(entry, "Fingerprint")
            _add(entry, "Path", key["path"])
            _add(entry, "Value", key["keyData"])
    if compute["customData"]:
        # Stored as given, base64 as Azure's API takes it; the media carries it so.
        _add(linux, "CustomData", compute["customData"])
    platform = _add(root, "PlatformSettingsSection")
    _add(platform, "Version", "1.0")
    settings = _add(platform, "PlatformSettings")
    _add(settings, "ProvisionGuestAgent", "true")
    _add(settings, "PreprovisionedVm", "false")
    ET.indent(root)
    text: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True, default_namespace=OVF)
    return text + b"\n"


def iso_image(vm: VM) -> bytes:
    """A CD-ROM image holding the VM's ovf-env.xml at its root, readable as UDF 2.60 and as
    ISO 9660 (with Rock Ridge and Joliet names, so every reader sees ``ovf-env.xml``), as
    ``genisoimage -udf`` makes it. No volume label: no agent looks for one."""
    data = ovf_env(vm)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, udf="2.60", joliet=3, rock_ridge="1.09")
    iso.add_fp(
        io.BytesIO(data),
        len(data),
        iso_path="/OVF_ENV.XML;1",
        rr_name=MEDIA_NAME,
        joliet_path=f"/{MEDIA_NAME}",
        udf_path=f"/{MEDIA_NAME}",
    )
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()
