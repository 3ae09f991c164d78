"""Real clients through injected failures: they retry as they are written to, and get there."""

from __future__ import annotations

from collections.abc import Iterator

import msal
import pytest
import requests
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from tests.admin.support import admin
from tests.conftest import ServerThread

MANAGEMENT = "https://management.azure.com/.default"


@pytest.fixture
def env(node: ServerThread, sdk_env: pytest.MonkeyPatch) -> Iterator[ServerThread]:
    sdk_env.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"http://127.0.0.1:{node.port}")
    yield node
    admin(node).clear_faults()


def token_requests(node: ServerThread, since: int) -> list[tuple[int, bool]]:
    """(status, a fault fired) of each token request after ``since``."""
    log = admin(node).requests(since)
    return [(e["status"], e["fault"] is not None) for e in log if e["category"] == "identity"]


def last_sequence(node: ServerThread) -> int:
    log = admin(node).requests()
    return int(log[-1]["sequence"]) if log else 0


def test_azure_identity_retries_through_410_410_200(env: ServerThread) -> None:
    admin(env).add_fault({"path": "/metadata/identity", "actions": [410, 410]})
    since = last_sequence(env)
    with ManagedIdentityCredential() as credential:
        token = credential.get_token(MANAGEMENT)
    assert token.token.count(".") == 2
    assert token_requests(env, since) == [(410, True), (410, True), (200, False)]


def test_default_credential_gets_through_a_503(env: ServerThread) -> None:
    """In a chain, azure-identity 1.27 probes with a full token request (Metadata header and
    all, no retry): a 503 there still says "IMDS is here", and the next request is served."""
    admin(env).add_fault({"path": "/metadata/identity", "actions": [503], "count": 1})
    since = last_sequence(env)
    with DefaultAzureCredential(
        exclude_environment_credential=True,
        exclude_workload_identity_credential=True,
        exclude_shared_token_cache_credential=True,
        exclude_cli_credential=True,
        exclude_powershell_credential=True,
        exclude_developer_cli_credential=True,
        exclude_visual_studio_code_credential=True,
        exclude_interactive_browser_credential=True,
        exclude_azure_cli_credential=True,
    ) as credential:
        assert credential.get_token(MANAGEMENT).token
    assert token_requests(env, since) == [(503, True), (200, False)]


def test_msal_reports_the_failure_as_the_service_words_it(env: ServerThread) -> None:
    """msal does not retry a 500; it hands the body's error and description to its caller."""
    admin(env).add_fault({"path": "/metadata/identity", "actions": [500], "count": 1})
    with requests.Session() as session:
        identity = msal.SystemAssignedManagedIdentity()
        client = msal.ManagedIdentityClient(identity, http_client=session)
        result = client.acquire_token_for_client(resource="https://vault.azure.net")
        assert result.get("error") == "unknown", result
        assert result["error_description"] == "Failed to retrieve token from the Active directory."
