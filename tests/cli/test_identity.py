"""``azimds identity``, ``azimds token`` and ``azimds keys`` against a running node."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ServerThread, node_fixture

# The node in process; the CLI under test runs as a process of its own.
node = node_fixture("--store", "memory:", scope="module")


def azimds(node: ServerThread, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "azimds", *args]
    if args[0] in ("identity", "keys"):
        command.insert(4, "--state-dir")
        command.insert(5, str(node.state_dir))
    else:
        command += ["--state-dir", str(node.state_dir)]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def test_identity_lifecycle_and_tokens(node: ServerThread) -> None:
    listed = azimds(node, "identity", "list", "examplevmname")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[0] == "system"

    added = azimds(node, "identity", "add", "examplevmname", "--name", "cli-app")
    assert added.returncode == 0, added.stderr
    client_id = added.stdout.split("client id ")[1].split(")")[0]

    token = azimds(node, "token", "--resource", "https://vault.azure.net", "--client-id", client_id)
    assert token.returncode == 0, token.stderr
    decoded = json.loads(token.stdout[: token.stdout.rindex("}") + 1])
    assert decoded["claims"]["appid"] == client_id
    assert decoded["claims"]["aud"] == "https://vault.azure.net"
    assert decoded["claims"]["xms_mirid"].endswith("/userAssignedIdentities/cli-app")
    assert decoded["header"]["kid"] == decoded["header"]["x5t"]
    assert f"client id {client_id}, expires " in token.stdout

    raw = azimds(node, "token", "--resource", "https://vault.azure.net", "--raw")
    answer = json.loads(raw.stdout)
    assert list(answer) == [
        "access_token", "client_id", "expires_in", "expires_on", "ext_expires_in",
        "not_before", "resource", "token_type",
    ]  # fmt: skip

    assert azimds(node, "identity", "disable", "examplevmname").returncode == 0
    # Only one user-assigned identity left: it is used when none is named.
    fallback = azimds(node, "token", "--resource", "https://vault.azure.net", "--raw")
    assert json.loads(fallback.stdout)["client_id"] == client_id
    assert azimds(node, "identity", "rm", "examplevmname", "cli-app").returncode == 0
    refused = azimds(node, "token", "--resource", "https://vault.azure.net")
    assert refused.returncode == 1
    assert (
        'Error: 400: {"error": "invalid_request", "error_description": "Identity not found"}'
        in refused.stderr
    )
    assert azimds(node, "identity", "enable", "examplevmname").returncode == 0


def test_keys_list_and_rotate(node: ServerThread) -> None:
    before = azimds(node, "keys", "list").stdout.splitlines()
    assert before[0].split() == ["KID", "ACTIVE", "CREATED", "RETIRES"]
    rotated = azimds(node, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    new_kid = rotated.stdout.split()[3].rstrip(";")
    after = azimds(node, "keys", "list").stdout.splitlines()
    assert len(after) == len(before) + 1
    assert any(line.split()[:2] == [new_kid, "yes"] for line in after)


def test_errors(node: ServerThread) -> None:
    missing = azimds(node, "identity", "rm", "examplevmname", "nobody")
    assert missing.returncode == 1
    vm_id = "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
    assert f"404 not_found: VM {vm_id} has no user-assigned identity 'nobody'" in missing.stderr
    empty = azimds(node, "identity", "add", "examplevmname")
    assert empty.returncode == 2 and "give at least --name or --client-id" in empty.stderr
