"""The composition root: builds a node from a ``Config`` and runs it. Imported, to run a node,
by the CLI (``azimds serve``) and the test kit (``kit/local.py``), by nothing else.

A node is: the store, the fleet snapshot it follows (``follower.py``), the guest plane on every
``listen`` address (and the WireServer and its host plugin on theirs, if given), the control
plane on its own address, and its background services: the
scheduled-events engine (``events_engine.py``), the attestation certificate upkeep
(``certificates.py``) and, with ``--watch``, the fleet-file watcher (``fleet_file.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from azimds.admin.api import AdminAPI
from azimds.admin.core import Observed
from azimds.admin.public import INTERMEDIATE_PATH
from azimds.config.settings import Config, ConfigError, read_fleet_file
from azimds.fleet.clock import set_clock
from azimds.fleet.faults import FaultError
from azimds.fleet.operations import FleetError, apply_declarations, set_default_vm
from azimds.fleet.signing_keys import ensure_jwt_key
from azimds.fleet.snapshot import Fleet
from azimds.guest.app import GuestApp
from azimds.guest.attested import AttestedService
from azimds.guest.callers import MODES
from azimds.guest.endpoint import Services
from azimds.guest.events import EventsService
from azimds.guest.faults import Faults
from azimds.guest.identity import TokenService, TokenSettings
from azimds.guest.limits import RateLimiter
from azimds.guest.observe import Recorder
from azimds.host import link_local, state
from azimds.node.certificates import CertificateUpkeep
from azimds.node.events_engine import run_event_engine
from azimds.node.fleet_file import apply_fleet_file, watch_fleet_file
from azimds.node.follower import Node
from azimds.serving import listeners as server
from azimds.serving import protocol
from azimds.store import Store, StoreUnavailable, Transaction, open_store
from azimds.wireserver.app import HOSTPLUGIN, WIRESERVER, WireApp

log = logging.getLogger(__name__)
T = TypeVar("T")

# Declarations are grouped by where they come from, host included, so hosts sharing one
# database each keep their own config's VM (and fleet file's VMs: ``fleet_file_source``).
CONFIG_SOURCE = f"config:{socket.gethostname()}"
AZURE_ISSUER = "https://sts.windows.net"


@dataclass(frozen=True, slots=True)
class Ready:
    """What a started node tells its caller."""

    guest: list[tuple[str, int]]
    admin: str  # the control plane's URL (http://HOST:PORT or unix:PATH)
    fleet: Fleet
    token_file: Path
    store: str  # the store's URL, password hidden
    # Where the WireServer and its host plugin are served, if they are (by category).
    wireserver: dict[str, tuple[str, int]]


def declare(config: Config, store: Store) -> int:
    """Apply the config's default VM and the fleet file, where their declarations changed."""
    fleet_file = read_fleet_file(config.fleet_file) if config.fleet_file else None

    def work(txn: Transaction) -> None:
        if config.vm_declared:
            apply_declarations(txn, CONFIG_SOURCE, [config.vm.description()], "vm")
            set_default_vm(txn, config.vm.vm_id)
        if fleet_file is not None and config.fleet_file is not None:
            apply_fleet_file(txn, config.fleet_file, fleet_file)

    try:
        _, revision = store.transact(work)
    except FaultError as exc:
        raise ConfigError(
            str(config.fleet_file), exc.where, exc.problem, "correct the rule"
        ) from exc
    except FleetError as exc:
        declared_in_file = exc.where.startswith("vms")
        source = str(config.fleet_file) if declared_in_file else (config.source or "defaults")
        fix = exc.fix or "make every vmId and address unique"
        raise ConfigError(source, exc.where or "vms", exc.problem, fix) from exc
    return revision


def public_url(config: Config, admin_url: str) -> str:
    """Where relying services reach the public routes (discovery, JWKS, CA certificates)."""
    if config.public_url:
        return config.public_url
    # A socket has no URL; --public-url publishes one.
    return "http://localhost" if admin_url.startswith("unix:") else admin_url


