"""The test kit's in-process node: the ``imds`` fixture and ``LocalIMDS``, driving real clients."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import msal
import pytest
import requests
from azure.core.pipeline.transport import AsyncioRequestsTransport
from azure.identity import ManagedIdentityCredential
from azure.identity.aio import ManagedIdentityCredential as AsyncManagedIdentityCredential

from azimds.config.settings import ConfigError
from azimds.kit.local import LocalIMDS

ENV = "AZURE_POD_IDENTITY_AUTHORITY_HOST"
VAULT = "https://vault.azure.net"


def guest(imds: LocalIMDS, path: str, method: str = "GET", body: bytes | None = None) -> bytes:
    request = urllib.request.Request(
        imds.url + path, data=body, method=method, headers={"Metadata": "true"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        data: bytes = answer.read()
        return data


def verified_claims(imds: LocalIMDS, token: str) -> dict[str, object]:
    """The token's claims, after checking its signature against the node's JWKS."""
    header = jwt.get_unverified_header(token)
    (key,) = [k for k in imds.jwks()["keys"] if k["kid"] == header["kid"]]
    public = jwt.PyJWK(key).key
    claims: dict[str, object] = jwt.decode(
        token, public, algorithms=["RS256"], audience=VAULT, options={"verify_iss": False}
    )
    return claims


def test_azure_identity_gets_a_token_from_the_fixture(
    imds: LocalIMDS, sdk_env: pytest.MonkeyPatch
) -> None:
    sdk_env.setenv(ENV, imds.url)  # sdk_env cleared it; the fixture had set exactly this
    with ManagedIdentityCredential() as credential:
        token = credential.get_token(f"{VAULT}/.default").token
    claims = verified_claims(imds, token)
    assert claims["xms_mirid"].endswith("/virtualMachines/examplevmname")  # type: ignore[union-attr]


def test_the_async_credential_and_a_user_identity(
    imds: LocalIMDS, sdk_env: pytest.MonkeyPatch
) -> None:
    sdk_env.setenv(ENV, imds.url)
    identity = imds.vm.add_identity("reporting")
    client_id = identity["clientId"]

    async def get_token() -> str:
        # requests in a thread (no aiohttp needed): the same wire requests.
        async with AsyncManagedIdentityCredential(
            client_id=client_id, transport=AsyncioRequestsTransport()
        ) as credential:
            return (await credential.get_token(f"{VAULT}/.default")).token

    assert verified_claims(imds, asyncio.run(get_token()))["appid"] == client_id


def test_msal_and_the_requests_log(imds: LocalIMDS, sdk_env: pytest.MonkeyPatch) -> None:
    sdk_env.setenv(ENV, imds.url)
    with requests.Session() as session:
        client = msal.ManagedIdentityClient(
            msal.SystemAssignedManagedIdentity(), http_client=session
        )
        result = client.acquire_token_for_client(resource=VAULT)
    assert result["token_type"] == "Bearer", result
    (entry,) = [e for e in imds.requests() if e["category"] == "identity"]
    assert (entry["status"], entry["path"]) == (200, "/metadata/identity/oauth2/token")


def test_the_environment_is_set_and_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "http://before")
    with LocalIMDS() as imds:
        assert os.environ[ENV] == imds.url
    assert os.environ[ENV] == "http://before"
    monkeypatch.delenv(ENV)
    with LocalIMDS():
        pass
    assert ENV not in os.environ
    with LocalIMDS(set_environment=False):
        assert ENV not in os.environ


def test_document_changes_show_at_once(imds: LocalIMDS) -> None:
    imds.vm.patch({"compute": {"tags": {"env": "ci"}, "userData": "aGVsbG8="}})
    tags = json.loads(guest(imds, "/metadata/instance/compute/tagsList?api-version=2021-02-01"))
    assert {"name": "env", "value": "ci"} in tags
    data = guest(imds, "/metadata/instance/compute/userData?api-version=2021-01-01&format=text")
    assert base64.b64decode(data) == b"hello"


@pytest.mark.imds(clock="manual")
def test_events_on_a_manual_clock(imds: LocalIMDS) -> None:
    event = imds.events.schedule("Reboot", duration=30)
    document = json.loads(guest(imds, "/metadata/scheduledevents?api-version=2020-07-01"))
    assert [e["EventId"] for e in document["Events"]] == [event["eventId"]]
    approval = json.dumps({"StartRequests": [{"EventId": event["eventId"]}]}).encode()
    guest(imds, "/metadata/scheduledevents?api-version=2020-07-01", "POST", approval)
    assert imds.events.list()[0]["status"] == "Started"
    imds.events.advance(31)
    assert imds.events.list() == []


def test_faults_from_the_fixture(imds: LocalIMDS) -> None:
    rule = imds.faults.add(410, {"status": 429, "retryAfter": 2}, path="/metadata/instance")
    leaf = "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text"
    answers = []
    for _ in range(3):
        answer = requests.get(imds.url + leaf, headers={"Metadata": "true"}, timeout=5)
        answers.append((answer.status_code, answer.headers.get("Retry-After")))
    assert answers == [(410, None), (429, "2"), (200, None)]
    assert imds.faults.list()[0]["id"] == rule["id"]
    assert imds.faults.clear() == 1


def test_attested_document_verifies_against_the_fixtures_root(
    imds: LocalIMDS, tmp_path: Path
) -> None:
    document = json.loads(guest(imds, "/metadata/attested/document?api-version=2020-09-01"))
    (tmp_path / "signature.der").write_bytes(base64.b64decode(document["signature"]))
    # Trusted: the root; the intermediate may come from anywhere (here: the kit).
    (tmp_path / "chain.pem").write_bytes(
        imds.certificate("root") + imds.certificate("intermediate")
    )
    command = ["openssl", "smime", "-verify", "-inform", "DER", "-in", "signature.der"]
    verify = subprocess.run(
        [*command, "-CAfile", "chain.pem", "-purpose", "any"],
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
    )
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout)["vmId"] == "02aab8a4-74ef-476e-8182-f6d2ba4166a6"


def test_a_bad_setting_fails_start_with_its_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "http://before")
    with pytest.raises(ConfigError, match=r"caller_mode.*'telepathy' is not allowed"):
        LocalIMDS(caller_mode="telepathy").start()
    assert os.environ[ENV] == "http://before"


def test_the_plugin_is_installed_for_any_project(tmp_path: Path) -> None:
    """A project that installs azimds gets the fixture with no conftest at all."""
    (tmp_path / "test_theirs.py").write_text(
        textwrap.dedent(
            """
            import os, urllib.request

            def test_uses_imds(imds):
                base = os.environ["AZURE_POD_IDENTITY_AUTHORITY_HOST"]
                request = urllib.request.Request(
                    base + "/metadata/instance/compute/name?api-version=2021-02-01&format=text",
                    headers={"Metadata": "true"},
                )
                assert urllib.request.urlopen(request).read() == b"examplevmname"
            """
        )
    )
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_the_documented_examples_pass() -> None:
    """examples/pytest, the runnable form of docs/testing.md's examples."""
    examples = Path(__file__).resolve().parents[2] / "examples" / "pytest"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(examples)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


