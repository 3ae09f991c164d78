"""The control plane's REST API against a real node."""

from __future__ import annotations

import json
import re

import pytest

from azimds.admin.client import AdminClient
from tests.admin.support import admin, new_vm, refused
from tests.conftest import ServerThread, node_fixture
from tests.http import get

EXAMPLE_ID = "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
FIRST_IP = "vm.network.interface[0].ipv4.ipAddress[0]"


node = node_fixture("--store", "memory:")


def guest_text(node: ServerThread, path: str) -> bytes:
    reply = get(node.port, f"/metadata/instance{path}?api-version=2021-02-01&format=text")
    assert reply.status == 200, reply.body
    return reply.body


@pytest.mark.parametrize("token", [None, "wrong", "x" * 43])
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/vms"), ("DELETE", "/v1/vms/x"), ("GET", "/v1/status")]
)
def test_missing_or_wrong_token_is_401(
    node: ServerThread, token: str | None, method: str, path: str
) -> None:
    answer = AdminClient(node.admin_url, token or "").send(method, path)
    assert answer.status == 401
    assert answer.headers["www-authenticate"] == 'Bearer realm="azimds"'
    assert answer.json()["error"]["code"] == "unauthorized"


def test_token_file_is_private(node: ServerThread) -> None:
    mode = (node.state_dir / "admin-token").stat().st_mode & 0o777
    assert mode == 0o600
    assert (node.state_dir.stat().st_mode & 0o777) == 0o700


def test_openapi_and_health_need_no_token(node: ServerThread) -> None:
    public = AdminClient(node.admin_url, "")
    document = public.openapi()
    assert document["openapi"].startswith("3.")
    assert {"/v1/vms", "/v1/vms/{vm}", "/v1/status"} <= set(document["paths"])
    assert "vmId" in document["components"]["schemas"]["VM"]["properties"]["compute"]["properties"]
    public.health()


def test_list_and_show_the_default_vm(node: ServerThread) -> None:
    listing = admin(node).vms()
    assert [vm["vmId"] for vm in listing["vms"]] == [EXAMPLE_ID]
    assert listing["vms"][0]["addresses"] == ["10.144.133.132"]
    for key in (EXAMPLE_ID, "examplevmname"):
        vm = admin(node).vm(key)
        assert vm["compute"]["vmId"] == EXAMPLE_ID
        assert vm["compute"]["userData"] == ""  # complete: every field
        assert vm["extended"] == {"compute": {"hasCustomData": False, "ppsType": "None"}}


def test_create_fills_every_field_and_generates_a_vm_id(node: ServerThread) -> None:
    body = json.dumps(new_vm("web-1", "10.0.0.4", location="westus")).encode()
    answer = admin(node).send("POST", "/v1/vms", body, {"Content-Type": "application/json"})
    assert answer.status == 201
    vm = answer.json()
    vm_id = vm["compute"]["vmId"]
    assert answer.headers["location"] == f"/v1/vms/{vm_id}"
    assert vm["compute"]["location"] == "westus"
    assert vm["compute"]["offer"] == ""  # not the example's: a new VM starts empty
    assert vm["compute"]["tagsList"] == []
    assert admin(node).vm("web-1") == vm


def test_merge_patch_changes_what_the_guest_sees_at_once(node: ServerThread) -> None:
    vm = admin(node).patch_vm(
        "examplevmname",
        {"compute": {"location": "northeurope", "zone": 3, "plan": None, "tags": {"env": "ci"}}},
    )
    assert vm["compute"]["plan"] == {"name": "", "product": "", "publisher": ""}
    assert vm["compute"]["tagsList"] == [  # a mapping of tags merges into the current ones
        {"name": "baz", "value": "bash"},
        {"name": "foo", "value": "bar"},
        {"name": "env", "value": "ci"},
    ]
    assert vm["compute"]["name"] == "examplevmname"  # untouched fields stay
    # The answer came after this node served the change: the guest sees it already.
    assert guest_text(node, "/compute/location") == b"northeurope"
    assert guest_text(node, "/compute/zone") == b"3"
    assert guest_text(node, "/compute/tags") == b"baz:bash;foo:bar;env:ci"


def test_replace_keeps_the_vm_id(node: ServerThread) -> None:
    vm = admin(node).replace_vm(EXAMPLE_ID, new_vm("renamed", "10.1.1.1"))
    assert vm["compute"]["vmId"] == EXAMPLE_ID
    assert vm["compute"]["location"] == ""  # a replacement, not a merge
    assert guest_text(node, "/compute/name") == b"renamed"
    error = refused(
        lambda: admin(node).replace_vm(EXAMPLE_ID, {"compute": {"name": "x", "vmId": "other"}})
    )
    assert (error.status, error.field) == (400, "vm.compute.vmId")


def test_delete(node: ServerThread) -> None:
    client = admin(node)
    client.create_vm(new_vm("doomed", "10.0.0.9"))
    answer = client.send("DELETE", "/v1/vms/doomed")
    assert (answer.status, answer.body) == (204, b"")
    assert refused(lambda: client.vm("doomed")).status == 404
    assert refused(lambda: client.delete_vm("doomed")).status == 404
    # Its address is free again.
    client.create_vm(new_vm("reborn", "10.0.0.9"))


