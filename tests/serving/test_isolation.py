"""Isolation: what one VM can reach of another, what the control plane lets through without its
token, and which secrets ever leave the node.

The VM-to-VM tests run on tests/node/test_namespaces.py's host (three VMs in network
namespaces, each on its own veth link to azimds in source-ip mode, the control plane on a Unix
socket), so the addresses are real; they extend it from the instance document to tokens,
scheduled events, approvals and spoofed addresses. The rest run on loopback nodes.
"""

from __future__ import annotations

import ast
import base64
import hmac
import http.client
import inspect
import json
import os
import re
import sqlite3
import string
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from azimds.admin import api as admin_api
from azimds.admin.client import AdminClient
from azimds.admin.public import CA_PATHS
from tests.admin.support import admin, new_vm
from tests.conftest import Server, ServerProcess, ServerThread
from tests.guest.attested.test_ca_lifecycle import views
from tests.http import get, send_raw
from tests.node import test_namespaces as namespaces
from tests.node.test_namespaces import IMDS, GuestVM, Host, curl_in

host = namespaces.host  # the fixture: three VMs in network namespaces, one azimds (source-ip)

SE = f"http://{IMDS}/metadata/scheduledevents?api-version=2020-07-01"
TOKEN = f"http://{IMDS}/metadata/identity/oauth2/token?api-version=2018-02-01"
RESOURCE = "https://vault.azure.net"


# --- the namespace host's control plane (its Unix socket) --------------------------------


def host_admin(host: Host) -> AdminClient:
    """The host's control plane, over its socket, with its token."""
    token = (host.state_dir / "admin-token").read_text().strip()
    return AdminClient(f"unix:{host.admin_socket}", token, timeout=15)


def no_limits(host: Host) -> None:
    """These tests ask faster than 5 a second from one VM: lift the VMs' own limits."""
    off = {"rate": 0, "identityRate": 0, "identityConcurrency": 0}
    for vm in host.vms.values():
        host_admin(host).patch_vm(vm.name, {"limits": off})


def guest(vm: GuestVM, url: str, *options: str) -> tuple[int, str]:
    return curl_in(vm.netns, url, "-H", "Metadata:true", *options)


def events_seen(vm: GuestVM) -> tuple[str, dict[str, str]]:
    """The VM's scheduled-events document (raw) and its EventId -> EventStatus."""
    status, body = guest(vm, SE)
    assert status == 200, (vm.key, status, body)
    return body, {e["EventId"]: e["EventStatus"] for e in json.loads(body)["Events"]}


def approve(vm: GuestVM, *event_ids: str) -> tuple[int, str]:
    body = json.dumps({"StartRequests": [{"EventId": e} for e in event_ids]})
    return guest(vm, SE, "-H", "Content-Type: application/json", "--data-binary", body)


def event_statuses(host: Host) -> dict[str, str]:
    return {e["eventId"]: e["status"] for e in host_admin(host).events(everything=True)["events"]}


# --- VM to VM -----------------------------------------------------------------------------


def test_a_vm_gets_no_token_of_another_vms_identities(host: Host) -> None:
    a, b = host.vms["a"], host.vms["b"]
    no_limits(host)
    for vm in (a, b):
        host_admin(host).enable_system_identity(vm.name)
    host_admin(host).add_identity(b.name, {"name": "b-app"})
    identities = host_admin(host).identities(b.name)
    b_system, (b_user,) = identities["systemAssigned"], identities["userAssigned"]

    # b's own identities work from b: each id below is valid, and b's tokens are now cached.
    asks = [
        ("client_id", b_system["clientId"]),
        ("object_id", b_system["objectId"]),
        ("client_id", b_user["clientId"]),
        ("object_id", b_user["objectId"]),
        ("msi_res_id", b_user["resourceId"]),
        ("mi_res_id", b_user["resourceId"]),
    ]
    for name, value in asks:
        status, body = guest(b, f"{TOKEN}&resource={RESOURCE}&{name}={quote(value, safe='')}")
        assert status == 200, (name, status, body)

    # The same ids from a: "Identity not found", and no token.
    for name, value in asks:
        status, body = guest(a, f"{TOKEN}&resource={RESOURCE}&{name}={quote(value, safe='')}")
        assert status == 400, (name, status, body)
        assert json.loads(body) == {
            "error": "invalid_request",
            "error_description": "Identity not found",
        }, body

    # a's own token names a's identity, never b's.
    status, body = guest(a, f"{TOKEN}&resource={RESOURCE}")
    assert status == 200, body
    a_system = host_admin(host).identities(a.name)["systemAssigned"]
    assert json.loads(body)["client_id"] == a_system["clientId"]
    for secret in (b_system["clientId"], b_user["clientId"], b.vm_id, b.name):
        assert secret not in body and secret not in decoded_jwt(json.loads(body)["access_token"])


