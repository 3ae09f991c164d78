"""Whether a VM that floods azimds slows the other VMs of its node.

Two VMs, one node in source-ip mode, rate limits on:

* the **victim** (127.0.0.2) asks for ``/metadata/instance?api-version=2021-02-01`` at a steady
  rate (default 100 a second, over one keep-alive connection, from a thread of this script); its
  own limit is raised so that it is never throttled itself;
* the **flooder** (127.0.0.1, wrk's source address) asks for the same as fast as wrk can, with
  the documented 5 requests a second: nearly everything it gets is a 429.

The victim's latency is measured twice in the same run, alone and during the flood, and the
table prints the ratio (goals: p50 and mean within 10%, i.e. at most 1.10x, up to 4 flood
connections; p50 within 2x at 16 and 64, where the flood saturates the event loop and the
server's turns keep it to its share). The flood's
intensity is wrk's connection count (``--flood-connections``, default 1: one VM's client
asking back to back; more connections model a VM with many clients at once).

Needs ``wrk``. Run from the repo root with the venv's python::

    .venv/bin/python bench/flood.py                    # 10 s per phase
    .venv/bin/python bench/flood.py --flood-connections 1,4,16
    .venv/bin/python bench/flood.py --smoke            # 1 s phases: proves it works
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import kit

VICTIM = "127.0.0.2"
FLOODER = kit.HOST  # wrk connects from 127.0.0.1
GOAL = 1.10  # the victim's p50 and mean, flooded / alone, up to 4 flood connections
GOAL_MANY = 2.0  # ... at 16 and 64 (docs/benchmarks.md)


def fleet() -> dict[str, object]:
    def vm(name: str, address: str, limits: dict[str, int] | None) -> dict[str, object]:
        description: dict[str, object] = {
            "compute": {"name": name, "location": "westus"},
            "network": {"interface": [{"ipv4": {"ipAddress": [{"privateIpAddress": address}]}}]},
        }
        if limits is not None:
            description["limits"] = limits
        return description

    # The victim's limit is off: what is measured is the flood's effect, not its own 429s.
    return {"vms": [vm("victim", VICTIM, {"rate": 0}), vm("flooder", FLOODER, None)]}


@dataclass(frozen=True)
class Latency:
    count: int
    p50_ms: float
    mean_ms: float
    p99_ms: float
    errors: int


class Victim:
    """Steady requests over one keep-alive connection from the victim's address."""

    def __init__(self, port: int, rate: float) -> None:
        self.port, self.interval = port, 1.0 / rate
        self.request = (
            f"GET {kit.INSTANCE} HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n"
        ).encode()

    def run(self, seconds: float) -> Latency:
        samples: list[float] = []
        errors = 0
        with socket.create_connection((kit.HOST, self.port), source_address=(VICTIM, 0)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = sock.makefile("rb")
            next_at = time.perf_counter()
            end = next_at + seconds
            while next_at < end:
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                started = time.perf_counter()
                sock.sendall(self.request)
                status = reader.readline()
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                reader.read(length)
                samples.append((time.perf_counter() - started) * 1000)
                if not status.startswith(b"HTTP/1.1 200"):
                    errors += 1
                next_at += self.interval
        samples.sort()
        return Latency(
            len(samples),
            statistics.median(samples),
            statistics.fmean(samples),
            samples[min(len(samples) - 1, int(len(samples) * 0.99))],
            errors,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kit.add_timing_options(parser, "1 s phases, to prove the script works")
    parser.add_argument("--rate", type=float, default=100.0, help="victim requests a second")
    parser.add_argument(
        "--flood-connections", default="1", help="wrk connections, comma-separated (1,4,16)"
    )
    args = kit.parse_timed_args(parser, argv)
    connections = [int(c) for c in args.flood_connections.split(",")]
    wrk = kit.find_tool("wrk")
    if wrk is None:
        print("error: wrk is needed (Debian: apt-get install wrk)", file=sys.stderr)
        return 1
    return kit.run_main(lambda: measure(args, wrk, connections), "azimds")


def measure(args: argparse.Namespace, wrk: str, connection_counts: list[int]) -> int:
    with tempfile.TemporaryDirectory(prefix="azimds-flood-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "fleet.json").write_text(json.dumps(fleet()))
        port, admin_port = kit.two_free_ports()
        argv = [sys.executable, "-m", "azimds", "serve", "--caller-mode", "source-ip"]
        argv += ["--fleet", str(tmp / "fleet.json"), "--store", "memory:"]
        argv += ["--state-dir", str(tmp), "--listen", f"{kit.HOST}:{port}"]
        argv += ["--admin-listen", f"{kit.HOST}:{admin_port}"]
        log = tmp / "azimds.log"
        with kit.running("azimds", argv, log) as proc:
            url = f"http://{kit.HOST}:{port}{kit.INSTANCE}"
            kit.wait_until_answering("azimds", proc, url, log, within=30, fetch_timeout=2)
            victim = Victim(port, args.rate)
            victim.run(args.warmup)
            rows = []
            for count in connection_counts:
                alone = victim.run(args.duration)
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    flood = pool.submit(kit.run_wrk, wrk, url, args.duration + 1.0, count)
                    time.sleep(0.5)  # the flood is under way before the victim measures
                    during = victim.run(args.duration)
                    flooded = kit.parse_wrk(flood.result(), "the flooder")
                rows.append((count, alone, during, flooded))
            if proc.poll() is not None:
                raise kit.BenchError(f"azimds exited during the run:\n{kit.tail(log)}")
    kit.print_machine(wrk)
    print(f"victim: {args.rate:g} requests/s, {args.duration:g} s per phase\n")
    header = ("flood conns", "flood req/s", "victim p50", "flooded p50", "ratio")
    header += ("victim mean", "flooded mean", "ratio", "flooded p99", "victim errors")
    table = []
    for count, alone, during, flooded in rows:
        table.append(
            (
                str(count),
                f"{flooded.requests_per_s:,.0f}",
                f"{alone.p50_ms:.3f} ms",
                f"{during.p50_ms:.3f} ms",
                f"{during.p50_ms / alone.p50_ms:.2f}x",
                f"{alone.mean_ms:.3f} ms",
                f"{during.mean_ms:.3f} ms",
                f"{during.mean_ms / alone.mean_ms:.2f}x",
                f"{during.p99_ms:.3f} ms",
                str(alone.errors + during.errors),
            )
        )
    kit.print_table(header, table, left_first=False)
    print(
        f"\ngoal: the victim's p50 and mean within {GOAL:.2f}x of its figures alone up to 4 flood"
        f" connections, its p50 within {GOAL_MANY:.0f}x at 16 and 64"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
