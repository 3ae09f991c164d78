"""``azimds run``'s sandbox: a command run in a private network namespace in which
169.254.169.254 is azimds on port 80, and 168.63.129.16 its WireServer (port 80) and host GA
plugin (port 32526), so that any client, provisioning agents too, reaches it unmodified.

::

    azimds run                       this process, single-threaded throughout
      1. unshare(2): a new network namespace; unless root, inside a new user namespace in
         which the caller is root, so that it may configure that namespace's network
      2. ip link set lo up; ip addr add 169.254.169.254/32 dev lo (and 168.63.129.16/32)
      3. python -m azimds serve --listen 169.254.169.254:80 --admin-listen unix:STATE/admin.sock
         --wireserver-listen 168.63.129.16:80 --hostplugin-listen 168.63.129.16:32526
         in a session of its own (the terminal's Ctrl+C is the command's, not the node's),
         writing to a log file, never to the command's output
      4. COMMAND, with this process's terminal, process group and environment; a non-root
         caller gets its own uid and gid back through a nested user namespace
      5. signals forwarded to COMMAND until it exits; the node stopped; COMMAND's status returned

Nothing outside the namespace changes but the state directory: the namespace, its addresses
and routes vanish with the last process in it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from azimds.client.protocol import SDK_ENDPOINT_ENV
from azimds.fleet.vm import HOSTPLUGIN_PORT, WIRESERVER_ADDRESS, WIRESERVER_PORT
from azimds.host import link_local, state

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1

EXIT_FAILED = 125  # azimds run itself failed (as `docker run` and `podman run` say it)
EXIT_CANNOT_EXECUTE = 126  # COMMAND exists but cannot be executed (as shells say it)
EXIT_NOT_FOUND = 127  # COMMAND was not found

READY_TIMEOUT = 30.0  # seconds for the node to answer
STOP_TIMEOUT = 10.0  # seconds for the node to stop on SIGTERM before SIGKILL
POLL_INTERVAL = 0.02
ADMIN_SOCKET = "admin.sock"
LOG_FILE = "azimds.log"
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes, the last a NUL
# Where the node listens in the namespace, by setting: Azure's own addresses.
LISTENERS = {
    "listen": f"{link_local.ADDRESS}:{link_local.PORT}",
    "wireserver_listen": f"{WIRESERVER_ADDRESS}:{WIRESERVER_PORT}",
    "hostplugin_listen": f"{WIRESERVER_ADDRESS}:{HOSTPLUGIN_PORT}",
}

# Signals passed on to COMMAND. One the kernel sends because of the terminal (Ctrl+C, Ctrl+\,
# hang-up) goes to the whole foreground process group, COMMAND included: it is not sent twice.
FORWARDED = frozenset(
    {
        signal.SIGINT,
        signal.SIGTERM,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
    }
)
WAITED = FORWARDED | {signal.SIGCHLD}
SI_KERNEL = 0x80  # siginfo si_code: sent by the kernel (the terminal), not by kill(2)

PROXY_VARIABLES = (
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
)

# Switches that forbid user namespaces: (file, the value that forbids, the fix).
USERNS_SWITCHES = (
    (
        "/proc/sys/kernel/unprivileged_userns_clone",
        "0",
        "allow unprivileged user namespaces: sudo sysctl -w kernel.unprivileged_userns_clone=1",
    ),
    (
        "/proc/sys/user/max_user_namespaces",
        "0",
        "allow user namespaces: sudo sysctl -w user.max_user_namespaces=15000",
    ),
    (
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        "1",
        "lift AppArmor's restriction on user namespaces: sudo sysctl -w "
        "kernel.apparmor_restrict_unprivileged_userns=0",
    ),
)
ROOT_FIX = "run as root (sudo azimds run ...)"
CONTAINER_FIX = (
    "inside a container, allow namespaces (podman/docker: --cap-add SYS_ADMIN "
    "--security-opt seccomp=unconfined, or --privileged)"
)

_libc = ctypes.CDLL(None, use_errno=True)


class SandboxError(Exception):
    """``azimds run`` cannot do its part; the message says what is missing and the fix."""

    exit_code = EXIT_FAILED


class CommandError(SandboxError):
    """COMMAND cannot be started (127: not found, 126: not executable)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(Exception):  # a signal, not an error
    """A signal came before COMMAND started; ``azimds run`` exits 128 + its number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True, slots=True)
class Namespace:
    user: bool  # inside a user namespace of its own (not root, or root refused a plain one)
    uid: int  # the caller's ids outside, which COMMAND gets back
    gid: int


@dataclass(frozen=True, slots=True)
class Sandbox:
    """What ``azimds run`` was asked to do."""

    command: Sequence[str]
    serve_args: Sequence[str] = ()  # node settings for `azimds serve`, LISTENERS' included
    state_dir: Path | None = None  # None: a throwaway directory, removed afterwards
    log_file: str | None = None  # None: azimds.log in the state directory; "-": stderr
    environ: Mapping[str, str] | None = None  # None: os.environ


def _unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))


def _write(path: str, text: str) -> None:
    """One write(2), as /proc/PID/uid_map and its siblings require."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)


