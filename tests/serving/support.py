"""What the crash and outage tests share: streams of changes that record what was acknowledged,
and a raw check of a store's consistency."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from azimds.admin.client import AdminError
from azimds.fleet.operations import ADDRESS_KIND
from azimds.fleet.snapshot import Fleet, vm_from_record
from azimds.fleet.vm import VM_KIND
from azimds.store import Store, open_store
from tests.conftest import Server
from tests.http import Reply, send_raw

SE = "/metadata/scheduledevents?api-version=2020-07-01"


@dataclass
class Stream:
    """A writer thread: calls ``step(n)`` for n = 0, 1, ... until stopped or the node is gone.

    ``step`` returns nothing; it records what the node acknowledged in its own structures
    (under ``lock``). A connection error means the node is gone: the write in flight was
    never acknowledged, and the stream ends.
    """

    name: str
    step: Callable[[int], None]
    stop: threading.Event
    steps: int = 0
    error: BaseException | None = None
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                self.step(n)
            except (OSError, http.client.HTTPException):
                return  # the node is gone (or going): the write in flight was not acknowledged
            except AdminError as exc:
                if exc.status:  # refused: reported from the test
                    self.error = exc
                return  # else not answered: gone, as above
            except BaseException as exc:  # an assertion in a step: report it from the test
                self.error = exc
                return
            n += 1
            self.steps = n


def start(*streams: Stream) -> None:
    for stream in streams:
        stream.thread.start()


def join(*streams: Stream) -> None:
    for stream in streams:
        stream.thread.join(timeout=60)
        assert not stream.thread.is_alive(), f"{stream.name} is stuck"
        if stream.error is not None:
            raise AssertionError(f"stream {stream.name} failed") from stream.error


def guest_post(node: Server, body: bytes, source: str | None = None) -> Reply:
    head = [
        f"POST {SE} HTTP/1.1",
        "Host: 169.254.169.254",
        "Connection: close",
        "Metadata: true",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    return send_raw(node.port, raw, method="POST", source=source)


def approve_as_guest(node: Server, event_id: str) -> Reply:
    return guest_post(node, json.dumps({"StartRequests": [{"EventId": event_id}]}).encode())


def open_for_check(store_url: str, state_dir: Path) -> Store:
    """The store as a node would open it (SQLite recovers its WAL on open)."""
    return open_store(store_url, state_dir)


def check_consistency(store: Store) -> Fleet:
    """The store is whole: its revision counter is the newest object's revision, every VM
    is a valid VM, every claimed address points at a VM that has it and every VM's addresses
    are claimed by it, and a snapshot builds from it. Returns that snapshot."""
    records = store.changes_since(0)  # every object, tombstones included
    revision = store.revision()
    assert records, "the store is empty"
    assert revision == max(record.revision for record in records), (
        revision,
        max(record.revision for record in records),
    )
    vms = {r.id: vm_from_record(r.body) for r in records if r.kind == VM_KIND and not r.deleted}
    claims = {r.id: r.body["vmId"] for r in records if r.kind == ADDRESS_KIND and not r.deleted}
    for address, vm_id in claims.items():
        assert vm_id in vms, f"address {address} is claimed by VM {vm_id}, which is not stored"
        assert address in vms[vm_id].addresses, (address, vm_id, vms[vm_id].addresses)
    for vm_id, vm in vms.items():
        for address in vm.addresses:
            assert claims.get(address) == vm_id, (vm_id, address, claims.get(address))
    fleet = Fleet().with_changes(records, revision)
    assert set(fleet.vms) == set(vms)  # none skipped as invalid
    return fleet
