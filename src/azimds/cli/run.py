"""``azimds run``: a command in a private network namespace where 169.254.169.254 (and
168.63.129.16, the WireServer) is azimds."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from azimds.cli.common import main
from azimds.cli.serve import config_option, settings_options
from azimds.config.settings import SETTING, SETTINGS, ConfigError, load
from azimds.host import sandbox

# Settings `azimds run` decides itself: the guest and WireServer addresses are the real ones,
# every caller is the default VM, the control plane is a socket in the state directory.
OWN_SETTINGS = frozenset(
    {
        "listen",
        "link_local",
        "admin_listen",
        "wireserver_listen",
        "hostplugin_listen",
        "caller_mode",
        "state_dir",
    }
)
RUN_SETTINGS = tuple(setting for setting in SETTINGS if setting.name not in OWN_SETTINGS)


class RunError(click.ClickException):
    """azimds run itself failed: exit status 125, never one COMMAND could return."""

    exit_code = sandbox.EXIT_FAILED


def serve_args(config_file: Path | None, flags: dict[str, Any]) -> list[str]:
    """The node's settings as `azimds serve` options (its environment is the same as ours),
    first the namespace's own listeners (``sandbox.LISTENERS``)."""
    args = ["--config", str(config_file)] if config_file is not None else []
    for name, address in sandbox.LISTENERS.items():
        args += [SETTING[name].flag, address]
    for setting in RUN_SETTINGS:
        value = flags.get(setting.name)
        if value in (None, (), ""):
            continue
        if setting.multiple:
            for item in value:
                args += [setting.flag, str(item)]
        elif setting.choices == ("true", "false"):
            args.append(setting.flag)
        else:
            args += [setting.flag, str(value)]
    return args


@main.command(context_settings={"allow_interspersed_args": False})
@config_option
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="The node's state directory (database, admin token, admin.sock, azimds.log); give "
    "one to keep state between runs or to reach the control plane from another shell. "
    "[default: a new temporary directory, removed afterwards; AZIMDS_STATE_DIR is not read, "
    "azimds run sets it for COMMAND]",
)
@click.option(
    "--log-file",
    metavar="FILE",
    help="Where azimds's own output (its banner and log) goes: a file, or - for standard "
    "error. It never goes to COMMAND's output. [default: azimds.log in the state directory]",
)
@settings_options(RUN_SETTINGS)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    config_file: Path | None,
    state_dir: Path | None,
    log_file: str | None,
    command: tuple[str, ...],
    **flags: Any,
) -> None:
    """Run COMMAND where http://169.254.169.254 is azimds, as on an Azure VM.

    COMMAND runs in a private network namespace in which 169.254.169.254:80 is azimds,
    so any client (curl, azure-identity, msal, cloud-init, your code) reaches it unmodified;
    168.63.129.16 is its WireServer (port 80) and host GA plugin (port 32526), which
    provisioning agents (cloud-init, waagent, azure-init) report to.
    COMMAND keeps its terminal, environment and user; the namespace has no other network.
    Signals are passed on to COMMAND; azimds stops when COMMAND exits.

    COMMAND gets AZIMDS_STATE_DIR, AZIMDS_ADMIN_URL and AZIMDS_ADMIN_TOKEN, so `azimds vm`,
    `azimds events` and the like drive this node from inside; with --state-dir they do
    from any shell. AZURE_POD_IDENTITY_AUTHORITY_HOST is removed: the real address works.

    Exit status: COMMAND's (128+N when a signal N ended it); 125 when azimds run fails
    (no namespaces, no `ip`, bad configuration), 126/127 when COMMAND cannot be run or
    is not found. Examples:

    \b
      azimds run -- curl -s -H Metadata:true \\
          "http://169.254.169.254/metadata/instance?api-version=2021-02-01"
      azimds run --config vm.yaml -- python app.py
      azimds run --state-dir ./imds -- bash   # another shell: azimds vm --state-dir ./imds list
    """
    # The whole configuration, checked before any namespace exists (the socket path is only
    # parsed here; the node gets the real one).
    fixed = {
        **sandbox.LISTENERS,
        "listen": (sandbox.LISTENERS["listen"],),  # a list of addresses
        "admin_listen": "unix:admin.sock",
    }
    try:
        load(config_file, {**flags, **fixed, "caller_mode": "single"})
    except ConfigError as exc:
        raise RunError(str(exc)) from exc
    request = sandbox.Sandbox(
        command=command,
        serve_args=serve_args(config_file, flags),
        state_dir=state_dir,
        log_file=log_file,
    )
    try:
        code = sandbox.run(request)
    except sandbox.SandboxError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(code)
