"""azimds on the real address, 169.254.169.254:80, inside a private network namespace.

Runs as root (CI does). Where a network namespace cannot be made, this fails loudly: the
point is to show that unmodified clients reach azimds at the address they hard-code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from azimds.config.settings import ConfigError, load

SCRIPT = r"""
set -e
ip link set lo up
ip addr add 169.254.169.254/32 dev lo
"$PYTHON" -m azimds serve --state-dir "$STATE" --listen 169.254.169.254:80 > "$LOG" 2>&1 &
server=$!
# Stopped and waited for, so its log is whole when the test reads it.
trap 'kill $server; wait $server' EXIT
for _ in $(seq 300); do
  curl -s -o /dev/null http://169.254.169.254/ && break
  sleep 0.05
done
# Exactly the documentation's command, proxies bypassed.
curl -s -H Metadata:true --noproxy "*" \
  "http://169.254.169.254/metadata/instance/compute/vmId?api-version=2017-08-01&format=text"
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a network namespace")
def test_documentation_command_against_the_link_local_address(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("unshare (util-linux) and ip (iproute2) are needed for this test")
    log = tmp_path / "serve.log"
    result = subprocess.run(
        ["unshare", "--net", "bash", "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHON": sys.executable, "LOG": str(log), "STATE": str(tmp_path)},
    )
    assert result.returncode == 0, (result.stderr, log.read_text())
    assert result.stdout == "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
    assert "listening on http://169.254.169.254/metadata" in log.read_text()


# `azimds serve --link-local`: the addresses (169.254.169.254, and 168.63.129.16 for the
# WireServer) added, served, and removed again. Each test runs azimds in a private network
# namespace (`unshare --net`), so the host's loopback device is never touched.

# Starts azimds with the given options in the background, waits for its banner, runs the
# documentation's command, asks the WireServer and its host plugin what an agent asks first
# (000: nothing answers), stops azimds with SIGTERM and shows lo's addresses afterwards.
SERVE_SCRIPT = r"""
"$PYTHON" -m azimds serve --state-dir "$STATE" $OPTIONS > "$LOG" 2>&1 &
server=$!
for _ in $(seq 300); do
  grep -q "Ctrl+C" "$LOG" 2>/dev/null && break
  kill -0 $server 2>/dev/null || break
  sleep 0.05
done
echo "during: $(ip -o -4 addr show dev lo | awk '{print $4}' | sort | tr '\n' ' ')"
curl -s -H Metadata:true --noproxy "*" \
  "http://169.254.169.254/metadata/instance/compute/vmId?api-version=2017-08-01&format=text"
echo
curl -s -o /dev/null -w "wireserver: %{http_code}\n" "http://168.63.129.16/?comp=versions"
curl -s -o /dev/null -w "goalstate: %{http_code}\n" -H x-ms-agent-name:WALinuxAgent \
  -H x-ms-version:2012-11-30 "http://168.63.129.16/machine/?comp=goalstate"
curl -s -o /dev/null -w "hostplugin: %{http_code}\n" "http://168.63.129.16:32526/versions"
kill -${SIGNAL:-TERM} $server
wait $server
echo "exit: $?"
echo "after: $(ip -o -4 addr show dev lo | awk '{print $4}' | sort | tr '\n' ' ')"
echo "lo: $(ip -o link show dev lo | grep -o '<[^>]*>')"
"""


def in_network_namespace(
    tmp_path: Path, script: str, options: str = "", **extra: str
) -> tuple[dict[str, str], str]:
    """Run ``script`` in a new network namespace: the ``key: value`` lines it printed (its
    other lines, such as curl's answers, under ``answers``, one per line), and azimds's log."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("unshare (util-linux) and ip (iproute2) are needed for this test")
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZIMDS_")}
    env.update(PYTHON=sys.executable, LOG=str(log), STATE=str(tmp_path / "state"))
    env.update(OPTIONS=options, **extra)
    result = subprocess.run(
        ["unshare", "--net", "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    found: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            found[key] = value.strip()
        elif line:
            found["answers"] = f"{found.get('answers', '')}{line}\n"
    return found, log.read_text() if log.exists() else ""


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a network namespace")


@needs_root
def test_link_local_adds_serves_and_removes_the_addresses(tmp_path: Path) -> None:
    # A fresh namespace's lo is down: azimds brings it up and, leaving, down again.
    found, log = in_network_namespace(tmp_path, SERVE_SCRIPT, "--link-local")
    assert found["during"] == "127.0.0.1/8 168.63.129.16/32 169.254.169.254/32", log
    assert found["answers"] == "02aab8a4-74ef-476e-8182-f6d2ba4166a6\n", log
    assert (found["wireserver"], found["goalstate"], found["hostplugin"]) == ("200",) * 3, log
    assert found["exit"] == "0", log
    assert found["after"] == "127.0.0.1/8", log  # both gone after SIGTERM
    assert "UP" not in found["lo"].strip("<>").split(","), found["lo"]
    assert "listening on http://169.254.169.254/metadata" in log
    assert "  WireServer on http://168.63.129.16\n" in log
    assert "  host plugin on http://168.63.129.16:32526\n" in log
    # Instead of the default address: nothing on 127.0.0.1:16925.
    assert "16925" not in log
    for address in ("169.254.169.254", "168.63.129.16"):
        assert f"added {address}/32 to lo" in log
        assert f"removed {address}/32 from lo" in log


@needs_root
def test_link_local_with_the_wireserver_elsewhere_adds_only_the_imds_address(
    tmp_path: Path,
) -> None:
    options = "--link-local --wireserver-listen 127.0.0.1:16980 --hostplugin-listen 127.0.0.1:16981"
    script = SERVE_SCRIPT.replace("168.63.129.16:32526", "127.0.0.1:16981").replace(
        "168.63.129.16", "127.0.0.1:16980"
    )
    found, log = in_network_namespace(tmp_path, script, options)
    assert found["during"] == "127.0.0.1/8 169.254.169.254/32", log
    assert (found["wireserver"], found["goalstate"], found["hostplugin"]) == ("200",) * 3, log
    assert found["after"] == "127.0.0.1/8", log
    assert "168.63.129.16" not in log, log


@needs_root
def test_link_local_removes_the_address_when_the_terminal_closes(tmp_path: Path) -> None:
    # SIGHUP stops the node cleanly, as SIGTERM does, and the address goes with it.
    found, log = in_network_namespace(tmp_path, SERVE_SCRIPT, "--link-local", SIGNAL="HUP")
    assert found["answers"] == "02aab8a4-74ef-476e-8182-f6d2ba4166a6\n", log
    assert found["exit"] == "0", log
    assert found["after"] == "127.0.0.1/8", log
    assert "Traceback" not in log, log


@needs_root
def test_link_local_besides_an_explicit_listen_address(tmp_path: Path) -> None:
    script = SERVE_SCRIPT.replace(
        "echo\ncurl",
        'echo\ncurl -s -H Metadata:true "http://127.0.0.1:16999/metadata/instance/compute/'
        'name?api-version=2021-02-01&format=text"; echo\ncurl',
        1,
    )
    found, log = in_network_namespace(
        tmp_path, "ip link set lo up\n" + script, "--link-local --listen 127.0.0.1:16999"
    )
    assert found["answers"] == "02aab8a4-74ef-476e-8182-f6d2ba4166a6\nexamplevmname\n", log
    assert found["after"] == "127.0.0.1/8", log
    assert "UP" in found["lo"].strip("<>").split(","), found["lo"]  # up before: stays up
    banner = [line for line in log.splitlines() if "listening on" in line]
    assert banner == [
        "  listening on http://169.254.169.254/metadata",  # first: the banner's examples use it
        "  listening on http://127.0.0.1:16999/metadata",
    ], log


@needs_root
def test_link_local_leaves_an_address_that_was_there(tmp_path: Path) -> None:
    script = "ip link set lo up\nip addr add 169.254.169.254/32 dev lo\n" + SERVE_SCRIPT
    found, log = in_network_namespace(tmp_path, script, "--link-local")
    assert found["answers"] == "02aab8a4-74ef-476e-8182-f6d2ba4166a6\n", log
    assert found["wireserver"] == "200", log
    assert found["exit"] == "0", log
    # Still there; the WireServer's address, which azimds added, is gone.
    assert found["after"] == "127.0.0.1/8 169.254.169.254/32", log
    assert "169.254.169.254 is already on this host" in log
    assert "removed 168.63.129.16/32 from lo" in log
    assert "removed 169.254.169.254" not in log


@needs_root
def test_link_local_removes_the_address_when_start_up_fails(tmp_path: Path) -> None:
    # The control plane's port is taken: azimds fails after adding the address.
    script = r"""
ip link set lo up
"$PYTHON" -m http.server --bind 127.0.0.1 16926 > /dev/null 2>&1 &
holder=$!
trap 'kill $holder' EXIT
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:16926/ && break; sleep 0.05; done
"$PYTHON" -m azimds serve --state-dir "$STATE" --link-local > "$LOG" 2>&1
echo "exit: $?"
echo "after: $(ip -o -4 addr show dev lo | awk '{print $4}' | sort | tr '\n' ' ')"
"""
    found, log = in_network_namespace(tmp_path, script)
    assert found["exit"] == "1", log
    assert "16926: the port is in use" in log
    assert "added 169.254.169.254/32 to lo" in log
    assert found["after"] == "127.0.0.1/8", log


@needs_root
def test_link_local_without_root_is_a_clear_error(tmp_path: Path) -> None:
    # Root without CAP_NET_ADMIN is, for this purpose, not root.
    script = r"""
ip link set lo up
setpriv --inh-caps=-net_admin --bounding-set=-net_admin \
  "$PYTHON" -m azimds serve --state-dir "$STATE" --link-local > "$LOG" 2>&1
echo "exit: $?"
echo "after: $(ip -o -4 addr show dev lo | awk '{print $4}' | sort | tr '\n' ' ')"
"""
    found, log = in_network_namespace(tmp_path, script)
    assert found["exit"] == "1", log
    assert "adding 169.254.169.254 and 168.63.129.16 to lo needs root (CAP_NET_ADMIN)" in log, log
    assert "sudo azimds serve --link-local" in log
    assert "sudo ip addr add 168.63.129.16/32 dev lo" in log
    assert found["after"] == "127.0.0.1/8", log


def test_link_local_setting() -> None:
    real = ("169.254.169.254", 80)
    assert load(None, {}, environ={}).listen == (("127.0.0.1", 16925),)
    assert load(None, {}, environ={}).link_local is False
    config = load(None, {"link_local": True}, environ={})
    assert (config.link_local, config.listen) == (True, (real,))
    both = load(None, {"link_local": True, "listen": ("127.0.0.1:1",)}, environ={})
    assert both.listen == (real, ("127.0.0.1", 1))
    once = load(None, {"link_local": True, "listen": ("169.254.169.254:80",)}, environ={})
    assert once.listen == (real,)
    assert load(None, {}, environ={"AZIMDS_LINK_LOCAL": "true"}).listen == (real,)
    assert load(None, {}, environ={}).link_local_addresses == ()
    with pytest.raises(ConfigError, match="AZIMDS_LINK_LOCAL: link_local: 'yes' is not allowed"):
        load(None, {}, environ={"AZIMDS_LINK_LOCAL": "yes"})


def test_link_local_serves_the_wireserver_at_its_address_unless_told_otherwise() -> None:
    plain = load(None, {}, environ={})
    assert (plain.wireserver_listen, plain.hostplugin_listen) == (None, None)
    config = load(None, {"link_local": True}, environ={})
    wire = (config.wireserver_listen, config.hostplugin_listen)
    assert wire == (("168.63.129.16", 80), ("168.63.129.16", 32526))
    assert config.link_local_addresses == ("169.254.169.254", "168.63.129.16")
    one = load(None, {"link_local": True, "wireserver_listen": "127.0.0.1:1"}, environ={})
    assert (one.wireserver_listen, one.hostplugin_listen) == (("127.0.0.1", 1), wire[1])
    assert one.link_local_addresses == ("169.254.169.254", "168.63.129.16")  # the plugin's
    elsewhere = {"link_local": True, "wireserver_listen": "127.0.0.1:1"}
    environ = {"AZIMDS_HOSTPLUGIN_LISTEN": "127.0.0.1:2"}
    assert load(None, elsewhere, environ=environ).link_local_addresses == ("169.254.169.254",)


def test_link_local_in_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "azimds.yaml"
    path.write_text("link_local: true\nlisten: [127.0.0.1:16925]\n")
    config = load(path, {}, environ={})
    assert config.link_local
    assert config.listen == (("169.254.169.254", 80), ("127.0.0.1", 16925))


@needs_root
def test_link_local_on_a_state_directory_in_use_adds_nothing(tmp_path: Path) -> None:
    # The lock comes first: a node refused for a busy state directory never touches lo.
    script = r"""
ip link set lo up
"$PYTHON" -m azimds serve --state-dir "$STATE" --listen 127.0.0.1:0 \
  --admin-listen 127.0.0.1:0 > /dev/null 2>&1 &
first=$!
trap 'kill $first' EXIT
for _ in $(seq 300); do test -s "$STATE/admin.json" && break; sleep 0.05; done
"$PYTHON" -m azimds serve --state-dir "$STATE" --link-local --log-level debug > "$LOG" 2>&1
echo "exit: $?"
echo "after: $(ip -o -4 addr show dev lo | awk '{print $4}' | sort | tr '\n' ' ')"
"""
    found, log = in_network_namespace(tmp_path, script)
    assert found["exit"] == "1", log
    assert "is in use by another azimds" in log, log
    assert "169.254.169.254" not in log, log  # neither added nor removed
    assert "168.63.129.16" not in log, log
    assert found["after"] == "127.0.0.1/8", log
