"""Rate limits: a node's (its settings) and a VM's own, as its description may give them
(``limits:``). The guest plane's ``RateLimiter`` enforces them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azimds.fleet.schema import DocumentError


@dataclass(frozen=True, slots=True)
class Limits:
    rate: float  # requests a second outside the identity category; 0: no limit
    identity_rate: float  # requests a second to /metadata/identity; 0: no limit
    identity_concurrency: int  # identity requests in flight at once; 0: no limit

    @property
    def enabled(self) -> bool:
        return bool(self.rate or self.identity_rate or self.identity_concurrency)


OFF = Limits(0, 0, 0)
DOCUMENTED = Limits(5, 20, 5)  # reference section 1

LIMIT_KEYS = {
    "rate": "rate",
    "identityRate": "identity_rate",
    "identityConcurrency": "identity_concurrency",
}


def normalize_limits(value: Any, where: str) -> dict[str, float] | None:
    """A VM's own limits (``limits:`` in its description): any of rate, identityRate,
    identityConcurrency; 0 turns one off. None: the node's limits apply."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise DocumentError(
            where, "expected a mapping", "give rate, identityRate or identityConcurrency"
        )
    result: dict[str, float] = {}
    for key, given in value.items():
        if key not in LIMIT_KEYS:
            raise DocumentError(f"{where}.{key}", "unknown field", "use " + ", ".join(LIMIT_KEYS))
        if isinstance(given, bool) or not isinstance(given, int | float) or given < 0:
            raise DocumentError(
                f"{where}.{key}", "expected a number, 0 or more", "write e.g. 5 (0: no limit)"
            )
        result[key] = float(given)
    return result
