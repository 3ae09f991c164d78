"""Properties of the guest pipeline and the fleet model, beyond "never a 500".

`tests/guest/test_properties.py` proves that no request makes the guest plane fail. These
properties say what the answer is: only the documented statuses and wire shapes, refusals in
the documented order (docs/behaviour.md, "The order of the checks"), answers that do not
depend on the order of query parameters, a query parser that reads what urllib writes, and
the laws of the fleet model's merge patch and schema normalisation.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azimds.fleet import schema
from azimds.fleet.merge_patch import merge_patch
from azimds.fleet.schema import DocumentError
from azimds.fleet.snapshot import Fleet
from azimds.fleet.vm import VM, build_vm, example_vm
from azimds.guest import errors, versions
from azimds.guest.endpoint import Services
from azimds.guest.pipeline import Outcome, check, handle, run
from azimds.guest.query import DuplicateParameter, parse_query
from azimds.guest.responses import HTML_TYPE, JSON_TYPE, TEXT_TYPE, XML_TYPE, Response
from azimds.kit.fleet import example_fleet, services
from azimds.store.memory import MemoryStore

EXAMPLE = example_vm()
IMDS_SERVER = "IMDS/150.870.65.1854"
IIS_SERVER = "Microsoft-IIS/10.0"
NEWEST = ["2025-04-07", "2024-07-17", "2024-03-15"]
SCHEDULED_EVENTS_NEWEST = ["2020-07-01", "2019-08-01", "2019-04-01"]
IDENTITY_CODES = {400: "invalid_request", 403: "forbidden", 404: "not_found"}
IDENTITY_CODES |= {405: "method_not_allowed", 503: "service_unavailable"}
DOCUMENTED = {200, 400, 403, 404, 405}  # every answer of a node that has finished starting


STORE = MemoryStore()
FLEET = example_fleet(STORE)
VM_ = FLEET.vms[EXAMPLE.vm_id]
STARTING = example_fleet(MemoryStore(), keys=False)


SERVICES = services(STORE)


def answer(
    method: str,
    path: str,
    query: bytes,
    metadata: bytes | None,
    forwarded: bool = False,
    caller: VM | str = VM_,
    fleet: Fleet = FLEET,
    services: Services = SERVICES,
    body: bytes = b"",
) -> tuple[Response, Outcome]:
    """``pipeline.handle``, with a deferred answer (an approval) awaited as the app would."""
    outcome = handle(method, path, query, metadata, forwarded, caller, fleet, services, body)
    if outcome.response is not None:
        return outcome.response, outcome
    assert outcome.deferred is not None
    return asyncio.run(outcome.deferred()), outcome


# --- strategies ----------------------------------------------------------------------------

SEGMENTS = [
    "metadata", "Metadata", "METADATA", "instance", "Instance", "compute", "network",
    "interface", "0", "00", "1", "-1", "ipv4", "ipAddress", "privateIpAddress", "vmId", "tags",
    "tagsList", "storageProfile", "dataDisks", "extended", "versions", "identity", "Identity",
    "oauth2", "token", "info", "attested", "document", "reprovisiondata", "loadbalancer",
    "scheduledevents", "", ".", "..", "%2F", " ",
]  # fmt: skip
ROUTES = [
    "/metadata", "/metadata/", "/metadata/instance", "/metadata/instance/compute",
    "/metadata/instance/compute/vmId", "/metadata/instance/compute/tagsList/0",
    "/metadata/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress",
    "/metadata/versions", "/metadata/reprovisiondata", "/metadata/identity/oauth2/token",
    "/metadata/identity/info", "/metadata/identity/foo", "/metadata/attested/document",
    "/metadata/loadbalancer", "/metadata/scheduledevents", "/metadata/foo",
]  # fmt: skip
NAMES = ["api-version", "API-Version", "format", "Format", "extended", "resource", "nonce"]
NAMES += ["client_id", "object_id", "msi_res_id", "mi_res_id", "bypass_cache", "x"]
VALUES = ["2021-02-01", "2017-04-02", "2017-03-01", "2018-02-01", "2019-08-01", "2020-10-01"]
VALUES += ["2025-04-07", "2099-01-01", "text", "TEXT", "json", "xml", "true", "", " "]
VALUES += ["https://management.azure.com/", "01151308-5d1e-527e-ad80-04fc2eb63874"]

segment_lists = st.lists(st.one_of(st.sampled_from(SEGMENTS), st.text(max_size=10)), max_size=7)
paths = st.one_of(
    st.sampled_from(ROUTES),
    st.tuples(st.sampled_from(["/metadata/", "/", "//metadata/", "/METADATA/"]), segment_lists).map(
        lambda t: t[0] + "/".join(t[1])
    ),
    st.text(max_size=30),
)
names = st.one_of(st.sampled_from(NAMES), st.text(max_size=8))
values = st.one_of(st.sampled_from(VALUES), st.text(max_size=16))
pair_lists = st.lists(st.tuples(names, values), max_size=5)


def encoded(pairs: list[tuple[str, str]]) -> bytes:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs).encode()


queries = st.one_of(
    pair_lists.map(encoded),
    pair_lists.map(lambda ps: "&".join(f"{k}={v}" for k, v in ps).encode("utf-8", "replace")),
    # A valid version first, so the rest reaches the endpoints' own checks.
    pair_lists.map(
        lambda ps: b"api-version=2021-02-01&resource=https://vault.azure.net&" + encoded(ps)
    ),
    st.binary(max_size=40),
)
methods = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "get", "Post"]),
    st.text(min_size=1, max_size=8),
)
metadata_values = st.one_of(
    st.none(),
    st.sampled_from([b"true", b"True", b" TRUE ", b"\ttrue", b"false", b"", b"true, true"]),
    st.binary(max_size=8),
)
# The VM two times in three; otherwise why no VM matched the caller (the 403).
callers = st.one_of(st.just(VM_), st.just(VM_), st.text(max_size=20))
bodies = st.one_of(
    st.just(b""),
    st.sampled_from([b'{"StartRequests":[{"EventId":"x"}]}', b"{}", b"[]", b"null"]),
    st.binary(max_size=40),
)


def family_of(path: str) -> errors.Family:
    """The error family, from the documentation: the identity family is /metadata/identity."""
    below = [segment for segment in path.split("/") if segment][1:]
    return errors.Family.IDENTITY if below[:1] == ["identity"] else errors.Family.INSTANCE


def assert_wire_shape(response: Response, path: str) -> None:
    """The documented wire shape of any answer, by its status and family."""
    headers = dict(response.headers)
    assert headers["content-length"] == str(len(response.body))
    content_type = headers["content-type"]
    assert content_type in (JSON_TYPE, TEXT_TYPE, XML_TYPE, HTML_TYPE)
    if headers["server"] == IIS_SERVER:  # the front end: two answers, no request id
        assert not response.request_id
        assert (response.status, content_type) in ((400, XML_TYPE), (404, HTML_TYPE))
        return
    assert headers["server"] == IMDS_SERVER
    assert response.request_id
    if content_type != JSON_TYPE:
        assert response.status == 200
        return
    parsed = json.loads(response.body)
    if response.status < 400:
        return
    if isinstance(parsed, dict) and "newest-versions" in parsed:
        # The api-version error: one body, whatever the family (clients read [0]).
        assert response.status == 400
        # Each category names versions it accepts: scheduled events have their own list.
        assert parsed["newest-versions"] in (NEWEST, SCHEDULED_EVENTS_NEWEST)
        assert parsed == {
            "error": errors.API_VERSION_INVALID,
            "newest-versions": parsed["newest-versions"],
        }
        assert response.body == json.dumps(parsed, separators=(",", ":")).encode()
    elif family_of(path) is errors.Family.IDENTITY:
        assert list(parsed) == ["error", "error_description"]
        assert parsed["error"] == IDENTITY_CODES[response.status]
        assert isinstance(parsed["error_description"], str)
        assert (
            response.body == json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()
        )
    else:  # the instance family's template, spaces included: { "error": "..." }
        match = re.fullmatch(rb'\{ "error": (".*") \}', response.body, re.DOTALL)
        assert match, response.body
        message = json.loads(match.group(1))
        assert isinstance(message, str)
        assert match.group(1) == json.dumps(message, ensure_ascii=False).encode()


# --- the pipeline --------------------------------------------------------------------------


@settings(max_examples=1500, deadline=None)
@given(methods, paths, queries, metadata_values, st.booleans(), callers, bodies)
def test_every_answer_has_a_documented_status_and_shape(
    method: str,
    path: str,
    query: bytes,
    metadata: bytes | None,
    forwarded: bool,
    caller: VM | str,
    body: bytes,
) -> None:
    response, _ = answer(method, path, query, metadata, forwarded, caller, body=body)
    assert response.status in DOCUMENTED
    assert_wire_shape(response, path)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(ROUTES), pair_lists, st.sampled_from(["GET", "POST"]))
def test_a_starting_node_fails_only_with_the_documented_503s(
    path: str, extra: list[tuple[str, str]], method: str
) -> None:
    """Before the first signing key and attestation leaf exist, tokens and attested documents
    answer 503 with the documented bodies (clients retry 5xx); nothing else is a 5xx."""
    query = b"api-version=2021-02-01&resource=https://vault.azure.net&" + encoded(extra)
    response, _ = answer(method, path, query, b"true", fleet=STARTING, services=services(STORE))
    assert response.status in DOCUMENTED | {503}
    assert_wire_shape(response, path)
    if response.status == 503:
        assert response.body in (
            b'{"error":"service_unavailable",'
            b'"error_description":"No signing key is available yet; retry"}',
            b'{ "error": "Attested data is not available yet. Please retry later" }',
        )


def _is_duplicate(query: bytes) -> bool:
    """The documented rule: a parameter name given twice, compared case-insensitively."""
    pairs = parse_qsl(query.decode("utf-8", "replace"), keep_blank_values=True)
    names = [name.lower() for name, _ in pairs]
    return len(names) != len(set(names))


def _accepted(below: list[str]) -> versions.VersionSet | None:
    """The api-versions a path accepts (docs/behaviour.md and the reference's table)."""
    first = below[0]
    if first == "versions":
        return None
    return {
        "instance": versions.INSTANCE,
        "reprovisiondata": versions.INSTANCE,
        "identity": versions.IDENTITY,
        "attested": versions.ATTESTED,
        "loadbalancer": versions.LOADBALANCER,
        "scheduledevents": versions.SCHEDULED_EVENTS,
    }.get(first, versions.ANY)


def expected_refusal(
    method: str, path: str, query: bytes, metadata: bytes | None, forwarded: bool, caller: Any
) -> Response | None:
    """The answer of the first failing check among the first six, written from the table in
    docs/behaviour.md; None when they all pass."""
    if method not in ("GET", "POST"):
        return errors.iis_invalid_verb(method)
    parts = [segment for segment in path.split("/") if segment]
    if not parts or parts[0].lower() != "metadata":
        return errors.IIS_NOT_FOUND
    family = family_of(path)
    if isinstance(caller, str):
        return family.caller_unknown(caller)
    if metadata is None or metadata.strip().lower() != b"true":
        return family.metadata_header_missing()
    if forwarded:
        return family.forwarded_for_present()
    if _is_duplicate(query):
        return family.query_refused()
    below = parts[1:]
    if not below:
        return errors.api_version_invalid(versions.ANY)
    accepted = _accepted(below)
    version = dict(
        (name.lower(), value)
        for name, value in parse_qsl(query.decode("utf-8", "replace"), keep_blank_values=True)
    ).get("api-version")
    if accepted is not None and not accepted.accepts(version):
        return errors.api_version_invalid(accepted)
    return None


def timeless(outcome: Outcome) -> bool:
    """Whether the same request gets the same bytes at any time: not a token (its expires_in
    counts seconds, ``Response.until``) nor a signed document."""
    return outcome.cacheable and outcome.response is not None and outcome.response.until is None


# Any request, from the example VM or from an unknown caller.
requests = (methods, paths, queries, metadata_values, st.booleans(), callers)


@settings(max_examples=1200, deadline=None)
@given(*requests)
def test_refusals_come_in_the_documented_order(
    method: str,
    path: str,
    query: bytes,
    metadata: bytes | None,
    forwarded: bool,
    caller: VM | str,
) -> None:
    response, _ = answer(method, path, query, metadata, forwarded, caller)
    expected = expected_refusal(method, path, query, metadata, forwarded, caller)
    if expected is not None:
        assert (response.status, response.headers, response.body) == (
            expected.status,
            expected.headers,
            expected.body,
        )
    else:  # every early check passed: no early check's answer may come back
        early = {
            errors.Family.INSTANCE.metadata_header_missing().body,
            errors.Family.IDENTITY.metadata_header_missing().body,
            errors.Family.INSTANCE.forwarded_for_present().body,
            errors.Family.IDENTITY.forwarded_for_present().body,
            errors.Family.INSTANCE.query_refused().body,
            errors.Family.IDENTITY.query_refused().body,
            errors.api_version_invalid(versions.ANY).body,
            errors.IIS_NOT_FOUND.body,
        }
        assert response.body not in early
        assert response.status != 403


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(["GET", "POST"]),
    paths.filter(lambda p: [s.lower() for s in p.split("/") if s][:1] == ["metadata"]),
    queries,
    st.one_of(st.none(), st.binary(max_size=8).filter(lambda v: v.strip().lower() != b"true")),
    st.booleans(),
)
def test_a_missing_metadata_header_wins_over_everything_else(
    method: str, path: str, query: bytes, metadata: bytes | None, forwarded: bool
) -> None:
    """Whatever else is wrong (X-Forwarded-For, duplicates, no or a bad api-version, an
    unknown path, a method the path does not take), the header's error answers."""
    response, _ = answer(method, path, query, metadata, forwarded)
    assert response == family_of(path).metadata_header_missing()


