"""The WireServer and host plugin as the agents use them: requests replayed as cloud-init,
WALinuxAgent 2.7/2.12 and azure-init send them (docs/provisioning.md), against a real node."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from typing import Any

from azimds.admin.client import AdminClient
from tests.conftest import ServerThread, node_fixture

node = node_fixture(
    "--store", "memory:", "--caller-mode", "source-ip",
    "--wireserver-listen", "127.0.0.1:0", "--hostplugin-listen", "127.0.0.1:0",
)  # fmt: skip

WAAGENT = {"x-ms-agent-name": "WALinuxAgent", "x-ms-version": "2012-11-30"}
XML_POST = {"Content-Type": "text/xml; charset=utf-8"}
HEALTH = """<?xml version="1.0" encoding="utf-8"?><Health \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">\
<GoalStateIncarnation>{0}</GoalStateIncarnation><Container><ContainerId>{1}</ContainerId>\
<RoleInstanceList><Role><InstanceId>{2}</InstanceId><Health><State>{3}</State>{4}</Health>\
</Role></RoleInstanceList></Container></Health>"""


def call(
    node: ServerThread, category: str, source: str, method: str, target: str,
    body: bytes = b"", headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:  # fmt: skip
    host, port = node.wireserver[category]
    connection = http.client.HTTPConnection(host, port, timeout=10, source_address=(source, 0))
    try:
        connection.request(method, target, body or None, headers or {})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def admin(node: ServerThread) -> AdminClient:
    return AdminClient(node.admin_url, node.token)


def add_vm(node: ServerThread, name: str, ip: str) -> str:
    interface = [{"ipv4": {"ipAddress": [{"privateIpAddress": ip}]}}]
    created = admin(node).create_vm(
        {"compute": {"name": name}, "network": {"interface": interface}}
    )
    return str(created["compute"]["vmId"])


def goal_state(node: ServerThread, source: str) -> ET.Element:
    status, body = call(node, "wireserver", source, "GET", "/machine/?comp=goalstate", b"", WAAGENT)
    assert status == 200
    return ET.fromstring(body)


def health(
    node: ServerThread, source: str, agent: str, state: str, sub: str = "", text: str = ""
) -> int:
    """A health report echoing the goal state's ids, as cloud-init and waagent send it."""
    doc = goal_state(node, source)
    details = f"<Details><SubStatus>{sub}</SubStatus><Description>{text}</Description></Details>"
    body = HEALTH.format(
        doc.findtext("Incarnation"), doc.findtext("Container/ContainerId"),
        doc.findtext("Container/RoleInstanceList/RoleInstance/InstanceId"), state,
        details if sub else "",
    )  # fmt: skip
    headers = WAAGENT | XML_POST | {"User-Agent": agent}
    return call(node, "wireserver", source, "POST", "/machine?comp=health", body.encode(), headers)[
        0
    ]


def test_cloud_init_goal_state_then_ready(node: ServerThread) -> None:
    vm_id = add_vm(node, "ci-vm", "127.0.0.11")
    doc = goal_state(node, "127.0.0.11")
    assert doc.findtext("Incarnation") == "1"
    instance = doc.findtext("Container/RoleInstanceList/RoleInstance/InstanceId") or ""
    assert instance.endswith("._ci-vm")
    assert doc.find("Container/RoleInstanceList/RoleInstance/Configuration/Certificates") is None
    assert goal_state(node, "127.0.0.11").findtext("Container/ContainerId") == doc.findtext(
        "Container/ContainerId"
    )  # stable
    assert health(node, "127.0.0.11", "Cloud-Init/22.4.2", "Ready") == 200
    state = admin(node).provisioning(vm_id)
    assert state["state"] == "ready"
    assert state["reports"][0]["agent"] == "Cloud-Init/22.4.2"


def test_waagent_sequence(node: ServerThread) -> None:
    vm_id = add_vm(node, "wa-vm", "127.0.0.12")
    source = "127.0.0.12"
    status, body = call(node, "wireserver", source, "GET", "/?comp=versions")
    assert status == 200
    assert ET.fromstring(body).findtext("Preferred/Version") == "2012-11-30"
    doc = goal_state(node, source)
    container = doc.findtext("Container/ContainerId") or ""
    config = "Container/RoleInstanceList/RoleInstance/Configuration/"
    settings = {
        "x-ms-containerid": container,
        "x-ms-host-config-name": doc.findtext(config + "ConfigName") or "",
    }
    assert call(node, "hostplugin", source, "GET", "/vmSettings", b"", settings)[0] == 404
    for kind in ("HostingEnvironmentConfig", "SharedConfig"):
        url = doc.findtext(config + kind) or ""
        target = url.split("/", 3)[3]
        status, body = call(node, "wireserver", source, "GET", "/" + target, b"", WAAGENT)
        assert status == 200, url
        parsed = ET.fromstring(body)
        assert parsed.find("Incarnation").get("instance") == "_wa-vm"  # type: ignore[union-attr]
        assert parsed.find("Deployment").get("name")  # type: ignore[union-attr]
    assert (
        health(node, source, "WALinuxAgent/2.7.3.0", "NotReady", "Provisioning", "Starting") == 200
    )
    assert admin(node).provisioning(vm_id)["state"] == "provisioning"
    assert health(node, source, "WALinuxAgent/2.7.3.0", "Ready") == 200
    # 2.12's periodic calls, taken and not kept.
    assert call(node, "hostplugin", source, "GET", "/versions")[0] == 200
    assert call(node, "hostplugin", source, "GET", "/health")[0] == 200
    assert call(node, "hostplugin", source, "PUT", "/status", b"{}")[0] == 200
    assert call(node, "wireserver", source, "POST", "/HealthService", b"<x/>")[0] == 200
    assert (
        call(node, "wireserver", source, "POST", "/machine?comp=roleProperties", b"<x/>")[0] == 202
    )
    assert (
        call(node, "wireserver", source, "POST", "/machine?comp=telemetrydata", b"<x/>")[0] == 200
    )
    state = admin(node).provisioning(vm_id)
    assert state["state"] == "ready"
    assert [r["status"] for r in state["reports"]] == ["NotReady", "Ready"]
    logged = [e for e in admin(node).requests(limit=10_000) if e["vm"] == vm_id]
    assert {e["category"] for e in logged} == {"wireserver", "hostplugin"}


def test_failure_and_vm_wait(node: ServerThread) -> None:
    add_vm(node, "bad-vm", "127.0.0.13")
    said = "error parsing ovf-env.xml: no element found"
    assert (
        health(node, "127.0.0.13", "Cloud-Init/25.1.4", "NotReady", "ProvisioningFailed", said)
        == 200
    )
    result = wait(node, "bad-vm", "--timeout", "5")
    assert result.returncode == 1
    assert said in result.stderr


def test_wait_times_out_then_reset(node: ServerThread) -> None:
    vm_id = add_vm(node, "slow-vm", "127.0.0.14")
    result = wait(node, "slow-vm", "--timeout", "0.5")
    assert result.returncode == 1
    assert "not ready after" in result.stderr
    assert health(node, "127.0.0.14", "Cloud-Init/25.1.4", "Ready") == 200
    assert wait(node, "slow-vm", "--timeout", "5").returncode == 0
    reset = admin(node).reset_provisioning(vm_id)
    assert (reset["state"], reset["incarnation"]) == ("not_provisioned", 2)
    assert goal_state(node, "127.0.0.14").findtext("Incarnation") == "2"


def test_azure_init_json(node: ServerThread) -> None:
    vm_id = add_vm(node, "ai-vm", "127.0.0.15")
    headers = {"x-ms-guest-agent-name": "azure-init v0.1.1", "content-type": "application/json"}
    body: dict[str, Any] = {
        "state": "NotReady",
        "details": {"subStatus": "Provisioning", "description": "x"},
    }
    assert (
        call(
            node,
            "wireserver",
            "127.0.0.15",
            "POST",
            "/provisioning/health",
            json.dumps(body).encode(),
            headers,
        )[0]
        == 200
    )
    ready = json.dumps({"state": "Ready"}).encode()
    assert (
        call(node, "wireserver", "127.0.0.15", "POST", "/provisioning/health", ready, headers)[0]
        == 200
    )
    state = admin(node).provisioning(vm_id)
    assert state["state"] == "ready"
    assert state["reports"][-1]["agent"] == "azure-init v0.1.1"


def test_vm_a_never_touches_vm_b(node: ServerThread) -> None:
    a, b = add_vm(node, "vm-a", "127.0.0.16"), add_vm(node, "vm-b", "127.0.0.17")
    doc_b = goal_state(node, "127.0.0.17")
    assert goal_state(node, "127.0.0.16").findtext("Container/ContainerId") != doc_b.findtext(
        "Container/ContainerId"
    )
    assert health(node, "127.0.0.16", "Cloud-Init/22.4.2", "Ready") == 200
    # A report naming B's container from A's address is refused.
    forged = HEALTH.format(
        1, doc_b.findtext("Container/ContainerId"),
        doc_b.findtext("Container/RoleInstanceList/RoleInstance/InstanceId"), "Ready", "",
    ).encode()  # fmt: skip
    assert call(node, "wireserver", "127.0.0.16", "POST", "/machine?comp=health", forged)[0] == 400
    assert admin(node).provisioning(a)["state"] == "ready"
    assert admin(node).provisioning(b)["state"] == "not_provisioned"


def test_a_flood_of_reports_is_throttled_and_trimmed(node: ServerThread) -> None:
    """Reports are store writes every VM shares: a VM gets a few a second, the rest are 429s,
    and a description is kept to 4 KB; another VM's report still goes through at once."""
    noisy = add_vm(node, "noisy-vm", "127.0.0.19")
    add_vm(node, "quiet-vm", "127.0.0.20")
    started = time.monotonic()
    statuses = [
        health(node, "127.0.0.19", "x" * 1000, "NotReady", "Provisioning", "d" * 10_000)
        for _ in range(30)
    ]
    elapsed = time.monotonic() - started
    assert statuses[0] == 200 and set(statuses) == {200, 429}
    assert statuses.count(200) <= 5 + 5 * elapsed + 1  # the burst, then 5 a second
    reports = admin(node).provisioning(noisy)["reports"]
    assert len(reports) == statuses.count(200)
    assert {(len(r["agent"]), len(r["description"])) for r in reports} == {(256, 4096)}
    assert health(node, "127.0.0.20", "Cloud-Init/22.4.2", "Ready") == 200


def test_unknown_caller_is_refused(node: ServerThread) -> None:
    assert call(node, "wireserver", "127.0.0.99", "GET", "/machine/?comp=goalstate")[0] == 403
    assert call(node, "hostplugin", "127.0.0.99", "GET", "/versions")[0] == 403


def test_the_provisioning_and_reset_commands(node: ServerThread) -> None:
    add_vm(node, "shown-vm", "127.0.0.18")
    assert health(node, "127.0.0.18", "WALinuxAgent/2.7.3.0", "NotReady", "Provisioning") == 200
    assert health(node, "127.0.0.18", "Cloud-Init/22.4.2", "Ready") == 200
    shown = vm_command(node, "provisioning", "shown-vm")
    assert shown.returncode == 0, shown.stderr
    head, header, provisioning, ready = shown.stdout.splitlines()
    assert head == "ready (incarnation 1)"
    assert header.split() == ["TIME", "(UTC)", "AGENT", "STATUS", "SUBSTATUS", "DESCRIPTION"]
    assert provisioning.split()[2:] == ["WALinuxAgent/2.7.3.0", "NotReady", "Provisioning", "-"]
    assert ready.split()[2:] == ["Cloud-Init/22.4.2", "Ready", "-", "-"]

    page = admin(node).metrics()
    assert re.search(r'^azimds_vms_provisioning\{state="ready"\} [1-9]', page, re.M), page

    reset = vm_command(node, "reset", "shown-vm")
    assert reset.stdout == "VM shown-vm is not provisioned (a new incarnation)\n"
    as_json = json.loads(vm_command(node, "provisioning", "shown-vm", "--json").stdout)
    assert (as_json["state"], as_json["incarnation"]) == ("not_provisioned", 2)
    assert len(as_json["reports"]) == 2  # kept across the reset


def vm_command(node: ServerThread, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "azimds", "vm", "--state-dir", str(node.state_dir)]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=30)


def wait(node: ServerThread, vm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return vm_command(node, "wait", vm, "--ready", *args)
