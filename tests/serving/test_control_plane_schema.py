"""Schemathesis against the control plane: a real node, its own OpenAPI document.

Every operation of ``GET /openapi.json`` is called with requests generated from its schema,
valid ones and deliberately invalid ones, with the node's bearer token, and every answer must
be one the document promises: no 5xx, a documented status code, the documented content type,
a body and headers that match the documented schemas.

Schemathesis is used as a library (its strategies and checks): its pytest integration does not
run on pytest 9. The operations come from the generated ``openapi.document(ROUTES)``, so each is a
test of its own, and a route added to the document is tested without a change here.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.generation.case import Case
from schemathesis.schemas import BaseSchema

from azimds.admin.api import ROUTES
from azimds.admin.openapi import document
from tests.admin.support import admin, refused
from tests.conftest import ServerThread, node_fixture
from tests.http import get

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
METHODS = ("get", "put", "post", "patch", "delete")
OPERATIONS = [
    (method.upper(), path)
    for path, item in document(ROUTES)["paths"].items()
    for method in METHODS
    if method in item
]
# Invalid requests need something to make invalid: a body or a typed query parameter (a path
# parameter is any string).
NEGATABLE = [
    (method, path)
    for method, path in OPERATIONS
    if "requestBody" in (operation := document(ROUTES)["paths"][path][method.lower()])
    or any(p["in"] == "query" for p in operation.get("parameters", []))
]
# Operations that cost real time per call: a key pair each, the event engine's settling.
SLOW = {("POST", "/v1/keys/rotate"): 3, ("POST", "/v1/clock/advance"): 3}
EXAMPLES = 12  # per operation and mode: about a hundred requests a second in all


node = node_fixture("--store", "memory:", scope="module")


@pytest.fixture(scope="module")
def api_schema(node: ServerThread) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{node.admin_url}/openapi.json")


def test_the_document_is_valid_openapi(api_schema: BaseSchema) -> None:
    api_schema.validate()  # against the OpenAPI meta-schema of the version it declares


def test_every_documented_operation_is_tested(api_schema: BaseSchema) -> None:
    loaded = [result.ok() for result in api_schema.get_all_operations()]
    assert sorted((op.method.upper(), op.path) for op in loaded) == sorted(OPERATIONS)


CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS]
CASES += [(m, p, GenerationMode.NEGATIVE) for m, p in NEGATABLE]


@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES]
)
def test_the_control_plane_answers_as_its_document_says(
    api_schema: BaseSchema, node: ServerThread, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    token = {"Authorization": f"Bearer {node.token}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=SLOW.get((method, path), EXAMPLES),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case: Case) -> None:
        case.call_and_validate(headers=token, checks=CHECKS, timeout=10)

    call()


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_boundary_and_invalid_values_are_answered_as_documented(
    api_schema: BaseSchema, node: ServerThread, method: str, path: str
) -> None:
    """Schemathesis's coverage phase: deterministic cases at every boundary of the schema
    (each property missing, of each wrong type, at its limits) and methods the path lacks.
    Here a request the document calls invalid must also be refused (a 4xx): the documented
    request schemas are what the node accepts. (Not in the random phase: its invalid requests
    include unknown query parameters, which the node ignores, as HTTP APIs do.)"""
    operation = api_schema[path][method]
    token = {"Authorization": f"Bearer {node.token}"}
    cases = api_schema.iter_coverage_cases(
        operation,
        generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=api_schema.config.generation_for(operation=operation),
    )
    failures: list[str] = []
    for case in cases:
        try:
            case.call_and_validate(
                headers=token, checks=[*CHECKS, negative_data_rejection], timeout=10
            )
        except (Failure, FailureGroup) as exc:
            found = exc.exceptions if isinstance(exc, FailureGroup) else (exc,)
            titles = "; ".join(f"{f.title}: {f.message}"[:300] for f in found)
            failures.append(f"{case.as_curl_command(headers=token)[:300]}\n    {titles}")
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:10])


# --- what schemathesis found, fixed in admin/api.py -------------------------------------------


@pytest.mark.parametrize("compute", [[1], "x", 5])
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/vms"), ("PUT", "/v1/vms/examplevmname"), ("PATCH", "/v1/vms/examplevmname")],
)
def test_a_compute_that_is_no_object_is_a_400(
    node: ServerThread, method: str, path: str, compute: object
) -> None:
    error = refused(lambda: admin(node).request(method, path, {"compute": compute}))
    assert (error.status, error.code, error.field) == (400, "invalid", "vm.compute")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/clock/advance", b'{"seconds": 1e300}'),
        ("/v1/clock/advance", b'{"seconds": NaN}'),
        ("/v1/clock/advance", b'{"seconds": Infinity}'),
        ("/v1/clock/advance", b'{"seconds": 4000000000}'),
        ("/v1/events", b'{"type": "Freeze", "vms": ["examplevmname"], "after": 1e300}'),
        ("/v1/events", b'{"type": "Freeze", "vms": ["examplevmname"], "after": NaN}'),
        ("/v1/events", b'{"type": "Freeze", "vms": ["examplevmname"], "notBefore": 1e300}'),
        ("/v1/events", b'{"type": "Freeze", "vms": ["examplevmname"], "notBefore": NaN}'),
        (
            "/v1/events",
            b'{"type": "Freeze", "vms": ["examplevmname"], "notBefore": "+99999999999999999999"}',
        ),
        (
            "/v1/events/scenario",
            b'{"events": [{"type": "Reboot", "vms": ["examplevmname"], "after": 1e300}]}',
        ),
    ],
)
def test_times_beyond_printable_dates_are_a_400_and_change_nothing(
    node: ServerThread, path: str, body: bytes
) -> None:
    """Before: stored, then a 500 on every read of the clock or the events, and on the VM's
    own /metadata/scheduledevents, for good (the store keeps them)."""
    answer = admin(node).send("POST", path, body, {"Content-Type": "application/json"})
    assert (answer.status, answer.json()["error"]["code"]) == (400, "invalid"), answer
    admin(node).clock()
    admin(node).events(everything=True)
    events = get(node.port, "/metadata/scheduledevents?api-version=2020-07-01")
    assert events.status == 200, events.body