@settings(max_examples=800, deadline=None)
@given(st.sampled_from(ROUTES), st.lists(st.tuples(names, values), max_size=5), st.data())
def test_the_answer_does_not_depend_on_parameter_order(
    path: str, extra: list[tuple[str, str]], data: st.DataObject
) -> None:
    pairs = [("api-version", "2021-02-01"), ("resource", "https://vault.azure.net"), *extra]
    shuffled = data.draw(st.permutations(pairs))
    first, outcome = answer("GET", path, encoded(pairs), b"true")
    second, _ = answer("GET", path, encoded(shuffled), b"true")
    assert first.status == second.status
    if timeless(outcome):  # tokens and signed documents carry times; the rest is bytes
        assert first == second


@settings(max_examples=1000, deadline=None)
@given(*requests)
def test_check_then_run_is_handle(
    method: str,
    path: str,
    query: bytes,
    metadata: bytes | None,
    forwarded: bool,
    caller: VM | str,
) -> None:
    """``check`` hands an endpoint only requests that passed: a method, api-version and
    format the route takes; ``run`` then answers as ``handle`` does."""
    checked = check(method, path, query, metadata, forwarded, caller, FLEET, SERVICES)
    handled = handle(method, path, query, metadata, forwarded, caller, FLEET, SERVICES)
    if isinstance(checked, Outcome):
        assert checked == handled
        return
    route, call = checked
    assert call.method in route.methods
    assert route.versions is None or route.versions.accepts(call.version)
    assert call.params.get("format", "json").lower() in route.formats
    assert call.text == (call.params.get("format", "").lower() == "text")
    assert call.vm is caller
    ran = run(route, call)
    assert ran.cacheable == handled.cacheable
    if timeless(ran):
        assert ran == handled


