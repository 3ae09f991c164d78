"""Source-ip caller identification with real network namespaces: one host, three VMs.

A "host" namespace holds azimds on 169.254.169.254:80; three "VM" namespaces each reach it
through their own veth pair, from their own private address, as guests on a Hyper-V host
would. Each VM must read only its own metadata; a caller that is no VM gets a 403; the
control plane (a Unix socket) is reachable from no VM; a change made through it shows at once.

Runs as root (CI does). Where a network namespace cannot be made, this fails loudly rather
than skipping: the point is to prove the isolation with real addresses.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
import yaml

IMDS = "169.254.169.254"
API = "api-version=2021-02-01"
BANNER_TIMEOUT = 30  # seconds


@dataclass(frozen=True)
class GuestVM:
    key: str  # a, b, c
    name: str
    vm_id: str
    address: str  # the VM's private address, its end of the veth
    gateway: str  # the host's end of the veth
    netns: str


@dataclass
class Host:
    netns: str
    vms: dict[str, GuestVM]
    state_dir: Path
    admin_socket: Path
    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    output: list[str] = field(default_factory=list)

    def log(self) -> str:
        """Everything azimds has printed so far."""
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return "".join(self.output)
            if line is not None:
                self.output.append(line)


def run(*command: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def must(*command: str) -> str:
    """Run a setup command; any failure fails the test with the command and its reason."""
    result = run(*command)
    if result.returncode != 0:
        pytest.fail(
            f"cannot set up the network namespaces: {' '.join(command)} exited "
            f"{result.returncode}: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


def curl_in(netns: str, url: str, *options: str) -> tuple[int, str]:
    """``curl`` run inside ``netns``: (HTTP status, body); status 0 if nothing answered."""
    result = run(
        "ip",
        "netns",
        "exec",
        netns,
        "curl",
        "-s",
        "--noproxy",
        "*",
        "--max-time",
        "5",
        "-w",
        "\n%{http_code}",
        *options,
        url,
    )
    body, _, code = result.stdout.rpartition("\n")
    return int(code or 0), body


def metadata(host: Host, vm: GuestVM, path: str, text: bool = True) -> str:
    url = f"http://{IMDS}/metadata/instance{path}?{API}" + ("&format=text" if text else "")
    status, body = curl_in(vm.netns, url, "-H", "Metadata:true")
    assert status == 200, (vm.key, path, status, body, host.log())
    return body


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Read azimds's output for as long as it runs, so a full pipe never blocks it."""
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    if os.geteuid() != 0:
        pytest.fail(
            "this test needs root (euid 0) to create network namespaces and veth pairs; "
            f"running as euid {os.geteuid()}"
        )
    for tool in ("ip", "curl", "ss"):
        if shutil.which(tool) is None:
            pytest.fail(f"'{tool}' is needed for this test (iproute2, curl) but is not installed")

    suffix = uuid.uuid4().hex[:8]
    host_ns = f"azimds-{suffix}-host"
    vms = {
        key: GuestVM(
            key=key,
            name=f"vm-{key}",
            vm_id=str(uuid.uuid4()),
            address=f"10.211.{n}.2",
            gateway=f"10.211.{n}.1",
            netns=f"azimds-{suffix}-vm-{key}",
        )
        for n, key in enumerate("abc", start=1)
    }
    created: list[str] = []
    proc: subprocess.Popen[str] | None = None
    try:
        for netns in (host_ns, *(vm.netns for vm in vms.values())):
            must("ip", "netns", "add", netns)
            created.append(netns)
            must("ip", "-n", netns, "link", "set", "lo", "up")
        must("ip", "-n", host_ns, "addr", "add", f"{IMDS}/32", "dev", "lo")
        for vm in vms.values():
            host_end = f"veth-{vm.key}"
            must(
                "ip", "-n", host_ns, "link", "add", host_end, "type", "veth",
                "peer", "name", "eth0", "netns", vm.netns,
            )  # fmt: skip
            must("ip", "-n", host_ns, "addr", "add", f"{vm.gateway}/24", "dev", host_end)
            must("ip", "-n", host_ns, "link", "set", host_end, "up")
            must("ip", "-n", vm.netns, "addr", "add", f"{vm.address}/24", "dev", "eth0")
            must("ip", "-n", vm.netns, "link", "set", "eth0", "up")
            must("ip", "-n", vm.netns, "route", "add", "default", "via", vm.gateway)

        fleet_file = tmp_path / "fleet.yaml"
        fleet_file.write_text(
            yaml.safe_dump(
                {
                    "vms": [
                        {
                            "compute": {"name": vm.name, "vmId": vm.vm_id},
                            "network": {
                                "interface": [
                                    {"ipv4": {"ipAddress": [{"privateIpAddress": vm.address}]}}
                                ]
                            },
                        }
                        for vm in vms.values()
                    ]
                }
            )
        )
        state_dir = tmp_path / "state"
        admin_socket = tmp_path / "admin.sock"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AZIMDS_")}
        env["PYTHONUNBUFFERED"] = "1"
        command = [
            "ip", "netns", "exec", host_ns,
            sys.executable, "-m", "azimds", "serve",
            "--caller-mode", "source-ip",
            "--fleet", str(fleet_file),
            "--listen", f"{IMDS}:80",
            "--admin-listen", f"unix:{admin_socket}",
            "--state-dir", str(state_dir),
            "--store", "memory:",
        ]  # fmt: skip
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        server = Host(host_ns, vms, state_dir, admin_socket, proc)
        threading.Thread(target=_pump, args=(proc.stdout, server.lines), daemon=True).start()

        deadline = time.monotonic() + BANNER_TIMEOUT
        while not any("Ctrl+C" in line for line in server.output):
            try:
                line = server.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail("azimds printed no banner in time:\n" + "".join(server.output))
            if line is None:
                proc.wait(timeout=10)
                pytest.fail(f"azimds serve exited {proc.returncode}:\n" + "".join(server.output))
            server.output.append(line)
        assert f"listening on http://{IMDS}/metadata" in server.log()
        yield server
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        for netns in reversed(created):
            run("ip", "netns", "delete", netns)  # takes the veth pairs with it


