"""Throughput of azimds's guest plane, measured against nginx serving the same bytes.

What it measures: requests per second and the 50th/99th percentile latency that ``wrk``
(one thread, keep-alive connections, header ``Metadata: true``) gets from

* nginx (one worker process, access log off) serving the exact body of
  ``GET /metadata/instance?api-version=2021-02-01`` as a static file: the reference;
* azimds ``/metadata/instance?api-version=2021-02-01`` (the whole instance document, JSON);
* azimds ``/metadata/instance/compute/vmId?api-version=2021-02-01&format=text`` (a text leaf);
* azimds ``/metadata/identity/oauth2/token?...`` (a managed-identity token, from the cache);
* azimds's 429 path: a second azimds with the documented rate limits on, flooded with the
  instance request, so all but a handful of answers are ``429 Too many requests``.

Each target first gets a short warm-up run, whose results are discarded. Then every target is
measured ``--rounds`` times (default 3), in interleaved rounds: each round runs every target
once, in the order above, and every other round in the reverse order, so no target always
follows the same one and a slow spell of the shared machine spreads over all of them. The
table shows, per target, the median of its rounds' requests/s, p50 and p99, and the spread of
its requests/s (lowest to highest round); its last column is that median divided by nginx's.
Under it, the instance document's ratio to nginx in each round (measured seconds apart).

Last, ``--rounds`` times: the instance document again, paced to about half of its median
requests/s (connections that each wait a random 0-10 ms between requests, so that they do not
fall into step), for the p99 at half load; and nginx under the same paced load, for the
latency this machine gives any server at that rate. Everything listens
on 127.0.0.1 only; nginx and azimds run out of a temporary directory (nginx's config, pid,
logs and temp paths; azimds's state directory with its default SQLite store) that is removed
afterwards, and both servers are stopped on every exit, Ctrl+C included.

Needs ``wrk`` and ``nginx`` (Debian: ``apt-get install wrk nginx-light``). Run from the repo
root with the venv's python::

    python bench/throughput.py                 # i.e. .venv/bin/python bench/throughput.py
    python bench/throughput.py --smoke         # a seconds-long run proving the script works
    python bench/throughput.py --duration 30 --connections 100
    python bench/throughput.py --duration 5 --rounds 5

With the defaults (10 s runs, 3 rounds, 5 targets and the two paced ones) a run takes about
4 minutes.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import kit
from azimds.serving.limits import MAX_CONNECTIONS

TEXT_LEAF = "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text"
TOKEN = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"
THROTTLED = "azimds 429s (limiter on)"
HALF_LOAD = "azimds instance, paced to ~half"
NGINX_PACED = "nginx, paced alike"
GOAL_P99_MS = 2.0  # at half of azimds's measured maximum
PACE_MS = 5  # each paced connection's wait between requests
STATIC_NAME = "instance.json"
START_TIMEOUT = 20.0
DEFAULT_ROUNDS = 3

T = TypeVar("T")

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


@dataclass(frozen=True)
class Result:
    target: str
    rounds: kit.WrkRounds


def round_order(targets: Sequence[T], index: int) -> list[T]:
    """The targets in the order round ``index`` (from 0) runs them: as given in even rounds,
    reversed in odd ones."""
    return list(targets) if index % 2 == 0 else list(reversed(targets))


def has_non_2xx(run: kit.WrkRun) -> bool:
    return "non-2xx" in run.notes


def uvloop_version() -> str:
    try:
        return importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def wait_for_200(name: str, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    kit.wait_until_answering(
        name, proc, url, log, within=START_TIMEOUT, fetch_timeout=0.5, want_status=200
    )


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference else "n/a"


def show_table(results: list[Result]) -> None:
    """The medians of each target's rounds; then, for the instance document (``results[1]``),
    its ratio to nginx (``results[0]``) round by round; then the half-load p99."""
    nginx, instance = results[0].rounds, results[1].rounds
    header = ("target", "requests/s", "spread", "p50", "p99", "vs nginx")
    rows = [
        (
            r.target,
            f"{r.rounds.requests_per_s:,.0f}",
            r.rounds.spread,
            f"{r.rounds.p50_ms:.2f} ms",
            f"{r.rounds.p99_ms:.2f} ms",
            ratio(r.rounds.requests_per_s, nginx.requests_per_s),
        )
        for r in results
    ]
    kit.print_table(header, rows, left_first=True)
    per_round = [
        ratio(mine.requests_per_s, theirs.requests_per_s)
        for mine, theirs in zip(instance.runs, nginx.runs, strict=True)
    ]
    print(f"instance vs nginx per round: {' '.join(per_round)}")
    paced = {r.target: r.rounds for r in results}
    if HALF_LOAD in paced:
        share = paced[HALF_LOAD].requests_per_s / instance.requests_per_s
        print(
            f"\np99 at {share:.0%} of the instance maximum (median): "
            f"{paced[HALF_LOAD].p99_ms:.2f} ms (goal under {GOAL_P99_MS:g} ms); "
            f"nginx at that load: {paced[NGINX_PACED].p99_ms:.2f} ms"
        )
    for r in results:
        if r.rounds.notes and r.target != THROTTLED:
            print(f"warning: {r.target}: {r.rounds.notes}")


def azimds_argv(tmp: Path, port: int, name: str, *extra: str) -> list[str]:
    """``azimds serve`` with its state (SQLite store, admin token) in ``tmp/name`` and the
    control plane on a free port: nothing outside the temporary directory is touched. wrk's
    connections all come from one address, which may have more than one VM's share."""
    argv = [sys.executable, "-m", "azimds", "serve", "--listen", f"{kit.HOST}:{port}"]
    argv += ["--connections-per-client", str(MAX_CONNECTIONS)]
    return [*argv, "--state-dir", str(tmp / name), "--admin-listen", f"{kit.HOST}:0", *extra]


