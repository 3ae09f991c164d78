"""A node: the store, the fleet snapshot it serves, and the thread that follows the store.

The follower waits for the store's change feed (LISTEN/NOTIFY on PostgreSQL, revision polling
on SQLite), builds the next immutable ``Fleet`` from what changed and hands it to the event
loop, where the guest plane swaps it in. While the store is unreachable the node keeps serving
its last snapshot, says so once in the log, and catches up when the store returns.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from azimds.fleet.snapshot import Fleet
from azimds.store.base import Store, StoreError, StoreUnavailable, Transaction

T = TypeVar("T")

log = logging.getLogger(__name__)

WAIT_TIMEOUT = 0.25  # seconds a follower blocks on the feed; bounds how long stopping takes
RETRY_DELAY = 1.0  # seconds between attempts while the store is unreachable
CATCH_UP_TIMEOUT = 10.0  # seconds a writer waits to see its change served


class Node:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.fleet = Fleet()  # the newest snapshot built (the follower's view)
        self.outage = False
        self._listeners: list[Callable[[Fleet], None]] = []
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._served = Fleet()  # the snapshot the event loop serves
        self._caught_up = asyncio.Condition()
        self._wakeups: set[asyncio.Future[None]] = set()

    def on_fleet(self, listener: Callable[[Fleet], None]) -> None:
        """Call ``listener`` in the event loop with every new snapshot."""
        self._listeners.append(listener)

    def refresh(self) -> Fleet:
        """Read what changed since the last snapshot and publish the next one."""
        with self._refresh_lock:
            records = self.store.changes_since(self.fleet.revision)
            if records:
                revision = max(record.revision for record in records)
                self.fleet = self.fleet.with_changes(records, revision)
                self._publish(self.fleet)
            return self.fleet

    def _publish(self, fleet: Fleet) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._serve, fleet)

    def _serve(self, fleet: Fleet) -> None:
        if fleet.revision <= self._served.revision:
            return
        self._served = fleet
        for listener in self._listeners:
            listener(fleet)
        self._wakeups.add(task := asyncio.ensure_future(self._notify_waiters()))
        task.add_done_callback(self._wakeups.discard)

    async def _notify_waiters(self) -> None:
        async with self._caught_up:
            self._caught_up.notify_all()

    async def caught_up(self, revision: int) -> None:
        """Wait until the served snapshot includes ``revision`` (read your own writes).

        Gives up after ``CATCH_UP_TIMEOUT`` with a warning: the write is stored either way,
        and an answer that never comes helps nobody. If the store went away since the write
        committed, it gives up at once: the follower serves the write when the store returns.
        """
        try:
            await asyncio.to_thread(self.refresh)
        except StoreError as exc:
            if self._served.revision < revision:
                log.warning(
                    "revision %d is stored but not yet served (the store went away: %s)",
                    revision,
                    exc,
                )
            return
        async with self._caught_up:
            try:
                await asyncio.wait_for(
                    self._caught_up.wait_for(lambda: self._served.revision >= revision),
                    CATCH_UP_TIMEOUT,
                )
            except TimeoutError:
                log.warning("revision %d is stored but not yet served", revision)

    async def write(self, work: Callable[[Transaction], T]) -> T:
        """Run ``work`` in one store transaction (off the loop); return once this node serves it.

        Every writer (control plane, approvals, fleet file, background services) goes through
        here, so a client's next guest request sees its change. Store errors propagate: nothing
        was written.
        """
        result, revision = await asyncio.to_thread(self.store.transact, work)
        await self.caught_up(revision)
        return result

    @property
    def served(self) -> Fleet:
        return self._served

    async def start(self) -> Fleet:
        """Load the fleet, serve it, and start following the store."""
        self._loop = asyncio.get_running_loop()
        fleet = await asyncio.to_thread(self.refresh)
        self._serve(fleet)
        self._thread = threading.Thread(target=self._follow, name="azimds-follower", daemon=True)
        self._thread.start()
        return fleet

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self.store.wait_for_change(self.fleet.revision, WAIT_TIMEOUT)
                if self._stop.is_set():
                    return
                fleet = self.refresh()
                if self.outage:
                    self.outage = False
                    log.warning(
                        "store %s reachable again; serving revision %d",
                        self.store.url,
                        fleet.revision,
                    )
            except StoreUnavailable as exc:
                if not self.outage:
                    self.outage = True
                    log.error(
                        "store unreachable (%s); still serving the last snapshot (revision %d)",
                        exc,
                        self.fleet.revision,
                    )
                self._stop.wait(RETRY_DELAY)
            except StoreError:
                log.exception("cannot follow store %s", self.store.url)
                self._stop.wait(RETRY_DELAY)

    def stop(self) -> None:
        self._stop.set()
        self.store.wake()
        if self._thread is not None:
            self._thread.join(timeout=WAIT_TIMEOUT + 5)
        self.store.close()
