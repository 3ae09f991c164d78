"""Every error of the reference's catalogue, byte for byte, from a real server on a real socket;
and the fleet model's reasons, which the catalogue words."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest

from azimds.fleet.events import EVENT_KIND, unknown_to
from azimds.fleet.identity import Identity, Unselected, select
from azimds.guest import errors
from azimds.store.memory import MemoryStore
from tests.conftest import VECTORS
from tests.http import Reply, get, send_raw

JSON = "application/json; charset=utf-8"
IMDS = "IMDS/150.870.65.1854"
IIS = "Microsoft-IIS/10.0"

HEADER_MISSING = b'{ "error": "Bad request: . Required metadata header not specified" }'
IDENTITY_HEADER_MISSING = (
    b'{"error":"invalid_request","error_description":"Required metadata header not specified"}'
)
NEWEST = (
    b'{"error":"Bad request. api-version is invalid or was not specified in the request. '
    b'For more information refer to aka.ms/azureimds",'
    b'"newest-versions":["2025-04-07","2024-07-17","2024-03-15"]}'
)
NOT_FOUND = b'{ "error": "Not found" }'
BAD_FORMAT_JSON = (
    b'{ "error": "Parameter value is not allowed, or parameter value \\"json\\" is not allowed '
    b'for parameter \\"format\\". Please fix the request and retry." }'
)
DUPLICATE = b'{ "error": "Unexpected request. Please check the query parameters and retry." }'
XFF = b'{ "error": "Bad request: . X-Forwarded-For header is not allowed" }'


def assert_imds(reply: Reply, status: int, body: bytes, content_type: str = JSON) -> None:
    assert (reply.status, reply.body) == (status, body)
    assert reply.headers["content-type"] == content_type
    assert reply.headers["server"] == IMDS
    assert reply.headers["content-length"] == str(len(body))
    uuid.UUID(reply.headers["x-ms-request-id"])
    assert "date" in reply.headers


# --- Metadata header -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/metadata/instance?api-version=2021-02-01",
        "/metadata/instance/compute?api-version=2021-01-01",
        "/metadata/versions",
        "/metadata",
        "/metadata/attested/document?api-version=2020-09-01",
        "/metadata/scheduledevents?api-version=2020-07-01",
        "/metadata/loadbalancer?api-version=2020-10-01",
        "/metadata/nosuchthing",
    ],
)
def test_missing_metadata_header_instance_family(port: int, target: str) -> None:
    reply = get(port, target, metadata=None)
    assert_imds(reply, 400, HEADER_MISSING)
    assert len(reply.body) == 68  # as captured


@pytest.mark.parametrize("value", ["false", "1", "yes", "", "true, true"])
def test_wrong_metadata_header_value(port: int, value: str) -> None:
    assert_imds(
        get(port, "/metadata/instance?api-version=2021-02-01", metadata=value), 400, HEADER_MISSING
    )


@pytest.mark.parametrize("value", ["true", "True", "TRUE", " true "])
def test_metadata_value_is_case_insensitive(port: int, value: str) -> None:
    reply = get(port, "/metadata/instance?api-version=2021-02-01", metadata=value)
    assert reply.status == 200


@pytest.mark.parametrize(
    "target",
    [
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/",
        "/metadata/identity/oauth2/token",  # msal-node's probe: no query at all
        "/metadata/identity/oauth2/token/",
        "/METADATA/identity/oauth2/token",
        "/metadata/identity/info?api-version=2018-02-01",
    ],
)
def test_missing_metadata_header_identity_family(port: int, target: str) -> None:
    reply = get(port, target, metadata=None)
    assert_imds(reply, 400, IDENTITY_HEADER_MISSING)
    assert len(reply.body) == 88  # content-length 88 in the azure-sdk-for-js capture


def test_header_check_precedes_api_version_and_path(port: int) -> None:
    assert_imds(get(port, "/metadata/nosuch/thing?x=1&x=2", metadata=None), 400, HEADER_MISSING)


# --- X-Forwarded-For ---------------------------------------------------------------------------


def test_forwarded_for_is_rejected(port: int) -> None:
    reply = get(port, "/metadata/instance?api-version=2021-02-01", {"X-Forwarded-For": "10.0.0.1"})
    assert_imds(reply, 400, XFF)


def test_forwarded_for_on_identity_uses_identity_shape(port: int) -> None:
    reply = get(port, "/metadata/identity/oauth2/token", {"X-Forwarded-For": "10.0.0.1"})
    assert_imds(
        reply,
        400,
        b'{"error":"invalid_request","error_description":"X-Forwarded-For header is not allowed"}',
    )


def test_metadata_check_precedes_forwarded_for(port: int) -> None:
    reply = get(port, "/metadata/instance", {"X-Forwarded-For": "10.0.0.1"}, metadata=None)
    assert_imds(reply, 400, HEADER_MISSING)


# --- query parameters and api-version ------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "api-version=2021-02-01&api-version=2021-02-01",
        "api-version=2021-02-01&format=json&format=json",
        "api-version=2021-02-01&API-VERSION=2021-02-01",
        "api-version=2021-02-01&extended=true&extended=false",
    ],
)
def test_duplicate_query_parameters(port: int, query: str) -> None:
    assert_imds(get(port, f"/metadata/instance?{query}"), 400, DUPLICATE)


@pytest.mark.parametrize(
    "target",
    [
        "/metadata/instance",
        "/metadata/instance?",
        "/metadata/instance?api-version=",
        "/metadata/instance?api-version=latest",
        "/metadata/instance?api-version=2017-07-01",  # withdrawn
        "/metadata/instance?api-version=2017-03-01",  # listed, but before /instance existed
        "/metadata/instance?api-version=2019-01-01",  # a scheduled-events-only version
        "/metadata/instance?api-version=2099-01-01",
        "/metadata/instance/compute/vmId?format=text",
        "/metadata",
        "/metadata/",
        "/metadata?api-version=2021-02-01",  # the root always answers this (SUSE, 2023)
        "/metadata?api-version=2017-04-02&format=text",
        "/metadata/nosuchthing",
        "/Metadata/instance",
    ],
)
def test_api_version_missing_or_invalid(port: int, target: str) -> None:
    assert_imds(get(port, target), 400, NEWEST)


def test_newest_versions_lead_with_the_newest(port: int) -> None:
    body = json.loads(get(port, "/metadata/instance").body)
    versions = json.loads(get(port, "/metadata/versions").body)["apiVersions"]
    assert body["newest-versions"] == sorted(versions, reverse=True)[:3]


SCHEDULED_EVENTS_NEWEST = NEWEST.replace(
    b'["2025-04-07","2024-07-17","2024-03-15"]', b'["2020-07-01","2019-08-01","2019-04-01"]'
)


@pytest.mark.parametrize("version", ["", "2025-04-07", "2021-02-01", "latest"])
def test_scheduled_events_400_names_scheduled_events_versions(port: int, version: str) -> None:
    reply = get(port, f"/metadata/scheduledevents?api-version={version}")
    assert_imds(reply, 400, SCHEDULED_EVENTS_NEWEST)


@pytest.mark.parametrize(
    "path",
    [
        "/metadata/instance",
        "/metadata/attested/document",
        "/metadata/identity/oauth2/token",
        "/metadata/loadbalancer",
        "/metadata/scheduledevents",
    ],
)
def test_retrying_with_newest_versions_0_is_accepted(port: int, path: str) -> None:
    """What msal and cloud-init do with the 400: ask again with newest-versions[0]."""
    query = "resource=https://management.azure.com/&" if "identity" in path else ""
    refused = get(port, f"{path}?{query}api-version=2099-01-01")
    assert refused.status == 400
    newest = json.loads(refused.body)["newest-versions"][0]
    retried = get(port, f"{path}?{query}api-version={newest}")
    # The load balancer's 404 is the example VM having none: past the api-version check.
    assert retried.status == (404 if "loadbalancer" in path else 200), retried.body
    assert b"newest-versions" not in retried.body


# --- paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/metadata/instance/nosuchkey?api-version=2021-02-01",
        "/metadata/instance/compute/nosuchkey?api-version=2021-02-01",
        "/metadata/instance/Compute?api-version=2021-02-01",  # below /metadata, case matters
        "/metadata/instance/network/interface/1?api-version=2021-02-01",
        "/metadata/instance/network/interface/-1?api-version=2021-02-01",
        "/metadata/instance/network/interface/x?api-version=2021-02-01",
        "/metadata/instance/compute/vmId/0?api-version=2021-02-01&format=text",
        "/metadata/instance/compute/userData?api-version=2020-12-01&format=text",  # newer field
        "/metadata/instance/extended?api-version=2021-02-01",  # only with extended=true
        "/metadata/reprovisiondata?api-version=2019-06-01",  # no reprovision data for this VM
    ],
)
def test_unknown_key_or_index(port: int, target: str) -> None:
    assert_imds(get(port, target), 404, NOT_FOUND)


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/metadata/nosuchthing?api-version=2021-02-01", "/metadata/nosuchthing"),
        ("/metadata/versions/extra", "/metadata/versions/extra"),
        ("/metadata/instancex?api-version=2021-02-01", "/metadata/instancex"),
    ],
)
def test_unknown_api(port: int, target: str, path: str) -> None:
    body = f'{{ "error": "API is not found: Path = \\"{path}\\", Method = \\"GET\\"" }}'
    assert_imds(get(port, target), 404, body.encode())


@pytest.mark.parametrize(
    "target", ["/", "/foo", "/metadatax", "/latest/meta-data/", "/favicon.ico"]
)
def test_paths_outside_metadata_get_the_iis_404_page(port: int, target: str) -> None:
    reply = get(port, target, metadata=None)
    assert reply.status == 404
    assert reply.headers["content-type"] == "text/html"
    assert reply.headers["server"] == IIS
    assert reply.headers["content-length"] == "1245"
    assert "x-ms-request-id" not in reply.headers
    expected = (VECTORS / "iis-404.sha256").read_text().strip()
    assert hashlib.sha256(reply.body).hexdigest() == expected
    assert b"<title>404 - File or directory not found.</title>\r\n" in reply.body


# --- methods ---------------------------------------------------------------------------------


def iis_verb_body(method: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<Error xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema">\n'
        "    <Code>InvalidHttpVerb</Code>\n"
        "    <Message>The HTTP verb specified was not recognized by the server.</Message>\n"
        f"    <Details>'{method}' is not a supported verb.</Details>\n"
        "</Error>"
    ).encode()


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
@pytest.mark.parametrize("target", ["/", "/metadata/instance?api-version=2021-02-01"])
def test_other_verbs_get_the_iis_400(port: int, method: str, target: str) -> None:
    reply = get(port, target, method=method, metadata=None)
    body = iis_verb_body(method)
    assert (reply.status, reply.body) == (400, body)
    assert reply.headers["content-type"] == "text/xml; charset=utf-8"
    assert reply.headers["server"] == IIS
    assert "x-ms-request-id" not in reply.headers
    if method == "PUT":
        assert len(body) == 322  # as captured


def test_head_gets_the_iis_400_headers_without_a_body(port: int) -> None:
    reply = get(port, "/metadata/instance/compute?api-version=2021-01-01", method="HEAD")
    assert reply.status == 400
    assert reply.body == b""
    assert reply.headers["content-length"] == "323"  # as captured with curl -I
    assert reply.headers["server"] == IIS


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/metadata/instance?api-version=2021-02-01", "/metadata/instance"),
        ("/metadata/instance/compute?api-version=2021-02-01", "/metadata/instance/compute"),
        ("/metadata/versions", "/metadata/versions"),
    ],
)
def test_post_where_only_get_is_allowed(port: int, target: str, path: str) -> None:
    body = f'{{ "error": "Http method is not allowed: Path = \\"{path}\\", Method = \\"POST\\"" }}'
    assert_imds(
        get(port, target, method="POST", headers={"Content-Length": "0"}), 405, body.encode()
    )


def test_post_outside_metadata_is_the_iis_404(port: int) -> None:
    reply = get(port, "/foo", method="POST", headers={"Content-Length": "0"}, metadata=None)
    assert (reply.status, reply.headers["server"]) == (404, IIS)


# --- format ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/metadata/instance/compute/vmId?api-version=2021-02-01",
        "/metadata/instance/compute/vmId?api-version=2018-04-02&format=json",
        "/metadata/instance/network/interface/0/macAddress?api-version=2017-04-02",
    ],
)
def test_leaf_without_format_text(port: int, target: str) -> None:
    assert_imds(get(port, target), 400, BAD_FORMAT_JSON)


@pytest.mark.parametrize(
    ("target", "value"),
    [
        ("/metadata/instance?api-version=2021-02-01&format=xml", "xml"),
        ("/metadata/instance?api-version=2021-02-01&format=", ""),
        ("/metadata/versions?format=text", "text"),
    ],
)
def test_format_not_offered(port: int, target: str, value: str) -> None:
    body = (
        f'{{ "error": "Parameter value is not allowed, or parameter value \\"{value}\\" is not '
        f'allowed for parameter \\"format\\". Please fix the request and retry." }}'
    )
    assert_imds(get(port, target), 400, body.encode())


# --- transport -------------------------------------------------------------------------------


def test_absolute_form_request_target(port: int) -> None:
    """Clients given an HTTP proxy send the full URL as the request target."""
    raw = (
        b"GET http://169.254.169.254/metadata/instance/compute/vmId?api-version=2021-02-01"
        b"&format=text HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n"
        b"Connection: close\r\n\r\n"
    )
    reply = send_raw(port, raw)
    assert (reply.status, reply.body) == (200, b"02aab8a4-74ef-476e-8182-f6d2ba4166a6")


def test_keep_alive_serves_several_requests_on_one_connection(server: object, port: int) -> None:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        ids = set()
        for _ in range(3):
            connection.request("GET", "/metadata/versions", headers={"Metadata": "true"})
            response = connection.getresponse()
            assert response.status == 200
            response.read()
            ids.add(response.getheader("x-ms-request-id"))
        assert len(ids) == 3  # a fresh request id on every answer, cached body or not
    finally:
        connection.close()


def test_every_reason_the_fleet_gives_is_worded_once_in_the_catalogue() -> None:
    """The fleet model says why (``Unselected``); the guest plane says it on the wire."""
    assert set(errors.UNSELECTED) == set(Unselected)
    assert errors.identity_refused(errors.UNSELECTED[Unselected.NOT_FOUND]).body == (
        b'{"error":"invalid_request","error_description":"Identity not found"}'
    )
    system = Identity("c", "o", "t", "/vm", system=True)
    users = (Identity("u1", "o1", "t", "/u1", False), Identity("u2", "o2", "t", "/u2", False))
    assert select(None, (), {}) is Unselected.NOT_FOUND
    assert select(None, users, {}) is Unselected.AMBIGUOUS
    assert select(system, users, {"client_id": "u1", "object_id": "o1"}) is Unselected.SELECTORS
    assert select(system, users, {"client_id": "U2"}) == users[1]


def test_an_approval_names_the_first_event_the_vm_may_not_approve() -> None:
    store = MemoryStore()
    body = {"type": "Reboot", "resources": ["vm-a"], "names": ["a"], "status": "Scheduled"}
    body |= {"appearsAt": 0, "notBefore": 900, "duration": -1, "description": ""}
    store.transact(lambda txn: txn.put(EVENT_KIND, "shown", {**body, "source": "Platform"}))
    refused = store.transact(lambda txn: unknown_to(txn, ["shown", "gone"], "vm-a"))[0]
    assert refused == "gone"
    assert store.transact(lambda txn: unknown_to(txn, ["shown"], "vm-b"))[0] == "shown"
    assert store.transact(lambda txn: unknown_to(txn, ["shown"], "vm-a"))[0] is None
    assert (
        errors.unknown_event("gone").body == b'{ "error": "Bad request. no scheduled event gone" }'
    )
