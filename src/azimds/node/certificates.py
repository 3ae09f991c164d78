"""The attestation certificate upkeep: a signing leaf for every location the fleet's VMs are
in, issued when a VM arrives somewhere new and renewed before it expires."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from azimds.fleet.attestation_certs import ensure_leaves, stale
from azimds.fleet.snapshot import Fleet
from azimds.node.follower import Node
from azimds.store import StoreError

log = logging.getLogger(__name__)

DAILY = 86400.0  # seconds between checks when the fleet does not change


class CertificateUpkeep:
    """Keeps a signing leaf for every (location, cloud) the fleet's VMs are in, current and
    pointing at this node's public URL; checks on every fleet change and daily."""

    def __init__(self, node: Node, aia_url: str) -> None:
        self.node, self.aia_url = node, aia_url
        self._running: asyncio.Task[None] | None = None
        self._daily = asyncio.get_running_loop().call_later(DAILY, self._daily_check)

    def _daily_check(self) -> None:
        self.check(self.node.served)
        self._daily = asyncio.get_running_loop().call_later(DAILY, self._daily_check)

    def needed(self, fleet: Fleet) -> bool:
        now = dt.datetime.now(dt.UTC)
        intermediate = fleet.ca.get("intermediate")
        if intermediate is None:
            return True
        return any(
            stale(fleet.leaves.get(key), intermediate, self.aia_url, now)
            for key in fleet.wanted_leaves()
        )

    def check(self, fleet: Fleet) -> None:
        """Start issuing (one run at a time) if ``fleet`` lacks a leaf or holds a stale one."""
        if (self._running is None or self._running.done()) and self.needed(fleet):
            self._running = asyncio.ensure_future(self.run_once(fleet))

    async def run_once(self, fleet: Fleet) -> None:
        wanted = fleet.wanted_leaves()
        now = dt.datetime.now(dt.UTC)
        try:
            issued = await self.node.write(
                lambda txn: ensure_leaves(txn, wanted, self.aia_url, now)
            )
        except StoreError as exc:
            log.error("attestation certificates not renewed (will retry): %s", exc)
            return
        if issued:
            log.info("issued attestation signing certificates for %s", ", ".join(issued))

    async def stop(self) -> None:
        self._daily.cancel()
        if self._running is not None:
            await self._running
