"""``azimds run``: real commands in real network namespaces, where 169.254.169.254 is azimds.

Nothing is mocked: each test runs ``azimds run`` as a user would and looks at what the
command printed and how it exited. The host's own network is never touched (every address
is added inside a namespace that vanishes with the run). Tests that switch to an
unprivileged user or drop capabilities need root, as CI has.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VM_ID = "02aab8a4-74ef-476e-8182-f6d2ba4166a6"  # the documentation's example VM
VM_ID_URL = (
    "http://169.254.169.254/metadata/instance/compute/vmId?api-version=2017-08-01&format=text"
)
CURL_VM_ID = ["curl", "-s", "-H", "Metadata:true", "--noproxy", "*", VM_ID_URL]
NAME_URL = "http://169.254.169.254/metadata/instance/compute/{}?api-version=2021-02-01&format=text"
# The azure-identity call exactly as a program on an Azure VM makes it.
GET_TOKEN = (
    "from azure.identity import ManagedIdentityCredential; "
    "print(ManagedIdentityCredential().get_token('https://management.azure.com/.default')"
    ".token[:20])"
)
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switches users or capabilities")


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test's environment without any azimds settings; temporary files under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZIMDS_")}
    env.pop("AZURE_POD_IDENTITY_AUTHORITY_HOST", None)
    env["TMPDIR"] = str(tmp_path)  # where the throwaway state directory goes
    env.update(extra)
    return env


def azimds_run(
    tmp_path: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
    python: str = sys.executable,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, python, "-m", "azimds", "run", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env) if env is not None else environment(tmp_path),
        cwd=tmp_path,
    )


def leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("azimds-run-"))


def test_curl_reads_the_example_vm_at_the_real_address(tmp_path: Path) -> None:
    result = azimds_run(tmp_path, "--", *CURL_VM_ID)
    assert (result.returncode, result.stdout, result.stderr) == (0, VM_ID, "")
    assert leftovers(tmp_path) == []  # the throwaway state directory is gone


def test_exit_statuses_pass_through(tmp_path: Path) -> None:
    assert azimds_run(tmp_path, "--", "sh", "-c", "exit 7").returncode == 7
    killed = azimds_run(tmp_path, "--", "sh", "-c", "kill -TERM $$")
    assert killed.returncode == 128 + signal.SIGTERM, killed.stderr

    # A command that cannot run fails before any namespace or node exists, as a shell would.
    missing = azimds_run(tmp_path, "--", "no-such-command-azimds")
    assert missing.returncode == 127
    assert "no-such-command-azimds: command not found" in missing.stderr
    data = tmp_path / "data.txt"
    data.write_text("not a program\n")
    data.chmod(0o644)
    not_executable = azimds_run(tmp_path, "--", str(data))
    assert not_executable.returncode == 126, not_executable.stderr
    assert "cannot be executed" in not_executable.stderr
    assert leftovers(tmp_path) == []


def test_azure_identity_gets_a_token_unmodified(tmp_path: Path) -> None:
    # Were the SDK variable passed on, azure-identity would ask this dead address instead.
    env = environment(tmp_path, AZURE_POD_IDENTITY_AUTHORITY_HOST="http://127.0.0.1:9")
    result = azimds_run(tmp_path, "--", sys.executable, "-c", GET_TOKEN, env=env)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"eyJ[A-Za-z0-9_-]{17}\n", result.stdout), result.stdout
    assert result.stderr == ""


def test_the_command_drives_the_control_plane(tmp_path: Path) -> None:
    script = r"""
set -e
test -z "${AZURE_POD_IDENTITY_AUTHORITY_HOST+set}"
"$PYTHON" -m azimds vm set examplevmname compute.location=westeurope > /dev/null
curl -s -H Metadata:true "$URL"; echo
curl -s --unix-socket "${AZIMDS_ADMIN_URL#unix:}" -H "Authorization: Bearer $AZIMDS_ADMIN_TOKEN" \
  http://localhost/v1/vms
