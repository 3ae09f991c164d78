"""One request to IMDS, without I/O: the address, the headers, api-version negotiation and
retries, written once for the sync and the async client.

A request is a *flow*: a generator that yields steps (``Send`` a request, ``Sleep`` a while)
and is sent each step's outcome (a ``Reply``, a ``Failure``, or None after a sleep). The sync
and async clients only perform the steps; everything that decides lives here.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from azimds.client.errors import IMDSConnectionError, IMDSResponseError, error_for, newest_versions
from azimds.client.retry import Retrier, RetryPolicy, retry_after

# Environment variable azure-identity, msal and @azure/identity read for the IMDS address.
SDK_ENDPOINT_ENV = "AZURE_POD_IDENTITY_AUTHORITY_HOST"

DEFAULT_ENDPOINT = "http://169.254.169.254"
# The api-version each family of endpoints is asked with unless told otherwise. Instance-style
# endpoints get the newest documented version (negotiated down when the service refuses it);
# identity the version every SDK sends; scheduled events keep their own list (reference
# section 2), which the service's "newest-versions" does not name, so theirs is fixed.
DEFAULT_API_VERSION = "2025-04-07"
IDENTITY_API_VERSION = "2018-02-01"
SCHEDULED_EVENTS_API_VERSION = "2020-07-01"
FIXED_API_VERSIONS = {
    "identity": IDENTITY_API_VERSION,
    "scheduledevents": SCHEDULED_EVENTS_API_VERSION,
}
UNVERSIONED = "versions"  # /metadata/versions takes no api-version
OUTSIDE = ""  # paths outside /metadata: the IIS front end, no api-version

USER_AGENT = "azimds-client"

# Each retry is logged here at INFO (the try, what went wrong, the wait), as it happens:
# `azimds get` shows these on stderr, so a call that waits does not wait silently.
log = logging.getLogger("azimds.client")

T = TypeVar("T")


# --- what a flow asks for and is given -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer: ``headers`` with lower-case names; ``api_version`` is the one sent."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str
    api_version: str | None = None
    family: str = ""  # the endpoint family asked (see ``family``)

    @property
    def ok(self) -> bool:
        return 200 <= self.status <= 299

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class Failure:
    """No answer: what the transport raised (refused, reset, timed out)."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class Send:
    request: Request
    timeout: float
    external: bool = False  # not IMDS (an AIA certificate URL): proxies allowed


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Step = Send | Sleep
Outcome = Reply | Failure | None
Flow = Generator[Step, Outcome, T]


@dataclass(frozen=True, slots=True)
class Call:
    """What an operation asks: a path under the endpoint, its query, and the api-version to
    send (None: the session's choice for the path's family, negotiated)."""

    method: str
    path: str
    params: Sequence[tuple[str, str]] = ()
    body: bytes | None = None
    api_version: str | None = None
    headers: Sequence[tuple[str, str]] = ()


# --- addresses -------------------------------------------------------------------------------


def given_endpoint(endpoint: str | None = None) -> str | None:
    """The base URL asked for: the argument, else ``$AZURE_POD_IDENTITY_AUTHORITY_HOST``
    (what azure-identity and msal read for the same purpose), else None."""
    return endpoint or os.environ.get(SDK_ENDPOINT_ENV, "").strip() or None


def resolve_endpoint(endpoint: str | None = None) -> str:
    """The base URL: the one given (``given_endpoint``), else ``http://169.254.169.254``."""
    given = given_endpoint(endpoint) or DEFAULT_ENDPOINT
    if "://" not in given:
        given = "http://" + given
    parts = urlsplit(given)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"the IMDS endpoint must be an http:// URL, not {given!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"the IMDS endpoint takes no query or fragment: {given!r}")
    return given.rstrip("/")


def metadata_path(path: str) -> str:
    """``instance/compute`` or ``/metadata/instance/compute`` -> ``/metadata/instance/compute``."""
    stripped = "/" + path.lstrip("/")
    head = stripped.split("/", 2)[1].split("?")[0].lower()
    return stripped if head == "metadata" else "/metadata" + stripped


def family(path: str) -> str:
    """The endpoint family that picks the api-version: the segment after ``/metadata``
    (``instance``, ``identity``, ``scheduledevents``, ...); "" outside ``/metadata``."""
    segments = [s for s in path.split("/") if s]
    if not segments or segments[0].lower() != "metadata":
        return OUTSIDE
    return segments[1] if len(segments) > 1 else "metadata"


# --- the session: address, policy and what it learned ---------------------------------------


