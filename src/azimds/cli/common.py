"""The ``azimds`` command group, and what the control-plane commands share."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml

from azimds import __version__
from azimds.admin.client import AdminClient, AdminError
from azimds.host import state

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds_of(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` -> seconds."""
    number, unit = (text[:-1], text[-1]) if text and text[-1] in UNITS else (text, "s")
    try:
        value = float(number)
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a duration such as 90, 15m or 2h") from None
    if value < 0:
        raise click.BadParameter("a duration is 0 or more")
    return value * UNITS[unit]


class _Group(click.Group):
    """The ``azimds`` group: a refusal of the control plane is the command's error, printed
    as ``Error: STATUS CODE: MESSAGE (FIELD)``, exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AdminError as exc:
            hint = ""
            if exc.status == 401:
                hint = (
                    ". The token is --token, AZIMDS_ADMIN_TOKEN, or the node's admin-token file:"
                    f" {state_dir_of(ctx) / 'admin-token'} here (--state-dir names another)"
                )
            raise click.ClickException(f"{exc}{hint}") from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="azimds")
def main() -> None:
    """azimds: the Azure Instance Metadata Service (IMDS), implemented in Python.

    Serves what a VM on Azure reaches at http://169.254.169.254/metadata, byte for byte,
    so that software written for Azure VMs runs and can be tested anywhere.

    Start with `azimds serve`, then ask it what any Azure VM would ask IMDS. The other
    commands drive a running node: its VMs, their identities, its signing keys.
    """


def state_dir_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """The option that finds a running node by its state directory."""
    return click.option(
        "--state-dir",
        type=click.Path(path_type=Path),
        help="The node's state directory (where `azimds serve` wrote admin.json and "
        "admin-token). [env: AZIMDS_STATE_DIR]",
    )(command)


def control_plane_options(group: Callable[..., Any]) -> Callable[..., Any]:
    """The options that find a running node: its state directory, or URL and token."""
    group = click.option(
        "--token", envvar="AZIMDS_ADMIN_TOKEN", help="The bearer token. [env: AZIMDS_ADMIN_TOKEN]"
    )(group)
    group = click.option(
        "--admin",
        metavar="URL",
        envvar="AZIMDS_ADMIN_URL",
        help="The control plane's URL (http://HOST:PORT or unix:PATH). [env: AZIMDS_ADMIN_URL]",
    )(group)
    return state_dir_option(group)


NODE_OPTIONS = ("state_dir", "admin", "token")


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None and param.name:
        ctx.meta.setdefault(f"azimds.{param.name}", value)


def options_anywhere(group: click.Group) -> None:
    """Let the node options of ``group`` (``--state-dir``, ``--admin``, ``--token``) come
    after its subcommand too, as in ``azimds vm list --state-dir DIR``: every subcommand
    gets a copy, which hands its value to ``_options`` through the context's meta."""
    shared = [p for p in group.params if p.name in NODE_OPTIONS]
    for command in group.commands.values():
        names = {p.name for p in command.params}
        for option in shared:
            if option.name not in names and isinstance(option, click.Option):
                copy = click.Option(
                    option.opts,
                    type=option.type,
                    metavar=option.metavar,
                    help=option.help,
                    expose_value=False,
                    callback=_remember,
                )
                command.params.append(copy)


def _options(ctx: click.Context) -> dict[str, Any]:
    """The control-plane options given to the command or any enclosing group."""
    found: dict[str, Any] = {
        key: ctx.meta[f"azimds.{key}"] for key in NODE_OPTIONS if f"azimds.{key}" in ctx.meta
    }
    context: click.Context | None = ctx
    while context is not None:
        for key in NODE_OPTIONS:
            if found.get(key) is None and context.params.get(key) is not None:
                found[key] = context.params[key]
        context = context.parent
    return found


def state_dir_of(ctx: click.Context) -> Path:
    given = _options(ctx).get("state_dir") or os.environ.get("AZIMDS_STATE_DIR")
    return Path(given) if given else state.default_state_dir()


def node_address(ctx: click.Context) -> dict[str, Any]:
    """What `azimds serve` wrote into the state directory about itself."""
    where = state_dir_of(ctx)
    try:
        return state.read_admin(where)
    except (OSError, ValueError, KeyError) as exc:
        raise click.ClickException(
            f"no running azimds found in {where} ({exc}). Start `azimds serve`, or give "
            "--state-dir, or --admin URL and --token"
        ) from exc


def local_guest_url(ctx: click.Context) -> str | None:
    """The first guest-plane URL of the node in the state directory, or None when no node
    wrote one there. A --state-dir given on the command line must hold a node (the error
    says so); the default one, or AZIMDS_STATE_DIR's, may hold none."""
    try:
        guest = node_address(ctx)["guest"]
    except click.ClickException:
        if _options(ctx).get("state_dir") is not None:
            raise
        return None
    return str(guest[0]) if guest else None


def client(ctx: click.Context) -> AdminClient:
    """The control plane of the node the options (or the state directory) name."""
    options = _options(ctx)
    url, token = options.get("admin"), options.get("token")
    if not url or not token:
        found = node_address(ctx)
        url, token = url or found["url"], token or found["token"]
    return AdminClient(str(url), str(token))


def key_command(
    group: click.Group,
    name: str,
    metavar: str,
    help: str,
    act: Callable[[AdminClient, str], object],
    done: str,
) -> None:
    """Add ``group name KEY``: do ``act`` to one VM or event, then say ``done``
    (``{}`` is the key), as ``azimds vm rm web-1`` does."""

    @group.command(name, help=help)
    @click.argument("key", metavar=metavar)
    @click.pass_context
    def command(ctx: click.Context, key: str) -> None:
        act(client(ctx), key)
        click.echo(done.format(key))


# A listing's --json: the control plane's answer as it came, instead of a table.
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def show(answer: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    """Print a control-plane answer: as JSON with ``--json``, else as ``render`` writes it."""
    click.echo(json.dumps(answer, indent=2) if as_json else render(answer))


def read_document(source: str) -> Any:
    """A YAML or JSON document from a file, or stdin for ``-``."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text("utf-8")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{source} is not YAML or JSON: {exc}") from exc


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )
