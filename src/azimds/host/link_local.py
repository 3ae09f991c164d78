"""Azure's addresses on the loopback device: 169.254.169.254 (IMDS) and 168.63.129.16 (the
WireServer).

For ``azimds serve --link-local`` (``held``: add them for as long as the node runs, then
remove them) and ``azimds run`` (``add`` inside its private network namespace). Addresses
are managed with the ``ip`` command (iproute2), as an operator would by hand.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

from azimds.fleet.vm import IMDS_ADDRESS, IMDS_PORT, WIRESERVER_ADDRESS

log = logging.getLogger(__name__)

ADDRESS, PORT = IMDS_ADDRESS, IMDS_PORT
ADDRESSES = (IMDS_ADDRESS, WIRESERVER_ADDRESS)  # what `azimds run` gives its namespace
DEVICE = "lo"
# Where `ip` lives on distributions that leave sbin off ordinary users' PATH.
SBIN = ("/usr/sbin", "/sbin")
CAP_NET_ADMIN = 12  # capability bit: configure interfaces and addresses
# Signals that end azimds with the address removed; an event loop that takes SIGTERM over
# stops the node cleanly instead. SIGHUP: the terminal closed.
ENDING = (signal.SIGTERM, signal.SIGHUP)


class LinkLocalError(Exception):
    """The address cannot be managed; the message says what is missing and the fix."""


def ip_command() -> str:
    """The path of the ``ip`` command."""
    found = shutil.which("ip") or shutil.which("ip", path=os.pathsep.join(SBIN))
    if found is None:
        raise LinkLocalError(
            "the `ip` command is not installed (looked in PATH, /usr/sbin and /sbin). "
            "Fix: install iproute2 (apt-get install iproute2, dnf install iproute, "
            "apk add iproute2)"
        )
    return found


def ip(*args: str) -> str:
    """Run ``ip ARGS...``; its output, or a ``LinkLocalError`` with what it said."""
    command = [ip_command(), *args]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LinkLocalError(f"`ip {' '.join(args)}` could not run: {exc}") from exc
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
        raise LinkLocalError(f"`ip {' '.join(args)}` failed: {said}")
    return result.stdout


def has_net_admin() -> bool:
    """Whether this process may change addresses (CAP_NET_ADMIN in its effective set)."""
    try:
        status = Path("/proc/self/status").read_text("ascii")
    except OSError:
        return os.geteuid() == 0
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    return os.geteuid() == 0


def present(address: str = ADDRESS) -> bool:
    """Whether any interface of this network namespace has ``address``."""
    listing = ip("-o", "-4", "addr", "show")
    return any(f" inet {address}/" in line for line in listing.splitlines())


def is_up(device: str = DEVICE) -> bool:
    flags = ip("-o", "link", "show", "dev", device).partition("<")[2].partition(">")[0]
    return "UP" in flags.split(",")


def set_up(device: str = DEVICE, up: bool = True) -> None:
    ip("link", "set", device, "up" if up else "down")


def add(address: str = ADDRESS, device: str = DEVICE) -> None:
    ip("addr", "add", f"{address}/32", "dev", device)


def remove(address: str = ADDRESS, device: str = DEVICE) -> None:
    ip("addr", "del", f"{address}/32", "dev", device)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP ignored (main thread only) while the address is removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, *ENDING)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def held(addresses: Sequence[str], device: str = DEVICE) -> Iterator[tuple[str, ...]]:
    """``addresses`` on ``device`` for the duration of the block; yields those it added.

    An address some interface already has is left alone, during and after. One this adds is
    removed on the way out, also when the block fails, and on SIGHUP or on a SIGTERM that
    arrives before an event loop takes it over (these exit with 128 + the signal's number).
    Only SIGKILL leaves it behind.
    A loopback device that is down (a fresh network namespace) is brought up, and down again.
    No addresses: nothing is done.
    """
    missing = []
    for address in addresses:  # without `ip`, a clear error before anything else
        if present(address):
            log.info("%s is already on this host; azimds leaves it there", address)
        else:
            missing.append(address)
    if not missing:
        yield ()
        return
    if not has_net_admin():
        by_hand = "; ".join(f"sudo ip addr add {address}/32 dev {device}" for address in missing)
        them = "them" if len(missing) > 1 else "it"
        raise LinkLocalError(
            f"adding {' and '.join(missing)} to {device} needs root (CAP_NET_ADMIN). Fix: run "
            f"as root (sudo azimds serve --link-local), or add {them} once yourself ({by_hand}) "
            "and serve with --link-local as a user allowed to bind ports below 1024 "
            "(CAP_NET_BIND_SERVICE)"
        )
    on_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.getsignal(sig) for sig in ENDING} if on_main else {}
    brought_up = False
    added: list[str] = []
    try:
        for sig in previous:
            signal.signal(sig, _exit_on_signal)
        if not is_up(device):
            set_up(device)
            brought_up = True
            log.info("brought %s up; it goes down again when azimds stops", device)
        for address in missing:
            add(address, device)
            added.append(address)
            log.info("added %s/32 to %s; it is removed when azimds stops", address, device)
        yield tuple(added)
    finally:
        with _signals_ignored():
            for address in reversed(added):
                try:
                    remove(address, device)
                    log.info("removed %s/32 from %s", address, device)
                except LinkLocalError as exc:
                    log.error(
                        "%s (remove it by hand: ip addr del %s/32 dev %s)", exc, address, device
                    )
            if brought_up:
                try:
                    set_up(device, up=False)
                except LinkLocalError as exc:
                    log.error("%s (bring it down by hand: ip link set %s down)", exc, device)
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
