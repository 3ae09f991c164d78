"""The guest plane's error catalogue: every error answer, with its status and exact bytes.

Errors come in three wire shapes (reference sections 1, 5 and 9):

- **IIS front end**: verbs other than GET and POST (400, ``text/xml`` ``InvalidHttpVerb``) and
  paths outside ``/metadata`` (404, the stock IIS 10 HTML page). ``Server: Microsoft-IIS/10.0``,
  no request id; these never reach IMDS, so no Metadata-header check precedes them.
- **Instance family** (instance, attested, versions, load balancer, scheduled events and unknown
  paths): ``{ "error": "<message>" }`` with the spaces inside the braces that captures show.
- **Identity family** (``/metadata/identity/...``): the OAuth-style
  ``{"error":"<code>","error_description":"<message>"}``, compact.

Each message is written once below; the family decides the wrapping. Messages marked
UNCONFIRMED in the reference are choices documented in ``docs/behaviour.md``. The fleet model
gives reasons (``fleet.identity.Unselected``, an unknown event's id), never wire texts: its
messages belong to the control plane.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from html import escape
from importlib import resources

from azimds.fleet.identity import Unselected
from azimds.guest import versions
from azimds.guest.responses import (
    HTML_TYPE,
    JSON_TYPE,
    NEVER,
    TEXT_TYPE,
    XML_TYPE,
    Response,
    compact_json,
    make,
)

# The IIS front end that answers unknown verbs and paths outside /metadata.
IIS_SERVER_HEADER = "Microsoft-IIS/10.0"

# --- messages -----------------------------------------------------------------------------

METADATA_HEADER_MISSING = "Required metadata header not specified"
FORWARDED_FOR_PRESENT = "X-Forwarded-For header is not allowed"
# The [DOC-LB] generic validation messages, which IMDS uses for its query checks.
UNEXPECTED_QUERY = "Unexpected request. Please check the query parameters and retry."
API_VERSION_INVALID = (
    "Bad request. api-version is invalid or was not specified in the request. "
    "For more information refer to aka.ms/azureimds"
)
NOT_FOUND = "Not found"
# What fault rules answer with (reference sections 3, 5 and 7); the 410 and 500 wordings are
# UNCONFIRMED, chosen from the documentation's descriptions (docs/behaviour.md).
UPDATING = (
    "IMDS is going through updates and will be available within 70 seconds. Please retry later"
)
INTERNAL_ERROR = "Internal server error. Please retry later"
IDENTITY_INTERNAL_ERROR = "Failed to retrieve token from the Active directory."
UNAVAILABLE = "Internal service unavailable. Please retry later"  # [DOC-LB]
# azimds's own 503s, while a node lacks what an endpoint needs (a signing key, the store).
NO_SIGNING_KEY = "No signing key is available yet; retry"
ATTESTED_UNAVAILABLE = "Attested data is not available. Please retry later"
ATTESTED_NOT_YET = "Attested data is not available yet. Please retry later"
SERVICE_UNAVAILABLE = "Service unavailable. Please retry later"
# Managed identities (reference section 5; the selector conflict is azimds's own wording).
RESOURCE_MISSING = "Required query variable 'resource' is missing"
IDENTITY_NOT_FOUND = "Identity not found"
MULTIPLE_IDENTITIES = (
    "Multiple user assigned identities exist, please specify the clientId / resourceId of the "
    "identity in the token request"
)
ONE_SELECTOR = "Only one of client_id, object_id, msi_res_id and mi_res_id may be given"
UNSELECTED = {
    Unselected.NOT_FOUND: IDENTITY_NOT_FOUND,
    Unselected.AMBIGUOUS: MULTIPLE_IDENTITIES,
    Unselected.SELECTORS: ONE_SELECTOR,
}
# Why a caller is no known VM (guest/callers.py): the 403's parenthesis, and the log's.
NO_DEFAULT_VM = "no default VM is set on this azimds node"


def not_an_address(host: str) -> str:
    return f"the caller's address '{host}' is not an IP address"


def no_vm_at(address: str) -> str:
    return f"no VM of this azimds node has the primary address {address}"


# Scheduled-event approvals (reference section 6; docs/behaviour.md).
APPROVAL_MALFORMED = 'Bad request. The body must be {"StartRequests":[{"EventId":"..."}]}'


def _body_too_large(limit: int) -> str:  # [DOC-LB]
    return f"Request body is larger than MaxBodyLength: {limit}"


def _unknown_event(event_id: str) -> str:
    return f"Bad request. no scheduled event {event_id}"


def _bad_parameter_value(name: str, value: str) -> str:
    return (
        f'Parameter value is not allowed, or parameter value "{value}" is not allowed for '
        f'parameter "{name}". Please fix the request and retry.'
    )


def _api_not_found(path: str, method: str) -> str:
    return f'API is not found: Path = "{path}", Method = "{method}"'


def _method_not_allowed(path: str, method: str) -> str:
    return f'Http method is not allowed: Path = "{path}", Method = "{method}"'


# --- families -----------------------------------------------------------------------------

_IDENTITY_CODES = {
    400: "invalid_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    410: "gone",
    429: "too_many_requests",
    500: "unknown",  # the code in [DOC-MI]'s 500 example
    503: "service_unavailable",
}


class Family(enum.Enum):
    INSTANCE = "instance"
    IDENTITY = "identity"

    @classmethod
    def for_path(cls, path: str) -> Family:
        segments = [segment for segment in path.split("/") if segment]
        return cls.IDENTITY if segments[1:2] == ["identity"] else cls.INSTANCE

    def error(self, status: int, message: str, until: float | None = None) -> Response:
        if self is Family.IDENTITY:
            body = compact_json({"error": _IDENTITY_CODES[status], "error_description": message})
        else:
            # The real service writes this one template with spaces: '{ "error": "..." }'.
            body = b'{ "error": ' + json.dumps(message, ensure_ascii=False).encode() + b" }"
        return make(status, JSON_TYPE, body, until=until)

    def metadata_header_missing(self) -> Response:
        if self is Family.INSTANCE:
            # The odd "Bad request: . " prefix is verbatim from captures (68 bytes in all).
            return self.error(400, "Bad request: . " + METADATA_HEADER_MISSING)
        return self.error(400, METADATA_HEADER_MISSING)

    def forwarded_for_present(self) -> Response:
        if self is Family.INSTANCE:
            return self.error(400, "Bad request: . " + FORWARDED_FOR_PRESENT)
        return self.error(400, FORWARDED_FOR_PRESENT)

    def unavailable(self, message: str) -> Response:
        """A 503 while the node lacks what the endpoint needs: never kept, as a retry may
        find it there."""
        return self.error(503, message, until=NEVER)

    def caller_unknown(self, reason: str) -> Response:
        """azimds's own: the caller is no VM of this node (source-ip mode, or no default VM)."""
        return self.error(403, f"Forbidden: the caller is not a known VM ({reason})", NEVER)

    def query_refused(self) -> Response:
        """A duplicate parameter name, or a query over the limits."""
        return self.error(400, UNEXPECTED_QUERY)

    def bad_parameter_value(self, name: str, value: str) -> Response:
        return self.error(400, _bad_parameter_value(name, value))

    def api_not_found(self, path: str, method: str) -> Response:
        return self.error(404, _api_not_found(path, method))

    def method_not_allowed(self, path: str, method: str) -> Response:
        return self.error(405, _method_not_allowed(path, method))

    def failure(self, status: int) -> Response:
        """The answer to an injected failure: 410, 429, 500 or 503."""
        if status == 429:
            return TOO_MANY_REQUESTS if self is Family.INSTANCE else IDENTITY_TOO_MANY_REQUESTS
        if status == 500 and self is Family.IDENTITY:
            return self.error(500, IDENTITY_INTERNAL_ERROR)
        return self.error(status, {410: UPDATING, 500: INTERNAL_ERROR, 503: UNAVAILABLE}[status])


