"""``IMDSClient`` against a real azimds: the typed accessors on the documentation's example VM
(the shared session server, only read) and on a VM of the tests' own."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import jwt
import pytest
import yaml

from azimds.client import (
    DEFAULT_API_VERSION,
    AccessToken,
    ApiVersionError,
    BadRequest,
    IdentityError,
    IdentityNotFound,
    IMDSClient,
    IMDSConnectionError,
    InboundRule,
    NotFound,
    PublicIpAddress,
    RetryPolicy,
)
from azimds.client.protocol import SDK_ENDPOINT_ENV
from azimds.fleet.identity import DEFAULT_TENANT_ID
from tests.client.support import DEFAULT_VM_ID, NEWEST, FakeTime, Recording, endpoint
from tests.conftest import ServerThread

VAULT = "https://vault.azure.net"
USER_DATA = b"#cloud-config\npackages: [nginx]\n"
APP_CLIENT_ID = "1b0a8f31-7f7e-4c55-9f6a-2d7e4b9b8a10"
APP_RESOURCE_ID = (
    "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/"
    "userAssignedIdentities/db-reader"
)
LB = {
    "publicIpAddresses": [{"frontendIpAddress": "51.0.0.1", "privateIpAddress": "10.1.0.4"}],
    "inboundRules": [
        {
            "frontendIpAddress": "50.0.0.1",
            "protocol": "tcp",
            "frontendPort": 80,
            "backendPort": 443,
            "privateIpAddress": "10.1.0.4",
        }
    ],
    "outboundRules": [{"frontendIpAddress": "50.0.0.1", "privateIpAddress": "10.1.0.4"}],
}


@pytest.fixture
def imds(server: ServerThread) -> Iterator[IMDSClient]:
    with IMDSClient(endpoint(server)) as client:
        yield client


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A VM with user data, tags whose values hold colons, user-assigned identities and a load
    balancer."""
    config = tmp_path_factory.mktemp("custom") / "vm.yaml"
    vm = {
        "compute": {
            "name": "web-1",
            "userData": base64.b64encode(USER_DATA).decode(),
            "tags": {"env": "prod", "url": "http://example.com:8080"},
        },
        "identity": {
            "systemAssigned": True,
            "userAssigned": [
                {"name": "app-identity"},
                {"clientId": APP_CLIENT_ID, "resourceId": APP_RESOURCE_ID},
            ],
        },
        "loadBalancer": LB,
    }
    config.write_text(yaml.safe_dump({"vm": vm}))
    process = ServerThread("--config", str(config), "--store", "memory:")
    yield process
    process.stop()


# --- instance metadata -----------------------------------------------------------------------


def test_the_whole_instance_document(imds: IMDSClient):
    document = imds.instance()
    assert list(document) == ["compute", "network"]
    assert document["compute"]["vmId"] == DEFAULT_VM_ID
    assert document["compute"]["name"] == "examplevmname"
    assert "extended" in imds.instance(extended=True)


def test_a_leaf_is_text_and_a_node_is_json(imds: IMDSClient):
    assert imds.instance("compute/vmId") == DEFAULT_VM_ID
    assert imds.instance("/compute/location/") == "westus"
    address = imds.instance("network/interface/0/ipv4/ipAddress/0")
    assert set(address) == {"privateIpAddress", "publicIpAddress"}
    assert imds.instance("compute/tagsList") == [
        {"name": "baz", "value": "bash"},
        {"name": "foo", "value": "bar"},
    ]


def test_a_known_leaf_is_asked_for_as_text_at_once(server: ServerThread):
    transport = Recording()
    with IMDSClient(endpoint(server), transport=transport) as imds:
        assert imds.instance("compute/vmId") == DEFAULT_VM_ID
        assert imds.instance("compute/vmId") == DEFAULT_VM_ID
    queries = [url.split("?")[1] for url in transport.urls]
    assert queries == [
        f"api-version={NEWEST}",  # the leaf refused as JSON,
        f"api-version={NEWEST}&format=text",  # asked again as text,
        f"api-version={NEWEST}&format=text",  # and from then on as text only
    ]


def test_text_listing(imds: IMDSClient):
    listing = imds.instance_text("compute").splitlines()
    assert "vmId" in listing and "tagsList/" in listing and "osProfile/" in listing
    assert imds.instance_text("compute/vmSize") == "Standard_A3"


