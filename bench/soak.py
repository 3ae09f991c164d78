"""A soak: steady, mixed load on one node for a long time, watching its memory and its errors.

One ``azimds serve`` in source-ip mode (default SQLite store, rate limits on), with four
steady VMs on loopback addresses (127.0.77.1-4, their own limits off) and one **noisy** VM
(127.0.77.9, the documented 5 requests a second) that asks in bursts of ten. For the whole
``--duration``:

* each steady VM asks, at ``--rate`` requests a second over one keep-alive connection, in
  turn: the instance document, two leaves (text), a managed-identity token (every tenth with
  ``bypass_cache=true``), an attested document with a fresh random nonce (as Teleport and the
  documentation's examples send one; ``--nonces N`` draws them from N values instead), its
  scheduled events, and the versions;
* the noisy VM sends ten instance requests every second: the 429s it gets are intended;
* a control-plane writer patches a VM's tags, adds and removes a user-assigned identity, adds
  a ``429`` fault rule for the noisy VM and every few rounds clears all rules, and creates and
  deletes a scratch VM;
* an events driver schedules a Freeze for a steady VM, which (as that VM) reads it and
  approves it with POST /metadata/scheduledevents, then advances the event clock (manual) so
  the engine completes it; every third event is left unapproved and the clock advanced past
  its NotBefore, so the engine starts and then completes it.

The node's RSS is read from ``/proc/PID/status`` every ``--sample`` seconds. The report gives
RSS at start, at the end of the warm-up (the first quarter: the request log, memos and caches
fill), in the middle and at the end, the growth after the warm-up and its slope (least squares,
KB/min), and every answer by kind and status. Exit status 1 if the growth after the warm-up
is over ``--max-growth`` MB, if any answer was not the one intended (only the noisy VM may get
429s), or if the node died.

Run from the repo root with the venv's python::

    .venv/bin/python bench/soak.py                  # 10 minutes
    .venv/bin/python bench/soak.py --duration 3600  # an hour
    .venv/bin/python bench/soak.py --store postgresql://azimds@db/azimds
    .venv/bin/python bench/soak.py --smoke          # a few seconds: proves the script works
"""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import kit
from azimds.admin.client import AdminClient, AdminError

STEADY = [f"127.0.77.{n}" for n in range(1, 5)]
NOISY = "127.0.77.9"
SCRATCH = "127.0.78.1"
LOCATION = "westus"
API = "api-version=2021-02-01"
TEXT = f"{API}&format=text"
T = TypeVar("T")
ROUNDS = (
    ("instance", f"/metadata/instance?{API}"),
    ("leaf", f"/metadata/instance/compute/name?{TEXT}"),
    ("token", "/metadata/identity/oauth2/token?api-version=2018-02-01"),
    ("leaf", f"/metadata/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress?{TEXT}"),
    ("attested", "/metadata/attested/document?api-version=2020-09-01"),
    ("events", "/metadata/scheduledevents?api-version=2020-07-01"),
    ("versions", "/metadata/versions"),
)
RESOURCE = "https://management.azure.com/"


def vm(name: str, address: str, limits: dict[str, int] | None) -> dict[str, Any]:
    description: dict[str, Any] = {
        "compute": {"name": name, "location": LOCATION, "tags": {"soak": "0"}},
        "network": {"interface": [{"ipv4": {"ipAddress": [{"privateIpAddress": address}]}}]},
        "identity": {"systemAssigned": True},
    }
    if limits is not None:
        description["limits"] = limits
    return description


def fleet() -> dict[str, Any]:
    off = {"rate": 0, "identityRate": 0, "identityConcurrency": 0}
    vms = [vm(f"steady-{n}", address, off) for n, address in enumerate(STEADY, start=1)]
    return {"vms": [*vms, vm("noisy", NOISY, None)]}


