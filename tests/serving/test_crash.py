"""Crashes and outages lose nothing acknowledged and leave the store whole.

tests/node/test_persistence.py kills a node during VM creations; here every kind of change
streams in at once (VM patches that move addresses, identities added, fault rules added and
removed, events scheduled and approved by the guest), the node is killed with SIGKILL at a
random moment, the store is checked raw (revision counter, address claims, every VM valid),
and the restarted node must hold every change it acknowledged. On PostgreSQL, writers on two
nodes of a fleet race on the same VMs; and PostgreSQL is stopped under load: guests keep
their answers, writes get 503, and the node catches up when it returns.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from azimds.admin.client import AdminError
from azimds.fleet.operations import FleetError, create_vm, patch_vm
from azimds.node.follower import Node
from azimds.store.postgres import PostgresStore
from tests import pg
from tests.admin.support import admin, new_vm, refused
from tests.conftest import ServerProcess
from tests.http import get
from tests.serving.support import (
    Stream,
    approve_as_guest,
    check_consistency,
    join,
    open_for_check,
    start,
)
from tests.waiting import within

postgres = pg.postgres  # the fixture: a throwaway PostgreSQL cluster (tests/pg.py)

DEFAULT_VM = "examplevmname"  # single mode: the guest is the documentation's example VM
PATCHED = 4  # VMs the patch stream moves around


def address(vm: int, seq: int) -> str:
    """The address VM ``vm`` has after its ``seq``-th patch: each patch moves it."""
    return f"10.{61 + vm}.{seq // 250}.{seq % 250 + 1}"


def moved(vm: int, seq: int) -> dict[str, Any]:
    """One patch: a tag and the address, which must always be stored together."""
    return {
        "compute": {"tags": {"seq": str(seq)}},
        "network": new_vm("", address(vm, seq))["network"],
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'azimds.db'}"
    cluster: pg.Postgres = request.getfixturevalue("postgres")
    return cluster.new_database()


class Acknowledged:
    """Everything the node answered 2xx to, by stream; guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.patched: dict[int, int] = dict.fromkeys(range(PATCHED), 0)  # VM -> last acked seq
        self.identities: dict[int, set[str]] = {vm: set() for vm in range(PATCHED)}
        self.faults_added: set[str] = set()
        self.faults_removed: set[str] = set()
        self.fault_removing = ""  # a removal in flight when the node died may have committed
        self.scheduled: set[str] = set()
        self.approved: set[str] = set()


def streams(node: ServerProcess, acked: Acknowledged, stop: threading.Event) -> list[Stream]:
    def patch(n: int) -> None:
        vm, seq = n % PATCHED, n // PATCHED + 1
        admin(node).patch_vm(f"crash-{vm}", moved(vm, seq))
        with acked.lock:
            acked.patched[vm] = seq

    def identity(n: int) -> None:
        vm = n % PATCHED
        admin(node).add_identity(f"crash-{vm}", {"name": f"i{n}"})
        with acked.lock:
            acked.identities[vm].add(f"i{n}")

    added: list[str] = []

    def fault(n: int) -> None:
        if n % 3 == 2:  # remove the oldest rule still there
            rule = added.pop(0)
            with acked.lock:
                acked.fault_removing = rule
            admin(node).remove_fault(rule)
            with acked.lock:
                acked.faults_removed.add(rule)
            return
        rule_spec = {"path": f"/metadata/crash/{n}", "actions": [503]}
        answer = admin(node).add_fault(rule_spec)
        added.append(answer["id"])
        with acked.lock:
            acked.faults_added.add(answer["id"])

    def event(n: int) -> None:
        answer = admin(node).schedule_event({"type": "Reboot", "vms": [DEFAULT_VM]})
        with acked.lock:
            acked.scheduled.add(answer["eventId"])
        reply = approve_as_guest(node, answer["eventId"])  # as the VM, on the guest plane
        assert reply.status == 200, reply
        with acked.lock:
            acked.approved.add(answer["eventId"])

    return [
        Stream(name, step, stop)
        for name, step in (
            ("patch", patch),
            ("identity", identity),
            ("fault", fault),
            ("event", event),
        )
    ]


def node_on(store_url: str, tmp_path: Path) -> ServerProcess:
    # A process: the node is killed with SIGKILL, and its log read after the outage.
    return ServerProcess("--store", store_url, "--clock", "manual", state_dir=tmp_path / "state")


