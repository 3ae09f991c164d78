"""azimds in this process, for tests: ``with LocalIMDS() as imds: ...``.

A node runs in a thread of its own (its own uvloop event loop) on ephemeral loopback ports,
with an in-memory store and a throwaway state directory. While it runs,
``AZURE_POD_IDENTITY_AUTHORITY_HOST`` points azure-identity, msal and @azure/identity at it;
the previous value comes back on exit. The handles drive the node through its control plane,
as a user would: the VM's document, identities, scheduled events and their clock, fault rules,
the request log, and what relying services verify with (JWKS, CA certificates).

The pytest plugin (``azimds.kit.pytest_plugin``) gives the same as the ``imds`` fixture.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from azimds.admin.client import AdminClient, AdminError, Event, Identities
from azimds.client.protocol import SDK_ENDPOINT_ENV
from azimds.config.settings import SETTING, load, unknown_setting
from azimds.fleet.attestation_certs import CA_KIND, LEAF_KIND
from azimds.fleet.signing_keys import ACTIVE_SETTING, KEY_KIND, SETTING_KIND
from azimds.node.thread import NodeThread
from azimds.serving import listeners as server
from azimds.store.base import Record, Store, Transaction
from azimds.store.memory import MemoryStore

START_TIMEOUT = 30.0  # seconds; a start takes well under one
SETTINGS_SOURCE = "LocalIMDS settings (the imds fixture's marker)"


class _Reused:
    """What one test's node leaves for the next, in this process: its signing keys and CA
    (four RSA keys take ~250 ms to make) and its control plane's port (the leaf certificate
    names that URL, so a node on the same port needs no new leaf)."""

    material: tuple[Record, ...] = ()
    admin_port = 0

    @classmethod
    def keep(cls, store: Store, admin_port: int) -> None:
        records = [r for kind in (KEY_KIND, CA_KIND, LEAF_KIND) for r in store.objects(kind)]
        active = store.get(SETTING_KIND, ACTIVE_SETTING)
        cls.material = (*records, *([active] if active else []))
        cls.admin_port = admin_port

    @classmethod
    def store(cls) -> MemoryStore:
        def copy(txn: Transaction) -> None:
            for record in cls.material:
                txn.put(record.kind, record.id, record.body)

        seeded = MemoryStore()
        if cls.material:
            seeded.transact(copy)
        return seeded

    @classmethod
    def admin_address(cls) -> str:
        if cls.admin_port:
            try:
                return f"127.0.0.1:{server.claim('127.0.0.1', cls.admin_port)}"
            except server.ListenError:
                pass  # another node of this process holds it: a new leaf, then
        return "127.0.0.1:0"


class KitError(AdminError, RuntimeError):
    """The node could not start, or a handle's request was refused (then ``status``,
    ``code``, ``message`` and ``field`` are the control plane's)."""


class _KitClient(AdminClient):
    """The client, raising ``KitError`` as the kit's handles always have."""

    error = KitError


class LocalIMDS:
    """An azimds node in this process. Settings are ``azimds serve``'s, by name
    (``caller_mode="source-ip"``, ``clock="manual"``, ``fleet="fleet.yaml"``...); rate limits
    are off unless ``rate_limit`` says otherwise, since tests ask faster than 5 a second."""

    def __init__(self, *, set_environment: bool = True, **settings: Any) -> None:
        for name in settings:  # a misspelt one would otherwise be ignored: refused, as by serve
            if name not in SETTING:
                raise unknown_setting(SETTINGS_SOURCE, name, sorted(SETTING))
        self._settings = {"rate_limit": "off", **{k: _flag(v) for k, v in settings.items()}}
        self._set_environment = set_environment
        self._node: NodeThread | None = None
        self._state_dir: Path | None = None
        self._saved_env: str | None = None
        self.port = 0
        self.url = ""  # the guest plane: http://127.0.0.1:PORT
        self.admin_url = ""
        self.token = ""
        self.vm = VMHandle(self, "")
        self.events = EventsHandle(self)
        self.faults = FaultsHandle(self)

    # --- life -------------------------------------------------------------------------

    def start(self) -> LocalIMDS:
        if self._node is not None:
            raise KitError("already started")
        self._state_dir = Path(tempfile.mkdtemp(prefix="azimds-kit-"))
        flags = {
            "listen": ["127.0.0.1:0"],
            "admin_listen": _Reused.admin_address(),
            "store": "memory:",
            "state_dir": str(self._state_dir),
            **self._settings,
        }
        config = load(None, flags, environ={})
        store = _Reused.store() if "store" not in self._settings else None
        self._node = NodeThread(config, store)
        try:
            started = self._node.start(START_TIMEOUT)
        except BaseException as exc:
            self._node = None
            self._cleanup()
            raise KitError(f"azimds did not start: {exc}") from exc
        host, self.port = started.guest[0]
        self.url = f"http://{host}:{self.port}"
        self.admin_url = started.admin
        self.token = started.token_file.read_text().strip()
        self.vm = VMHandle(self, started.fleet.default_vm_id)
        if store is not None:
            _Reused.keep(store, self.port_of(started.admin))
        if self._set_environment:
            self._saved_env = os.environ.get(SDK_ENDPOINT_ENV)
            os.environ[SDK_ENDPOINT_ENV] = self.url
        return self

    @staticmethod
    def port_of(url: str) -> int:
        return urllib.parse.urlsplit(url).port or 0

    def stop(self) -> None:
        if self._node is None:
            return
        self._node.stop(START_TIMEOUT)
        self._node = None
        if self._set_environment:
            if self._saved_env is None:
                os.environ.pop(SDK_ENDPOINT_ENV, None)
            else:
                os.environ[SDK_ENDPOINT_ENV] = self._saved_env
        self._cleanup()

    def _cleanup(self) -> None:
        if self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None

    def __enter__(self) -> LocalIMDS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the control plane ------------------------------------------------------------

    @property
    def admin(self) -> AdminClient:
        """The node's control-plane client (``azimds.admin.client``); refusals raise
        ``KitError``."""
        return _KitClient(self.admin_url, self.token)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One control-plane request (docs: ``GET /openapi.json``); the decoded answer."""
        return self.admin.request(method, path, body)

    def create_vm(self, description: Mapping[str, Any]) -> VMHandle:
        """Add a VM (a complete description: what is not given is empty, as on IMDS)."""
        return VMHandle(self, self.admin.create_vm(description)["compute"]["vmId"])

    def vm_named(self, key: str) -> VMHandle:
        """A handle on another VM, by name or vmId."""
        return VMHandle(self, self.admin.vm(key)["compute"]["vmId"])

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        """The guest requests answered so far (after sequence ``since``), oldest first."""
        return self.admin.requests(since)

    def jwks(self) -> dict[str, Any]:
        """The keys tokens are signed with, as relying services fetch them."""
        return self.admin.jwks()

    def certificate(self, which: str = "root") -> bytes:
        """The attestation CA's ``root`` or ``intermediate`` certificate, PEM."""
        return self.admin.ca_certificate(which)


