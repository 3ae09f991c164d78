"""A throwaway PostgreSQL cluster for tests: Unix socket only, trust auth, removed at the end.

Use it from a directory's conftest with ``from tests.pg import postgres, postgres_url``.
``postgres_url`` is a libpq URL of the database ``azimds`` (role ``azimds``); ``postgres`` is
the ``Postgres`` object, for a fresh database (``new_database()``), a role that needs a
password (``password_role()``) or an outage (``stop()`` / ``start()``, or
``with postgres.outage():``). Without PostgreSQL's server binaries the tests
fail, saying what to install: CI installs them (``.ci/run``).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

PORT = 5432  # only names the socket file; the socket directory is private to the cluster
DATABASE = "azimds"
ROLE = "azimds"


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has initdb, pg_ctl and postgres."""

    def version(path: str) -> tuple[int, ...]:
        match = re.search(r"/postgresql/([\d.]+)/bin$", path)
        return tuple(int(part) for part in match.group(1).split(".")) if match else (0,)

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    for candidate in candidates:
        bindir = Path(candidate)
        if all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


class Postgres:
    """One cluster in a temporary directory, run as ``postgres`` when the tests run as root."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="azpg-"))  # short: socket paths are limited
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.log = self.root / "postgres.log"
        self.port = PORT
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                self.remove()
                pytest.fail("tests run as root but there is no 'postgres' user to run PostgreSQL")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.running = False
        self._names = itertools.count(1)
        self._lock = threading.Lock()  # one pg_ctl at a time
        self.url = self.url_for(DATABASE)

    def url_for(self, database: str, user: str = ROLE, password: str | None = None) -> str:
        userinfo = user if password is None else f"{user}:{password}"
        return f"postgresql://{userinfo}@/{database}?host={self.socket_dir}&port={self.port}"

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            [*self._as_user, *command], capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n{log}"
            )

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        self.start()
        self._admin(f"CREATE ROLE {ROLE} LOGIN", f"CREATE DATABASE {DATABASE} OWNER {ROLE}")

    def _admin(self, *statements: str) -> None:
        import psycopg

        with psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
        ) as connection:
            for statement in statements:
                connection.execute(statement)  # type: ignore[arg-type]

    def new_database(self) -> str:
        """A fresh, empty database owned by the test role; returns its URL."""
        name = f"{DATABASE}_{next(self._names)}"
        self._admin(f"CREATE DATABASE {name} OWNER {ROLE}")
        return self.url_for(name)

    def password_role(self, password: str) -> str:
        """A new login role that must give ``password`` (SCRAM); the others keep trust auth.
        Returns its name."""
        role = f"{ROLE}_pw{next(self._names)}"
        self._admin(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"local all {role} scram-sha-256\n" + hba.read_text())  # first match wins
        self._admin("SELECT pg_reload_conf()")
        return role

    def start(self) -> None:
        with self._lock:
            if not self.running:
                self._pg_ctl_start()

    def _pg_ctl_start(self) -> None:
        options = f"-k {self.socket_dir} -c listen_addresses='' -p {self.port} -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "start",
        )
        self.running = True

    def stop(self) -> None:
        """Stop at once: connected clients lose their connections (an outage)."""
        with self._lock:
            if self.running:
                pg_ctl = str(self.bindir / "pg_ctl")
                self._run(pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")
                self.running = False

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """Stopped inside the block, running again after it, whatever happens inside."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# One cluster per session, however many conftests import the fixtures (each import makes its
# own fixture definition); the last one to finish stops it.
_cluster: Postgres | None = None
_users = 0


def _acquire() -> Postgres:
    global _cluster, _users
    if _cluster is None:
        try:
            import psycopg  # noqa: F401
        except ModuleNotFoundError:
            pytest.fail("the PostgreSQL tests need psycopg: pip install -e '.[test]'")
        bindir = find_bindir()
        if bindir is None:
            pytest.fail(
                "PostgreSQL's server is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                "apt-get install postgresql, or run .ci/run"
            )
        cluster = Postgres(bindir)
        try:
            cluster.init()
        except Exception:
            with contextlib.suppress(Exception):
                cluster.stop()
            cluster.remove()
            raise
        _cluster = cluster
    _users += 1
    return _cluster


def _release() -> None:
    global _cluster, _users
    _users -= 1
    if _users == 0 and _cluster is not None:
        cluster, _cluster = _cluster, None
        try:
            cluster.stop()
        finally:
            cluster.remove()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The running throwaway cluster."""
    cluster = _acquire()
    try:
        yield cluster
    finally:
        _release()


@pytest.fixture(scope="session")
def postgres_url(postgres: Postgres) -> str:
    """``postgresql://azimds@/azimds?host=SOCKDIR&port=PORT`` (Unix socket, trust auth)."""
    return postgres.url