# --- the query parser ----------------------------------------------------------------------

# Text urllib can encode: no lone surrogates.
clean_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(clean_text, clean_text), max_size=6, unique_by=lambda p: p[0].lower()))
def test_parse_query_reads_what_urllib_writes(pairs: list[tuple[str, str]]) -> None:
    expected = {name.lower(): value for name, value in pairs}
    assert parse_query(urlencode(pairs).encode()) == expected
    assert parse_query(urlencode(pairs, quote_via=quote).encode()) == expected
    assert parse_query(encoded(pairs)) == expected


# ASCII names: "in any case" is ASCII case (Python's lower() and .NET's OrdinalIgnoreCase
# disagree on a few letters such as the micro sign, which no client puts in a parameter name).
ascii_names = st.text(st.characters(max_codepoint=127, exclude_categories=("Cs",)), max_size=8)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.tuples(ascii_names, clean_text), min_size=1, max_size=5),
    st.data(),
)
def test_parse_query_refuses_a_name_given_twice_in_any_case(
    pairs: list[tuple[str, str]], data: st.DataObject
) -> None:
    name, _ = data.draw(st.sampled_from(pairs))
    twin = data.draw(st.sampled_from([name, name.upper(), name.lower(), name.swapcase()]))
    doubled = data.draw(st.permutations([*pairs, (twin, data.draw(clean_text))]))
    with pytest.raises(DuplicateParameter):
        parse_query(urlencode(doubled).encode())


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.binary(max_size=60), queries))
def test_parse_query_takes_any_bytes(raw: bytes) -> None:
    try:
        params = parse_query(raw)
    except DuplicateParameter:
        assert _is_duplicate(raw)
        return
    assert not _is_duplicate(raw)
    assert all(isinstance(v, str) and k == k.lower() for k, v in params.items())


