"""Fault rules declared in the fleet file: applied with the VMs, refused with the field named."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.admin.support import admin
from tests.conftest import ServerThread
from tests.http import get

FLEET = """
vms:
  - compute: {{name: web-1, vmId: 5d33a910-a7a0-4443-9f01-6a807801b29b}}
faults:
{faults}
"""
LEAF = "/metadata/instance/compute/name?api-version=2021-02-01&format=text"


def write(path: Path, faults: str) -> None:
    path.write_text(FLEET.format(faults=faults))


def test_declared_rules_fire_and_keep_their_id_across_restarts(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    # Single-VM mode serves the configured VM; the file names it, found in the same write.
    write(fleet, "  - {vm: examplevmname, path: /metadata/instance, actions: [503], count: 1}")
    state = tmp_path / "state"
    node = ServerThread("--fleet", str(fleet), state_dir=state)
    try:
        (rule,) = admin(node).faults()
        assert rule["vm"] == "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
        assert rule["source"].startswith("fleet-file:")
        assert [get(node.port, LEAF).status for _ in range(2)] == [503, 200]
    finally:
        node.stop()
    node = ServerThread("--fleet", str(fleet), state_dir=state)
    try:
        (again,) = admin(node).faults()
        assert again["id"] == rule["id"]
        assert again["fired"] == 0  # firings are counted per node run: the script starts again
    finally:
        node.stop()


def test_a_watched_file_replaces_its_rules(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    write(fleet, "  - {actions: [410]}")
    node = ServerThread("--fleet", str(fleet), "--watch", "--store", "memory:")
    try:
        added = admin(node).add_fault({"actions": [500], "path": "/metadata/versions"})
        assert get(node.port, LEAF).status == 410
        write(fleet, "  - {actions: [429], retryAfter: 3}")
        deadline = time.monotonic() + 10
        while get(node.port, LEAF).status != 429:
            assert time.monotonic() < deadline, "the changed fleet file was not applied"
            time.sleep(0.1)
        rules = admin(node).faults()
        assert [r["actions"] for r in rules] == [
            [{"status": 500}],
            [{"status": 429, "retryAfter": 3}],
        ]
        assert rules[0]["id"] == added["id"]  # the control plane's rule is left alone
    finally:
        node.stop()


def test_a_bad_rule_stops_start_up_naming_the_file_and_field(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    write(fleet, "  - {actions: [410]}\n  - {actions: [418]}")
    serve = [sys.executable, "-m", "azimds", "serve", "--state-dir", str(tmp_path / "s")]
    result = subprocess.run(
        [*serve, "--fleet", str(fleet), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert str(fleet) in result.stderr
    assert "faults[1].actions[0].status" in result.stderr
    assert "status 418 is not one of 410, 429, 500, 503" in result.stderr
