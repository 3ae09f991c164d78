"""Signing speed on one core: managed-identity tokens and attested documents per second.

Measures the real code paths in process (no HTTP): ``TokenService.token`` with the cache
bypassed (every call mints and signs a JWT) and ``AttestedService.respond`` with a fresh nonce
each time (every call builds, signs and encodes a PKCS#7 document). Targets: 1,000 tokens/s and
500 documents/s.

    .venv/bin/python bench/signing.py [--seconds 5] [--smoke]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
from collections.abc import Callable

from azimds.fleet.attestation_certs import ensure_leaves
from azimds.fleet.signing_keys import ensure_jwt_key
from azimds.fleet.snapshot import Fleet
from azimds.fleet.vm import example_vm
from azimds.guest.attested import AttestedService
from azimds.guest.identity import TokenService, TokenSettings
from azimds.store.base import Transaction
from azimds.store.memory import MemoryStore

TARGETS = {"tokens": 1000.0, "attested documents": 500.0}


def rate(work: Callable[[int], object], seconds: float) -> float:
    """Calls per second of ``work(i)`` over about ``seconds``."""
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(20):
            work(done)
            done += 1
    return done / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--smoke", action="store_true", help="a quick run that proves it works")
    args = parser.parse_args()
    seconds = 0.5 if args.smoke else args.seconds
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says

    vm = example_vm()
    store = MemoryStore()
    now = dt.datetime.now(dt.UTC)

    def setup(txn: Transaction) -> None:
        ensure_jwt_key(txn, now)
        leaf = f"{vm.document['compute']['location']}|azure.com"
        ensure_leaves(txn, [leaf], "http://127.0.0.1:16926/attestation/intermediate.cer", now)

    store.transact(setup)
    fleet = Fleet().with_changes(store.changes_since(0), store.revision())
    key, leaf = fleet.jwt_key, next(iter(fleet.leaves.values()))
    system = vm.system_identity
    assert key is not None and system is not None
    tokens = TokenService(TokenSettings("http://127.0.0.1:16926", 86400))
    attested = AttestedService(azure_digest_identifier=False)

    results = {
        "tokens": rate(
            lambda i: tokens.token(system, "https://vault.azure.net", True, key),
            seconds,
        ),
        "attested documents": rate(
            lambda i: attested.respond(vm, "2020-09-01", f"n{i}", leaf), seconds
        ),
    }
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    print(f"machine: {machine}; measured on one core, {seconds:g} s each")
    print(f"{'':20}  {'per second':>10}  {'target':>8}  {'ratio':>6}")
    for name, value in results.items():
        target = TARGETS[name]
        print(f"{name:20}  {value:10,.0f}  {target:8,.0f}  {value / target:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
