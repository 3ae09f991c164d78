from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http import get

REPO = Path(__file__).resolve().parent.parent
VECTORS = Path(__file__).resolve().parent / "vectors"


class ServerProcess:
    """``azimds serve`` in a child process on a free loopback port, as a user would run it."""

    def __init__(self, *args: str, state_dir: Path | None = None, listen: bool = True) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AZIMDS_")}
        env["PYTHONUNBUFFERED"] = "1"
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="azimds-test-"))
        command = [sys.executable, "-m", "azimds", "serve", "--state-dir", str(self.state_dir)]
        if "--admin-listen" not in args:
            command += ["--admin-listen", "127.0.0.1:0"]
        if listen:
            command += ["--listen", "127.0.0.1:0"]
        if "--rate-limit" not in args:
            # Tests fire requests far faster than 5 a second; tests/guest/test_limits.py
            # covers the limits themselves.
            command += ["--rate-limit", "off"]
        self.proc = subprocess.Popen(
            [*command, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.banner = self._read_banner()
        match = re.search(r"listening on http://[^:]+:(\d+)/metadata", self.banner)
        assert match, self.banner
        self.port = int(match.group(1))
        admin = re.search(r"control plane (\S+) ", self.banner)
        assert admin, self.banner
        self.admin_url = admin.group(1)
        self.token = (self.state_dir / "admin-token").read_text().strip()
        # Keep reading what the server prints, so a full pipe never blocks it.
        self.output: list[str] = []
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()
        self._wait_until_serving()

    def _read_rest(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def _read_banner(self) -> str:
        assert self.proc.stdout is not None
        lines = []
        for line in self.proc.stdout:
            lines.append(line)
            if "Ctrl+C" in line:
                break
        else:
            self.proc.wait(timeout=10)
            self.proc.stdout.close()
            raise AssertionError("azimds serve exited:\n" + "".join(lines))
        return "".join(lines)

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                get(self.port, "/metadata/versions")
                return
            except OSError as exc:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    time.sleep(0.2)  # the drain thread's last lines
                    raise AssertionError(
                        f"not serving on port {self.port} ({exc}); exit code "
                        f"{self.proc.poll()}; output:\n{self.banner}{''.join(self.output)}"
                    ) from exc
                time.sleep(0.02)

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(timeout=10)
        self._drain.join(timeout=5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    """The default server: no configuration, the documentation's example VM."""
    process = ServerProcess()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def port(server: ServerProcess) -> int:
    return server.port


@pytest.fixture(scope="session")
def node() -> Iterator[ServerProcess]:
    """A node in memory for tests that change it (fault rules, scheduled events); the shared
    ``server`` is only read."""
    process = ServerProcess("--store", "memory:")
    yield process
    process.stop()


@pytest.fixture
def faulty(node: ServerProcess) -> Iterator[ServerProcess]:
    """``node``, with its fault rules cleared before and after the test."""
    from tests.client.support import clear_faults  # imports this module

    clear_faults(node)
    yield node
    clear_faults(node)


@pytest.fixture
def sdk_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean environment: no other managed-identity source, no proxy."""
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith(("AZURE_", "IDENTITY_", "MSI_", "MSAL_", "IMDS_")) or upper in (
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return monkeypatch