def test_kill_9_during_every_kind_of_change(store_url: str, tmp_path: Path) -> None:
    node = node_on(store_url, tmp_path)
    for vm in range(PATCHED):
        admin(node).create_vm(new_vm(f"crash-{vm}", address(vm, 0), tags={"seq": "0"}))
    acked = Acknowledged()
    stop = threading.Event()
    running = streams(node, acked, stop)
    start(*running)
    try:
        time.sleep(random.uniform(1.0, 2.0))
        node.proc.send_signal(signal.SIGKILL)
    finally:
        stop.set()
        node.stop()
    join(*running)
    assert node.proc.returncode == -signal.SIGKILL
    for stream in running:  # the kill came in the middle of every stream
        assert stream.steps >= 3, (stream.name, stream.steps)

    # Raw, before any node touches the store again.
    store = open_for_check(store_url, tmp_path / "state")
    try:
        check_consistency(store)
    finally:
        store.close()

    node = node_on(store_url, tmp_path)
    try:
        for vm in range(PATCHED):
            stored = admin(node).vm(f"crash-{vm}")
            seq = int(stored_tags(stored)["seq"])
            # The last acknowledged patch, or the one in flight when the node died.
            assert seq in (acked.patched[vm], acked.patched[vm] + 1), (vm, seq, acked.patched)
            ips = stored["network"]["interface"][0]["ipv4"]["ipAddress"]
            assert [ip["privateIpAddress"] for ip in ips] == [address(vm, seq)]  # whole
            names = {i.get("name") for i in admin(node).identities(f"crash-{vm}")["userAssigned"]}
            assert acked.identities[vm] <= names, acked.identities[vm] - names
        rules = {rule["id"] for rule in admin(node).faults()}
        assert acked.faults_added - acked.faults_removed - {acked.fault_removing} <= rules
        assert not acked.faults_removed & rules
        events = {e["eventId"]: e["status"] for e in admin(node).events(everything=True)["events"]}
        assert acked.scheduled <= set(events), acked.scheduled - set(events)
        assert all(events[e] == "Started" for e in acked.approved), acked.approved
        assert acked.approved and acked.faults_removed  # every kind was acknowledged
        # The guest plane serves what the control plane says, at the addresses it holds.
        reply = get(node.port, "/metadata/scheduledevents?api-version=2020-07-01")
        shown = {e["EventId"]: e["EventStatus"] for e in json.loads(reply.body)["Events"]}
        assert all(shown[e] == "Started" for e in acked.approved)
        store = open_for_check(store_url, tmp_path / "state")
        try:
            fleet = check_consistency(store)
        finally:
            store.close()
        for vm in range(PATCHED):
            seq = int(stored_tags(admin(node).vm(f"crash-{vm}"))["seq"])
            assert fleet.by_address[address(vm, seq)].name == f"crash-{vm}"
    finally:
        node.stop()


def test_writers_on_two_nodes_lose_nothing(postgres: pg.Postgres, tmp_path: Path) -> None:
    """Two nodes of a fleet change the same VMs at once (read, modify, write): every change
    either node acknowledged is stored, and two VMs never end up claiming one address."""
    url = postgres.new_database()
    nodes = [node_on(url, tmp_path / name) for name in ("a", "b")]
    try:
        admin(nodes[0]).create_vm(new_vm("shared"))

        def found_on_b() -> bool:
            try:
                return bool(admin(nodes[1]).vm("shared"))
            except AdminError:
                return False

        within(5.0, found_on_b, "shared on b")
        added: dict[str, set[str]] = {"a": set(), "b": set()}
        created: dict[str, str] = {}
        lock = threading.Lock()
        stop = threading.Event()

        def adder(node: ServerProcess, key: str) -> Stream:
            def step(n: int) -> None:
                name = f"{key}{n}"
                admin(node).add_identity("shared", {"name": name})
                with lock:
                    added[key].add(name)
                # The same address, asked for by both nodes at once: one of them gets it.
                try:
                    vm = admin(node).create_vm(new_vm(f"{key}-{n}", f"10.70.0.{n % 200 + 1}"))
                except AdminError as exc:
                    assert exc.status == 409, exc
                    return
                with lock:
                    created[vm["compute"]["vmId"]] = f"{key}-{n}"

            return Stream(f"adder-{key}", step, stop)

        running = [adder(node, key) for node, key in zip(nodes, "ab", strict=True)]
        start(*running)
        time.sleep(2.5)
        stop.set()
        join(*running)
        # The store first: no address claimed by two VMs, every created VM is there.
        store = PostgresStore(url)
        try:
            fleet = check_consistency(store)
        finally:
            store.close()
        assert {vm_id: fleet.vms[vm_id].name for vm_id in created} == created
        for node in nodes:
            names = {i.get("name") for i in admin(node).identities("shared")["userAssigned"]}
            assert added["a"] | added["b"] <= names, (added["a"] | added["b"]) - names
    finally:
        for node in nodes:
            node.stop()


