"""Fault rules: failures the guest plane injects on purpose, so clients can be tested against
what the real service does on a bad day (reference sections 3 and 5: 410 while IMDS updates,
429 when throttled, 5xx, slow answers, dropped connections).

A rule matches requests by VM, path prefix, method and time window, fires with a probability,
and answers with its actions in turn: one action repeats (up to ``count`` times), several
form a script (``[410, 410]``: two 410s, then normal answers). Rules live in the store (kind
``fault``) like everything else a fleet shares; how often each has fired is counted by the node
that served the requests (``guest/faults.py``).

The one wire form, for the control plane, the fleet file and the test kit::

    {"vm": "web-1", "path": "/metadata/identity", "method": "GET", "probability": 1,
     "count": 2, "from": "+0", "until": "+60", "delay": 0, "retryAfter": 5,
     "actions": [410, 410, {"status": 429, "retryAfter": 1}, "reset", "hang", "pass"]}

Every field is optional; ``{}`` answers every request late by nothing, i.e. is a no-op rule.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from azimds.errors import Problem
from azimds.fleet.clock import parse_moment
from azimds.fleet.vm import VM_KIND
from azimds.store.base import Transaction

FAULT_KIND = "fault"
STATUSES = (410, 429, 500, 503)  # the failures the real service is documented to answer with
MAX_DELAY = 300.0  # seconds; longer is a hang
FIELDS: tuple[str, ...] = ("vm", "path", "method", "probability", "count", "from", "until")
FIELDS += ("delay", "retryAfter", "actions", "action")
ACTION_FIELDS = ("status", "retryAfter", "delay", "reset", "hang", "pass")


class FaultError(Problem):
    """A rule the fleet refuses; ``where`` names the field. Its text leaves ``where`` out: the
    control plane sends that as the error's ``field``."""

    def __init__(self, message: str, where: str) -> None:
        super().__init__(message, where=where)

    def __str__(self) -> str:
        return self.advice


@dataclass(frozen=True, slots=True)
class Action:
    """What one firing does: answer ``status`` (with the real service's body), reset the
    connection, hang until the client gives up, or pass (answer normally); after ``delay``."""

    kind: str = "pass"
    status: int = 0
    retry_after: int | None = None  # seconds, sent as Retry-After with a 429 or 503
    delay: float = 0.0  # seconds before the action

    def json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"status": self.status} if self.kind == "status" else {}
        if self.kind != "status":
            shown[self.kind] = True
        if self.retry_after is not None:
            shown["retryAfter"] = self.retry_after
        if self.delay:
            shown["delay"] = self.delay
        return shown

    @property
    def label(self) -> str:
        """A short name for logs and metrics: ``410``, ``reset``, ``hang``, ``pass``."""
        return str(self.status) if self.kind == "status" else self.kind