def _userns_fixes() -> list[str]:
    fixes = []
    for path, forbidding, fix in USERNS_SWITCHES:
        with contextlib.suppress(OSError):
            if Path(path).read_text("ascii").strip() == forbidding:
                fixes.append(fix)
    return fixes


def enter_namespace() -> Namespace:
    """Move this process into a new network namespace where it may configure the network.

    Root gets a plain network namespace: COMMAND keeps all of root's powers outside the
    network. Anyone else gets a user namespace too, mapping them to root in it (as
    ``unshare --user --map-root-user --net``); so does root where a plain one is refused
    (a container without CAP_SYS_ADMIN).
    """
    if len(os.listdir("/proc/self/task")) > 1:  # unshare(CLONE_NEWUSER) would fail: EINVAL
        raise SandboxError("internal error: azimds run has started threads before unshare(2)")
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        try:
            _unshare(CLONE_NEWNET)
            return Namespace(user=False, uid=0, gid=0)
        except OSError as exc:
            if exc.errno != errno.EPERM:
                raise SandboxError(
                    f"cannot make a private network namespace: unshare(CLONE_NEWNET) failed "
                    f"({exc.strerror})"
                ) from exc
    try:
        _unshare(CLONE_NEWUSER | CLONE_NEWNET)
    except OSError as exc:
        fixes = _userns_fixes() or [CONTAINER_FIX]
        if uid != 0:
            fixes.append(ROOT_FIX)
        raise SandboxError(
            "cannot make a private network namespace: the kernel refused a user namespace "
            f"(unshare(CLONE_NEWUSER|CLONE_NEWNET): {exc.strerror}). Fix: " + "; or ".join(fixes)
        ) from exc
    try:
        _write("/proc/self/setgroups", "deny")  # required for gid_map without CAP_SETGID
        _write("/proc/self/uid_map", f"0 {uid} 1")
        _write("/proc/self/gid_map", f"0 {gid} 1")
    except OSError as exc:
        fixes = [*_userns_fixes(), ROOT_FIX]
        raise SandboxError(
            f"cannot map uid {uid} to root in the new user namespace ({exc.strerror}). Fix: "
            + "; or ".join(fixes)
        ) from exc
    return Namespace(user=True, uid=uid, gid=gid)


def configure_network(namespace: Namespace) -> None:
    """Loopback up, with Azure's addresses: 169.254.169.254 and 168.63.129.16 are this
    namespace's own."""
    try:
        link_local.set_up(link_local.DEVICE)
        for address in link_local.ADDRESSES:
            link_local.add(address, link_local.DEVICE)
    except link_local.LinkLocalError as exc:
        fixes = [*_userns_fixes(), ROOT_FIX] if namespace.user else [CONTAINER_FIX]
        raise SandboxError(
            f"cannot set up the private network namespace: {exc}. Fix: " + "; or ".join(fixes)
        ) from exc