def test_two_writers_never_claim_one_address(postgres: pg.Postgres) -> None:
    """Two stores on one database (two nodes) create VMs with the same address at the same
    moment, 30 times: each time one gets it and the other a conflict."""
    url = postgres.new_database()
    stores = [PostgresStore(url), PostgresStore(url)]
    try:
        for n in range(30):
            assert race_for_address(stores, n) == ["conflict", "created"], n
        check_consistency(stores[0])
    finally:
        for store in stores:
            store.close()


def race_for_address(stores: list[PostgresStore], n: int) -> list[str]:
    """Each store creates a VM with address 10.72.0.n+1, released together; the outcomes."""
    barrier = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def create(i: int) -> None:
        description = new_vm(f"v{n}-{i}", f"10.72.0.{n + 1}")
        barrier.wait(timeout=10)
        try:
            stores[i].transact(lambda txn: create_vm(txn, description))
            outcomes.append("created")
        except FleetError as exc:
            outcomes.append(exc.kind)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return sorted(outcomes)


# --- PostgreSQL stopped under load -------------------------------------------------------

TAGS = "/metadata/instance/compute/tags?api-version=2021-02-01&format=text"


@pytest.fixture
def outage_node(postgres: pg.Postgres, tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    url = postgres.new_database()
    node = node_on(url, tmp_path)
    try:
        yield node, url
    finally:
        postgres.start()  # whatever a failed test left behind
        node.stop()


def stored_tags(description: dict[str, Any]) -> dict[str, str]:
    """A description's tags: stored as tagsList only (docs/behaviour.md)."""
    return {tag["name"]: tag["value"] for tag in description["compute"]["tagsList"]}


def tags(reply_body: bytes) -> dict[str, str]:
    return dict(pair.split(":", 1) for pair in reply_body.decode().split(";") if pair)


def test_postgres_stopped_under_load(
    postgres: pg.Postgres, outage_node: tuple[ServerProcess, str]
) -> None:
    node, url = outage_node
    client = admin(node)
    client.patch_vm(DEFAULT_VM, {"compute": {"tags": {"seq": "0"}}})
    pending = [
        client.schedule_event({"type": "Freeze", "vms": [DEFAULT_VM]})["eventId"] for _ in range(2)
    ]
    stop = threading.Event()
    seen: list[tuple[float, int, bytes, str]] = []  # (when, status, body, what)
    writes: list[tuple[float, float, int, str, int]] = []  # (sent, answered, status, code, seq)
    lock = threading.Lock()

    def reader(what: str, target: str) -> Stream:
        def step(n: int) -> None:
            reply = get(node.port, target)
            with lock:
                seen.append((time.monotonic(), reply.status, reply.body, what))
            time.sleep(0.005)

        return Stream(f"reader-{what}", step, stop)

    def writer(n: int) -> None:
        sent = time.monotonic()
        try:
            client.patch_vm(DEFAULT_VM, {"compute": {"tags": {"seq": str(n + 1)}}})
            status, code = 200, ""
        except AdminError as exc:
            status, code = exc.status, exc.code
        with lock:
            writes.append((sent, time.monotonic(), status, code, n + 1))
        time.sleep(0.01)

    token = (
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"
    )
    running = [
        reader("tags", TAGS),
        reader("tags2", TAGS),
        reader("token", token),
        reader("events", "/metadata/scheduledevents?api-version=2020-07-01"),
        reader("attested", "/metadata/attested/document?api-version=2020-09-01"),
        Stream("writer", writer, stop),
    ]
    start(*running)
    time.sleep(1.0)
    stopping = time.monotonic()
    postgres.stop()
    stopped = time.monotonic()
    try:
        within(5.0, lambda: client.status()["storeReachable"] is False, "outage noticed")
        time.sleep(1.0)  # the load goes on against the stopped database
        # Writes of every kind are refused, and say why; the guest's approval too.
        for write in (
            lambda: client.create_vm(new_vm("during", "10.71.0.1")),
            lambda: client.patch_vm(DEFAULT_VM, {"compute": {"zone": "3"}}),
            lambda: client.add_identity(DEFAULT_VM, {"name": "during"}),
            lambda: client.add_fault({"actions": [503]}),
            lambda: client.schedule_event({"type": "Reboot", "vms": [DEFAULT_VM]}),
            client.rotate_keys,
        ):
            error = refused(write)
            assert (error.status, error.code) == (503, "store_unavailable"), str(error)
        reply = approve_as_guest(node, pending[0])
        assert reply.status == 503, reply
        assert reply.body == b'{ "error": "Service unavailable. Please retry later" }'
        restarting = time.monotonic()
    finally:
        postgres.start()
    # A change made elsewhere at once (as another node would, through the store), before
    # this node has even noticed the database is back.
    elsewhere = PostgresStore(url)
    try:
        vm_id = client.vm(DEFAULT_VM)["compute"]["vmId"]
        elsewhere.transact(
            lambda txn: patch_vm(txn, vm_id, {"compute": {"tags": {"elsewhere": "yes"}}})
        )
    finally:
        elsewhere.close()
    within(10.0, lambda: client.status()["storeReachable"] is True, "the store is back")
    within(
        5.0,
        lambda: tags(get(node.port, TAGS).body).get("elsewhere") == "yes",
        "the change made elsewhere is served",
    )
    time.sleep(0.5)  # the writer succeeds again
    stop.set()
    join(*running)

    # Guests: every answer 200 before, during and after; during the outage, the last data.
    assert {(what, status) for _, status, _, what in seen} == {
        (what, 200) for what in ("tags", "tags2", "token", "events", "attested")
    }, [(w, s, b[:200]) for _, s, b, w in seen if s != 200][:5]
    during = [
        tags(body)["seq"]
        for when, _, body, what in seen
        if what.startswith("tags") and stopped <= when <= restarting
    ]
    assert len(during) > 50 and len(set(during)) == 1, set(during)
    last_acknowledged = max(
        seq for _, answered, status, _, seq in writes if status == 200 and answered < stopping
    )
    assert int(during[0]) >= last_acknowledged
    for what in ("tags", "tags2"):  # and never went backwards
        values = [int(tags(body)["seq"]) for _, _, body, w in seen if w == what]
        assert values == sorted(values)
    # Writes: 200, or 503 store_unavailable while the database was away; nothing else.
    for sent, answered, status, code, _ in writes:
        if status != 200:
            assert (status, code) == (503, "store_unavailable"), (status, code)
        if stopped + 0.1 < sent and answered < restarting:
            assert status == 503, (sent - stopped, code)
    unavailable = [w for w in writes if w[2] == 503]
    assert len(unavailable) >= 20, len(unavailable)  # the writer kept writing through the outage
    assert any(status == 200 and sent > restarting for sent, _, status, _, _ in writes)
    assert tags(get(node.port, TAGS).body)["elsewhere"] == "yes"
    # The refused writes left no trace; the guest's approval works again.
    assert refused(lambda: client.vm("during")).status == 404
    assert approve_as_guest(node, pending[1]).status == 200
    assert "store unreachable" in "".join(node.output)
    assert "reachable again" in "".join(node.output)


def test_a_write_committed_just_before_an_outage_is_answered(postgres: pg.Postgres) -> None:
    """The control plane and the guest's approvals answer a write once the node serves it;
    if the database goes away between the commit and that, the write is stored: the answer
    must still come (not a 500), and the follower serves the write when the database is back.
    """
    store = PostgresStore(postgres.new_database())

    async def scenario() -> None:
        node = Node(store)
        await node.start()
        try:
            _, revision = await asyncio.to_thread(
                store.transact, lambda txn: txn.put("setting", "crash-test", {"n": 1})
            )
            postgres.stop()
            try:
                await asyncio.wait_for(node.caught_up(revision), 5)  # answers, no exception
            finally:
                postgres.start()
            deadline = time.monotonic() + 10
            while node.served.revision < revision:
                assert time.monotonic() < deadline, "the follower never served the write"
                await asyncio.sleep(0.05)
        finally:
            await asyncio.to_thread(node.stop)

    asyncio.run(scenario())
