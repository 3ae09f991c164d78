"""What an endpoint is handed and what it gives back: the contract between the route table
(``guest/routes.py``) and the endpoint modules (instance, identity, attested, events, ...)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from azimds.fleet.snapshot import Fleet
from azimds.fleet.vm import VM
from azimds.guest.responses import Response

if TYPE_CHECKING:  # the services' modules hold endpoints, which import this one
    from azimds.guest.attested import AttestedService
    from azimds.guest.events import EventsService
    from azimds.guest.identity import TokenService


@dataclass(frozen=True, slots=True)
class Services:
    """What endpoints that sign or write need from their node (tokens, attested documents,
    approvals)."""

    tokens: TokenService | None = None
    attested: AttestedService | None = None
    events: EventsService | None = None


@dataclass(frozen=True, slots=True)
class ValidRequest:
    """A request that passed every check of the pipeline, handed to its endpoint."""

    vm: VM
    version: str
    segments: tuple[str, ...]  # the path below the route's own, e.g. ("compute", "vmId")
    params: dict[str, str]
    text: bool  # format=text was asked for
    fleet: Fleet
    services: Services
    method: str = "GET"
    body: bytes = b""


# What an endpoint gives back: an answer, or (for a change or a wait) a coroutine function
# making one.
EndpointAnswer = Response | Callable[[], Awaitable[Response]]
Endpoint = Callable[[ValidRequest], EndpointAnswer]