"""
    env = environment(tmp_path, PYTHON=sys.executable, URL=NAME_URL.format("location"))
    result = azimds_run(tmp_path, "--", "sh", "-c", script, env=env)
    assert result.returncode == 0, (result.stdout, result.stderr)
    location, listing = result.stdout.split("\n", 1)
    assert location == "westeurope"
    assert "examplevmname" in json.dumps(json.loads(listing))


def test_the_control_plane_is_reachable_from_outside(tmp_path: Path) -> None:
    """With --state-dir, another shell changes the VM while the command runs."""
    state_dir, go = tmp_path / "state", tmp_path / "go"
    script = 'while [ ! -e "$GO" ]; do sleep 0.05; done; curl -s -H Metadata:true "$URL"'
    env = environment(tmp_path, GO=str(go), URL=NAME_URL.format("name"))
    command = [sys.executable, "-m", "azimds", "run", "--state-dir", str(state_dir)]
    run = subprocess.Popen(
        [*command, "--", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        outside = environment(tmp_path)
        vm = [sys.executable, "-m", "azimds", "vm", "--state-dir", str(state_dir)]
        deadline = time.monotonic() + 30
        while True:  # the node is ready once `azimds vm` reaches it through the socket
            changed = subprocess.run(
                [*vm, "set", "examplevmname", "compute.name=renamed-from-outside"],
                capture_output=True,
                text=True,
                env=outside,
                timeout=30,
            )
            if changed.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert changed.returncode == 0, changed.stderr
        go.touch()
        stdout, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert (run.returncode, stdout, stderr) == (0, "renamed-from-outside", "")
    # azimds's own output went to the log in the state directory, which is kept.
    log = (state_dir / "azimds.log").read_text()
    assert "listening on http://169.254.169.254/metadata" in log
    assert (state_dir / "admin-token").exists()


def test_log_file_option(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    result = azimds_run(tmp_path, "--log-file", str(log), "--", "true")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert "listening on http://169.254.169.254/metadata" in log.read_text()
    shown = azimds_run(tmp_path, "--log-file", "-", "--", *CURL_VM_ID)
    assert shown.stdout == VM_ID  # the banner goes to stderr, never into the command's output
    assert "listening on http://169.254.169.254/metadata" in shown.stderr


# A command that reports each SIGINT and SIGTERM it receives, then exits 10 + their number.
COUNT_SIGNALS = r"""
import signal, sys, time
seen = []
def note(signum, frame):
    seen.append(signum)
    print("got", signal.Signals(signum).name, flush=True)
signal.signal(signal.SIGINT, note)
signal.signal(signal.SIGTERM, note)
print("ready", flush=True)
deadline = time.monotonic() + 20
while not seen and time.monotonic() < deadline:
    time.sleep(0.02)
time.sleep(0.5)  # time for a duplicate to arrive
sys.exit(10 + len(seen))
"""


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_signals_sent_to_azimds_run_reach_the_command_once(
    tmp_path: Path, sent: signal.Signals
) -> None:
    run = subprocess.Popen(
        [sys.executable, "-m", "azimds", "run", "--", sys.executable, "-c", COUNT_SIGNALS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(tmp_path),
    )
    assert run.stdout is not None
    assert run.stdout.readline() == "ready\n"
    run.send_signal(sent)
    stdout, stderr = run.communicate(timeout=30)
    assert (run.returncode, stdout, stderr) == (11, f"got {sent.name}\n", "")


def test_ctrl_c_at_a_terminal_reaches_the_command_once(tmp_path: Path) -> None:
    """The terminal signals the whole foreground process group: azimds run must not add a
    second SIGINT, and azimds itself (in its own session) must keep serving meanwhile."""
    master, terminal = pty.openpty()

    def own_terminal() -> None:
        os.setsid()
        fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)

    script = COUNT_SIGNALS.replace(
        "time.sleep(0.5)",
        "time.sleep(0.5)\n"
        "import urllib.request as u\n"
        "r = u.Request('http://169.254.169.254/metadata/instance/compute/vmId"
        "?api-version=2017-08-01&format=text', headers={'Metadata': 'true'})\n"
        "print(u.urlopen(r, timeout=5).read().decode(), flush=True)",
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "azimds", "run", "--", sys.executable, "-c", script],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=environment(tmp_path, no_proxy="*"),
        preexec_fn=own_terminal,
    )
    os.close(terminal)
    seen = b""

    def read_until(done: bytes | None, timeout: float) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while (done is None or done not in seen) and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the terminal's last user is gone
                    return
                if not chunk:
                    return
                seen += chunk

    try:
        read_until(b"ready", 30)
        os.write(master, b"\x03")  # Ctrl+C
        code = run.wait(timeout=30)
        read_until(None, 0.5)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        os.close(master)
    text = seen.decode().replace("\r\n", "\n")
    assert code == 11, text
    assert text.count("got SIGINT") == 1, text
    assert VM_ID in text, text  # azimds still answered after the terminal's Ctrl+C


PROBE = (
    "import subprocess, sys; "
    "sys.exit(subprocess.call([sys.executable, '-c', 'import azimds.cli, uvloop, granian']))"
)


def python_for(uid: int) -> tuple[str, dict[str, str]] | None:
    """An interpreter that user ``uid`` may run with this checkout and its packages importable
    (the venv's own may sit under a directory only root can enter), or None."""
    site = next(Path(sys.prefix, "lib").glob("python3*/site-packages"))
    extra = {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(site)])}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, os.path.realpath(sys.executable), f"/usr/bin/{version}"):
        probe = subprocess.run(  # through sys.executable, as azimds run starts the node
            [*as_user(uid), candidate, "-c", PROBE],
            capture_output=True,
            env={**os.environ, **extra},
            cwd="/",
        )
        if probe.returncode == 0:
            return candidate, extra
    return None