def benchmark(args: argparse.Namespace, wrk: str, nginx: str) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="azimds-bench-") as tmp_name:
        tmp = Path(tmp_name)
        # nginx started as root runs its worker as "nobody", which must reach the file.
        tmp.chmod(0o755)
        azimds_port, nginx_port = kit.two_free_ports()
        limited_port = kit.free_port()
        azimds_base = f"http://{kit.HOST}:{azimds_port}"
        nginx_base = f"http://{kit.HOST}:{nginx_port}"
        limited_url = f"http://{kit.HOST}:{limited_port}{kit.INSTANCE}"
        with (
            kit.running(
                "azimds",
                azimds_argv(tmp, azimds_port, "free", "--rate-limit", "off"),
                tmp / "azimds.log",
            ) as azimds,
            kit.running(
                "azimds (limited)", azimds_argv(tmp, limited_port, "limited"), tmp / "limited.log"
            ) as limited,
        ):
            wait_for_200("azimds", azimds, azimds_base + kit.INSTANCE, tmp / "azimds.log")
            wait_for_200("azimds (limited)", limited, limited_url, tmp / "limited.log")
            status, body = kit.fetch(azimds_base + kit.INSTANCE)
            if status != 200:
                raise kit.BenchError(
                    f"azimds answered {kit.INSTANCE} with {status}: {body[:200]!r}"
                )
            www = tmp / "www"
            www.mkdir(mode=0o755)
            (www / STATIC_NAME).write_bytes(body)
            (www / STATIC_NAME).chmod(0o644)
            conf = tmp / "nginx.conf"
            conf.write_text(NGINX_CONF.format(tmp=tmp, host=kit.HOST, port=nginx_port))
            # -e: without it nginx first opens its compiled-in error log (/var/log/nginx).
            nginx_argv = [nginx, "-p", f"{tmp}/", "-c", str(conf), "-e", str(tmp / "error.log")]
            with kit.running("nginx", nginx_argv, tmp / "nginx.out") as nginx_proc:
                static_url = f"{nginx_base}/{STATIC_NAME}"
                wait_for_200("nginx", nginx_proc, static_url, tmp / "error.log")
                if kit.fetch(static_url) != (200, body):
                    raise kit.BenchError("nginx does not serve the same bytes as azimds")
                for path in (TEXT_LEAF, TOKEN):
                    status, _ = kit.fetch(azimds_base + path)
                    if status != 200:
                        raise kit.BenchError(f"azimds answered {path} with {status}")
                targets = [
                    ("nginx (static file)", static_url),
                    ("azimds instance (JSON)", azimds_base + kit.INSTANCE),
                    ("azimds vmId (text leaf)", azimds_base + TEXT_LEAF),
                    ("azimds token (cached)", azimds_base + TOKEN),
                    (THROTTLED, limited_url),
                ]
                for name, url in targets:
                    print(f"warming up {name}: {url}", flush=True)
                    kit.run_wrk(wrk, url, args.warmup, args.connections)
                runs: dict[str, list[kit.WrkRun]] = {name: [] for name, _ in targets}
                for index in range(args.rounds):
                    for name, url in round_order(targets, index):
                        print(f"round {index + 1}/{args.rounds}: {name}", flush=True)
                        output = kit.run_wrk(wrk, url, args.duration, args.connections)
                        runs[name].append(kit.parse_wrk(output, name))
                results = [Result(name, kit.WrkRounds(tuple(runs[name]))) for name, _ in targets]
                # The latency goal is at half the maximum: connections that each wait
                # PACE_MS between requests on average, as many as offer about half of what
                # azimds managed (its median; each request takes PACE_MS plus about half a
                # millisecond). Measured as many times as the rest; the medians count.
                half = results[1].rounds.requests_per_s / 2
                paced = max(1, round(half * (PACE_MS + 0.5) / 1000))
                # nginx gets the same paced load: the machine's own latency at that rate.
                script = kit.pacing_script(tmp, PACE_MS)
                paced_targets = [(HALF_LOAD, azimds_base + kit.INSTANCE), (NGINX_PACED, static_url)]
                paced_runs: dict[str, list[kit.WrkRun]] = {name: [] for name, _ in paced_targets}
                for index in range(args.rounds):
                    for name, url in round_order(paced_targets, index):
                        print(f"{name} {index + 1}/{args.rounds}: {paced} connections")
                        output = kit.run_wrk(wrk, url, args.duration, paced, script)
                        paced_runs[name].append(kit.parse_wrk(output, name))
                results += [
                    Result(name, kit.WrkRounds(tuple(paced_runs[name])))
                    for name, _ in paced_targets
                ]
                # Every round of the 429 target must have measured 429s, not the 200 path.
                calm = [
                    number
                    for number, run in enumerate(runs[THROTTLED], start=1)
                    if not has_non_2xx(run)
                ]
                if calm:
                    raise kit.BenchError(
                        "the limited azimds did not answer 429 under the flood in round(s) "
                        + ", ".join(map(str, calm))
                    )
                return results


