"""``/metadata/instance`` and ``/metadata/versions`` against a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import VECTORS, ServerThread
from tests.http import get

VM_ID = "02aab8a4-74ef-476e-8182-f6d2ba4166a6"


def compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def instance(port: int, path: str = "", query: str = "api-version=2021-02-01") -> object:
    reply = get(port, f"/metadata/instance{path}?{query}")
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    return json.loads(reply.body)


# --- /metadata/versions ----------------------------------------------------------------------


def test_versions_lists_every_version_ascending(port: int) -> None:
    reply = get(port, "/metadata/versions")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    versions = json.loads(reply.body)["apiVersions"]
    assert versions[0] == "2017-03-01"
    assert versions[-1] == "2025-04-07"
    assert versions == sorted(versions)
    assert len(versions) == 35
    assert {"2019-06-04", "2021-12-13", "2023-07-01", "2024-07-17"} <= set(versions)
    assert reply.body == compact({"apiVersions": versions})  # compact, no trailing newline


def test_versions_ignores_api_version_and_accepts_format_json(port: int) -> None:
    plain = get(port, "/metadata/versions").body
    assert get(port, "/metadata/versions?api-version=2021-02-01&format=json").body == plain
    assert get(port, "/metadata/versions/").body == plain


# --- version shaping -------------------------------------------------------------------------


def test_2017_04_02_shows_only_the_first_fields(port: int) -> None:
    doc = instance(port, query="api-version=2017-04-02")
    assert list(doc) == ["compute", "network"]
    # The 2017-04-02 field list, from wire samples of the time (reference section 3).
    assert list(doc["compute"]) == [
        "location", "name", "offer", "osType", "platformFaultDomain", "platformUpdateDomain",
        "publisher", "sku", "version", "vmId", "vmSize",
    ]  # fmt: skip


def test_2017_08_01_adds_four_fields(port: int) -> None:
    old = set(instance(port, query="api-version=2017-04-02")["compute"])
    new = set(instance(port, query="api-version=2017-08-01")["compute"])
    assert new - old == {"placementGroupId", "resourceGroupName", "subscriptionId", "tags"}


@pytest.mark.parametrize(
    ("path", "introduced", "before"),
    [
        ("/compute/azEnvironment", "2018-10-01", "2018-04-02"),
        ("/compute/plan", "2018-04-02", "2018-02-01"),
        ("/compute/storageProfile", "2019-06-01", "2019-04-30"),
        ("/compute/tagsList", "2019-06-04", "2019-06-01"),
        ("/compute/userData", "2021-01-01", "2020-12-01"),
        ("/compute/osProfile/disablePasswordAuthentication", "2020-10-01", "2020-09-01"),
        ("/compute/storageProfile/resourceDisk", "2021-02-01", "2021-01-01"),
        ("/compute/storageProfile/dataDisks/0/isUltraDisk", "2021-05-01", "2021-03-01"),
        (
            "/compute/storageProfile/osDisk/encryptionSettings/diskEncryptionKey",
            "2021-11-01",
            "2021-10-01",
        ),
        ("/compute/securityProfile/securityType", "2021-12-13", "2021-11-15"),
        ("/compute/storageProfile/imageReference/exactVersion", "2023-07-01", "2021-12-13"),
        ("/compute/host", "2021-11-15", "2021-11-01"),
    ],
)
def test_field_appears_from_its_version(port: int, path: str, introduced: str, before: str) -> None:
    new = get(port, f"/metadata/instance{path}?api-version={introduced}&format=text")
    old = get(port, f"/metadata/instance{path}?api-version={before}&format=text")
    assert new.status == 200
    assert old.status == 404


def test_every_primitive_is_a_string_and_keys_are_ordinal(port: int) -> None:
    doc = instance(port, query="api-version=2025-04-07")

    def check(node: object) -> None:
        if isinstance(node, dict):
            assert list(node) == sorted(node)
            for child in node.values():
                check(child)
        elif isinstance(node, list):
            for child in node:
                check(child)
        else:
            assert isinstance(node, str)

    check(doc)


def test_fields_missing_from_the_example_are_empty_strings(port: int) -> None:
    compute = instance(port, "/compute", "api-version=2025-04-07")
    assert compute["customData"] == ""
    assert compute["userData"] == ""
    assert compute["host"] == {"id": ""}
    assert compute["isVmInStandbyPool"] == ""
    assert "physicalZone" not in compute  # omitted while empty, as real answers do


# --- extended=true ---------------------------------------------------------------------------


def test_extended_comes_after_network(port: int) -> None:
    reply = get(port, "/metadata/instance?api-version=2021-08-01&extended=true")
    doc = json.loads(reply.body)
    assert list(doc) == ["compute", "network", "extended"]
    assert reply.body.endswith(b',"extended":{"compute":{"hasCustomData":false,"ppsType":"None"}}}')


def test_extended_is_walkable_and_text_renders_booleans(port: int) -> None:
    query = "api-version=2021-08-01&extended=true&format=text"
    assert get(port, f"/metadata/instance/extended/compute/hasCustomData?{query}").body == b"false"
    assert (
        get(port, f"/metadata/instance/extended/compute?{query}").body == b"hasCustomData\nppsType"
    )


def test_extended_false_adds_nothing(port: int) -> None:
    assert "extended" not in instance(port, query="api-version=2021-08-01&extended=false")


# --- route filtering and text ---------------------------------------------------------------


def test_leaf_as_text(port: int) -> None:
    reply = get(port, "/metadata/instance/compute/vmId?api-version=2017-08-01&format=text")
    assert (reply.status, reply.body) == (200, VM_ID.encode())
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"


def test_tags_as_text(port: int) -> None:
    reply = get(port, "/metadata/instance/compute/tags?api-version=2017-08-01&format=text")
    assert reply.body == b"baz:bash;foo:bar"


def test_listing_of_the_root(port: int) -> None:
    reply = get(port, "/metadata/instance?api-version=2017-08-01&format=text")
    assert reply.body == b"compute/\nnetwork/"


def test_listing_marks_containers_only(port: int) -> None:
    """Leaf children without '/', containers with it, in key order (reference section 12)."""
    reply = get(port, "/metadata/instance/network/interface/0?api-version=2017-04-02&format=text")
    assert reply.body == b"ipv4/\nipv6/\nmacAddress"


def test_listing_of_arrays_by_index(port: int) -> None:
    base = "/metadata/instance/network/interface"
    assert get(port, f"{base}?api-version=2017-04-02&format=text").body == b"0/"
    reply = get(port, f"{base}/0/ipv4/ipAddress?api-version=2017-04-02&format=text")
    assert reply.body == b"0/"  # SUSE cloud-netconfig appends 'privateIpAddress' to this item


def test_listing_of_an_empty_array_is_empty(port: int) -> None:
    path = "/metadata/instance/network/interface/0/ipv6/ipAddress"
    reply = get(port, f"{path}?api-version=2017-04-02&format=text")
    assert (reply.status, reply.body) == (200, b"")


def test_tags_list_is_a_bare_array(port: int) -> None:
    assert instance(port, "/compute/tagsList", "api-version=2019-06-04") == [
        {"name": "baz", "value": "bash"},
        {"name": "foo", "value": "bar"},
    ]


def test_deep_leaf_from_the_documentation(port: int) -> None:
    path = "/metadata/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress"
    assert get(port, f"{path}?api-version=2017-08-01&format=text").body == b"10.144.133.132"


@pytest.mark.parametrize(
    "target",
    [
        "/metadata/instance/?api-version=2021-02-01",
        "/metadata/instance/compute/?api-version=2021-02-01",
        "/METADATA/instance/compute?api-version=2021-02-01",
        "/Metadata/instance/compute?api-version=2021-02-01",
    ],
)
def test_trailing_slash_and_prefix_case(port: int, target: str) -> None:
    reply = get(port, target)
    assert reply.status == 200
    document = json.loads(reply.body)
    assert (document["vmId"] if "compute" in target else document["compute"]["vmId"]) == VM_ID


@pytest.mark.parametrize(
    "query",
    [
        "api-version=2021-02-01&format=text",
        "api%2Dversion=2021%2D02%2D01&format=%74ext",
        "format=text&api-version=2021-02-01",
        "api-version=2021-02-01&format=TEXT&unknown=1",
    ],
)
def test_raw_and_percent_encoded_queries(port: int, query: str) -> None:
    assert get(port, f"/metadata/instance/compute/vmId?{query}").body == VM_ID.encode()


# --- fidelity against a real answer ----------------------------------------------------------


@pytest.fixture(scope="module")
def sample_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A VM described by a real 2023-11-15 extended=true answer."""
    sample = json.loads((VECTORS / "instance-2023-11-15-extended.json").read_text())
    config = tmp_path_factory.mktemp("sample") / "vm.json"
    config.write_text(json.dumps({"vm": sample}))
    process = ServerThread("--config", str(config))
    yield process
    process.stop()


