"""The guest plane's route table: each category under /metadata and what it accepts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from azimds.fleet.snapshot import Fleet
from azimds.fleet.vm import VM
from azimds.guest import errors, instance, versions
from azimds.guest.attested import AttestedService
from azimds.guest.events import EventsService
from azimds.guest.events import document as events_document
from azimds.guest.identity import TokenService, info_response, token_response
from azimds.guest.responses import XML_TYPE, Response, json_response, make

JSON_ONLY = frozenset({"json"})
JSON_AND_TEXT = frozenset({"json", "text"})


@dataclass(frozen=True, slots=True)
class Services:
    """What endpoints that sign need from their node (tokens, attested documents)."""

    tokens: TokenService | None = None
    attested: AttestedService | None = None
    events: EventsService | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """A request that passed validation, handed to an endpoint."""

    vm: VM
    version: str
    segments: tuple[str, ...]  # the path below the category, e.g. ("compute", "vmId")
    params: dict[str, str]
    text: bool  # format=text was asked for
    fleet: Fleet
    services: Services
    method: str = "GET"
    body: bytes = b""


# What a handler gives back: an answer, or (for a change) a coroutine function making one.
Answer = Response | Callable[[], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    handler: Callable[[Call], Answer]
    versions: versions.VersionSet | None  # None: no api-version needed
    methods: frozenset[str] = frozenset({"GET"})
    formats: frozenset[str] = JSON_ONLY
    subpaths: bool = False  # whether segments below the category are allowed
    cacheable: bool = True  # same request, same VM -> same bytes


def get_versions(call: Call) -> Response:
    """``/metadata/versions``: every supported api-version, ascending."""
    return _VERSIONS_RESPONSE


_VERSIONS_RESPONSE = json_response({"apiVersions": list(versions.API_VERSIONS)})


def get_instance(call: Call) -> Response:
    """``/metadata/instance``: the version-shaped document, filtered by the route.

    Leaves need ``format=text``; the default json on a leaf is a 400 (reference section 3).
    """
    document = call.vm.instance(call.version, call.params.get("extended", "").lower() == "true")
    node = instance.walk(document, call.segments)
    if not instance.found(node):
        return errors.INSTANCE_NOT_FOUND
    if instance.is_leaf(node) and not call.text:
        return errors.Family.INSTANCE.bad_parameter_value(
            "format", call.params.get("format", "json")
        )
    return instance.render(node, call.text)


def get_reprovision_data(call: Call) -> Response:
    """``/metadata/reprovisiondata`` (cloud-init, pre-provisioned VMs).

    404 until the VM has reprovision data (cloud-init polls through 404s), then the OVF XML.
    """
    if not call.vm.reprovision_data:
        return errors.INSTANCE_NOT_FOUND
    return make(200, XML_TYPE, call.vm.reprovision_data.encode("utf-8"))


def get_token(call: Call) -> Response:
    """``/metadata/identity/oauth2/token``: a managed-identity access token."""
    key = call.fleet.jwt_key
    tokens = call.services.tokens
    if tokens is None or key is None:
        return errors.Family.IDENTITY.error(503, "No signing key is available yet; retry")
    vm = call.vm
    return token_response(tokens, vm.system_identity, vm.user_identities, call.params, key)


def get_attested_document(call: Call) -> Response:
    """``/metadata/attested/document``: the VM's identity, PKCS#7-signed."""
    attested = call.services.attested
    if attested is None:
        return errors.Family.INSTANCE.error(
            503, "Attested data is not available. Please retry later"
        )
    nonce = call.params.get("nonce") or None
    return attested.respond(call.vm, call.version, nonce, call.fleet.leaf_for(call.vm))


def get_load_balancer(call: Call) -> Response:
    """``/metadata/loadbalancer``: the VM's Standard Load Balancer data (ports as integers)."""
    if call.vm.load_balancer is None:
        return errors.NO_LOAD_BALANCER
    return json_response({"loadbalancer": call.vm.load_balancer})


def scheduled_events(call: Call) -> Answer:
    """``/metadata/scheduledevents``: GET the VM's events, POST approvals."""
    events = call.services.events
    fleet, vm, version = call.fleet, call.vm, call.version
    if call.method == "POST":
        if events is None:
            return errors.Family.INSTANCE.error(503, "Service unavailable. Please retry later")
        body = call.body
        return lambda: events.approve(fleet, vm, body)
    if events is not None and events.enabling(vm):
        return lambda: events.enable(fleet, vm, version)
    return events_document(fleet, vm, version)


def get_identity_info(call: Call) -> Response:
    """``/metadata/identity/info``: the tenant of the system-assigned identity."""
    return info_response(call.vm.system_identity)


# Routes by their path below /metadata; the longest matching prefix wins.
ROUTES: dict[tuple[str, ...], Route] = {
    ("versions",): Route(get_versions, versions=None),
    ("instance",): Route(get_instance, versions.INSTANCE, formats=JSON_AND_TEXT, subpaths=True),
    ("reprovisiondata",): Route(get_reprovision_data, versions.INSTANCE),
    ("identity", "oauth2", "token"): Route(get_token, versions.IDENTITY, cacheable=False),
    ("identity", "info"): Route(get_identity_info, versions.IDENTITY),
    ("attested", "document"): Route(get_attested_document, versions.ATTESTED, cacheable=False),
    ("loadbalancer",): Route(get_load_balancer, versions.LOADBALANCER),
    ("scheduledevents",): Route(
        scheduled_events, versions.SCHEDULED_EVENTS, methods=frozenset({"GET", "POST"})
    ),
}
# The versions a path that matches no route is checked against, by its first segment.
CATEGORY_VERSIONS = {"identity": versions.IDENTITY, "attested": versions.ATTESTED}
_LONGEST = max(len(path) for path in ROUTES)


def match(segments: list[str]) -> tuple[Route | None, tuple[str, ...]]:
    """The route for a path below /metadata, and the segments below the route's own."""
    for length in range(min(len(segments), _LONGEST), 0, -1):
        route = ROUTES.get(tuple(segments[:length]))
        if route is not None:
            return route, tuple(segments[length:])
    return None, ()
