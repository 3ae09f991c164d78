"""The WireServer (168.63.129.16:80) and its host GA plugin (port 32526) as apps for the guest
plane's server (``serving/exchange.App``), as ``guest/app.GuestApp`` is for IMDS.

A request's VM is found as IMDS finds it (``guest/callers.py``); an unknown caller gets an
empty 403. Health reports are written to the VM's provisioning state (``fleet/provisioning``)
through the node's one write path; everything else is read from the snapshot served. Traffic
is low (an agent polls every few seconds), so every request runs as a coroutine: no memo.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl

from azimds.fleet.limits import Limits
from azimds.fleet.provisioning import Report, add_report
from azimds.fleet.snapshot import Fleet
from azimds.fleet.vm import VM, WIRESERVER_ADDRESS
from azimds.guest.callers import CallerIdentifier
from azimds.guest.events import Writer
from azimds.guest.limits import GENERAL, RateLimiter
from azimds.guest.observe import Recorder
from azimds.serving.exchange import BodyAbandoned, Exchange, ResponseHeaders
from azimds.store.base import StoreError
from azimds.wireserver import documents
from azimds.wireserver.documents import Ids, ids_of

MAX_BODY = 64 * 1024  # bytes: a health report's description is trimmed to 4 KB by waagent
# A report is a store write, shared by every VM of the fleet: each VM gets a few a second (its
# agents send a handful in all), more are 429s, which waagent and cloud-init retry. What is kept
# of one is bounded too (waagent trims descriptions to 4 KB itself).
REPORTS = Limits(rate=5, identity_rate=0, identity_concurrency=0)
MAX_DESCRIPTION = 4096  # characters kept of a report's description
MAX_AGENT = 256  # characters kept of the header naming the agent
WIRESERVER = "wireserver"  # the request log's categories
HOSTPLUGIN = "hostplugin"
DEFAULT_HOST = WIRESERVER_ADDRESS  # for goal-state links when the agent sent no Host
XML = (("content-type", "text/xml; charset=utf-8"),)
JSON = (("content-type", "application/json; charset=utf-8"),)
# The host plugin's API versions, as hosts list them (waagent only checks the status).
HOSTPLUGIN_VERSIONS = b'["2015-09-01", "2016-02-01", "2015-08-01"]'
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")

WireAnswer = tuple[int, ResponseHeaders, bytes]


@dataclass(frozen=True, slots=True)
class WireRequest:
    """One identified request, as a handler gets it."""

    fleet: Fleet
    vm: VM
    exchange: Exchange
    query: dict[str, str]  # names in lower case
    body: bytes

    @property
    def ids(self) -> Ids:
        return ids_of(self.vm, self.fleet.provisioning_of(self.vm.vm_id).incarnation)

    def header(self, name: str) -> str:
        values = self.exchange.headers.get_all(name)
        return values[0] if values else ""


Handler = Callable[["WireApp", WireRequest], Awaitable[WireAnswer]]
EMPTY_OK: WireAnswer = (200, (), b"")
NOT_FOUND: WireAnswer = (404, (), b"")
REFUSED: WireAnswer = (403, (), b"")  # an unknown caller (docs/behaviour.md)
BAD_REQUEST: WireAnswer = (400, (), b"")


class WireApp:
    """One of the two apps: ``category`` WIRESERVER or HOSTPLUGIN picks its routes."""

    body_limit = MAX_BODY

    def __init__(
        self,
        category: str,
        fleet: Fleet,
        callers: CallerIdentifier,
        writer: Writer,
        recorder: Recorder | None = None,
        real_time: Callable[[], float] = time.time,
    ) -> None:
        self.category = category
        self.route = _wireserver_route if category == WIRESERVER else _hostplugin_route
        self.fleet = fleet
        self.callers = callers
        self.writer = writer
        self.recorder = recorder
        self.real_time = real_time
        self.reports = RateLimiter(REPORTS)

    def replace_fleet(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def handle(self, exchange: Exchange) -> Awaitable[None]:
        return self._handle(exchange)

    async def _handle(self, exchange: Exchange) -> None:
        started = time.perf_counter()
        fleet = self.fleet
        caller = self.callers.identify(exchange.client, fleet)
        vm_id = caller.vm_id if isinstance(caller, VM) else ""
        try:
            body = await exchange.read_body() if exchange.method in ("POST", "PUT") else b""
        except BodyAbandoned as abandoned:
            abandoned.answer(exchange)
            self._record(vm_id, exchange, abandoned.status, started)
            return
        if not isinstance(caller, VM):
            status, headers, text = REFUSED
        elif len(body) > MAX_BODY:
            status, headers, text = 413, (), b""
        else:
            query = {k.lower(): v for k, v in parse_qsl(exchange.query_string)}
            handler = self.route(exchange.method, exchange.path.lower(), query.get("comp", ""))
            call = WireRequest(fleet, caller, exchange, query, body)
            status, headers, text = NOT_FOUND if handler is None else await handler(self, call)
        exchange.response_bytes(status, headers, text)
        self._record(vm_id, exchange, status, started)

    def _record(self, vm_id: str, exchange: Exchange, status: int, started: float) -> None:
        if self.recorder is not None:
            request = (exchange.method, exchange.path, exchange.query_string, None, False)
            latency = time.perf_counter() - started
            self.recorder.record(
                vm_id, exchange.client, request, (status, "", ""), latency, self.category
            )

    async def report(self, call: WireRequest, report: Report) -> WireAnswer:
        """Keep a health report in the VM's provisioning state; 200 once it is written."""
        vm_id = call.vm.vm_id
        if not self.reports.admit(vm_id, GENERAL, REPORTS):
            return 429, (), b""
        report = replace(
            report, agent=report.agent[:MAX_AGENT], description=report.description[:MAX_DESCRIPTION]
        )
        try:
            await self.writer.write(lambda txn: add_report(txn, vm_id, report))
        except StoreError:
            return 503, (), b""
        return EMPTY_OK