def _node_child() -> None:
    """In the node's child process, before exec: signals as usual; dies with azimds run."""
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class NamespaceServer:
    """The ``azimds serve`` child: on 169.254.169.254:80 (and the WireServer's ports of
    168.63.129.16) inside the namespace, in a session of its own."""

    def __init__(
        self,
        serve_args: Sequence[str],
        state_dir: Path,
        output: IO[bytes] | int,
        environ: Mapping[str, str],
    ) -> None:
        self.admin_socket = state_dir / ADMIN_SOCKET
        self.admin_url = f"unix:{self.admin_socket}"
        self.state_dir = state_dir
        self._admin_file = state_dir / state.ADMIN_FILE
        self._before = self._admin_stamp()  # a stale admin.json is not readiness
        command = [
            sys.executable, "-m", "azimds", "serve", *serve_args,
            "--admin-listen", self.admin_url,
            "--state-dir", str(state_dir),
            "--caller-mode", "single",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
            preexec_fn=_node_child,  # safe: this process has no threads
        )

    def _admin_stamp(self) -> tuple[int, int] | None:
        try:
            info = self._admin_file.stat()
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns

    def ready(self) -> bool:
        """The node wrote its address (it does once every listener accepts) and answers."""
        stamp = self._admin_stamp()
        if stamp is None or stamp == self._before:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect((link_local.ADDRESS, link_local.PORT))
            except OSError:
                return False
        return True

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the node serves; ``Interrupted`` if a forwarded signal comes meanwhile."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            code = self.proc.poll()
            if code is not None:
                raise SandboxError(f"azimds stopped before it was ready (exit status {code})")
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"azimds did not answer at {link_local.ADDRESS}:{link_local.PORT} "
                    f"within {timeout:g} s"
                )
            got = signal.sigtimedwait(FORWARDED, POLL_INTERVAL)
            if got is not None:
                raise Interrupted(got.si_signo)

    def token(self) -> str:
        return (self.state_dir / state.TOKEN_FILE).read_text("utf-8").strip()

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT``; the node's exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def command_environment(
    environ: Mapping[str, str], state_dir: Path, admin_url: str, token: str
) -> dict[str, str]:
    """COMMAND's environment: the caller's, and where the node's control plane is."""
    env = dict(environ)
    # The SDKs' override would only send them elsewhere; the real address works here.
    env.pop(SDK_ENDPOINT_ENV, None)
    env["AZIMDS_STATE_DIR"] = str(state_dir)  # for `azimds vm ...`, `azimds events ...`
    env["AZIMDS_ADMIN_URL"] = admin_url
    env["AZIMDS_ADMIN_TOKEN"] = token
    if any(env.get(name) for name in PROXY_VARIABLES):
        # No proxy is reachable from the namespace; IMDS and the WireServer are never reached
        # through one.
        for name in ("no_proxy", "NO_PROXY"):
            hosts = [host for host in env.get(name, "").split(",") if host.strip()]
            missing = [address for address in link_local.ADDRESSES if address not in hosts]
            if missing:
                env[name] = ",".join([*hosts, *missing])
    return env


def check_command(command: Sequence[str], environ: Mapping[str, str]) -> None:
    """Fail early, before any namespace or node, when COMMAND cannot be run."""
    if not command:
        raise CommandError(
            "no COMMAND given: azimds run [OPTIONS] -- COMMAND [ARGS]...", EXIT_FAILED
        )
    name = command[0]
    if os.sep in name:
        if not os.path.exists(name):
            raise CommandError(f"{name}: no such file", EXIT_NOT_FOUND)
        if os.path.isdir(name) or not os.access(name, os.X_OK):
            raise CommandError(f"{name}: cannot be executed", EXIT_CANNOT_EXECUTE)
        return
    path = environ.get("PATH", os.defpath)
    if shutil.which(name, path=path) is None:
        raise CommandError(f"{name}: command not found", EXIT_NOT_FOUND)


