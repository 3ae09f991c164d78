"""The request log, `azimds logs`, the access log and the Prometheus metrics count exactly what
happened."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from azimds.admin.client import AdminClient
from tests.admin.support import admin, refused
from tests.conftest import ServerThread
from tests.http import get

INSTANCE = "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text"
TOKEN = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"


def metric(text: str, name: str, **labels: str) -> float:
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(f"{name}{{{label_text}}}" if labels else name) + r" (\S+)$"
    match = re.search(pattern, text, re.M)
    assert match, (name, labels)
    return float(match.group(1))


def test_metrics_count_exactly_what_happened(tmp_path: Path) -> None:
    access_log = tmp_path / "access.jsonl"
    node = ServerThread("--store", "memory:", "--access-log", str(access_log))
    try:
        for _ in range(3):
            assert get(node.port, INSTANCE).status == 200
        assert get(node.port, INSTANCE, metadata=None).status == 400
        assert get(node.port, TOKEN).status == 200
        assert get(node.port, TOKEN).status == 200  # cached: no new token
        assert get(node.port, "/metadata/attested/document?api-version=2020-09-01").status == 200
        # Scraped without a token, as Prometheus does by default.
        page = subprocess.run(
            ["curl", "-sf", f"{node.admin_url}/metrics"], capture_output=True, text=True, check=True
        ).stdout
        # ServerThread waits for the server with one /metadata/versions request.
        assert metric(page, "azimds_requests_total", category="versions", status="200") == 1
        assert metric(page, "azimds_requests_total", category="instance", status="200") == 3
        assert metric(page, "azimds_requests_total", category="instance", status="400") == 1
        assert metric(page, "azimds_requests_total", category="identity", status="200") == 2
        assert metric(page, "azimds_request_seconds_count", category="instance") == 4
        assert metric(page, "azimds_tokens_issued_total") == 1
        assert metric(page, "azimds_attested_documents_signed_total") == 1
        assert metric(page, "azimds_vms") == 1
        assert metric(page, "azimds_vms_provisioning", state="not_provisioned") == 1
        assert metric(page, "azimds_vms_provisioning", state="ready") == 0
        assert metric(page, "azimds_store_revision_lag") == 0
        assert "# TYPE azimds_request_seconds histogram" in page

        # The request log has the same requests, in order, with their request ids.
        entries = admin(node).requests()[1:]  # after the start-up probe
        assert [e["status"] for e in entries] == [200, 200, 200, 400, 200, 200, 200]
        assert entries[0]["vm"] == "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
        assert entries[0]["path"] == "/metadata/instance/compute/vmId"
        assert entries[4]["category"] == "identity"
        assert all(e["requestId"] for e in entries)
        later = admin(node).requests(since=entries[4]["sequence"])
        assert [e["sequence"] for e in later] == [e["sequence"] for e in entries[5:]]

        # The access log: the same entries as JSON lines, written within a moment.
        deadline = time.monotonic() + 5
        while len(access_log.read_text().splitlines()) < 8 if access_log.exists() else True:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        lines = [json.loads(line) for line in access_log.read_text().splitlines()][1:]
        assert [line["requestId"] for line in lines] == [e["requestId"] for e in entries]
    finally:
        node.stop()


def test_azimds_logs_prints_and_follows() -> None:
    node = ServerThread("--store", "memory:")
    try:
        get(node.port, INSTANCE)
        command = [sys.executable, "-m", "azimds", "logs", "--state-dir", str(node.state_dir)]
        printed = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert printed.returncode == 0, printed.stderr
        assert (
            " GET /metadata/instance/compute/vmId?api-version=2021-02-01&format=text 200 "
            in printed.stdout
        )
        follower = subprocess.Popen(
            [*command, "--follow", "--json"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert follower.stdout is not None
            seen = [json.loads(follower.stdout.readline()) for _ in range(2)]  # probe, vmId
            assert [e["status"] for e in seen] == [200, 200]
            get(node.port, "/metadata/nosuch?api-version=2021-02-01")
            followed = json.loads(follower.stdout.readline())
            assert (followed["status"], followed["path"]) == (404, "/metadata/nosuch")
        finally:
            follower.terminate()
            follower.wait(timeout=10)
            follower.stdout.close()  # type: ignore[union-attr]
    finally:
        node.stop()


def test_the_request_log_needs_the_token() -> None:
    node = ServerThread("--store", "memory:")
    try:
        assert refused(AdminClient(node.admin_url, "").requests).status == 401
    finally:
        node.stop()
