"""The ``azimds`` command: ``serve``, and commands that drive a node's control plane."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import uvloop
import yaml

from azimds import __version__, state
from azimds.admin.client import AdminClient, AdminError
from azimds.config import SETTINGS, Config, ConfigError, Setting, load
from azimds.defaults import SDK_ENDPOINT_ENV
from azimds.server import ListenError
from azimds.store import StoreError

log = logging.getLogger("azimds")


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
        f"  control plane {ready.admin} (token in {ready.token_file})",
        f"  store {ready.store} (state in {config.state_dir})",
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

    Start with `azimds serve`, then ask it what any Azure VM would ask IMDS. The `vm`
    commands change the VMs a running node serves.
    """


def _setting_option(setting: Setting) -> Callable[[Any], Any]:
    name = setting.name
    text = f"{setting.help} [default: {setting.default or 'none'}; env: {setting.env}]"
    if setting.multiple:
        return click.option(setting.flag, name, multiple=True, metavar="HOST:PORT", help=text)
    if setting.choices == ("true", "false"):
        return click.option(setting.flag, name, is_flag=True, default=None, help=text)
    if setting.choices:
        choice = click.Choice(setting.choices, case_sensitive=False)
        return click.option(setting.flag, name, type=choice, help=text)
    return click.option(setting.flag, name, help=text)


def settings_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for setting in reversed(SETTINGS):
        command = _setting_option(setting)(command)
    return command


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="AZIMDS_CONFIG",
    help="YAML or JSON file with settings and the default VM (vm:); see "
    "docs/configuration.md. [env: AZIMDS_CONFIG]",
)
@settings_options
def serve(config_file: Path | None, **flags: Any) -> None:
    """Serve the guest plane (the IMDS API) and the control plane until Ctrl+C or SIGTERM.

    With no configuration the VM is the documentation's example Linux VM, every caller
    is that VM, and azimds listens on 127.0.0.1:16925. Examples:

    \b
      azimds serve
      azimds serve --config vm.yaml --listen 0.0.0.0:16925
      sudo azimds serve --listen 169.254.169.254:80
      azimds serve --caller-mode source-ip --fleet fleet.yaml --watch \\
                   --store postgresql://azimds@db/azimds
    """
    if flags.get("watch") is not None:
        flags["watch"] = "true" if flags["watch"] else "false"
    try:
        config = load(config_file, flags)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from azimds import app  # the composition root, imported only to run

    def ready(started: app.Ready) -> None:
        _announce(config, started)
        sys.stdout.flush()

    try:
        uvloop.run(app.run(config, on_ready=ready))
    except (ConfigError, ListenError, StoreError) as exc:
        raise click.ClickException(str(exc)) from exc
    log.info("stopped")


# --- the control plane's client commands -------------------------------------------------


def _client(ctx: click.Context) -> AdminClient:
    options = ctx.find_root().params | (ctx.parent.params if ctx.parent else {})
    state_dir = Path(
        options.get("state_dir") or os.environ.get("AZIMDS_STATE_DIR") or state.default_state_dir()
    )
    url, token = options.get("admin"), options.get("token")
    if not url or not token:
        try:
            found = state.read_admin(state_dir)
        except (OSError, ValueError, KeyError) as exc:
            raise click.ClickException(
                f"no running azimds found in {state_dir} ({exc}). Start `azimds serve`, or "
                "give --state-dir, or --admin URL and --token"
            ) from exc
        url, token = url or found["url"], token or found["token"]
    return AdminClient(str(url), str(token))


def _call(ctx: click.Context, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    try:
        return _client(ctx).request(method, path, body, **kw)
    except AdminError as exc:
        raise click.ClickException(str(exc)) from exc


def _read_document(source: str) -> Any:
    text = sys.stdin.read() if source == "-" else Path(source).read_text("utf-8")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{source} is not YAML or JSON: {exc}") from exc


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


@main.group()
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    help="The node's state directory "
    "(where `azimds serve` wrote admin.json and admin-token). [env: AZIMDS_STATE_DIR]",
)
@click.option(
    "--admin",
    metavar="URL",
    envvar="AZIMDS_ADMIN_URL",
    help="The control plane's URL (http://HOST:PORT or unix:PATH). [env: AZIMDS_ADMIN_URL]",
)
@click.option(
    "--token", envvar="AZIMDS_ADMIN_TOKEN", help="The bearer token. [env: AZIMDS_ADMIN_TOKEN]"
)
def vm(state_dir: Path | None, admin: str | None, token: str | None) -> None:
    """List, show, add, change and remove the VMs a running node serves.

    The node is found through its state directory; changes are stored and served by every
    node sharing the store. Examples:

    \b
      azimds vm list
      azimds vm add --name web-1 --ip 10.0.0.4
      azimds vm set web-1 compute.location=westeurope compute.zone=2
      azimds vm patch web-1 patch.yaml
      azimds vm rm web-1
    """


