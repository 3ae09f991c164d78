"""The clock scheduled events run on: real time, scaled time, or time advanced by hand.

Its state lives in the store (setting ``clock``), so a restart continues where the clock was
and every node of a fleet reads the same time: emulated = anchor + (real - realAnchor) * scale,
where scale is 1 for real time and 0 for a manual clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azimds.store.base import Transaction

CLOCK_SETTING = "clock"
SETTING_KIND = "setting"


@dataclass(frozen=True, slots=True)
class ClockState:
    scale: float = 1.0  # emulated seconds per real second; 0: manual
    real_anchor: float = 0.0
    anchor: float = 0.0  # emulated time at real_anchor

    def now(self, real: float) -> float:
        if self.real_anchor == 0.0:
            return real  # never set: real time
        return self.anchor + (real - self.real_anchor) * self.scale

    def body(self) -> dict[str, Any]:
        return {"scale": self.scale, "realAnchor": self.real_anchor, "anchor": self.anchor}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ClockState:
        return cls(float(body["scale"]), float(body["realAnchor"]), float(body["anchor"]))


def _current(txn: Transaction) -> ClockState:
    record = txn.get(SETTING_KIND, CLOCK_SETTING)
    return ClockState.from_body(record.body) if record else ClockState()


def set_clock(txn: Transaction, scale: float, real: float) -> ClockState:
    """Run the clock at ``scale`` from now on, continuing from the time it shows now."""
    txn.lock()
    current = _current(txn)
    if current.real_anchor != 0.0 and current.scale == scale:
        return current
    state = ClockState(scale=scale, real_anchor=real, anchor=current.now(real))
    txn.put(SETTING_KIND, CLOCK_SETTING, state.body())
    return state


def advance_clock(txn: Transaction, seconds: float, real: float) -> ClockState:
    """Move the clock forward (any mode); events due meanwhile happen at once."""
    txn.lock()
    current = _current(txn)
    state = ClockState(current.scale, real, current.now(real) + seconds)
    txn.put(SETTING_KIND, CLOCK_SETTING, state.body())
    return state


def parse_moment(value: Any, now: float) -> float | None:
    """Epoch seconds, an ISO 8601 time (UTC unless it says), or "+SECONDS" from ``now``;
    None when ``value`` is none of these."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        return None
    if value.startswith("+") and value[1:].replace(".", "", 1).isdigit():
        return now + float(value[1:])
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()
