"""``--token-resource``: tokens only for the resources named, Azure AD's error for any other."""

from __future__ import annotations

import json
from collections.abc import Iterator

import msal
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ManagedIdentityCredential

from tests.conftest import ServerThread
from tests.guest.identity.support import (
    HEADER_MISSING,
    IDENTITY_NOT_FOUND,
    JSON_TYPE,
    TOKEN_PATH,
    check_token,
    new_guid,
    point_sdks_at,
    system_identity,
    token_reply,
)
from tests.http import get

API = "api-version=2018-02-01"


@pytest.fixture(scope="module")
def node() -> Iterator[ServerThread]:
    server = ServerThread(
        "--store",
        "memory:",
        "--token-resource",
        "https://management.azure.com/",
        "--token-resource",
        "https://vault.azure.net",
    )
    yield server
    server.stop()


@pytest.mark.parametrize(
    "resource",
    [
        "https://management.azure.com/",
        "https://management.azure.com",
        "https://vault.azure.net",
        "https://vault.azure.net/",
        "https%3A%2F%2Fvault.azure.net",
    ],
)
def test_allowed_resources_get_tokens(node: ServerThread, resource: str) -> None:
    reply = token_reply(node.port, f"{API}&resource={resource}")
    assert reply.status == 200, reply.body
    answer = json.loads(reply.body)
    sent = resource.replace("%3A", ":").replace("%2F", "/")
    assert answer["resource"] == sent
    check_token(answer["access_token"], sent, system_identity(node))


@pytest.mark.parametrize(
    "resource",
    [
        "https://storage.azure.com/",
        "https://graph.microsoft.com",
        "https://management.azure.com/extra",
        "https://vault.azure.net.evil.example",
        "api://not-registered",
    ],
)
def test_other_resources_get_invalid_resource(node: ServerThread, resource: str) -> None:
    tenant = system_identity(node).tenant_id
    reply = token_reply(node.port, f"{API}&resource={resource}")
    assert reply.status == 400
    assert reply.headers["content-type"] == JSON_TYPE
    assert reply.headers["server"].startswith("IMDS/")
    answer = json.loads(reply.body)
    assert answer["error"] == "invalid_resource"
    assert answer["error_codes"] == [500011]
    assert answer["error_description"].startswith(
        f"AADSTS500011: The resource principal named {resource} was not found in the tenant "
        f"named {tenant}"
    )
    assert "access_token" not in answer


def test_imds_checks_come_before_azure_ads(node: ServerThread) -> None:
    # IMDS answers what it knows itself (header, identity) before asking Azure AD.
    other = "https://storage.azure.com/"
    missing_header = get(node.port, f"{TOKEN_PATH}?{API}&resource={other}", metadata=None)
    assert missing_header.status == 400
    assert missing_header.body == HEADER_MISSING
    unknown = token_reply(node.port, f"{API}&resource={other}&client_id={new_guid()}")
    assert unknown.status == 400
    assert unknown.body == IDENTITY_NOT_FOUND


def test_azure_identity_raises_for_a_resource_not_allowed(
    node: ServerThread, sdk_env: pytest.MonkeyPatch
) -> None:
    point_sdks_at(sdk_env, node)
    with ManagedIdentityCredential() as credential:
        # Allowed: a token.
        allowed = credential.get_token("https://vault.azure.net/.default")
        check_token(allowed.token, "https://vault.azure.net", system_identity(node))
        # Not allowed: an error naming the cause, not a token.
        with pytest.raises(ClientAuthenticationError, match="AADSTS500011"):
            credential.get_token("https://storage.azure.com/.default")


def test_msal_reports_invalid_resource(node: ServerThread, sdk_env: pytest.MonkeyPatch) -> None:
    point_sdks_at(sdk_env, node)
    with requests.Session() as session:
        client = msal.ManagedIdentityClient(
            msal.SystemAssignedManagedIdentity(), http_client=session
        )
        result = client.acquire_token_for_client(resource="https://storage.azure.com/")
    assert "access_token" not in result
    assert result["error"] == "invalid_resource"
    assert result["error_description"].startswith("AADSTS500011:")