def as_user(uid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


@needs_root
def test_an_unprivileged_user_gets_a_user_namespace_and_keeps_its_ids(tmp_path: Path) -> None:
    found = python_for(NOBODY)
    if found is None:
        pytest.skip(f"no Python that uid {NOBODY} may run with this checkout importable")
    python, extra = found
    tmp_path.chmod(0o777)  # the throwaway state directory is made here by uid 65534
    script = 'id -u; id -g; curl -s -H Metadata:true --noproxy "*" "$URL"'
    env = environment(tmp_path, URL=VM_ID_URL, **extra)
    result = azimds_run(
        tmp_path, "--", "sh", "-c", script, env=env, prefix=as_user(NOBODY), python=python
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n") == [str(NOBODY), str(NOBODY), VM_ID]
    assert leftovers(tmp_path) == []


@needs_root
def test_root_without_cap_sys_admin_falls_back_to_a_user_namespace(tmp_path: Path) -> None:
    """As root in a container without CAP_SYS_ADMIN: a plain network namespace is refused."""
    drop = ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin"]
    script = 'cat /proc/self/uid_map; curl -s -H Metadata:true --noproxy "*" "$URL"'
    env = environment(tmp_path, URL=VM_ID_URL)
    result = azimds_run(tmp_path, "--", "sh", "-c", script, env=env, prefix=drop)
    assert result.returncode == 0, result.stderr
    uid_map, vm_id = result.stdout.split("\n")
    assert uid_map.split() == ["0", "0", "1"]  # a user namespace: root is only itself
    assert vm_id == VM_ID


# Runs its arguments as root of a new user namespace mapping every id to itself: there,
# sysctls of the user namespace family may be changed without touching the host's.
USERNS_SHELL = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
to_child_r, to_child_w = os.pipe()
to_parent_r, to_parent_w = os.pipe()
pid = os.fork()
if pid == 0:
    if libc.unshare(0x10000000) != 0:
        os._exit(99)
    os.write(to_parent_w, b"1")
    os.read(to_child_r, 1)
    os.execvp(sys.argv[1], sys.argv[1:])
os.read(to_parent_r, 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as f:
        f.write("0 0 4294967295\n")
os.write(to_child_w, b"1")
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@needs_root
def test_a_clear_error_where_user_namespaces_are_forbidden(tmp_path: Path) -> None:
    """user.max_user_namespaces=0 (RHEL 7's default), for an ordinary user: exit 125 naming
    the switch and the fix; the command never runs."""
    found = python_for(NOBODY)
    if found is None:
        pytest.skip(f"no Python that uid {NOBODY} may run with this checkout importable")
    python, extra = found
    tmp_path.chmod(0o777)
    marker = tmp_path / "ran"
    inner = (
        "echo 0 > /proc/sys/user/max_user_namespaces && exec "
        + " ".join(as_user(NOBODY))
        + f' {python} -m azimds run -- touch "{marker}"'
    )
    result = subprocess.run(
        [sys.executable, "-c", USERNS_SHELL, "sh", "-c", inner],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment(tmp_path, **extra),
        cwd=tmp_path,
    )
    assert result.returncode == 125, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "cannot make a private network namespace" in result.stderr
    assert "sysctl -w user.max_user_namespaces=" in result.stderr
    assert "run as root" in result.stderr
    assert not marker.exists()
    assert leftovers(tmp_path) == []


@needs_root
def test_a_clear_error_without_the_ip_command(tmp_path: Path) -> None:
    """iproute2 missing, for real: in a mount namespace where every `ip` is no executable."""
    hidden = {os.path.realpath(p) for p in (shutil.which("ip"), "/usr/sbin/ip", "/sbin/ip") if p}
    mounts = " && ".join(
        f"mount --bind /dev/null {path}" for path in sorted(hidden) if os.path.exists(path)
    )
    marker = tmp_path / "ran"
    inner = f'{mounts} && exec "$PYTHON" -m azimds run -- touch "{marker}"'
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment(tmp_path, PYTHON=sys.executable),
        cwd=tmp_path,
    )
    assert result.returncode == 125, (result.stdout, result.stderr)
    assert "the `ip` command is not installed" in result.stderr
    assert "install iproute2" in result.stderr
    assert not marker.exists()


def test_a_bad_configuration_stops_before_anything_runs(tmp_path: Path) -> None:
    config = tmp_path / "vm.yaml"
    config.write_text("vm:\n  compute:\n    platformFaultDomian: 1\n")
    marker = tmp_path / "ran"
    result = azimds_run(tmp_path, "--config", str(config), "--", "touch", str(marker))
    assert result.returncode == 125
    assert "platformFaultDomian: unknown field" in result.stderr
    assert "did you mean 'platformFaultDomain'" in result.stderr
    assert not marker.exists()


def test_a_config_file_describes_the_vm(tmp_path: Path) -> None:
    config = tmp_path / "vm.yaml"
    config.write_text("vm:\n  compute:\n    name: web-1\n")
    result = azimds_run(
        tmp_path,
        "--config",
        str(config),
        "--",
        "curl",
        "-s",
        "-H",
        "Metadata:true",
        NAME_URL.format("name"),
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "web-1", "")


def test_the_wireserver_answers_at_its_real_address(tmp_path: Path) -> None:
    # What a provisioning agent asks first, at the address it hard-codes (or gets by DHCP),
    # with a proxy set: azimds run puts 168.63.129.16 in no_proxy as it does 169.254.169.254.
    script = r"""
set -e
curl -sf -o versions.xml -H x-ms-version:2012-11-30 "http://168.63.129.16/?comp=versions"
curl -sf -o goalstate.xml -H x-ms-agent-name:WALinuxAgent -H x-ms-version:2012-11-30 \
  "http://168.63.129.16/machine/?comp=goalstate"
curl -sf -o plugin.json "http://168.63.129.16:32526/versions"
echo "$no_proxy"
"$PYTHON" -m azimds status --json
"""
    env = environment(tmp_path, PYTHON=sys.executable, http_proxy="http://127.0.0.1:9")
    result = azimds_run(tmp_path, "--", "sh", "-c", script, env=env)
    assert result.returncode == 0, (result.stdout, result.stderr)
    versions = (tmp_path / "versions.xml").read_text()
    assert "<Preferred>" in versions and "2012-11-30" in versions
    goal_state = (tmp_path / "goalstate.xml").read_text()
    assert "<Incarnation>1</Incarnation>" in goal_state
    assert "http://168.63.129.16/machine/" in goal_state  # its links use the Host asked for
    assert json.loads((tmp_path / "plugin.json").read_text())
    no_proxy, status = result.stdout.split("\n", 1)
    assert no_proxy == "169.254.169.254,168.63.129.16"
    listeners = json.loads(status)
    assert listeners["guest"] == ["http://169.254.169.254:80"]
    assert listeners["wireserver"] == "http://168.63.129.16:80"
    assert listeners["hostplugin"] == "http://168.63.129.16:32526"
