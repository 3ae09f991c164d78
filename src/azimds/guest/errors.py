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
UNCONFIRMED in the reference are choices documented in ``docs/behaviour.md``.
"""

from __future__ import annotations

import enum
import json
from html import escape
from importlib import resources

from azimds.guest import versions
from azimds.guest.responses import (
    HTML_TYPE,
    JSON_TYPE,
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

    def error(self, status: int, message: str) -> Response:
        if self is Family.IDENTITY:
            body = compact_json({"error": _IDENTITY_CODES[status], "error_description": message})
        else:
            # The real service writes this one template with spaces: '{ "error": "..." }'.
            body = b'{ "error": ' + json.dumps(message, ensure_ascii=False).encode() + b" }"
        return make(status, JSON_TYPE, body)

    def metadata_header_missing(self) -> Response:
        if self is Family.INSTANCE:
            # The odd "Bad request: . " prefix is verbatim from captures (68 bytes in all).
            return self.error(400, "Bad request: . " + METADATA_HEADER_MISSING)
        return self.error(400, METADATA_HEADER_MISSING)

    def forwarded_for_present(self) -> Response:
        if self is Family.INSTANCE:
            return self.error(400, "Bad request: . " + FORWARDED_FOR_PRESENT)
        return self.error(400, FORWARDED_FOR_PRESENT)

    def caller_unknown(self, reason: str) -> Response:
        """azimds's own: the caller is no VM of this node (source-ip mode, or no default VM)."""
        return self.error(403, f"Forbidden: the caller is not a known VM ({reason})")

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


INSTANCE_NOT_FOUND = Family.INSTANCE.error(404, NOT_FOUND)
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
