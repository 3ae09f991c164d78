"""Configuration: the settings table, config and fleet files, and their validation.

Layering, highest first: command-line flags, environment variables, the config file, defaults.
Every setting is declared once in ``SETTINGS``; the CLI's options and the configuration
reference in ``docs/configuration.md`` follow from it (a test keeps the docs in step).

A bad file stops start-up with a ``ConfigError`` naming the file, the field and the fix.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from azimds.errors import Problem
from azimds.fleet.limits import OFF, Limits
from azimds.fleet.schema import DocumentError
from azimds.fleet.vm import (
    HOSTPLUGIN_PORT,
    IMDS_ADDRESS,
    IMDS_PORT,
    VM,
    WIRESERVER_ADDRESS,
    WIRESERVER_PORT,
    vm_from_patch,
)
from azimds.host.state import default_state_dir
from azimds.serving.limits import MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT, REQUEST_TIMEOUT

# Where `azimds serve` listens when not told otherwise: loopback, and a port that reads as
# the link-local address it stands in for (169.25[4]).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 16925
# The control plane's default address: the next port up, on loopback only.
DEFAULT_ADMIN_PORT = 16926


class ConfigError(Problem):
    """Configuration that cannot be used; ``source`` is the file (or flag, variable,
    "defaults") it came from."""

    def __init__(self, source: str, where: str, problem: str, fix: str) -> None:
        super().__init__(problem, where=where, fix=fix)
        self.source = source

    def __str__(self) -> str:
        return f"invalid configuration in {self.source}: {super().__str__()}"


@dataclass(frozen=True, slots=True)
class Setting:
    name: str  # key in the config file
    flag: str  # command-line option
    env: str  # environment variable
    default: str  # the value when none is given (what the CLI's help and the docs show)
    help: str
    choices: tuple[str, ...] = ()  # the values allowed (lower case), if a fixed few
    multiple: bool = False  # repeatable flag, list in the file, commas in the variable
    range: tuple[float, float] | None = None  # a number, from low to high
    # ``default`` describes a value worked out at start (a directory, a URL), not the value.
    computed: bool = False


LOG_LEVELS = ("debug", "info", "warning", "error")

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "listen",
        "--listen",
        "AZIMDS_LISTEN",
        f"{DEFAULT_HOST}:{DEFAULT_PORT}",
        "Address the guest plane (the IMDS API) listens on, HOST:PORT ([v6]:PORT for IPv6). "
        "169.254.169.254:80 works where that address exists on this host. Port 0 picks a "
        "free port.",
        multiple=True,
    ),
    Setting(
        "link_local",
        "--link-local",
        "AZIMDS_LINK_LOCAL",
        "false",
        "Serve at the real addresses: add 169.254.169.254/32 and 168.63.129.16/32 to the "
        "loopback device (needs root), listen on 169.254.169.254:80 instead of the default "
        "address (and besides any --listen given), serve the WireServer on 168.63.129.16:80 "
        "and its host plugin on 168.63.129.16:32526 unless --wireserver-listen or "
        "--hostplugin-listen say otherwise, and remove the addresses on exit unless they were "
        "there before.",
        choices=("true", "false"),
    ),
    Setting(
        "admin_listen",
        "--admin-listen",
        "AZIMDS_ADMIN_LISTEN",
        f"{DEFAULT_HOST}:{DEFAULT_ADMIN_PORT}",
        "Address of the control plane (admin API, bearer token): HOST:PORT, or unix:PATH for "
        "a Unix socket. Never the guest's address.",
    ),
    Setting(
        "wireserver_listen",
        "--wireserver-listen",
        "AZIMDS_WIRESERVER_LISTEN",
        "",
        "Address the WireServer (goal state, health reports; Azure's 168.63.129.16:80) listens "
        "on, HOST:PORT; none: not served (168.63.129.16:80 with --link-local). Callers are "
        "identified as on the guest plane.",
    ),
    Setting(
        "hostplugin_listen",
        "--hostplugin-listen",
        "AZIMDS_HOSTPLUGIN_LISTEN",
        "",
        "Address the WireServer's host GA plugin (Azure's 168.63.129.16:32526) listens on, "
        "HOST:PORT; none: not served (168.63.129.16:32526 with --link-local).",
    ),
    Setting(
        "caller_mode",
        "--caller-mode",
        "AZIMDS_CALLER_MODE",
        "single",
        "How a request's VM is found: single (every caller is the default VM) or source-ip "
        "(the caller's address is a private IP of the VM's NIC).",
        choices=("single", "source-ip"),  # guest/callers.py: MODES
    ),
    Setting(
        "state_dir",
        "--state-dir",
        "AZIMDS_STATE_DIR",
        "/var/lib/azimds for root, else ~/.local/state/azimds",
        "Directory for the SQLite database, the admin token and the control plane's address; "
        "one node at a time (it holds azimds.lock).",
        computed=True,
    ),
    Setting(
        "store",
        "--store",
        "AZIMDS_STORE",
        "sqlite:",
        "Where fleet data lives: sqlite: (azimds.db in the state directory), "
        "sqlite:////ABSOLUTE/PATH, memory: (lost on exit), or postgresql://USER@HOST/DB for a "
        "fleet of nodes sharing one database.",
    ),
    Setting(
        "fleet",
        "--fleet",
        "AZIMDS_FLEET",
        "",
        "YAML or JSON file declaring VMs (vms: [...]), applied at start where changed.",
    ),
    Setting(
        "watch",
        "--watch",
        "AZIMDS_WATCH",
        "false",
        "Re-apply the fleet file whenever it changes (all of it or, if invalid, none of it).",
        choices=("true", "false"),
    ),
    Setting(
        "public_url",
        "--public-url",
        "AZIMDS_PUBLIC_URL",
        "the control plane's URL",
        "Base URL where relying services reach this node's public routes: OpenID discovery "
        "and JWKS (to verify tokens) and the attestation intermediate certificate (the URL in "
        "signing certificates' AIA). Needed with a Unix-socket control plane.",
        computed=True,
    ),
    Setting(
        "issuer",
        "--issuer",
        "AZIMDS_ISSUER",
        "local",
        "Issuer of managed-identity tokens: local (the public URL, where the OpenID discovery "
        "document and JWKS that verify them are served), azure (https://sts.windows.net, as on "
        "Azure), or a base URL. Tokens' iss is <issuer>/<tenant>/.",
    ),
    Setting(
        "token_lifetime",
        "--token-lifetime",
        "AZIMDS_TOKEN_LIFETIME",
        "86400",
        "Seconds a managed-identity token is valid (real tokens: about 24 hours).",
        range=(600, 7 * 86400),
    ),
    Setting(
        "token_resources",
        "--token-resource",
        "AZIMDS_TOKEN_RESOURCES",
        "",
        "Resources tokens may be asked for (repeatable); any other gets Azure AD's "
        "invalid_resource error. None given: any resource.",
        multiple=True,
    ),
    Setting(
        "attested_digest",
        "--attested-digest",
        "AZIMDS_ATTESTED_DIGEST",
        "azure",
        "Digest algorithm identifier in attested documents' PKCS#7: azure writes "
        "sha256WithRSAEncryption exactly as Azure does; sha256 writes the standard identifier "
        "(for clients that cannot parse Azure's).",
        choices=("azure", "sha256"),
    ),
    Setting(
        "clock",
        "--clock",
        "AZIMDS_CLOCK",
        "real",
        "The clock scheduled events run on: real (with --time-scale) or manual (moved only "
        "by `azimds events advance`). Kept in the store: a restart continues from it.",
        choices=("real", "manual"),
    ),
    Setting(
        "time_scale",
        "--time-scale",
        "AZIMDS_TIME_SCALE",
        "1",
        "How many event-clock seconds pass per real second (e.g. 60: an hour a minute).",
        range=(0.001, 100000),
    ),
    Setting(
        "terminate_notice",
        "--terminate-notice",
        "AZIMDS_TERMINATE_NOTICE",
        "600",
        "Minimum notice of Terminate events, seconds from 300 to 900 (a scale set's setting).",
        range=(300, 900),
    ),
    Setting(
        "events_first_call_delay",
        "--events-first-call-delay",
        "AZIMDS_EVENTS_FIRST_CALL_DELAY",
        "0",
        "Seconds a VM's first /metadata/scheduledevents request waits, as the real service's "
        "does while it enables the feature (up to 120). 0: no wait.",
        range=(0, 120),
    ),
    Setting(
        "rate_limit",
        "--rate-limit",
        "AZIMDS_RATE_LIMIT",
        "5",
        "Requests a second each VM may make outside the identity category, as on Azure; "
        "beyond it: 429. on: the default. 0 or off: no limits at all (for load tests).",
        range=(0, 100000),
    ),
    Setting(
        "identity_rate_limit",
        "--identity-rate-limit",
        "AZIMDS_IDENTITY_RATE_LIMIT",
        "20",
        "Requests a second each VM may make to /metadata/identity (0: no limit).",
        range=(0, 100000),
    ),
    Setting(
        "identity_concurrency",
        "--identity-concurrency",
        "AZIMDS_IDENTITY_CONCURRENCY",
        "5",
        "Identity requests each VM may have in flight at once (0: no limit).",
        range=(0, 10000),
    ),
    Setting(
        "request_timeout",
        "--request-timeout",
        "AZIMDS_REQUEST_TIMEOUT",
        f"{REQUEST_TIMEOUT:g}",
        "Seconds a client has to send a request's head (from connecting, or from its previous "
        "answer on a kept-alive connection: idle connections close after it), and again its "
        "body. A head too late: the connection closes; a body too late: 408. Also how long a "
        "guest's answers may wait unread (it reads none of them): then its connection ends.",
        range=(0.1, 3600),
    ),
    Setting(
        "connections_per_client",
        "--connections-per-client",
        "AZIMDS_CONNECTIONS_PER_CLIENT",
        str(MAX_CONNECTIONS_PER_CLIENT),
        "Guest-plane connections one client address may have open at once (all listeners "
        "together); more are closed as they come, and counted in the metrics. Raise it for "
        "load tests from one address (wrk -c200).",
        range=(1, MAX_CONNECTIONS),
    ),
    Setting(
        "ready_file",
        "--ready-file",
        "AZIMDS_READY_FILE",
        "",
        "Once every listener accepts connections, write this file (JSON: guest URLs, control "
        "plane URL, pid); removed when the node stops. For scripts that wait for the node.",
    ),
    Setting(
        "access_log",
        "--access-log",
        "AZIMDS_ACCESS_LOG",
        "",
        "Write every guest request as a JSON line (time, VM, method, path, status, latency, "
        "category, request id) to this file, or - for standard output. Off by default.",
    ),
    Setting(
        "log_level",
        "--log-level",
        "AZIMDS_LOG_LEVEL",
        "info",
        "How much azimds logs: debug, info, warning or error.",
        choices=LOG_LEVELS,
    ),
)
SETTING = {s.name: s for s in SETTINGS}
FILE_KEYS = (*sorted(SETTING), "vm")

Address = tuple[str, int]  # (host, port); host "unix:/path" with port 0 for a Unix socket


@dataclass(frozen=True, slots=True)
class Config:
    listen: tuple[Address, ...]
    admin_listen: Address
    caller_mode: str
    state_dir: Path
    store: str
    fleet_file: Path | None
    watch: bool
    log_level: str
    public_url: str  # "" = the control plane's URL
    issuer: str  # "local", "azure" or a base URL
    attested_digest: str  # "azure" (as Azure writes it) or "sha256"
    token_lifetime: int
    token_resources: tuple[str, ...]
    clock: str  # "real" or "manual"
    time_scale: float
    terminate_notice: int
    events_first_call_delay: float
    limits: Limits  # OFF when --rate-limit off
    access_log: str  # "" off, "-" stdout, else a file
    vm: VM  # the default VM: the example changed by the file's `vm:`
    vm_declared: bool  # `vm:` given, or single mode: the default VM is declared at start
    source: str | None  # the config file, if any
    link_local: bool = False  # add Azure's addresses to lo while serving (link_local.held)
    request_timeout: float = REQUEST_TIMEOUT  # seconds to send a head, and again a body
    connections_per_client: int = MAX_CONNECTIONS_PER_CLIENT  # guest connections per address
    ready_file: Path | None = None  # written once serving, removed on stop
    wireserver_listen: Address | None = None  # None: the WireServer is not served
    hostplugin_listen: Address | None = None  # None: its host plugin is not served

    @property
    def link_local_addresses(self) -> tuple[str, ...]:
        """What ``link_local`` adds to lo: without it none; with it IMDS's address, and the
        WireServer's unless neither the WireServer nor its host plugin listens there (the
        settings put them elsewhere)."""
        if not self.link_local:
            return ()
        wire = (self.wireserver_listen, self.hostplugin_listen)
        if any(address is not None and address[0] == WIRESERVER_ADDRESS for address in wire):
            return (IMDS_ADDRESS, WIRESERVER_ADDRESS)
        return (IMDS_ADDRESS,)


def parse_listen(text: str, source: str, where: str = "listen", unix: bool = False) -> Address:
    """``HOST:PORT`` or ``[IPV6]:PORT`` (or ``unix:PATH`` where allowed) -> (host, port)."""
    text = text.strip()
    if unix and text.startswith("unix:") and len(text) > len("unix:"):
        return text, 0
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    fix = "write HOST:PORT, e.g. 127.0.0.1:16925 or [::1]:16925" + (
        ", or unix:/path/to/socket" if unix else ""
    )
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(source, where, f"'{text}' is not HOST:PORT", fix)
    port = int(port_text)
    if port > 65535:
        raise ConfigError(source, where, f"port {port} is out of range", "use 0 to 65535")
    return host, port


def read_file(path: Path, keys: tuple[str, ...], hint: str) -> dict[str, Any]:
    """Load a YAML or JSON mapping (JSON is YAML, but JSON errors read better as JSON)."""
    source = str(path)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(
            source, "(file)", f"cannot be read ({exc.strerror})", "check the path"
        ) from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        where, problem = _syntax_error(exc)
        raise ConfigError(source, where, problem, "correct the syntax") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(source, "(top level)", "expected a mapping", hint)
    for key in data:
        if key not in keys:
            raise unknown_setting(source, str(key), keys)
    return data


def _syntax_error(exc: json.JSONDecodeError | yaml.YAMLError) -> tuple[str, str]:
    """Where in the file a syntax error is (line and column, from 1) and what it is; YAML's
    own text names no file but "<unicode string>", and repeats the line."""
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno}, column {exc.colno}", exc.msg
    mark = getattr(exc, "problem_mark", None)
    if not isinstance(exc, yaml.MarkedYAMLError) or mark is None:
        return "(syntax)", str(exc).replace("\n", " ")
    problem = exc.problem or "not YAML"
    if exc.context and exc.context_mark is not None:
        problem += f" ({exc.context} from line {exc.context_mark.line + 1})"
    return f"line {mark.line + 1}, column {mark.column + 1}", problem


def unknown_setting(source: str, key: str, keys: Collection[str]) -> ConfigError:
    """The error for a misspelt setting: the closest known name first, then all of them."""
    known = ", ".join(keys)
    close = difflib.get_close_matches(key, list(keys), n=1)
    fix = f"did you mean '{close[0]}'? known settings are {known}" if close else ""
    return ConfigError(source, key, "unknown setting", fix or f"known settings are {known}")


@dataclass(frozen=True, slots=True)
class FleetFile:
    vms: list[dict[str, Any]]
    faults: list[dict[str, Any]]  # fault rules (fleet/faults.py)


def read_fleet_file(path: Path) -> FleetFile:
    """The VMs and fault rules a fleet file declares.

    Only the file's shape is checked here; each VM and rule is validated once, where it is
    applied (``app.declare``), whose errors name the entry (``vms[3]...``, ``faults[0]...``).
    """
    data = read_file(path, ("vms", "faults"), "write vms: followed by a list of VMs")
    source = str(path)
    entries: dict[str, list[dict[str, Any]]] = {}
    for key, what in (("vms", "describe the VM with compute:"), ("faults", "give actions:")):
        entries[key] = data.get(key) or []
        if not isinstance(entries[key], list):
            raise ConfigError(source, key, "expected a list", f"write {key}: - ...")
        for index, entry in enumerate(entries[key]):
            if not isinstance(entry, dict):
                raise ConfigError(source, f"{key}[{index}]", "expected a mapping", what)
    return FleetFile(entries["vms"], entries["faults"])


def _in_range(name: str, value: Any, where: str) -> float:
    """``value`` as a number within the setting's range."""
    low, high = SETTING[name].range or (float("-inf"), float("inf"))
    try:
        number = float(str(value))
    except ValueError:
        number = float("nan")
    if not low <= number <= high:  # also false for NaN
        raise ConfigError(
            where, name, f"'{value}' is out of range", f"give a number from {low:g} to {high:g}"
        )
    return number


