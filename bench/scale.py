"""How azimds scales with the number of VMs it serves in source-ip mode.

What it measures, for each fleet size N (default 1, 1,000 and 10,000 VMs):

* start-up time: from starting ``azimds serve --caller-mode source-ip --fleet FILE`` (with a
  fresh SQLite store and state directory) until its banner's "Ctrl+C stops." line is printed;
  this includes reading and validating the fleet file and writing it to the store
  ("banner" column), and until the guest plane first answers a request ("answering" column:
  azimds prints its banner before its listeners accept connections, so the two can differ);
* requests per second and 99th percentile latency that ``wrk`` (one thread, 50 keep-alive
  connections, header ``Metadata: true``) gets from ``/metadata/instance?api-version=2021-02-01``
  after a short warm-up whose results are discarded;
* the server's resident memory (VmRSS from /proc/PID/status) after start-up and after the run.

VM 0 of every fleet has the private address 127.0.0.1, the others distinct 10.x.y.z addresses.
wrk connects from 127.0.0.1, so every request identifies VM 0 through the full source-ip
lookup. Before the load, one request checks that ``compute/name`` answers ``vm-0``.

The table compares each N with N=1: requests/s as a ratio (goal: within 10%, i.e. >= 0.90x)
and memory per VM, (RSS(N) - RSS(1)) / (N - 1) after the run (goal: under 50 KB per VM).
Everything listens on 127.0.0.1 only; each N runs out of a temporary directory (fleet file,
store, state, log) that is removed afterwards, and the server is stopped on every exit.

Needs ``wrk`` (Debian: ``apt-get install wrk``). Run from the repo root with the venv's
python::

    .venv/bin/python bench/scale.py                     # N = 1, 1000, 10000; 10 s runs
    .venv/bin/python bench/scale.py --smoke             # N = 1, 100; 1 s runs: proves it works
    .venv/bin/python bench/scale.py --counts 1,1000,10000,50000 --duration 30
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import kit

NAME_LEAF = "/metadata/instance/compute/name?api-version=2021-02-01&format=text"
BANNER_END = "Ctrl+C"
START_TIMEOUT = 600.0  # 10,000 VMs are validated and stored before the banner
CONNECTIONS = 50
GOAL_RATIO = 0.90  # requests/s within 10% of the 1-VM figure
GOAL_KB_PER_VM = 50.0


@dataclass(frozen=True)
class Result:
    vms: int
    startup_s: float
    answering_s: float
    requests_per_s: float
    p99_ms: float
    rss_start_kb: int
    rss_end_kb: int
    notes: str


def vm_address(index: int) -> str:
    """127.0.0.1 for VM 0 (wrk's source address); distinct 10.x.y.z for the others."""
    if index == 0:
        return kit.HOST
    if index >= 1 << 24:
        raise kit.BenchError("at most 16,777,216 VMs fit in 10.0.0.0/8")
    return f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"


def vm_description(index: int) -> dict[str, Any]:
    return {
        "compute": {
            "name": f"vm-{index}",
            "vmId": str(uuid.uuid4()),
            "location": "westus",
            "vmSize": "Standard_D2s_v5",
        },
        "network": {
            "interface": [
                {
                    "ipv4": {"ipAddress": [{"privateIpAddress": vm_address(index)}]},
                    "macAddress": f"00224{index:07X}",
                }
            ]
        },
    }


def write_fleet(path: Path, count: int) -> None:
    path.write_text(json.dumps({"vms": [vm_description(i) for i in range(count)]}))


def rss_kb(pid: int) -> int:
    """The process's resident set size (VmRSS) in KB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise kit.BenchError(f"no VmRSS in /proc/{pid}/status")


class Banner:
    """Copies the server's output to a log and notes when the banner's last line appears."""

    def __init__(self, stream: IO[bytes], log: Path) -> None:
        self.seen = threading.Event()
        self.at = 0.0
        self._thread = threading.Thread(target=self._copy, args=(stream, log), daemon=True)
        self._thread.start()

    def _copy(self, stream: IO[bytes], log: Path) -> None:
        with log.open("wb") as out:
            for line in stream:  # ends when the server closes its output (exits)
                if not self.seen.is_set() and BANNER_END.encode() in line:
                    self.at = time.monotonic()
                    self.seen.set()
                out.write(line)
                out.flush()

    def join(self) -> None:
        self._thread.join(timeout=5)


@contextlib.contextmanager
def running(argv: list[str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], Banner]]:
    """Run ``argv`` with output to ``log``; always terminate (then kill) it on leaving."""
    proc = kit.start(argv, subprocess.PIPE, subprocess.STDOUT)
    assert proc.stdout is not None
    banner = Banner(proc.stdout, log)
    try:
        yield proc, banner
    finally:
        kit.stop("azimds", proc, timeout=10)
        banner.join()
        proc.stdout.close()


def wait_for_banner(proc: subprocess.Popen[bytes], banner: Banner, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not banner.seen.wait(timeout=0.01):
        if proc.poll() is not None:
            banner.join()
            raise kit.BenchError(f"azimds exited with status {proc.returncode}:\n{kit.tail(log)}")
        if time.monotonic() > deadline:
            raise kit.BenchError(
                f"azimds printed no banner within {START_TIMEOUT:.0f} s:\n{kit.tail(log)}"
            )


def measure(count: int, args: argparse.Namespace, wrk: str) -> Result:
    """Start azimds with ``count`` VMs in a fresh temporary directory and measure it."""
    with tempfile.TemporaryDirectory(prefix=f"azimds-scale-{count}-") as tmp_name:
        tmp = Path(tmp_name)
        fleet = tmp / "fleet.json"
        write_fleet(fleet, count)
        port, admin_port = kit.two_free_ports()
        base = f"http://{kit.HOST}:{port}"
        argv = [sys.executable, "-m", "azimds", "serve", "--caller-mode", "source-ip"]
        argv += ["--fleet", str(fleet), "--store", f"sqlite:///{tmp}/azimds.db"]
        argv += ["--state-dir", str(tmp), "--listen", f"{kit.HOST}:{port}"]
        argv += ["--admin-listen", f"{kit.HOST}:{admin_port}", "--rate-limit", "off"]
        log = tmp / "azimds.log"
        started = time.monotonic()
        with running(argv, log) as (proc, banner):
            wait_for_banner(proc, banner, log)
            startup = banner.at - started
            # The banner can come before the guest listener accepts connections: poll.
            status, body = kit.wait_until_answering(
                "azimds", proc, base + NAME_LEAF, log, within=START_TIMEOUT, fetch_timeout=5.0
            )
            answering = time.monotonic() - started
            if (status, body) != (200, b"vm-0"):
                raise kit.BenchError(
                    f"{NAME_LEAF} answered {status} {body[:200]!r}, not 200 'vm-0'"
                )
            rss_start = rss_kb(proc.pid)
            kit.run_wrk(wrk, base + kit.INSTANCE, args.warmup, CONNECTIONS)
            output = kit.run_wrk(wrk, base + kit.INSTANCE, args.duration, CONNECTIONS)
            rss_end = rss_kb(proc.pid)
            if proc.poll() is not None:
                raise kit.BenchError(f"azimds exited during the run:\n{kit.tail(log)}")
        run = kit.parse_wrk(output, f"{count:,} VMs")
        return Result(
            count, startup, answering, run.requests_per_s, run.p99_ms, rss_start, rss_end, run.notes
        )


def show_table(results: list[Result]) -> None:
    reference = results[0]
    header = (
        "VMs",
        "banner",
        "answering",
        "requests/s",
        "p99",
        "RSS start",
        "RSS end",
        "vs 1 VM",
        "per VM",
    )
    rows = []
    for r in results:
        ratio = r.requests_per_s / reference.requests_per_s if reference.requests_per_s else 0.0
        per_vm = "-"
        if r.vms > reference.vms:
            per_vm = f"{(r.rss_end_kb - reference.rss_end_kb) / (r.vms - reference.vms):.1f} KB"
        rows.append(
            (
                f"{r.vms:,}",
                f"{r.startup_s:.2f} s",
                f"{r.answering_s:.2f} s",
                f"{r.requests_per_s:,.0f}",
                f"{r.p99_ms:.2f} ms",
                f"{r.rss_start_kb / 1024:.1f} MB",
                f"{r.rss_end_kb / 1024:.1f} MB",
                f"{ratio:.2f}x",
                per_vm,
            )
        )
    kit.print_table(header, rows, left_first=False)
    for r in results:
        if r.notes:
            print(f"warning: {r.vms:,} VMs: {r.notes}")


def print_goals(results: list[Result]) -> None:
    reference = results[0]
    print()
    print(
        "banner/answering: seconds from process start to the banner's Ctrl+C line / to the "
        "first answer;\nRSS start/end: VmRSS after start-up / after the wrk runs; per VM: "
        "(RSS end(N) - RSS end(1)) / (N - 1)"
    )
    print(
        f"goals (against N={reference.vms:,}): requests/s within 10% (>= {GOAL_RATIO:.2f}x); "
        f"under {GOAL_KB_PER_VM:g} KB of RSS per VM"
    )
    for r in results[1:]:
        ratio = r.requests_per_s / reference.requests_per_s if reference.requests_per_s else 0.0
        per_vm = (r.rss_end_kb - reference.rss_end_kb) / (r.vms - reference.vms)
        throughput = "met" if ratio >= GOAL_RATIO else "MISSED"
        memory = "met" if per_vm < GOAL_KB_PER_VM else "MISSED"
        print(
            f"  {r.vms:>7,} VMs: throughput {ratio:.2f}x {throughput}; "
            f"memory {per_vm:.1f} KB/VM {memory}"
        )


def parse_counts(text: str) -> list[int]:
    try:
        counts = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        message = f"expected numbers separated by commas: {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if not counts or any(n < 1 for n in counts) or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError("counts must be distinct numbers >= 1")
    return sorted(counts)


def report(args: argparse.Namespace, wrk: str) -> int:
    kit.print_machine(wrk)
    print(
        f"load:    wrk -t1 -c{CONNECTIONS} -d{args.duration:g}s --latency -H 'Metadata: true' "
        f"{kit.INSTANCE} (after a {args.warmup:g} s warm-up), source-ip mode, caller = VM 0"
    )
    results = []
    for count in args.counts:
        print(f"running {count:,} VM(s)", flush=True)
        results.append(measure(count, args, wrk))
    print()
    show_table(results)
    print_goals(results)
    return 1 if any("non-2xx" in r.notes for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure azimds's start-up, throughput and memory against its fleet size."
    )
    parser.add_argument(
        "--counts",
        type=parse_counts,
        default=[1, 1000, 10000],
        metavar="N,N,...",
        help="fleet sizes; the smallest is the reference (default 1,1000,10000)",
    )
    kit.add_timing_options(parser, "counts 1,100 and 1 s runs: proves it works")
    args = kit.parse_timed_args(parser, argv)
    if args.smoke:
        args.counts = [1, 100]

    wrk = kit.find_tool("wrk")
    if wrk is None:
        message = "error: wrk not found; install it (Debian/Ubuntu: apt-get install wrk)"
        print(message, file=sys.stderr)
        return 2
    return kit.run_main(lambda: report(args, wrk), "azimds")


if __name__ == "__main__":
    sys.exit(main())