def decoded_jwt(token: str) -> str:
    header, claims, _ = token.split(".")
    return "".join(
        base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()
        for part in (header, claims)
    )


def test_a_vm_neither_sees_nor_approves_another_vms_events(host: Host) -> None:
    a, b, c = host.vms["a"], host.vms["b"], host.vms["c"]
    no_limits(host)

    def schedule(*vms: GuestVM) -> str:
        answer = host_admin(host).schedule_event({"type": "Reboot", "vms": [v.name for v in vms]})
        return str(answer["eventId"])

    own, theirs, shared = schedule(a), schedule(b), schedule(b, c)
    a_doc, a_events = events_seen(a)
    assert a_events == {own: "Scheduled"}
    assert theirs not in a_doc and shared not in a_doc and b.name not in a_doc
    assert events_seen(b)[1] == {theirs: "Scheduled", shared: "Scheduled"}
    before = {vm.key: events_seen(vm)[0] for vm in (a, b, c)}
    statuses = event_statuses(host)

    # b's events, alone or next to a's own: 400, and nothing changes anywhere (not even the
    # DocumentIncarnation), a's own event included.
    for ids in ((theirs,), (shared,), (own, theirs), (theirs, own)):
        status, body = approve(a, *ids)
        assert status == 400, (ids, status, body)
        assert "error" in json.loads(body), body
    assert {vm.key: events_seen(vm)[0] for vm in (a, b, c)} == before
    assert event_statuses(host) == statuses

    # The same approvals from the events' own VMs work: the 400s were isolation.
    assert approve(c, shared)[0] == 200
    assert approve(a, own)[0] == 200
    assert event_statuses(host) == {**statuses, own: "Started", shared: "Started"}
    assert events_seen(b)[1] == {theirs: "Scheduled", shared: "Started"}


def test_a_vm_cannot_pass_for_another(host: Host) -> None:
    """Not by X-Forwarded-For, not by taking the other VM's address: source-ip trusts the TCP
    peer, and the host routes a spoofer's answers to the real owner of the address."""
    a, b = host.vms["a"], host.vms["b"]
    no_limits(host)
    url = f"http://{IMDS}/metadata/instance/compute/name?api-version=2021-02-01&format=text"
    status, body = guest(a, url, "-H", f"X-Forwarded-For: {b.address}")
    assert status == 400, (status, body)
    assert b.name not in body

    # a takes b's address on its own link and asks from it: no connection is ever made.
    namespaces.must("ip", "-n", a.netns, "addr", "add", f"{b.address}/32", "dev", "eth0")
    try:
        status, body = curl_in(
            a.netns, url, "-H", "Metadata:true", "--interface", b.address, "--connect-timeout", "2"
        )
        assert status == 0, (status, body)
        assert b.name not in body
    finally:
        namespaces.run("ip", "-n", a.netns, "addr", "del", f"{b.address}/32", "dev", "eth0")
    assert guest(a, url) == (200, a.name)
    assert guest(b, url) == (200, b.name)


