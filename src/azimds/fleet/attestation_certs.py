"""The attestation CA and signing leaves as fleet data, shared by every node through the store.

Kinds: ``attestation-ca`` (ids ``root``, ``intermediate``) and ``attestation-leaf`` (one per
location and cloud domain, id ``<location>|<domain>``). Leaves are (re)issued when a VM needs
one that is missing, expires within ``LEAF_RENEW_DAYS``, points its AIA at another URL, or was
issued by a previous intermediate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from cryptography.hazmat.primitives import hashes

from azimds.signing.attestation import (
    Signer,
    cloud_domain,
    load_signer,
    new_intermediate_body,
    new_leaf_body,
    new_root_body,
)
from azimds.store.base import Transaction

CA_KIND = "attestation-ca"
LEAF_KIND = "attestation-leaf"
LEAF_RENEW_DAYS = 30
INTERMEDIATE_RENEW_DAYS = 90


def leaf_id(location: str, domain: str) -> str:
    return f"{location}|{domain}"


def leaf_key_of(location: str, az_environment: str) -> str:
    """Which leaf signs for a VM in ``location`` of the cloud ``az_environment``."""
    return leaf_id(location.lower(), cloud_domain(az_environment))


def ensure_ca(txn: Transaction, now: dt.datetime) -> Signer:
    """The root and a current intermediate, created on first start; returns the intermediate."""
    txn.lock()
    root_record = txn.get(CA_KIND, "root")
    if root_record is None:
        root_body = new_root_body(now)
        txn.put(CA_KIND, "root", root_body)
    else:
        root_body = root_record.body
    root = load_signer(root_body)
    record = txn.get(CA_KIND, "intermediate")
    intermediate = load_signer(record.body) if record else None
    if intermediate is None or intermediate.expires_within(now, INTERMEDIATE_RENEW_DAYS):
        body = new_intermediate_body(root, now)
        txn.put(CA_KIND, "intermediate", body)
        intermediate = load_signer(body)
    return intermediate


def stale(leaf: Signer | None, intermediate: Signer, aia_url: str, now: dt.datetime) -> bool:
    if leaf is None:
        return True
    current = intermediate.certificate.fingerprint(hashes.SHA256()).hex()
    return (
        leaf.expires_within(now, LEAF_RENEW_DAYS)
        or leaf.meta.get("aiaUrl") != aia_url
        or leaf.meta.get("issuerFingerprint") != current
    )


def ensure_leaves(
    txn: Transaction, wanted: Iterable[str], aia_url: str, now: dt.datetime
) -> list[str]:
    """Issue every wanted leaf (ids from ``leaf_key_of``) that is missing or stale."""
    intermediate = ensure_ca(txn, now)
    issued = []
    for key in sorted(set(wanted)):
        record = txn.get(LEAF_KIND, key)
        if stale(load_signer(record.body) if record else None, intermediate, aia_url, now):
            location, _, domain = key.partition("|")
            txn.put(LEAF_KIND, key, new_leaf_body(intermediate, location, domain, aia_url, now))
            issued.append(key)
    return issued