# --- the fleet model: JSON Merge Patch (RFC 7396) ------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=6)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=4), json_values, max_size=5)

# RFC 7396, appendix A: target, patch, result.
RFC_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC_EXAMPLES)
def test_merge_patch_matches_the_rfc_examples(target: Any, patch: Any, result: Any) -> None:
    assert merge_patch(target, patch) == result


@settings(max_examples=300, deadline=None)
@given(json_objects)
def test_an_empty_patch_changes_nothing(target: dict[str, Any]) -> None:
    assert merge_patch(target, {}) == target


@settings(max_examples=500, deadline=None)
@given(json_values, json_values)
def test_a_patch_applied_twice_is_applied_once(target: Any, patch: Any) -> None:
    before = copy.deepcopy((target, patch))
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once
    assert (target, patch) == before  # neither input changed


def _without_nulls(patch: Any) -> Any:
    """What a patch leaves in an empty object: itself, minus the members it sets to null."""
    if not isinstance(patch, dict):
        return patch
    return {k: _without_nulls(v) for k, v in patch.items() if v is not None}


@settings(max_examples=300, deadline=None)
@given(json_objects, json_objects)
def test_a_patch_sets_what_it_names_and_keeps_the_rest(
    target: dict[str, Any], patch: dict[str, Any]
) -> None:
    result = merge_patch(target, patch)
    assert merge_patch({}, patch) == _without_nulls(patch)
    for key, value in patch.items():
        if value is None:
            assert key not in result
        elif not isinstance(value, dict):
            assert result[key] == value
    for key in target.keys() - patch.keys():
        assert result[key] == target[key]


