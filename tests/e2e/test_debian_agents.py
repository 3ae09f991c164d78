"""Unmodified cloud-init and WALinuxAgent from Debian provision a VM against azimds alone.

No KVM and no internet past Debian's mirror: the guest is a Debian root (mmdebstrap) run with
chroot in a network namespace ``vm``; its eth0 is one end of a veth whose other end is in a
namespace ``fabric``, where dnsmasq answers DHCP (with option 245, the WireServer's address) and
``azimds serve`` serves IMDS on 169.254.169.254:80 and the WireServer on 168.63.129.16:80 and
:32526. tests/e2e/guest.sh fakes what the agents read of the hardware, runs cloud-init's two
stages, then waagent. Passing: the admin user, its key and the hostname are set, and azimds
recorded Ready from cloud-init and then from waagent (told apart by their User-Agent).
../shared/spec/provisioning.md, section 4 and "Harness findings", describes the setup.

Runs as root (CI does). The root's tarball is cached in $AZIMDS_CI_CACHE.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from azimds.admin.client import AdminClient

PACKAGES = ("cloud-init", "waagent", "isc-dhcp-client", "iproute2", "openssh-server", "sudo")
VM_ID = "5c6d7e8f-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
MAC = "000D3A4E2E01"
MAC_COLONS = ":".join(MAC[i : i + 2] for i in range(0, 12, 2))
ADDRESS = "10.0.0.4"  # the guest's, from DHCP; the fabric's end of the veth is .1
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMo1SfXW1LrGBRxBKRbnAR2wCs0mdpHNo865pshJJPFa e2e@azimds"
VM = {
    "compute": {
        "name": "e2e-vm",
        "vmId": VM_ID,
        "osProfile": {"adminUsername": "azureuser", "computerName": "e2e-host"},
        "publicKeys": [{"keyData": KEY, "path": "/home/azureuser/.ssh/authorized_keys"}],
    },
    "network": {
        "interface": [
            {
                "macAddress": MAC,
                "ipv4": {
                    "ipAddress": [{"privateIpAddress": ADDRESS}],
                    "subnet": [{"address": "10.0.0.0", "prefix": 24}],
                },
            }
        ]
    },
}
GUEST = Path(__file__).with_name("guest.sh")
TIMEOUT = 120  # seconds from the guest's start to waagent's Ready (3-5 s when it works)


def missing() -> str:
    """Why this machine cannot run the test, or ""."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, mounts, chroot)"
    for tool in ("mmdebstrap", "dnsmasq", "ip", "unshare"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"needs {tool} (.ci/run installs it)"
    return ""


MISSING = missing()
pytestmark = pytest.mark.skipif(bool(MISSING), reason=MISSING)


def tarball(suite: str) -> Path:
    """The Debian root with the agents, made once per suite and package list."""
    cache = Path(os.environ.get("AZIMDS_CI_CACHE", "/var/cache/azimds-ci"))
    key = hashlib.sha256(f"{suite}\n{','.join(PACKAGES)}\n".encode()).hexdigest()[:16]
    path = cache / f"agents-{suite}-{key}.tar"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(".part")
        subprocess.run(
            [
                "mmdebstrap", "--quiet", "--variant=apt", "--format=tar",
                f"--include={','.join(PACKAGES)}", "--dpkgopt=force-unsafe-io",
                suite, str(part),
            ],
            check=True,
        )  # fmt: skip
        part.rename(path)
    return path


def must(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def kill_netns(name: str) -> None:
    """SIGKILL every process in a network namespace: the guest has no PID namespace to end."""
    try:
        netns = os.stat(f"/run/netns/{name}").st_ino
    except FileNotFoundError:
        return
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == netns:
                os.kill(int(pid), signal.SIGKILL)
        except OSError:  # gone, or not ours to look at (the machine's init, in a container)
            pass


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """``fabric`` and ``vm``, joined by a veth: the guest's end is eth0 with the VM's MAC."""
    fabric, vm = f"azimds-e2e-{os.getpid()}-fabric", f"azimds-e2e-{os.getpid()}-vm"
    try:
        must("ip", "netns", "add", fabric)
        must("ip", "netns", "add", vm)
        must("ip", "-n", fabric, "link", "add", "fab0", "type", "veth", "peer", "name", "eth0",
             "netns", vm)  # fmt: skip
        must("ip", "-n", vm, "link", "set", "eth0", "address", MAC_COLONS)
        must("ip", "-n", vm, "link", "set", "lo", "up")
        must("ip", "-n", fabric, "addr", "add", "10.0.0.1/24", "dev", "fab0")
        # The two Azure addresses are the fabric's own: the guest's default route reaches them.
        must("ip", "-n", fabric, "addr", "add", "169.254.169.254/32", "dev", "lo")
        must("ip", "-n", fabric, "addr", "add", "168.63.129.16/32", "dev", "lo")
        must("ip", "-n", fabric, "link", "set", "lo", "up")
        must("ip", "-n", fabric, "link", "set", "fab0", "up")
        yield fabric, vm
    finally:
        for name in (vm, fabric):
            kill_netns(name)
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


def start(fabric: str, log: Path, *command: str) -> subprocess.Popen[bytes]:
    """A service in the fabric namespace (ip netns exec execs it: the Popen is the service)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", fabric, *command], stdout=out, stderr=subprocess.STDOUT
        )


def wait_for(what: str, done: Callable[[], bool], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} in {timeout} s:\n{log.read_text(errors='replace')}")
        time.sleep(0.2)


def guest_root(suite: str, root: Path) -> Path:
    """The suite's root unpacked, told that it runs on Azure with no resource disk to format."""
    root.mkdir()
    must("tar", "-xf", str(tarball(suite)), "-C", str(root))
    (root / "etc/cloud/cloud.cfg.d/90-azimds-e2e.cfg").write_text("datasource_list: [ Azure ]\n")
    waagent_conf = root / "etc/waagent.conf"
    waagent_conf.write_text(
        waagent_conf.read_text().replace("ResourceDisk.Format=y", "ResourceDisk.Format=n")
    )
    return root


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_debian_agents_provision_against_azimds(
    suite: str, namespaces: tuple[str, str], tmp_path: Path
) -> None:
    fabric, vm = namespaces
    root = guest_root(suite, tmp_path / "root")

    state = tmp_path / "state"
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({"vms": [VM]}))
    services = []
    try:
        services.append(
            start(
                fabric, tmp_path / "dnsmasq.log",
                "dnsmasq", "--keep-in-foreground", "--log-dhcp", "--port=0",
                "--interface=fab0", "--bind-interfaces", "--pid-file=",
                f"--dhcp-leasefile={tmp_path / 'leases'}",
                f"--dhcp-range={ADDRESS},{ADDRESS},255.255.255.0,1h",
                f"--dhcp-host={MAC_COLONS},{ADDRESS}",
                # Debian's dhclient does not ask for 245, the WireServer's address: forced.
                "--dhcp-option-force=245,a8:3f:81:10",
            )
        )  # fmt: skip
        azimds_log = tmp_path / "azimds.log"
        services.append(
            start(
                fabric, azimds_log,
                sys.executable, "-m", "azimds", "serve", "--caller-mode", "source-ip",
                "--fleet", str(fleet), "--store", "memory:", "--state-dir", str(state),
                "--admin-listen", f"unix:{tmp_path / 'admin.sock'}",
                "--listen", "169.254.169.254:80",
                "--wireserver-listen", "168.63.129.16:80",
                "--hostplugin-listen", "168.63.129.16:32526",
            )
        )  # fmt: skip
        wait_for("azimds banner", lambda: "Ctrl+C" in azimds_log.read_text(), 30, azimds_log)
        admin = AdminClient(
            f"unix:{tmp_path / 'admin.sock'}", (state / "admin-token").read_text().strip()
        )

        # cloud-init 25.1 byte-swaps a gen1 VM's product_uuid into its vm_id: swapped here.
        product_uuid = str(uuid.UUID(bytes=uuid.UUID(VM_ID).bytes_le))
        guest_log = tmp_path / "guest.log"
        with guest_log.open("wb") as out:
            guest = subprocess.Popen(
                ["ip", "netns", "exec", vm, "unshare", "-m", "-u", str(GUEST), str(root),
                 product_uuid],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        services.append(guest)
        # What a CI job does: wait for the VM to be ready, started with the guest.
        waiting = subprocess.Popen(
            [sys.executable, "-m", "azimds", "vm", "wait", "e2e-vm", "--ready",
             "--timeout", str(TIMEOUT), "--state-dir", str(state)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        services.append(waiting)

        def reports() -> list[tuple[str, str, str]]:
            """(agent, status, substatus) of every health report, the agent without version."""
            return [
                (r["agent"].split("/")[0], r["status"], r["substatus"])
                for r in admin.provisioning("e2e-vm")["reports"]
            ]

        def waagent_ready() -> bool:
            assert guest.poll() is None, guest_log.read_text(errors="replace")
            return ("WALinuxAgent", "Ready", "") in reports()

        wait_for("Ready from waagent", waagent_ready, TIMEOUT, guest_log)

        passwd = (root / "etc/passwd").read_text()
        assert any(line.startswith("azureuser:") for line in passwd.splitlines()), passwd
        assert KEY in (root / "home/azureuser/.ssh/authorized_keys").read_text()
        assert (root / "etc/hostname").read_text().strip() == "e2e-host"
        # cloud-init provisions and reports Ready; waagent (Provisioning.Agent=cloud-init in
        # Debian) then says it is starting, and Ready.
        assert reports()[:3] == [
            ("Cloud-Init", "Ready", ""),
            ("WALinuxAgent", "NotReady", "Provisioning"),
            ("WALinuxAgent", "Ready", ""),
        ], admin.provisioning("e2e-vm")
        assert admin.provisioning("e2e-vm")["state"] == "ready"
        output, _ = waiting.communicate(timeout=10)
        assert waiting.returncode == 0, output.decode()
    finally:
        kill_netns(vm)
        for service in services:
            service.terminate()
            try:
                service.wait(timeout=10)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()
        # Mounted only in the guest's own mount namespace, gone with it: a plain tree here.
        shutil.rmtree(root)
