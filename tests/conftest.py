from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import pytest

from azimds.cli.serve import LOG_FORMAT, configure, serve
from azimds.node import thread as node_thread
from tests.http import get

REPO = Path(__file__).resolve().parent.parent
VECTORS = Path(__file__).resolve().parent / "vectors"
TIMEOUT = 30.0  # seconds for a node to start or stop: well under one, on a machine not busy


class Server(Protocol):
    """What tests use of a node, in process (``ServerThread``) or not (``ServerProcess``)."""

    port: int  # the first guest-plane port
    admin_url: str
    token: str
    state_dir: Path
    output: list[str]  # what the node logged, a line each

    def stop(self) -> object: ...


def serve_arguments(args: tuple[str, ...], state_dir: Path) -> list[str]:
    """``azimds serve``'s arguments for a test node: loopback ports chosen by the kernel,
    no rate limit, then ``args``."""
    command = ["--state-dir", str(state_dir), "--listen", "127.0.0.1:0"]
    if "--admin-listen" not in args:
        command += ["--admin-listen", "127.0.0.1:0"]
    if "--rate-limit" not in args:
        # Tests fire requests far faster than 5 a second; tests/guest/test_limits.py
        # covers the limits themselves.
        command += ["--rate-limit", "off"]
    return [*command, *args]


def _environment() -> dict[str, str]:
    """This process's environment less azimds's own settings: a node is configured by its
    arguments alone."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AZIMDS_")}


class ServerThread:
    """``azimds serve ARGS`` in this process, on a thread and event loop of its own: the
    default for tests. Its arguments are parsed by the CLI's own options and configuration
    loading; its log records (and only its own) are kept in ``output`` as the process would
    print them. Tests of signals, crashes, exit codes, printed text, the CLI and the state
    directory's lock between processes use ``ServerProcess``."""

    _levels: ClassVar[dict[ServerThread, int]] = {}  # {running node: its log level}

    def __init__(self, *args: str, state_dir: Path | None = None) -> None:
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="azimds-test-"))
        command = serve_arguments(args, self.state_dir)
        context = serve.make_context("serve", command)
        flags = dict(context.params)
        config = configure(flags.pop("config_file"), flags, _environment())
        self.output: list[str] = []
        self._node = node_thread.NodeThread(config, name=f"azimds-test-{id(self):x}")
        self._log = _NodeLog(self._node, self.output)
        self._hear(config.log_level)
        try:
            started = self._node.start(TIMEOUT)
        except BaseException:
            self._hear(None)
            raise
        self.port = started.guest[0][1]
        self.admin_url = started.admin
        self.wireserver = started.wireserver  # category -> (host, port), where served
        self.token = started.token_file.read_text().strip()
        self.pid = os.getpid()
        # As ServerProcess's wait for the server: tests count this first request.
        get(self.port, "/metadata/versions")

    def _hear(self, level: str | None) -> None:
        """Log at ``level`` while this node runs (None: it has stopped). The azimds logger's
        level is the lowest of the running nodes', as each process's would be its own."""
        root, logger = logging.getLogger(), logging.getLogger("azimds")
        if level is None:
            root.removeHandler(self._log)
            self._levels.pop(self, None)
        else:
            root.addHandler(self._log)
            self._levels[self] = logging.getLevelName(level.upper())
        logger.setLevel(min(self._levels.values(), default=logging.NOTSET))

    def stop(self) -> None:
        """Stop the node: its sockets, store and tasks closed, its thread ended. Raises what
        made it fail while it ran, if anything did."""
        try:
            self._node.stop(TIMEOUT)
        finally:
            self._hear(None)
        if self._node.failure is not None:
            raise AssertionError(
                "the node failed:\n" + "".join(self.output)
            ) from self._node.failure


class _NodeLog(logging.Handler):
    """One node's log records (whichever logger, whichever of its threads), as lines."""

    def __init__(self, node: node_thread.NodeThread, lines: list[str]) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self.addFilter(lambda _record: node_thread.current() is node)
        self._lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self._lines.append(self.format(record) + "\n")


class ServerProcess:
    """``azimds serve`` in a child process on a free loopback port, as a user would run it:
    for tests of what only a process shows (signals, crashes, exit codes, printed text)."""

    def __init__(
        self,
        *args: str,
        state_dir: Path | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        """``on_line`` sees each line the node prints before it serves (its start-up log)."""
        self._on_line = on_line
        env = {**_environment(), "PYTHONUNBUFFERED": "1"}
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="azimds-test-"))
        command = [sys.executable, "-m", "azimds", "serve"]
        self.proc = subprocess.Popen(
            [*command, *serve_arguments(args, self.state_dir)],
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
        self.pid = self.proc.pid
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
            if self._on_line is not None:
                self._on_line(line)
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


def node_fixture(*args: str, scope: Literal["session", "module", "function"] = "function") -> Any:
    """A fixture: a ``ServerThread`` started with ``args`` for the tests of its ``scope``
    (``node = node_fixture("--store", "memory:")`` in a test module)."""

    def started() -> Iterator[ServerThread]:
        node = ServerThread(*args)
        yield node
        node.stop()

    return pytest.fixture(scope=scope)(started)


@pytest.fixture(scope="session")
def node() -> Iterator[ServerThread]:
    """A node in memory for tests that change it (fault rules, scheduled events); the shared
    ``server`` is only read."""
    process = ServerThread("--store", "memory:")
    yield process
    process.stop()


@pytest.fixture
def faulty(node: ServerThread) -> Iterator[ServerThread]:
    """``node``, with its fault rules cleared before and after the test."""
    from tests.client.support import clear_faults  # imports this module

    clear_faults(node)
    yield node
    clear_faults(node)


@pytest.fixture(scope="session")
def server() -> Iterator[ServerThread]:
    """The default server: no configuration, the documentation's example VM."""
    node = ServerThread()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def port(server: ServerThread) -> int:
    return server.port


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
