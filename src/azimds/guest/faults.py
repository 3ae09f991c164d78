"""Fault rules at work on the guest plane: which rule fires for a request, and what it answers.

The rules come with the fleet snapshot (``fleet/faults.py``); how often each fired is this
node's own count, kept here: a script (``410, 410``) runs once per node, and starts again if
the node restarts. Only a fleet with rules pays anything on the request path.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from azimds.fleet.faults import Action, FaultRule
from azimds.guest.errors import Family
from azimds.guest.responses import Response


class Faults:
    def __init__(self, chance: Callable[[], float] = random.random) -> None:
        self._chance = chance
        self.fired: dict[str, int] = {}  # rule id -> firings on this node
        self.outcomes: dict[str, int] = {}  # action label -> firings, for the metrics
        self._answers: dict[tuple[Family, int, int | None], Response] = {}

    def pick(
        self, rules: Sequence[FaultRule], vm_id: str, method: str, path: str
    ) -> tuple[FaultRule, Action] | None:
        """The first rule that fires for this request, and the action it takes now."""
        now = time.time()
        lowered = path.lower()
        for rule in rules:
            if not rule.matches(vm_id, method, lowered, now):
                continue
            fired = self.fired.get(rule.id, 0)
            if rule.count is not None and fired >= rule.count:
                continue
            if rule.probability < 1.0 and self._chance() >= rule.probability:
                continue
            self.fired[rule.id] = fired + 1
            action = rule.actions[fired % len(rule.actions)]
            self.outcomes[action.label] = self.outcomes.get(action.label, 0) + 1
            return rule, action
        return None

    def answer(self, action: Action, path: str) -> Response:
        """The failure a status action answers with, as the real service words it."""
        family = Family.for_path(path)
        key = (family, action.status, action.retry_after)
        response = self._answers.get(key)
        if response is None:
            response = family.failure(action.status)
            if action.retry_after is not None:
                retry_after = ("retry-after", str(action.retry_after))
                response = Response(
                    response.status, (*response.headers, retry_after), response.body
                )
            self._answers[key] = response
        return response

    def state(self, rule: FaultRule) -> dict[str, Any]:
        """A rule as the control plane shows it, with this node's count of its firings."""
        fired = self.fired.get(rule.id, 0)
        now = time.time()
        remaining = None if rule.count is None else max(rule.count - fired, 0)
        active = remaining != 0 and (rule.end is None or now < rule.end)
        return {**rule.body(), "fired": fired, "remaining": remaining, "active": active}

    def forget_others(self, rules: Sequence[FaultRule]) -> None:
        """Drop the counts of rules that are gone (called on every new snapshot)."""
        kept = {rule.id for rule in rules}
        for rule_id in [rule_id for rule_id in self.fired if rule_id not in kept]:
            del self.fired[rule_id]
