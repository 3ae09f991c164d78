"""Certificates are renewed before they expire, and leaves follow a new intermediate."""

from __future__ import annotations

import datetime as dt

from cryptography.hazmat.primitives import hashes

from azimds.fleet.attestation_certs import CA_KIND, LEAF_KIND, ensure_leaves
from azimds.signing.attestation import load_signer
from azimds.store.memory import MemoryStore

AIA = "http://127.0.0.1:16926/attestation/intermediate.cer"
LEAF = "westus|azure.com"


def serial(store: MemoryStore, kind: str, id: str) -> int:
    record = store.get(kind, id)
    assert record is not None
    return load_signer(record.body).certificate.serial_number


def test_leaf_is_kept_then_renewed_30_days_before_expiry() -> None:
    store = MemoryStore()
    now = dt.datetime.now(dt.UTC)
    assert store.transact(lambda txn: ensure_leaves(txn, [LEAF], AIA, now))[0] == [LEAF]
    first = serial(store, LEAF_KIND, LEAF)
    # Nothing to do while the leaf is fresh: no write, no new revision.
    revision = store.revision()
    assert (
        store.transact(lambda txn: ensure_leaves(txn, [LEAF], AIA, now + dt.timedelta(days=300)))[0]
        == []
    )
    assert store.revision() == revision
    # Within 30 days of its one-year expiry it is replaced.
    later = now + dt.timedelta(days=340)
    assert store.transact(lambda txn: ensure_leaves(txn, [LEAF], AIA, later))[0] == [LEAF]
    renewed = load_signer(store.get(LEAF_KIND, LEAF).body)  # type: ignore[union-attr]
    assert renewed.certificate.serial_number != first
    assert renewed.certificate.not_valid_after_utc > later + dt.timedelta(days=300)


def test_new_intermediate_reissues_leaves() -> None:
    store = MemoryStore()
    now = dt.datetime.now(dt.UTC)
    store.transact(lambda txn: ensure_leaves(txn, [LEAF], AIA, now))
    root, intermediate = serial(store, CA_KIND, "root"), serial(store, CA_KIND, "intermediate")
    leaf = serial(store, LEAF_KIND, LEAF)
    # 90 days before the intermediate's five years end, it is renewed, and so is the leaf.
    late = now + dt.timedelta(days=5 * 365 - 60)
    store.transact(lambda txn: ensure_leaves(txn, [LEAF], AIA, late))
    assert serial(store, CA_KIND, "root") == root
    assert serial(store, CA_KIND, "intermediate") != intermediate
    new_leaf = load_signer(store.get(LEAF_KIND, LEAF).body)  # type: ignore[union-attr]
    assert new_leaf.certificate.serial_number != leaf
    new_intermediate = load_signer(store.get(CA_KIND, "intermediate").body)  # type: ignore[union-attr]
    assert new_leaf.certificate.issuer == new_intermediate.certificate.subject
    assert (
        new_leaf.meta["issuerFingerprint"]
        == new_intermediate.certificate.fingerprint(hashes.SHA256()).hex()
    )
