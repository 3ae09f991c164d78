"""The guest plane's route table: each category under /metadata, its endpoint, and what it
accepts. The endpoints live in their own modules; whether an answer may be reused is the
answer's to say (``Response.until``), not the route's."""

from __future__ import annotations

from dataclasses import dataclass

from azimds.guest import attested, events, identity, instance, loadbalancer, versions
from azimds.guest.endpoint import Endpoint

JSON_ONLY = frozenset({"json"})
JSON_AND_TEXT = frozenset({"json", "text"})


@dataclass(frozen=True, slots=True)
class Route:
    handler: Endpoint
    versions: versions.VersionSet | None  # None: no api-version needed
    methods: frozenset[str] = frozenset({"GET"})
    formats: frozenset[str] = JSON_ONLY
    subpaths: bool = False  # whether segments below the category are allowed


# Routes by their path below /metadata; the longest matching prefix wins.
ROUTES: dict[tuple[str, ...], Route] = {
    ("versions",): Route(versions.get_versions, versions=None),
    ("instance",): Route(
        instance.get_instance, versions.INSTANCE, formats=JSON_AND_TEXT, subpaths=True
    ),
    ("reprovisiondata",): Route(instance.get_reprovision_data, versions.INSTANCE),
    ("identity", "oauth2", "token"): Route(identity.get_token, versions.IDENTITY),
    ("identity", "info"): Route(identity.get_info, versions.IDENTITY),
    ("attested", "document"): Route(attested.get_document, versions.ATTESTED),
    ("loadbalancer",): Route(loadbalancer.get_load_balancer, versions.LOADBALANCER),
    ("scheduledevents",): Route(
        events.scheduled_events, versions.SCHEDULED_EVENTS, methods=frozenset({"GET", "POST"})
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
