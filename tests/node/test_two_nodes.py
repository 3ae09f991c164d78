"""Two ``azimds serve`` processes sharing one PostgreSQL database: a fleet of two nodes.

A change made through either node's control plane shows on the other within a second
(LISTEN/NOTIFY); while PostgreSQL is down both keep serving their last snapshot, refuse
writes with 503, and say so; when it returns they catch up.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from azimds.admin.client import AdminError, Status
from tests.admin.support import admin, refused
from tests.conftest import ServerProcess
from tests.http import get
from tests.pg import DATABASE, Postgres
from tests.waiting import within

NAME = "/metadata/instance/compute/name?api-version=2021-02-01&format=text"
DEFAULT_VM_NAME = b"examplevmname"  # the documentation's example VM (single caller mode)
VM_A = {
    "compute": {"name": "vm-a", "location": "westus"},
    "network": {"interface": [{"ipv4": {"ipAddress": [{"privateIpAddress": "10.9.0.4"}]}}]},
}


def status(node: ServerProcess) -> Status:
    return admin(node).status()


def shows(node: ServerProcess, vm: str, check: Callable[[Any], bool] = lambda _: True) -> bool:
    try:
        return check(admin(node).vm(vm))
    except AdminError as exc:
        if not exc.status:  # not answered at all
            raise
        return False


@pytest.fixture
def fleet(postgres: Postgres) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Nodes A and B on a fresh database, both in single caller mode: processes, since the
    outage test reads each one's log, written by its follower's own thread."""
    url = postgres.new_database()
    nodes: list[ServerProcess] = []
    try:
        for _ in range(2):
            nodes.append(ServerProcess("--store", url, "--caller-mode", "single"))
        yield nodes[0], nodes[1]
    finally:
        postgres.start()  # whatever a failed test left behind
        for node in nodes:
            node.stop()