def _command_child(namespace: Namespace) -> None:
    """In COMMAND's child process, before exec: signals as usual; a non-root caller its own
    uid and gid again (a user namespace nested in the first, mapping them back to its root)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    if not namespace.user or namespace.uid == 0:
        return
    try:
        _unshare(CLONE_NEWUSER)
        _write("/proc/self/uid_map", f"{namespace.uid} 0 1")
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/gid_map", f"{namespace.gid} 0 1")
    except OSError as exc:
        message = f"Error: cannot run COMMAND as uid {namespace.uid} in the namespace: {exc}\n"
        os.write(2, message.encode())
        os._exit(EXIT_FAILED)


def run_command(command: Sequence[str], env: Mapping[str, str], namespace: Namespace) -> int:
    """COMMAND's exit status (128 + N when killed by signal N), forwarding signals to it.

    The caller has blocked ``WAITED``; they are taken here with sigwaitinfo(2), which says
    who sent each.
    """
    try:
        proc = subprocess.Popen(
            list(command),
            env=dict(env),
            preexec_fn=functools.partial(_command_child, namespace),  # no threads here
        )
    except FileNotFoundError as exc:
        raise CommandError(f"{command[0]}: command not found", EXIT_NOT_FOUND) from exc
    except OSError as exc:  # not executable, not a program (ENOEXEC), ...
        raise CommandError(
            f"{command[0]}: cannot be executed ({exc.strerror})", EXIT_CANNOT_EXECUTE
        ) from exc
    while proc.poll() is None:
        info = signal.sigwaitinfo(WAITED)
        if info.si_signo == signal.SIGCHLD or info.si_code == SI_KERNEL:
            continue  # a child changed state; or the terminal signalled COMMAND itself
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(info.si_signo)
    code = proc.returncode
    return 128 - code if code < 0 else code


def _tail(path: Path | None, lines: int = 20) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text("utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\nazimds's output:\n" + "\n".join(f"  {line}" for line in text) if text else ""


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """``WAITED`` blocked, so that they are only ever taken by sigwaitinfo(2); any still
    pending at the end are dropped rather than delivered."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)
    try:
        yield
    finally:
        while signal.sigtimedwait(WAITED, 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def run(sandbox: Sandbox) -> int:
    """Run ``sandbox.command`` where 169.254.169.254 and 168.63.129.16 are azimds; its exit
    status.

    Raises ``SandboxError`` (with ``exit_code``) when azimds run cannot do its part.
    """
    environ = dict(os.environ if sandbox.environ is None else sandbox.environ)
    try:
        link_local.ip_command()
    except link_local.LinkLocalError as exc:
        raise SandboxError(str(exc)) from exc
    check_command(sandbox.command, environ)

    throwaway = sandbox.state_dir is None
    try:
        if sandbox.state_dir is None:
            state_dir = Path(tempfile.mkdtemp(prefix="azimds-run-"))
        else:
            state_dir = sandbox.state_dir.absolute()
            state.prepare(state_dir)
    except OSError as exc:
        raise SandboxError(f"cannot make the state directory: {exc}") from exc
    output: IO[bytes] | None = None
    try:
        admin_socket = state_dir / ADMIN_SOCKET
        if len(os.fsencode(admin_socket)) > SOCKET_PATH_MAX:
            raise SandboxError(
                f"the control plane's socket path {admin_socket} is longer than a Unix socket "
                f"allows ({SOCKET_PATH_MAX} bytes). Fix: give a shorter --state-dir"
            )
        log_path: Path | None = None
        if sandbox.log_file == "-":
            target: IO[bytes] | int = sys.stderr.fileno()
        else:
            log_path = Path(sandbox.log_file) if sandbox.log_file else state_dir / LOG_FILE
            try:
                output = target = log_path.open("wb")
            except OSError as exc:
                raise SandboxError(f"cannot write azimds's log to {log_path}: {exc}") from exc
        with _signals_blocked():
            namespace = enter_namespace()
            configure_network(namespace)
            node = NamespaceServer(sandbox.serve_args, state_dir, target, environ)
            try:
                try:
                    node.wait_ready()
                except SandboxError as exc:
                    raise SandboxError(f"{exc}{_tail(log_path)}") from exc
                env = command_environment(environ, state_dir, node.admin_url, node.token())
                code = run_command(sandbox.command, env, namespace)
                died = node.proc.poll()
            except Interrupted as stop:
                return 128 + stop.signum
            finally:
                node.stop()
        if died is not None:
            sys.stderr.write(
                f"azimds run: azimds stopped while the command ran (exit status {died})"
                f"{_tail(log_path)}\n"
            )
        return code
    finally:
        if output is not None:
            output.close()
        if throwaway:
            shutil.rmtree(state_dir, ignore_errors=True)
