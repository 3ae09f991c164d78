"""``azimds vm ...``: the VMs a running node serves."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any, Literal

import click

from azimds.admin.client import AdminClient, Provisioning, VMList
from azimds.cli.common import (
    client,
    control_plane_options,
    json_option,
    key_command,
    main,
    read_document,
    show,
    table,
)
from azimds.fleet.vm import patch_description
from azimds.host.state import write_private


@main.group()
@control_plane_options
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
@json_option
@click.pass_context
def vm_list(ctx: click.Context, as_json: bool) -> None:
    """List the VMs: name, vmId, private addresses, location, size, provisioning state."""
    show(client(ctx).vms(), as_json, _vm_table)


def _vm_table(answer: VMList) -> str:
    rows = [
        [
            v["name"],
            v["vmId"],
            ",".join(v["addresses"]) or "-",
            v["location"],
            v["vmSize"],
            v["provisioning"],
        ]
        for v in answer["vms"]
    ]
    return table(rows, ["NAME", "VMID", "ADDRESSES", "LOCATION", "SIZE", "STATE"])


@vm.command("show")
@click.argument("vm_key", metavar="VM")
@click.pass_context
def vm_show(ctx: click.Context, vm_key: str) -> None:
    """Print a VM's complete description (JSON), by vmId or name."""
    click.echo(json.dumps(client(ctx).vm(vm_key), indent=2))


def _assignments(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``compute.location=westus`` ... -> a nested merge patch; ``PATH=null`` removes;
    ``PATH:=JSON`` sets a JSON value (a list, which a merge patch replaces whole)."""
    patch: dict[str, Any] = {}
    for pair in pairs:
        path, sep, text = pair.partition("=")
        value: Any = text
        if path.endswith(":"):
            path = path[:-1]
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise click.BadParameter(
                    f"'{pair}': the value after := is not JSON ({exc})"
                ) from exc
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
    description: dict[str, Any] = read_document(source) if source else {}
    if not isinstance(description, dict):
        raise click.ClickException("a VM description is a mapping with compute: and network:")
    patch = _assignments(sets)
    if name:
        patch.setdefault("compute", {})["name"] = name
    if ips:
        addresses = [{"privateIpAddress": ip, "publicIpAddress": ""} for ip in ips]
        patch.setdefault("network", {})["interface"] = [{"ipv4": {"ipAddress": addresses}}]
    answer = client(ctx).create_vm(patch_description(description, patch))
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    else:
        click.echo(f"added VM {answer['compute']['name']} (vmId {answer['compute']['vmId']})")


@vm.command("set")
@click.argument("vm_key", metavar="VM")
@click.argument("assignments", nargs=-1, required=True, metavar="PATH=VALUE...")
@click.pass_context
def vm_set(ctx: click.Context, vm_key: str, assignments: tuple[str, ...]) -> None:
    """Set fields of a VM: `compute.location=westus`; `PATH=null` empties a field.

    A list (NICs, their addresses, publicKeys, tagsList) is replaced whole, as JSON Merge
    Patch (RFC 7396) replaces arrays: give the new list as JSON after `:=`, or write the
    change to a file for `azimds vm patch`. Examples:

    \b
      azimds vm set web-1 compute.location=westeurope compute.tags.env=dev
      azimds vm set web-1 'network.interface:=[{"ipv4": {"ipAddress":
          [{"privateIpAddress": "10.0.0.5"}]}}]'
    """
    _merge_patch(ctx, vm_key, _assignments(assignments))


@vm.command("patch")
@click.argument("vm_key", metavar="VM")
@click.argument("source", metavar="FILE|-")
@click.pass_context
def vm_patch(ctx: click.Context, vm_key: str, source: str) -> None:
    """Apply a JSON Merge Patch (RFC 7396), written in YAML or JSON, to a VM."""
    _merge_patch(ctx, vm_key, read_document(source))


def _merge_patch(ctx: click.Context, vm_key: str, patch: Any) -> None:
    answer = client(ctx).patch_vm(vm_key, patch)
    click.echo(f"changed VM {answer['compute']['name']} (vmId {answer['compute']['vmId']})")


WAIT_INTERVAL = 0.25  # seconds between looks at the state


@vm.command("wait")
@click.argument("vm_key", metavar="VM")
@click.option("--ready", is_flag=True, required=True, help="Wait until the VM reports Ready.")
@click.option(
    "--timeout", type=click.FloatRange(min=0), default=600.0, show_default=True,
    help="Seconds to wait.",
)  # fmt: skip
@click.pass_context
def vm_wait(ctx: click.Context, vm_key: str, ready: bool, timeout: float) -> None:
    """Wait until a VM's agents report it provisioned (for CI): exit 0 once Ready, 1 with the
    agent's description when it reports ProvisioningFailed, or when time runs out."""
    admin = client(ctx)
    deadline = time.monotonic() + timeout
    while True:
        state = admin.provisioning(vm_key)
        if state["state"] == "ready":
            click.echo(f"VM {vm_key} is ready (incarnation {state['incarnation']})")
            return
        if state["state"] == "failed":
            failed = [r for r in state["reports"] if r["substatus"] == "ProvisioningFailed"]
            said = failed[-1]["description"] if failed else ""
            raise click.ClickException(
                f"VM {vm_key} failed to provision: {said or '(no description)'}"
            )
        if time.monotonic() >= deadline:
            raise click.ClickException(
                f"VM {vm_key} is not ready after {timeout:g} s (state {state['state']})"
            )
        time.sleep(min(WAIT_INTERVAL, max(0.0, deadline - time.monotonic())))