def test_a_change_through_one_node_shows_on_the_other(
    fleet: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = fleet
    for node in (a, b):
        reply = get(node.port, NAME)
        assert (reply.status, reply.body) == (200, DEFAULT_VM_NAME)
        answer = status(node)
        assert answer["storeReachable"] is True
        assert answer["store"].startswith("postgresql://")
        assert answer["callerMode"] == "single"

    created = admin(a).create_vm(VM_A)
    elapsed = within(1.0, lambda: shows(b, "vm-a"), "vm-a created on A is on B")
    assert elapsed < 1.0
    on_b = admin(b).vm("vm-a")
    assert on_b["compute"]["vmId"] == created["compute"]["vmId"]
    assert on_b["compute"]["location"] == "westus"

    patch = {"compute": {"location": "eastus", "zone": "2"}}
    admin(b).patch_vm("vm-a", patch)
    elapsed = within(
        1.0,
        lambda: shows(a, "vm-a", lambda vm: vm["compute"]["location"] == "eastus"),
        "the patch made through B is on A",
    )
    assert elapsed < 1.0
    on_a = admin(a).vm("vm-a")
    assert on_a["compute"]["zone"] == "2"
    # Both nodes reach the same revision (a node may have added a signing certificate for
    # the new location in the meantime, so wait for the other to follow it).
    within(
        2.0,
        lambda: status(a)["revision"] == status(b)["revision"],
        "both nodes serve the same revision",
    )


def test_nodes_ride_out_a_database_outage(
    postgres: Postgres, fleet: tuple[ServerProcess, ServerProcess]
) -> None:
    a, b = fleet
    admin(a).create_vm(VM_A)
    within(1.0, lambda: shows(b, "vm-a"), "vm-a created on A is on B")
    before = {node.port: get(node.port, NAME) for node in fleet}

    postgres.stop()
    try:
        for node in fleet:  # the guest plane serves the last snapshot
            reply = get(node.port, NAME)
            assert (reply.status, reply.body) == (200, before[node.port].body)
        for node in fleet:
            within(5.0, lambda n=node: status(n)["storeReachable"] is False, "outage noticed")
            reply = get(node.port, NAME)
            assert (reply.status, reply.body) == (200, DEFAULT_VM_NAME)
            assert shows(node, "vm-a")  # reads of the control plane too
        vm_b = {"compute": {"name": "vm-b", "location": "westus"}}
        for node, body in ((a, vm_b), (b, vm_b)):
            error = refused(admin(node).create_vm, body)
            assert (error.status, error.code) == (503, "store_unavailable"), error
        error = refused(admin(b).patch_vm, "vm-a", {"compute": {"zone": "3"}})
        assert (error.status, error.code) == (503, "store_unavailable"), error
        for node in fleet:
            logged = "".join(node.output)
            assert "store unreachable" in logged, logged
    finally:
        postgres.start()

    for node in fleet:
        within(5.0, lambda n=node: status(n)["storeReachable"] is True, "the store is back")
    admin(a).patch_vm("vm-a", {"compute": {"zone": "1"}})
    elapsed = within(
        1.0,
        lambda: shows(b, "vm-a", lambda vm: vm["compute"]["zone"] == "1"),
        "a write through A after the outage is on B",
    )
    assert elapsed < 1.0
    assert not shows(a, "vm-b") and not shows(b, "vm-b")  # refused writes left no trace
    for node in fleet:
        assert "reachable again" in "".join(node.output)
        reply = get(node.port, NAME)
        assert (reply.status, reply.body) == (200, DEFAULT_VM_NAME)


def test_a_password_in_the_store_url_never_shows(postgres: Postgres) -> None:
    """The store URL may carry a password: neither the banner, nor the log, nor the status
    show it (trust auth, so the password is not checked)."""
    url = postgres.new_database().replace("azimds@", "azimds:s3cret-pw@", 1)
    node = ServerProcess("--store", url)
    try:
        answer = status(node)
        assert "s3cret-pw" not in answer["store"]
        assert answer["store"].startswith("postgresql://azimds:***@")
        with postgres.outage():
            within(5.0, lambda: status(node)["storeReachable"] is False, "outage noticed")
            error = refused(admin(node).create_vm, VM_A)
            assert error.status == 503
            assert "s3cret-pw" not in str(error)
        within(5.0, lambda: status(node)["storeReachable"] is True, "the store is back")
    finally:
        node.stop()
    assert "s3cret-pw" not in "".join(node.output)
    assert "s3cret-pw" not in node.banner, node.banner


def test_a_node_started_before_its_database_waits_for_it(postgres: Postgres) -> None:
    """Started while PostgreSQL is down (a host booting), a node retries instead of exiting,
    logging each retry without the password, and serves once the database is up."""
    url = postgres.new_database().replace("azimds@", "azimds:s3cret-pw@", 1)
    retries = 0

    def back_after_two_retries(line: str) -> None:
        nonlocal retries
        retries += "retrying in" in line
        if retries == 2:
            postgres.start()

    with postgres.outage():
        node = ServerProcess("--store", url, on_line=back_after_two_retries)  # once it serves
    try:
        reply = get(node.port, NAME)
        assert (reply.status, reply.body) == (200, DEFAULT_VM_NAME)
        assert status(node)["storeReachable"] is True
    finally:
        node.stop()
    retries = [line for line in node.banner.splitlines() if "retrying in" in line]
    assert len(retries) >= 2, node.banner
    assert all("WARNING" in line and str(postgres.socket_dir) in line for line in retries)
    assert "s3cret-pw" not in node.banner, node.banner


def test_a_node_waiting_for_its_database_stops_at_once(postgres: Postgres, tmp_path: Path) -> None:
    """SIGTERM ends the wait for a database that is down: no stop waits for the 2 minutes."""
    url = postgres.new_database()
    command = [sys.executable, "-m", "azimds", "serve", "--store", url, "--listen"]
    command += ["127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--state-dir", str(tmp_path)]
    with postgres.outage():
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            for line in proc.stderr:  # waits until it is waiting
                if "retrying in" in line:
                    break
            stopped = time.monotonic()
            proc.terminate()
            assert proc.wait(timeout=10) == 0
            assert time.monotonic() - stopped < 3
        finally:
            proc.kill()
            proc.communicate()


def test_a_node_with_a_wrong_password_exits_at_once(postgres: Postgres, tmp_path: Path) -> None:
    role = postgres.password_role("right-one")
    command = [sys.executable, "-m", "azimds", "serve", "--store"]
    command += [postgres.url_for(DATABASE, role, "s3cret-wrong"), "--listen", "127.0.0.1:0"]
    command += ["--admin-listen", "127.0.0.1:0", "--state-dir", str(tmp_path)]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 10  # the interpreter's start, no retries
    assert result.returncode == 1, result
    assert f"Error: PostgreSQL at {postgres.socket_dir}:{postgres.port} refused" in result.stderr
    assert "password authentication failed" in result.stderr
    assert "retrying" not in result.stderr and "s3cret-wrong" not in result.stderr