class VMHandle:
    """One VM: its description, document changes and identities."""

    def __init__(self, node: LocalIMDS, vm_id: str) -> None:
        self._node, self.vm_id = node, vm_id

    def description(self) -> dict[str, Any]:
        return self._node.admin.vm(self.vm_id)

    def patch(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of the description: ``{"compute": {"tags": {"env": "ci"}}}``.
        Guests see the change as soon as this returns."""
        return self._node.admin.patch_vm(self.vm_id, dict(changes))

    def replace(self, description: Mapping[str, Any]) -> dict[str, Any]:
        return self._node.admin.replace_vm(self.vm_id, description)

    def delete(self) -> None:
        self._node.admin.delete_vm(self.vm_id)

    def identities(self) -> Identities:
        return self._node.admin.identities(self.vm_id)

    def add_identity(self, name: str, **ids: str) -> dict[str, Any]:
        """Assign a user-assigned identity (clientId, objectId... derived where not given)."""
        return self._node.admin.add_identity(self.vm_id, {"name": name, **ids})

    def remove_identity(self, key: str) -> None:
        """Unassign a user-assigned identity by client id, object id, name or resource id."""
        self._node.admin.remove_identity(self.vm_id, key)

    def system_identity(self, enabled: bool = True) -> None:
        if enabled:
            self._node.admin.enable_system_identity(self.vm_id)
        else:
            self._node.admin.disable_system_identity(self.vm_id)


class EventsHandle:
    """Scheduled events and the clock they run on."""

    def __init__(self, node: LocalIMDS) -> None:
        self._node = node

    def schedule(self, type: str, vms: list[str] | None = None, **fields: Any) -> Event:
        """Schedule an event (``type``: Freeze, Reboot, Redeploy, Preempt, Terminate) for
        ``vms`` (names or vmIds; default the default VM). ``fields``: notBefore, after,
        duration, description, source, unplanned (docs/events.md)."""
        targets = vms if vms is not None else [self._node.vm.vm_id]
        return self._node.admin.schedule_event({"type": type, "vms": targets, **fields})

    def list(self, everything: bool = False) -> list[Event]:
        return self._node.admin.events(everything)["events"]

    def approve(self, event_id: str) -> Event:
        return self._node.admin.approve_event(event_id)

    def cancel(self, event_id: str) -> None:
        self._node.admin.cancel_event(event_id)

    def advance(self, seconds: float) -> str:
        """Move the event clock forward; what falls due happens. Returns the clock's time."""
        return self._node.admin.advance_clock(seconds)


class FaultsHandle:
    """Fault rules (docs/faults.md): ``imds.faults.add(410, 410, path="/metadata/identity")``."""

    def __init__(self, node: LocalIMDS) -> None:
        self._node = node

    def add(self, *actions: int | str | Mapping[str, Any], **rule: Any) -> dict[str, Any]:
        """Add a rule; ``actions`` in turn (410, 429, 500, 503, "reset", "hang", "pass", or an
        object), ``rule``: vm, path, method, probability, count, from_, until, delay,
        retry_after. Returns the rule with its id."""
        body: dict[str, Any] = {_wire_name(key): value for key, value in rule.items()}
        if actions:
            body["actions"] = [dict(a) if isinstance(a, Mapping) else a for a in actions]
        return self._node.admin.add_fault(body)

    def list(self) -> list[dict[str, Any]]:
        return self._node.admin.faults()

    def remove(self, rule_id: str) -> None:
        self._node.admin.remove_fault(rule_id)

    def clear(self) -> int:
        return self._node.admin.clear_faults()


def _wire_name(key: str) -> str:
    """Python keyword arguments to the rule's field names (``from_`` -> ``from``)."""
    return {"from_": "from", "retry_after": "retryAfter"}.get(key, key)


def _flag(value: Any) -> Any:
    """A setting as ``azimds serve`` would get it on its command line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return str(value)
    return value
