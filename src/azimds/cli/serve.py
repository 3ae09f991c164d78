"""``azimds serve``: run a node."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click
import uvloop

from azimds import __version__
from azimds.cli.common import main
from azimds.client.protocol import SDK_ENDPOINT_ENV
from azimds.config.settings import SETTINGS, Config, ConfigError, Setting, effective, load
from azimds.host import link_local, state
from azimds.host.state import StateDirInUse
from azimds.serving.listeners import ListenError
from azimds.store import StoreError
from azimds.store.base import redact

log = logging.getLogger("azimds")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The banner's names of the WireServer's listeners, by category (`app.Ready.wireserver`).
WIRE_NAMES = {"wireserver": "WireServer", "hostplugin": "host plugin"}


def _url(host: str, port: int) -> str:
    host_part = f"[{host}]" if ":" in host else host
    return f"http://{host_part}" + ("" if port == 80 else f":{port}")


def _announce(config: Config, ready: Any) -> None:
    fleet = ready.fleet
    first = _url(*ready.guest[0])
    if config.caller_mode == "single" and fleet.default_vm is not None:
        vm = fleet.default_vm
        serving = f"VM '{vm.name}' (vmId {vm.vm_id}) to every caller"
    else:
        serving = f"{len(fleet.vms)} VM(s), each to its own private address ({config.caller_mode})"
    lines = [f"azimds {__version__}: Azure IMDS serving {serving}"]
    lines += [f"  listening on {_url(host, port)}/metadata" for host, port in ready.guest]
    lines += [
        f"  {WIRE_NAMES[category]} on {_url(*at)}" for category, at in ready.wireserver.items()
    ]
    # In source-ip mode this host is no VM: its own curl would get the unknown caller's 403.
    where = "" if config.caller_mode == "single" else " from a VM (any other caller gets 403)"
    lines += [
        f"  control plane {ready.admin} (token in {ready.token_file})",
        f"  store {ready.store} (state in {config.state_dir})",
        f"  try{where}:",
        f'    curl -s -H Metadata:true "{first}/metadata/instance?api-version=2021-02-01"',
        "  point Azure SDKs (azure-identity, msal) here with:",
        f"    export {SDK_ENDPOINT_ENV}={first}",
        "  Ctrl+C stops.",
    ]
    click.echo("\n".join(lines))


def _setting_option(setting: Setting) -> Callable[[Any], Any]:
    name = setting.name
    text = f"{setting.help} [default: {setting.default or 'none'}; env: {setting.env}]"
    if setting.multiple:
        metavar = "HOST:PORT" if name == "listen" else "VALUE"
        return click.option(setting.flag, name, multiple=True, metavar=metavar, help=text)
    if setting.choices == ("true", "false"):
        return click.option(setting.flag, name, is_flag=True, default=None, help=text)
    if setting.choices:
        choice = click.Choice(setting.choices, case_sensitive=False)
        return click.option(setting.flag, name, type=choice, help=text)
    return click.option(setting.flag, name, help=text)


def settings_options(
    settings: tuple[Setting, ...] = SETTINGS,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Click options for ``settings`` (every setting by default), in the table's order."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for setting in reversed(settings):
            command = _setting_option(setting)(command)
        return command

    return decorate


def configure(
    config_file: Path | None, flags: dict[str, Any], environ: Mapping[str, str] | None = None
) -> Config:
    """The node's configuration from ``serve``'s options as click parsed them (the tests
    run nodes in process from the same command lines). Raises ``ConfigError``."""
    return load(config_file, _file_flags(flags), environ)


# `azimds serve`'s and `azimds run`'s --config.
config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="AZIMDS_CONFIG",
    help="YAML or JSON file with settings and the default VM (vm:); see "
    "docs/configuration.md. [env: AZIMDS_CONFIG]",
)


@main.command()
@config_option
@settings_options()
def serve(config_file: Path | None, **flags: Any) -> None:
    """Serve the guest plane (the IMDS API) and the control plane until Ctrl+C or SIGTERM.

    With no configuration the VM is the documentation's example Linux VM, every caller
    is that VM, and azimds listens on 127.0.0.1:16925. Examples:

    \b
      azimds serve
      azimds serve --config vm.yaml --listen 0.0.0.0:16925
      sudo azimds serve --listen 169.254.169.254:80
      sudo azimds serve --link-local     # adds Azure's addresses to lo, removes them on exit
      azimds serve --caller-mode source-ip --fleet fleet.yaml --watch \\
                   --store postgresql://azimds@db/azimds
    """
    try:
        config = configure(config_file, flags)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    logging.basicConfig(level=config.log_level.upper(), format=LOG_FORMAT)
    from azimds.node import app  # the composition root, imported only to run

    def ready(started: app.Ready) -> None:
        _announce(config, started)
        sys.stdout.flush()

    try:
        uvloop.run(app.run(config, on_ready=ready))  # --link-local: app.run adds the addresses
    except (
        ConfigError,
        ListenError,
        StoreError,
        link_local.LinkLocalError,
        StateDirInUse,
    ) as exc:
        raise click.ClickException(str(exc)) from exc
    log.info("stopped")


@main.command("config")
@config_option
@settings_options()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def show_config(config_file: Path | None, as_json: bool, **flags: Any) -> None:
    """Print the configuration `azimds serve` would run with these options: every setting,
    its value and where it comes from (flag, environment variable, config file, defaults).

    Takes serve's options, so a command line can be checked before it is run:

    \b
      azimds config --config vm.yaml --listen 0.0.0.0:16925
      AZIMDS_STORE=postgresql://azimds@db/azimds azimds config --json

    Passwords in the store's URL are shown as ***; the VM of the config file is not shown
    (`azimds vm show` shows it once served).
    """
    try:
        configure(config_file, flags)
        picked = effective(config_file, _file_flags(flags))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    rows = [
        {"setting": s.name, "value": _shown(s, value), "from": source}
        for s, value, source in picked
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(row["setting"]) for row in rows)
    value_width = max(len(str(row["value"])) for row in rows)
    for row in rows:
        click.echo(f"{row['setting']:<{width}}  {row['value']!s:<{value_width}}  {row['from']}")


def _file_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags as ``configure`` hands them to ``load``."""
    if flags.get("watch") is not None:
        return {**flags, "watch": "true" if flags["watch"] else "false"}
    return flags


def _shown(setting: Setting, value: Any) -> Any:
    if value is None and setting.name == "state_dir":
        return str(state.default_state_dir())
    if value is None:
        return "(the control plane's URL)" if setting.name == "public_url" else ""
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return redact(str(value)) if setting.name == "store" else value
