"""``/metadata/identity/oauth2/token`` and ``/metadata/identity/info`` on the wire, byte for byte.

The shapes are those of reference section 5 and of the requests real clients send
(clients.md): raw and percent-encoded queries, msal-node's lower-cased URL with a trailing
slash, probes without the Metadata header and without a query string.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import ServerThread
from tests.guest.identity.support import (
    BAD_API_VERSION,
    HEADER_MISSING,
    IDENTITY_NOT_FOUND,
    JSON_TYPE,
    MANAGEMENT,
    MULTIPLE_IDENTITIES,
    RESOURCE_MISSING,
    TOKEN_KEYS,
    TOKEN_PATH,
    VAULT,
    Expected,
    add_user_identity,
    check_token,
    disable_system_identity,
    new_guid,
    system_identity,
    token_json,
    token_reply,
)
from tests.http import Reply, get

API = "api-version=2018-02-01"


@dataclass(frozen=True)
class Node:
    server: ServerThread
    system: Expected
    app: Expected
    other: Expected

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    server = ServerThread("--store", "memory:")
    try:
        system = system_identity(server)
        # Given in upper case, as a portal shows it; IMDS clients may send either case.
        app = add_user_identity(server, "app", new_guid().upper())
        other = add_user_identity(server, "other")
        yield Node(server, system, app, other)
    finally:
        server.stop()


@pytest.fixture
def fresh() -> Iterator[ServerThread]:
    """A node of its own, for tests that change the VM's identities."""
    server = ServerThread("--store", "memory:")
    yield server
    server.stop()


def unique_resource() -> str:
    """A resource no other test asked for, so no other test's cached token is in the way."""
    return f"api://{uuid.uuid4()}"


def assert_identity_error(reply: Reply, body: bytes) -> None:
    assert reply.status == 400
    assert reply.body == body
    assert reply.headers["content-type"] == JSON_TYPE
    assert reply.headers["content-length"] == str(len(body))
    assert reply.headers["server"].startswith("IMDS/")


# --- the 200 ------------------------------------------------------------------------


def test_success_body_and_headers(node: Node) -> None:
    resource = unique_resource()  # not cached by another test: a token minted now
    before = int(time.time())
    reply = token_reply(node.port, f"{API}&resource={resource}")
    after = int(time.time())
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == JSON_TYPE
    assert reply.headers["server"].startswith("IMDS/")
    uuid.UUID(reply.headers["x-ms-request-id"])
    assert reply.headers["content-length"] == str(len(reply.body))

    answer = json.loads(reply.body)
    assert list(answer) == TOKEN_KEYS
    assert all(isinstance(value, str) for value in answer.values())
    # Compact, no trailing newline: exactly what json.dumps gives without spaces.
    assert reply.body == json.dumps(answer, separators=(",", ":")).encode()

    assert answer["client_id"] == node.system.client_id
    assert answer["resource"] == resource
    assert answer["token_type"] == "Bearer"
    expires_on, not_before = int(answer["expires_on"]), int(answer["not_before"])
    assert expires_on - not_before == 86700
    assert answer["ext_expires_in"] == "86399"
    assert before + 86400 - 1 <= expires_on <= after + 86400 + 1
    assert 0 <= expires_on - int(answer["expires_in"]) - before <= after - before + 1

    _, claims = check_token(answer["access_token"], resource, node.system)
    assert claims["exp"] == expires_on
    assert claims["nbf"] == not_before


def test_error_replies_carry_imds_headers(node: Node) -> None:
    reply = token_reply(node.port, API)
    assert reply.status == 400
    assert reply.headers["server"].startswith("IMDS/")
    uuid.UUID(reply.headers["x-ms-request-id"])


# --- caching ------------------------------------------------------------------------


def test_same_request_same_token_and_expires_in_counts_down(node: Node) -> None:
    resource = unique_resource()
    first = token_json(node.port, f"{API}&resource={resource}")
    second = token_json(node.port, f"{API}&resource={resource}")
    assert second["access_token"] == first["access_token"]
    assert second["expires_on"] == first["expires_on"]
    assert int(second["expires_in"]) <= int(first["expires_in"])
    time.sleep(1.1)
    third = token_json(node.port, f"{API}&resource={resource}")
    assert third["access_token"] == first["access_token"]
    assert third["expires_on"] == first["expires_on"]
    assert int(third["expires_in"]) < int(first["expires_in"])


