"""GET /metadata/scheduledevents: the document's exact shape, and what each api-version shows
(reference section 6, and section 2 for the api-version and Metadata-header errors)."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator

import pytest

from tests.conftest import ServerThread
from tests.guest.events.support import (
    DEFAULT_VM,
    FIELDS,
    FREEZE_DESCRIPTION,
    MANUAL,
    METADATA_400,
    NEWEST_VERSIONS_400,
    REBOOT_DESCRIPTION,
    approve_as_guest,
    document,
    guest_get,
    schedule,
)

GUID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")


def test_no_events_is_an_empty_list_at_incarnation_0(node: ServerThread) -> None:
    reply = guest_get(node)
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    assert reply.body == b'{"DocumentIncarnation":0,"Events":[]}'


def test_a_scheduled_reboot_byte_for_byte_at_2020_07_01(node: ServerThread) -> None:
    event = schedule(node, type="Reboot", notBefore="2099-07-01T12:34:56Z")
    event_id = event["eventId"]
    assert GUID.match(event_id), event_id
    reply = guest_get(node)
    assert reply.status == 200
    incarnation = json.loads(reply.body)["DocumentIncarnation"]
    assert type(incarnation) is int and incarnation > 0
    expected = (
        f'{{"DocumentIncarnation":{incarnation},"Events":[{{"EventId":"{event_id}",'
        '"EventStatus":"Scheduled","EventType":"Reboot","ResourceType":"VirtualMachine",'
        f'"Resources":["{DEFAULT_VM}"],"NotBefore":"Wed, 01 Jul 2099 12:34:56 GMT",'
        f'"Description":"{REBOOT_DESCRIPTION}","EventSource":"Platform",'
        '"DurationInSeconds":-1}]}'
    )
    assert reply.body == expected.encode()


def test_not_before_is_empty_once_started(node: ServerThread) -> None:
    event = schedule(node, type="Freeze", duration=5, source="User")
    assert approve_as_guest(node, event["eventId"]).status == 200
    reply = guest_get(node)
    incarnation = json.loads(reply.body)["DocumentIncarnation"]
    expected = (
        f'{{"DocumentIncarnation":{incarnation},"Events":[{{"EventId":"{event["eventId"]}",'
        '"EventStatus":"Started","EventType":"Freeze","ResourceType":"VirtualMachine",'
        f'"Resources":["{DEFAULT_VM}"],"NotBefore":"",'
        f'"Description":"{FREEZE_DESCRIPTION}","EventSource":"User",'
        '"DurationInSeconds":5}]}'
    )
    assert reply.body == expected.encode()


def test_default_not_before_is_the_minimum_notice_in_rfc_1123(node: ServerThread) -> None:
    event = schedule(node, type="Reboot")
    (shown,) = document(node)["Events"]
    nb = shown["NotBefore"]
    assert re.fullmatch(
        r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d "
        r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT",
        nb,
    ), nb
    appears = dt.datetime.strptime(event["appearsAt"], "%Y-%m-%dT%H:%M:%SZ")
    not_before = dt.datetime.strptime(nb, "%a, %d %b %Y %H:%M:%S GMT")
    assert (not_before - appears).total_seconds() == 900


# --- what each api-version shows ------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed() -> Iterator[ServerThread]:
    """A node whose VM has a Freeze (User, 5 s), a Preempt and a Terminate, all Scheduled."""
    process = ServerThread(*MANUAL)
    far = "2099-07-01T12:34:56Z"
    schedule(process, type="Freeze", duration=5, source="User", notBefore=far)
    schedule(process, type="Preempt", notBefore=far)
    schedule(process, type="Terminate", notBefore=far)
    yield process
    process.stop()


BASE = FIELDS[:6]


@pytest.mark.parametrize(
    ("version", "types", "fields", "resource"),
    [
        ("2017-03-01", ["Freeze"], BASE, "_" + DEFAULT_VM),
        ("2017-08-01", ["Freeze"], BASE, DEFAULT_VM),
        ("2017-11-01", ["Freeze", "Preempt"], BASE, DEFAULT_VM),
        ("2019-01-01", ["Freeze", "Preempt", "Terminate"], BASE, DEFAULT_VM),
        ("2019-04-01", ["Freeze", "Preempt", "Terminate"], FIELDS[:7], DEFAULT_VM),
        ("2019-08-01", ["Freeze", "Preempt", "Terminate"], FIELDS[:8], DEFAULT_VM),
        ("2020-07-01", ["Freeze", "Preempt", "Terminate"], FIELDS, DEFAULT_VM),
    ],
)
def test_each_version_shows_its_types_and_fields(
    mixed: ServerThread, version: str, types: list[str], fields: tuple[str, ...], resource: str
) -> None:
    events = document(mixed, version)["Events"]
    assert sorted(e["EventType"] for e in events) == types
    for event in events:
        assert tuple(event) == fields  # exactly these keys, in this order
        assert event["Resources"] == [resource]
        assert event["ResourceType"] == "VirtualMachine"
        assert event["NotBefore"] == "Wed, 01 Jul 2099 12:34:56 GMT"
    freeze = next(e for e in events if e["EventType"] == "Freeze")
    if "Description" in fields:
        assert freeze["Description"] == FREEZE_DESCRIPTION
        assert {e["Description"] for e in events if e["EventType"] != "Freeze"} <= {""}
    if "EventSource" in fields:
        assert freeze["EventSource"] == "User"
    if "DurationInSeconds" in fields:
        assert freeze["DurationInSeconds"] == 5
        assert {e["DurationInSeconds"] for e in events if e["EventType"] != "Freeze"} == {-1}


@pytest.mark.parametrize("version", ["2021-02-01", "2018-10-01", "latest", "", None])
def test_a_version_outside_the_scheduled_events_list_is_the_400_with_newest_versions(
    mixed: ServerThread, version: str | None
) -> None:
    reply = guest_get(mixed, version)
    assert reply.status == 400
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    assert reply.body == NEWEST_VERSIONS_400


def test_no_metadata_header_is_the_instance_family_400(mixed: ServerThread) -> None:
    reply = guest_get(mixed, metadata=None)
    assert reply.status == 400
    assert reply.body == METADATA_400
    assert guest_get(mixed, metadata="false").body == METADATA_400


def test_metadata_header_value_is_case_insensitive(mixed: ServerThread) -> None:
    assert guest_get(mixed, metadata="True").status == 200


def test_format_text_is_refused(mixed: ServerThread) -> None:
    reply = guest_get(mixed, "2020-07-01&format=text")
    assert reply.status == 400
    assert reply.body.startswith(b'{ "error": ')
    assert "format" in json.loads(reply.body)["error"]


def test_format_json_is_the_default(mixed: ServerThread) -> None:
    assert guest_get(mixed, "2020-07-01&format=json").body == guest_get(mixed).body
