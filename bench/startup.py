"""How long azimds takes to start: `azimds serve` to its first 200, and the test kit's node.

What it measures:

* **serve**: from spawning ``python -m azimds serve`` (fresh state directory, default SQLite
  store, so it makes its signing keys) until ``/metadata/instance`` first answers 200, polled
  every 5 ms; then the same with the state directory of the previous run (keys already made:
  a restart). Goal: under 1 s.
* **kit**: ``LocalIMDS()`` in this process, start to ready (what the ``imds`` fixture does),
  the first of the process (it makes the signing keys) and later ones (they reuse them); and
  its stop. Goal: under 200 ms for a fixture after the first.

Each figure is the median of ``--runs`` runs (default 5). Run from the repo root with the venv's
python::

    .venv/bin/python bench/startup.py
    .venv/bin/python bench/startup.py --smoke      # 1 run each: proves the script works
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import kit

GOAL_SERVE = 1.0
GOAL_KIT = 0.2


def serve_once(state_dir: Path) -> float:
    port, admin_port = kit.two_free_ports()
    argv = [sys.executable, "-m", "azimds", "serve", "--state-dir", str(state_dir)]
    argv += ["--listen", f"{kit.HOST}:{port}", "--admin-listen", f"{kit.HOST}:{admin_port}"]
    url = f"http://{kit.HOST}:{port}{kit.INSTANCE}"
    log = state_dir / "serve.log"
    started = time.perf_counter()
    with kit.running("azimds", argv, log) as proc:
        while True:
            if proc.poll() is not None:
                raise kit.BenchError(f"azimds exited ({proc.returncode}):\n{kit.tail(log)}")
            try:
                if kit.fetch(url, timeout=1.0)[0] == 200:
                    return time.perf_counter() - started
            except OSError:
                pass
            if time.perf_counter() - started > 30:
                raise kit.BenchError(f"no 200 from {url} within 30 s:\n{kit.tail(log)}")
            time.sleep(0.005)


def kit_times(runs: int) -> tuple[float, list[float], list[float]]:
    from azimds.kit.local import LocalIMDS

    starts, stops = [], []
    for _ in range(runs + 1):
        began = time.perf_counter()
        node = LocalIMDS(set_environment=False).start()
        ready = time.perf_counter()
        if kit.fetch(node.url + kit.INSTANCE)[0] != 200:
            raise kit.BenchError("the kit's node did not answer 200")
        stopping = time.perf_counter()
        node.stop()
        stops.append(time.perf_counter() - stopping)
        starts.append(ready - began)
    return starts[0], starts[1:], stops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--smoke", action="store_true", help="one run each")
    args = parser.parse_args(argv)
    runs = 1 if args.smoke else args.runs
    return kit.run_main(lambda: measure(runs), "azimds")


def measure(runs: int) -> int:
    fresh, restart = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="azimds-startup-") as tmp:
            fresh.append(serve_once(Path(tmp)))
            restart.append(serve_once(Path(tmp)))
    first, later, stops = kit_times(runs)
    kit.print_machine(kit.find_tool("wrk") or "wrk")
    rows = [
        ("serve, fresh state (makes keys)", statistics.median(fresh), GOAL_SERVE),
        ("serve, restart", statistics.median(restart), GOAL_SERVE),
        ("kit node, first in the process", first, None),
        ("kit node, later (the fixture)", statistics.median(later), GOAL_KIT),
        ("kit node, stop", statistics.median(stops), None),
    ]
    table = [
        (
            what,
            f"{seconds * 1000:.0f} ms",
            f"{goal * 1000:.0f} ms" if goal else "-",
            f"{seconds / goal:.2f}x" if goal else "-",
        )
        for what, seconds, goal in rows
    ]
    print(f"median of {runs} run(s)\n")
    kit.print_table(("what", "time", "goal", "of goal"), table, left_first=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
