"""What the guest app's own code costs per request, without a server: steadier than HTTP runs.

The HTTP benchmarks (``throughput.py``) measure azimds with granian and the kernel, which on a
shared machine swing by 10-20% between runs. This one calls ``GuestApp.__rsgi__`` directly, as
granian would, with the in-process scope and transport of ``azimds.kit.rsgi``, and reports
microseconds per request for:

* a cached answer (the instance document from the memo), with the request log on;
* the same with the request log off;
* a 429 (the documented limits on, the VM's bucket empty);
* a cached token (reused until the second ends);
* an answer the memo does not hold (the pipeline runs: ``/metadata/versions`` with a fresh
  query each time);

against the reference: an RSGI app that only reads the same two headers and answers fixed
bytes, through the same scope and transport. "over reference" is what azimds adds to that
per request, "vs reference" the ratio. Under granian, each request costs the event loop's
thread ~20 us more than here (its hand-off and scheduling, docs/benchmarks.md), so a
microsecond saved here is worth 5-10% of the throughput: leaving the request log out (about
1 us here) gave 13% more requests a second over HTTP. Run from the repo root with the venv's
python::

    python bench/app.py                 # runs of ~1 s per case, the best of 5
    python bench/app.py --smoke         # a quick run proving the script works
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import kit
from azimds.guest.callers import SingleVM
from azimds.guest.limits import DOCUMENTED, RateLimiter
from azimds.guest.observe import Recorder
from azimds.guest.rsgi import GuestApp
from azimds.kit.fleet import example_fleet, services
from azimds.kit.rsgi import Headers, Scope, Transport
from azimds.store.memory import MemoryStore

HEADERS = Headers([(b"host", b"169.254.169.254"), (b"metadata", b"true")])
INSTANCE = ("/metadata/instance", "api-version=2021-02-01")
TOKEN = (
    "/metadata/identity/oauth2/token",
    "api-version=2018-02-01&resource=https://vault.azure.net",
)
BODY = b"{}"


class Discard(Transport):
    """A transport that keeps no answer: the harness costs next to nothing."""

    def response_bytes(self, status: int, headers: Any, body: bytes) -> None:
        pass


class Reference:
    """The least an RSGI app can do: read the two headers IMDS checks, answer fixed bytes."""

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        scope.headers.get_all("metadata")
        "x-forwarded-for" in scope.headers  # noqa: B015 - the read is the point
        protocol.response_bytes(200, [("content-type", "application/json")], BODY)


def drive(app: Any, scope: Scope, transport: Transport) -> None:
    """One request, run to its end without an event loop: none of these cases waits for
    anything, so its coroutine finishes in one step."""
    coroutine = app.__rsgi__(scope, transport)
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise kit.BenchError(f"{scope.path}?{scope.query_string} waited for something")


def per_request(app: Any, scopes: Callable[[int], Scope], seconds: float, repeats: int) -> float:
    """Microseconds per request: the best of ``repeats`` runs of about ``seconds`` each."""
    transport = Discard(b"")
    for n in range(100):  # warm the memo, the buckets and the caches
        drive(app, scopes(n), transport)
    results = []
    count = 1000
    for _ in range(repeats):
        prepared = [scopes(n) for n in range(count)]
        started = time.perf_counter()
        for scope in prepared:
            drive(app, scope, transport)
        elapsed = time.perf_counter() - started
        results.append(elapsed / count * 1e6)
        count = max(1000, int(count * seconds / max(elapsed, 1e-6)))
    return min(results)


def fixed(path: str, query: str) -> Callable[[int], Scope]:
    scope = Scope("GET", path, query, HEADERS, "127.0.0.1:50000")
    return lambda n: scope


def fresh_query(n: int) -> Scope:
    return Scope("GET", "/metadata/versions", f"n={n}", HEADERS, "127.0.0.1:50000")


def cases() -> list[tuple[str, Any, Callable[[int], Scope]]]:
    store = MemoryStore()
    fleet = example_fleet(store)
    shared = services(store)

    def app(**options: Any) -> GuestApp:
        return GuestApp(fleet, SingleVM(), shared, **options)

    return [
        ("reference: two headers, fixed bytes", Reference(), fixed(*INSTANCE)),
        ("cached answer (instance document)", app(recorder=Recorder()), fixed(*INSTANCE)),
        ("cached answer, request log off", app(), fixed(*INSTANCE)),
        (
            "429 (limits on, bucket empty)",
            app(limiter=RateLimiter(DOCUMENTED), recorder=Recorder()),
            fixed(*INSTANCE),
        ),
        ("cached token", app(recorder=Recorder()), fixed(*TOKEN)),
        ("not in the memo (the pipeline runs)", app(recorder=Recorder()), fresh_query),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per run (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per case; the best counts")
    parser.add_argument("--smoke", action="store_true", help="0.05 s runs, 2 repeats")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.repeats = 0.05, 2
    if args.seconds <= 0 or args.repeats < 1:
        parser.error("--seconds must be > 0 and --repeats >= 1")
    print(f"CPU:     {kit.cpu_model()}\nPython:  {platform.python_version()} ({sys.executable})")
    print(f"runs:    {args.repeats} of ~{args.seconds:g} s per case; the fastest counts\n")
    results = [(name, per_request(app, scopes, args.seconds, args.repeats))
               for name, app, scopes in cases()]  # fmt: skip
    reference = results[0][1]
    rows = [
        (name, f"{micro:.2f} us", f"{micro - reference:+.2f} us", f"{micro / reference:.1f}x")
        for name, micro in results
    ]
    header = ("case", "per request", "over reference", "vs reference")
    kit.print_table(header, rows, left_first=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
