"""The ``azimds`` command. Each module adds its commands to the one group."""

from azimds.cli import ca, events, faults, get, identity, logs, run, serve, status, vm  # noqa: F401 (they register their commands)
from azimds.cli.common import main

__all__ = ["main"]