def test_deleting_the_default_vm_leaves_single_mode_callers_unknown(node: ServerThread) -> None:
    admin(node).delete_vm("examplevmname")
    reply = get(node.port, "/metadata/instance?api-version=2021-02-01")
    assert reply.status == 403
    reason = "no default VM is set on this azimds node"
    assert json.loads(reply.body) == {
        "error": f"Forbidden: the caller is not a known VM ({reason})"
    }


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"compute": {"nmae": "x"}}, "vm.compute.nmae", "did you mean 'name'?"),
        ({"compute": {"zone": [1]}}, "vm.compute.zone", "expected a string"),
        (new_vm("n", "10.0.0.300"), f"{FIRST_IP}.privateIpAddress", "is not an IP address"),
        (new_vm("n", "fd00::1"), f"{FIRST_IP}.privateIpAddress", "is not an ipv4 address"),
        ({"compute": {}}, "vm.compute.name", "every VM needs a name"),
        ({"disks": []}, "vm.disks", "unknown field"),
    ],
)  # fmt: skip
def test_invalid_descriptions_are_400_and_change_nothing(
    node: ServerThread, body: dict[str, object], field: str, words: str
) -> None:
    client = admin(node)
    before = client.status()["revision"]
    if "name" not in body.get("compute", {"name": 1}) and body != {"compute": {}}:
        body = {**body, "compute": {"name": "n", **body.get("compute", {})}}  # type: ignore[dict-item]
    error = refused(lambda: client.create_vm(body))
    assert (error.status, error.code, error.field) == (400, "invalid", field)
    assert words in error.message
    assert client.status()["revision"] == before


def test_conflicts_are_409(node: ServerThread) -> None:
    client = admin(node)
    error = refused(lambda: client.create_vm(new_vm("twin", "10.144.133.132")))
    assert error.status == 409
    assert "address 10.144.133.132 already belongs to VM " + EXAMPLE_ID in error.message
    error = refused(lambda: client.create_vm({"compute": {"name": "x", "vmId": EXAMPLE_ID}}))
    assert (error.status, error.code) == (409, "conflict")


def test_body_limits_and_types(node: ServerThread) -> None:
    def post(body: bytes, content_type: str = "application/json") -> tuple[int, str]:
        answer = admin(node).send("POST", "/v1/vms", body, {"Content-Type": content_type})
        return answer.status, answer.json()["error"]["code"]

    huge = b'{"compute": {"name": "' + b"x" * (1024 * 1024) + b'"}}'
    assert post(huge) == (413, "too_large")
    assert post(b"{not json") == (400, "invalid_json")
    assert post(b"name: x", "application/yaml") == (415, "unsupported_media_type")
    assert post(b"[1, 2]")[0] == 400


def test_unknown_routes_and_methods(node: ServerThread) -> None:
    assert admin(node).send("GET", "/v1/nothing").status == 404
    assert admin(node).send("POST", "/v1/vms/examplevmname", b"{}").status == 405


def test_status(node: ServerThread) -> None:
    body = admin(node).status()
    assert body["store"] == "memory:"
    assert body["callerMode"] == "single"
    assert body["storeReachable"] is True
    assert body["vms"] == 1
    assert body["defaultVm"] == EXAMPLE_ID
    assert body["guest"] == [f"http://127.0.0.1:{node.port}"]
    assert body["controlPlane"] == node.admin_url
    assert body["pid"] == node.pid
    assert body["uptime"] >= 0


def test_control_plane_is_not_on_the_guest_listener(node: ServerThread) -> None:
    reply = get(node.port, "/v1/vms", metadata=None)
    assert reply.status == 404  # the guest's IIS 404 page, not the admin API
    assert reply.headers["server"] == "Microsoft-IIS/10.0"


def test_every_route_is_in_the_openapi_document(node: ServerThread) -> None:
    from starlette.routing import Route

    from azimds.admin.api import AdminAPI

    document = AdminClient(node.admin_url, "").openapi()
    app = AdminAPI(None, "x", "single", None, "http://x").app()  # type: ignore[arg-type]
    for route in app.routes:
        assert isinstance(route, Route)
        if route.path == "/openapi.json":
            assert not route.include_in_schema
            continue
        assert route.path in document["paths"], route.path
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in document["paths"][route.path], (route.path, method)


def test_each_path_parameter_is_described() -> None:
    from azimds.admin.api import ROUTES

    for endpoint in ROUTES:
        named = set(re.findall(r"{(\w+)}", endpoint.path))
        described = {p.name for p in endpoint.parameters if p.where == "path"}
        assert named == described, (endpoint.method, endpoint.path)


def test_the_document_says_which_routes_need_no_token() -> None:
    """The public routes come from the route table: info lists them, their operations have no
    security requirement, and every other operation documents the 401."""
    from azimds.admin.api import ROUTES
    from azimds.admin.openapi import document

    generated = document(ROUTES)
    public = {
        "/openapi.json", "/healthz", "/metrics", "/discovery/keys", "/{tenant}/discovery/keys",
        "/{tenant}/.well-known/openid-configuration", "/attestation/intermediate.cer",
        "/attestation/intermediate.pem", "/attestation/root.cer", "/attestation/root.pem",
    }  # fmt: skip
    assert {e.path for e in ROUTES if e.public} == public
    info = generated["info"]["description"]
    assert all(path in info for path in public), info
    for path, item in generated["paths"].items():
        for operation in item.values():
            assert ("security" in operation) == (path in public), path
            assert ("401" in operation["responses"]) == (path not in public), path