def test_bypass_cache_gives_a_new_token(node: Node) -> None:
    resource = unique_resource()
    first = token_json(node.port, f"{API}&resource={resource}")
    fresh = token_json(node.port, f"{API}&resource={resource}&bypass_cache=true")
    again = token_json(node.port, f"{API}&resource={resource}&bypass_cache=true")
    assert len({first["access_token"], fresh["access_token"], again["access_token"]}) == 3
    check_token(fresh["access_token"], resource, node.system)


def test_a_repeated_request_within_a_second_gets_the_same_bytes(node: Node) -> None:
    """The answer is reused until expires_in changes (the next second), each time with a
    request id of its own."""
    query = f"{API}&resource={unique_resource()}"
    token_reply(node.port, query)
    while int(time.time()) != int(time.time() + 0.5):  # not across a second's end
        time.sleep(0.05)
    replies = [token_reply(node.port, query) for _ in range(5)]
    assert len({reply.body for reply in replies}) == 1
    assert len({reply.headers["x-ms-request-id"] for reply in replies}) == 5


def test_cache_is_per_resource_and_per_identity(node: Node) -> None:
    resource = unique_resource()
    system = token_json(node.port, f"{API}&resource={resource}")
    elsewhere = token_json(node.port, f"{API}&resource={unique_resource()}")
    app = token_json(node.port, f"{API}&resource={resource}&client_id={node.app.client_id}")
    assert len({system["access_token"], elsewhere["access_token"], app["access_token"]}) == 3
    check_token(app["access_token"], resource, node.app)


# --- resource spellings and request shapes ------------------------------------------


@pytest.mark.parametrize(
    "resource", ["https://management.azure.com", "https://management.azure.com/", VAULT]
)
def test_resource_with_or_without_trailing_slash(node: Node, resource: str) -> None:
    answer = token_json(node.port, f"{API}&resource={resource}")
    assert answer["resource"] == resource
    check_token(answer["access_token"], resource, node.system)


@pytest.mark.parametrize(
    ("query", "resource"),
    [
        ("resource=https%3A%2F%2Fvault.azure.net", VAULT),
        (
            "resource=https%3A%2F%2Fmanagement.core.windows.net%2F",
            "https://management.core.windows.net/",
        ),
        ("resource=https://vault.azure.net", VAULT),
    ],
)
def test_raw_and_percent_encoded_queries(node: Node, query: str, resource: str) -> None:
    answer = token_json(node.port, f"{API}&{query}")
    assert answer["resource"] == resource
    check_token(answer["access_token"], resource, node.system)


def test_msal_node_lower_cased_url_with_trailing_slash(node: Node) -> None:
    target = (
        "/metadata/identity/oauth2/token/?api-version=2019-08-01"
        "&resource=https://management.azure.com/"
    )
    answer = token_json(node.port, target.split("?", 1)[1], path=target.split("?", 1)[0])
    assert answer["client_id"] == node.system.client_id
    check_token(answer["access_token"], MANAGEMENT, node.system)


@pytest.mark.parametrize("spelling", [str.lower, str.upper])
def test_client_id_in_any_case(node: Node, spelling: Callable[[str], str]) -> None:
    # msal-node lower-cases the whole URL, the client id with it; others send it as given.
    client_id = spelling(node.app.client_id)
    answer = token_json(
        node.port,
        f"api-version=2019-08-01&resource=https://management.azure.com/&client_id={client_id}",
        path="/metadata/identity/oauth2/token/",
    )
    assert answer["client_id"] == node.app.client_id
    check_token(answer["access_token"], MANAGEMENT, node.app)


@pytest.mark.parametrize("selector", ["msi_res_id", "mi_res_id", "object_id", "client_id"])
def test_selectors_pick_the_user_assigned_identity(node: Node, selector: str) -> None:
    value = {
        "msi_res_id": node.other.mirid,
        "mi_res_id": node.other.mirid,
        "object_id": node.other.object_id,
        "client_id": node.other.client_id,
    }[selector]
    answer = token_json(node.port, f"{API}&resource={VAULT}&{selector}={value}")
    assert answer["client_id"] == node.other.client_id
    check_token(answer["access_token"], VAULT, node.other)