def test_the_guest_listener_serves_no_control_plane_route(host: Host) -> None:
    """From a VM, the guest listener is all there is; the control plane's routes are not on
    it, whatever the request carries (tests/node/test_namespaces.py shows no other port
    answers and the socket is out of reach)."""
    a = host.vms["a"]
    token = (host.state_dir / "admin-token").read_text().strip()
    for path in (
        "/v1/vms",
        "/v1/status",
        f"/v1/vms/{host.vms['b'].name}",
        "/v1/keys",
        "/v1/requests",
        "/openapi.json",
        "/metrics",
        "/discovery/keys",
        "/attestation/root.pem",
    ):
        for options in ((), ("-H", f"Authorization: Bearer {token}")):
            status, body = curl_in(a.netns, f"http://{IMDS}{path}", *options)
            assert status == 404, (path, options, status, body)
            assert host.vms["b"].name not in body and "revision" not in body, body
        status, body = curl_in(a.netns, f"http://{IMDS}{path}", "-X", "POST", "-d", "{}")
        assert status in (404, 405), (path, status, body)
    for vm in host.vms.values():  # nothing was created by those requests
        assert host_admin(host).vm(vm.name)["compute"]["name"] == vm.name
    assert len(host_admin(host).vms()["vms"]) == 3


# --- the control plane's token ---------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A node on SQLite (single mode, the example VM) for the control-plane tests."""
    state_dir = tmp_path_factory.mktemp("isolation") / "state"
    process = ServerThread("--clock", "manual", state_dir=state_dir)  # "now" stands still
    yield process
    process.stop()


def openapi_operations(node: ServerThread) -> list[tuple[str, str, bool]]:
    """(METHOD, path template, needs a token) for every operation /openapi.json lists."""
    spec = AdminClient(node.admin_url, "").openapi()
    default = spec.get("security")
    operations = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in ("get", "put", "post", "patch", "delete"):
                security = operation.get("security", default)
                operations.append((method.upper(), path, bool(security)))
    return operations


def concrete(node: ServerThread, template: str) -> str:
    """A path template filled with things that exist, so a request that got through would act."""
    values = {
        "vm": "examplevmname",
        "identity": "isolation-app",
        "event": node_event(node),
        "fault": node_fault(node),
        "tenant": "common",
    }
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


def node_event(node: ServerThread) -> str:
    events = admin(node).events()["events"]
    if not events:
        events = [admin(node).schedule_event({"type": "Reboot", "vms": ["examplevmname"]})]
    return str(events[0]["eventId"])


def node_fault(node: ServerThread) -> str:
    faults = admin(node).faults()
    if not faults:
        faults = [admin(node).add_fault({"path": "/metadata/nothing", "actions": [503]})]
    return str(faults[0]["id"])


def everything(node: ServerThread) -> dict[str, Any]:
    """What a request that got through would change."""
    client = admin(node)
    return {
        "vms": client.vms(),
        "vm": client.vm("examplevmname"),
        "events": client.events(everything=True),
        "faults": client.faults(),
        "keys": client.signing_keys(),
        "clock": client.clock(),
    }


def test_every_route_of_the_app_is_in_openapi(node: ServerThread) -> None:
    """So iterating /openapi.json below reaches every route the control plane serves."""
    documented = {(m, p) for m, p, _ in openapi_operations(node)} | {("GET", "/openapi.json")}
    app = admin_api.AdminAPI(None, "x", "single", None, "http://x").app()  # type: ignore[arg-type]
    served = set()
    for route in app.routes:
        for method in route.methods - {"HEAD"}:  # type: ignore[attr-defined]
            served.add((method, route.path))  # type: ignore[attr-defined]
    assert served == documented
    public = {(m, p) for m, p, needs in openapi_operations(node) if not needs}
    assert {p for _, p in public} == {
        "/healthz", "/metrics", "/discovery/keys", "/{tenant}/discovery/keys",
        "/{tenant}/.well-known/openid-configuration", *CA_PATHS,
    }  # fmt: skip


