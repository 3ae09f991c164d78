"""``AsyncIMDSClient``: the asyncio client, with ``IMDSClient``'s API as coroutines. It
performs the steps of the flows in ``operations`` (send with httpx, sleep); everything else is
shared with ``IMDSClient``."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from azimds.client import _http
from azimds.client.attested import METADATA_DOMAINS, CertificateLike
from azimds.client.models import (
    AccessToken,
    AttestedDocument,
    LoadBalancer,
    ScheduledEvent,
    ScheduledEvents,
)
from azimds.client.operations import Operations
from azimds.client.protocol import (
    DEFAULT_API_VERSION,
    Failure,
    Flow,
    Outcome,
    Reply,
    Send,
    Session,
    resolve_endpoint,
)
from azimds.client.retry import RetryPolicy

T = TypeVar("T")


class AsyncIMDSClient:
    """An asyncio client for IMDS (the real service or azimds); use ``async with``.

    ``endpoint``: the base URL, default ``$AZURE_POD_IDENTITY_AUTHORITY_HOST`` or
    ``http://169.254.169.254``. ``api_version``: what instance-style endpoints are asked with
    (default the newest documented; negotiated down when the service refuses it, unless
    ``negotiate=False``). ``retry``: the ``RetryPolicy``. ``headers`` go with every request.
    ``sleep`` (a coroutine function), ``clock`` (monotonic) and ``transport`` (an
    ``httpx.AsyncBaseTransport``) are for
    tests.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        api_version: str | None = None,
        retry: RetryPolicy | None = None,
        negotiate: bool = True,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.session = Session(
            endpoint=resolve_endpoint(endpoint),
            api_version=api_version or DEFAULT_API_VERSION,
            policy=retry or RetryPolicy(),
            negotiate=negotiate,
            headers=tuple((headers or {}).items()),
            clock=clock,
        )
        self._operations = Operations(self.session)
        self._sleep = sleep
        self._transport = transport
        self._http = _http.async_client(False, transport)
        self._external: httpx.AsyncClient | None = None

    @property
    def endpoint(self) -> str:
        return self.session.endpoint

    @property
    def api_version(self) -> str:
        """The api-version instance requests use now (after any negotiation)."""
        return self.session.negotiated.get("instance", self.session.api_version)

    # --- running flows ---------------------------------------------------------------------

    async def _run(self, flow: Flow[T]) -> T:
        outcome: Outcome = None
        try:
            while True:
                step = flow.send(outcome)
                if isinstance(step, Send):
                    outcome = await self._send(step)
                else:
                    await self._sleep(step.seconds)
                    outcome = None
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            flow.close()

    async def _send(self, step: Send) -> Outcome:
        client = self._http
        if step.external:
            if self._external is None:
                self._external = _http.async_client(True, self._transport)
            client = self._external
        try:
            response = await client.send(_http.build(client, step))
        except _http.NO_ANSWER as exc:
            return Failure(exc)
        return _http.reply_of(response, step)

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._external is not None:
            await self._external.aclose()

    async def __aenter__(self) -> AsyncIMDSClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- the API (see ``operations.Operations`` for each) ------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        api_version: str | None = None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    ) -> Reply:
        """Any request; the final ``Reply`` whatever its status (nothing raised for non-2xx)."""
        return await self._run(
            self._operations.request(method, path, params, body, api_version, headers)
        )

    async def instance(
        self, path: str = "", *, extended: bool = False, api_version: str | None = None
    ) -> Any:
        """The instance document or the part at ``path``; a leaf comes back as a string."""
        return await self._run(self._operations.instance(path, extended, api_version))

    async def instance_text(
        self, path: str = "", *, extended: bool = False, api_version: str | None = None
    ) -> str:
        """``format=text`` at ``path``: a leaf's value or a listing."""
        return await self._run(self._operations.instance_text(path, extended, api_version))

    async def tags(self) -> dict[str, str]:
        return await self._run(self._operations.tags())

    async def user_data(self) -> bytes:
        return await self._run(self._operations.user_data())

    async def versions(self) -> tuple[str, ...]:
        return await self._run(self._operations.versions())

    async def token(
        self,
        resource: str,
        *,
        client_id: str | None = None,
        object_id: str | None = None,
        msi_res_id: str | None = None,
        api_version: str | None = None,
    ) -> AccessToken:
        return await self._run(
            self._operations.token(resource, client_id, object_id, msi_res_id, api_version)
        )

    async def tenant_id(self) -> str:
        return await self._run(self._operations.tenant_id())

    async def attested(
        self,
        root: CertificateLike | Iterable[CertificateLike],
        *,
        nonce: str | None = None,
        intermediates: CertificateLike | Iterable[CertificateLike] | None = None,
        now: dt.datetime | None = None,
        domains: Sequence[str] = METADATA_DOMAINS,
    ) -> AttestedDocument:
        return await self._run(self._operations.attested(root, nonce, intermediates, now, domains))

    async def scheduled_events(self, *, api_version: str | None = None) -> ScheduledEvents:
        return await self._run(self._operations.scheduled_events(api_version))

    async def approve(self, *events: str | ScheduledEvent, api_version: str | None = None) -> None:
        await self._run(self._operations.approve(events, api_version))

    async def load_balancer(self) -> LoadBalancer:
        return await self._run(self._operations.load_balancer())