@pytest.mark.parametrize("selector", ["msi_res_id", "mi_res_id"])
def test_resource_id_in_lower_case(node: Node, selector: str) -> None:
    # msal-node lower-cases the whole URL: resourceGroups, Microsoft.ManagedIdentity, names.
    target = f"{TOKEN_PATH}/?{API}&resource={VAULT}&{selector}={node.other.mirid}".lower()
    reply = get(node.port, target)
    assert reply.status == 200, reply.body
    check_token(json.loads(reply.body)["access_token"], VAULT, node.other)


def test_system_identity_by_client_id(node: Node) -> None:
    answer = token_json(node.port, f"{API}&resource={VAULT}&client_id={node.system.client_id}")
    check_token(answer["access_token"], VAULT, node.system)


def test_percent_encoded_resource_id(node: Node) -> None:
    encoded = node.app.mirid.replace("/", "%2F")
    answer = token_json(node.port, f"{API}&resource={VAULT}&msi_res_id={encoded}")
    check_token(answer["access_token"], VAULT, node.app)


@pytest.mark.parametrize(
    "target",
    [
        # Absolute form, from clients given an HTTP proxy.
        f"http://169.254.169.254{TOKEN_PATH}?{API}&resource={MANAGEMENT}",
        # /metadata in another case.
        f"/Metadata/identity/oauth2/token?{API}&resource={MANAGEMENT}",
    ],
)
def test_other_request_targets(node: Node, target: str) -> None:
    reply = get(node.port, target)
    assert reply.status == 200, reply.body
    check_token(json.loads(reply.body)["access_token"], MANAGEMENT, node.system)


def test_gzip_asking_client_gets_readable_json(node: Node) -> None:
    # go-autorest/adal sends Accept-Encoding: gzip.
    reply = token_reply(node.port, f"{API}&resource={MANAGEMENT}", **{"Accept-Encoding": "gzip"})
    assert reply.status == 200
    body = (
        gzip.decompress(reply.body)
        if reply.headers.get("content-encoding") == "gzip"
        else reply.body
    )
    check_token(json.loads(body)["access_token"], MANAGEMENT, node.system)


# --- errors, byte for byte ----------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        f"{TOKEN_PATH}?{API}&resource={MANAGEMENT}",
        TOKEN_PATH,  # @azure/identity's probe: no query string at all
        TOKEN_PATH + "/",  # ... through msal-node's lower-cased URL
        f"{TOKEN_PATH}?{API}",
    ],
)
def test_missing_metadata_header(node: Node, target: str) -> None:
    reply = get(node.port, target, metadata=None)
    assert len(HEADER_MISSING) == 88
    assert_identity_error(reply, HEADER_MISSING)


@pytest.mark.parametrize("value", ["false", "", "yes"])
def test_wrong_metadata_header(node: Node, value: str) -> None:
    reply = get(node.port, f"{TOKEN_PATH}?{API}&resource={MANAGEMENT}", metadata=value)
    assert_identity_error(reply, HEADER_MISSING)


@pytest.mark.parametrize("value", ["true", "True", "TRUE"])
def test_metadata_header_in_any_case(node: Node, value: str) -> None:
    reply = get(node.port, f"{TOKEN_PATH}?{API}&resource={MANAGEMENT}", metadata=value)
    assert reply.status == 200, reply.body


def test_missing_resource(node: Node) -> None:
    assert_identity_error(token_reply(node.port, API), RESOURCE_MISSING)


@pytest.mark.parametrize("selector", ["client_id", "object_id", "msi_res_id", "mi_res_id"])
def test_unknown_identity(node: Node, selector: str) -> None:
    # A GUID no identity has, or the resource id of an identity the VM does not have.
    value = node.app.mirid.replace("/app", "/nobody") if "res" in selector else new_guid()
    reply = token_reply(node.port, f"{API}&resource={MANAGEMENT}&{selector}={value}")
    assert len(IDENTITY_NOT_FOUND) == 68
    assert_identity_error(reply, IDENTITY_NOT_FOUND)


def test_header_error_beats_missing_resource(node: Node) -> None:
    reply = get(node.port, f"{TOKEN_PATH}?{API}&client_id={new_guid()}", metadata=None)
    assert_identity_error(reply, HEADER_MISSING)


