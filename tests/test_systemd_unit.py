"""packaging/azimds.service is a unit systemd accepts: ``systemd-analyze verify`` finds nothing
to say about it. Verify needs no running systemd (it works in a container whose PID 1 is not
systemd), but it checks that ExecStart's program exists, so it checks a copy whose ExecStart
is this venv's own ``azimds``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from azimds.config.settings import SETTINGS, load

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "packaging" / "azimds.service"
ENVIRONMENT = REPO / "packaging" / "azimds.env.example"
INSTALLED = "/opt/azimds/venv/bin/azimds"  # where docs/deployment.md installs it


def unit_setting(text: str, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", text, re.M)


def test_the_unit_runs_the_documented_install() -> None:
    text = UNIT.read_text()
    assert [line.split()[0] for line in unit_setting(text, "ExecStart")] == [INSTALLED]
    assert "AZIMDS_STORE" not in text and "postgresql://" not in text  # secrets: env file only
    assert unit_setting(text, "EnvironmentFile") == ["/etc/azimds/azimds.env"]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is not installed: apt-get install systemd, or run .ci/run")
    azimds = Path(sys.executable).parent / "azimds"
    assert azimds.exists(), f"{azimds}: the test venv has no azimds (pip install -e .)"
    copy = tmp_path / "azimds.service"  # verify takes the unit's name from the file's
    copy.write_text(UNIT.read_text().replace(INSTALLED, str(azimds)))
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Unknown keys and unparsable values are warnings only (exit status 0): none is allowed.
    about_the_unit = [line for line in output.splitlines() if "azimds.service" in line]
    assert about_the_unit == [], output


def test_the_example_environment_file_is_a_valid_configuration() -> None:
    """Every variable it sets, or offers commented out, is a setting, with a valid value."""
    lines = [line.removeprefix("#") for line in ENVIRONMENT.read_text().splitlines()]
    environ = dict(line.split("=", 1) for line in lines if line.startswith("AZIMDS_"))
    assert set(environ) <= {setting.env for setting in SETTINGS}
    config = load(None, environ=environ)
    assert (config.link_local, config.caller_mode) == (True, "source-ip")
    assert config.store.startswith("postgresql://")