class _Given:
    """The settings as given: each by the highest layer that has it, checked against its
    ``Setting`` (choices, range), and its default where no layer gives it."""

    def __init__(
        self, flags: Mapping[str, Any], env: Mapping[str, str], data: Mapping[str, Any], source: str
    ) -> None:
        self.flags, self.env, self.data, self.source = flags, env, data, source

    def pick(self, name: str) -> tuple[Any, str]:
        """The value of a setting, and where it came from (for messages); the default (None
        for a ``computed`` one) from "defaults"."""
        setting = SETTING[name]
        flag = self.flags.get(name)
        if flag not in (None, (), ""):
            return flag, setting.flag
        if self.env.get(setting.env):
            value = self.env[setting.env]
            return (value.split(",") if setting.multiple else value), setting.env
        if self.data.get(name) not in (None, ""):
            return self.data[name], self.source
        return (None if setting.computed else setting.default), "defaults"

    def text(self, name: str) -> str:
        """A free-form setting ("" when none is given)."""
        value, _ = self.pick(name)
        return str(value or "")

    def choice(self, name: str) -> str:
        value, where = self.pick(name)
        setting = SETTING[name]
        text = str(value).lower() if isinstance(value, str | bool) else repr(value)
        if text not in setting.choices:
            raise ConfigError(
                where, name, f"'{value}' is not allowed", "use " + ", ".join(setting.choices)
            )
        return text

    def switch(self, name: str) -> bool:
        return self.choice(name) == "true"

    def number(self, name: str) -> float:
        return _in_range(name, *self.pick(name))

    def limits(self) -> Limits:
        """``rate_limit`` takes on/off besides a number (YAML reads unquoted on/off as
        true/false); off or 0 turns every limit off."""
        value, where = self.pick("rate_limit")
        switch = str(value).lower()
        if switch in ("off", "false"):
            return OFF
        try:
            on = switch in ("on", "true")
            rate = _in_range("rate_limit", SETTING["rate_limit"].default if on else value, where)
        except ConfigError:
            raise ConfigError(
                where,
                "rate_limit",
                f"'{value}' is not allowed",
                "give on (5 a second, as on Azure), off, or a number from 0 to 100000",
            ) from None
        if rate == 0:
            return OFF
        return Limits(
            rate=rate,
            identity_rate=self.number("identity_rate_limit"),
            identity_concurrency=int(self.number("identity_concurrency")),
        )

    def listen(self, link_local: bool) -> tuple[Address, ...]:
        value, where = self.pick("listen")
        if where == "defaults" and link_local:
            value = []  # --link-local alone serves the real address only
        if isinstance(value, str):
            value = [value]
        fix = 'write listen: ["127.0.0.1:16925"]'
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(where, "listen", "expected HOST:PORT or a list of them", fix)
        listen = tuple(parse_listen(text, where) for text in value)
        if not listen and not link_local:
            raise ConfigError(where, "listen", "no address to serve on", fix)
        if link_local:  # the real address first: the banner's examples use the first address
            real = (IMDS_ADDRESS, IMDS_PORT)
            listen = (real, *(address for address in listen if address != real))
        return listen

    def path(self, name: str) -> Path | None:
        value, _ = self.pick(name)
        return Path(str(value)).expanduser() if value else None


