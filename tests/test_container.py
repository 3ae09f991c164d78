"""The container image (Containerfile), the compose file and the Kubernetes example.

The image is built and run with podman, as root, on a base made from Debian's mirror alone
(packaging/container/debian-base.sh): CI cannot pull python:slim from Docker Hub. Where podman
or mmdebstrap is missing, or the tests do not run as root, those tests skip and say so.

No engine here can run compose.yaml as it is (PostgreSQL's image is on Docker Hub) nor the
Kubernetes example (there is no cluster): both are checked as files, for the choices
docs/deployment.md describes, and compose's fleet (two nodes, one database) is run as the same
containers started one by one, on the suite's PostgreSQL (tests/pg.py), whose socket they get
as a volume.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from azimds.config.settings import SETTINGS, load
from azimds.kit.local import LocalIMDS
from tests.http import get
from tests.pg import Postgres, postgres  # noqa: F401
from tests.waiting import within

REPO = Path(__file__).resolve().parent.parent
KUBERNETES = REPO / "examples" / "kubernetes"
UID = 10001  # the Containerfile's user
STATE = "/var/lib/azimds"
INSTANCE = "/metadata/instance?api-version=2021-02-01"
SETTING_VARIABLES = {setting.env for setting in SETTINGS}


def engine_missing() -> str | None:
    """Why the image cannot be built and run here, or None."""
    for tool, package in (("podman", "podman"), ("mmdebstrap", "mmdebstrap")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package}, or run .ci/run)"
    if os.geteuid() != 0:
        return "building the base with mmdebstrap and running podman as these tests do needs root"
    info = subprocess.run(["podman", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        return f"podman cannot run here: {info.stderr.strip()}"
    return None


class Podman:
    """podman, as this machine lets it run containers."""

    def __init__(self) -> None:
        # crun (Debian 12's default runtime) refuses hosts with cgroups in hybrid mode, as CI's
        # is; runc runs everywhere.
        self.command = ["podman", *(["--runtime", "runc"] if shutil.which("runc") else [])]
        # podman's default limits for a container (about a million open files and processes)
        # can only be set with CAP_SYS_RESOURCE, which CI's root lacks; 4096 of each is below
        # any host's hard limits, and plenty for a test node.
        self.limits = ["--ulimit=nofile=4096:4096", "--ulimit=nproc=4096:4096"]
        self.image = ""
        self.made: list[tuple[str, str]] = []  # (kind, name), removed at the end

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        result = subprocess.run(
            [*self.command, *args], capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {result.returncode}\n{result.stderr}")
        return result.stdout.strip()

    def volume(self) -> str:
        name = f"azimds-test-{uuid.uuid4().hex[:8]}"
        self("volume", "create", name)
        self.made.append(("volume", name))
        return name

    def start(self, *options: str, env: dict[str, str] | None = None) -> str:
        """A container of the image, serving, its guest plane published on the host's loopback
        (on a port podman picks); returns its name."""
        name = f"azimds-test-{uuid.uuid4().hex[:8]}"
        variables = [f"--env={key}={value}" for key, value in (env or {}).items()]
        self("run", "-d", f"--name={name}", *self.limits, "--publish=127.0.0.1::16925",
             *variables, *options, self.image)  # fmt: skip
        self.made.insert(0, ("container", name))  # containers before their volumes
        self.wait(name)
        return name

    def wait(self, name: str) -> None:
        """Until what the image's health check runs passes: `azimds wait`, both planes answer."""
        try:
            self("exec", name, "azimds", "wait", "--timeout", "60", timeout=90)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self('logs', name, check=False)}") from None

    def guest_port(self, name: str) -> int:
        return int(self("port", name, "16925/tcp").rsplit(":", 1)[1])

    def remove_all(self) -> None:
        for kind, name in self.made:
            self(kind, "rm", "--force", name, check=False)


