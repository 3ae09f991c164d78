"""Real clients (azure-identity sync and async, DefaultAzureCredential, msal) get real tokens.

Each client is pointed at the node with ``AZURE_POD_IDENTITY_AUTHORITY_HOST``, as a developer
would, and every token it returns is verified against the keys published through OpenID
discovery.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import msal
import pytest
import requests
from azure.core.pipeline.transport import AsyncioRequestsTransport
from azure.identity import (
    CredentialUnavailableError,
    DefaultAzureCredential,
    ManagedIdentityCredential,
)
from azure.identity.aio import ManagedIdentityCredential as AsyncManagedIdentityCredential

from tests.conftest import ServerThread
from tests.guest.identity.support import (
    MANAGEMENT,
    Expected,
    add_user_identity,
    check_token,
    local_issuer,
    new_guid,
    point_sdks_at,
    system_identity,
)

SCOPE = "https://management.azure.com/.default"
SCOPE_RESOURCE = "https://management.azure.com"  # what azure-identity asks IMDS for


@dataclass(frozen=True)
class Node:
    server: ServerThread
    system: Expected
    app: Expected  # user-assigned, added through the control plane


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    server = ServerThread("--store", "memory:")
    try:
        system = system_identity(server)
        app = add_user_identity(server, "app", new_guid())
        yield Node(server, system, app)
    finally:
        server.stop()


@pytest.fixture
def env(sdk_env: pytest.MonkeyPatch, node: Node) -> Node:
    point_sdks_at(sdk_env, node.server)
    return node


def check_access_token(
    node: Node, token: str, expires_on: int, resource: str, who: Expected
) -> None:
    _, claims = check_token(token, resource, who, issuer=local_issuer(node.server, who.tenant_id))
    # The SDK's expiry is the token's own (within the second the response took).
    assert abs(expires_on - claims["exp"]) <= 2
    assert expires_on > time.time() + 3600


# --- azure-identity, sync -----------------------------------------------------------


def test_managed_identity_credential_system_assigned(env: Node) -> None:
    with ManagedIdentityCredential() as credential:
        token = credential.get_token(SCOPE)
    check_access_token(env, token.token, token.expires_on, SCOPE_RESOURCE, env.system)


def test_managed_identity_credential_client_id(env: Node) -> None:
    with ManagedIdentityCredential(client_id=env.app.client_id) as credential:
        token = credential.get_token(SCOPE)
    check_access_token(env, token.token, token.expires_on, SCOPE_RESOURCE, env.app)


@pytest.mark.parametrize("key", ["object_id", "resource_id", "client_id"])
def test_managed_identity_credential_identity_config(env: Node, key: str) -> None:
    value = {
        "object_id": env.app.object_id,
        "resource_id": env.app.mirid,
        "client_id": env.app.client_id,
    }[key]
    with ManagedIdentityCredential(identity_config={key: value}) as credential:
        token = credential.get_token(SCOPE)
    check_access_token(env, token.token, token.expires_on, SCOPE_RESOURCE, env.app)


def test_get_token_info(env: Node) -> None:
    with ManagedIdentityCredential() as credential:
        info = credential.get_token_info(SCOPE)
    check_access_token(env, info.token, info.expires_on, SCOPE_RESOURCE, env.system)
    assert info.token_type == "Bearer"
    # Tokens living 24 h are refreshed half-way (azure-identity: expires_in >= 7200).
    assert info.refresh_on is not None
    assert info.expires_on - info.refresh_on == pytest.approx(43200, abs=5)


def test_unknown_client_id_is_unavailable_not_a_hang(env: Node) -> None:
    started = time.monotonic()
    with (
        ManagedIdentityCredential(client_id=new_guid()) as credential,
        pytest.raises(CredentialUnavailableError, match="Identity not found"),
    ):
        credential.get_token(SCOPE)
    assert time.monotonic() - started < 5  # a 400 is not retried


# --- DefaultAzureCredential ---------------------------------------------------------


EXCLUDE_ALL_BUT_MANAGED_IDENTITY = {
    "exclude_environment_credential": True,
    "exclude_workload_identity_credential": True,
    "exclude_shared_token_cache_credential": True,
    "exclude_visual_studio_code_credential": True,
    "exclude_cli_credential": True,
    "exclude_developer_cli_credential": True,
    "exclude_powershell_credential": True,
    "exclude_interactive_browser_credential": True,
    "exclude_broker_credential": True,
}


def test_default_azure_credential_reaches_managed_identity(env: Node) -> None:
    with DefaultAzureCredential(**EXCLUDE_ALL_BUT_MANAGED_IDENTITY) as credential:
        token = credential.get_token(SCOPE)
    check_access_token(env, token.token, token.expires_on, SCOPE_RESOURCE, env.system)


def test_default_azure_credential_user_assigned(env: Node) -> None:
    with DefaultAzureCredential(
        managed_identity_client_id=env.app.client_id, **EXCLUDE_ALL_BUT_MANAGED_IDENTITY
    ) as credential:
        token = credential.get_token(SCOPE)
    check_access_token(env, token.token, token.expires_on, SCOPE_RESOURCE, env.app)


# --- azure-identity, async ----------------------------------------------------------


async def _async_token(**kwargs: object) -> tuple[str, int]:
    # requests in a thread: no aiohttp needed, the same wire requests.
    async with AsyncManagedIdentityCredential(
        transport=AsyncioRequestsTransport(), **kwargs
    ) as credential:
        token = await credential.get_token(SCOPE)
    return token.token, token.expires_on


def test_async_managed_identity_credential_system_assigned(env: Node) -> None:
    token, expires_on = asyncio.run(_async_token())
    check_access_token(env, token, expires_on, SCOPE_RESOURCE, env.system)


def test_async_managed_identity_credential_client_id(env: Node) -> None:
    token, expires_on = asyncio.run(_async_token(client_id=env.app.client_id))
    check_access_token(env, token, expires_on, SCOPE_RESOURCE, env.app)


@pytest.mark.parametrize("key", ["object_id", "msi_res_id", "mi_res_id"])
def test_async_identity_config_keys_imds_knows(env: Node, key: str) -> None:
    # The async credential sends identity_config's keys as they are (no msal in between).
    value = env.app.object_id if key == "object_id" else env.app.mirid
    token, expires_on = asyncio.run(_async_token(identity_config={key: value}))
    check_access_token(env, token, expires_on, SCOPE_RESOURCE, env.app)


def test_async_identity_config_resource_id_is_ignored_as_on_azure(env: Node) -> None:
    """``identity_config={"resource_id": ...}`` goes on the wire raw as ``resource_id=``, which
    IMDS does not observe (it reads msi_res_id and mi_res_id): the default identity answers,
    as it would on Azure (docs/behaviour.md). Use ``msi_res_id`` for a resource id."""
    token, _ = asyncio.run(_async_token(identity_config={"resource_id": env.app.mirid}))
    check_token(token, SCOPE_RESOURCE, env.system)
    token, _ = asyncio.run(_async_token(identity_config={"msi_res_id": env.app.mirid}))
    check_token(token, SCOPE_RESOURCE, env.app)


# --- msal ---------------------------------------------------------------------------


def _msal_token(identity: msal.ManagedIdentity | dict[str, object], resource: str) -> dict:
    with requests.Session() as session:
        client = msal.ManagedIdentityClient(identity, http_client=session)
        result = client.acquire_token_for_client(resource=resource)
        again = client.acquire_token_for_client(resource=resource)
    assert "access_token" in result, result
    assert result["token_type"] == "Bearer"
    assert again["access_token"] == result["access_token"]  # msal's own cache
    return result


def _check_msal(node: Node, result: dict, resource: str, who: Expected) -> None:
    claims = check_token(
        result["access_token"], resource, who, issuer=local_issuer(node.server, who.tenant_id)
    )[1]
    assert abs(claims["exp"] - (time.time() + result["expires_in"])) <= 3


def test_msal_system_assigned(env: Node) -> None:
    result = _msal_token(msal.SystemAssignedManagedIdentity(), MANAGEMENT)
    _check_msal(env, result, MANAGEMENT, env.system)


@pytest.mark.parametrize("key", ["client_id", "resource_id", "object_id"])
def test_msal_user_assigned(env: Node, key: str) -> None:
    value = {
        "client_id": env.app.client_id,
        "resource_id": env.app.mirid,
        "object_id": env.app.object_id,
    }[key]
    result = _msal_token(msal.UserAssignedManagedIdentity(**{key: value}), MANAGEMENT)
    _check_msal(env, result, MANAGEMENT, env.app)


def test_msal_vault_resource_without_slash(env: Node) -> None:
    result = _msal_token(msal.SystemAssignedManagedIdentity(), "https://vault.azure.net")
    _check_msal(env, result, "https://vault.azure.net", env.system)


def test_msal_unknown_identity_is_an_error_result(env: Node) -> None:
    with requests.Session() as session:
        client = msal.ManagedIdentityClient(
            msal.UserAssignedManagedIdentity(client_id=new_guid()), http_client=session
        )
        result = client.acquire_token_for_client(resource=MANAGEMENT)
    assert "access_token" not in result
    assert result["error"] == "invalid_request"
    assert result["error_description"] == "Identity not found"
