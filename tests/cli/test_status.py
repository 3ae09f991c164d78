"""``--ready-file``, ``azimds wait`` and ``azimds status``: a node as a CI script sees it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from azimds import __version__
from azimds.host import state
from tests.conftest import ServerProcess
from tests.http import get
from tests.waiting import within


def azimds(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "azimds", *args], capture_output=True, text=True, timeout=30
    )


def serve(state_dir: Path, *args: str) -> subprocess.Popen[str]:
    """``azimds serve &`` as a CI script runs it: nothing waits for its banner."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZIMDS_")}
    command = [sys.executable, "-m", "azimds", "serve", "--state-dir", str(state_dir)]
    command += ["--store", "memory:", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
    return subprocess.Popen(
        [*command, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=10)


def read_json(path: Path) -> Any:
    """The file's JSON, or None while there is none (never half of one: it is renamed in)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_the_ready_file_appears_once_the_node_serves_and_goes_when_it_stops(
    tmp_path: Path,
) -> None:
    ready = tmp_path / "ready.json"
    ready.write_text('{"pid": 1}')  # left by a node killed with -9: replaced, not believed
    process = serve(tmp_path / "state", "--ready-file", str(ready))
    try:
        within(20, lambda: (read_json(ready) or {}).get("pid") == process.pid, "ready file")
        written = read_json(ready)
        # Both planes answer the moment it exists.
        (guest,) = written["guest"]
        assert get(urlsplit(guest).port or 0, "/metadata/versions").status == 200
        admin = urlsplit(written["controlPlane"]).port or 0
        assert get(admin, "/healthz", metadata=None).status == 200
        assert written["controlPlane"] == state.read_admin(tmp_path / "state")["url"]
        assert (written["wireserver"], written["hostplugin"]) == (None, None)  # not served
    finally:
        assert stop(process) == 0
    assert not ready.exists()


def test_a_ready_file_in_no_directory_stops_start_up(tmp_path: Path) -> None:
    where = tmp_path / "missing" / "ready.json"
    result = azimds("serve", "--state-dir", str(tmp_path), "--ready-file", str(where))
    assert result.returncode == 1
    assert f"ready_file: {where.parent} is not a directory" in result.stderr


@pytest.mark.parametrize("mode", ["single", "source-ip"])
def test_wait_returns_once_a_node_started_just_before_serves(tmp_path: Path, mode: str) -> None:
    process = serve(tmp_path, "--caller-mode", mode)
    try:
        result = azimds("wait", "--state-dir", str(tmp_path), "--timeout", "20")
        assert result.returncode == 0, result.stderr
        (guest,) = state.read_admin(tmp_path)["guest"]
        # source-ip: this host is no VM, refused by a guest plane that serves.
        expected = 200 if mode == "single" else 403
        assert get(urlsplit(guest).port or 0, "/metadata/versions").status == expected
    finally:
        stop(process)


def test_wait_keeps_polling_for_a_node_started_after_it(tmp_path: Path) -> None:
    waiting = subprocess.Popen(
        [sys.executable, "-m", "azimds", "wait", "--state-dir", str(tmp_path), "--timeout", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert waiting.stderr is not None
    first = waiting.stderr.readline()  # it has looked, and found nothing yet
    assert f"waiting for azimds: no node has written {tmp_path / 'admin.json'}" in first
    node = ServerProcess("--store", "memory:", state_dir=tmp_path)
    try:
        _, rest = waiting.communicate(timeout=20)
        assert waiting.returncode == 0, first + rest
    finally:
        node.stop()


def test_wait_says_what_is_not_ready_when_nothing_runs(tmp_path: Path) -> None:
    result = azimds("wait", "--state-dir", str(tmp_path), "--timeout", "0.5")
    assert result.returncode == 1
    assert (
        f"azimds is not ready after 0.5s: no node has written {tmp_path / 'admin.json'}"
        in result.stderr
    )
    assert f"with the state directory {tmp_path}?" in result.stderr


def test_status_describes_the_running_node(tmp_path: Path) -> None:
    node = ServerProcess("--store", "memory:", state_dir=tmp_path)
    try:
        result = azimds("status", "--json", "--state-dir", str(tmp_path))
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        assert status["pid"] == node.proc.pid
        assert status["version"] == __version__
        assert status["guest"] == [f"http://127.0.0.1:{node.port}"]
        assert status["controlPlane"] == node.admin_url
        assert (status["store"], status["storeReachable"]) == ("memory:", True)
        assert status["vms"] == 1
        assert status["revision"] > 0
        assert 0 <= status["uptime"] < 60
        assert (status["wireserver"], status["hostplugin"]) == (None, None)
        text = azimds("status", "--state-dir", str(tmp_path)).stdout
        assert f"guest plane    http://127.0.0.1:{node.port}\n" in text
        assert "store          memory: (reachable), revision" in text
        assert "WireServer" not in text and "host plugin" not in text
    finally:
        node.stop()
    stopped = azimds("status", "--state-dir", str(tmp_path))  # its admin.json went with it
    assert stopped.returncode == 1
    assert f"no running azimds found in {tmp_path} ([Errno 2]" in stopped.stderr
    nothing = azimds("status", "--state-dir", str(tmp_path / "none"))
    assert nothing.returncode == 1
    assert f"no running azimds found in {tmp_path / 'none'}" in nothing.stderr


def test_the_wireservers_listeners_are_listed_everywhere_the_guest_planes_are(
    tmp_path: Path,
) -> None:
    ready = tmp_path / "ready.json"
    wire = ("--wireserver-listen", "127.0.0.1:0", "--hostplugin-listen", "127.0.0.1:0")
    node = ServerProcess("--store", "memory:", "--ready-file", str(ready), *wire)
    try:
        wireserver = re.search(r"\n  WireServer on (http://127\.0\.0\.1:\d+)\n", node.banner)
        hostplugin = re.search(r"\n  host plugin on (http://127\.0\.0\.1:\d+)\n", node.banner)
        assert wireserver and hostplugin, node.banner
        urls = {"wireserver": wireserver.group(1), "hostplugin": hostplugin.group(1)}
        assert get(urlsplit(urls["wireserver"]).port or 0, "/?comp=versions").status == 200
        assert get(urlsplit(urls["hostplugin"]).port or 0, "/versions").status == 200
        admin_json = json.loads((node.state_dir / state.ADMIN_FILE).read_text())
        for found in (read_json(ready), admin_json):
            assert {key: found[key] for key in urls} == urls
        status = json.loads(azimds("status", "--json", "--state-dir", str(node.state_dir)).stdout)
        assert {key: status[key] for key in urls} == urls
        text = azimds("status", "--state-dir", str(node.state_dir)).stdout
        assert f"\n  WireServer     {urls['wireserver']}\n" in text
        assert f"\n  host plugin    {urls['hostplugin']}\n" in text
    finally:
        node.stop()