def api_version_invalid(version_set: versions.VersionSet) -> Response:
    """400 with the newest versions: clients (MSAL, cloud-init) read ``newest-versions[0]``."""
    return make(
        400,
        JSON_TYPE,
        compact_json({"error": API_VERSION_INVALID, "newest-versions": list(version_set.newest)}),
    )


def identity_refused(message: str) -> Response:
    """A token or info request the identity rules refuse (400, ``invalid_request``)."""
    return Family.IDENTITY.error(400, message)


def invalid_resource(resource: str, tenant_id: str, now: float) -> Response:
    """Azure AD's answer for an unknown resource, passed through by IMDS (400). Its ids and
    time are new on every answer, so it is never kept."""
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    description = (
        f"AADSTS500011: The resource principal named {resource} was not found in the tenant "
        f"named {tenant_id}. This can happen if the application has not been installed by the "
        "administrator of the tenant or consented to by any user in the tenant. You might have "
        f"sent your authentication request to the wrong tenant.\r\nTrace ID: {trace}\r\n"
        f"Correlation ID: {correlation}\r\nTimestamp: {stamp}"
    )
    body = {
        "error": "invalid_resource",
        "error_description": description,
        "error_codes": [500011],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": "https://login.microsoftonline.com/error?code=500011",
    }
    return make(400, JSON_TYPE, compact_json(body), until=NEVER)


def body_too_large(limit: int) -> Response:
    return Family.INSTANCE.error(400, _body_too_large(limit))


def unknown_event(event_id: str) -> Response:
    """An approval naming an id that is no Scheduled or Started event of the VM."""
    return Family.INSTANCE.error(400, _unknown_event(event_id))


INSTANCE_NOT_FOUND = Family.INSTANCE.error(404, NOT_FOUND)
BAD_APPROVAL_BODY = Family.INSTANCE.error(400, APPROVAL_MALFORMED)
# Beyond the rate limits: plain text, as SUSE's cloud-netconfig compares it; the identity
# family's JSON is the swagger's example.
TOO_MANY_REQUESTS = make(429, TEXT_TYPE, b"Too many requests")
IDENTITY_TOO_MANY_REQUESTS = Family.IDENTITY.error(429, "Too many requests")
# [DOC-LB] 2023 wording, for a VM behind no Standard Load Balancer.
NO_LOAD_BALANCER = Family.INSTANCE.error(
    404,
    "No load balancer metadata is found. Please check if your VM is using any nonbasic SKU "
    "load balancer and retry later.",
)


# --- the IIS front end --------------------------------------------------------------------

_INVALID_VERB_XML = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<Error xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xmlns:xsd="http://www.w3.org/2001/XMLSchema">\n'
    "    <Code>InvalidHttpVerb</Code>\n"
    "    <Message>The HTTP verb specified was not recognized by the server.</Message>\n"
    "    <Details>'{method}' is not a supported verb.</Details>\n"
    "</Error>"
)


def iis_invalid_verb(method: str) -> Response:
    body = _INVALID_VERB_XML.replace("{method}", escape(method, quote=False)).encode("utf-8")
    return make(400, XML_TYPE, body, server=IIS_SERVER_HEADER)


# The stock IIS 10 404 page, byte for byte (CRLF line ends; 1245 bytes as captured).
IIS_NOT_FOUND = make(
    404,
    HTML_TYPE,
    resources.files("azimds.guest").joinpath("iis-404.html").read_bytes(),
    server=IIS_SERVER_HEADER,
)
