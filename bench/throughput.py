"""Throughput of azimds's guest plane, measured against nginx serving the same bytes.

What it measures: requests per second and the 50th/99th percentile latency that ``wrk``
(one thread, keep-alive connections, header ``Metadata: true``) gets from

* nginx (one worker process, access log off) serving the exact body of
  ``GET /metadata/instance?api-version=2021-02-01`` as a static file: the reference;
* azimds ``/metadata/instance?api-version=2021-02-01`` (the whole instance document, JSON);
* azimds ``/metadata/instance/compute/vmId?api-version=2021-02-01&format=text`` (a text leaf).

Each target gets a short warm-up run, whose results are discarded, then one measured run.
The table's last column is each target's requests/s divided by nginx's. Everything listens
on 127.0.0.1 only; nginx runs out of a temporary directory (config, pid, logs, temp paths)
that is removed afterwards, and both servers are stopped on every exit, Ctrl+C included.

Needs ``wrk`` and ``nginx`` (Debian: ``apt-get install wrk nginx-light``). Run from the repo
root with the venv's python::

    python bench/throughput.py                 # i.e. .venv/bin/python bench/throughput.py
    python bench/throughput.py --smoke         # a seconds-long run proving the script works
    python bench/throughput.py --duration 30 --connections 100
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

HOST = "127.0.0.1"
INSTANCE = "/metadata/instance?api-version=2021-02-01"
TEXT_LEAF = "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text"
STATIC_NAME = "instance.json"
HEADERS = {"Metadata": "true"}
START_TIMEOUT = 20.0

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
lock_file {tmp}/nginx.lock;
error_log {tmp}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    types {{ }}
    default_type application/json;
    access_log off;
    # wrk keeps its connections open; so does azimds, so nginx should not close them either
    # (its default closes each connection after 1000 requests).
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

    server {{
        listen {host}:{port};
        root {tmp}/www;
    }}
}}
"""


class BenchError(Exception):
    """A failure that ends the benchmark with a message rather than a traceback."""


