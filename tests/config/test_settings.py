"""Configuration: bad files stop start-up with the file, the field and the fix."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from azimds.config.settings import SETTING, ConfigError, load, read_fleet_file
from azimds.fleet.limits import OFF
from azimds.guest.callers import MODES


def write(tmp_path: Path, text: str, name: str = "azimds.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "field", "fix"),
    [
        ("lisen: 127.0.0.1:1\n", "lisen", "did you mean 'listen'? known settings are access_log,"),
        ("zzz: 1\n", "zzz", "Fix: known settings are access_log, admin_listen"),
        ("rate_limit: fast\n", "rate_limit", "give on (5 a second, as on Azure), off, or a number"),
        ("listen: nonsense\n", "listen", "HOST:PORT"),
        ("listen: 127.0.0.1:70000\n", "listen", "0 to 65535"),
        ("listen: []\n", "listen", 'write listen: ["127.0.0.1:16925"]'),
        ("log_level: loud\n", "log_level", "debug, info, warning, error"),
        ("time_scale: 0\n", "time_scale", "give a number from 0.001 to 100000"),
        ("token_lifetime: soon\n", "token_lifetime", "give a number from 600 to 604800"),
        ("terminate_notice: 1000\n", "terminate_notice", "give a number from 300 to 900"),
        ("events_first_call_delay: -1\n", "events_first_call_delay", "from 0 to 120"),
        ("clock: sundial\n", "clock", "use real, manual"),
        ("issuer: sts\n", "issuer", "use local, azure or an http(s) URL"),
        ("vm: [1]\n", "vm", "compute: and network:"),
        (
            "vm: {compute: {platformFaultDomian: 1}}\n",
            "vm.compute.platformFaultDomian",
            "did you mean 'platformFaultDomain'?",
        ),
        ("vm: {compute: {zone: [1]}}\n", "vm.compute.zone", 'such as ""'),
        ("vm: {network: {interface: {ipv4: {}}}}\n", "vm.network.interface", "write a list"),
        (
            "vm: {network: {interface: [{ipv4: {ipAddress: [{privateIp: 1}]}}]}}\n",
            "vm.network.interface[0].ipv4.ipAddress[0].privateIp",
            "did you mean 'privateIpAddress'?",
        ),
        (
            "vm: {extended: {compute: {hasCustomData: maybe}}}\n",
            "vm.extended.compute.hasCustomData",
            "true or false",
        ),
        ("vm: {disks: []}\n", "vm.disks", "a VM has compute, network, extended, reprovisionData"),
        ("vm: {compute: {tags: 3}}\n", "vm.compute.tags", "name:value"),
        ("[1, 2]\n", "(top level)", "listen: and vm:"),
        ("vm: {compute: {name: [}\n", "line 1, column 23", "correct the syntax"),
    ],
)  # fmt: skip
def test_bad_file_names_file_field_and_fix(tmp_path: Path, text: str, field: str, fix: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path, environ={})
    message = str(caught.value)
    assert message.startswith(f"invalid configuration in {path}: {field}: ")
    assert "Fix: " in message and fix in message


def test_bad_json_file(tmp_path: Path) -> None:
    path = write(tmp_path, '{"vm": {"compute": {"name": }}}', "vm.json")
    with pytest.raises(ConfigError, match=r"vm\.json: line 1, column 29: Expecting value\."):
        load(path, environ={})


@pytest.mark.parametrize(
    "read", [lambda path: load(path, environ={}), read_fleet_file], ids=["config", "fleet"]
)
def test_a_yaml_syntax_error_names_the_file_and_line(
    tmp_path: Path, read: Callable[[Path], object]
) -> None:
    """Not YAML's own text, which names "<unicode string>" (issue 20)."""
    path = write(tmp_path, "vms:\n  - compute:\n      name: a: b\n")
    with pytest.raises(ConfigError) as caught:
        read(path)
    assert str(caught.value) == (
        f"invalid configuration in {path}: line 3, column 14: mapping values are not allowed "
        "here. Fix: correct the syntax"
    )
    assert "unicode string" not in str(caught.value)


def test_a_yaml_error_with_a_context_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "listen: [127.0.0.1:1\nwatch: true\n")
    with pytest.raises(ConfigError) as caught:
        load(path, environ={})
    assert caught.value.where == "line 2, column 6"
    assert caught.value.problem == (
        "expected ',' or ']', but got ':' (while parsing a flow sequence from line 1)"
    )


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load(tmp_path / "nope.yaml", environ={})


def test_layering_flags_over_environment_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, "listen: [127.0.0.1:1111, '[::1]:2222']\nlog_level: warning\n")
    assert load(path, environ={}).listen == (("127.0.0.1", 1111), ("::1", 2222))
    env = {"AZIMDS_LISTEN": "127.0.0.2:3333,127.0.0.3:4444", "AZIMDS_LOG_LEVEL": "debug"}
    config = load(path, environ=env)
    assert config.listen == (("127.0.0.2", 3333), ("127.0.0.3", 4444))
    assert config.log_level == "debug"
    config = load(path, {"listen": ("0.0.0.0:5555",), "log_level": "error"}, environ=env)
    assert (config.listen, config.log_level) == ((("0.0.0.0", 5555),), "error")


@pytest.mark.parametrize(
    ("flag", "env", "file", "rate"),
    [
        (None, None, None, 5.0),
        ("on", None, None, 5.0),
        ("ON", None, None, 5.0),
        (None, "on", None, 5.0),
        (None, None, "on", 5.0),  # YAML reads an unquoted on as true
        (None, None, "'on'", 5.0),
        ("7", None, None, 7.0),
        (None, None, "2.5", 2.5),
        ("off", None, None, None),
        ("0", None, None, None),
        (None, "off", None, None),
        (None, None, "off", None),  # YAML: false
        (None, None, "0", None),
    ],
)
def test_rate_limit_on_off_or_a_number(
    tmp_path: Path, flag: str | None, env: str | None, file: str | None, rate: float | None
) -> None:
    path = write(tmp_path, f"rate_limit: {file}\n" if file is not None else "")
    config = load(
        path, {"rate_limit": flag}, environ={"AZIMDS_RATE_LIMIT": env} if env is not None else {}
    )
    if rate is None:
        assert config.limits == OFF
    else:
        assert (config.limits.rate, config.limits.identity_rate) == (rate, 20.0)


def test_defaults_without_a_file() -> None:
    config = load(None, environ={})
    assert config.listen == (("127.0.0.1", 16925),)
    assert config.vm.vm_id == "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
    assert config.vm.name == "examplevmname"


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load(write(tmp_path, ""), environ={}).vm == load(None, environ={}).vm


def test_null_in_the_vm_patch_falls_back_to_empty(tmp_path: Path) -> None:
    config = load(write(tmp_path, "vm: {compute: {zone: null, plan: null}}\n"), environ={})
    compute = config.vm.document["compute"]
    assert compute["zone"] == ""
    assert compute["plan"] == {"name": "", "product": "", "publisher": ""}


def test_serve_refuses_a_bad_file_and_changes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, "vm: {compute: {vmid: x}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "azimds", "serve", "--config", str(path), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert (
        f"Error: invalid configuration in {path}: vm.compute.vmid: unknown field." in result.stderr
    )
    assert "did you mean 'vmId'?" in result.stderr


def test_caller_mode_choices_are_the_guest_planes_modes() -> None:
    """Configuration names the modes without importing the guest plane; this keeps them in step."""
    assert SETTING["caller_mode"].choices == tuple(MODES)
