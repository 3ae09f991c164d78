"""``azimds get``, run as a user runs it (``python -m azimds get ...``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from azimds.client.protocol import SDK_ENDPOINT_ENV
from azimds.host import state
from tests.client.support import DEFAULT_VM_ID, add_fault, endpoint
from tests.conftest import REPO, ServerThread

ERROR_ANSWER, NO_ANSWER = 1, 3


def azimds_get(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k != SDK_ENDPOINT_ENV
        and not k.startswith("AZIMDS_")
        and not k.lower().endswith("_proxy")
    }
    return subprocess.run(
        [sys.executable, "-m", "azimds", "get", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


def at(server: ServerThread) -> tuple[str, str]:
    return ("--endpoint", endpoint(server))


def test_a_leaf_prints_its_value(server: ServerThread):
    result = azimds_get("instance/compute/vmId", *at(server))
    assert (result.returncode, result.stdout, result.stderr) == (0, DEFAULT_VM_ID + "\n", "")
    text = azimds_get("/metadata/instance/compute/vmId", "--format", "text", *at(server))
    assert text.stdout == DEFAULT_VM_ID + "\n"


def test_json_is_indented_unless_raw(server: ServerThread):
    result = azimds_get("/metadata/instance/compute", *at(server))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('{\n  "additionalCapabilities"')
    assert json.loads(result.stdout)["vmId"] == DEFAULT_VM_ID
    raw = azimds_get("instance/compute", "--raw", *at(server))
    assert raw.stdout.startswith('{"additionalCapabilities":')
    assert not raw.stdout.endswith("\n")  # exactly the bytes IMDS sent
    assert json.loads(raw.stdout) == json.loads(result.stdout)


def test_text_listing(server: ServerThread):
    result = azimds_get("instance/compute", "-f", "text", *at(server))
    assert result.returncode == 0
    assert "tagsList/" in result.stdout.splitlines()


def test_an_error_answer_goes_to_stderr(server: ServerThread):
    result = azimds_get("instance/compute/nothing", *at(server))
    assert result.returncode == ERROR_ANSWER
    assert result.stdout == ""
    assert json.loads(result.stderr) == {"error": "Not found"}
    json_leaf = azimds_get("instance/compute/vmId", "-f", "json", *at(server))
    assert json_leaf.returncode == ERROR_ANSWER
    assert "format" in json.loads(json_leaf.stderr)["error"]


def test_api_version_given_is_sent_as_is(server: ServerThread):
    refused = azimds_get("instance", "--api-version", "2099-01-01", *at(server))
    assert refused.returncode == ERROR_ANSWER
    assert json.loads(refused.stderr)["newest-versions"][0] == "2025-04-07"
    old = azimds_get("instance/compute?api-version=2017-04-02", *at(server))
    assert old.returncode == 0 and "tags" not in json.loads(old.stdout)


def test_a_token(server: ServerThread):
    result = azimds_get("identity/oauth2/token?resource=https://vault.azure.net", *at(server))
    assert result.returncode == 0, result.stderr
    token = json.loads(result.stdout)
    assert token["resource"] == "https://vault.azure.net"
    assert token["token_type"] == "Bearer"


def test_include_prints_status_and_headers(server: ServerThread):
    result = azimds_get("versions", "-i", *at(server))
    head, _, body = result.stdout.partition("\n\n")
    lines = head.splitlines()
    assert lines[0] == "HTTP 200"
    assert "content-type: application/json; charset=utf-8" in lines
    assert json.loads(body)["apiVersions"][-1] == "2025-04-07"


def test_the_sdk_variable_and_proxies(server: ServerThread):
    env = {SDK_ENDPOINT_ENV: endpoint(server), "http_proxy": "http://127.0.0.1:9"}
    env |= {"HTTP_PROXY": "http://127.0.0.1:9", "ALL_PROXY": "http://127.0.0.1:9"}
    result = azimds_get("instance/compute/name", "--no-retry", env=env)
    assert (result.returncode, result.stdout) == (0, "examplevmname\n"), result.stderr


def test_headers_can_be_added_and_metadata_overridden(server: ServerThread):
    result = azimds_get("versions", "-H", "Metadata: false", *at(server))
    assert result.returncode == ERROR_ANSWER
    assert "Required metadata header not specified" in result.stderr
    bad = azimds_get("versions", "-H", "no colon", *at(server))
    assert bad.returncode == 2 and "Name: value" in bad.stderr


def test_post_with_data(server: ServerThread):
    body = '{"StartRequests":[{"EventId":"00000000-0000-0000-0000-000000000000"}]}'
    result = azimds_get("scheduledevents", "-d", body, *at(server))
    assert result.returncode == ERROR_ANSWER
    assert "no scheduled event" in result.stderr


def test_retries_through_failures(faulty: ServerThread):
    add_fault(faulty, actions=[{"status": 429, "retryAfter": 0}, {"status": 503, "retryAfter": 0}])
    result = azimds_get("instance/compute/vmId", *at(faulty))
    assert (result.returncode, result.stdout) == (0, DEFAULT_VM_ID + "\n"), result.stderr


def test_no_retry_shows_the_failure(faulty: ServerThread):
    add_fault(faulty, actions=[503], count=1)
    result = azimds_get("versions", "--no-retry", *at(faulty))
    assert result.returncode == ERROR_ANSWER
    assert "Internal service unavailable" in result.stderr


def test_nothing_listening(faulty: ServerThread):
    result = azimds_get("versions", "--endpoint", "http://127.0.0.1:9", "--deadline", "1")
    assert result.returncode == NO_ANSWER
    assert result.stdout == ""
    assert "no answer from http://127.0.0.1:9/metadata/versions" in result.stderr


CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens there


def stale_node(directory: Path) -> dict[str, str]:
    """A state directory whose node is gone (its guest URL a closed port), as the variable."""
    state.prepare(directory)
    state.admin_token(directory)
    state.write_admin_address(directory, "http://127.0.0.1:9", [CLOSED])
    return {"AZIMDS_STATE_DIR": str(directory)}


def test_a_local_node_is_found_through_the_state_directory(server: ServerThread):
    path = "/metadata/instance/compute/location"
    found = azimds_get(path, env={"AZIMDS_STATE_DIR": str(server.state_dir)})
    assert (found.returncode, found.stdout) == (0, "westus\n"), found.stderr
    said = f"azimds get: asking the node in {server.state_dir}: {endpoint(server)}\n"
    assert found.stderr == said
    flag = azimds_get(path, "--state-dir", str(server.state_dir))
    assert (flag.returncode, flag.stdout, flag.stderr) == (0, "westus\n", said)


def test_an_explicit_endpoint_wins_over_the_state_directory(server: ServerThread, tmp_path):
    stale = stale_node(tmp_path)
    path = "instance/compute/location"
    given = azimds_get(path, *at(server), "--state-dir", str(tmp_path), env=stale)
    assert (given.returncode, given.stdout, given.stderr) == (0, "westus\n", "")
    variable = azimds_get(path, env={**stale, SDK_ENDPOINT_ENV: endpoint(server)})
    assert (variable.returncode, variable.stdout, variable.stderr) == (0, "westus\n", "")


def test_a_gone_local_node_is_named_with_the_fix(tmp_path):
    result = azimds_get("versions", "--no-retry", env=stale_node(tmp_path))
    assert result.returncode == NO_ANSWER
    lines = result.stderr.splitlines()
    assert lines[0] == f"azimds get: asking the node in {tmp_path}: {CLOSED}"
    assert lines[-1].startswith(f"azimds get: nothing answers at {CLOSED}. Fix: start a node")


def test_a_closed_port_shows_its_retries_and_gives_up_in_time():
    started = time.monotonic()
    # The first wait is 2 s +/- 25 %; the second (4 s) would end past the deadline.
    result = azimds_get("versions", "--endpoint", CLOSED, "--deadline", "4")
    assert time.monotonic() - started < 10
    assert (result.returncode, result.stdout) == (NO_ANSWER, "")
    lines = result.stderr.splitlines()
    assert re.fullmatch(
        rf"azimds get: try 1 of {CLOSED}/metadata/versions: no answer \(ConnectError: .+\); "
        r"next try in \d\.\d s",
        lines[0],
    ), result.stderr
    assert lines[1].startswith(f"azimds get: no answer from {CLOSED}/metadata/versions (tries: 2)")
    assert lines[2] == (
        f"azimds get: nothing answers at {CLOSED}. Fix: start a node (`azimds serve`; found "
        f"through --state-dir), or give --endpoint URL or set {SDK_ENDPOINT_ENV}"
    )


@pytest.mark.parametrize("endpoint_", ["ftp://x", "http://"])
def test_a_bad_endpoint_is_a_usage_error(endpoint_: str):
    result = azimds_get("versions", "--endpoint", endpoint_)
    assert result.returncode == 2
    assert "--endpoint" in result.stderr


def test_importing_the_cli_and_the_client_package_leaves_httpx_alone():
    code = (
        "import sys, azimds.cli, azimds.client; "
        "from azimds.client import IMDSError, RetryPolicy; "
        "assert 'httpx' not in sys.modules, 'httpx imported'; "
        "from azimds.client import IMDSClient; assert 'httpx' in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_documentations_examples_run(server: ServerThread, tmp_path):
    """docs/client.md's first two Python examples (sync and async), against the server."""
    doc = (REPO / "docs" / "client.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env[SDK_ENDPOINT_ENV] = endpoint(server)
    printed = []
    for block in blocks[:2]:
        script = tmp_path / "example.py"
        script.write_text(block)
        result = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert DEFAULT_VM_ID in result.stdout
        printed.append(result.stdout)
    assert "westus {'baz': 'bash', 'foo': 'bar'}" in printed[0]
    assert "404 No load balancer metadata is found" in printed[0]