class Tally:
    """Answers by (kind, status), and the unexpected ones with a sample of each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.answers: Counter[tuple[str, str]] = Counter()
        self.errors: Counter[tuple[str, str]] = Counter()
        self.samples: dict[tuple[str, str], str] = {}

    def add(self, kind: str, status: int | str, ok: bool, detail: str = "") -> None:
        key = (kind, str(status))
        with self._lock:
            self.answers[key] += 1
            if not ok:
                self.errors[key] += 1
                self.samples.setdefault(key, detail[:300])


class Guest:
    """One keep-alive connection from a VM's address to the guest plane."""

    def __init__(self, port: int, source: str) -> None:
        self.port, self.source = port, source
        self._connection: http.client.HTTPConnection | None = None

    def request(self, method: str, target: str, body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body); on a broken connection, one fresh retry is not made: it raises."""
        if self._connection is None:
            self._connection = http.client.HTTPConnection(
                kit.HOST, self.port, timeout=10, source_address=(self.source, 0)
            )
        headers = {"Metadata": "true"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            self._connection.request(method, target, body=body, headers=headers)
            response = self._connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def checked(tally: Tally, kind: str, want: int, work: Callable[[], T]) -> T | None:
    """``work()`` (a control-plane call), tallied under ``kind`` as ``want`` when it is done,
    else as the status it was refused with (or a connection error); None then."""
    try:
        answer = work()
    except AdminError as exc:
        tally.add(kind, exc.status or "connection error", False, str(exc))
        return None
    tally.add(kind, want, True)
    return answer


def paced(stop: threading.Event, interval: float, step: Callable[[int], None]) -> None:
    """Call ``step(n)`` every ``interval`` seconds (n = 0, 1, ...) until ``stop``."""
    n = 0
    next_at = time.monotonic()
    while not stop.is_set():
        step(n)
        n += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        else:
            next_at = time.monotonic()  # behind: do not burst to catch up


def steady_vm(
    port: int, source: str, rate: float, nonces: int, tally: Tally, stop: threading.Event
) -> None:
    guest = Guest(port, source)

    def step(n: int) -> None:
        kind, target = ROUNDS[n % len(ROUNDS)]
        if kind == "token":
            target += f"&resource={RESOURCE}"
            if n // len(ROUNDS) % 10 == 0:
                target += "&bypass_cache=true"
        elif kind == "attested":
            nonce = secrets.randbelow(nonces) if nonces else secrets.randbelow(10**10)
            target += f"&nonce={nonce:010d}"
        try:
            status, body = guest.request("GET", target)
        except (OSError, http.client.HTTPException) as exc:
            tally.add(kind, "connection error", False, repr(exc))
            return
        tally.add(kind, status, status == 200, body.decode("latin-1"))

    try:
        paced(stop, 1.0 / rate, step)
    finally:
        guest.close()


def noisy_vm(port: int, tally: Tally, stop: threading.Event) -> None:
    """Ten requests at once every second: the first five pass, the rest get 429."""
    guest = Guest(port, NOISY)

    def step(n: int) -> None:
        for _ in range(10):
            try:
                status, body = guest.request("GET", f"/metadata/instance?{API}")
            except (OSError, http.client.HTTPException) as exc:
                tally.add("noisy", "connection error", False, repr(exc))
                continue
            tally.add("noisy", status, status in (200, 429), body.decode("latin-1"))

    try:
        paced(stop, 1.0, step)
    finally:
        guest.close()


def control_plane(admin: AdminClient, interval: float, tally: Tally, stop: threading.Event) -> None:
    def step(n: int) -> None:
        target = f"steady-{n % len(STEADY) + 1}"
        tags = {"compute": {"tags": {"soak": str(n)}}}
        checked(tally, "cp patch", 200, lambda: admin.patch_vm(target, tags))
        identity = f"soak-{n % 8}"
        checked(
            tally, "cp identity add", 201, lambda: admin.add_identity(target, {"name": identity})
        )
        checked(tally, "cp identity remove", 204, lambda: admin.remove_identity(target, identity))
        rule = {"vm": "noisy", "actions": [429], "count": 3}
        checked(tally, "cp fault add", 201, lambda: admin.add_fault(rule))
        if n % 5 == 4:
            checked(tally, "cp faults clear", 200, admin.clear_faults)
        if n % 10 == 9:
            scratch = vm("scratch", SCRATCH, None)
            checked(tally, "cp vm create", 201, lambda: admin.create_vm(scratch))
            checked(tally, "cp vm delete", 204, lambda: admin.delete_vm("scratch"))

    paced(stop, interval, step)


def events_driver(
    port: int, admin: AdminClient, interval: float, tally: Tally, stop: threading.Event
) -> None:
    guests = {address: Guest(port, address) for address in STEADY}

    def expect(kind: str, ok: bool, status: int | str, detail: Any) -> None:
        tally.add(kind, status, ok, detail if isinstance(detail, str) else json.dumps(detail))

    def step(n: int) -> None:
        index = n % len(STEADY)
        guest = guests[STEADY[index]]
        spec = {"type": "Freeze", "vms": [f"steady-{index + 1}"]}
        event = checked(tally, "cp event schedule", 201, lambda: admin.schedule_event(spec))
        if event is None:
            return
        event_id = event["eventId"]
        try:
            status, body = guest.request("GET", "/metadata/scheduledevents?api-version=2020-07-01")
            seen = status == 200 and any(
                e["EventId"] == event_id and e["EventStatus"] == "Scheduled"
                for e in json.loads(body)["Events"]
            )
            expect("event seen by its VM", seen, status, body.decode("latin-1"))
            if n % 3 != 2:  # approved by the VM, then completed by the engine
                approval = json.dumps({"StartRequests": [{"EventId": event_id}]}).encode()
                status, body = guest.request(
                    "POST", "/metadata/scheduledevents?api-version=2020-07-01", approval
                )
                expect("event approve", status == 200, status, body.decode("latin-1"))
                advance = 10  # past the Freeze's 5 s
            else:  # left alone: the engine starts it at NotBefore and completes it
                advance = 900 + 10
            checked(tally, "cp clock advance", 200, lambda: admin.advance_clock(advance))
            if advance > 10:
                checked(tally, "cp clock advance", 200, lambda: admin.advance_clock(10))
            answer = admin.events(everything=True)
            final = {e["eventId"]: e["status"] for e in answer["events"]}.get(event_id)
            expect("event completed", final == "Completed", str(final), answer)
        except (AdminError, ValueError, KeyError) as exc:
            expect("events driver", False, "connection error", repr(exc))

    try:
        paced(stop, interval, step)
    finally:
        for guest in guests.values():
            guest.close()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise kit.BenchError(f"no VmRSS for process {pid}")


def slope_kb_per_min(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS (KB) over time, per minute."""
    if len(samples) < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / len(samples)
    mean_r = sum(r for _, r in samples) / len(samples)
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (r - mean_r) for t, r in samples) / spread * 60