def test_real_answer_is_reproduced_byte_for_byte(sample_server: ServerThread) -> None:
    sample = json.loads((VECTORS / "instance-2023-11-15-extended.json").read_text())
    reply = get(sample_server.port, "/metadata/instance?api-version=2023-11-15&extended=true")
    assert reply.status == 200
    assert reply.body == compact(sample)


def test_documentation_example_is_the_default_vm(port: int) -> None:
    """Every value of the documentation's example comes back unchanged at 2025-04-07."""
    example = json.loads((VECTORS / "instance-docs-example.json").read_text())
    served = instance(port, query="api-version=2025-04-07")

    def contains(expected: object, actual: object, where: str) -> None:
        if isinstance(expected, dict):
            assert isinstance(actual, dict), where
            for key, value in expected.items():
                assert key in actual, f"{where}.{key}"
                contains(value, actual[key], f"{where}.{key}")
        elif isinstance(expected, list):
            assert isinstance(actual, list) and len(actual) == len(expected), where
            for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
                contains(e, a, f"{where}[{i}]")
        else:
            assert actual == expected, where

    contains(example, served, "instance")


# --- a VM described in a config file ---------------------------------------------------------

CUSTOM_VM = {
    "listen": "127.0.0.1:0",
    "vm": {
        "compute": {
            "name": "web-1",
            "vmId": "11111111-2222-3333-4444-555555555555",
            "zone": 2,
            "physicalZone": "eastus-AZ02",
            "platformFaultDomain": 0,
            "tags": {"env": "prod", "team": "core"},
            "userData": "aGVsbG8=",
            "osProfile": {"adminUsername": "azureuser", "disablePasswordAuthentication": True},
            "storageProfile": {
                "dataDisks": [
                    {"lun": 0, "name": "ultra", "isUltraDisk": True, "opsPerSecondThrottle": 65280},
                    {"lun": 1, "name": "plain"},
                ]
            },
        },
        "network": {
            "interface": [
                {
                    "macAddress": "000D3A000001",
                    "ipv4": {
                        "ipAddress": [
                            {"privateIpAddress": "10.0.0.4", "publicIpAddress": "20.1.2.3"},
                            {"privateIpAddress": "10.0.0.5"},
                        ],
                        "subnet": [{"address": "10.0.0.0", "prefix": 24}],
                    },
                    "ipv6": {"ipAddress": [{"privateIpAddress": "fd00::4"}]},
                },
                {
                    "macAddress": "000D3A000002",
                    "ipv4": {"ipAddress": [{"privateIpAddress": "10.1.0.4"}]},
                },
            ]
        },
        "extended": {"compute": {"hasCustomData": True, "ppsType": "Running"}},
        "reprovisionData": "<Environment/>",
    },
}


