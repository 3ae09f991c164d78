"""``azimds identity ...``, ``azimds token`` and ``azimds keys ...``: managed identities."""

from __future__ import annotations

import datetime as dt
import http.client
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import click
import jwt

from azimds.admin.client import AdminClient, Identities
from azimds.cli.common import (
    client,
    control_plane_options,
    json_option,
    key_command,
    local_guest_url,
    main,
    show,
    table,
)

TOKEN_API_VERSION = "2018-02-01"  # what azure-identity and msal send


@main.group()
@control_plane_options
def identity(state_dir: Path | None, admin: str | None, token: str | None) -> None:
    """Show and change a VM's managed identities (system- and user-assigned).

    \b
      azimds identity list examplevmname
      azimds identity add examplevmname --name app-identity
      azimds identity add web-1 --client-id 1b0a8f31-... --resource-id /subscriptions/...
      azimds identity rm examplevmname app-identity
      azimds identity disable examplevmname        # the system-assigned one
      azimds identity enable examplevmname
    """


@identity.command("list")
@click.argument("vm_key", metavar="VM")
@json_option
@click.pass_context
def identity_list(ctx: click.Context, vm_key: str, as_json: bool) -> None:
    """List a VM's identities: kind, name, client id, object id, tenant, resource id."""
    show(client(ctx).identities(vm_key), as_json, _identity_table)


def _identity_table(answer: Identities) -> str:
    rows = []
    system = answer["systemAssigned"]
    if system["enabled"]:
        rows.append(
            ["system", "-", system["clientId"], system["objectId"], system["tenantId"], "-"]
        )
    for user in answer["userAssigned"]:
        rows.append(
            [
                "user",
                user["name"],
                user["clientId"],
                user["objectId"],
                user["tenantId"],
                user["resourceId"],
            ]
        )
    return table(rows, ["KIND", "NAME", "CLIENT ID", "OBJECT ID", "TENANT", "RESOURCE ID"])


@identity.command("add")
@click.argument("vm_key", metavar="VM")
@click.option("--name", help="The identity's name (the last part of its resource id).")
@click.option("--client-id", help="Its client (application) id; derived if not given.")
@click.option("--object-id", help="Its object (principal) id; derived if not given.")
@click.option("--resource-id", help="Its ARM resource id; built from the name if not given.")
@click.option("--tenant-id", help="Its tenant; azimds's default tenant if not given.")
@click.pass_context
def identity_add(ctx: click.Context, /, vm_key: str, **given: str | None) -> None:
    """Assign a user-assigned identity to a VM (give at least --name or --client-id)."""
    names = {"client_id": "clientId", "object_id": "objectId", "resource_id": "resourceId"}
    names |= {"tenant_id": "tenantId", "name": "name"}
    spec = {names[key]: value for key, value in given.items() if value}
    if not spec:
        raise click.UsageError("give at least --name or --client-id")
    added = client(ctx).add_identity(vm_key, spec)
    click.echo(f"assigned identity {added['name']} (client id {added['clientId']}) to {vm_key}")


@identity.command("rm")
@click.argument("vm_key", metavar="VM")
@click.argument("identity_key", metavar="IDENTITY")
@click.pass_context
def identity_rm(ctx: click.Context, vm_key: str, identity_key: str) -> None:
    """Unassign a user-assigned identity (by name, client id or object id)."""
    client(ctx).remove_identity(vm_key, identity_key)
    click.echo(f"unassigned identity {identity_key} from {vm_key}")


@identity.command("enable")
@click.argument("vm_key", metavar="VM")
@click.option("--client-id", help="Client id to use; derived from the vmId if not given.")
@click.option("--object-id", help="Object id to use; derived from the vmId if not given.")
@click.option("--tenant-id", help="Tenant; azimds's default tenant if not given.")
@click.pass_context
def identity_enable(
    ctx: click.Context,
    vm_key: str,
    client_id: str | None,
    object_id: str | None,
    tenant_id: str | None,
) -> None:
    """Turn on the VM's system-assigned identity."""
    body = {
        k: v
        for k, v in (("clientId", client_id), ("objectId", object_id), ("tenantId", tenant_id))
        if v
    }
    system = client(ctx).enable_system_identity(vm_key, body)
    click.echo(f"system-assigned identity of {vm_key} on (client id {system['clientId']})")


key_command(
    identity,
    "disable",
    "VM",
    "Turn off the VM's system-assigned identity.",
    AdminClient.disable_system_identity,
    "system-assigned identity of {} off",
)


