"""What the benchmark scripts share: child processes, HTTP probes, wrk, and the machine.

Not a benchmark itself. The HTTP benchmarks (throughput, scale, flood) import it as ``kit``:
running ``python bench/X.py`` puts ``bench/`` on ``sys.path``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

HOST = "127.0.0.1"
INSTANCE = "/metadata/instance?api-version=2021-02-01"
HEADERS = {"Metadata": "true"}


class BenchError(Exception):
    """A failure that ends the benchmark with a message rather than a traceback."""


def free_port() -> int:
    """A TCP port on ``HOST`` that nothing listens on at the moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def two_free_ports() -> tuple[int, int]:
    """Two distinct free ports on ``HOST``."""
    first, second = free_port(), free_port()
    while second == first:
        second = free_port()
    return first, second


def fetch(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET ``url`` with ``HEADERS``: (status, body), error statuses included."""
    request = urllib.request.Request(url, headers=HEADERS)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def find_tool(name: str) -> str | None:
    """The path of program ``name``, looking in the sbin directories too."""
    # nginx lives in /usr/sbin, which is not on every user's PATH.
    return shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")


def start(
    argv: list[str], stdout: int | IO[bytes], stderr: int | IO[bytes]
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own, stdin from /dev/null."""
    # A session of its own: Ctrl+C reaches only this script, which then stops the child.
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True
    )


