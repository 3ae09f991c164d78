"""``IMDSClient``: the blocking client. It performs the steps of the flows in ``operations``
(send with httpx, sleep); everything else is shared with ``AsyncIMDSClient``."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Concatenate, ParamSpec, TypeVar

import httpx

from azimds.client import _http
from azimds.client.operations import ClientBase, Operations, as_method
from azimds.client.protocol import Failure, Flow, Outcome, Send
from azimds.client.retry import RetryPolicy

T = TypeVar("T")
P = ParamSpec("P")


def _blocking(
    operation: Callable[Concatenate[Operations, P], Flow[T]],
) -> Callable[Concatenate[IMDSClient, P], T]:
    """``operation`` as a method that runs its flow to the end: its parameters, its docstring."""

    def method(self: IMDSClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(operation(self._operations, *args, **kwargs))

    return as_method(method, operation, "IMDSClient")


class IMDSClient(ClientBase[httpx.Client]):
    """A client for IMDS (the real service or azimds).

    ``endpoint``: the base URL, default ``$AZURE_POD_IDENTITY_AUTHORITY_HOST`` or
    ``http://169.254.169.254``. ``api_version``: what instance-style endpoints are asked with
    (default the newest documented; negotiated down when the service refuses it, unless
    ``negotiate=False``). ``retry``: the ``RetryPolicy``. ``headers`` go with every request.
    ``sleep``, ``clock`` (monotonic) and ``transport`` (an ``httpx.BaseTransport``) are for
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
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        new_http = functools.partial(_http.sync_client, transport=transport)
        super().__init__(endpoint, api_version, retry, negotiate, headers, clock, new_http)
        self._sleep = sleep

    # --- running flows ---------------------------------------------------------------------

    def _run(self, flow: Flow[T]) -> T:
        outcome: Outcome = None
        try:
            while True:
                step = flow.send(outcome)
                if isinstance(step, Send):
                    outcome = self._send(step)
                else:
                    self._sleep(step.seconds)
                    outcome = None
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            flow.close()

    def _send(self, step: Send) -> Outcome:
        client = self._http_for(step)
        try:
            response = client.send(_http.build(client, step))
        except _http.NO_ANSWER as exc:
            return Failure(exc)
        return _http.reply_of(response, step)

    def close(self) -> None:
        for client in self._opened():
            client.close()

    def __enter__(self) -> IMDSClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    # --- the API: each ``operations.Operations`` accessor, run to its result -----------------

    request = _blocking(Operations.request)
    instance = _blocking(Operations.instance)
    instance_text = _blocking(Operations.instance_text)
    tags = _blocking(Operations.tags)
    user_data = _blocking(Operations.user_data)
    versions = _blocking(Operations.versions)
    token = _blocking(Operations.token)
    tenant_id = _blocking(Operations.tenant_id)
    attested = _blocking(Operations.attested)
    scheduled_events = _blocking(Operations.scheduled_events)
    approve = _blocking(Operations.approve)
    load_balancer = _blocking(Operations.load_balancer)
