"""The ``azimds`` command."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
import uvloop

from azimds import __version__
from azimds.config import SETTINGS, Config, ConfigError, load
from azimds.defaults import SDK_ENDPOINT_ENV
from azimds.server import ListenError

log = logging.getLogger("azimds")

_SETTING = {s.name: s for s in SETTINGS}


def _url(host: str, port: int) -> str:
    host_part = f"[{host}]" if ":" in host else host
    return f"http://{host_part}" + ("" if port == 80 else f":{port}")


def _announce(config: Config, addresses: list[tuple[str, int]]) -> None:
    vm = config.vm
    first = _url(*addresses[0])
    lines = [f"azimds {__version__}: Azure IMDS for VM '{vm.name}' (vmId {vm.vm_id})"]
    lines += [f"  listening on {_url(host, port)}/metadata" for host, port in addresses]
    lines += [
        "  try:",
        f'    curl -s -H Metadata:true "{first}/metadata/instance?api-version=2021-02-01"',
        "  point Azure SDKs (azure-identity, msal) here with:",
        f"    export {SDK_ENDPOINT_ENV}={first}",
        "  Ctrl+C stops.",
    ]
    click.echo("\n".join(lines))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="azimds")
def main() -> None:
    """azimds: the Azure Instance Metadata Service (IMDS), implemented in Python.

    Serves what a VM on Azure reaches at http://169.254.169.254/metadata, byte for byte,
    so that software written for Azure VMs runs and can be tested anywhere.

    Start with `azimds serve`, then ask it what any Azure VM would ask IMDS.
    """


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="AZIMDS_CONFIG",
    help="YAML or JSON file describing the VM (vm:) and settings; see docs/configuration.md. "
    "[env: AZIMDS_CONFIG]",
)
@click.option(
    "--listen",
    multiple=True,
    metavar="HOST:PORT",
    help=f"{_SETTING['listen'].help} [default: {_SETTING['listen'].default}; env: AZIMDS_LISTEN]",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help=f"{_SETTING['log_level'].help} [default: info; env: AZIMDS_LOG_LEVEL]",
)
def serve(config_file: Path | None, listen: tuple[str, ...], log_level: str | None) -> None:
    """Serve the guest plane (the IMDS API) until Ctrl+C or SIGTERM.

    With no configuration the VM is the documentation's example Linux VM, and azimds listens
    on 127.0.0.1:16925. Examples:

    \b
      azimds serve
      azimds serve --config vm.yaml --listen 0.0.0.0:16925
      sudo azimds serve --listen 169.254.169.254:80
    """
    try:
        config = load(config_file, listen, log_level)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from azimds import app  # the composition root, imported only to run

    def ready(addresses: list[tuple[str, int]]) -> None:
        _announce(config, addresses)
        sys.stdout.flush()

    try:
        uvloop.run(app.run(config, on_ready=ready))
    except ListenError as exc:
        raise click.ClickException(str(exc)) from exc
    log.info("stopped")
