"""Property tests: no path, query or header ever makes the guest plane fail (never a 500)."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azimds.fleet.vm import example_vm
from azimds.guest.app import GuestApp
from azimds.guest.callers import SingleVM
from azimds.guest.pipeline import handle
from azimds.kit.fleet import example_fleet, services
from azimds.kit.inprocess import call
from azimds.store.memory import MemoryStore
from tests.http import get

VM = example_vm()


STORE = MemoryStore()
FLEET = example_fleet(STORE)
SERVICES = services(STORE)
ROUTES = [
    "/metadata/instance", "/metadata/instance/compute", "/metadata/instance/compute/vmId",
    "/metadata/instance/network/interface/0", "/metadata/versions", "/metadata/reprovisiondata",
    "/metadata/identity/oauth2/token", "/metadata/identity/oauth2/token/",
    "/metadata/identity/info", "/metadata/attested/document", "/metadata",
]  # fmt: skip
KNOWN_SEGMENTS = [
    "metadata", "Metadata", "instance", "compute", "network", "interface", "0", "1", "ipv4",
    "ipAddress", "vmId", "tags", "tagsList", "storageProfile", "dataDisks", "extended",
    "versions", "identity", "oauth2", "token", "info", "attested", "document", "",
    "reprovisiondata",
]  # fmt: skip
KNOWN_PARAMS = ["api-version", "format", "extended", "resource", "API-VERSION", "nonce"]
KNOWN_PARAMS += ["client_id", "object_id", "msi_res_id", "mi_res_id", "bypass_cache"]
KNOWN_VALUES = ["2021-02-01", "2017-04-02", "2025-04-07", "2018-02-01", "text", "json", "true"]
KNOWN_VALUES += ["", "x", "https://management.azure.com/", "01151308-5d1e-527e-ad80-04fc2eb63874"]

segments = st.lists(st.one_of(st.sampled_from(KNOWN_SEGMENTS), st.text(max_size=12)), max_size=8)
paths = st.one_of(
    segments.map(lambda parts: "/" + "/".join(parts)),
    segments.map(lambda parts: "/metadata/" + "/".join(parts)),
    st.sampled_from(ROUTES),  # real endpoints, so the random queries reach the handlers
)
pairs = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(KNOWN_PARAMS), st.text(max_size=10)),
        st.one_of(st.sampled_from(KNOWN_VALUES), st.text(max_size=20)),
    ),
    max_size=6,
)


def _encode(ps: list[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k)}={quote(v)}" for k, v in ps)


raw_queries = st.one_of(
    pairs.map(lambda ps: _encode(ps).encode()),
    # A valid version (and a resource) first, so random extras reach the endpoints' own checks.
    pairs.map(
        lambda ps: (
            "api-version=2020-09-01&resource=https://vault.azure.net&" + _encode(ps)
        ).encode()
    ),
    st.binary(max_size=60),
)
methods = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE"]), st.text(min_size=1, max_size=8)
)
metadata_values = st.one_of(
    st.just(b"true"),
    st.none(),
    st.sampled_from([b"true", b"True", b"false"]),
    st.binary(max_size=10),
)

ALLOWED = {200, 400, 403, 404, 405}


@settings(max_examples=3000, deadline=None)
@given(methods, paths, raw_queries, metadata_values, st.booleans())
def test_pipeline_always_answers_a_documented_status(
    method: str, path: str, query: bytes, metadata: bytes | None, forwarded: bool
) -> None:
    outcome = handle(method, path, query, metadata, forwarded, VM, FLEET, SERVICES)
    response = outcome.response
    assert response.status in ALLOWED
    headers = dict(response.headers)
    assert headers["content-length"] == str(len(response.body))
    if headers["content-type"].startswith("application/json"):
        json.loads(response.body)


header_lists = st.lists(
    st.tuples(
        st.one_of(
            st.sampled_from([b"metadata", b"x-forwarded-for", b"host"]), st.binary(max_size=8)
        ),
        st.binary(max_size=16),
    ),
    max_size=5,
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(methods, paths, raw_queries, header_lists)
def test_rsgi_app_sends_one_complete_answer(
    method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    app = GuestApp(FLEET, SingleVM(), SERVICES)
    answers = asyncio.run(call(app, method, path, query, headers))
    assert len(answers) == 1
    assert answers[0].status in ALLOWED
    assert answers[0].header("content-length") == str(len(answers[0].body))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(segments, pairs)
def test_real_server_never_fails(
    port: int, parts: list[str], params: list[tuple[str, str]]
) -> None:
    target = "/metadata/" + "/".join(quote(p, safe="") for p in parts)
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)
    reply = get(port, f"{target}?{query}" if query else target)
    assert reply.status in ALLOWED
    assert reply.headers["content-length"] == str(len(reply.body))


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(ROUTES), pairs)
def test_endpoints_answer_any_parameters(path: str, extra: list[tuple[str, str]]) -> None:
    """A valid request to a real endpoint, plus anything: the endpoint's own checks answer."""
    query = f"api-version=2020-09-01&resource=https://vault.azure.net&{_encode(extra)}"
    response = handle("GET", path, query.encode(), b"true", False, VM, FLEET, SERVICES).response
    assert response.status in ALLOWED
    if response.status == 200 and dict(response.headers)["content-type"].startswith(
        "application/json"
    ):
        json.loads(response.body)