def effective(
    config_file: Path | None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[tuple[Setting, Any, str]]:
    """Every setting's value and where it comes from (a flag, a variable, the file, the
    defaults), as ``load`` picks them; ``azimds config`` prints it. Call ``load`` first to
    refuse what it would refuse."""
    data = read_file(config_file, FILE_KEYS, "") if config_file is not None else {}
    source = str(config_file) if config_file is not None else "defaults"
    given = _Given(flags or {}, os.environ if environ is None else environ, data, source)
    return [(setting, *given.pick(setting.name)) for setting in SETTINGS]


def load(
    config_file: Path | None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Combine flags (by setting name), environment, file and defaults into a ``Config``."""
    hint = "write keys such as listen: and vm:"
    data = read_file(config_file, FILE_KEYS, hint) if config_file is not None else {}
    source = str(config_file) if config_file is not None else "defaults"
    given = _Given(flags or {}, os.environ if environ is None else environ, data, source)

    link_local = given.switch("link_local")
    listen = given.listen(link_local)
    admin_value, admin_source = given.pick("admin_listen")
    admin = parse_listen(str(admin_value), admin_source, "admin_listen", unix=True)
    if admin[1] != 0 and admin in listen:
        raise ConfigError(
            admin_source,
            "admin_listen",
            "is also a guest address",
            "give the control plane its own address",
        )

    wire: dict[str, Address | None] = {}
    wire_ports = {"wireserver_listen": WIRESERVER_PORT, "hostplugin_listen": HOSTPLUGIN_PORT}
    for name, port in wire_ports.items():
        value, where = given.pick(name)
        if where == "defaults" and link_local:  # as for listen: Azure's address unless given
            value = f"{WIRESERVER_ADDRESS}:{port}"
        address = parse_listen(str(value), where, name) if value else None
        if address is not None and address[1] != 0 and address in (*listen, admin, *wire.values()):
            raise ConfigError(where, name, "is another listener's address", "give it its own")
        wire[name] = address

    caller_mode = given.choice("caller_mode")
    watch = given.switch("watch")
    fleet_file = given.path("fleet")
    if watch and fleet_file is None:
        raise ConfigError(
            given.pick("watch")[1], "watch", "there is no fleet file to watch", "give --fleet FILE"
        )

    ready_file = given.path("ready_file")
    # Checked before anything listens: a missing directory would fail only once serving.
    if ready_file is not None and not ready_file.parent.is_dir():
        raise ConfigError(
            given.pick("ready_file")[1],
            "ready_file",
            f"{ready_file.parent} is not a directory",
            "create it, or give a path in an existing directory",
        )

    public_url = given.text("public_url").rstrip("/")
    if public_url and not public_url.startswith(("http://", "https://")):
        raise ConfigError(
            given.pick("public_url")[1],
            "public_url",
            f"'{public_url}' is not a URL",
            "write http(s)://HOST[:PORT]",
        )
    issuer = given.text("issuer")
    if issuer not in ("local", "azure") and not issuer.startswith(("http://", "https://")):
        raise ConfigError(
            given.pick("issuer")[1],
            "issuer",
            f"'{issuer}' is not allowed",
            "use local, azure or an http(s) URL",
        )
    resources_value, _ = given.pick("token_resources")
    if isinstance(resources_value, str):
        resources_value = [resources_value]
    resources = tuple(str(r) for r in resources_value or () if str(r).strip())

    vm_patch = data.get("vm")
    if vm_patch is not None and not isinstance(vm_patch, dict):
        raise ConfigError(
            source, "vm", "expected a mapping", "write vm: with compute: and network: below"
        )
    try:
        vm = vm_from_patch(vm_patch)
    except DocumentError as exc:
        raise ConfigError(source, exc.where, exc.problem, exc.fix) from exc
    return Config(
        listen=listen,
        admin_listen=admin,
        caller_mode=caller_mode,
        state_dir=given.path("state_dir") or default_state_dir(),
        store=given.text("store"),
        fleet_file=fleet_file,
        watch=watch,
        log_level=given.choice("log_level"),
        public_url=public_url,
        issuer=issuer,
        attested_digest=given.choice("attested_digest"),
        token_lifetime=int(given.number("token_lifetime")),
        token_resources=resources,
        clock=given.choice("clock"),
        time_scale=given.number("time_scale"),
        terminate_notice=int(given.number("terminate_notice")),
        events_first_call_delay=given.number("events_first_call_delay"),
        limits=given.limits(),
        access_log=given.text("access_log"),
        vm=vm,
        vm_declared=vm_patch is not None or caller_mode == "single",
        source=source if config_file else None,
        link_local=link_local,
        request_timeout=given.number("request_timeout"),
        connections_per_client=int(given.number("connections_per_client")),
        ready_file=ready_file,
        wireserver_listen=wire["wireserver_listen"],
        hostplugin_listen=wire["hostplugin_listen"],
    )