key_command(
    vm, "rm", "VM", "Remove a VM (by vmId or name).", AdminClient.delete_vm, "removed VM {}"
)


@vm.command("provisioning")
@click.argument("vm_key", metavar="VM")
@json_option
@click.pass_context
def vm_provisioning(ctx: click.Context, vm_key: str, as_json: bool) -> None:
    """Show a VM's provisioning state: its state, the goal state's incarnation, and every
    report its agents sent the WireServer (when, which agent, status, substatus, description)."""
    show(client(ctx).provisioning(vm_key), as_json, _provisioning_text)


def _provisioning_text(state: Provisioning) -> str:
    head = f"{state['state']} (incarnation {state['incarnation']})"
    if not state["reports"]:
        return f"{head}; no reports"
    rows = [
        [
            f"{dt.datetime.fromtimestamp(r['time'], dt.UTC):%Y-%m-%d %H:%M:%S}",
            r["agent"],
            r["status"],
            r["substatus"] or "-",
            r["description"] or "-",
        ]
        for r in state["reports"]
    ]
    return f"{head}\n" + table(rows, ["TIME (UTC)", "AGENT", "STATUS", "SUBSTATUS", "DESCRIPTION"])


key_command(
    vm,
    "reset",
    "VM",
    "Make a VM not provisioned again, with a new goal-state incarnation, as a re-image would:"
    " its agents provision it anew.",
    AdminClient.reset_provisioning,
    "VM {} is not provisioned (a new incarnation)",
)


@vm.command("media")
@click.argument("vm_key", metavar="VM")
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write it (owner-only: it may hold the admin password).",
)
@click.option(
    "--format",
    "form",
    type=click.Choice(["iso", "xml"]),
    default="iso",
    show_default=True,
    help="iso: a CD-ROM image (ISO 9660 + UDF) holding ovf-env.xml; xml: ovf-env.xml alone.",
)
@click.pass_context
def vm_media(ctx: click.Context, vm_key: str, output: Path, form: Literal["iso", "xml"]) -> None:
    """Write a VM's provisioning media, as Azure attaches it at first boot.

    ovf-env.xml carries the admin user, password, SSH keys, host name and custom data that
    cloud-init, WALinuxAgent and azure-init read (docs/provisioning-media.md). Attach the
    image as a CD-ROM, e.g. QEMU's `-drive file=media.iso,media=cdrom,if=ide`.
    """
    write_private(output, client(ctx).media(vm_key, form))
    click.echo(f"wrote {output}")