def pip_build_options() -> list[str]:
    """This machine's own way to PyPI, for pip inside the build: an index URL, and a CA bundle
    (behind a TLS-intercepting proxy) mounted into the build. Build arguments: not in the image."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    config = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        config[key.rsplit(".", 1)[-1]] = value.strip("'\"")
    index = os.environ.get("PIP_INDEX_URL") or config.get("index-url", "")
    cert = os.environ.get("PIP_CERT") or config.get("cert", "")
    options = []
    if index.startswith(("http://", "https://")):
        options.append(f"--build-arg=PIP_INDEX_URL={index}")
    if cert and Path(cert).is_file():
        inside = "/run/azimds-build-ca.pem"
        options += [
            f"--volume={Path(cert).resolve()}:{inside}:ro",
            f"--build-arg=PIP_CERT={inside}",
        ]
    return options


@pytest.fixture(scope="session")
def podman() -> Iterator[Podman]:
    """The image, built once a session on the Debian base."""
    reason = engine_missing()
    if reason is not None:
        pytest.skip(reason)
    engine = Podman()
    base = subprocess.run(
        [REPO / "packaging" / "container" / "debian-base.sh"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert base.returncode == 0, base.stderr
    engine.image = "localhost/azimds:test"
    engine("build", "--format=docker", "--network=host", f"--build-arg=BASE={base.stdout.strip()}",
           *pip_build_options(), f"--tag={engine.image}", "--file=Containerfile", str(REPO),
           timeout=900)  # fmt: skip
    try:
        yield engine
    finally:
        engine.remove_all()


@pytest.fixture(scope="session")
def node(podman: Podman) -> str:
    """One container of the image as it comes, its state in a volume."""
    return podman.start(f"--volume={podman.volume()}:{STATE}")


def test_the_image_answers_as_a_local_node_does(podman: Podman, node: str) -> None:
    answer = get(podman.guest_port(node), INSTANCE)
    with LocalIMDS(set_environment=False) as local:
        expected = get(LocalIMDS.port_of(local.url), INSTANCE)
    assert answer.status == expected.status == 200
    assert answer.headers["content-type"] == expected.headers["content-type"]
    assert json.loads(answer.body) == json.loads(expected.body)


def test_the_node_runs_as_its_own_user_not_root(podman: Podman, node: str) -> None:
    assert [line.split() for line in podman("top", node, "huser", "user").splitlines()[1:]] == [
        [str(UID), "azimds"]
    ]
    owners = podman("exec", node, "stat", "-c", "%u %a %n", STATE, f"{STATE}/admin-token")
    assert owners.splitlines() == [f"{UID} 700 {STATE}", f"{UID} 600 {STATE}/admin-token"]


def test_the_health_check_passes(podman: Podman, node: str) -> None:
    podman("healthcheck", "run", node)


def test_a_restart_keeps_the_state(podman: Podman) -> None:
    """The token and the fleet (SQLite, by default) live in the volume, and so outlive the
    container: a new one on the same volume is the same node."""
    volume = podman.volume()
    first = podman.start(f"--volume={volume}:{STATE}")
    token = podman("exec", first, "cat", f"{STATE}/admin-token")
    podman("exec", first, "azimds", "vm", "set", "examplevmname", "compute.tags.env=prod")
    podman("stop", "--time=20", first)
    assert podman("inspect", "--format={{.State.ExitCode}}", first) == "0"  # a clean SIGTERM

    second = podman.start(f"--volume={volume}:{STATE}")
    assert podman("exec", second, "cat", f"{STATE}/admin-token") == token
    tags = get(podman.guest_port(second), f"{INSTANCE}&format=json")
    assert "env:prod" in json.loads(tags.body)["compute"]["tags"].split(";")


def test_two_nodes_share_one_database_as_in_compose(podman: Podman, postgres: Postgres) -> None:  # noqa: F811
    """compose.yaml's fleet, its PostgreSQL the suite's: a change made through one node's
    control plane is served by the other."""
    socket_dir = str(postgres.socket_dir)
    os.chmod(socket_dir, 0o711)  # the containers' user may pass through to the socket
    url = postgres.new_database()
    env = {"AZIMDS_STORE": url}
    mounts = [f"--volume={socket_dir}:{socket_dir}"]
    a = podman.start(f"--volume={podman.volume()}:{STATE}", *mounts, env=env)
    b = podman.start(f"--volume={podman.volume()}:{STATE}", *mounts, env=env)
    podman("exec", a, "azimds", "vm", "set", "examplevmname", "compute.tags.env=fleet")

    def served_by_b() -> bool:
        tags: str = json.loads(get(podman.guest_port(b), INSTANCE).body)["compute"]["tags"]
        return "env:fleet" in tags.split(";")

    within(10, served_by_b, "node b serves node a's change")


# The files, without an engine.


def load_environment(variables: dict[str, str], config_file: Path | None = None) -> None:
    """azimds accepts these variables (each a setting, each value valid), as `serve` would."""
    assert set(variables) <= SETTING_VARIABLES, set(variables) - SETTING_VARIABLES
    load(config_file, environ=variables)


def test_the_containerfile_runs_serve_as_its_user_with_the_state_as_a_volume() -> None:
    text = (REPO / "Containerfile").read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert "ARG BASE=docker.io/library/python:3.12-slim-bookworm" in lines
    assert f"USER {UID}:{UID}" in lines
    assert f"VOLUME {STATE}" in lines
    assert 'ENTRYPOINT ["azimds"]' in lines and 'CMD ["serve"]' in lines
    assert "/usr/local/bin/python" not in text and "/usr/bin/python" not in text  # both bases
    final = [line for line in lines[lines.index("FROM ${BASE}") :] if not line.startswith("#")]
    assert not any("PIP_" in line for line in final)  # the build's index and CA stay in it
    env = dict(re.findall(r"\b(AZIMDS_\w+)=(\S+)", "\n".join(final)))
    assert env["AZIMDS_STATE_DIR"] == STATE
    load_environment(env)


def test_compose_runs_two_nodes_on_one_database() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    nodes = {name: service for name, service in services.items() if name != "postgres"}
    assert sorted(nodes) == ["node-a", "node-b"]
    assert set(compose["volumes"]) == {"postgres", "state-a", "state-b"}
    stores, guest_ports = set(), set()
    for service in nodes.values():
        assert service["build"] == {"context": ".", "dockerfile": "Containerfile"}
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        stores.add(service["environment"]["AZIMDS_STORE"])
        load_environment(service["environment"])
        [state] = service["volumes"]
        assert state.endswith(f":{STATE}")
        guest, admin = service["ports"]
        assert guest.endswith(":16925")
        guest_ports.add(guest)
        # The control plane only on the host's loopback, where its public URL says it is.
        host, port, inside = admin.split(":")
        assert (host, inside) == ("127.0.0.1", "16926")
        assert service["environment"]["AZIMDS_PUBLIC_URL"] == f"http://127.0.0.1:{port}"
    assert len(guest_ports) == 2
    [store] = stores
    assert store.startswith("postgresql://") and "@postgres:5432/" in store
    assert "ports" not in services["postgres"]


def kubernetes_manifests() -> dict[str, dict[str, Any]]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    manifests = {}
    for name in kustomization["resources"]:
        manifest = yaml.safe_load((KUBERNETES / name).read_text())
        manifests[manifest["kind"]] = manifest
        assert manifest["metadata"].get("namespace", "azimds") == kustomization["namespace"]
    return manifests


def test_kubernetes_keeps_the_control_plane_off_the_pod_network(tmp_path: Path) -> None:
    manifests = kubernetes_manifests()
    assert set(manifests) == {"Namespace", "Secret", "ConfigMap", "DaemonSet"}
    pod = manifests["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == UID
    [container] = pod["containers"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {item["name"]: item for item in container["env"]}
    # The guest plane on the node's address, the control plane on its loopback: no port of
    # the control plane is declared, and its liveness probe asks it there.
    assert env["HOST_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert env["AZIMDS_LISTEN"]["value"] == "$(HOST_IP):16925"
    assert env["AZIMDS_ADMIN_LISTEN"]["value"] == "127.0.0.1:16926"
    assert [port["containerPort"] for port in container["ports"]] == [16925]
    assert container["livenessProbe"]["httpGet"]["host"] == "127.0.0.1"
    # The database's URL from the Secret, never in the manifest.
    reference = env["AZIMDS_STORE"]["valueFrom"]["secretKeyRef"]
    secret = manifests["Secret"]
    assert reference["name"] == secret["metadata"]["name"]
    assert secret["stringData"][reference["key"]].startswith("postgresql://")
    # The state directory in the volume, a directory below its root (azimds keeps it 0700).
    state_dir = env["AZIMDS_STATE_DIR"]["value"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert Path(state_dir).parent == Path(mounts["state"])
    # What azimds itself makes of it: the config map's file and the literal variables.
    config_file = tmp_path / "config.yaml"
    config_file.write_text(manifests["ConfigMap"]["data"]["config.yaml"])
    assert Path(env["AZIMDS_CONFIG"]["value"]) == Path(mounts["config"]) / "config.yaml"
    literal = {name: item["value"] for name, item in env.items() if "value" in item}
    literal["AZIMDS_LISTEN"] = literal["AZIMDS_LISTEN"].replace("$(HOST_IP)", "10.0.0.4")
    del literal["AZIMDS_CONFIG"]  # given to load() as the file
    literal["AZIMDS_STORE"] = secret["stringData"][reference["key"]]
    load_environment(literal, config_file)
