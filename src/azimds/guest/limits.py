"""Per-VM rate limits, as documented: 5 requests a second in general, and for the managed-identity
category 20 a second and 5 at once (reference section 1). Beyond them: 429.

Token buckets per (VM, category) that refill continuously and hold one second's worth, so a
VM may burst to its rate and then keeps to it. A VM that floods only drains its own buckets:
its 429s are pre-rendered answers, and other VMs' requests never wait for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

GENERAL, IDENTITY = "general", "identity"


@dataclass(frozen=True, slots=True)
class Limits:
    rate: float  # requests a second outside the identity category; 0: no limit
    identity_rate: float  # requests a second to /metadata/identity; 0: no limit
    identity_concurrency: int  # identity requests in flight at once; 0: no limit

    @property
    def enabled(self) -> bool:
        return bool(self.rate or self.identity_rate or self.identity_concurrency)


OFF = Limits(0, 0, 0)
DOCUMENTED = Limits(5, 20, 5)


class RateLimiter:
    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._buckets: dict[tuple[str, str], list[float]] = {}  # -> [tokens, last refill]
        self._in_flight: dict[str, int] = {}

    def limits_for(self, own: Mapping[str, float] | None) -> Limits:
        if not own:
            return self.limits
        return Limits(
            rate=own.get("rate", self.limits.rate),
            identity_rate=own.get("identityRate", self.limits.identity_rate),
            identity_concurrency=int(
                own.get("identityConcurrency", self.limits.identity_concurrency)
            ),
        )

    def admit(self, vm_id: str, category: str, limits: Limits) -> bool:
        """Take one request from the VM's bucket for ``category``; False when it is empty."""
        rate = limits.identity_rate if category == IDENTITY else limits.rate
        if not rate:
            return True
        now = self.clock()
        key = (vm_id, category)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [rate, now]
        tokens = min(rate, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1
        return True

    def enter(self, vm_id: str, limits: Limits) -> bool:
        """Count an identity request in flight; False when the VM has too many."""
        if not limits.identity_concurrency:
            return True
        current = self._in_flight.get(vm_id, 0)
        if current >= limits.identity_concurrency:
            return False
        self._in_flight[vm_id] = current + 1
        return True

    def leave(self, vm_id: str, limits: Limits) -> None:
        if limits.identity_concurrency:
            self._in_flight[vm_id] = max(self._in_flight.get(vm_id, 1) - 1, 0)