def test_missing_resource_beats_unknown_identity(node: Node) -> None:
    reply = token_reply(node.port, f"{API}&client_id={new_guid()}")
    assert_identity_error(reply, RESOURCE_MISSING)


@pytest.mark.parametrize(
    "query",
    [
        f"resource={MANAGEMENT}",
        f"api-version=2017-12-01&resource={MANAGEMENT}",
        f"api-version=2017-04-02&resource={MANAGEMENT}",
        f"api-version=&resource={MANAGEMENT}",
        f"api-version=latest&resource={MANAGEMENT}",
    ],
)
def test_api_version_missing_or_too_old(node: Node, query: str) -> None:
    reply = token_reply(node.port, query)
    assert reply.status == 400
    assert reply.body == BAD_API_VERSION
    assert reply.headers["content-type"] == JSON_TYPE


@pytest.mark.parametrize("version", ["2018-02-01", "2019-08-01", "2021-02-01", "2025-04-07"])
def test_api_versions_clients_send(node: Node, version: str) -> None:
    token_json(node.port, f"api-version={version}&resource={MANAGEMENT}")


def test_post_is_405(node: Node) -> None:
    reply = get(node.port, f"{TOKEN_PATH}?{API}&resource={MANAGEMENT}", method="POST")
    assert reply.status == 405
    assert reply.headers["content-type"] == JSON_TYPE
    assert json.loads(reply.body)["error"] == "method_not_allowed"


# --- which identity when none is named ----------------------------------------------


def test_no_identity_at_all(fresh: ServerThread) -> None:
    disable_system_identity(fresh)
    assert_identity_error(
        token_reply(fresh.port, f"{API}&resource={MANAGEMENT}"), IDENTITY_NOT_FOUND
    )


def test_two_user_assigned_and_no_system_need_a_selector(fresh: ServerThread) -> None:
    disable_system_identity(fresh)
    first = add_user_identity(fresh, "first")
    add_user_identity(fresh, "second")
    assert_identity_error(
        token_reply(fresh.port, f"{API}&resource={MANAGEMENT}"), MULTIPLE_IDENTITIES
    )
    # Named, either works.
    answer = token_json(fresh.port, f"{API}&resource={MANAGEMENT}&client_id={first.client_id}")
    check_token(answer["access_token"], MANAGEMENT, first)


def test_the_only_user_assigned_identity_is_used(fresh: ServerThread) -> None:
    disable_system_identity(fresh)
    only = add_user_identity(fresh, "only")
    answer = token_json(fresh.port, f"{API}&resource={MANAGEMENT}")
    assert answer["client_id"] == only.client_id
    check_token(answer["access_token"], MANAGEMENT, only)


def test_system_identity_wins_over_a_single_user_assigned(node: Node) -> None:
    answer = token_json(node.port, f"{API}&resource={MANAGEMENT}")
    assert answer["client_id"] == node.system.client_id


# --- /metadata/identity/info --------------------------------------------------------


def test_info_gives_the_tenant(node: Node) -> None:
    reply = get(node.port, f"/metadata/identity/info?{API}")
    assert reply.status == 200
    assert reply.headers["content-type"] == JSON_TYPE
    assert reply.body == b'{"tenantId":"' + node.system.tenant_id.encode() + b'"}'
    # The same tenant the tokens are for.
    token = token_json(node.port, f"{API}&resource={MANAGEMENT}")["access_token"]
    assert check_token(token, MANAGEMENT, node.system)[1]["tid"] == node.system.tenant_id


def test_info_needs_the_metadata_header_and_api_version(node: Node) -> None:
    assert_identity_error(
        get(node.port, f"/metadata/identity/info?{API}", metadata=None), HEADER_MISSING
    )
    reply = get(node.port, "/metadata/identity/info")
    assert reply.status == 400
    assert reply.body == BAD_API_VERSION


def test_info_without_system_identity(fresh: ServerThread) -> None:
    disable_system_identity(fresh)
    add_user_identity(fresh, "app")  # a user-assigned identity does not give a tenant here
    assert_identity_error(get(fresh.port, f"/metadata/identity/info?{API}"), IDENTITY_NOT_FOUND)
