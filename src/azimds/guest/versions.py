"""The api-version table: which versions exist and which each category accepts.

One place for every version rule of the reference (section 2). Adding a version is a one-line
change to ``API_VERSIONS``; everything else (``/metadata/versions``, the ``newest-versions``
list of the 400 body, category minimums) is derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from azimds.guest.responses import Response, json_response

if TYPE_CHECKING:
    from azimds.guest.endpoint import ValidRequest

# Every api-version the documentation lists, ascending (the order /metadata/versions uses).
API_VERSIONS: tuple[str, ...] = (
    "2017-03-01",
    "2017-04-02",
    "2017-08-01",
    "2017-10-01",
    "2017-12-01",
    "2018-02-01",
    "2018-04-02",
    "2018-10-01",
    "2019-02-01",
    "2019-03-11",
    "2019-04-30",
    "2019-06-01",
    "2019-06-04",
    "2019-08-01",
    "2019-08-15",
    "2019-11-01",
    "2020-06-01",
    "2020-07-15",
    "2020-09-01",
    "2020-10-01",
    "2020-12-01",
    "2021-01-01",
    "2021-02-01",
    "2021-03-01",
    "2021-05-01",
    "2021-08-01",
    "2021-10-01",
    "2021-11-01",
    "2021-11-15",
    "2021-12-13",
    "2023-07-01",
    "2023-11-15",
    "2024-03-15",
    "2024-07-17",
    "2025-04-07",
)

# Scheduled events keep their own list (reference section 2, "Per-endpoint version sets").
SCHEDULED_EVENTS_VERSIONS: tuple[str, ...] = (
    "2017-03-01",
    "2017-08-01",
    "2017-11-01",
    "2019-01-01",
    "2019-04-01",
    "2019-08-01",
    "2020-07-01",
)

NEWEST_VERSIONS_SHOWN = 3


@dataclass(frozen=True, slots=True)
class VersionSet:
    """The api-versions one category of endpoints accepts."""

    accepted: frozenset[str]
    newest: tuple[str, ...]  # descending, as the 400 body's "newest-versions" lists them

    def accepts(self, version: str | None) -> bool:
        return version is not None and version in self.accepted


def version_set(versions: tuple[str, ...], minimum: str | None = None) -> VersionSet:
    accepted = [v for v in versions if minimum is None or v >= minimum]
    # "newest-versions" names versions this category accepts: clients (msal) retry with
    # newest-versions[0], which must then work. Scheduled events' differ from the service's.
    newest = tuple(sorted(accepted, reverse=True)[:NEWEST_VERSIONS_SHOWN])
    return VersionSet(accepted=frozenset(accepted), newest=newest)


# Category -> accepted versions ("Version introduced per category" table).
INSTANCE = version_set(API_VERSIONS, minimum="2017-04-02")
ATTESTED = version_set(API_VERSIONS, minimum="2018-10-01")
IDENTITY = version_set(API_VERSIONS, minimum="2018-02-01")
LOADBALANCER = version_set(API_VERSIONS, minimum="2020-10-01")
SCHEDULED_EVENTS = version_set(SCHEDULED_EVENTS_VERSIONS)
# Paths under /metadata that match no category (and the root) still have their api-version
# checked first; their 400 names the service's newest versions.
ANY = version_set(API_VERSIONS)


def get_versions(request: ValidRequest) -> Response:
    """``/metadata/versions``: every supported api-version, ascending."""
    return _VERSIONS_RESPONSE


_VERSIONS_RESPONSE = json_response({"apiVersions": list(API_VERSIONS)})
