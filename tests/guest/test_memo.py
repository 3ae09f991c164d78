"""The answer memo stays small (only requests of a real client's size are kept) and keeps
only what the answer allows."""

from __future__ import annotations

import asyncio

from azimds.fleet.vm import VM, example_vm
from azimds.guest.app import MEMO_KEY_LIMIT, GuestApp
from azimds.guest.callers import SingleVM
from azimds.guest.endpoint import Services
from azimds.guest.pipeline import Outcome, handle
from azimds.kit.inprocess import call
from tests.guest.test_properties import FLEET, SERVICES


def ask(app: GuestApp, path: str) -> int:
    answers = asyncio.run(
        call(app, "GET", path, b"api-version=2021-02-01", [(b"metadata", b"true")])
    )
    return answers[0].status


def test_long_absurd_paths_are_answered_but_not_kept() -> None:
    app = GuestApp(FLEET, SingleVM(), SERVICES)
    assert ask(app, "/metadata/instance/compute/name") == 400  # a leaf without format=text
    assert len(app._memo) == 1
    for n in range(50):
        assert ask(app, f"/metadata/instance/{n}" + "x" * MEMO_KEY_LIMIT) == 404
    assert len(app._memo) == 1


def _outcome(path: str, query: bytes, caller: VM | str | None = None) -> Outcome:
    vm = VM_ if caller is None else caller
    return handle("GET", path, query, b"true", False, vm, FLEET, SERVICES)


VM_ = FLEET.vms[example_vm().vm_id]
TOKEN = "/metadata/identity/oauth2/token"
MANAGEMENT = b"api-version=2018-02-01&resource=https://management.azure.com/"


def test_the_answer_alone_says_whether_it_is_kept() -> None:
    """One rule (``Response.until``): a token until its second ends, a token minted on request,
    a signed document, a caller refused and a 503 never; every other answer for the snapshot."""
    token = _outcome(TOKEN, MANAGEMENT)
    assert token.cacheable and token.response is not None and token.response.until is not None
    assert not _outcome(TOKEN, MANAGEMENT + b"&bypass_cache=true").cacheable
    assert not _outcome("/metadata/attested/document", b"api-version=2021-02-01").cacheable
    assert not _outcome("/metadata/instance", b"api-version=2021-02-01", "no VM").cacheable
    bare = handle("GET", TOKEN, MANAGEMENT, b"true", False, VM_, FLEET, Services())
    assert bare.response is not None and bare.response.status == 503 and not bare.cacheable
    instance = _outcome("/metadata/instance", b"api-version=2021-02-01")
    assert instance.cacheable and instance.response is not None
    assert instance.response.until is None
    # An identity refusal depends on the snapshot only: kept like any other answer.
    assert _outcome(TOKEN, MANAGEMENT + b"&client_id=nobody").cacheable


def test_a_never_kept_answer_is_not_in_the_memo() -> None:
    app = GuestApp(FLEET, SingleVM(), SERVICES)
    answers = asyncio.run(
        call(app, "GET", "/metadata/attested/document", b"api-version=2021-02-01",
             [(b"metadata", b"true")])
    )  # fmt: skip
    assert answers[0].status == 200
    assert app._memo == {}
