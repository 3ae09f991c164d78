"""``/metadata/loadbalancer`` (reference section 7)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from tests.conftest import ServerThread
from tests.http import get

LB = {
    "publicIpAddresses": [{"frontendIpAddress": "51.0.0.1", "privateIpAddress": "10.1.0.4"}],
    "inboundRules": [
        {
            "frontendIpAddress": "50.0.0.1",
            "protocol": "tcp",
            "frontendPort": 80,
            "backendPort": "443",
            "privateIpAddress": "10.1.0.4",
        }
    ],
    "outboundRules": [{"frontendIpAddress": "50.0.0.1", "privateIpAddress": "10.1.0.4"}],
}
# The documentation's example answer, byte for byte.
EXPECTED = (
    b'{"loadbalancer":{"publicIpAddresses":[{"frontendIpAddress":"51.0.0.1","privateIpAddress":'
    b'"10.1.0.4"}],"inboundRules":[{"frontendIpAddress":"50.0.0.1","protocol":"tcp",'
    b'"frontendPort":80,"backendPort":443,"privateIpAddress":"10.1.0.4"}],"outboundRules":'
    b'[{"frontendIpAddress":"50.0.0.1","privateIpAddress":"10.1.0.4"}]}}'
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    config = tmp_path_factory.mktemp("lb") / "vm.yaml"
    config.write_text(yaml.safe_dump({"vm": {"loadBalancer": LB}}))
    process = ServerThread("--config", str(config), "--store", "memory:")
    yield process
    process.stop()


def test_the_documentation_example(node: ServerThread) -> None:
    reply = get(node.port, "/metadata/loadbalancer?api-version=2020-10-01")
    assert (reply.status, reply.body) == (200, EXPECTED)
    assert reply.headers["content-type"] == "application/json; charset=utf-8"


def test_needs_2020_10_01(node: ServerThread) -> None:
    reply = get(node.port, "/metadata/loadbalancer?api-version=2020-09-01")
    assert reply.status == 400 and b"newest-versions" in reply.body


def test_json_only(node: ServerThread) -> None:
    assert get(node.port, "/metadata/loadbalancer?api-version=2021-02-01&format=text").status == 400


def test_a_vm_without_a_load_balancer(port: int) -> None:
    reply = get(port, "/metadata/loadbalancer?api-version=2021-02-01")
    assert reply.status == 404
    assert json.loads(reply.body) == {
        "error": "No load balancer metadata is found. Please check if your VM is using any "
        "nonbasic SKU load balancer and retry later."
    }
    assert reply.body.startswith(b'{ "error": ')