def test_missing_element_is_not_found(imds: IMDSClient):
    with pytest.raises(NotFound) as raised:
        imds.instance("compute/nothing")
    assert raised.value.status == 404
    assert raised.value.error == "Not found"


def test_tags_as_a_dict(imds: IMDSClient, server: ServerThread):
    assert imds.tags() == {"baz": "bash", "foo": "bar"}
    # 2018-10-01 has no tagsList: the "k:v;k2:v2" string is parsed instead.
    with IMDSClient(endpoint(server), api_version="2018-10-01") as old:
        assert "tagsList" not in old.instance("compute")
        assert old.tags() == {"baz": "bash", "foo": "bar"}


def test_user_data_is_empty_on_the_example_vm(imds: IMDSClient):
    assert imds.user_data() == b""


def test_versions(imds: IMDSClient):
    versions = imds.versions()
    assert versions == tuple(sorted(versions))
    assert versions[0] == "2017-03-01" and versions[-1] == NEWEST == DEFAULT_API_VERSION


# --- api-version negotiation -----------------------------------------------------------------


def test_a_too_new_version_is_negotiated_down(server: ServerThread):
    transport = Recording()
    with IMDSClient(endpoint(server), api_version="2099-01-01", transport=transport) as imds:
        assert imds.instance("compute")["vmId"] == DEFAULT_VM_ID
        assert imds.api_version == NEWEST
        assert imds.instance("network")["interface"]
    versions = [url.split("api-version=")[1].split("&")[0] for url in transport.urls]
    assert versions == ["2099-01-01", NEWEST, NEWEST]


def test_an_old_preferred_version_shapes_the_document(server: ServerThread):
    with IMDSClient(endpoint(server), api_version="2017-04-02") as imds:
        compute = imds.instance("compute")
        assert "tags" not in compute and "vmId" in compute  # tags came with 2017-08-01
        # The load balancer needs 2020-10-01: negotiated up for that endpoint only.
        with pytest.raises(NotFound):
            imds.load_balancer()
        assert imds.api_version == "2017-04-02"


def test_a_pinned_version_is_not_negotiated(imds: IMDSClient):
    with pytest.raises(ApiVersionError) as raised:
        imds.instance("compute", api_version="2099-01-01")
    assert raised.value.newest_versions[0] == NEWEST
    assert imds.instance("compute", api_version="2017-08-01")["tags"] == "baz:bash;foo:bar"


def test_negotiation_can_be_switched_off(server: ServerThread):
    imds = IMDSClient(endpoint(server), api_version="2099-01-01", negotiate=False)
    with imds, pytest.raises(ApiVersionError):
        imds.instance()


# --- where the client sends ------------------------------------------------------------------


def test_the_sdk_variable_names_the_endpoint(server: ServerThread, monkeypatch):
    monkeypatch.setenv(SDK_ENDPOINT_ENV, endpoint(server) + "/")
    with IMDSClient() as imds:
        assert imds.endpoint == endpoint(server)
        assert imds.instance("compute/vmId") == DEFAULT_VM_ID


def test_default_endpoint_is_the_link_local_address(monkeypatch):
    monkeypatch.delenv(SDK_ENDPOINT_ENV, raising=False)
    with IMDSClient() as imds:
        assert imds.endpoint == "http://169.254.169.254"


def test_a_bad_endpoint_is_refused():
    with pytest.raises(ValueError, match="http"):
        IMDSClient("ftp://example.com")


def test_proxies_in_the_environment_are_ignored(server: ServerThread, monkeypatch):
    dead = "http://127.0.0.1:9"  # nothing listens: a request through it would fail
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with IMDSClient(endpoint(server), retry=RetryPolicy.never()) as imds:
        assert imds.instance("compute/vmId") == DEFAULT_VM_ID


def test_metadata_header_and_extra_headers_are_sent(server: ServerThread):
    transport = Recording()
    with IMDSClient(
        endpoint(server), headers={"x-ms-client-request-id": "42"}, transport=transport
    ) as imds:
        imds.versions()
    sent = transport.requests[0].headers
    assert sent["metadata"] == "true"
    assert sent["x-ms-client-request-id"] == "42"
    assert "x-forwarded-for" not in sent


def test_nothing_listening_is_a_connection_error():
    time_ = FakeTime()
    with (
        IMDSClient("http://127.0.0.1:9", sleep=time_.sleep, clock=time_.monotonic) as imds,
        pytest.raises(IMDSConnectionError) as raised,
    ):
        imds.versions()
    assert raised.value.status is None
    assert len(time_.sleeps) == 5  # the policy's five retries, on the fake clock


