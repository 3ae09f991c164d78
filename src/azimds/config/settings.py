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
from azimds.fleet.vm import IMDS_ADDRESS, IMDS_PORT, VM, vm_from_patch
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
    default: str
    help: str
    choices: tuple[str, ...] = ()
    multiple: bool = False  # repeatable flag, list in the file, commas in the variable


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
        "Serve at the real address: add 169.254.169.254/32 to the loopback device (needs "
        "root), listen on 169.254.169.254:80 instead of the default address (and besides any "
        "--listen given), and remove the address on exit unless it was there before.",
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
    ),
    Setting(
        "terminate_notice",
        "--terminate-notice",
        "AZIMDS_TERMINATE_NOTICE",
        "600",
        "Minimum notice of Terminate events, seconds from 300 to 900 (a scale set's setting).",
    ),
    Setting(
        "events_first_call_delay",
        "--events-first-call-delay",
        "AZIMDS_EVENTS_FIRST_CALL_DELAY",
        "0",
        "Seconds a VM's first /metadata/scheduledevents request waits, as the real service's "
        "does while it enables the feature (up to 120). 0: no wait.",
    ),
    Setting(
        "rate_limit",
        "--rate-limit",
        "AZIMDS_RATE_LIMIT",
        "5",
        "Requests a second each VM may make outside the identity category, as on Azure; "
        "beyond it: 429. on: the default. 0 or off: no limits at all (for load tests).",
    ),
    Setting(
        "identity_rate_limit",
        "--identity-rate-limit",
        "AZIMDS_IDENTITY_RATE_LIMIT",
        "20",
        "Requests a second each VM may make to /metadata/identity (0: no limit).",
    ),
    Setting(
        "identity_concurrency",
        "--identity-concurrency",
        "AZIMDS_IDENTITY_CONCURRENCY",
        "5",
        "Identity requests each VM may have in flight at once (0: no limit).",
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
    ),
    Setting(
        "connections_per_client",
        "--connections-per-client",
        "AZIMDS_CONNECTIONS_PER_CLIENT",
        str(MAX_CONNECTIONS_PER_CLIENT),
        "Guest-plane connections one client address may have open at once (all listeners "
        "together); more are closed as they come, and counted in the metrics. Raise it for "
        "load tests from one address (wrk -c200).",
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
    link_local: bool = False  # add 169.254.169.254 to lo while serving (link_local.held)
    request_timeout: float = REQUEST_TIMEOUT  # seconds to send a head, and again a body
    connections_per_client: int = MAX_CONNECTIONS_PER_CLIENT  # guest connections per address
    ready_file: Path | None = None  # written once serving, removed on stop


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
        problem = str(exc).replace("\n", " ")
        raise ConfigError(source, "(syntax)", problem, "correct the syntax") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(source, "(top level)", "expected a mapping", hint)
    for key in data:
        if key not in keys:
            raise unknown_setting(source, str(key), keys)
    return data


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


def _pick(
    name: str, flag: Any, env: Mapping[str, str], data: Mapping[str, Any], source: str
) -> tuple[Any, str]:
    """The value of a setting, and where it came from (for messages)."""
    setting = SETTING[name]
    if flag not in (None, (), ""):
        return flag, setting.flag
    if env.get(setting.env):
        value = env[setting.env]
        return (value.split(",") if setting.multiple else value), setting.env
    if name in data:
        return data[name], source
    return None, "defaults"


def _choice(name: str, value: Any, where: str) -> str:
    setting = SETTING[name]
    text = str(value).lower() if isinstance(value, str | bool) else repr(value)
    if text not in setting.choices:
        raise ConfigError(
            where, name, f"'{value}' is not allowed", "use " + ", ".join(setting.choices)
        )
    return text


def _number(name: str, value: Any, source: str, low: float, high: float) -> float:
    """A numeric setting (its default when not given), within [low, high]."""
    text = str(value if value is not None else SETTING[name].default)
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if not low <= number <= high:  # also false for NaN
        raise ConfigError(
            source, name, f"'{text}' is out of range", f"give a number from {low:g} to {high:g}"
        )
    return number


def load(
    config_file: Path | None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Combine flags (by setting name), environment, file and defaults into a ``Config``."""
    flags = flags or {}
    env = os.environ if environ is None else environ
    hint = "write keys such as listen: and vm:"
    data = read_file(config_file, FILE_KEYS, hint) if config_file is not None else {}
    source = str(config_file) if config_file is not None else "defaults"

    def pick(name: str) -> tuple[Any, str]:
        return _pick(name, flags.get(name), env, data, source)

    link_value, link_source = pick("link_local")
    link_local = (
        _choice("link_local", link_value if link_value is not None else "false", link_source)
        == "true"
    )
    listen_value, listen_source = pick("listen")
    if listen_value is None:
        listen_value = [] if link_local else [SETTING["listen"].default]
    if isinstance(listen_value, str):
        listen_value = [listen_value]
    if not isinstance(listen_value, list | tuple) or not all(
        isinstance(v, str) for v in listen_value
    ):
        raise ConfigError(
            listen_source,
            "listen",
            "expected HOST:PORT or a list of them",
            'write listen: ["127.0.0.1:16925"]',
        )
    listen = tuple(parse_listen(text, listen_source) for text in listen_value)
    if not listen and not link_local:
        raise ConfigError(
            listen_source, "listen", "no address to serve on", 'write listen: ["127.0.0.1:16925"]'
        )
    if link_local:  # the real address first: the banner's examples use the first address
        real = (IMDS_ADDRESS, IMDS_PORT)
        listen = (real, *(address for address in listen if address != real))

    admin_value, admin_source = pick("admin_listen")
    admin = parse_listen(
        str(admin_value or SETTING["admin_listen"].default), admin_source, "admin_listen", unix=True
    )
    if admin[1] != 0 and admin in listen:
        raise ConfigError(
            admin_source,
            "admin_listen",
            "is also a guest address",
            "give the control plane its own address",
        )

    mode_value, mode_source = pick("caller_mode")
    caller_mode = _choice("caller_mode", mode_value or "single", mode_source)
    level_value, level_source = pick("log_level")
    log_level = _choice("log_level", level_value or "info", level_source)
    watch_value, watch_source = pick("watch")
    watch = (
        _choice("watch", watch_value if watch_value is not None else "false", watch_source)
        == "true"
    )

    state_value, _ = pick("state_dir")
    state_dir = Path(str(state_value)).expanduser() if state_value else default_state_dir()
    store_value, _ = pick("store")
    store = str(store_value or "sqlite:")
    fleet_value, _ = pick("fleet")
    fleet_file = Path(str(fleet_value)).expanduser() if fleet_value else None
    if watch and fleet_file is None:
        raise ConfigError(
            watch_source, "watch", "there is no fleet file to watch", "give --fleet FILE"
        )

    ready_value, ready_source = pick("ready_file")
    ready_file = Path(str(ready_value)).expanduser() if ready_value else None
    # Checked before anything listens: a missing directory would fail only once serving.
    if ready_file is not None and not ready_file.parent.is_dir():
        raise ConfigError(
            ready_source,
            "ready_file",
            f"{ready_file.parent} is not a directory",
            "create it, or give a path in an existing directory",
        )

    public_value, public_source = pick("public_url")
    public_url = str(public_value or "").rstrip("/")
    if public_url and not public_url.startswith(("http://", "https://")):
        raise ConfigError(
            public_source,
            "public_url",
            f"'{public_url}' is not a URL",
            "write http(s)://HOST[:PORT]",
        )
    digest_value, digest_source = pick("attested_digest")
    attested_digest = _choice("attested_digest", digest_value or "azure", digest_source)
    issuer_value, issuer_source = pick("issuer")
    issuer = str(issuer_value or "local")
    if issuer not in ("local", "azure") and not issuer.startswith(("http://", "https://")):
        raise ConfigError(
            issuer_source,
            "issuer",
            f"'{issuer}' is not allowed",
            "use local, azure or an http(s) URL",
        )
    token_lifetime = int(_number("token_lifetime", *pick("token_lifetime"), 600, 7 * 86400))
    resources_value, _ = pick("token_resources")
    if isinstance(resources_value, str):
        resources_value = [resources_value]
    resources = tuple(str(r) for r in resources_value or () if str(r).strip())

    clock_value, clock_source = pick("clock")
    clock = _choice("clock", clock_value or "real", clock_source)
    time_scale = _number("time_scale", *pick("time_scale"), 0.001, 100000)
    terminate_notice = int(_number("terminate_notice", *pick("terminate_notice"), 300, 900))

    first_call_delay = _number("events_first_call_delay", *pick("events_first_call_delay"), 0, 120)

    rate_value, rate_source = pick("rate_limit")
    # on/off as words, or as YAML reads an unquoted on/off (true/false).
    switch = str(rate_value).lower()
    if switch in ("off", "false"):
        limits = OFF
    else:
        given = None if switch in ("on", "true") else rate_value  # None: the default, 5
        try:
            rate = _number("rate_limit", given, rate_source, 0, 100000)
        except ConfigError:
            raise ConfigError(
                rate_source,
                "rate_limit",
                f"'{rate_value}' is not allowed",
                "give on (5 a second, as on Azure), off, or a number from 0 to 100000",
            ) from None
        limits = (
            OFF
            if rate == 0
            else Limits(
                rate=rate,
                identity_rate=_number(
                    "identity_rate_limit", *pick("identity_rate_limit"), 0, 100000
                ),
                identity_concurrency=int(
                    _number("identity_concurrency", *pick("identity_concurrency"), 0, 10000)
                ),
            )
        )

    request_timeout = _number("request_timeout", *pick("request_timeout"), 0.1, 3600)
    per_client = int(
        _number("connections_per_client", *pick("connections_per_client"), 1, MAX_CONNECTIONS)
    )

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
        state_dir=state_dir,
        store=store,
        fleet_file=fleet_file,
        watch=watch,
        log_level=log_level,
        public_url=public_url,
        issuer=issuer,
        attested_digest=attested_digest,
        token_lifetime=token_lifetime,
        token_resources=resources,
        clock=clock,
        time_scale=time_scale,
        terminate_notice=terminate_notice,
        events_first_call_delay=first_call_delay,
        limits=limits,
        access_log=str(pick("access_log")[0] or ""),
        vm=vm,
        vm_declared=vm_patch is not None or caller_mode == "single",
        source=source if config_file else None,
        link_local=link_local,
        request_timeout=request_timeout,
        connections_per_client=per_client,
        ready_file=ready_file,
    )