def test_every_authenticated_route_refuses_missing_and_wrong_tokens(node: ServerThread) -> None:
    admin(node).add_identity("examplevmname", {"name": "isolation-app"})
    operations = [(m, concrete(node, p)) for m, p, needs in openapi_operations(node) if needs]
    assert len(operations) >= 25, operations
    before = everything(node)
    wrong = [None, "", node.token[:-1], node.token + "x", node.token.upper(), "Bearer", "null"]
    for method, path in operations:
        body = {} if method in ("POST", "PUT", "PATCH") else None
        for token in wrong:
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            status, answer = raw_call(node, method, path, headers, body)
            assert status == 401, (method, path, token, status, answer)
            assert answer == {
                "error": {"code": "unauthorized", "message": "send Authorization: Bearer <token>"}
            }
        for header in (
            f"Basic {node.token}",
            f"Token {node.token}",
            node.token,
            f"Bearer{node.token}",
        ):
            status, answer = raw_call(node, method, path, {"Authorization": header}, body)
            assert status == 401, (method, path, header, status)
        # The token anywhere but the Authorization header does not count either.
        status, _ = raw_call(
            node, method, f"{path}?token={node.token}", {"X-Token": node.token}, body
        )
        assert status == 401, (method, path)
    assert everything(node) == before
    # The public routes answer without a token, and the right token opens the others.
    public = [(m, concrete(node, p)) for m, p, needs in openapi_operations(node) if not needs]
    for method, path in public:
        assert raw_call(node, method, path, {}, None)[0] == 200, path
    admin(node).status()


def raw_call(
    node: ServerThread, method: str, path: str, headers: dict[str, str], body: Any
) -> tuple[int, Any]:
    host, _, port = node.admin_url.removeprefix("http://").partition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers = {**headers, "Content-Type": "application/json"}
    try:
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        data = response.read()
        try:
            return response.status, json.loads(data) if data else None
        except ValueError:
            return response.status, data
    finally:
        connection.close()


def test_the_token_is_compared_in_constant_time() -> None:
    """The middleware compares the token with hmac.compare_digest and nothing else: the
    token's bytes appear in no ==, startswith, in, or slice (a timing test would be flaky)."""
    source = textwrap.dedent(inspect.getsource(admin_api.AdminAPI._authenticate))
    tree = ast.parse(source)
    uses = [
        node for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "_token"
    ]
    assert uses, "the middleware no longer reads self._token: update this test"
    compare_calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "compare_digest"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "hmac"
    ]
    assert len(compare_calls) == 1, source
    (compare,) = compare_calls
    for use in uses:  # every use of the token is an argument of that call
        assert any(use is arg for arg in compare.args), ast.unparse(use)
    assert not [
        n for n in ast.walk(tree) if isinstance(n, ast.Compare) and "_token" in ast.unparse(n)
    ]
    assert admin_api.hmac.compare_digest is hmac.compare_digest  # the real one


def test_wrong_tokens_of_every_length_and_prefix_are_refused(node: ServerThread) -> None:
    token = node.token
    alphabet = string.ascii_letters + string.digits + "-_"
    wrong = {token[:n] for n in range(len(token))}  # every proper prefix, the empty one too
    wrong |= {token + extra for extra in ("a", "-", "==", token)}  # longer, the token first
    wrong |= {
        token[:n] + ("A" if token[n] != "A" else "B") + token[n + 1 :] for n in range(len(token))
    }
    wrong |= {token[1:], token[:-1] + "\u00e9", token[::-1], token.swapcase()}
    wrong |= {"".join(alphabet[(alphabet.index(ch) + 1) % len(alphabet)] for ch in token)}
    wrong |= {"x" * n for n in (1, 16, 42, 43, 44, 64, 4096)}
    wrong.discard(token)
    for given in sorted(wrong, key=len):
        encoded = given.encode("utf-8").decode("latin-1")  # what a client puts on the wire
        status, answer = raw_call(
            node, "GET", "/v1/vms", {"Authorization": f"Bearer {encoded}"}, None
        )
        assert status == 401, (given, status, answer)
    # The right token is what the node checks against: these pass.
    for header in (f"Bearer {token}", f"bearer {token}", f"Bearer  {token} "):
        assert raw_call(node, "GET", "/v1/vms", {"Authorization": header}, None)[0] == 200, header