def test_request_gives_any_answer(imds: IMDSClient):
    reply = imds.request("GET", "/metadata/instance/compute/vmId", params={"format": "text"})
    assert (reply.status, reply.text, reply.api_version) == (200, DEFAULT_VM_ID, NEWEST)
    assert reply.content_type == "text/plain"
    refused = imds.request("GET", "instance", headers={"Metadata": "false"})
    assert refused.status == 400
    assert refused.json() == {"error": "Bad request: . Required metadata header not specified"}
    posted = imds.request("POST", "instance")
    assert posted.status == 405


# --- managed identity ------------------------------------------------------------------------


def test_token_fields(imds: IMDSClient):
    before = int(time.time())
    token = imds.token(VAULT)
    assert isinstance(token, AccessToken)
    assert token.token_type == "Bearer"
    assert token.resource == VAULT
    # The service caches tokens (another test may have asked first): about a day left.
    assert 86400 - 600 < token.expires_on - before <= 86400
    assert token.expires_in == pytest.approx(token.expires_on - time.time(), abs=5)
    assert token.not_before is not None and token.not_before <= before
    assert token.expires_on - token.not_before == 86700  # as real tokens are
    assert token.ext_expires_in == 86399
    assert token.expires_at.timestamp() == token.expires_on
    claims = jwt.decode(token.access_token, options={"verify_signature": False})
    assert claims["aud"] == VAULT
    assert claims["tid"] == DEFAULT_TENANT_ID
    assert claims["appid"] == token.client_id
    assert token.raw["expires_on"] == str(token.expires_on)  # strings on the wire
    assert token.access_token not in repr(token)


def test_identity_errors(imds: IMDSClient):
    with pytest.raises(IdentityNotFound) as raised:
        imds.token(VAULT, client_id="00000000-0000-0000-0000-000000000000")
    assert raised.value.status == 400
    assert raised.value.code == "invalid_request"
    assert raised.value.error == "Identity not found"
    assert isinstance(raised.value, IdentityError) and isinstance(raised.value, BadRequest)
    with pytest.raises(ValueError, match="at most one"):
        imds.token(VAULT, client_id="a", object_id="b")
    with pytest.raises(ValueError, match="resource"):
        imds.token("")


def test_tenant_id(imds: IMDSClient):
    assert imds.tenant_id() == DEFAULT_TENANT_ID


def test_no_load_balancer_is_not_found(imds: IMDSClient):
    with pytest.raises(NotFound, match="No load balancer metadata"):
        imds.load_balancer()


# --- a VM of the tests' own ------------------------------------------------------------------


def test_user_data_is_decoded(custom: ServerThread):
    with IMDSClient(endpoint(custom)) as imds:
        assert imds.user_data() == USER_DATA


def test_tag_values_keep_their_colons(custom: ServerThread):
    expected = {"env": "prod", "url": "http://example.com:8080"}
    with IMDSClient(endpoint(custom)) as imds:
        assert imds.tags() == expected
    with IMDSClient(endpoint(custom), api_version="2019-06-01") as old:  # from the string
        assert old.tags() == expected


def test_tokens_for_each_identity(custom: ServerThread):
    with IMDSClient(endpoint(custom)) as imds:
        system = imds.token(VAULT)
        by_client = imds.token(VAULT, client_id=APP_CLIENT_ID)
        assert by_client.client_id == APP_CLIENT_ID != system.client_id
        by_resource = imds.token(VAULT, msi_res_id=APP_RESOURCE_ID)
        assert by_resource.client_id == APP_CLIENT_ID
        object_id = jwt.decode(by_client.access_token, options={"verify_signature": False})["oid"]
        assert imds.token(VAULT, object_id=object_id).client_id == APP_CLIENT_ID
        with pytest.raises(IdentityNotFound):
            imds.token(VAULT, msi_res_id=APP_RESOURCE_ID + "-nope")


def test_load_balancer(custom: ServerThread):
    with IMDSClient(endpoint(custom)) as imds:
        balancer = imds.load_balancer()
    assert balancer.public_ip_addresses == (PublicIpAddress("51.0.0.1", "10.1.0.4"),)
    assert balancer.inbound_rules == (InboundRule("50.0.0.1", "tcp", 80, 443, "10.1.0.4"),)
    assert balancer.outbound_rules[0].frontend_ip_address == "50.0.0.1"
    assert json.loads(json.dumps(balancer.raw)) == LB
