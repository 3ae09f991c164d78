"""``AsyncIMDSClient``: the asyncio client, with ``IMDSClient``'s API as coroutines. It
performs the steps of the flows in ``operations`` (send with httpx, sleep); everything else is
shared with ``IMDSClient``."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from azimds.client import _http
from azimds.client.operations import ClientBase, Operations, as_method
from azimds.client.protocol import Failure, Flow, Outcome, Send
from azimds.client.retry import RetryPolicy

T = TypeVar("T")
P = ParamSpec("P")


def _awaited(
    operation: Callable[Concatenate[Operations, P], Flow[T]],
) -> Callable[Concatenate[AsyncIMDSClient, P], Coroutine[Any, Any, T]]:
    """``operation`` as a coroutine method that runs its flow: its parameters, its docstring."""

    async def method(self: AsyncIMDSClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(operation(self._operations, *args, **kwargs))

    return as_method(method, operation, "AsyncIMDSClient")


class AsyncIMDSClient(ClientBase[httpx.AsyncClient]):
    """An asyncio client for IMDS (the real service or azimds); use ``async with``.

    Its arguments are ``IMDSClient``'s, but for two of those for tests: ``sleep`` is a
    coroutine function (``asyncio.sleep``) and ``transport`` an ``httpx.AsyncBaseTransport``.
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
        new_http = functools.partial(_http.async_client, transport=transport)
        super().__init__(endpoint, api_version, retry, negotiate, headers, clock, new_http)
        self._sleep = sleep

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
        client = self._http_for(step)
        try:
            response = await client.send(_http.build(client, step))
        except _http.NO_ANSWER as exc:
            return Failure(exc)
        return _http.reply_of(response, step)

    async def aclose(self) -> None:
        for client in self._opened():
            await client.aclose()

    async def __aenter__(self) -> AsyncIMDSClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- the API: each ``operations.Operations`` accessor, awaited to its result -------------

    request = _awaited(Operations.request)
    instance = _awaited(Operations.instance)
    instance_text = _awaited(Operations.instance_text)
    tags = _awaited(Operations.tags)
    user_data = _awaited(Operations.user_data)
    versions = _awaited(Operations.versions)
    token = _awaited(Operations.token)
    tenant_id = _awaited(Operations.tenant_id)
    attested = _awaited(Operations.attested)
    scheduled_events = _awaited(Operations.scheduled_events)
    approve = _awaited(Operations.approve)
    load_balancer = _awaited(Operations.load_balancer)