# --- signing keys never leave the node -----------------------------------------------------


def private_keys(state_dir: Path) -> list[rsa.RSAPrivateKey]:
    """Every private key the store holds (token signing and the attestation CA)."""
    with sqlite3.connect(state_dir / "azimds.db") as db:
        rows = db.execute("SELECT kind, body FROM objects WHERE NOT deleted").fetchall()
    keys = []
    for kind, body in rows:
        pem = json.loads(body).get("privateKey")
        if pem is not None:
            key = load_pem_private_key(pem.encode(), password=None)
            assert isinstance(key, rsa.RSAPrivateKey), kind
            keys.append(key)
    return keys


def key_material(key: rsa.RSAPrivateKey) -> tuple[list[bytes], list[bytes]]:
    """(binary secrets, to look for in every decoded view; text secrets, to look for as is)."""
    numbers = key.private_numbers()
    binary, text = [], []
    for value in (numbers.d, numbers.p, numbers.q, numbers.dmp1, numbers.dmq1, numbers.iqmp):
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
        binary += [raw[:32], raw[-32:], raw[::-1][:32]]  # big- and little-endian
        text += [raw.hex()[:48].encode(), raw.hex().upper()[:48].encode(), str(value)[:48].encode()]
        # base64 of the whole number, at each of the three alignments it can start at
        for shift in range(3):
            text.append(base64.b64encode(raw[shift:])[4:52])
            text.append(base64.urlsafe_b64encode(raw[shift:])[4:52])
    for form in (PrivateFormat.PKCS8, PrivateFormat.TraditionalOpenSSL):
        # The first ~300 bytes of the DER are the version, the (public) modulus and exponent;
        # the private exponent and primes come after: look for base64 and PEM lines of those.
        der = key.private_bytes(Encoding.DER, form, NoEncryption())
        pem = key.private_bytes(Encoding.PEM, form, NoEncryption()).splitlines()
        text += [base64.b64encode(der)[400:464], base64.b64encode(der)[-64:], pem[8], pem[-3]]
    return binary, text