def report(args: argparse.Namespace, wrk: str, nginx: str) -> int:
    kit.print_machine(
        wrk,
        ("uvloop", uvloop_version()),
        ("nginx", kit.tool_version([nginx, "-v"]).removeprefix("nginx version: ")),
    )
    print(
        f"load:    wrk -t1 -c{args.connections} -d{args.duration:g}s --latency "
        f"-H 'Metadata: true' (after a {args.warmup:g} s warm-up per target), "
        f"{args.rounds} interleaved round(s); figures are medians of the rounds"
    )
    results = benchmark(args, wrk, nginx)
    print()
    show_table(results)
    # Only the throttled target is meant to answer anything but 200, in any round.
    failed = [r for r in results if r.target != THROTTLED and any(map(has_non_2xx, r.rounds.runs))]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark azimds's guest plane with wrk against nginx serving the same "
        "body: every target measured in interleaved rounds, reported as medians."
    )
    kit.add_timing_options(parser, "1 round of 1 s runs after 0.5 s warm-ups: proves it works")
    parser.add_argument(
        "--connections", type=int, default=50, metavar="N", help="wrk connections (-c)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=DEFAULT_ROUNDS,
        metavar="N",
        help="measured runs per target, round-robin, every other round in reverse order; "
        "the table shows their medians (default: %(default)s)",
    )
    args = kit.parse_timed_args(parser, argv)
    if args.connections < 1:
        parser.error("--connections must be >= 1")
    if args.smoke:
        args.rounds = 1
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")

    wrk, nginx = kit.find_tool("wrk"), kit.find_tool("nginx")
    missing = [name for name, path in (("wrk", wrk), ("nginx", nginx)) if path is None]
    if wrk is None or nginx is None:
        print(
            f"error: {' and '.join(missing)} not found; install it "
            "(Debian/Ubuntu: apt-get install wrk nginx-light)",
            file=sys.stderr,
        )
        return 2
    return kit.run_main(lambda: report(args, wrk, nginx), "nginx and azimds")


if __name__ == "__main__":
    sys.exit(main())