def _fetch_token(url: str, params: dict[str, str]) -> tuple[int, Any]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(
        parts.hostname or "169.254.169.254", parts.port, timeout=30
    )
    try:
        target = f"/metadata/identity/oauth2/token?{urlencode(params)}"
        connection.request("GET", target, headers={"Metadata": "true"})
        response = connection.getresponse()
        body = response.read()
    except OSError as exc:
        raise click.ClickException(f"cannot reach IMDS at {url}: {exc}") from exc
    finally:
        connection.close()
    try:
        return response.status, json.loads(body)
    except ValueError:
        return response.status, body.decode("utf-8", "replace")


@main.command()
@click.option(
    "--resource", required=True, help="The resource (audience), e.g. https://management.azure.com/"
)
@click.option("--client-id", help="A user-assigned identity's client id.")
@click.option("--object-id", help="A user-assigned identity's object id.")
@click.option("--resource-id", "msi_res_id", help="A user-assigned identity's resource id.")
@click.option("--bypass-cache", is_flag=True, help="Ask for a fresh token.")
@click.option(
    "--url",
    help="The IMDS to ask, e.g. http://169.254.169.254 (default: the node in --state-dir, "
    "else 169.254.169.254).",
)
@click.option("--state-dir", type=click.Path(path_type=Path), help="The node's state directory.")
@click.option("--raw", is_flag=True, help="Print the endpoint's JSON answer as it came.")
def token(
    resource: str,
    client_id: str | None,
    object_id: str | None,
    msi_res_id: str | None,
    bypass_cache: bool,
    url: str | None,
    state_dir: Path | None,
    raw: bool,
) -> None:
    """Get a managed-identity token as a VM would, and print it decoded.

    Asks the guest plane's /metadata/identity/oauth2/token (so in source-ip mode, run it on
    the VM, or from an address that is the VM's). The signature is not checked here; the
    control plane's JWKS verifies it.
    """
    from azimds.client.protocol import DEFAULT_ENDPOINT

    url = url or local_guest_url(click.get_current_context()) or DEFAULT_ENDPOINT
    params = {"api-version": TOKEN_API_VERSION, "resource": resource}
    for key, value in (
        ("client_id", client_id),
        ("object_id", object_id),
        ("msi_res_id", msi_res_id),
    ):
        if value:
            params[key] = value
    if bypass_cache:
        params["bypass_cache"] = "true"
    status, answer = _fetch_token(url, params)
    if status != 200 or not isinstance(answer, dict):
        raise click.ClickException(
            f"{status}: {json.dumps(answer) if isinstance(answer, dict) else answer}"
        )
    if raw:
        click.echo(json.dumps(answer))
        return
    header = jwt.get_unverified_header(answer["access_token"])
    claims = jwt.decode(answer["access_token"], options={"verify_signature": False})
    expires = dt.datetime.fromtimestamp(int(answer["expires_on"]), dt.UTC)
    click.echo(json.dumps({"header": header, "claims": claims}, indent=2))
    left = answer["expires_in"]
    click.echo(
        f"client id {answer['client_id']}, expires {expires:%Y-%m-%d %H:%M:%S} UTC ({left} s)"
    )


@main.group()
@control_plane_options
def keys(state_dir: Path | None, admin: str | None, token: str | None) -> None:
    """The keys that sign managed-identity tokens (shared by every node of a fleet)."""


@keys.command("list")
@json_option
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    """List the signing keys: kid, active, created, and when a rotated-out key retires."""

    def when(stamp: int | None) -> str:
        return (
            "-" if stamp is None else f"{dt.datetime.fromtimestamp(stamp, dt.UTC):%Y-%m-%d %H:%M}"
        )

    def render(signing_keys: list[Any]) -> str:
        rows = [
            [k["kid"], "yes" if k["active"] else "no", when(k["created"]), when(k["retires"])]
            for k in signing_keys
        ]
        return table(rows, ["KID", "ACTIVE", "CREATED", "RETIRES"])

    show(client(ctx).signing_keys(), as_json, render)


@keys.command("rotate")
@click.pass_context
def keys_rotate(ctx: click.Context) -> None:
    """Sign new tokens with a new key; the old one stays published until its tokens expire."""
    answer = client(ctx).rotate_keys()
    overlap = answer["overlap"]
    click.echo(f"new signing key {answer['kid']}; the previous one stays published {overlap} s")