def test_signing_keys_never_leave_the_node(tmp_path: Path) -> None:
    """A session of every kind of request, key rotations among them; then every answer, the
    node's output and its access log are searched for every private key's material."""
    access_log = tmp_path / "access.log"
    # A process: what it prints, the banner too, is searched.
    node = ServerProcess("--access-log", str(access_log), state_dir=tmp_path / "state")
    try:
        answers = session(node)
    finally:
        node.stop()  # flushes the access log
    answers["server output"] = (node.banner + "".join(node.output)).encode()
    answers["access log"] = access_log.read_bytes()
    assert answers["access log"].count(b"/metadata/identity/oauth2/token") >= 3

    keys = private_keys(node.state_dir)
    assert len(keys) >= 7  # three JWT keys (two rotations), root, intermediate, two leaves
    secrets = [key_material(key) for key in keys]
    for where, body in answers.items():
        assert b"PRIVATE KEY" not in body, where
        assert node.token.encode() not in body, where  # nor the control plane's own token
        decoded = views(body)
        for binary, text in secrets:
            for secret in text:
                assert secret not in body, (where, secret)
            for view in decoded:
                for secret in binary:
                    assert secret not in view, where
    # The search finds what is there: the public moduli are in the JWKS and the CA's PEM.
    jwks = b"".join(views(answers["GET /discovery/keys"]))
    root = b"".join(views(answers["GET /attestation/root.pem"]))
    moduli = [k.public_key().public_numbers().n for k in keys]
    prefixes = [n.to_bytes((n.bit_length() + 7) // 8, "big")[:32] for n in moduli]
    assert sum(prefix in jwks for prefix in prefixes) >= 2  # the active key and the rotated-out
    assert sum(prefix in root for prefix in prefixes) == 1


def session(node: Server) -> dict[str, bytes]:
    """Every kind of guest and control-plane request; their answers by where they came from."""
    answers: dict[str, bytes] = {}

    def keep(where: str, body: Any) -> None:
        answers[where] = body if isinstance(body, bytes) else json.dumps(body).encode()

    client = admin(node)
    for n in range(2):
        keep(f"POST /v1/keys/rotate {n}", client.rotate_keys())
    added = client.add_identity("examplevmname", {"name": "app"})
    keep("POST identity", added)
    # A second location: a second attestation leaf.
    keep("POST /v1/vms", client.create_vm(new_vm("east", "10.77.0.1", location="eastus")))
    keep("POST /v1/events", client.schedule_event({"type": "Freeze", "vms": ["east"]}))
    token = f"/metadata/identity/oauth2/token?api-version=2018-02-01&resource={RESOURCE}"
    for target in (
        "/metadata/instance?api-version=2021-02-01",
        "/metadata/instance/compute?api-version=2021-02-01",
        "/metadata/attested/document?api-version=2020-09-01",
        "/metadata/attested/document?api-version=2020-09-01&nonce=1234567890",
        "/metadata/attested/document?api-version=2018-10-01",
        token,
        f"{token}&bypass_cache=true",
        f"{token}&client_id={added['clientId']}",
        "/metadata/identity/info?api-version=2018-02-01",
        "/metadata/scheduledevents?api-version=2020-07-01",
        "/metadata/loadbalancer?api-version=2020-10-01",
        "/metadata/versions",
        "/metadata/reprovisiondata?api-version=2019-06-01",
        "/metadata/instance",  # errors too
        "/nothing",
    ):
        reply = get(node.port, target)
        assert reply.status in (200, 400, 404), (target, reply)
        keep(f"guest {target}", reply.body)
    assert json.loads(answers[f"guest {token}"])["access_token"].count(".") == 2  # a JWT
    post = b'{"StartRequests":[{"EventId":"nope"}]}'
    head = (
        "POST /metadata/scheduledevents?api-version=2020-07-01 HTTP/1.1\r\nHost: x\r\n"
        f"Metadata: true\r\nConnection: close\r\nContent-Length: {len(post)}\r\n\r\n"
    )
    keep("guest POST", send_raw(node.port, head.encode() + post, method="POST").body)
    authorization = {"Authorization": f"Bearer {node.token}"}
    for method, template, _ in openapi_operations(node):
        if method == "GET":
            path = concrete(node, template)
            status, body = raw_call(node, "GET", path, authorization, None)
            assert status == 200, (path, status, body)
            keep(f"GET {template}", body)
    keep("GET /v1/requests", {"requests": client.requests(limit=10000)})
    return answers


# --- state files ------------------------------------------------------------------------------


def test_state_files_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    state = tmp_path / "state"
    previous = os.umask(0)  # the node is started from here: it inherits the umask
    try:
        process = ServerProcess(state_dir=state)  # a process: the umask is the whole process's
    finally:
        os.umask(previous)
    try:
        admin(process).create_vm(new_vm("writes-the-wal", "10.78.0.1"))
        names = {path.name for path in state.iterdir()}
        assert {"admin-token", "admin.json", "azimds.db", "azimds.db-wal", "azimds.db-shm"} <= names
        assert state.stat().st_mode & 0o777 == 0o700
        for path in state.iterdir():
            assert path.stat().st_mode & 0o777 == 0o600, (path.name, oct(path.stat().st_mode))
            assert path.stat().st_uid == os.geteuid()
    finally:
        process.stop()
    for path in state.iterdir():  # and after a clean stop (a checkpoint may remake the files)
        assert path.stat().st_mode & 0o777 == 0o600, path.name
