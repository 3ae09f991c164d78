"""admin.json, where the CLI finds a node: there while the node runs, gone when it stops, and
as good as absent when the node that wrote it was killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from azimds.cli import main
from azimds.host import state
from azimds.kit.local import LocalIMDS
from tests.conftest import ServerProcess


def gone_pid() -> int:
    """The pid of a process that has run and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def write_address(state_dir: Path, pid: int | None) -> None:
    state.prepare(state_dir)
    state.admin_token(state_dir)
    address = {"url": "http://127.0.0.1:9", "guest": ["http://127.0.0.1:8"]}
    if pid is not None:
        address["pid"] = pid
    (state_dir / state.ADMIN_FILE).write_text(json.dumps(address))


def test_a_node_removes_its_admin_json_when_it_stops(tmp_path: Path) -> None:
    with LocalIMDS(set_environment=False, state_dir=tmp_path) as node:
        written = json.loads((tmp_path / state.ADMIN_FILE).read_text())
        expected = {"url": node.admin_url, "guest": [node.url], "pid": os.getpid()}
        assert written == {**expected, "wireserver": None, "hostplugin": None}  # not served
        assert state.read_admin(tmp_path)["url"] == node.admin_url
    assert not (tmp_path / state.ADMIN_FILE).exists()
    assert (tmp_path / state.TOKEN_FILE).exists()  # the token stays: the next node reuses it


def test_an_admin_json_another_process_wrote_is_left_alone(tmp_path: Path) -> None:
    with state.admin_address_kept(tmp_path):
        write_address(tmp_path, os.getpid() + 1)
    assert (tmp_path / state.ADMIN_FILE).exists()
    with state.admin_address_kept(tmp_path):  # a node that never wrote one: nothing to do
        (tmp_path / state.ADMIN_FILE).unlink()
    assert not (tmp_path / state.ADMIN_FILE).exists()


def test_an_admin_json_whose_node_is_gone_reads_as_absent(tmp_path: Path) -> None:
    pid = gone_pid()
    write_address(tmp_path, pid)
    with pytest.raises(state.StaleAddress, match=f"left by pid {pid}, which no longer runs"):
        state.read_admin(tmp_path)
    assert issubclass(state.StaleAddress, OSError)  # what readers catch for a missing file


@pytest.mark.parametrize("pid", [None, "self"])
def test_an_admin_json_of_a_running_or_older_node_is_read(tmp_path: Path, pid: str) -> None:
    write_address(tmp_path, os.getpid() if pid == "self" else None)  # None: before pids
    assert state.read_admin(tmp_path)["url"] == "http://127.0.0.1:9"


def test_the_cli_does_not_follow_a_killed_nodes_admin_json(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    node = ServerProcess(state_dir=state_dir)
    node.proc.kill()  # SIGKILL: no chance to remove admin.json
    node.stop()
    assert json.loads((state_dir / state.ADMIN_FILE).read_text())["pid"] == node.proc.pid
    result = CliRunner().invoke(main, ["vm", "--state-dir", str(state_dir), "list"])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: no running azimds found in {state_dir} ({state_dir / state.ADMIN_FILE} was "
        f"left by pid {node.proc.pid}, which no longer runs). Start `azimds serve`, or give "
        "--state-dir, or --admin URL and --token\n"
    )
