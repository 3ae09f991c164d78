"""What the guest plane did: a bounded request log, counters and latency histograms, and an
optional JSON-lines access log written off the hot path.

Recording a request appends one tuple, no more: every 128 requests, and whenever someone
reads the log, scrapes the metrics or the access-log writer wakes up, the new tuples are folded
into the log, the counters and the histograms in one loop. Formatting happens only when read.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import sys
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from azimds.guest.callers import peer_host

REQUEST_LOG_SIZE = 10_000  # entries kept for `azimds logs` and GET /v1/requests
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
CATEGORIES = ("instance", "identity", "attested", "scheduledevents", "loadbalancer", "versions")
FLUSH_INTERVAL = 0.2  # seconds between access-log writes
FOLD_BATCH = 128  # requests recorded before a fold: one fold holds the loop ~50 us

# What the guest app reports of a request, as it has it at hand:
Request = tuple[str, str, str, str | None, bool]  # method, path, query, Metadata, X-Forwarded-For
Sent = tuple[int, str, str]  # the status sent (0: none), its request id, the fault rule's id


def category_of(path: str) -> str:
    """The IMDS category of a request path (``other`` outside them and outside /metadata)."""
    if path[:9].lower() != "/metadata":
        return "other"
    first = path[10:].split("/", 1)[0]
    return first if first in CATEGORIES else "other"


@dataclass(frozen=True, slots=True)
class Entry:
    sequence: int
    time: float
    vm: str  # vmId, or "" for a caller that is no VM
    caller: str  # the peer address
    method: str
    path: str
    query: str
    status: int
    latency: float  # seconds
    category: str
    request_id: str
    fault: str  # the id of the fault rule that fired, or ""

    def json(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "time": dt.datetime.fromtimestamp(self.time, dt.UTC).isoformat(timespec="milliseconds"),
            "vm": self.vm,
            "caller": self.caller,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "status": self.status,
            "latencyMs": round(self.latency * 1000, 3),
            "category": self.category,
            "requestId": self.request_id,
            "fault": self.fault or None,
        }


# time, vmId, client, request, sent, latency, category ("": IMDS's, from the path)
Row = tuple[float, str, str, Request, Sent, float, str]


def _entry(sequence: int, row: Row) -> Entry:
    when, vm, client, (method, path, query, _, _), (status, request_id, fault), latency, of = row
    return Entry(
        sequence, when, vm, peer_host(client), method, path, query, status, latency,
        of or category_of(path), request_id, fault,
    )  # fmt: skip


class Recorder:
    def __init__(self, access_log: str = "") -> None:
        self._fresh: list[Row] = []  # recorded, not yet folded
        self._log: deque[Row] = deque(maxlen=REQUEST_LOG_SIZE)
        self._sequence = 0  # the sequence number of the newest row in the log
        self._requests: dict[tuple[str, int], int] = {}  # (category, status) -> count
        self._latency: dict[str, list[float]] = {}  # category -> [bucket counts..., sum, count]
        self._pending: list[tuple[int, list[Row]]] = []  # (first sequence, rows) to write
        self._categories: dict[str, str] = {}  # paths repeat: classify each once
        self._access_log = access_log

    def record(
        self, vm: str, client: str, request: Request, sent: Sent, latency: float, category: str = ""
    ) -> None:
        """Note one request: ``vm`` its VM's id ("" for none), ``client`` the peer as
        ``host:port``, ``latency`` in seconds; ``category`` for another service's requests
        (the WireServer's), else IMDS's category of the path."""
        fresh = self._fresh
        fresh.append((time.time(), vm, client, request, sent, latency, category))
        if len(fresh) >= FOLD_BATCH:
            self._fold()

    def _fold(self) -> None:
        """Count recorded requests and move them into the log."""
        fresh, self._fresh = self._fresh, []
        if not fresh:
            return
        categories, requests, histograms = self._categories, self._requests, self._latency
        for row in fresh:
            path = row[3][1]
            latency = row[5]
            category = row[6] or categories.get(path)
            if category is None:
                if len(categories) > REQUEST_LOG_SIZE:
                    categories.clear()
                category = categories[path] = category_of(path)
            key = (category, row[4][0])
            requests[key] = requests.get(key, 0) + 1
            histogram = histograms.get(category)
            if histogram is None:
                histogram = histograms[category] = [0.0] * (len(LATENCY_BUCKETS) + 3)
            histogram[bisect_left(LATENCY_BUCKETS, latency)] += 1  # the last: above them all
            histogram[-2] += latency
            histogram[-1] += 1
        if self._access_log:
            self._pending.append((self._sequence + 1, fresh))
        self._sequence += len(fresh)
        self._log.extend(fresh)

    @property
    def requests(self) -> dict[tuple[str, int], int]:
        """Requests so far by (category, status)."""
        self._fold()
        return self._requests

    @property
    def latency(self) -> dict[str, list[float]]:
        """Latency histograms by category: LATENCY_BUCKETS' counts, above them all, sum, count."""
        self._fold()
        return self._latency

    def since(self, sequence: int, limit: int) -> list[Entry]:
        """Entries after ``sequence``, oldest first, at most ``limit``."""
        self._fold()
        first = self._sequence - len(self._log) + 1  # the oldest row's sequence number
        skip = max(0, sequence - first + 1)
        rows = itertools.islice(self._log, skip, skip + max(0, limit))
        return [_entry(n, row) for n, row in enumerate(rows, first + skip)]

    async def write_access_log(self, stop: asyncio.Event) -> None:
        """Append pending entries as JSON lines every FLUSH_INTERVAL, until ``stop``."""
        if not self._access_log:
            return
        if self._access_log == "-":
            await self._write_until(stop, sys.stdout)
            return
        with Path(self._access_log).open("a", encoding="utf-8") as target:
            await self._write_until(stop, target)

    async def _write_until(self, stop: asyncio.Event, target: TextIO) -> None:
        while True:
            stopping = stop.is_set()
            self._fold()
            pending, self._pending = self._pending, []
            if pending:
                target.write(
                    "".join(
                        json.dumps(_entry(n, row).json()) + "\n"
                        for first, rows in pending
                        for n, row in enumerate(rows, first)
                    )
                )
                target.flush()
            if stopping:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_INTERVAL)