def token_settings(config: Config, public: str) -> TokenSettings:
    """Where tokens say they come from, how long they live, which resources exist."""
    issuer = {"local": public, "azure": AZURE_ISSUER}.get(config.issuer, config.issuer)
    resources = frozenset(r.strip().rstrip("/").lower() for r in config.token_resources)
    return TokenSettings(issuer.rstrip("/"), config.token_lifetime, resources)


def _http_url(host: str, port: int) -> str:
    if host.startswith("unix:"):
        return host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def run(
    config: Config,
    on_ready: Callable[[Ready], None] | None = None,
    stop: asyncio.Event | None = None,
    store: Store | None = None,
) -> None:
    """Serve until SIGINT, SIGTERM or SIGHUP (or ``stop``). Off the main thread (the test kit
    runs a node in a thread of its own) signals are left to the program: ``stop`` ends it.
    With ``config.link_local``, Azure's addresses (``config.link_local_addresses``) are on
    ``lo`` while the node holds its state directory (``host/link_local.held``)."""
    stop = stop or asyncio.Event()
    state.prepare(config.state_dir)
    # Inside the lock: a second node, refused, must neither add the link-local addresses nor
    # remove the first one's ready file or admin.json.
    with (
        state.locked(config.state_dir),
        link_local.held(config.link_local_addresses),
        _ready_file_kept(config.ready_file),
        state.admin_address_kept(config.state_dir),
    ):
        # After link_local.held, which ends the process on SIGTERM (removing the addresses)
        # until the event loop takes the signal over here to stop the node cleanly.
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(sig, stop.set)
        await _serve(config, on_ready, stop, store)


@contextlib.contextmanager
def _ready_file_kept(path: Path | None) -> Iterator[None]:
    """The ready file says this node serves: none is left from an earlier node, none stays
    after this one stops."""
    if path is None:
        yield
        return
    path.unlink(missing_ok=True)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _write_ready_file(
    path: Path, guest_urls: list[str], admin_url: str, wire_urls: dict[str, str | None]
) -> None:
    """Atomically (a reader never sees half of it): where this node serves, and its pid."""
    ready = {"pid": os.getpid(), "guest": guest_urls, "controlPlane": admin_url, **wire_urls}
    state.write_private(path, json.dumps(ready) + "\n")


async def _open_store(config: Config, stop: asyncio.Event) -> Store | None:
    """The configured store, or None if the node is stopped while it waits for it (a
    PostgreSQL server down at start is waited for, docs/deployment.md): a stop then takes
    effect at once rather than when the wait ends."""
    stopping = threading.Event()

    async def relay() -> None:
        await stop.wait()
        stopping.set()

    relaying = asyncio.create_task(relay())
    try:
        return await asyncio.to_thread(open_store, config.store, config.state_dir, stopping)
    except StoreUnavailable:
        if stop.is_set():
            return None
        raise
    finally:
        relaying.cancel()


def _claimed(setting: str, claim: Callable[[str, int], T], host: str, port: int) -> T:
    """``claim(host, port)``, its refusal naming the setting that asked for the address."""
    try:
        return claim(host, port)
    except server.ListenError as exc:
        fix = ""
        if isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.EADDRINUSE:
            fix = (
                f". Fix: give another {setting} HOST:PORT (port 0 picks a free one), or stop"
                " what holds it (`azimds status` names a node's listeners)"
            )
        raise server.ListenError(f"{setting}: {exc}{fix}") from exc


