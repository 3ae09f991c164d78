"""Nothing acknowledged is lost: restarts, kill -9, and declarations from files."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from azimds.admin.client import AdminError
from tests.admin.support import admin, new_vm, refused
from tests.conftest import Server, ServerProcess, ServerThread
from tests.http import get


def guest_name(node: Server) -> bytes:
    return get(node.port, "/metadata/instance/compute/name?api-version=2021-02-01&format=text").body


def test_changes_survive_a_restart(tmp_path: Path) -> None:
    node = ServerThread(state_dir=tmp_path)
    admin(node).create_vm(new_vm("kept", "10.3.0.4"))
    admin(node).patch_vm("examplevmname", {"compute": {"name": "renamed"}})
    node.stop()
    node = ServerThread(state_dir=tmp_path)
    try:
        names = sorted(vm["name"] for vm in admin(node).vms()["vms"])
        assert names == ["kept", "renamed"]
        # The config's VM did not change, so the control plane's change stands.
        assert guest_name(node) == b"renamed"
        assert (tmp_path / "azimds.db").stat().st_mode & 0o777 == 0o600
    finally:
        node.stop()


def test_a_changed_config_declaration_wins_at_start(tmp_path: Path) -> None:
    config = tmp_path / "azimds.yaml"
    config.write_text("vm: {compute: {name: from-file}}\n")
    state = tmp_path / "state"
    node = ServerThread("--config", str(config), state_dir=state)
    assert guest_name(node) == b"from-file"
    admin(node).patch_vm("from-file", {"compute": {"name": "from-api"}})
    node.stop()
    node = ServerThread("--config", str(config), state_dir=state)  # file unchanged
    assert guest_name(node) == b"from-api"
    node.stop()
    config.write_text("vm: {compute: {name: edited-file}}\n")
    node = ServerThread("--config", str(config), state_dir=state)  # file changed
    try:
        assert guest_name(node) == b"edited-file"
    finally:
        node.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_loses_no_acknowledged_change(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """Changes stream in from two writers; the node is killed at a random moment."""
    store: tuple[str, ...] = ()
    if backend == "postgresql":
        store = ("--store", request.getfixturevalue("postgres").new_database())
    node = ServerProcess(*store, state_dir=tmp_path)  # a process: it is killed
    acknowledged: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(prefix: str) -> None:
        n = 0
        while not stop.is_set():
            name = f"{prefix}-{n}"
            try:
                vm = admin(node).create_vm(
                    new_vm(name, f"10.{50 + len(prefix)}.{n // 250}.{n % 250 + 1}")
                )
            except AdminError as exc:
                if not exc.status:
                    return  # the node is gone; this write was never acknowledged
            else:
                with lock:
                    acknowledged[vm["compute"]["vmId"]] = name
            n += 1

    threads = [threading.Thread(target=writer, args=(p,)) for p in ("w", "ww")]
    for thread in threads:
        thread.start()
    time.sleep(random.uniform(0.8, 1.5))
    node.proc.send_signal(signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join()
    node.stop()
    assert len(acknowledged) > 10

    node = ServerThread(*store, state_dir=tmp_path)
    try:
        stored = {vm["vmId"]: vm["name"] for vm in admin(node).vms()["vms"]}
        missing = {k: v for k, v in acknowledged.items() if stored.get(k) != v}
        assert missing == {}
        # The store is consistent: every stored VM is whole and its address is claimed.
        for vm_id in stored:
            vm = admin(node).vm(vm_id)
            address = (
                vm["network"]["interface"][0]["ipv4"]["ipAddress"][0]["privateIpAddress"]
                if vm["network"]["interface"]
                else None
            )
            if address:
                clash = refused(admin(node).create_vm, new_vm("clash", address))
                assert clash.status == 409
    finally:
        node.stop()


def test_fleet_file_is_applied_and_watched(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        yaml.safe_dump({"vms": [new_vm("f-1", "10.4.0.1"), new_vm("f-2", "10.4.0.2")]})
    )
    node = ServerThread("--fleet", str(fleet), "--watch", "--store", "memory:")
    try:
        admin(node).create_vm(new_vm("api-made", "10.4.0.9"))

        def names() -> list[str]:
            return sorted(vm["name"] for vm in admin(node).vms()["vms"])

        assert names() == ["api-made", "examplevmname", "f-1", "f-2"]
        # An invalid edit changes nothing and is logged.
        fleet.write_text("vms: [{compute: {name: broken, nope: 1}}]\n")
        deadline = time.monotonic() + 5
        while not any("not applied" in line for line in node.output):
            assert time.monotonic() < deadline, node.output
            time.sleep(0.1)
        assert names() == ["api-made", "examplevmname", "f-1", "f-2"]
        # A valid edit applies whole: f-2 goes, f-3 comes, VMs made elsewhere stay.
        fleet.write_text(
            yaml.safe_dump({"vms": [new_vm("f-1", "10.4.0.1"), new_vm("f-3", "10.4.0.3")]})
        )
        deadline = time.monotonic() + 5
        while names() != ["api-made", "examplevmname", "f-1", "f-3"]:
            assert time.monotonic() < deadline, names()
            time.sleep(0.1)
    finally:
        node.stop()


def test_bad_fleet_file_stops_start_up(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({"vms": [new_vm("a", "10.5.0.1"), new_vm("b", "10.5.0.1")]}))
    command = [sys.executable, "-m", "azimds", "serve", "--fleet", str(fleet), "--store", "memory:"]
    command += ["--state-dir", str(tmp_path / "s"), "--listen", "127.0.0.1:0"]
    command += ["--admin-listen", "127.0.0.1:0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"invalid configuration in {fleet}" in result.stderr
    assert "address 10.5.0.1 already belongs to VM" in result.stderr


def test_invalid_fleet_entry_names_file_entry_and_fix(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("vms:\n  - compute: {name: ok}\n  - compute: {name: bad, zoen: 1}\n")
    command = [sys.executable, "-m", "azimds", "serve", "--fleet", str(fleet), "--store", "memory:"]
    command += ["--state-dir", str(tmp_path / "s"), "--listen", "127.0.0.1:0"]
    command += ["--admin-listen", "127.0.0.1:0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr == (
        f"Error: invalid configuration in {fleet}: vms[1].compute.zoen: unknown field. "
        "Fix: did you mean 'zone'?\n"
    )
