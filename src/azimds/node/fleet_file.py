"""The fleet file in the store: its declarations applied in one transaction, and the watcher
that re-applies the file when it changes (``serve --watch``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from pathlib import Path

from azimds.config.settings import ConfigError, FleetFile, read_fleet_file
from azimds.fleet.faults import FaultError, declare_faults
from azimds.fleet.operations import FleetError, apply_declarations
from azimds.node.follower import Node
from azimds.store import StoreError, Transaction

log = logging.getLogger(__name__)

WATCH_INTERVAL = 1.0  # seconds between checks of the fleet file


def fleet_file_source(path: Path) -> str:
    """Where a fleet file's declarations come from, host included: hosts sharing one database
    each keep their own fleet file's VMs."""
    return f"fleet-file:{socket.gethostname()}:{path.resolve()}"


def apply_fleet_file(txn: Transaction, path: Path, declared: FleetFile) -> None:
    """Make the store hold what the fleet file declares (one transaction: all or nothing)."""
    source = fleet_file_source(path)
    apply_declarations(txn, source, declared.vms, "vms")
    declare_faults(txn, source, declared.faults, time.time(), "faults")


async def watch_fleet_file(path: Path, node: Node, stop: asyncio.Event) -> None:
    """Re-apply the fleet file when it changes: all of it in one transaction, or none."""

    def stamp() -> tuple[float, int] | None:
        try:
            info = path.stat()
        except OSError:
            return None
        return info.st_mtime, info.st_size

    seen = stamp()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), WATCH_INTERVAL)
        current = stamp()
        if current == seen or current is None:
            continue
        seen = current
        try:
            declared = read_fleet_file(path)
            await node.write(functools.partial(apply_fleet_file, path=path, declared=declared))
        except (ConfigError, FleetError, FaultError, StoreError) as exc:
            log.error("fleet file %s not applied, nothing changed: %s", path, exc)
            continue
        log.info("fleet file %s applied (revision %d)", path, node.served.revision)
