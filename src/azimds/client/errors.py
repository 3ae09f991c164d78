"""The client's exceptions: one base, ``IMDSError``, and a class for each kind of failure.

::

    IMDSError                      status, body, url, headers
    ├── IMDSConnectionError        no answer at all (refused, reset, timed out), retries spent
    ├── IMDSResponseError          an answer the service should not give (2xx, unreadable)
    ├── AttestationError           the attested document does not verify
    └── IMDSHTTPError              the service answered with a status other than 2xx
        ├── BadRequest             400
        │   ├── ApiVersionError    400 with "newest-versions": the api-version was refused
        │   └── IdentityError      400 from /metadata/identity (error, error_description)
        │       └── IdentityNotFound   "Identity not found": no such identity on the VM
        ├── NotFound               404
        ├── Gone                   410 (IMDS updating), still after 70 s of retries
        ├── TooManyRequests        429, still after the retries
        └── ServerError            5xx, still after the retries
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class IMDSError(Exception):
    """Anything that went wrong talking to IMDS. ``status`` is None when nothing answered."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: bytes = b"",
        url: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.url = url
        self.headers: Mapping[str, str] = headers or {}

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON; None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class IMDSConnectionError(IMDSError):
    """No answer: the connection was refused or reset, or a try timed out, until the retries or
    the deadline ran out."""


class IMDSResponseError(IMDSError):
    """The service answered, but not with what the endpoint gives (e.g. a 2xx that is not
    JSON, a token without ``access_token``)."""


class AttestationError(IMDSError):
    """The attested document's signature, certificate chain, names or times do not verify."""


class IMDSHTTPError(IMDSError):
    """The service answered with a status other than 2xx (after any retries)."""

    @property
    def error(self) -> str:
        """The message of the error body: the instance family's ``error`` or the identity
        family's ``error_description``; otherwise the body itself."""
        return error_message(self.body)


class BadRequest(IMDSHTTPError):
    """400: the request was refused (header, parameters, path or format)."""


class ApiVersionError(BadRequest):
    """400 with ``newest-versions``: the service does not accept the api-version sent."""

    @property
    def newest_versions(self) -> list[str]:
        return newest_versions(self.body)


class IdentityError(BadRequest):
    """400 from ``/metadata/identity``: ``error`` (e.g. ``invalid_request``) and
    ``error_description`` as the service sent them."""

    @property
    def code(self) -> str:
        parsed = self.json()
        return str(parsed.get("error", "")) if isinstance(parsed, dict) else ""


class IdentityNotFound(IdentityError):
    """The VM has no managed identity, or none matching the client_id / object_id /
    msi_res_id asked for."""


class NotFound(IMDSHTTPError):
    """404: no such path or element (or no load balancer metadata)."""


class Gone(IMDSHTTPError):
    """410: IMDS is updating ("available within 70 seconds"), and still was when the client
    stopped retrying."""


class TooManyRequests(IMDSHTTPError):
    """429: throttled (5 requests a second per VM; identity 20 a second), retries spent."""


class ServerError(IMDSHTTPError):
    """5xx, retries spent."""


IDENTITY_NOT_FOUND = "Identity not found"


def newest_versions(body: bytes) -> list[str]:
    """The ``newest-versions`` of an api-version 400 body, newest first; [] if there are none."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return []
    versions = parsed.get("newest-versions") if isinstance(parsed, dict) else None
    if not isinstance(versions, list):
        return []
    return [v for v in versions if isinstance(v, str) and v]


def error_for(
    status: int, body: bytes, url: str, headers: Mapping[str, str], identity: bool
) -> IMDSHTTPError:
    """The exception for a non-2xx answer; ``identity``: the request was to /metadata/identity."""
    cls: type[IMDSHTTPError]
    if status == 400:
        if newest_versions(body):
            cls = ApiVersionError
        elif identity:
            cls = IdentityError
            parsed = _json_object(body)
            if parsed.get("error_description") == IDENTITY_NOT_FOUND:
                cls = IdentityNotFound
        else:
            cls = BadRequest
    elif status == 404:
        cls = NotFound
    elif status == 410:
        cls = Gone
    elif status == 429:
        cls = TooManyRequests
    elif status >= 500:
        cls = ServerError
    else:
        cls = IMDSHTTPError
    message = f"HTTP {status} from {url}: {error_message(body)}"
    return cls(message, status=status, body=body, url=url, headers=headers)


def error_message(body: bytes) -> str:
    """An error body's message: the instance family's ``error``, the identity family's
    ``error_description``, or the body itself (``Too many requests`` is plain text)."""
    parsed = _json_object(body)
    for key in ("error_description", "error"):
        if isinstance(parsed.get(key), str):
            return str(parsed[key])
    return body.decode("utf-8", "replace").strip()


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