@pytest.fixture(scope="module")
def custom_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    config: Path = tmp_path_factory.mktemp("custom") / "vm.yaml"
    config.write_text(yaml.safe_dump(CUSTOM_VM))
    process = ServerThread("--config", str(config))
    yield process
    process.stop()


def text(port: int, path: str, version: str = "2025-04-07") -> str:
    reply = get(port, f"/metadata/instance{path}?api-version={version}&format=text")
    assert reply.status == 200, (path, reply.body)
    return reply.text


def test_config_file_sets_compute_fields(custom_server: ServerThread) -> None:
    port = custom_server.port
    assert text(port, "/compute/name") == "web-1"
    assert text(port, "/compute/zone") == "2"  # YAML integers become strings
    assert text(port, "/compute/physicalZone") == "eastus-AZ02"
    assert text(port, "/compute/osProfile/disablePasswordAuthentication") == "true"
    assert text(port, "/compute/userData") == "aGVsbG8="
    assert text(port, "/compute/location") == "westus"  # untouched fields keep the example's


def test_tags_mapping_gives_both_forms(custom_server: ServerThread) -> None:
    assert text(custom_server.port, "/compute/tags") == "env:prod;team:core"
    tags = instance(custom_server.port, "/compute/tagsList", "api-version=2025-04-07")
    assert tags == [{"name": "env", "value": "prod"}, {"name": "team", "value": "core"}]


def test_several_nics_ips_and_ipv6(custom_server: ServerThread) -> None:
    port = custom_server.port
    assert text(port, "/network/interface") == "0/\n1/"
    assert text(port, "/network/interface/0/ipv4/ipAddress/1/privateIpAddress") == "10.0.0.5"
    assert text(port, "/network/interface/0/ipv4/ipAddress/1/publicIpAddress") == ""
    assert text(port, "/network/interface/0/ipv6/ipAddress/0/privateIpAddress") == "fd00::4"
    assert text(port, "/network/interface/1/ipv4/subnet") == ""
    assert text(port, "/network/interface/0/ipv4/subnet/0/prefix") == "24"


def test_data_disks_with_ultra_fields(custom_server: ServerThread) -> None:
    disks = instance(
        custom_server.port, "/compute/storageProfile/dataDisks", "api-version=2025-04-07"
    )
    assert [d["name"] for d in disks] == ["ultra", "plain"]
    assert disks[0]["isUltraDisk"] == "true"
    assert disks[0]["opsPerSecondThrottle"] == "65280"
    assert disks[1]["opsPerSecondThrottle"] == ""
    assert disks[1]["managedDisk"] == {"id": "", "storageAccountType": ""}


def test_extended_from_config(custom_server: ServerThread) -> None:
    reply = get(custom_server.port, "/metadata/instance?api-version=2021-08-01&extended=true")
    assert json.loads(reply.body)["extended"] == {
        "compute": {"hasCustomData": True, "ppsType": "Running"}
    }


def test_reprovision_data_when_set(custom_server: ServerThread) -> None:
    reply = get(custom_server.port, "/metadata/reprovisiondata?api-version=2019-06-01")
    assert (reply.status, reply.body) == (200, b"<Environment/>")
    assert reply.headers["content-type"] == "text/xml; charset=utf-8"
