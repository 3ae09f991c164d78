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

SCRIPT = r"""
set -e
ip link set lo up
ip addr add 169.254.169.254/32 dev lo
"$PYTHON" -m azimds serve --listen 169.254.169.254:80 > "$LOG" 2>&1 &
server=$!
trap 'kill $server' EXIT
for _ in $(seq 100); do
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
        env={**os.environ, "PYTHON": sys.executable, "LOG": str(log)},
    )
    assert result.returncode == 0, (result.stderr, log.read_text())
    assert result.stdout == "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
    assert "listening on http://169.254.169.254/metadata" in log.read_text()
