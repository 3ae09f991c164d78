"""What IMDS serves of what a VM's description stores: tags derived from tagsList, customData
never, Azure's zero values, Ultra-only fields (docs/behaviour.md, "Stored and served")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.admin.support import admin, refused
from tests.conftest import ServerThread, node_fixture
from tests.http import Reply, get

VM_ID = "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
JSON = "application/json; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
SEMICOLON_TAGS = [{"name": "a", "value": "x;y"}, {"name": "b", "value": "z"}]
SEMICOLON_TAGS_JSON = b'[{"name":"a","value":"x;y"},{"name":"b","value":"z"}]'
TEXT_NOW = "api-version=2025-04-07&format=text"


node = node_fixture("--store", "memory:")


def patch(node: ServerThread, changes: dict[str, Any]) -> dict[str, Any]:
    return admin(node).patch_vm(VM_ID, changes)


def served(node: ServerThread, path: str, query: str = "api-version=2025-04-07") -> Reply:
    return get(node.port, f"/metadata/instance{path}?{query}")


def assert_json(reply: Reply, body: bytes) -> None:
    assert (reply.status, reply.body) == (200, body)
    assert reply.headers["content-type"] == JSON
    assert reply.headers["content-length"] == str(len(body))


def assert_text(reply: Reply, body: bytes) -> None:
    assert (reply.status, reply.body) == (200, body)
    assert reply.headers["content-type"] == TEXT


# --- tags: tagsList is stored, tags derived ---------------------------------------------------


def test_merging_a_tag_keeps_values_holding_semicolons(node: ServerThread) -> None:
    patch(node, {"compute": {"tagsList": SEMICOLON_TAGS}})
    patch(node, {"compute": {"tags": {"env": "prod"}}})
    assert_json(
        served(node, "/compute/tagsList"),
        b'[{"name":"a","value":"x;y"},{"name":"b","value":"z"},{"name":"env","value":"prod"}]',
    )
    assert_text(served(node, "/compute/tags", TEXT_NOW), b"a:x;y;b:z;env:prod")
    # Versions before tagsList (2019-06-04) show the same tags as the string.
    assert_text(
        served(node, "/compute/tags", "api-version=2017-08-01&format=text"), b"a:x;y;b:z;env:prod"
    )
    stored = admin(node).vm(VM_ID)["compute"]
    assert "tags" not in stored
    assert stored["tagsList"][0] == {"name": "a", "value": "x;y"}


def test_a_merged_null_removes_one_tag_and_a_change_keeps_its_place(node: ServerThread) -> None:
    patch(node, {"compute": {"tagsList": [*SEMICOLON_TAGS, {"name": "c", "value": "1"}]}})
    patch(node, {"compute": {"tags": {"b": None, "a": "w;v"}}})
    assert_json(
        served(node, "/compute/tagsList"),
        b'[{"name":"a","value":"w;v"},{"name":"c","value":"1"}]',
    )


def test_tags_as_a_string_replace_the_list(node: ServerThread) -> None:
    patch(node, {"compute": {"tagsList": SEMICOLON_TAGS}})
    patch(node, {"compute": {"tags": "k:v:w;n:"}})
    assert_json(
        served(node, "/compute/tagsList"),
        b'[{"name":"k","value":"v:w"},{"name":"n","value":""}]',
    )
    patch(node, {"compute": {"tags": None}})
    assert_json(served(node, "/compute/tagsList"), b"[]")
    assert_text(served(node, "/compute/tags", TEXT_NOW), b"")


def test_tags_that_disagree_with_tags_list_are_refused(node: ServerThread) -> None:
    error = refused(patch, node, {"compute": {"tags": "a:1", "tagsList": SEMICOLON_TAGS}})
    assert (error.status, error.field) == (400, "vm.compute.tags")
    assert "disagrees with tagsList" in error.message
    # The string a real answer carries beside the list agrees, ';' in values and all.
    both = {"tags": "a:x;y;b:z", "tagsList": SEMICOLON_TAGS}
    patch(node, {"compute": both})
    assert_json(served(node, "/compute/tagsList"), SEMICOLON_TAGS_JSON)


def test_a_put_with_tags_only_is_parsed_into_the_list(node: ServerThread) -> None:
    description = admin(node).vm(VM_ID)
    description["compute"].pop("tagsList")
    description["compute"]["tags"] = {"owner": "ops", "tier": "1"}
    admin(node).replace_vm(VM_ID, description)
    assert_text(
        served(node, "/compute/tags", "api-version=2021-02-01&format=text"), b"owner:ops;tier:1"
    )


@pytest.fixture(scope="module")
def declared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A config file's VM with a tag value holding ';', a customData, no resource disk and a
    non-Ultra disk given throttle values."""
    config: Path = tmp_path_factory.mktemp("declared") / "vm.yaml"
    disk = {"name": "premium", "lun": 0, "isUltraDisk": "false", "diskSizeGB": 128}
    disk |= {"bytesPerSecondThrottle": 979202048, "opsPerSecondThrottle": 65280}
    vm = {
        "compute": {
            "tagsList": SEMICOLON_TAGS,
            "customData": "I2Nsb3VkLWNvbmZpZwo=",
            "storageProfile": {"dataDisks": [disk], "resourceDisk": None},
        }
    }
    config.write_text(yaml.safe_dump({"vm": vm}))
    process = ServerThread("--config", str(config), "--store", "memory:")
    yield process
    process.stop()


