"""Helpers for the client tests: a fake clock, a recording transport, the control plane."""

from __future__ import annotations

from typing import Any

import httpx

from azimds.client import RetryPolicy
from tests.admin.support import admin
from tests.conftest import Server

DEFAULT_VM_ID = "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
NEWEST = "2025-04-07"
# Retries without real waiting worth the name: tests against a real server that sleep for real.
FAST = RetryPolicy(backoff=0.01, max_backoff=0.05, jitter=0.0, timeout=5.0, deadline=20.0)


class FakeTime:
    """A monotonic clock that only moves when the client sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


class Recording(httpx.HTTPTransport):
    """A real transport that remembers each request's URL and headers."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return super().handle_request(request)

    @property
    def urls(self) -> list[str]:
        return [str(r.url) for r in self.requests]


class AsyncRecording(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await super().handle_async_request(request)


def endpoint(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}"


def add_fault(server: Server, **rule: Any) -> dict[str, Any]:
    return admin(server).add_fault(rule)


def clear_faults(server: Server) -> None:
    admin(server).clear_faults()