def stop(name: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Terminate ``proc`` if it still runs; kill it if it outlives SIGTERM by ``timeout`` s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"{name} ignored SIGTERM; killing it", file=sys.stderr)
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running(name: str, argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with output to ``log``; always terminate (then kill) it on leaving."""
    with log.open("wb") as out:
        proc = start(argv, out, out)
    try:
        yield proc
    finally:
        stop(name, proc, timeout=5)


def wait_until_answering(
    name: str,
    proc: subprocess.Popen[bytes],
    url: str,
    log: Path,
    *,
    within: float,
    fetch_timeout: float,
    want_status: int | None = None,
) -> tuple[int, bytes]:
    """Poll ``url`` until it answers (with ``want_status``, if given); return that answer.

    Raises ``BenchError`` (with the end of ``log``) if ``proc`` exits first or if no such
    answer comes within ``within`` seconds.
    """
    deadline = time.monotonic() + within
    while True:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with status {proc.returncode}:\n{tail(log)}")
        try:
            status, body = fetch(url, timeout=fetch_timeout)
        except OSError as exc:
            problem = str(exc)
        else:
            if want_status is None or status == want_status:
                return status, body
            problem = f"status {status}"
        if time.monotonic() > deadline:
            raise BenchError(
                f"{name} did not answer {url} within {within:.0f} s ({problem}):\n{tail(log)}"
            )
        time.sleep(0.01)


def add_timing_options(parser: argparse.ArgumentParser, smoke_help: str) -> None:
    """Add ``--duration`` (of each measured run) and ``--smoke`` (described by ``smoke_help``)."""
    parser.add_argument(
        "--duration", type=float, default=10.0, metavar="SECONDS", help="each measured run"
    )
    parser.add_argument("--smoke", action="store_true", help=smoke_help)


def parse_timed_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv`` and set ``duration`` and ``warmup``: 1 s runs after 0.5 s warm-ups with
    ``--smoke``, else warm-ups of ``min(2 s, duration)``."""
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup = 1.0, 0.5
    else:
        args.warmup = min(2.0, args.duration)
    if args.duration <= 0:
        parser.error("--duration must be > 0")
    return args


def run_main(body: Callable[[], int], servers: str) -> int:
    """Run ``body`` with SIGTERM turned into Ctrl+C; end a ``BenchError`` with a message and
    status 1, Ctrl+C with status 130 (``servers`` are stopped by then)."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwinds through the finally blocks that stop the servers

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return body()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; {servers} stopped", file=sys.stderr)
        return 130


@dataclass(frozen=True)
class WrkRun:
    """What one wrk run reports: requests/s, p50 and p99 latency, and any trouble."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    notes: str  # non-2xx answers, socket errors; "" when there were none


def compact(count: float) -> str:
    """A rate such as 41,234.5 in three or four figures: ``41.2k`` (``850``, ``1.2M``)."""
    if count >= 999_950:
        return f"{count / 1_000_000:.1f}M"
    if count >= 999.5:
        return f"{count / 1_000:.1f}k"
    return f"{count:.0f}"


@dataclass(frozen=True)
class WrkRounds:
    """Several measured runs of one target (its rounds), summed up by their medians: on a
    shared machine one run can be 10-20% off, and a median ignores a single outlier."""

    runs: tuple[WrkRun, ...]

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError("WrkRounds needs at least one run")

    @property
    def requests_per_s(self) -> float:
        """The median of the runs' requests/s."""
        return statistics.median(run.requests_per_s for run in self.runs)

    @property
    def p50_ms(self) -> float:
        """The median of the runs' p50 latencies."""
        return statistics.median(run.p50_ms for run in self.runs)

    @property
    def p99_ms(self) -> float:
        """The median of the runs' p99 latencies."""
        return statistics.median(run.p99_ms for run in self.runs)

    @property
    def spread(self) -> str:
        """The runs' requests/s from the lowest to the highest (``41.2k-46.0k``); "-" for one
        run."""
        if len(self.runs) == 1:
            return "-"
        rates = [run.requests_per_s for run in self.runs]
        return f"{compact(min(rates))}-{compact(max(rates))}"

    @property
    def notes(self) -> str:
        """The runs' notes, each after its round's number (from 1) when there are several;
        "" when no run had any."""
        if len(self.runs) == 1:
            return self.runs[0].notes
        return "; ".join(
            f"round {number}: {run.notes}"
            for number, run in enumerate(self.runs, start=1)
            if run.notes
        )


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def to_ms(text: str) -> float:
    """A wrk latency such as ``1.23ms`` or ``850.00us`` in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise BenchError(f"cannot parse wrk latency {text!r}")
    return float(match[1]) * _UNIT_MS[match[2]]


def parse_wrk(output: str, what: str) -> WrkRun:
    """The figures in the output of ``wrk --latency`` run against ``what``."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if rps is None or p50 is None or p99 is None:
        raise BenchError(f"unexpected wrk output for {what}:\n{output}")
    notes = []
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx is not None:
        notes.append(f"{non_2xx[1]} non-2xx responses")
    errors = re.search(r"Socket errors:\s+(.+)", output)
    if errors is not None:
        notes.append(f"socket errors: {errors[1].strip()}")
    return WrkRun(float(rps[1]), to_ms(p50[1]), to_ms(p99[1]), "; ".join(notes))


def run_wrk(
    wrk: str, url: str, seconds: float, connections: int, script: Path | None = None
) -> str:
    """Run wrk for ``seconds``; wrk takes whole seconds, so a fraction ends it with SIGINT.
    ``script``: a wrk Lua script (``pacing_script`` makes one that paces the load)."""
    whole = math.ceil(seconds)
    argv = [wrk, "-t1", f"-c{connections}", f"-d{whole}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    argv += ["-H", "Metadata: true", url]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        try:
            out, err = proc.communicate(timeout=seconds if seconds < whole else whole + 60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # wrk stops early and still reports
            out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({proc.returncode}):\n{err}")
    return out


def pacing_script(directory: Path, delay_ms: int) -> Path:
    """A wrk script in which each connection waits ``delay_ms`` on average between its
    requests: with C connections the load is about C * 1000 / (delay_ms + latency) requests a
    second. Each wait is drawn from 0 to twice ``delay_ms``: with one fixed wait the
    connections fall into step and their requests arrive in bursts of C at once, which
    measures the burst's queue rather than the server at that load."""
    path = directory / f"pace-{delay_ms}ms.lua"
    path.write_text(f"function delay()\n  return math.random(0, {2 * delay_ms})\nend\n")
    return path


def tool_version(argv: list[str]) -> str:
    """The first line a program prints for ``argv`` (e.g. ``nginx -v``), or "unknown"."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def print_machine(wrk: str, *extra: tuple[str, str]) -> None:
    """Print CPUs, CPU model and Python, then ``extra`` (label, value) lines, then wrk."""
    lines = [
        ("nproc", str(len(os.sched_getaffinity(0)))),
        ("CPU", cpu_model()),
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        *extra,
        ("wrk", tool_version([wrk, "-v"])),
    ]
    for label, value in lines:
        print(f"{label + ':':<9}{value}")


def print_table(
    header: tuple[str, ...], rows: Sequence[tuple[str, ...]], *, left_first: bool
) -> None:
    """Print ``rows`` under ``header`` in aligned columns, right-aligned but for the first
    column when ``left_first``."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    aligns = [str.rjust] * len(header)
    if left_first:
        aligns[0] = str.ljust

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            align(cell, width) for align, cell, width in zip(aligns, cells, widths, strict=True)
        )

    print(line(header))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))
