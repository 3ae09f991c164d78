"""The validation pipeline: one request in, one pre-rendered response out, no I/O.

The checks run in the reference's order (section 10), and the first that fails answers:

1. IIS front end: a verb other than GET/POST -> 400 XML; a path outside ``/metadata`` -> 404 HTML.
   Then the caller must be a known VM (``guest/callers.py``) -> 403.
2. ``Metadata: true`` (value case-insensitive) -> 400, in the family's shape.
3. No ``X-Forwarded-For`` -> 400.
4. No duplicate query parameter names, and a query within the limits -> 400.
5. api-version: the root ``/metadata`` always answers the 400 with ``newest-versions``;
   elsewhere a missing, unknown or too-old version does.
6. Path: an unknown category (or a sub-path where the category has none) -> 404.
7. Method: POST where the category does not take it -> 405.
8. Format: a value the category does not offer -> 400.
Then (``run``) the endpoint runs; ``/metadata/instance`` answers 404 for unknown keys and 400
for a leaf without ``format=text``. Fault rules fire between the two (``guest/app.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from azimds.fleet.snapshot import Fleet
from azimds.fleet.vm import VM
from azimds.guest import errors, versions
from azimds.guest.endpoint import Services, ValidRequest
from azimds.guest.query import QueryRefused, parse_query
from azimds.guest.responses import Response
from azimds.guest.routes import CATEGORY_VERSIONS, Route, match

FRONT_END_VERBS = ("GET", "POST")
NO_SERVICES = Services()


@dataclass(frozen=True, slots=True)
class Outcome:
    response: Response | None  # None when ``deferred`` makes it (a change to the fleet, a wait)
    deferred: Callable[[], Awaitable[Response]] | None = None

    @property
    def cacheable(self) -> bool:
        """Whether the memo may keep the answer: the answer's own say (``Response.until``),
        the one rule; what ``deferred`` makes is never kept."""
        return self.response is not None and self.response.reusable


def handle(
    method: str,
    path: str,
    query: bytes,
    metadata: bytes | None,
    forwarded: bool,
    vm: VM | str,
    fleet: Fleet,
    services: Services = NO_SERVICES,
    body: bytes = b"",
) -> Outcome:
    """EndpointAnswer one guest request. ``metadata`` is the raw header value (None when absent);
    ``vm`` is the caller's VM, or why no VM matched the caller."""
    checked = check(method, path, query, metadata, forwarded, vm, fleet, services, body)
    return checked if isinstance(checked, Outcome) else run(*checked)


def check(
    method: str,
    path: str,
    query: bytes,
    metadata: bytes | None,
    forwarded: bool,
    vm: VM | str,
    fleet: Fleet,
    services: Services = NO_SERVICES,
    body: bytes = b"",
) -> Outcome | tuple[Route, ValidRequest]:
    """Run every check: the refusal, or the endpoint and the call to make (fault rules
    fire between the two, on requests that passed)."""
    if method not in FRONT_END_VERBS:
        return Outcome(errors.iis_invalid_verb(method))
    parts = [segment for segment in path.split("/") if segment]
    if not parts or parts[0].lower() != "metadata":
        return Outcome(errors.IIS_NOT_FOUND)
    below = parts[1:]
    family = errors.Family.for_path(path)
    if not isinstance(vm, VM):
        return Outcome(family.caller_unknown(vm))

    if metadata is None or metadata.strip().lower() != b"true":
        return Outcome(family.metadata_header_missing())
    if forwarded:
        return Outcome(family.forwarded_for_present())
    try:
        params = parse_query(query)
    except QueryRefused:
        return Outcome(family.query_refused())

    version = params.get("api-version")
    if not below:
        return Outcome(errors.api_version_invalid(versions.ANY))
    route, rest = match(below)
    if route is not None:
        accepted = route.versions
    else:
        accepted = CATEGORY_VERSIONS.get(below[0], versions.ANY)
    if accepted is not None and not accepted.accepts(version):
        return Outcome(errors.api_version_invalid(accepted))

    if route is None or (rest and not route.subpaths):
        return Outcome(family.api_not_found(path, method))
    if method not in route.methods:
        return Outcome(family.method_not_allowed(path, method))
    requested_format = params.get("format")
    if requested_format is not None and requested_format.lower() not in route.formats:
        return Outcome(family.bad_parameter_value("format", requested_format))

    request = ValidRequest(
        vm=vm,
        version=version or "",
        segments=rest,
        params=params,
        text=requested_format is not None and requested_format.lower() == "text",
        fleet=fleet,
        services=services,
        method=method,
        body=body,
    )
    return route, request


def run(route: Route, request: ValidRequest) -> Outcome:
    """Call the endpoint of a request that passed every check."""
    answer = route.handler(request)
    if isinstance(answer, Response):
        return Outcome(answer)
    return Outcome(None, deferred=answer)
