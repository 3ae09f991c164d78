"""The guest plane without a server, for property tests and fuzzers: the example VM's fleet as a
node serves it, and the services its endpoints use."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeVar

from azimds.fleet.attestation_certs import ensure_leaves
from azimds.fleet.operations import apply_declarations, set_default_vm
from azimds.fleet.signing_keys import ensure_jwt_key
from azimds.fleet.snapshot import Fleet
from azimds.fleet.vm import example_vm
from azimds.guest.attested import AttestedService
from azimds.guest.endpoint import Services
from azimds.guest.events import EventsService
from azimds.guest.identity import TokenService, TokenSettings
from azimds.store.base import Transaction
from azimds.store.memory import MemoryStore

T = TypeVar("T")

PUBLIC_URL = "http://127.0.0.1:16926"  # what a default node's certificates and tokens name


def example_fleet(store: MemoryStore, keys: bool = True) -> Fleet:
    """The example VM as the default VM; with ``keys``, a token-signing key and an
    attestation leaf too (a node that finished starting), without, the moment before."""
    vm = example_vm()
    now = dt.datetime.now(dt.UTC)

    def work(txn: Transaction) -> None:
        apply_declarations(txn, "config", [vm.description()], "vm")
        set_default_vm(txn, vm.vm_id)
        if keys:
            ensure_jwt_key(txn, now)

    store.transact(work)
    fleet = Fleet().with_changes(store.changes_since(0), store.revision())
    if keys:
        aia = f"{PUBLIC_URL}/attestation/intermediate.cer"
        store.transact(lambda txn: ensure_leaves(txn, fleet.wanted_leaves(), aia, now))
    return Fleet().with_changes(store.changes_since(0), store.revision())


class StoreOnlyNode:
    """What ``EventsService`` needs of a node (``guest.events.Writer``): a write, served at
    once (nothing follows the store here)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def write(self, work: Callable[[Transaction], T]) -> T:
        return self.store.transact(work)[0]


def services(store: MemoryStore) -> Services:
    """Tokens, attested documents and scheduled events, as a default node has them."""
    return Services(
        TokenService(TokenSettings(PUBLIC_URL, 86400)),
        AttestedService(azure_digest_identifier=True),
        EventsService(StoreOnlyNode(store)),
    )
