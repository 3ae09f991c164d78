"""The retry policy: which answers to try again, how long to wait, when to give up.

Microsoft's guidance (reference sections 1 and 5, [DOC-MI]; what azure-identity and MSAL do):

- **410** means "IMDS is going through updates and will be available within 70 seconds":
  retried, with growing waits, until 70 s have passed since the first 410.
- **429** (throttled) and **5xx** (transient) are retried with exponential backoff, about
  2, 4, 8, 16 s ([DOC-MI]: "5 tries at 0, ~2, ~6, ~14, ~30 s"), each wait jittered so that
  many VMs do not retry in step. ``Retry-After``, when sent, sets the wait instead.
- **404** from ``/metadata/identity`` is retried like a 5xx ("IMDS endpoint is updating" while
  a new identity propagates); elsewhere a 404 is an answer.
- Connection errors and timeouts (nothing answered) are retried like a 5xx.
- Every try has a small timeout of its own, and everything, waits included, a deadline.
- 400 is never retried: it means "bad request" or "no identity".

The policy is data; ``Retrier`` applies it to one request's outcomes. Neither does I/O nor
reads a real clock unless given one, so tests drive them with a fake clock.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

GONE = 410
THROTTLED = 429


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the client retries. The defaults follow Microsoft's guidance (module docstring)."""

    retries: int = 5  # tries after the first, for 429, 5xx, identity 404 and no answer
    backoff: float = 2.0  # seconds before the first retry; doubles with each retry
    max_backoff: float = 30.0  # the longest computed wait (Retry-After may ask for more)
    jitter: float = 0.25  # each computed wait is scaled by a random factor in 1 +/- jitter
    gone_for: float = 70.0  # seconds a run of 410s is retried for, from the first 410
    gone_retries: int = 20  # and at most this many times (should Retry-After say 0)
    timeout: float = 5.0  # seconds for one try (connect, send, answer)
    deadline: float = 90.0  # seconds for the whole call, tries and waits included

    def __post_init__(self) -> None:
        numbers = {
            "backoff": self.backoff,
            "max_backoff": self.max_backoff,
            "gone_for": self.gone_for,
            "timeout": self.timeout,
            "deadline": self.deadline,
        }
        for name, value in numbers.items():
            if value < 0:
                raise ValueError(f"RetryPolicy.{name} must be 0 or more, not {value}")
        if self.timeout == 0 or self.deadline == 0:
            raise ValueError("RetryPolicy.timeout and deadline must be more than 0")
        if self.retries < 0 or self.gone_retries < 0:
            raise ValueError("RetryPolicy.retries and gone_retries must be 0 or more")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter must be from 0 to 1, not {self.jitter}")

    @classmethod
    def never(cls, timeout: float = 5.0) -> RetryPolicy:
        """One try, no retries (a probe, or a test that wants to see the first answer)."""
        return cls(retries=0, gone_retries=0, gone_for=0.0, timeout=timeout, deadline=timeout)

    def retried(self, status: int, identity: bool) -> bool:
        """Whether an answer with ``status`` is worth another try at all."""
        return status in (GONE, THROTTLED) or 500 <= status <= 599 or (identity and status == 404)

    def wait(self, retry: int, chance: float) -> float:
        """The computed wait before retry number ``retry`` (1, 2, ...), given a random number
        ``chance`` in [0, 1)."""
        base: float = min(self.max_backoff, self.backoff * 2.0 ** (retry - 1))
        return base * (1 + self.jitter * (2 * chance - 1))


class Retrier:
    """One call's retries: tells, after each outcome, how long to wait before the next try, or
    None to stop. ``clock`` is monotonic seconds; ``chance`` gives numbers in [0, 1)."""

    def __init__(
        self,
        policy: RetryPolicy,
        clock: Callable[[], float] = time.monotonic,
        chance: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.chance = chance
        self.started = clock()
        self.retries = 0  # retries spent on 429, 5xx, identity 404 and no answer
        self.gone_retries = 0
        self.gone_since: float | None = None
        self.waited = 0.0

    @property
    def deadline(self) -> float:
        return self.started + self.policy.deadline

    def timeout(self) -> float:
        """The timeout for the next try: the policy's, or what is left before the deadline."""
        return max(min(self.policy.timeout, self.deadline - self.clock()), 0.001)

    def after(self, status: int | None, retry_after: float | None, identity: bool) -> float | None:
        """The wait before the next try after an answer with ``status`` (None: no answer), or
        None to give up. ``identity``: the request was to /metadata/identity."""
        now = self.clock()
        if status is not None and not self.policy.retried(status, identity):
            return None
        if status == GONE:
            if self.gone_since is None:
                self.gone_since = now
            left = self.policy.gone_for - (now - self.gone_since)
            if left <= 0 or self.gone_retries >= self.policy.gone_retries:
                return None
            self.gone_retries += 1
            wait = self._wait(self.gone_retries, retry_after)
            wait = min(wait, left)
        else:
            if self.retries >= self.policy.retries:
                return None
            self.retries += 1
            wait = self._wait(self.retries, retry_after)
        if now + wait >= self.deadline:
            return None  # the next try could not even start in time
        self.waited += wait
        return wait

    def _wait(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return self.policy.wait(retry, self.chance())


def retry_after(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None when absent or
    unreadable. ``headers`` has lower-case names."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            return None
        seconds = moment.timestamp() - now()
    if seconds != seconds:  # NaN
        return None
    return max(seconds, 0.0)