# --- the fleet model: schema normalisation -------------------------------------------------


def _leaf(leaf: schema.Leaf) -> st.SearchStrategy[Any]:
    if leaf.boolean:
        return st.one_of(st.booleans(), st.sampled_from(["true", "False", "TRUE"]))
    return st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)
    )


def documents(node: schema.Node, depth: int = 0) -> st.SearchStrategy[Any]:
    """Input the schema accepts: any subset of the fields, scalars of any JSON type."""
    if isinstance(node, schema.Leaf):
        return _leaf(node)
    if isinstance(node, schema.Arr):
        return st.one_of(st.none(), st.lists(documents(node.item, depth + 1), max_size=2))
    stored = schema.stored_fields(node)  # tags is derived from tagsList, never input here
    fields = {name: documents(f.node, depth + 1) for name, f in stored.items()}
    some = st.fixed_dictionaries({}, optional=fields)  # type: ignore[arg-type]
    return some if depth == 0 else st.one_of(st.none(), some)


def _strings_everywhere(node: schema.Node, value: Any) -> bool:
    if isinstance(node, schema.Leaf):
        return isinstance(value, bool) if node.boolean else isinstance(value, str)
    if isinstance(node, schema.Arr):
        return isinstance(value, list) and all(_strings_everywhere(node.item, v) for v in value)
    stored = schema.stored_fields(node)
    return list(value) == list(stored) and all(
        _strings_everywhere(f.node, value[name]) for name, f in stored.items()
    )


