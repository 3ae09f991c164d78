"""A VM's own rate limits, as its description may give them (``limits:``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azimds.fleet.schema import DocumentError

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
