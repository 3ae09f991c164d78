"""The answer memo stays small: only requests of a real client's size are kept."""

from __future__ import annotations

import asyncio

from azimds.guest.app import MEMO_KEY_LIMIT, GuestApp
from azimds.guest.callers import SingleVM
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
