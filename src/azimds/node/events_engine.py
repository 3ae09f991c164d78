"""The scheduled-events engine: applies events' transitions (``fleet/events.py``'s lifecycle)
as the event clock passes their times, each through the node's one write path."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

from azimds.fleet.scheduling import advance_events
from azimds.node.follower import Node
from azimds.store import StoreError

log = logging.getLogger(__name__)

ENGINE_INTERVAL = 0.2  # seconds between checks for due event transitions


async def run_event_engine(node: Node, stop: asyncio.Event) -> None:
    """Apply scheduled events' transitions as the event clock passes their times."""
    failing = False  # log a store outage once, not every ENGINE_INTERVAL
    while not stop.is_set():
        fleet = node.served
        now = fleet.clock.now(time.time())
        if any(event.due(now) for event in fleet.events.values()):
            try:
                changed = await node.write(functools.partial(advance_events, now=now))
            except StoreError as exc:
                if not failing:
                    log.error("scheduled events not advanced (will retry): %s", exc)
                failing = True
            else:
                if failing:
                    log.warning("scheduled events advance again")
                failing = False
                for event_id, status in changed:
                    log.info("event %s is %s", event_id, status)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ENGINE_INTERVAL)
