"""One node per state directory: a second ``azimds serve`` on it refuses to start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from azimds.kit.local import KitError, LocalIMDS
from tests.conftest import ServerProcess
from tests.http import get


def second_serve(state_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "azimds", "serve", "--state-dir", str(state_dir)]
    command += ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def test_a_second_node_on_the_state_directory_is_refused(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    first = ServerProcess(state_dir=state_dir)  # processes: the lock is between processes
    try:
        admin_json = (state_dir / "admin.json").read_text()
        token = (state_dir / "admin-token").read_text()
        lock = state_dir / "azimds.lock"
        assert lock.read_text() == f"{first.proc.pid}\n"
        assert lock.stat().st_mode & 0o777 == 0o600

        result = second_serve(state_dir)
        assert result.returncode == 1
        assert result.stdout == ""  # no banner: it served nothing
        assert result.stderr == (
            f"Error: state directory {state_dir} is in use by another azimds "
            f"(pid {first.proc.pid}, which holds {lock}). "
            "Fix: stop that node, or give this one another --state-dir\n"
        )
        # The first is untouched: still serving, and still the node the CLI finds.
        assert (state_dir / "admin.json").read_text() == admin_json
        assert json.loads(admin_json)["url"] == first.admin_url
        assert (state_dir / "admin-token").read_text() == token
        assert lock.read_text() == f"{first.proc.pid}\n"
        assert get(first.port, "/metadata/versions").status == 200
    finally:
        assert first.stop() == 0
    assert lock.read_text() == ""  # released, pid cleared


@pytest.mark.parametrize("how", ["stop", "kill -9"])
def test_a_restart_after_the_first_ends_is_not_blocked(tmp_path: Path, how: str) -> None:
    state_dir = tmp_path / "state"
    first = ServerProcess(state_dir=state_dir)
    if how == "stop":
        first.stop()
    else:
        first.proc.kill()  # the lock file stays, with its pid; the kernel dropped the lock
        assert first.stop() == -9
        assert (state_dir / "azimds.lock").read_text() == f"{first.proc.pid}\n"
    again = ServerProcess(state_dir=state_dir)
    try:
        assert json.loads((state_dir / "admin.json").read_text())["url"] == again.admin_url
        assert (state_dir / "azimds.lock").read_text() == f"{again.proc.pid}\n"
    finally:
        again.stop()


def test_nodes_in_one_process_each_have_their_own_directory() -> None:
    """The kit starts several nodes in a process: each in a directory of its own."""
    with LocalIMDS(set_environment=False) as one, LocalIMDS(set_environment=False) as two:
        assert get(one.port, "/metadata/versions").status == 200
        assert get(two.port, "/metadata/versions").status == 200


def test_the_kit_on_a_directory_in_use_says_so(tmp_path: Path) -> None:
    in_use = rf"azimds did not start: state directory {tmp_path} is in use by another azimds"
    with (
        LocalIMDS(set_environment=False, state_dir=tmp_path),
        pytest.raises(KitError, match=in_use),
    ):
        LocalIMDS(set_environment=False, state_dir=tmp_path).start()