@pytest.mark.parametrize("script", ["local-dev.sh", "ci-job.sh"])
def test_the_example_scripts_run(script: str) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    bin_dir = str(Path(sys.executable).parent)  # where the venv's azimds command is
    result = subprocess.run(
        ["bash", str(examples / script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    expected = {
        "local-dev.sh": "web-1\nenv:staging\n1\n",
        "ci-job.sh": '02aab8a4-74ef-476e-8182-f6d2ba4166a6\n"token_type":"Bearer"\n',
    }
    assert result.stdout == expected[script]


@pytest.mark.imds(rate_limit="on")
def test_the_documented_rate_limit_marker(imds: LocalIMDS) -> None:
    """docs/testing.md's marker: the default limits, 5 a second, so a burst of 8 meets 429s."""
    path = "/metadata/instance/compute/name?api-version=2021-02-01&format=text"
    statuses = []
    for _ in range(8):
        try:
            guest(imds, path)
            statuses.append(200)
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)
    assert statuses[:5] == [200] * 5
    assert 429 in statuses[5:]


def test_a_misspelt_setting_is_refused_with_the_closest_name() -> None:
    with pytest.raises(ConfigError, match=r"clok: unknown setting\. Fix: did you mean 'clock'\?"):
        LocalIMDS(clok="manual")


def test_the_marker_refuses_a_misspelt_setting(tmp_path: Path) -> None:
    """Through the plugin, as a user meets it: the test errors, naming the setting to use."""
    (tmp_path / "test_theirs.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.imds(clok="manual")
            def test_it(imds):
                pass
            """
        )
    )
    result = run_pytest(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout
    assert "clok: unknown setting. Fix: did you mean 'clock'?" in result.stdout


def run_pytest(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """pytest in a child process on the test files written to ``tmp_path``."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
