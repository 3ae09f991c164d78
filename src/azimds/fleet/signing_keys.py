"""The token-signing keys as fleet data: created once per fleet, rotated with an overlap.

Keys live in the store (kind ``jwt-key``, id = kid), with the setting ``jwt-active-key``
naming the one that signs. A rotated-out key keeps being published in the JWKS until
``retires`` (the overlap), so tokens it signed stay verifiable until they expire.
"""

from __future__ import annotations

import datetime as dt

from azimds.signing.keys import new_jwt_key_body
from azimds.store.base import Transaction

KEY_KIND = "jwt-key"
ACTIVE_SETTING = "jwt-active-key"
SETTING_KIND = "setting"


def ensure_jwt_key(txn: Transaction, now: dt.datetime) -> str:
    """The active key's kid, creating the fleet's first key if there is none."""
    txn.lock()  # two nodes starting together must not both create one
    active = txn.get(SETTING_KIND, ACTIVE_SETTING)
    if active is not None and txn.get(KEY_KIND, str(active.body["kid"])) is not None:
        return str(active.body["kid"])
    kid, body = new_jwt_key_body(now)
    txn.put(KEY_KIND, kid, body)
    txn.put(SETTING_KIND, ACTIVE_SETTING, {"kid": kid})
    return kid


def rotate_jwt_key(txn: Transaction, now: dt.datetime, overlap: int) -> str:
    """Make a new key active; the old one stays published for ``overlap`` seconds."""
    txn.lock()
    stamp = int(now.timestamp())
    for record in txn.objects(KEY_KIND):
        retires = record.body.get("retires")
        if retires is None:
            txn.put(KEY_KIND, record.id, {**record.body, "retires": stamp + overlap})
        elif retires <= stamp:
            txn.delete(KEY_KIND, record.id)  # past its overlap: nothing it signed is valid
    kid, body = new_jwt_key_body(now)
    txn.put(KEY_KIND, kid, body)
    txn.put(SETTING_KIND, ACTIVE_SETTING, {"kid": kid})
    return kid