async def _serve(
    config: Config,
    on_ready: Callable[[Ready], None] | None,
    stop: asyncio.Event,
    store: Store | None,
) -> None:
    # The guest plane's sockets are held from here on, so that nothing (the control plane's
    # claim among them) can take their ports before they are served.
    listeners = {}
    wire_listeners: dict[str, tuple[str, int]] = {}  # category -> address
    wire = ((WIRESERVER, config.wireserver_listen), (HOSTPLUGIN, config.hostplugin_listen))
    try:
        for host, port in config.listen:
            sock = _claimed("--listen", server.claim_listener, host, port)
            listeners[host, sock.getsockname()[1]] = sock
        for category, address in wire:
            if address is not None:
                flag = f"--{category}-listen"
                sock = _claimed(flag, server.claim_listener, *address)
                wire_listeners[category] = (address[0], sock.getsockname()[1])
                listeners[wire_listeners[category]] = sock
        admin_host, admin_port = config.admin_listen
        admin_port = _claimed("--admin-listen", server.claim, admin_host, admin_port)
    except server.ListenError:
        for sock in listeners.values():
            sock.close()
        raise
    guest_addresses = [address for address in listeners if address not in wire_listeners.values()]

    admin_url = _http_url(admin_host, admin_port)
    if store is None:  # the test kit brings a memory store that already holds signing keys
        store = await _open_store(config, stop)
        if store is None:  # stopped while waiting for the database
            for sock in listeners.values():
                sock.close()
            return
    node = Node(store)
    try:
        await asyncio.to_thread(declare, config, store)
        now = dt.datetime.now(dt.UTC)
        await asyncio.to_thread(store.transact, lambda txn: ensure_jwt_key(txn, now))
        scale = 0.0 if config.clock == "manual" else config.time_scale
        await asyncio.to_thread(store.transact, lambda txn: set_clock(txn, scale, time.time()))
        public = public_url(config, admin_url)
        tokens = TokenService(token_settings(config, public))
        attested = AttestedService(azure_digest_identifier=config.attested_digest == "azure")
        services = Services(tokens, attested, EventsService(node, config.events_first_call_delay))
        limiter = RateLimiter(config.limits) if config.limits.enabled else None
        recorder = Recorder(config.access_log)
        faults = Faults()
        clients = protocol.Clients(config.connections_per_client)
        guest = GuestApp(Fleet(), MODES[config.caller_mode](), services, limiter, recorder, faults)
        node.on_fleet(guest.replace_fleet)
        callers = MODES[config.caller_mode]()
        apps = {
            address: WireApp(category, Fleet(), callers, node, recorder)
            for category, address in wire_listeners.items()
        }
        for wire_app in apps.values():
            node.on_fleet(wire_app.replace_fleet)
        certificates = CertificateUpkeep(node, f"{public}{INTERMEDIATE_PATH}")
        node.on_fleet(certificates.check)
        fleet = await node.start()
        await certificates.run_once(fleet)
        fleet = node.served
        token = state.admin_token(config.state_dir)
        guest_urls = [_http_url(host, port) for host, port in guest_addresses]
        # By category, null when not served: the keys `wireserver` and `hostplugin` of the
        # ready file, admin.json and /v1/status.
        wire_urls = {
            category: _http_url(*wire_listeners[category]) if category in wire_listeners else None
            for category in (WIRESERVER, HOSTPLUGIN)
        }
        admin = AdminAPI(
            node,
            token,
            config.caller_mode,
            tokens.settings,
            admin_url,
            config.terminate_notice,
            Observed(recorder, services, faults, clients),
            guest_urls,
            wire_urls,
        ).app()

        started = asyncio.Event()
        serving = asyncio.create_task(
            server.serve(
                guest,
                listeners,
                admin,
                (admin_host, admin_port),
                stop,
                started,
                config.request_timeout,
                clients,
                apps,
            )
        )
        ready = asyncio.create_task(started.wait())
        await asyncio.wait([ready, serving], return_when=asyncio.FIRST_COMPLETED)
        if not started.is_set():
            ready.cancel()
            await serving  # a listener failed (its ListenError), or the node was stopped
            return
        state.write_admin_address(config.state_dir, admin_url, guest_urls, wire_urls)
        if config.ready_file is not None:  # after admin.json: the CLI finds the node then
            _write_ready_file(config.ready_file, guest_urls, admin_url, wire_urls)
        engine = asyncio.create_task(run_event_engine(node, stop))
        access_log = asyncio.create_task(recorder.write_access_log(stop))
        watcher = None
        if config.watch and config.fleet_file is not None:
            watcher = asyncio.create_task(watch_fleet_file(config.fleet_file, node, stop))
        if on_ready is not None:
            token_file = config.state_dir / state.TOKEN_FILE
            on_ready(
                Ready(guest_addresses, admin_url, fleet, token_file, store.url, wire_listeners)
            )
        await serving
        if watcher is not None:
            await watcher
        await certificates.stop()
        await engine
        await access_log
    finally:
        for sock in listeners.values():
            sock.close()  # those serve() did not get to (it closes its own)
        await asyncio.to_thread(node.stop)