def test_a_config_files_tags_list_is_served_exactly(declared: ServerThread) -> None:
    assert_json(served(declared, "/compute/tagsList"), SEMICOLON_TAGS_JSON)
    assert_text(served(declared, "/compute/tags", TEXT_NOW), b"a:x;y;b:z")


# --- customData: stored, never served ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "body"),
    [
        ("/compute/customData", TEXT_NOW, b""),
        ("/compute/customData", "api-version=2019-02-01&format=text", b""),
    ],
)
def test_custom_data_leaf_is_empty(
    declared: ServerThread, path: str, query: str, body: bytes
) -> None:
    assert_text(served(declared, path, query), body)


@pytest.mark.parametrize("version", ["2019-02-01", "2021-02-01", "2025-04-07"])
def test_custom_data_is_empty_in_every_document(declared: ServerThread, version: str) -> None:
    for path in ("", "/compute"):
        reply = served(declared, path, f"api-version={version}")
        assert reply.status == 200
        assert b'"customData":"",' in reply.body
        assert b"I2Nsb3Vk" not in reply.body


def test_custom_data_set_by_the_control_plane_is_stored_not_served(node: ServerThread) -> None:
    patch(node, {"compute": {"customData": "c2VjcmV0"}})
    assert admin(node).vm(VM_ID)["compute"]["customData"] == "c2VjcmV0"
    assert_text(served(node, "/compute/customData", TEXT_NOW), b"")
    document = served(node, "", "api-version=2025-04-07&extended=true")
    assert b'"customData":""' in document.body and b"c2VjcmV0" not in document.body


# --- zero values and Ultra-only fields --------------------------------------------------------


def test_no_resource_disk_is_size_0(declared: ServerThread) -> None:
    assert_json(served(declared, "/compute/storageProfile/resourceDisk"), b'{"size":"0"}')
    assert_text(
        served(declared, "/compute/storageProfile/resourceDisk/size", TEXT_NOW),
        b"0",
    )


def test_an_empty_resource_disk_size_is_0(node: ServerThread) -> None:
    patch(node, {"compute": {"storageProfile": {"resourceDisk": {"size": ""}}}})
    assert_json(served(node, "/compute/storageProfile/resourceDisk"), b'{"size":"0"}')


def test_throttles_only_on_ultra_disks(declared: ServerThread) -> None:
    assert_json(
        served(declared, "/compute/storageProfile/dataDisks/0"),
        b'{"bytesPerSecondThrottle":"","caching":"","createOption":"","diffDiskSettings":'
        b'{"option":""},"diskCapacityBytes":"","diskSizeGB":"128","encryptionSettings":'
        b'{"diskEncryptionKey":{"secretUrl":"","sourceVault":{"id":""}},"enabled":"",'
        b'"keyEncryptionKey":{"keyUrl":"","sourceVault":{"id":""}}},"image":{"uri":""},'
        b'"isSharedDisk":"","isUltraDisk":"false","lun":"0","managedDisk":{"id":"",'
        b'"storageAccountType":""},"name":"premium","opsPerSecondThrottle":"","osType":"",'
        b'"vhd":{"uri":""},"writeAcceleratorEnabled":""}',
    )


def test_an_ultra_disk_keeps_its_throttles(node: ServerThread) -> None:
    # The example VM's data disk is Ultra.
    reply = served(node, "/compute/storageProfile/dataDisks/0/opsPerSecondThrottle", TEXT_NOW)
    assert_text(reply, b"65280")
