"""The ``azimds`` command as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.admin.support import admin
from tests.conftest import ServerProcess, ServerThread
from tests.http import get


def azimds(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "azimds", *args], capture_output=True, text=True, timeout=30
    )


def test_help_explains_the_commands() -> None:
    result = azimds("--help")
    assert result.returncode == 0
    assert "Azure Instance Metadata Service" in result.stdout
    assert "serve" in result.stdout
    serve = azimds("serve", "--help").stdout
    for word in ("--config", "--listen", "--log-level", "AZIMDS_LISTEN", "169.254.169.254:80"):
        assert word in serve


def test_version() -> None:
    assert azimds("--version").stdout.startswith("azimds, version ")


def test_banner_tells_how_to_reach_it() -> None:
    server = ServerProcess()  # a process: the banner is what it prints
    banner = server.banner
    server.stop()
    url = f"http://127.0.0.1:{server.port}"
    assert f'curl -s -H Metadata:true "{url}/metadata/instance?api-version=2021-02-01"' in banner
    assert f"export AZURE_POD_IDENTITY_AUTHORITY_HOST={url}\n" in banner
    assert "vmId 02aab8a4-74ef-476e-8182-f6d2ba4166a6" in banner


def test_a_source_ip_banner_says_the_curl_is_a_vms(tmp_path: Path) -> None:
    """This host is no VM: a curl from it gets the unknown caller's 403."""
    node = ServerProcess("--caller-mode", "source-ip", state_dir=tmp_path)
    try:
        assert "  try from a VM (any other caller gets 403):\n" in node.banner, node.banner
        assert get(node.port, "/metadata/instance?api-version=2021-02-01").status == 403
    finally:
        node.stop()


def test_several_listeners_serve_the_same_vm() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        other = probe.getsockname()[1]
    process = ServerProcess("--listen", f"127.0.0.1:{other}")
    try:
        target = "/metadata/instance/compute/name?api-version=2021-02-01&format=text"
        assert get(process.port, target).body == get(other, target).body == b"examplevmname"
    finally:
        process.stop()


def test_port_in_use_is_a_clear_error(server: ServerProcess, tmp_path: Path) -> None:
    # Its own state directory: the default one's lock may be held by a node of the user's.
    result = azimds("serve", "--state-dir", str(tmp_path), "--listen", f"127.0.0.1:{server.port}")
    assert result.returncode == 1
    assert (
        f"Error: --listen: cannot listen on 127.0.0.1:{server.port}: the port is in use. "
        "Fix: give another --listen HOST:PORT (port 0 picks a free one)"
    ) in result.stderr


def test_the_control_plane_on_the_guest_planes_port_is_a_clear_error(tmp_path: Path) -> None:
    """Both planes given one port: the guest plane holds it from its claim on, so the
    control plane's claim fails plainly; nothing is served, no banner is printed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = azimds(
        "serve", "--state-dir", str(tmp_path),
        "--listen", f"127.0.0.1:{port}", "--admin-listen", f"0.0.0.0:{port}",
    )  # fmt: skip
    assert result.returncode == 1
    assert (
        f"Error: --admin-listen: cannot listen on 0.0.0.0:{port}: the port is in use. "
        "Fix: give another --admin-listen HOST:PORT"
    ) in result.stderr
    assert "listening on" not in result.stdout


def test_missing_address_is_a_clear_error(tmp_path: Path) -> None:
    # TEST-NET-1: on no interface
    result = azimds("serve", "--state-dir", str(tmp_path), "--listen", "192.0.2.1:16925")
    assert result.returncode == 1
    assert "no interface of this host has that address" in result.stderr
    assert "ip addr add 192.0.2.1/32 dev lo" in result.stderr


def test_sigterm_stops_cleanly() -> None:
    process = ServerProcess()
    process.proc.send_signal(signal.SIGTERM)
    assert process.stop() == 0


def test_node_options_come_before_or_after_the_subcommand(server: ServerThread) -> None:
    """`azimds vm list --state-dir DIR` as well as `azimds vm --state-dir DIR list`."""
    where = str(server.state_dir)
    after = azimds("vm", "list", "--state-dir", where)
    before = azimds("vm", "--state-dir", where, "list")
    assert after.returncode == before.returncode == 0, after.stderr + before.stderr
    assert after.stdout == before.stdout
    assert "examplevmname" in after.stdout


def test_keys_list_json_is_the_control_planes_answer(server: ServerThread) -> None:
    listed = azimds("keys", "list", "--json", "--state-dir", str(server.state_dir))
    assert listed.returncode == 0, listed.stderr
    keys = json.loads(listed.stdout)
    assert [key["kid"] for key in keys] == [key["kid"] for key in admin(server).signing_keys()]


def test_a_wrong_token_is_told_where_the_token_lives(server: ServerThread, tmp_path: Path) -> None:
    result = azimds(
        "vm", "list", "--admin", server.admin_url, "--token", "wrong",
        "--state-dir", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: 401 unauthorized: send Authorization: Bearer <token>. The token is --token, "
        f"AZIMDS_ADMIN_TOKEN, or the node's admin-token file: {tmp_path / 'admin-token'} here"
        " (--state-dir names another)"
    )


def test_config_prints_each_setting_with_where_it_comes_from(tmp_path: Path) -> None:
    config = tmp_path / "vm.yaml"
    config.write_text("clock: manual\n")
    environment = {**os.environ, "AZIMDS_STORE": "postgresql://azimds:s3cret@db/azimds"}
    command = [sys.executable, "-m", "azimds", "config", "--config", str(config), "--json"]
    result = subprocess.run(
        [*command, "--listen", "0.0.0.0:16925"],
        capture_output=True, text=True, timeout=30, env=environment,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = {row["setting"]: (row["value"], row["from"]) for row in json.loads(result.stdout)}
    assert rows["listen"] == ("0.0.0.0:16925", "--listen")
    assert rows["store"] == ("postgresql://azimds:***@db/azimds", "AZIMDS_STORE")
    assert rows["clock"] == ("manual", str(config))
    assert rows["log_level"] == ("info", "defaults")
    assert "s3cret" not in result.stdout


def test_config_refuses_what_serve_refuses() -> None:
    result = azimds("config", "--listen", "nonsense")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: invalid configuration in --listen: listen: 'nonsense'")
