"""The token-signing keys: their public facts, and rotation. (The JWKS is public: ``public``.)"""

from __future__ import annotations

import datetime as dt

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from azimds.admin.core import Control, Returns, Routes, Schema
from azimds.fleet.signing_keys import rotate_jwt_key
from azimds.guest.identity import TOKEN_REFRESH_MARGIN

KEYS = Schema("Keys", {"type": "object", "properties": {"keys": {"type": "array"}}})
ROTATED = Schema(
    "Rotated",
    {"type": "object", "properties": {"kid": {"type": "string"}, "overlap": {"type": "integer"}}},
)
ROUTES = Routes()


@ROUTES.add("GET", "/v1/keys", Returns(200, "Keys", KEYS))
async def list_keys(control: Control, request: Request) -> Response:
    """The token-signing keys (public facts only)."""
    fleet = control.node.served
    keys = [
        {
            "kid": key.kid,
            "active": key.kid == fleet.active_kid,
            "created": key.created,
            "retires": key.retires,
        }
        for key in sorted(fleet.jwt_keys.values(), key=lambda k: k.created)
    ]
    return JSONResponse({"keys": keys})


@ROUTES.add("POST", "/v1/keys/rotate", Returns(200, "Rotated", ROTATED))
async def rotate(control: Control, request: Request) -> Response:
    """A new signing key; the old one stays published for the overlap.

    The overlap, the token lifetime and the refresh margin, outlasts the old key's tokens.
    """
    overlap = control.tokens.lifetime + TOKEN_REFRESH_MARGIN
    now = dt.datetime.now(dt.UTC)
    kid = await control.write(lambda txn: rotate_jwt_key(txn, now, overlap))
    return JSONResponse({"kid": kid, "overlap": overlap})