@dataclass
class Session:
    """What both clients share: where IMDS is, the headers every request carries, the retry
    policy, the clocks, and the api-versions learned by negotiation (by family)."""

    endpoint: str
    api_version: str = DEFAULT_API_VERSION
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    negotiate: bool = True
    headers: Sequence[tuple[str, str]] = ()
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    chance: Callable[[], float] = random.random
    negotiated: dict[str, str] = field(default_factory=dict)

    def version_for(self, path: str) -> str | None:
        """The api-version a request to ``path`` is sent with unless it names one."""
        name = family(path)
        if name in (UNVERSIONED, OUTSIDE):
            return None
        if name in self.negotiated:
            return self.negotiated[name]
        return FIXED_API_VERSIONS.get(name, self.api_version)

    def request(self, call: Call, version: str | None) -> Request:
        params = [(k, v) for k, v in call.params if k != "api-version"]
        if version is not None:
            params.insert(0, ("api-version", version))
        url = self.endpoint + quote(call.path, safe="/:@!$&'()*+,;=-._~%")
        if params:
            url += "?" + urlencode(params)
        given = {name.lower() for name, _ in call.headers}
        headers = [
            (name, value)
            for name, value in (("Metadata", "true"), ("User-Agent", USER_AGENT), *self.headers)
            if name.lower() not in given
        ]
        headers += call.headers
        if call.body is not None and "content-type" not in given:
            headers.append(("Content-Type", "application/json"))
        return Request(call.method, url, tuple(headers), call.body)

    def exchange(self, call: Call) -> Flow[Reply]:
        """One call, through negotiation and retries, to its final answer (any status).

        An api-version the service refuses (400 with ``newest-versions``) is replaced once by
        ``newest-versions[0]``, which the session then keeps for the family, unless the call
        named its version. Raises ``IMDSConnectionError`` when nothing answered in the end.
        """
        name = family(call.path)
        pinned = call.api_version is not None
        version = call.api_version if pinned else self.version_for(call.path)
        identity = name == "identity"
        retrier = Retrier(self.policy, self.clock, self.chance)
        negotiated = False
        tries = 0
        while True:
            request = self.request(call, version)
            tries += 1
            outcome = yield Send(request, retrier.timeout())
            if isinstance(outcome, Failure):
                wait = retrier.after(None, None, identity)
                if wait is None:
                    raise _no_answer(request.url, tries, outcome.error)
            elif isinstance(outcome, Reply):
                refused = outcome.status == 400 and bool(newest_versions(outcome.body))
                if refused and self.negotiate and not pinned and not negotiated and version:
                    offered = newest_versions(outcome.body)[0]
                    if offered != version:
                        version, negotiated = offered, True
                        continue
                if negotiated and not refused:
                    self.negotiated[name] = str(version)
                reply = replace(outcome, api_version=version, family=name)
                if reply.ok:
                    return reply
                seconds = retry_after(reply.headers, self.wall)
                wait = retrier.after(reply.status, seconds, identity)
                if wait is None:
                    return reply
            else:
                raise TypeError(f"a flow was sent {outcome!r} after a Send")
            _retrying(request.url, tries, outcome, wait)
            yield Sleep(wait)

    def fetch(self, url: str) -> Flow[Reply]:
        """GET a URL outside IMDS (an issuer certificate), with the retry policy's timeouts
        and retries for connection errors and 5xx; proxies are the environment's."""
        retrier = Retrier(self.policy, self.clock, self.chance)
        request = Request("GET", url, (("User-Agent", USER_AGENT),))
        tries = 0
        while True:
            tries += 1
            outcome = yield Send(request, retrier.timeout(), external=True)
            if isinstance(outcome, Failure):
                wait = retrier.after(None, None, identity=False)
                if wait is None:
                    raise _no_answer(url, tries, outcome.error)
            elif isinstance(outcome, Reply):
                wait = None if outcome.ok else retrier.after(outcome.status, None, False)
                if wait is None:
                    return outcome
            else:
                raise TypeError(f"a flow was sent {outcome!r} after a Send")
            _retrying(request.url, tries, outcome, wait)
            yield Sleep(wait)


def _retrying(url: str, tries: int, outcome: Reply | Failure, wait: float) -> None:
    if isinstance(outcome, Reply):
        what = f"HTTP {outcome.status}"
    else:
        what = f"no answer ({type(outcome.error).__name__}: {outcome.error})"
    log.info("try %d of %s: %s; next try in %.1f s", tries, url, what, wait)


def _no_answer(url: str, tries: int, error: BaseException) -> IMDSConnectionError:
    made = IMDSConnectionError(
        f"no answer from {url} (tries: {tries}): {type(error).__name__}: {error}", url=url
    )
    made.__cause__ = error
    return made


def checked(reply: Reply) -> Reply:
    """The reply if it is a 2xx; otherwise the exception for its status, raised."""
    if reply.ok:
        return reply
    raise error_for(reply.status, reply.body, reply.url, reply.headers, reply.family == "identity")


def _unexpected(reply: Reply, error: Exception) -> IMDSResponseError:
    return IMDSResponseError(
        f"unexpected answer from {reply.url}: {type(error).__name__}: {error}",
        status=reply.status,
        body=reply.body,
        url=reply.url,
        headers=reply.headers,
    )


def json_of(reply: Reply) -> Any:
    """A 2xx reply's JSON body (the status's ``IMDSHTTPError`` for other answers, an
    ``IMDSResponseError`` for a body that is not JSON)."""
    body = checked(reply).body
    try:
        return json.loads(body)
    except ValueError as exc:
        raise _unexpected(reply, exc) from exc


def parsed(reply: Reply, parse: Callable[[Any], T]) -> T:
    """A 2xx reply's JSON read by ``parse``; what ``parse`` cannot read is an
    ``IMDSResponseError``."""
    document = json_of(reply)
    try:
        return parse(document)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _unexpected(reply, exc) from exc


def parsed_text(reply: Reply, parse: Callable[[str], T]) -> T:
    """A 2xx reply's text read by ``parse``; a ``ValueError`` from it is an
    ``IMDSResponseError``."""
    text = checked(reply).text
    try:
        return parse(text)
    except ValueError as exc:
        raise _unexpected(reply, exc) from exc
