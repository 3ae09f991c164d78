"""Fault rules on a real server: the exact failures, scripts, matching, resets and hangs."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.admin.support import admin, refused
from tests.conftest import ServerThread, node_fixture
from tests.http import get

VM_ID = "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
VM_NAME = "examplevmname"
LEAF = "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text"
TOKEN = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"


node = node_fixture("--store", "memory:", scope="module")


@pytest.fixture(autouse=True)
def no_rules_left(node: ServerThread) -> Iterator[None]:
    yield
    admin(node).clear_faults()


def add(node: ServerThread, rule: dict[str, Any]) -> dict[str, Any]:
    return admin(node).add_fault(rule)


def statuses(node: ServerThread, target: str, times: int) -> list[int]:
    return [get(node.port, target).status for _ in range(times)]


def test_a_script_runs_once_then_answers_normally(node: ServerThread) -> None:
    rule = add(node, {"actions": [410, 410]})
    assert rule["count"] == 2 and rule["remaining"] == 2 and rule["active"]
    assert statuses(node, LEAF, 3) == [410, 410, 200]
    shown = admin(node).fault(rule["id"])
    assert (shown["fired"], shown["remaining"], shown["active"]) == (2, 0, False)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (
            410,
            b'{ "error": "IMDS is going through updates and will be available within 70 '
            b'seconds. Please retry later" }',
        ),
        (429, b"Too many requests"),
        (500, b'{ "error": "Internal server error. Please retry later" }'),
        (503, b'{ "error": "Internal service unavailable. Please retry later" }'),
    ],
)
def test_instance_failures_carry_the_services_bodies(
    node: ServerThread, status: int, body: bytes
) -> None:
    add(node, {"actions": [status], "count": 1})
    reply = get(node.port, LEAF)
    assert (reply.status, reply.body) == (status, body)
    assert reply.headers["server"] == "IMDS/150.870.65.1854"
    assert reply.headers["content-length"] == str(len(body))
    assert len(reply.headers["x-ms-request-id"]) == 36
    assert "retry-after" not in reply.headers


@pytest.mark.parametrize(
    ("status", "code"),
    [(410, "gone"), (429, "too_many_requests"), (500, "unknown"), (503, "service_unavailable")],
)
def test_identity_failures_are_oauth_shaped(node: ServerThread, status: int, code: str) -> None:
    add(node, {"path": "/metadata/identity", "actions": [status], "count": 1})
    reply = get(node.port, TOKEN)
    assert reply.status == status
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(reply.body)["error"] == code


def test_retry_after_goes_out_with_429(node: ServerThread) -> None:
    add(node, {"actions": [{"status": 429, "retryAfter": 7}], "count": 1})
    reply = get(node.port, LEAF)
    assert (reply.status, reply.headers["retry-after"]) == (429, "7")


def test_rules_match_path_method_and_vm(node: ServerThread) -> None:
    add(node, {"path": "/metadata/identity", "actions": [503]})
    assert get(node.port, LEAF).status == 200
    assert get(node.port, TOKEN).status == 503
    admin(node).clear_faults()

    add(node, {"method": "POST", "actions": [500]})
    assert get(node.port, LEAF).status == 200
    admin(node).clear_faults()

    add(node, {"vm": VM_NAME, "path": "/METADATA/Instance", "actions": [500]})
    assert get(node.port, LEAF).status == 500  # by name; paths compare case-insensitively
    assert get(node.port, "/metadata/versions").status == 200


def test_requests_that_fail_a_check_are_answered_as_usual(node: ServerThread) -> None:
    """Probes without the Metadata header (DefaultAzureCredential's) do not use up a script."""
    add(node, {"actions": [410]})
    reply = get(node.port, LEAF, metadata=None)
    assert reply.status == 400 and b"Required metadata header" in reply.body
    assert get(node.port, "/metadata/instance?api-version=1999-01-01").status == 400
    assert get(node.port, LEAF).status == 410


def test_probability_zero_never_fires_and_one_always_does(node: ServerThread) -> None:
    never = add(node, {"actions": [500], "probability": 0})
    assert statuses(node, LEAF, 5) == [200] * 5
    admin(node).remove_fault(never["id"])
    add(node, {"actions": [500], "probability": 1})
    assert statuses(node, LEAF, 5) == [500] * 5


def test_a_fraction_fires_about_that_often(node: ServerThread) -> None:
    add(node, {"actions": [503], "probability": 0.3})
    failed = statuses(node, LEAF, 400).count(503)
    assert 70 <= failed <= 170  # mean 120, sd about 9


def test_time_windows(node: ServerThread) -> None:
    add(node, {"actions": [500], "from": "+60"})
    add(node, {"actions": [503], "until": time.time() - 1})
    assert get(node.port, LEAF).status == 200
    rule = add(node, {"actions": [410], "until": "+1.5"})
    assert get(node.port, LEAF).status == 410
    time.sleep(1.6)
    assert get(node.port, LEAF).status == 200
    assert admin(node).fault(rule["id"])["active"] is False


def test_the_first_rule_that_fires_wins(node: ServerThread) -> None:
    add(node, {"actions": [410], "count": 1})
    add(node, {"actions": [503], "count": 1})
    assert statuses(node, LEAF, 3) == [410, 503, 200]


def test_a_cycle_with_pass(node: ServerThread) -> None:
    add(node, {"actions": [500, "pass"], "count": 6})
    assert statuses(node, LEAF, 7) == [500, 200, 500, 200, 500, 200, 200]


def test_delay_makes_answers_late(node: ServerThread) -> None:
    add(node, {"delay": 0.4, "count": 1})
    started = time.monotonic()
    reply = get(node.port, LEAF)
    assert reply.status == 200 and reply.text == VM_ID
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    assert get(node.port, LEAF).status == 200
    assert time.monotonic() - started < 0.3


def test_a_reset_is_a_reset_to_real_clients(node: ServerThread) -> None:
    add(node, {"actions": ["reset"], "count": 2})
    with pytest.raises(requests.ConnectionError) as caught:
        requests.get(f"http://127.0.0.1:{node.port}{LEAF}", headers={"Metadata": "true"}, timeout=5)
    assert "reset" in str(caught.value).lower()
    curl = subprocess.run(
        ["curl", "-s", "-H", "Metadata: true", f"http://127.0.0.1:{node.port}{LEAF}"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert curl.returncode == 56, curl  # "Failure in receiving network data": the RST
    assert get(node.port, LEAF).status == 200


def test_a_hang_lasts_until_the_client_gives_up(node: ServerThread) -> None:
    add(node, {"actions": ["hang"], "count": 1})
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(
            f"http://127.0.0.1:{node.port}{LEAF}", headers={"Metadata": "true"}, timeout=1.0
        )
    assert time.monotonic() - started >= 1.0
    assert get(node.port, LEAF).status == 200  # other requests were never held up
    time.sleep(0.2)  # the hung request ends when its client is gone
    hung = [entry for entry in admin(node).requests() if entry["fault"]]
    assert hung[-1]["status"] == 0 and hung[-1]["latencyMs"] >= 1000


def test_a_hung_request_does_not_block_others_on_the_same_node(node: ServerThread) -> None:
    add(node, {"actions": ["hang"], "count": 1})
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as hung:
        hung.sendall(f"GET {LEAF} HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n".encode())
        time.sleep(0.2)
        assert get(node.port, LEAF).status == 200
        hung.settimeout(0.3)
        with pytest.raises(TimeoutError):
            hung.recv(1)


def test_the_log_and_metrics_name_what_fired(node: ServerThread) -> None:
    rule = add(node, {"actions": [503, "reset"]})
    before = admin(node).requests()
    last = before[-1]["sequence"] if before else 0
    assert get(node.port, LEAF).status == 503
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{node.port}{LEAF}", headers={"Metadata": "true"}, timeout=5)
    assert get(node.port, LEAF).status == 200
    shown = [(entry["status"], entry["fault"]) for entry in admin(node).requests(last)]
    assert shown == [(503, rule["id"]), (0, rule["id"]), (200, None)]
    page = admin(node).metrics()
    assert 'azimds_faults_total{action="503"} ' in page
    assert 'azimds_faults_total{action="reset"} ' in page


def test_bad_rules_are_refused_with_the_field(node: ServerThread) -> None:
    cases = [
        ({"actions": [404]}, 400, "actions[0].status"),
        ({"actions": ["explode"]}, 400, "actions[0]"),
        ({"actions": [{"status": 500, "reset": True}]}, 400, "actions[0]"),
        ({"actions": [{"status": 500, "retryAfter": 3}]}, 400, "actions[0].retryAfter"),
        ({"probability": 2}, 400, "probability"),
        ({"count": 0}, 400, "count"),
        ({"method": "PUT"}, 400, "method"),
        ({"path": "metadata"}, 400, "path"),
        ({"from": "tomorrow"}, 400, "from"),
        ({"from": "+60", "until": "+30"}, 400, "until"),
        ({"delay": 301}, 400, "delay"),
        ({"colour": "red"}, 400, ""),
        ({"vm": "no-such-vm"}, 404, "vm"),
    ]
    for rule, status, field in cases:
        error = refused(admin(node).add_fault, rule)
        assert (error.status, error.field) == (status, field), (rule, error)
    assert admin(node).faults() == []


def test_rules_are_listed_and_removed_one_by_one(node: ServerThread) -> None:
    first = add(node, {"actions": [410]})
    second = add(node, {"actions": [429], "retryAfter": 3})
    client = admin(node)
    listed = client.faults()
    assert [rule["id"] for rule in listed] == [first["id"], second["id"]]
    assert listed[1]["actions"] == [{"status": 429, "retryAfter": 3}]
    client.remove_fault(first["id"])
    assert refused(client.remove_fault, first["id"]).status == 404
    assert refused(client.fault, first["id"]).status == 404
    assert get(node.port, LEAF).status == 429
    assert client.clear_faults() == 1
    assert get(node.port, LEAF).status == 200


def test_faults_cli(node: ServerThread) -> None:
    def azimds(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "azimds", "faults", "--state-dir", str(node.state_dir), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    added = azimds("add", "--path", "/metadata/identity", "--retry-after", "2", "429", "503")
    rule_id = added.split()[-1]
    assert added == f"added fault rule {rule_id}\n"
    listing = azimds("list")
    assert "ACTIONS" in listing and rule_id in listing
    assert "429 (retry-after 2), 503" in listing and "0/2" in listing
    reply = get(node.port, TOKEN)
    assert (reply.status, reply.headers["retry-after"]) == (429, "2")
    assert get(node.port, TOKEN).status == 503
    assert json.loads(azimds("list", "--json"))[0]["fired"] == 2
    assert azimds("remove", rule_id) == f"removed {rule_id}\n"
    azimds("add", "--for", "1m", "--delay", "0.1")
    assert azimds("clear") == "removed 1 fault rule(s)\n"
    command = [sys.executable, "-m", "azimds", "faults", "--state-dir", str(node.state_dir)]
    failed = subprocess.run(
        [*command, "add", "--vm", "nobody", "500"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert failed.returncode == 1
    assert "no VM with vmId or name 'nobody'" in failed.stderr
