"""``--ready-file``: a node as a CI script sees it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from azimds import state
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
    finally:
        assert stop(process) == 0
    assert not ready.exists()


def test_a_ready_file_in_no_directory_stops_start_up(tmp_path: Path) -> None:
    where = tmp_path / "missing" / "ready.json"
    result = azimds("serve", "--state-dir", str(tmp_path), "--ready-file", str(where))
    assert result.returncode == 1
    assert f"ready_file: {where.parent} is not a directory" in result.stderr
