"""``/metadata/attested/document``: the VM's identity, signed (reference section 4).

The signed content is compact JSON: ``nonce``, ``plan``, ``timeStamp`` (``MM/DD/YY HH:MM:SS
-0000``, valid six hours), ``vmId``, then ``licenseType`` (AHB VMs, 2020-09-01+),
``subscriptionId`` (2019-04-30+) and ``sku`` (2019-11-01+), in the order a real answer prints
them. A signed answer is reused for a minute for the same VM, version and nonce, as the real
service caches documents (but never with another nonce); this module's own cache decides that,
so the answer tells the memo never to keep it.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from azimds.fleet.vm import VM
from azimds.guest import errors
from azimds.guest.endpoint import ValidRequest
from azimds.guest.responses import NEVER, Response, compact_json, json_response
from azimds.signing.attestation import Signer, sign

VALIDITY = dt.timedelta(hours=6)
CACHE_SECONDS = 60
CACHE_LIMIT = 10_000  # ~3.7 KB each: fresh nonces must not grow the node
MAX_NONCE = 32  # characters (the swagger's limit; Teleport sends exactly 32)


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%m/%d/%y %H:%M:%S -0000")


def document(vm: VM, version: str, nonce: str | None, now: dt.datetime) -> dict[str, Any]:
    compute = vm.document["compute"]
    plan = compute["plan"]
    content: dict[str, Any] = {
        "nonce": nonce or now.strftime("%Y%m%d-%H%M%S"),
        "plan": {"name": plan["name"], "product": plan["product"], "publisher": plan["publisher"]},
        "timeStamp": {"createdOn": _stamp(now), "expiresOn": _stamp(now + VALIDITY)},
        "vmId": vm.vm_id,
    }
    if version >= "2020-09-01" and compute["licenseType"]:
        content["licenseType"] = compute["licenseType"]
    if version >= "2019-04-30":
        content["subscriptionId"] = compute["subscriptionId"]
    if version >= "2019-11-01":
        content["sku"] = compute["sku"]
    return content


class AttestedService:
    """Signs attested documents for a node and keeps them for a minute."""

    def __init__(
        self, azure_digest_identifier: bool, clock: Callable[[], float] = time.time
    ) -> None:
        self.azure_digest_identifier = azure_digest_identifier
        self.clock = clock
        self._cache: dict[tuple[str, str, str | None], tuple[float, Response]] = {}
        self.signed = 0  # documents signed (for metrics)

    def respond(self, vm: VM, version: str, nonce: str | None, leaf: Signer | None) -> Response:
        if nonce is not None and len(nonce) > MAX_NONCE:
            return errors.Family.INSTANCE.bad_parameter_value("nonce", nonce)
        if leaf is None:
            return errors.Family.INSTANCE.unavailable(errors.ATTESTED_NOT_YET)
        now = self.clock()
        key = (vm.vm_id, version, nonce)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        moment = dt.datetime.fromtimestamp(int(now), dt.UTC)
        content = compact_json(document(vm, version, nonce, moment))
        signature = sign(leaf, content, self.azure_digest_identifier)
        response = json_response(
            {"encoding": "pkcs7", "signature": base64.b64encode(signature).decode("ascii")},
            until=NEVER,
        )
        cache = self._cache
        cache.pop(key, None)  # re-inserted at the end: the dict stays in order of expiry
        while cache and (len(cache) >= CACHE_LIMIT or next(iter(cache.values()))[0] <= now):
            del cache[next(iter(cache))]
        cache[key] = (now + CACHE_SECONDS, response)
        self.signed += 1
        return response


def get_document(request: ValidRequest) -> Response:
    """``/metadata/attested/document``: the VM's identity, PKCS#7-signed."""
    attested = request.services.attested
    if attested is None:
        return errors.Family.INSTANCE.unavailable(errors.ATTESTED_UNAVAILABLE)
    nonce = request.params.get("nonce") or None
    vm = request.vm
    return attested.respond(vm, request.version, nonce, request.fleet.leaf_for(vm))
