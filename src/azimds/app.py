"""The composition root: builds the planes from a ``Config`` and runs them. Nothing imports it
but the CLI and the test kit."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from azimds import server
from azimds.config import Config
from azimds.guest.asgi import GuestApp, SingleVM


def build_guest_app(config: Config) -> GuestApp:
    return GuestApp(SingleVM(config.vm))


async def run(
    config: Config,
    on_ready: Callable[[list[tuple[str, int]]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or ``stop``); ``on_ready`` gets the bound addresses."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    addresses = [(host, server.claim_port(host, port)) for host, port in config.listen]
    guest = build_guest_app(config)
    started = asyncio.Event()
    serving = asyncio.create_task(
        server.serve([(guest, host, port) for host, port in addresses], stop, started)
    )
    await started.wait()
    if on_ready is not None:
        on_ready(addresses)
    await serving