@vm.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def vm_list(ctx: click.Context, as_json: bool) -> None:
    """List the VMs: name, vmId, private addresses, location, size."""
    answer = _call(ctx, "GET", "/v1/vms")
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    rows = [
        [v["name"], v["vmId"], ",".join(v["addresses"]) or "-", v["location"], v["vmSize"]]
        for v in answer["vms"]
    ]
    click.echo(_table(rows, ["NAME", "VMID", "ADDRESSES", "LOCATION", "SIZE"]))


@vm.command("show")
@click.argument("vm_key", metavar="VM")
@click.pass_context
def vm_show(ctx: click.Context, vm_key: str) -> None:
    """Print a VM's complete description (JSON), by vmId or name."""
    click.echo(json.dumps(_call(ctx, "GET", f"/v1/vms/{vm_key}"), indent=2))


def _assignments(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``compute.location=westus`` ... -> a nested merge patch; ``PATH=null`` removes."""
    patch: dict[str, Any] = {}
    for pair in pairs:
        path, sep, value = pair.partition("=")
        if not sep or not path:
            raise click.BadParameter(f"'{pair}' is not PATH=VALUE (e.g. compute.location=westus)")
        node = patch
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise click.BadParameter(f"'{path}' sets a value inside another value")
        node[keys[-1]] = None if value == "null" else value
    return patch


@vm.command("add")
@click.argument("source", required=False, metavar="[FILE|-]")
@click.option("--name", help="compute.name of the new VM.")
@click.option(
    "--ip", "ips", multiple=True, help="A private IPv4 address of its first NIC (repeatable)."
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="PATH=VALUE",
    help="Any field, e.g. compute.location=westus.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the new VM's description.")
@click.pass_context
def vm_add(
    ctx: click.Context,
    source: str | None,
    name: str | None,
    ips: tuple[str, ...],
    sets: tuple[str, ...],
    as_json: bool,
) -> None:
    """Add a VM, from a YAML/JSON description (FILE, or - for stdin) and/or options.

    Fields not given are empty, as IMDS shows missing values; the vmId is generated unless
    given.
    """
    description: dict[str, Any] = _read_document(source) if source else {}
    if not isinstance(description, dict):
        raise click.ClickException("a VM description is a mapping with compute: and network:")
    from azimds.fleet.vm import patch_description

    patch = _assignments(sets)
    if name:
        patch.setdefault("compute", {})["name"] = name
    if ips:
        addresses = [{"privateIpAddress": ip, "publicIpAddress": ""} for ip in ips]
        patch.setdefault("network", {})["interface"] = [{"ipv4": {"ipAddress": addresses}}]
    answer = _call(ctx, "POST", "/v1/vms", patch_description(description, patch))
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    else:
        click.echo(f"added VM {answer['compute']['name']} (vmId {answer['compute']['vmId']})")


@vm.command("set")
@click.argument("vm_key", metavar="VM")
@click.argument("assignments", nargs=-1, required=True, metavar="PATH=VALUE...")
@click.pass_context
def vm_set(ctx: click.Context, vm_key: str, assignments: tuple[str, ...]) -> None:
    """Set fields of a VM: `compute.location=westus`; `PATH=null` empties a field."""
    _merge_patch(ctx, vm_key, _assignments(assignments))


@vm.command("patch")
@click.argument("vm_key", metavar="VM")
@click.argument("source", metavar="FILE|-")
@click.pass_context
def vm_patch(ctx: click.Context, vm_key: str, source: str) -> None:
    """Apply a JSON Merge Patch (RFC 7396), written in YAML or JSON, to a VM."""
    _merge_patch(ctx, vm_key, _read_document(source))


def _merge_patch(ctx: click.Context, vm_key: str, patch: Any) -> None:
    content_type = "application/merge-patch+json"
    answer = _call(ctx, "PATCH", f"/v1/vms/{vm_key}", patch, content_type=content_type)
    click.echo(f"changed VM {answer['compute']['name']} (vmId {answer['compute']['vmId']})")


@vm.command("rm")
@click.argument("vm_key", metavar="VM")
@click.pass_context
def vm_rm(ctx: click.Context, vm_key: str) -> None:
    """Remove a VM (by vmId or name)."""
    _call(ctx, "DELETE", f"/v1/vms/{vm_key}")
    click.echo(f"removed VM {vm_key}")