def test_each_vm_sees_only_itself(host: Host) -> None:
    a, b, c = host.vms["a"], host.vms["b"], host.vms["c"]

    # Each VM reads exactly its own name and vmId.
    for vm in (a, b, c):
        assert metadata(host, vm, "/compute/name") == vm.name
        assert metadata(host, vm, "/compute/vmId") == vm.vm_id
        assert metadata(host, vm, "/network/interface/0/ipv4/ipAddress/0/privateIpAddress") == (
            vm.address
        )

    # VM a's whole document holds nothing of b's or c's.
    document = metadata(host, a, "", text=False)
    assert json.loads(document)["compute"]["name"] == a.name
    for other in (b, c):
        for secret in (other.name, other.vm_id, other.address):
            assert secret not in document, (secret, document)


def test_a_caller_that_is_no_vm_is_refused(host: Host) -> None:
    url = f"http://{IMDS}/metadata/instance/compute/name?{API}&format=text"
    status, body = curl_in(host.netns, url, "-H", "Metadata:true", "--interface", IMDS)
    assert status == 403, (status, body)
    error = json.loads(body)["error"]
    assert "not a known VM" in error, error
    assert IMDS in error, error

    deadline = time.monotonic() + 5
    while True:
        refused = [line for line in host.log().splitlines() if "refused" in line and IMDS in line]
        if refused or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert refused, host.log()
    assert "source-ip" in refused[0], refused


def test_the_control_plane_is_out_of_reach_of_vms(host: Host) -> None:
    listening = must("ip", "netns", "exec", host.netns, "ss", "-ltnH")
    local = sorted(line.split()[3] for line in listening.splitlines() if line.strip())
    assert local == [f"{IMDS}:80"], listening

    # Nothing answers on the host's side of VM a's link, on the admin port or any other.
    a = host.vms["a"]
    for port in (16926, 16925, 80):
        status, body = curl_in(a.netns, f"http://{a.gateway}:{port}/", "-o", "/dev/null")
        assert status == 0, (port, status, body)

    # The socket is a file, 0600, outside every VM's reach.
    assert host.admin_socket.is_socket()
    assert host.admin_socket.stat().st_mode & 0o777 == 0o600


def test_a_control_plane_change_shows_at_once(host: Host) -> None:
    a, b, c = host.vms["a"], host.vms["b"], host.vms["c"]
    token = (host.state_dir / "admin-token").read_text().strip()
    result = run(
        "curl", "-s", "--max-time", "10", "-w", "\n%{http_code}",
        "--unix-socket", str(host.admin_socket),
        "-X", "PATCH", f"http://localhost/v1/vms/{a.name}",
        "-H", f"Authorization: Bearer {token}",
        "-H", "Content-Type: application/merge-patch+json",
        "-d", json.dumps({"compute": {"name": "vm-a2"}}),
    )  # fmt: skip
    body, _, code = result.stdout.rpartition("\n")
    assert code == "200", (result.returncode, result.stdout, result.stderr, host.log())
    assert json.loads(body)["compute"]["name"] == "vm-a2"

    # No waiting: the answer came once this node serves the change.
    assert metadata(host, a, "/compute/name") == "vm-a2"
    assert metadata(host, a, "/compute/vmId") == a.vm_id
    for vm in (b, c):
        assert metadata(host, vm, "/compute/name") == vm.name
        assert metadata(host, vm, "/compute/vmId") == vm.vm_id