def prometheus(
    recorder: Recorder, gauges: dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]]
) -> str:
    """The metrics in Prometheus's text format; ``gauges``: name -> (help, {labels: value})."""
    lines = [
        "# HELP azimds_requests_total Guest-plane requests by category and status.",
        "# TYPE azimds_requests_total counter",
    ]
    for (category, status), total in sorted(recorder.requests.items()):
        lines.append(f'azimds_requests_total{{category="{category}",status="{status}"}} {total}')
    lines += [
        "# HELP azimds_request_seconds Guest-plane answer latency.",
        "# TYPE azimds_request_seconds histogram",
    ]
    for category, histogram in sorted(recorder.latency.items()):
        cumulative = 0.0
        for bound, in_bucket in zip(LATENCY_BUCKETS, histogram, strict=False):
            cumulative += in_bucket
            label = f'category="{category}",le="{bound}"'
            lines.append(f"azimds_request_seconds_bucket{{{label}}} {cumulative:g}")
        lines.append(
            f'azimds_request_seconds_bucket{{category="{category}",le="+Inf"}} {histogram[-1]:g}'
        )
        lines.append(f'azimds_request_seconds_sum{{category="{category}"}} {histogram[-2]:.6f}')
        lines.append(f'azimds_request_seconds_count{{category="{category}"}} {histogram[-1]:g}')
    for name, (help_text, values) in gauges.items():
        kind = "counter" if name.endswith("_total") else "gauge"
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in values.items():
            label_text = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}")
    return "\n".join(lines) + "\n"
