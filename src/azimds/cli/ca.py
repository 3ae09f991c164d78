"""``azimds ca export DIR``: the attestation CA's certificates, for relying parties."""

from __future__ import annotations

from pathlib import Path

import click

from azimds.admin.client import AdminClient, AdminError
from azimds.cli.common import client, control_plane_options, main


@main.group()
@control_plane_options
def ca(state_dir: Path | None, admin: str | None, token: str | None) -> None:
    """The CA that signs attested documents (root -> intermediate -> per-location leaf)."""


def _fetch(admin: AdminClient, path: str) -> bytes:
    try:
        status, body = admin.send("GET", path)
    except AdminError as exc:
        raise click.ClickException(str(exc)) from exc
    if status != 200:
        raise click.ClickException(f"{path}: {status} {body.decode('utf-8', 'replace')}")
    return body


@ca.command("export")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.pass_context
def ca_export(ctx: click.Context, directory: Path) -> None:
    """Write root.pem, root.der, intermediate.pem and intermediate.der into DIRECTORY.

    Give root.pem to whatever verifies attested documents (`openssl verify -CAfile
    root.pem -untrusted intermediate.pem signer.pem`).
    """
    admin = client(ctx)
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("root", "intermediate"):
        (directory / f"{name}.pem").write_bytes(_fetch(admin, f"/attestation/{name}.pem"))
        (directory / f"{name}.der").write_bytes(_fetch(admin, f"/attestation/{name}.cer"))
    click.echo(f"wrote root.pem, root.der, intermediate.pem, intermediate.der to {directory}")
