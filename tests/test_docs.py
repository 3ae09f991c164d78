"""The docs stay true: every setting is documented and every config example loads."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from azimds.config.settings import SETTINGS, Setting, load, read_fleet_file
from azimds.fleet.events import TYPES
from azimds.node.fleet_file import apply_fleet_file
from azimds.store import open_store

REPO = Path(__file__).resolve().parent.parent
CONFIG_DOC = (REPO / "docs" / "configuration.md").read_text()


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_documented(setting: Setting) -> None:
    rows = [line for line in CONFIG_DOC.splitlines() if line.startswith(f"| `{setting.name}`")]
    assert len(rows) == 1
    for word in (setting.flag, setting.env, setting.default or "none"):
        assert (f"`{word}`" if word != "none" else word) in rows[0]


def yaml_examples() -> list[tuple[str, str]]:
    found = []
    for doc in (REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))):
        for block in re.findall(r"```yaml\n(.*?)\s*```", doc.read_text(), re.S):
            found.append((doc.name, block))
    return found


@pytest.mark.parametrize(("doc", "block"), yaml_examples())
def test_config_examples_load(tmp_path: Path, doc: str, block: str) -> None:
    path = tmp_path / "example.yaml"
    path.write_text(textwrap.dedent(block))
    lines = [line.strip() for line in block.splitlines()]
    if any(line.startswith("vms:") for line in lines):
        declared = read_fleet_file(path)
        assert len(declared.vms) >= 2
        # Applied as `azimds serve --fleet` would: every VM and fault rule validated.
        store = open_store("memory:", tmp_path)
        store.transact(lambda txn: apply_fleet_file(txn, path, declared))
    elif lines[0].startswith("jobs:"):  # a GitHub Actions workflow (docs/testing.md)
        assert yaml.safe_load(block)["jobs"]
    elif lines[0].startswith("events:"):  # a scenario: what `azimds events scenario` sends
        entries = yaml.safe_load(block)["events"]
        allowed = {"after", "type", "vms", "notBefore", "duration", "description", "source"}
        assert all(set(entry) <= allowed and entry["type"] in TYPES for entry in entries)
    else:
        assert load(path, environ={}).vm.name == "web-1"
