"""One VM cannot lock the others out of IMDS, whatever it sends or leaves unread.

A real ``azimds serve`` in source-ip mode with VMs on loopback addresses: attackers at
127.0.33.10-14, a victim at 127.0.33.20. While an attacker does its worst (connections that
pipeline requests and never read the answers, a flood of blank lines, 20,000 requests in one
write, more connections than its share), the victim asks for its instance document every few
milliseconds over a kept-alive connection, and must keep getting it promptly; the node's memory
must stay bounded and the attacker's connections must end in time. docs/reliability.md, "One
VM against the others", has the figures.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from azimds.serving.limits import MAX_CONNECTIONS_PER_CLIENT
from tests.admin.support import admin, new_vm
from tests.conftest import ServerProcess

ATTACKERS = [f"127.0.33.{10 + n}" for n in range(5)]
VICTIM = "127.0.33.20"
REQUEST_TIMEOUT = 2.0  # the node's --request-timeout, seconds
INSTANCE = "/metadata/instance?api-version=2021-02-01"
GET = f"GET {INSTANCE} HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n".encode()
TCP_CLOSE, TCP_CLOSE_WAIT = 7, 8  # linux/tcp_states.h: reset, or the peer's FIN came
LATENCY_GOAL = 0.100  # seconds: the victim's worst (or p99) answer while attacked


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    fleet = tmp_path_factory.mktemp("exhaustion") / "fleet.yaml"
    vms = [new_vm(f"attacker-{n}", address) for n, address in enumerate(ATTACKERS)]
    fleet.write_text(yaml.safe_dump({"vms": [*vms, new_vm("victim", VICTIM)]}))
    # A process: its resident memory is measured by pid, and its exit code and output read.
    process = ServerProcess(
        "--caller-mode", "source-ip", "--fleet", str(fleet),
        "--request-timeout", str(REQUEST_TIMEOUT),
    )  # fmt: skip
    yield process
    output = "".join(process.output)
    assert process.stop() == 0, output
    assert "Traceback" not in output, output


class Victim:
    """The other VM: its instance document every ``interval`` seconds, in a thread, over one
    kept-alive connection; every answer's latency."""

    def __init__(self, port: int, interval: float = 0.005) -> None:
        self.port = port
        self.interval = interval
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Victim:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=10, source_address=(VICTIM, 0)
        )
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                connection.request("GET", INSTANCE, headers={"Metadata": "true"})
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                connection.close()
                continue
            self.latencies.append(time.perf_counter() - started)
            if response.status != 200 or b'"name":"victim"' not in body:
                self.failures.append(f"{response.status} {body[:200]!r}")
            self._stop.wait(self.interval)
        connection.close()

    def assert_served_promptly(self, goal: float, quantile: float = 1.0) -> float:
        assert not self.failures, self.failures[:5]
        assert len(self.latencies) > 20, self.latencies
        ordered = sorted(self.latencies)
        figure = ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]
        assert figure < goal, f"the victim's {quantile:.0%} latency: {figure * 1000:.1f} ms"
        return figure


def resident_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match, status
    return int(match[1]) * 1024