async def versions(app: WireApp, call: WireRequest) -> WireAnswer:
    """``GET /?comp=versions``: the protocol versions, 2012-11-30 preferred."""
    return 200, XML, documents.VERSIONS.encode()


async def goal_state(app: WireApp, call: WireRequest) -> WireAnswer:
    """``GET /machine/?comp=goalstate``, its URLs pointing where the agent reached us."""
    host = call.header("host")
    base = f"http://{host if _HOST.fullmatch(host) else DEFAULT_HOST}"
    return 200, XML, documents.goal_state(call.ids, base).encode()


async def config(app: WireApp, call: WireRequest) -> WireAnswer:
    """``GET /machine/CONTAINER/INSTANCE?comp=config&type=...``: the documents it links."""
    ids = call.ids
    container = call.exchange.path.split("/")[2] if call.exchange.path.count("/") >= 3 else ""
    if container.lower() != ids.container_id:
        return NOT_FOUND
    kind = call.query.get("type", "")
    if kind == "hostingEnvironmentConfig":
        return 200, XML, documents.hosting_environment(ids).encode()
    if kind == "sharedConfig":
        address = call.vm.caller_addresses[0] if call.vm.caller_addresses else ""
        return 200, XML, documents.shared_config(ids, address).encode()
    return NOT_FOUND


async def health(app: WireApp, call: WireRequest) -> WireAnswer:
    """``POST /machine?comp=health``: cloud-init's and waagent's health report."""
    parsed = documents.parse_health(call.body)
    ids = call.ids
    if parsed is None or (parsed.container_id, parsed.instance_id) != (
        ids.container_id,
        ids.instance_id,
    ):
        return BAD_REQUEST
    # cloud-init and waagent both say x-ms-agent-name: WALinuxAgent; User-Agent tells them apart.
    agent = call.header("user-agent") or call.header("x-ms-agent-name")
    report = Report(
        app.real_time(), agent, parsed.state, parsed.substatus, parsed.description,
        parsed.incarnation,
    )  # fmt: skip
    return await app.report(call, report)


async def azure_init_health(app: WireApp, call: WireRequest) -> WireAnswer:
    """``POST /provisioning/health``: azure-init's JSON report."""
    try:
        sent = json.loads(call.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return BAD_REQUEST
    state = sent.get("state") if isinstance(sent, dict) else None
    details = sent.get("details", {}) if isinstance(sent, dict) else None
    if state not in ("Ready", "NotReady") or not isinstance(details, dict):
        return BAD_REQUEST
    substatus, description = details.get("subStatus", ""), details.get("description", "")
    if not isinstance(substatus, str) or not isinstance(description, str):
        return BAD_REQUEST
    agent = call.header("x-ms-guest-agent-name") or call.header("user-agent")
    report = Report(app.real_time(), agent, state, substatus, description)
    return await app.report(call, report)


async def accepted(app: WireApp, call: WireRequest) -> WireAnswer:
    """``POST /machine?comp=roleProperties``: waagent expects 202."""
    return 202, (), b""


async def ignored(app: WireApp, call: WireRequest) -> WireAnswer:
    """Telemetry, HealthService, the host plugin's status and logs: taken, not kept."""
    return EMPTY_OK


async def hostplugin_versions(app: WireApp, call: WireRequest) -> WireAnswer:
    return 200, JSON, HOSTPLUGIN_VERSIONS


_MACHINE = ("/machine", "/machine/")
_WIRESERVER_POSTS: dict[str, Handler] = {
    "health": health,
    "roleproperties": accepted,
    "telemetrydata": ignored,
}


def _wireserver_route(method: str, path: str, comp: str) -> Handler | None:
    """The handler for a WireServer request (``path`` in lower case), if any."""
    comp = comp.lower()
    if method == "GET":
        if path == "/" and comp == "versions":
            return versions
        if path in _MACHINE and comp == "goalstate":
            return goal_state
        if path.startswith("/machine/") and comp == "config":
            return config
    elif method == "POST":
        if path in _MACHINE:
            return _WIRESERVER_POSTS.get(comp)
        if path == "/healthservice":
            return ignored
        if path == "/provisioning/health":
            return azure_init_health
    return None


# GET /vmSettings has no route: its 404 is a host without Fast Track, which waagent takes as
# "use the WireServer's goal state".
_HOSTPLUGIN: dict[tuple[str, str], Handler] = {
    ("GET", "/versions"): hostplugin_versions,
    ("GET", "/health"): ignored,
    ("PUT", "/status"): ignored,
    ("PUT", "/vmagentlog"): ignored,
}


def _hostplugin_route(method: str, path: str, comp: str) -> Handler | None:
    return _HOSTPLUGIN.get((method, path))
