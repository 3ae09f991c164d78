"""The state directory: where a node keeps its database, its admin token, its address for the
CLI (admin.json, while it runs) and its lock (one node per directory).

Files are created owner-only (0600) in an owner-only directory (0700): the token guards the
control plane, and the database holds signing keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

TOKEN_FILE = "admin-token"
ADMIN_FILE = "admin.json"  # where this node's planes listen, and its pid, for the CLI
LOCK_FILE = "azimds.lock"  # held by the node using the directory; says its pid


class StateDirInUse(Exception):
    """Another node holds the state directory's lock."""


def default_state_dir() -> Path:
    """``/var/lib/azimds`` for root, else ``$XDG_STATE_HOME/azimds`` (``~/.local/state``)."""
    if os.geteuid() == 0:
        return Path("/var/lib/azimds")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "azimds"


def prepare(state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state_dir.chmod(0o700)  # also one that existed: it holds the admin token and the keys


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Hold the state directory for one node, or raise ``StateDirInUse`` naming the holder.

    A flock(2): the kernel drops it when its holder exits, however it exits (``kill -9``
    too), so a file left behind never blocks a restart. The file is never removed: a node
    that opened it just before the removal would lock a file no other node sees.
    """
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise StateDirInUse(
                f"state directory {state_dir} is in use by another azimds (pid {holder}, "
                f"which holds {path}). Fix: stop that node, or give this one another --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # still held: no other node has written its pid yet
    finally:
        os.close(fd)  # releases the lock


def write_private(path: Path, text: str | bytes) -> None:
    """Write ``text`` (UTF-8, or bytes as they are) atomically to an owner-only file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(text.encode() if isinstance(text, str) else text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def admin_token(state_dir: Path) -> str:
    """The control plane's bearer token, created on first start."""
    path = state_dir / TOKEN_FILE
    if path.exists():
        return path.read_text("utf-8").strip()
    token = secrets.token_urlsafe(32)
    write_private(path, token + "\n")
    return token


def write_admin_address(
    state_dir: Path, url: str, guest: list[str], wire: Mapping[str, str | None] | None = None
) -> None:
    """Record where this node's control plane and guest plane listen (and the WireServer's
    listeners, by category: ``wireserver``, ``hostplugin``, null when not served), and its
    pid, for the CLI."""
    address = {"url": url, "guest": guest, **(wire or {}), "pid": os.getpid()}
    write_private(state_dir / ADMIN_FILE, json.dumps(address) + "\n")


@contextlib.contextmanager
def admin_address_kept(state_dir: Path) -> Iterator[None]:
    """For the life of a node: the admin.json it writes goes when it stops.

    Only if it is still this node's (its pid): one another process wrote is that one's.
    A node killed with SIGKILL leaves it behind; ``read_admin`` then finds its pid gone.
    """
    try:
        yield
    finally:
        path = state_dir / ADMIN_FILE
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text("utf-8")).get("pid") == os.getpid():
                path.unlink()


class StaleAddress(FileNotFoundError):
    """admin.json names a node that no longer runs (killed before it could remove it): as
    good as no admin.json at all."""


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: is there such a process?
    except ProcessLookupError:
        return False
    except PermissionError:  # there is, another user's
        return True
    return True


def read_admin(state_dir: Path) -> dict[str, Any]:
    """What the CLI needs to reach a node: its control-plane URL, token and guest URLs.

    ``StaleAddress`` (an ``OSError``, as a missing file is) when the node that wrote
    admin.json no longer runs. A file without a pid, from an older azimds, is taken as is.
    """
    path = state_dir / ADMIN_FILE
    address = json.loads(path.read_text("utf-8"))
    pid = address.get("pid")
    if isinstance(pid, int) and not _running(pid):
        raise StaleAddress(f"{path} was left by pid {pid}, which no longer runs")
    token = (state_dir / TOKEN_FILE).read_text("utf-8").strip()
    return {"url": address["url"], "token": token, "guest": address.get("guest", [])}