@settings(max_examples=300, deadline=None)
@given(documents(schema.INSTANCE), documents(schema.EXTENDED))
def test_normalize_is_idempotent_and_complete(instance: Any, extended: Any) -> None:
    for node, value in ((schema.INSTANCE, instance), (schema.EXTENDED, extended)):
        once = schema.normalize(node, value, "vm")
        assert schema.normalize(node, once, "vm") == once
        assert _strings_everywhere(node, once)  # every field, every leaf a string (or bool)


@settings(max_examples=200, deadline=None)
@given(documents(schema.INSTANCE), st.sampled_from(versions.API_VERSIONS))
def test_shape_shows_a_version_only_its_own_fields(document: Any, version: str) -> None:
    complete = schema.normalize(schema.INSTANCE, document, "vm")
    shaped = schema.shape(schema.INSTANCE, complete, version)

    def within(node: schema.Node, value: Any, full: Any) -> None:
        if isinstance(node, schema.Arr):
            assert len(value) == len(full)
            for item, whole in zip(value, full, strict=True):
                within(node.item, item, whole)
        elif isinstance(node, schema.Obj):
            shown = [n for n, f in node.fields.items() if f.since <= version]
            assert [n for n in value if n not in shown] == []  # nothing newer than version
            assert list(value) == [n for n in shown if n in value]  # in IMDS order
            for name in value:
                f = node.fields[name]  # a served field shows what it computes, not the stored
                within(f.node, value[name], full[name] if f.served is None else f.served(full))
        else:
            assert value == full

    within(schema.INSTANCE, shaped, complete)


def _breaks(node: schema.Node) -> st.SearchStrategy[Any]:
    """Input the schema refuses somewhere: an unknown field, or the wrong kind of value."""
    wrong_kind: st.SearchStrategy[Any] = st.one_of(
        st.lists(st.integers(), min_size=1, max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=2),
    )
    if isinstance(node, schema.Leaf):
        return wrong_kind
    if isinstance(node, schema.Arr):
        return st.one_of(
            st.just("not a list"),
            st.lists(_breaks(node.item), min_size=1, max_size=1),
        )
    name = st.sampled_from(sorted(node.fields))
    return st.one_of(
        st.sampled_from([[1], "x", 5]),
        st.text(min_size=1, max_size=6)
        .filter(lambda k: k not in node.fields)
        .map(lambda k: {k: "x"}),
        name.flatmap(lambda n: _breaks(node.fields[n].node).map(lambda v: {n: v})),
    )


@settings(max_examples=500, deadline=None)
@given(_breaks(schema.INSTANCE))
def test_normalize_refuses_only_with_a_document_error_naming_the_place(bad: Any) -> None:
    with pytest.raises(DocumentError) as caught:
        schema.normalize(schema.INSTANCE, bad, "vm")
    assert caught.value.where.startswith("vm")
    assert caught.value.fix


ADDRESSES = st.one_of(st.just(""), st.ip_addresses(v=4).map(str))


@settings(max_examples=150, deadline=None)
@given(documents(schema.INSTANCE), st.lists(ADDRESSES, max_size=3), st.data())
def test_a_vm_read_back_from_its_description_is_the_same_vm(
    document: Any, addresses: list[str], data: st.DataObject
) -> None:
    """The store keeps ``vm.description()``; a snapshot rebuilt from it is the same VM."""
    document = dict(document)
    document["network"] = {
        "interface": [{"ipv4": {"ipAddress": [{"privateIpAddress": a}]}} for a in addresses]
    }
    compute = dict(document.get("compute") or {})
    if compute.get("tagsList") is None:  # given both, they would have to agree
        compute["tags"] = data.draw(  # a string or a mapping (or none), unlike other fields
            st.one_of(
                st.none(),
                # Stored as tagsList, so ";" and ":" survive in names and values alike.
                st.dictionaries(st.text("ab:;", max_size=3), st.text("xy:;", max_size=3)),
                st.text("ab:;", max_size=8),
            )
        )
    document["compute"] = compute
    vm = build_vm(document)
    again = build_vm(vm.description())
    assert again == vm
    assert again.description() == vm.description()