@dataclass(frozen=True)
class Result:
    target: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    notes: str


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def fetch(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=HEADERS)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_answering(name: str, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with status {proc.returncode}:\n{tail(log)}")
        with contextlib.suppress(OSError):
            status, _ = fetch(url, timeout=0.5)
            if status == 200:
                return
        time.sleep(0.05)
    raise BenchError(f"{name} did not answer {url} within {START_TIMEOUT:.0f} s:\n{tail(log)}")


@contextlib.contextmanager
def running(name: str, argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with output to ``log``; always terminate (then kill) it on leaving."""
    with log.open("wb") as out:
        # A session of its own: Ctrl+C reaches only this script, which then stops the child.
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                print(f"{name} ignored SIGTERM; killing it", file=sys.stderr)
                proc.kill()
                proc.wait()


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise BenchError(f"cannot parse wrk latency {text!r}")
    return float(match[1]) * _UNIT_MS[match[2]]


def parse_wrk(target: str, output: str) -> Result:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if rps is None or p50 is None or p99 is None:
        raise BenchError(f"unexpected wrk output for {target}:\n{output}")
    notes = []
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx is not None:
        notes.append(f"{non_2xx[1]} non-2xx responses")
    errors = re.search(r"Socket errors:\s+(.+)", output)
    if errors is not None:
        notes.append(f"socket errors: {errors[1].strip()}")
    return Result(target, float(rps[1]), to_ms(p50[1]), to_ms(p99[1]), "; ".join(notes))


def run_wrk(wrk: str, url: str, seconds: float, connections: int) -> str:
    """Run wrk for ``seconds``; wrk takes whole seconds, so a fraction ends it with SIGINT."""
    whole = math.ceil(seconds)
    argv = [wrk, "-t1", f"-c{connections}", f"-d{whole}s", "--latency"]
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


def tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def granian_version() -> str:
    try:
        return importlib.metadata.version("granian")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def print_machine(wrk: str, nginx: str) -> None:
    print(f"nproc:   {len(os.sched_getaffinity(0))}")
    print(f"CPU:     {cpu_model()}")
    print(f"Python:  {platform.python_version()} ({sys.executable})")
    print(f"granian: {granian_version()}")
    print(f"nginx:   {tool_version([nginx, '-v']).removeprefix('nginx version: ')}")
    print(f"wrk:     {tool_version([wrk, '-v'])}")


def print_table(results: list[Result]) -> None:
    reference = results[0].requests_per_s
    header = ("target", "requests/s", "p50", "p99", "vs nginx")
    rows = [
        (
            r.target,
            f"{r.requests_per_s:,.0f}",
            f"{r.p50_ms:.2f} ms",
            f"{r.p99_ms:.2f} ms",
            f"{r.requests_per_s / reference:.2f}x" if reference else "n/a",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    print(line(header))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))
    for r in results:
        if r.notes:
            print(f"warning: {r.target}: {r.notes}")


def find_tool(name: str) -> str | None:
    # nginx lives in /usr/sbin, which is not on every user's PATH.
    return shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")


def benchmark(args: argparse.Namespace, wrk: str, nginx: str) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="azimds-bench-") as tmp_name:
        tmp = Path(tmp_name)
        # nginx started as root runs its worker as "nobody", which must reach the file.
        tmp.chmod(0o755)
        azimds_port, nginx_port = free_port(), free_port()
        while nginx_port == azimds_port:
            nginx_port = free_port()
        azimds_base = f"http://{HOST}:{azimds_port}"
        nginx_base = f"http://{HOST}:{nginx_port}"
        azimds_argv = [sys.executable, "-m", "azimds", "serve"]
        azimds_argv += ["--listen", f"{HOST}:{azimds_port}"]
        with running("azimds", azimds_argv, tmp / "azimds.log") as azimds:
            wait_until_answering("azimds", azimds, azimds_base + INSTANCE, tmp / "azimds.log")
            status, body = fetch(azimds_base + INSTANCE)
            if status != 200:
                raise BenchError(f"azimds answered {INSTANCE} with {status}: {body[:200]!r}")
            www = tmp / "www"
            www.mkdir(mode=0o755)
            (www / STATIC_NAME).write_bytes(body)
            (www / STATIC_NAME).chmod(0o644)
            conf = tmp / "nginx.conf"
            conf.write_text(NGINX_CONF.format(tmp=tmp, host=HOST, port=nginx_port))
            # -e: without it nginx first opens its compiled-in error log (/var/log/nginx).
            nginx_argv = [nginx, "-p", f"{tmp}/", "-c", str(conf), "-e", str(tmp / "error.log")]
            with running("nginx", nginx_argv, tmp / "nginx.out") as nginx_proc:
                static_url = f"{nginx_base}/{STATIC_NAME}"
                wait_until_answering("nginx", nginx_proc, static_url, tmp / "error.log")
                if fetch(static_url) != (200, body):
                    raise BenchError("nginx does not serve the same bytes as azimds")
                status, _ = fetch(azimds_base + TEXT_LEAF)
                if status != 200:
                    raise BenchError(f"azimds answered {TEXT_LEAF} with {status}")
                targets = [
                    ("nginx (static file)", static_url),
                    ("azimds instance (JSON)", azimds_base + INSTANCE),
                    ("azimds vmId (text leaf)", azimds_base + TEXT_LEAF),
                ]
                results = []
                for name, url in targets:
                    print(f"running {name}: {url}", flush=True)
                    run_wrk(wrk, url, args.warmup, args.connections)
                    output = run_wrk(wrk, url, args.duration, args.connections)
                    results.append(parse_wrk(name, output))
                return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark azimds's guest plane with wrk against nginx serving the same body."
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, metavar="SECONDS", help="each measured run"
    )
    parser.add_argument(
        "--connections", type=int, default=50, metavar="N", help="wrk connections (-c)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="1 s runs after 0.5 s warm-ups: proves it works"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup = 1.0, 0.5
    else:
        args.warmup = min(2.0, args.duration)
    if args.duration <= 0 or args.connections < 1:
        parser.error("--duration must be > 0 and --connections >= 1")

    wrk, nginx = find_tool("wrk"), find_tool("nginx")
    missing = [name for name, path in (("wrk", wrk), ("nginx", nginx)) if path is None]
    if wrk is None or nginx is None:
        print(
            f"error: {' and '.join(missing)} not found; install it "
            "(Debian/Ubuntu: apt-get install wrk nginx-light)",
            file=sys.stderr,
        )
        return 2

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwinds through the finally blocks that stop the servers

    signal.signal(signal.SIGTERM, on_sigterm)

    print_machine(wrk, nginx)
    print(
        f"load:    wrk -t1 -c{args.connections} -d{args.duration:g}s --latency "
        f"-H 'Metadata: true' (after a {args.warmup:g} s warm-up per target)"
    )
    try:
        results = benchmark(args, wrk, nginx)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nginx and azimds stopped", file=sys.stderr)
        return 130
    print()
    print_table(results)
    return 1 if any("non-2xx" in r.notes for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
