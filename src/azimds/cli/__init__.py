"""The ``azimds`` command. Each module adds its commands to the one group."""

import click

from azimds.cli import ca, events, faults, get, identity, logs, run, serve, status, vm  # noqa: F401 (they register their commands)
from azimds.cli.common import main, options_anywhere

for _group in main.commands.values():
    if isinstance(_group, click.Group):
        options_anywhere(_group)

__all__ = ["main"]