def at(samples: list[tuple[float, int]], moment: float) -> tuple[float, int]:
    """The first sample taken at or after ``moment`` (the last one if none)."""
    return next(((t, r) for t, r in samples if t >= moment), samples[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=600.0, metavar="SECONDS", help="the soak (600)"
    )
    parser.add_argument("--smoke", action="store_true", help="6 s, to prove the script works")
    parser.add_argument("--rate", type=float, default=40.0, help="requests a second per VM (40)")
    parser.add_argument(
        "--sample", type=float, default=5.0, metavar="SECONDS", help="RSS sampling interval (5)"
    )
    parser.add_argument(
        "--max-growth",
        type=float,
        default=16.0,
        metavar="MB",
        help="RSS growth after the warm-up that fails the soak (16)",
    )
    parser.add_argument("--store", default="sqlite:", help="the node's store (sqlite:)")
    parser.add_argument(
        "--nonces",
        type=int,
        default=0,
        metavar="N",
        help="attested nonces drawn from N values (default 0: a fresh random one each time)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.sample = 6.0, 0.5
    if args.duration <= 0 or args.sample <= 0 or args.rate <= 0:
        parser.error("--duration, --sample and --rate must be > 0")
    return kit.run_main(lambda: soak(args), "azimds")


def soak(args: argparse.Namespace) -> int:
    tally = Tally()
    samples: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory(prefix="azimds-soak-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "fleet.json").write_text(json.dumps(fleet()))
        port, admin_port = kit.two_free_ports()
        argv = [sys.executable, "-m", "azimds", "serve", "--caller-mode", "source-ip"]
        argv += ["--fleet", str(tmp / "fleet.json"), "--store", args.store]
        argv += ["--clock", "manual", "--state-dir", str(tmp / "state")]
        argv += ["--listen", f"{kit.HOST}:{port}", "--admin-listen", f"{kit.HOST}:{admin_port}"]
        log = tmp / "azimds.log"
        with kit.running("azimds", argv, log) as proc:
            url = f"http://{kit.HOST}:{port}{kit.INSTANCE}"
            kit.wait_until_answering("azimds", proc, url, log, within=30, fetch_timeout=2)
            token = (tmp / "state" / "admin-token").read_text().strip()
            admin = AdminClient(f"http://{kit.HOST}:{admin_port}", token)
            stop = threading.Event()
            # Control-plane rounds and events: a few a second in a full soak, faster in smoke.
            pace = 0.25 if args.smoke else 1.0
            workers = [
                *(
                    threading.Thread(
                        target=steady_vm, args=(port, a, args.rate, args.nonces, tally, stop)
                    )
                    for a in STEADY
                ),
                threading.Thread(target=noisy_vm, args=(port, tally, stop)),
                threading.Thread(target=control_plane, args=(admin, pace, tally, stop)),
                threading.Thread(target=events_driver, args=(port, admin, pace, tally, stop)),
            ]
            started = time.monotonic()
            samples.append((0.0, rss_kb(proc.pid)))
            for worker in workers:
                worker.start()
            try:
                while (elapsed := time.monotonic() - started) < args.duration:
                    time.sleep(min(args.sample, args.duration - elapsed))
                    if proc.poll() is not None:
                        raise kit.BenchError(
                            f"azimds exited ({proc.returncode}) during the soak:\n{kit.tail(log)}"
                        )
                    samples.append((time.monotonic() - started, rss_kb(proc.pid)))
            finally:
                stop.set()
                for worker in workers:
                    worker.join(timeout=60)
            if proc.poll() is not None:
                raise kit.BenchError(f"azimds exited ({proc.returncode}):\n{kit.tail(log)}")
            requests_line = _node_counts(admin)
    return report(args, samples, tally, requests_line)


def _node_counts(admin: AdminClient) -> str:
    try:
        status = admin.status()
    except AdminError:
        return ""
    return f"node at revision {status['revision']}, {status['vms']} VMs"


def report(
    args: argparse.Namespace, samples: list[tuple[float, int]], tally: Tally, node: str
) -> int:
    duration = samples[-1][0]
    warm_t, warm = at(samples, duration / 4)
    mid_t, mid = at(samples, duration / 2)
    end_t, end = samples[-1]
    after_warmup = [s for s in samples if s[0] >= warm_t]
    growth_mb = (end - warm) / 1024
    slope = slope_kb_per_min(after_warmup)

    def mb(kb: int) -> str:
        return f"{kb / 1024:.1f} MB"

    total = sum(tally.answers.values())
    print(f"azimds soak: {duration:.0f} s, store {args.store}, source-ip, rate limits on")
    print(f"load:   {len(STEADY)} steady VMs at {args.rate:g} req/s each, a noisy VM (10/s)")
    print(f"        {total:,} answers, {total / duration:,.0f} a second; {node}")
    print(f"RSS:    start {mb(samples[0][1])}, after warm-up ({warm_t:.0f} s) {mb(warm)},")
    print(f"        middle ({mid_t:.0f} s) {mb(mid)}, end ({end_t:.0f} s) {mb(end)}")
    print(
        f"        growth after warm-up {growth_mb:+.1f} MB (limit {args.max_growth:g} MB), "
        f"slope {slope:+,.0f} KB/min ({len(samples)} samples every {args.sample:g} s)\n"
    )
    rows = [
        (kind, status, f"{count:,}", f"{tally.errors.get((kind, status), 0):,}")
        for (kind, status), count in sorted(tally.answers.items())
    ]
    kit.print_table(("answer", "status", "count", "unexpected"), rows, left_first=True)
    failures = []
    for key, count in sorted(tally.errors.items()):
        failures.append(f"{count} unexpected {key[0]} {key[1]}, e.g. {tally.samples[key]!r}")
    if growth_mb > args.max_growth:
        failures.append(f"RSS grew {growth_mb:.1f} MB after the warm-up (limit {args.max_growth})")
    for kind in ("instance", "token", "attested", "event approve", "cp patch"):
        if not {(kind, "200"), (kind, "201")} & set(tally.answers):
            failures.append(f"no successful '{kind}' answer: the load did not run")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nno unexpected answers; memory within the limit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
