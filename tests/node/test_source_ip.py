"""source-ip mode on loopback: each VM is one 127.x address, and sees only its own data."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from tests.admin.support import admin, new_vm, refused
from tests.conftest import ServerThread
from tests.http import get

# Two NICs: the first's first IP is the primary; a second IP and the second NIC are not.
TWO_NICS = {
    "compute": {"name": "vm-n", "vmId": "cccccccc-0000-0000-0000-000000000003"},
    "network": {
        "interface": [
            {"ipv4": {"ipAddress": [{"privateIpAddress": "127.0.10.21"},
                                    {"privateIpAddress": "127.0.10.22"}]}},
            {"ipv4": {"ipAddress": [{"privateIpAddress": "127.0.10.23"}]}},
        ]
    },
}  # fmt: skip
FLEET = {
    "vms": [
        new_vm("vm-a", "127.0.10.1", vmId="aaaaaaaa-0000-0000-0000-000000000001"),
        new_vm("vm-b", "127.0.10.2", vmId="bbbbbbbb-0000-0000-0000-000000000002"),
        TWO_NICS,
    ]
}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    fleet = tmp_path_factory.mktemp("fleet") / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(FLEET))
    process = ServerThread(
        "--caller-mode", "source-ip", "--fleet", str(fleet), "--store", "memory:"
    )
    yield process
    process.stop()


def name_seen_from(node: ServerThread, source: str) -> tuple[int, bytes]:
    target = "/metadata/instance/compute/name?api-version=2021-02-01&format=text"
    reply = get(node.port, target, source=source)
    return reply.status, reply.body


def test_each_vm_sees_its_own_document(node: ServerThread) -> None:
    assert name_seen_from(node, "127.0.10.1") == (200, b"vm-a")
    assert name_seen_from(node, "127.0.10.2") == (200, b"vm-b")
    document = get(node.port, "/metadata/instance?api-version=2021-02-01", source="127.0.10.1").body
    assert b"vm-b" not in document and b"127.0.10.2" not in document


def test_unknown_caller_is_refused_and_logged(node: ServerThread) -> None:
    reply = get(node.port, "/metadata/instance?api-version=2021-02-01", source="127.0.10.9")
    assert reply.status == 403
    assert json.loads(reply.body) == {
        "error": "Forbidden: the caller is not a known VM "
        "(no VM of this azimds node has the primary address 127.0.10.9)"
    }
    identity = get(node.port, "/metadata/identity/oauth2/token", source="127.0.10.9", metadata=None)
    assert identity.status == 403
    assert json.loads(identity.body)["error"] == "forbidden"
    assert any("127.0.10.9" in line for line in node.output)


def test_the_example_vm_is_not_declared_in_source_ip_mode(node: ServerThread) -> None:
    assert [vm["name"] for vm in admin(node).vms()["vms"]] == ["vm-a", "vm-b", "vm-n"]


def test_a_new_vm_is_served_at_its_address_at_once(node: ServerThread) -> None:
    admin(node).create_vm(new_vm("vm-c", "127.0.10.3"))
    assert name_seen_from(node, "127.0.10.3") == (200, b"vm-c")
    moved = {"network": new_vm("vm-c", "127.0.10.4")["network"]}
    admin(node).patch_vm("vm-c", moved)
    assert name_seen_from(node, "127.0.10.4") == (200, b"vm-c")
    assert name_seen_from(node, "127.0.10.3")[0] == 403


@pytest.mark.parametrize("source", ["127.0.10.22", "127.0.10.23"])
def test_only_the_primary_nics_primary_ip_is_answered(node: ServerThread, source: str) -> None:
    assert name_seen_from(node, "127.0.10.21") == (200, b"vm-n")
    reply = get(node.port, "/metadata/instance?api-version=2021-02-01", source=source)
    body = (
        b'{ "error": "Forbidden: the caller is not a known VM '
        b"(no VM of this azimds node has the primary address " + source.encode() + b')" }'
    )
    assert (reply.status, reply.body) == (403, body)
    assert reply.headers["content-type"] == "application/json; charset=utf-8"


def test_secondary_addresses_still_belong_to_their_vm(node: ServerThread) -> None:
    listed = {vm["name"]: vm["addresses"] for vm in admin(node).vms()["vms"]}
    assert listed["vm-n"] == ["127.0.10.21", "127.0.10.22", "127.0.10.23"]
    error = refused(lambda: admin(node).create_vm(new_vm("vm-x", "127.0.10.23")))
    assert error.status == 409, error
