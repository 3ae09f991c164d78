"""Configuration: the settings table, config files, and their validation.

Layering, highest first: command-line flags, environment variables, the config file, defaults.
Every setting is declared once in ``SETTINGS``; the CLI's options and the configuration
reference in ``docs/configuration.md`` follow from it (a test keeps the docs in step).

A bad file stops start-up with a ``ConfigError`` naming the file, the field and the fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from azimds.defaults import DEFAULT_HOST, DEFAULT_PORT
from azimds.fleet.schema import DocumentError
from azimds.fleet.vm import VM, vm_from_patch


class ConfigError(Exception):
    """Configuration that cannot be used; the message says where and how to fix it."""

    def __init__(self, source: str, where: str, problem: str, fix: str) -> None:
        super().__init__(f"invalid configuration in {source}: {where}: {problem}. Fix: {fix}")
        self.source = source
        self.where = where


@dataclass(frozen=True, slots=True)
class Setting:
    name: str  # key in the config file
    flag: str  # command-line option
    env: str  # environment variable
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "listen",
        "--listen",
        "AZIMDS_LISTEN",
        f"{DEFAULT_HOST}:{DEFAULT_PORT}",
        "Address the guest plane listens on, HOST:PORT ([v6]:PORT for IPv6). Repeat the flag, "
        "list it in the file, or separate with commas in the variable. 169.254.169.254:80 works "
        "where that address exists on this host. Port 0 picks a free port.",
    ),
    Setting(
        "log_level",
        "--log-level",
        "AZIMDS_LOG_LEVEL",
        "info",
        "How much azimds logs: debug, info, warning or error.",
    ),
)
SETTING_NAMES = {s.name for s in SETTINGS}
FILE_KEYS = (*sorted(SETTING_NAMES), "vm")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class Config:
    listen: tuple[tuple[str, int], ...]
    log_level: str
    vm: VM
    source: str | None  # the config file, if any


def parse_listen(text: str, source: str, where: str = "listen") -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` -> (host, port)."""
    host, sep, port_text = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    fix = "write HOST:PORT, e.g. 127.0.0.1:16925 or [::1]:16925 or 169.254.169.254:80"
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(source, where, f"'{text}' is not HOST:PORT", fix)
    port = int(port_text)
    if port > 65535:
        raise ConfigError(
            source, where, f"port {port} is out of range", "use a port from 0 to 65535"
        )
    return host, port


def read_file(path: Path) -> dict[str, Any]:
    """Load a YAML or JSON config file (JSON is YAML, but JSON errors read better as JSON)."""
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
        raise ConfigError(
            source, "(syntax)", str(exc).replace("\n", " "), "correct the syntax"
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            source, "(top level)", "expected a mapping", "write keys such as listen: and vm:"
        )
    for key in data:
        if key not in FILE_KEYS:
            raise ConfigError(
                source, str(key), "unknown setting", "known settings are " + ", ".join(FILE_KEYS)
            )
    return data


def _listen_from_file(value: Any, source: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise ConfigError(
        source,
        "listen",
        "expected HOST:PORT or a list of them",
        'write listen: ["127.0.0.1:16925"]',
    )


def load(
    config_file: Path | None,
    listen: tuple[str, ...] = (),
    log_level: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Combine flags, environment, file and defaults into a validated ``Config``."""
    env = os.environ if environ is None else environ
    data = read_file(config_file) if config_file is not None else {}
    source = str(config_file) if config_file is not None else "defaults"

    if listen:
        listen_texts, listen_source = list(listen), "--listen"
    elif env.get("AZIMDS_LISTEN"):
        listen_texts, listen_source = env["AZIMDS_LISTEN"].split(","), "AZIMDS_LISTEN"
    elif "listen" in data:
        listen_texts, listen_source = _listen_from_file(data["listen"], source), source
    else:
        listen_texts, listen_source = [f"{DEFAULT_HOST}:{DEFAULT_PORT}"], "defaults"
    addresses = tuple(parse_listen(text, listen_source) for text in listen_texts)

    level = log_level or env.get("AZIMDS_LOG_LEVEL") or data.get("log_level") or "info"
    if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
        raise ConfigError(
            source, "log_level", f"'{level}' is not a level", "use " + ", ".join(LOG_LEVELS)
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
        listen=addresses, log_level=level.lower(), vm=vm, source=source if config_file else None
    )
