"""Per-VM rate limits, as documented: 5 requests a second in general, and for the managed-identity
category 20 a second and 5 at once (reference section 1). Beyond them: 429.

Token buckets per (VM, category) that refill continuously and hold one second's worth, so a
VM may burst to its rate and then keeps to it. A VM that floods only drains its own buckets:
its 429s are pre-rendered answers, and other VMs' requests never wait for it.

Each bucket is kept as one number, the time at which it will be full again (the generic cell
rate algorithm's form of a token bucket): a refusal reads it and writes nothing, so a 429
costs less than a cached answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from azimds.fleet.limits import Limits

GENERAL, IDENTITY = "general", "identity"
TOLERANCE = 1e-9  # tokens: float rounding must not refuse the last whole token
CATEGORY_CACHE_LIMIT = 10_000  # distinct paths remembered


class RateLimiter:
    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        # category -> vmId -> when that bucket is full again (in the past: it is full)
        self._full_at: dict[str, dict[str, float]] = {GENERAL: {}, IDENTITY: {}}
        self._in_flight: dict[str, int] = {}
        self._categories: dict[str, str | None] = {}

    def category(self, path: str) -> str | None:
        """The limit a request path counts against: GENERAL, IDENTITY, or None (outside
        /metadata: the front end's answers are not limited). Kept per path: paths repeat."""
        category = self._categories.get(path, "")
        if category == "":
            if len(self._categories) > CATEGORY_CACHE_LIMIT:
                self._categories.clear()
            if path[:9].lower() != "/metadata":
                category = None
            else:
                category = IDENTITY if path[9:18] == "/identity" else GENERAL
            self._categories[path] = category
        return category

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
        buckets = self._full_at[category]
        full_at = buckets.get(vm_id, now)
        if (full_at - now) * rate > rate - 1 + TOLERANCE:  # fewer than one token left
            return False
        buckets[vm_id] = max(full_at, now) + 1 / rate  # one token taken: full that much later
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
