"""What the guest plane's own code costs per request, without sockets: steadier than HTTP runs.

The HTTP benchmarks (``throughput.py``) measure azimds with the kernel, which on a shared
machine swings by 10-20% between runs. This one hands whole requests, as bytes, to the guest
plane's HTTP/1.1 server (``azimds.serving.protocol``) over a transport that drops what it is
given, so it measures azimds's Python (parsing the head, the app, rendering the answer) and
nothing else.
It reports microseconds per request for:

* a cached answer (the instance document from the memo), with the request log on;
* the same with the request log off;
* a 429 (the documented limits on, the VM's bucket empty);
* a cached token (reused until the second ends);
* an answer the memo does not hold (the pipeline runs: ``/metadata/versions`` with a fresh
  query each time);

against the reference: an app that only reads the same two headers and answers fixed bytes,
through the same server. "over reference" is what the guest app adds to that per request, "vs
reference" the ratio. "bytecodes" counts the Python bytecodes one request runs (server and
app): unlike the time, it is the same on every run and machine, so two versions of the code
compare by it where timings on a shared machine swing by half. Run from the repo root with the
venv's python::

    python bench/app.py                 # runs of ~1 s per case, the best of 5
    python bench/app.py --smoke         # a quick run proving the script works
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import kit
from azimds.fleet.limits import DOCUMENTED
from azimds.guest.app import GuestApp
from azimds.guest.callers import SingleVM
from azimds.guest.events import MAX_BODY
from azimds.guest.limits import RateLimiter
from azimds.guest.observe import Recorder
from azimds.kit.fleet import example_fleet, services
from azimds.serving import protocol
from azimds.store.memory import MemoryStore

INSTANCE = "/metadata/instance?api-version=2021-02-01"
TOKEN = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"
HEADERS = ((b"content-type", b"application/json"),)


def request(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n".encode()


class Discard:
    """A transport that sends nothing anywhere: the harness costs next to nothing."""

    def write(self, data: bytes) -> None:
        pass

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        raise kit.BenchError("the server closed the connection")


class Reference:
    """The least an app can do: read the two headers IMDS checks, answer fixed bytes."""

    body_limit = MAX_BODY

    def handle(self, exchange: Any) -> None:
        exchange.headers.get_all("metadata")
        "x-forwarded-for" in exchange.headers  # noqa: B015 - the read is the point
        exchange.response_bytes(200, HEADERS, b"{}")


class Bytecodes:
    """A trace function counting the Python bytecodes run (``sys.settrace``, opcode events)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, frame: Any, event: str, arg: Any) -> Bytecodes:
        frame.f_trace_opcodes = True
        if event == "opcode":
            self.count += 1
        return self


async def per_request(
    app: Any, requests: Callable[[int], bytes], seconds: float, repeats: int
) -> tuple[float, int]:
    """Microseconds per request, the best of ``repeats`` runs of about ``seconds`` each; and
    the Python bytecodes one request runs (the median of 21), which, unlike the time, is the
    same on every run and every machine: the figure to compare two versions of the code by."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        # The server in process: its listener and one connection, no socket in use.
        listener = protocol._Listener(app, listening, 10.0, 1)
        connection = protocol._Connection(listener, ("127.0.0.1", 50000))
        connection.connection_made(Discard())  # type: ignore[arg-type]

        async def answer(data: bytes) -> None:
            connection.data_received(data)
            while connection.busy:  # an answer the pipeline works out in a task
                await asyncio.sleep(0)

        for n in range(100):  # warm the memo, the buckets and the caches
            await answer(requests(n))
        results = []
        count = 1000
        for _ in range(repeats):
            prepared = [requests(n) for n in range(count)]
            started = time.perf_counter()
            for data in prepared:
                await answer(data)
            elapsed = time.perf_counter() - started
            results.append(elapsed / count * 1e6)
            count = max(1000, int(count * seconds / max(elapsed, 1e-6)))
        counts = []
        for n in range(21):
            data = requests(n)
            counter = Bytecodes()
            sys.settrace(counter)
            await answer(data)
            sys.settrace(None)
            counts.append(counter.count)
        return min(results), sorted(counts)[len(counts) // 2]


def fixed(target: str) -> Callable[[int], bytes]:
    data = request(target)
    return lambda n: data


def fresh_query(n: int) -> bytes:
    return request(f"/metadata/versions?n={n}")


def cases() -> list[tuple[str, Any, Callable[[int], bytes]]]:
    store = MemoryStore()
    fleet = example_fleet(store)
    shared = services(store)

    def app(**options: Any) -> GuestApp:
        return GuestApp(fleet, SingleVM(), shared, **options)

    return [
        ("reference: two headers, fixed bytes", Reference(), fixed(INSTANCE)),
        ("cached answer (instance document)", app(recorder=Recorder()), fixed(INSTANCE)),
        ("cached answer, request log off", app(), fixed(INSTANCE)),
        (
            "429 (limits on, bucket empty)",
            app(limiter=RateLimiter(DOCUMENTED), recorder=Recorder()),
            fixed(INSTANCE),
        ),
        ("cached token", app(recorder=Recorder()), fixed(TOKEN)),
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
    results = [
        (name, asyncio.run(per_request(app, requests, args.seconds, args.repeats)))
        for name, app, requests in cases()
    ]
    reference = results[0][1][0]
    rows = [
        (name, f"{micro:.2f} us", f"{micro - reference:+.2f} us", f"{micro / reference:.1f}x",
         f"{codes:,}")
        for name, (micro, codes) in results
    ]  # fmt: skip
    header = ("case", "per request", "over reference", "vs reference", "bytecodes")
    kit.print_table(header, rows, left_first=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
