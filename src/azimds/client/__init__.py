"""A Python client for IMDS, the real service at 169.254.169.254 and azimds alike.

::

    from azimds.client import IMDSClient

    with IMDSClient() as imds:                      # $AZURE_POD_IDENTITY_AUTHORITY_HOST or
        print(imds.instance("compute/vmId"))        # http://169.254.169.254
        token = imds.token("https://vault.azure.net")

``AsyncIMDSClient`` has the same API as coroutines. Both send ``Metadata: true``, never use a
proxy, negotiate the api-version and retry as Microsoft advises (``RetryPolicy``); see
docs/client.md.

The clients (httpx) and the attested-document verification (cryptography) are imported on
first use, so importing the package for its exceptions or models costs little.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from azimds.client.errors import (
    ApiVersionError,
    AttestationError,
    BadRequest,
    Gone,
    IdentityError,
    IdentityNotFound,
    IMDSConnectionError,
    IMDSError,
    IMDSHTTPError,
    IMDSResponseError,
    NotFound,
    ServerError,
    TooManyRequests,
)
from azimds.client.models import (
    AccessToken,
    AttestedDocument,
    InboundRule,
    LoadBalancer,
    OutboundRule,
    PublicIpAddress,
    ScheduledEvent,
    ScheduledEvents,
    parse_tags,
)
from azimds.client.protocol import (
    DEFAULT_API_VERSION,
    DEFAULT_ENDPOINT,
    IDENTITY_API_VERSION,
    SCHEDULED_EVENTS_API_VERSION,
    Reply,
)
from azimds.client.retry import RetryPolicy

if TYPE_CHECKING:
    from azimds.client.aio import AsyncIMDSClient
    from azimds.client.attested import verify_attested
    from azimds.client.sync import IMDSClient

_LAZY = {
    "IMDSClient": "azimds.client.sync",
    "AsyncIMDSClient": "azimds.client.aio",
    "verify_attested": "azimds.client.attested",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_API_VERSION",
    "DEFAULT_ENDPOINT",
    "IDENTITY_API_VERSION",
    "SCHEDULED_EVENTS_API_VERSION",
    "AccessToken",
    "ApiVersionError",
    "AsyncIMDSClient",
    "AttestationError",
    "AttestedDocument",
    "BadRequest",
    "Gone",
    "IMDSClient",
    "IMDSConnectionError",
    "IMDSError",
    "IMDSHTTPError",
    "IMDSResponseError",
    "IdentityError",
    "IdentityNotFound",
    "InboundRule",
    "LoadBalancer",
    "NotFound",
    "OutboundRule",
    "PublicIpAddress",
    "Reply",
    "RetryPolicy",
    "ScheduledEvent",
    "ScheduledEvents",
    "ServerError",
    "TooManyRequests",
    "parse_tags",
    "verify_attested",
]
