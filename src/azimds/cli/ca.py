"""``azimds ca export DIR``: the attestation CA's certificates, for relying parties."""

from __future__ import annotations

from pathlib import Path

import click

from azimds.cli.common import client, control_plane_options, main


@main.group()
@control_plane_options
def ca(state_dir: Path | None, admin: str | None, token: str | None) -> None:
    """The CA that signs attested documents (root -> intermediate -> per-location leaf)."""


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
        (directory / f"{name}.pem").write_bytes(admin.ca_certificate(name, "pem"))
        (directory / f"{name}.der").write_bytes(admin.ca_certificate(name, "der"))
    click.echo(f"wrote root.pem, root.der, intermediate.pem, intermediate.der to {directory}")