def tcp_state(sock: socket.socket) -> int:
    """The socket's TCP state (tcp_info's first byte)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    state: int = struct.unpack_from("B", info)[0]
    return state


def connect(node: ServerProcess, source: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", node.port), 5, (source, 0))


def metric(node: ServerProcess, name: str) -> float:
    text = admin(node).metrics()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, (name, text)
    return float(match[1])


def test_connections_that_pipeline_and_never_read_end_within_the_request_timeout(
    node: ServerProcess,
) -> None:
    """300 connections (60 from each of five VMs) each pipeline 4,000 requests for the instance
    document and read none of the answers."""
    before = resident_bytes(node.proc.pid)
    aborted_before = metric(node, 'azimds_guest_connections_closed_total{reason="write_timeout"}')
    burst = GET * 4000
    socks = [connect(node, ATTACKERS[n % 5]) for n in range(300)]
    peak = before
    with Victim(node.port) as victim:
        started = time.monotonic()
        left = {sock: memoryview(burst) for sock in socks}
        for sock in socks:
            sock.setblocking(False)
        ended: dict[socket.socket, float] = {}
        while len(ended) < len(socks) and time.monotonic() - started < REQUEST_TIMEOUT + 5:
            for sock in socks:
                rest = left[sock]
                if rest and sock not in ended:
                    try:
                        left[sock] = rest[sock.send(rest) :]
                    except BlockingIOError:
                        pass
                    except OSError:
                        left[sock] = rest[:0]  # reset: the server ended it
                if sock not in ended and tcp_state(sock) in (TCP_CLOSE, TCP_CLOSE_WAIT):
                    ended[sock] = time.monotonic() - started
            peak = max(peak, resident_bytes(node.proc.pid))
            time.sleep(0.05)
    try:
        assert len(ended) == len(socks), f"{len(socks) - len(ended)} still open"
        assert max(ended.values()) < REQUEST_TIMEOUT + 5, max(ended.values())
        assert peak - before < 100 * 2**20, f"grew by {(peak - before) / 2**20:.0f} MB"
        victim.assert_served_promptly(LATENCY_GOAL, quantile=0.99)
        aborted = metric(node, 'azimds_guest_connections_closed_total{reason="write_timeout"}')
        assert aborted - aborted_before == len(socks)
    finally:
        for sock in socks:
            sock.close()


def test_a_flood_of_blank_lines_delays_another_vm_little(node: ServerProcess) -> None:
    """8 MiB of CRLFs in one write: the server refuses after a few, and drops the rest."""
    with Victim(node.port, interval=0.002) as victim, connect(node, ATTACKERS[0]) as sock:
        time.sleep(0.1)
        with contextlib.suppress(OSError):  # the server closed (after lingering)
            sock.sendall(b"\r\n" * (4 * 2**20))
        received = sock.recv(4096)
        time.sleep(0.1)
    assert received.startswith(b"HTTP/1.1 400 Bad Request\r\n"), received
    victim.assert_served_promptly(LATENCY_GOAL)


def test_a_burst_of_20000_pipelined_requests_delays_another_vm_little(
    node: ServerProcess,
) -> None:
    """One write of 20,000 requests, whose answers the attacker reads: answered in turns,
    between which the victim's requests are answered."""
    answers = bytearray()
    with Victim(node.port, interval=0.002) as victim, connect(node, ATTACKERS[1]) as sock:
        time.sleep(0.1)
        reader = threading.Thread(target=lambda: answers.extend(read_until_quiet(sock)))
        reader.start()
        sock.sendall(GET * 20_000)
        reader.join(timeout=60)
    assert answers.count(b"HTTP/1.1 200 OK\r\n") == 20_000
    victim.assert_served_promptly(LATENCY_GOAL)


def read_until_quiet(sock: socket.socket, quiet: float = 1.0) -> bytes:
    sock.settimeout(quiet)
    received = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            return bytes(received)
        if not chunk:
            return bytes(received)
        received += chunk


def test_connections_beyond_a_clients_share_are_closed_as_they_come(node: ServerProcess) -> None:
    refused_before = metric(node, 'azimds_guest_connections_closed_total{reason="per_client"}')
    attacker = ATTACKERS[2]
    held = [connect(node, attacker) for _ in range(MAX_CONNECTIONS_PER_CLIENT)]
    try:
        with Victim(node.port) as victim:
            extra = connect(node, attacker)
            extra.settimeout(1.0)
            extra.sendall(GET)
            with contextlib.suppress(ConnectionResetError):  # or reset, the request unread
                assert extra.recv(100) == b""  # closed at once, no answer
            extra.close()
            time.sleep(0.2)
        victim.assert_served_promptly(LATENCY_GOAL)
        refused = metric(node, 'azimds_guest_connections_closed_total{reason="per_client"}')
        assert refused - refused_before == 1
        # The ones it holds are served; one fewer makes room for another.
        held[0].sendall(GET)
        assert held[0].recv(100).startswith(b"HTTP/1.1 200 OK\r\n")
        held.pop().close()
        time.sleep(0.2)
        with connect(node, attacker) as another:
            another.sendall(GET)
            assert another.recv(100).startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        for sock in held:
            sock.close()