@dataclass(frozen=True, slots=True)
class FaultRule:
    id: str
    actions: tuple[Action, ...]
    vm: str = ""  # vmId; "" for every VM
    path: str = "/metadata"  # prefix, lower case
    method: str = ""  # "" for any
    probability: float = 1.0
    count: int | None = None  # firings before the rule is spent; None: never spent
    start: float | None = None  # epoch seconds
    end: float | None = None
    created: float = 0.0
    source: str = "api"

    def matches(self, vm_id: str, method: str, path: str, now: float) -> bool:
        """Whether a request is this rule's to fire on (``path`` lower case); the count and
        the probability are the caller's to apply."""
        return (
            (not self.vm or self.vm == vm_id)
            and path.startswith(self.path)
            and (not self.method or self.method == method)
            and (self.start is None or now >= self.start)
            and (self.end is None or now < self.end)
        )

    def body(self) -> dict[str, Any]:
        """The stored form (also the control plane's, with the node's counters added)."""
        return {
            "id": self.id,
            "vm": self.vm,
            "path": self.path,
            "method": self.method,
            "probability": self.probability,
            "count": self.count,
            "from": self.start,
            "until": self.end,
            "actions": [action.json() for action in self.actions],
            "created": self.created,
            "source": self.source,
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> FaultRule:
        return cls(
            id=str(body["id"]),
            actions=tuple(_action(a, 0.0, None, "actions") for a in body["actions"]),
            vm=str(body["vm"]),
            path=str(body["path"]),
            method=str(body["method"]),
            probability=float(body["probability"]),
            count=None if body["count"] is None else int(body["count"]),
            start=body["from"],
            end=body["until"],
            created=float(body["created"]),
            source=str(body["source"]),
        )


def _number(value: Any, where: str, low: float, high: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise FaultError(f"{what}, from {low:g} to {high:g}", where)
    return float(value)


def _retry_after(value: Any, where: str) -> int | None:
    if value is None:
        return None
    return int(_number(value, where, 0, 86400, "retryAfter is whole seconds"))


def _action(item: Any, delay: float, retry_after: int | None, where: str) -> Action:
    """One action from its short form (``410``, ``"reset"``) or its object form."""
    if isinstance(item, str) and item.isdigit():
        item = int(item)
    if isinstance(item, int) and not isinstance(item, bool):
        item = {"status": item}
    elif isinstance(item, str):
        item = {item: True}
    if not isinstance(item, Mapping):
        raise FaultError("an action is a status (410, 429, 500, 503), reset, hang or pass", where)
    unknown = set(item) - set(ACTION_FIELDS)
    if unknown:
        known = ", ".join(ACTION_FIELDS)
        raise FaultError(f"unknown action '{sorted(unknown)[0]}' (known: {known})", where)
    kinds = [kind for kind in ("reset", "hang", "pass") if item.get(kind)]
    if "status" in item:
        if item["status"] not in STATUSES or isinstance(item["status"], bool):
            allowed = ", ".join(map(str, STATUSES))
            message = f"status {item['status']!r} is not one of {allowed}"
            raise FaultError(message, f"{where}.status")
        kinds.append("status")
    if len(kinds) > 1:
        raise FaultError(f"an action does one thing, not {' and '.join(kinds)}", where)
    kind = kinds[0] if kinds else "pass"
    own_retry = _retry_after(item.get("retryAfter"), f"{where}.retryAfter")
    if own_retry is not None and item.get("status") not in (429, 503):
        raise FaultError("retryAfter goes with status 429 or 503", f"{where}.retryAfter")
    if own_retry is None and item.get("status") in (429, 503):
        own_retry = retry_after  # the rule's
    return Action(
        kind=kind,
        status=int(item.get("status", 0)),
        retry_after=own_retry,
        delay=_number(item.get("delay", delay), f"{where}.delay", 0, MAX_DELAY, "delay is seconds"),
    )


def parse_rule(
    spec: Any,
    now: float,
    find_vm: Callable[[str], str | None],
    where: str = "",
    source: str = "api",
) -> FaultRule:
    """Validate a rule in its wire form; ``find_vm(key)`` gives a vmId for a name or vmId
    (None if there is no such VM). Times may be relative ("+60"); they are fixed here."""
    if not isinstance(spec, Mapping):
        raise FaultError("a fault rule is a mapping (vm, path, method, actions, ...)", where)
    unknown = set(spec) - set(FIELDS)
    if unknown:
        known = ", ".join(FIELDS)
        raise FaultError(f"unknown field '{sorted(unknown)[0]}' (known: {known})", where)
    if "action" in spec and "actions" in spec:
        raise FaultError("give action or actions, not both", f"{where}action")
    given = spec.get("actions", [spec["action"]] if "action" in spec else [])
    if not isinstance(given, Sequence) or isinstance(given, str):
        raise FaultError("actions is a list, e.g. [410, 410] or [reset]", f"{where}actions")
    delay = _number(spec.get("delay", 0), f"{where}delay", 0, MAX_DELAY, "delay is seconds")
    retry_after = _retry_after(spec.get("retryAfter"), f"{where}retryAfter")
    actions = tuple(
        _action(item, delay, retry_after, f"{where}actions[{index}]")
        for index, item in enumerate(given or ["pass"])
    )
    vm = ""
    if spec.get("vm"):
        vm = find_vm(str(spec["vm"])) or ""
        if not vm:
            raise FaultError(f"no VM with vmId or name '{spec['vm']}'", f"{where}vm")
    path = spec.get("path") or "/metadata"
    if not isinstance(path, str) or not path.startswith("/"):
        message = "path is a prefix starting with /, e.g. /metadata/identity"
        raise FaultError(message, f"{where}path")
    method = str(spec.get("method") or "").upper()
    if method not in ("", "GET", "POST"):
        raise FaultError("method is GET or POST (or leave it out for both)", f"{where}method")
    count = spec.get("count", len(actions) if len(actions) > 1 else None)
    if count is not None:
        count = int(_number(count, f"{where}count", 1, 10**9, "count is a whole number"))
    start, end = (_moment(spec.get(key), now, f"{where}{key}") for key in ("from", "until"))
    if start is not None and end is not None and end <= start:
        raise FaultError("until must come after from", f"{where}until")
    return FaultRule(
        id="",
        actions=actions,
        vm=vm,
        path=path.lower(),
        method=method,
        probability=_number(
            spec.get("probability", 1), f"{where}probability", 0, 1, "probability is a number"
        ),
        count=count,
        start=start,
        end=end,
        created=now,
        source=source,
    )


def _moment(value: Any, now: float, where: str) -> float | None:
    if value is None:
        return None
    moment = parse_moment(value, now)
    if moment is None:
        raise FaultError("a time is ISO 8601, epoch seconds or +SECONDS from now", where)
    return moment


# --- writes --------------------------------------------------------------------------------


def add_fault(txn: Transaction, rule: FaultRule) -> FaultRule:
    rule = replace(rule, id=f"f-{uuid.uuid4().hex[:12]}")
    txn.put(FAULT_KIND, rule.id, rule.body())
    return rule


def remove_fault(txn: Transaction, rule_id: str) -> bool:
    return txn.delete(FAULT_KIND, rule_id)


def clear_faults(txn: Transaction) -> int:
    records = txn.objects(FAULT_KIND)
    for record in records:
        txn.delete(FAULT_KIND, record.id)
    return len(records)


def declare_faults(
    txn: Transaction, source: str, specs: Sequence[Any], now: float, where: str
) -> None:
    """Make ``source``'s rules in the store exactly the ones ``specs`` declare. A rule's id
    comes from its declaration, so an unchanged rule keeps its id, its times (relative ones
    count from when it was first applied) and the node's count of its firings."""
    find_vm = vm_finder(txn)
    wanted = {}
    for index, spec in enumerate(specs):
        digest = hashlib.sha256(json.dumps([source, index, spec], sort_keys=True).encode())
        rule = parse_rule(spec, now, find_vm, f"{where}[{index}].", source)
        wanted[f"d-{digest.hexdigest()[:12]}"] = rule
    for record in txn.objects(FAULT_KIND):
        if record.body.get("source") == source and record.id not in wanted:
            txn.delete(FAULT_KIND, record.id)
    for rule_id, rule in wanted.items():
        if txn.get(FAULT_KIND, rule_id) is None:
            txn.put(FAULT_KIND, rule_id, replace(rule, id=rule_id).body())


def vm_finder(txn: Transaction) -> Callable[[str], str | None]:
    """Look VMs up by vmId or (unique) name inside a transaction."""

    def find(key: str) -> str | None:
        if txn.get(VM_KIND, key) is not None:
            return key
        named = [
            record.id
            for record in txn.objects(VM_KIND)
            if record.body["description"]["compute"].get("name") == key
        ]
        return named[0] if len(named) == 1 else None

    return find
