"""``AsyncIMDSClient``: the same API as coroutines, against the real servers (each test runs
its own event loop with ``asyncio.run``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from azimds.client import (
    ApiVersionError,
    AsyncIMDSClient,
    IdentityNotFound,
    IMDSConnectionError,
    NotFound,
    ServerError,
)
from tests.admin.support import admin
from tests.client.support import (
    DEFAULT_VM_ID,
    NEWEST,
    AsyncRecording,
    FakeTime,
    add_fault,
    endpoint,
)
from tests.conftest import ServerThread
from tests.guest.events.support import schedule

T = TypeVar("T")
VAULT = "https://vault.azure.net"


def run(server: ServerThread, body: Callable[[AsyncIMDSClient], Awaitable[T]], **kw) -> T:
    async def main() -> T:
        async with AsyncIMDSClient(endpoint(server), **kw) as imds:
            return await body(imds)

    return asyncio.run(main())


def test_instance_leaf_node_and_tags(server: ServerThread):
    async def body(imds: AsyncIMDSClient):
        return (
            await imds.instance("compute/vmId"),
            (await imds.instance("compute"))["name"],
            await imds.tags(),
            await imds.user_data(),
            (await imds.versions())[-1],
            await imds.instance_text("compute/location"),
        )

    assert run(server, body) == (
        DEFAULT_VM_ID,
        "examplevmname",
        {"baz": "bash", "foo": "bar"},
        b"",
        NEWEST,
        "westus",
    )


def test_negotiation(server: ServerThread):
    transport = AsyncRecording()

    async def body(imds: AsyncIMDSClient):
        vm_id = await imds.instance("compute/vmId")
        with pytest.raises(ApiVersionError):
            await imds.instance(api_version="2099-01-01")
        return vm_id, imds.api_version

    found = run(server, body, api_version="2099-01-01", transport=transport)
    assert found == (DEFAULT_VM_ID, NEWEST)
    assert "api-version=2099-01-01" in str(transport.requests[0].url)


def test_token_and_identity_errors(server: ServerThread):
    async def body(imds: AsyncIMDSClient):
        token = await imds.token(VAULT)
        with pytest.raises(IdentityNotFound):
            await imds.token(VAULT, object_id="00000000-0000-0000-0000-000000000000")
        return token, await imds.tenant_id()

    token, tenant = run(server, body)
    assert token.resource == VAULT and token.access_token.count(".") == 2
    assert tenant


def test_attested(server: ServerThread):
    root = admin(server).ca_certificate("root")

    async def body(imds: AsyncIMDSClient):
        return await imds.attested(root, nonce="42")

    document = run(server, body)
    assert (document.vm_id, document.nonce) == (DEFAULT_VM_ID, "42")


def test_scheduled_events_and_approval(node: ServerThread):
    event_id = schedule(node, type="Redeploy")["eventId"]

    async def body(imds: AsyncIMDSClient):
        listed = await imds.scheduled_events()
        await imds.approve(event_id)
        return listed, await imds.scheduled_events()

    listed, after = run(node, body)
    assert {e.event_id: e.status for e in listed.events}[event_id] == "Scheduled"
    assert {e.event_id: e.status for e in after.events}[event_id] == "Started"
    assert after.incarnation > listed.incarnation


def test_retries_sleep_on_the_given_sleep(faulty: ServerThread):
    add_fault(faulty, actions=[410, {"status": 429, "retryAfter": 2}, "reset"])
    time = FakeTime()

    async def body(imds: AsyncIMDSClient):
        return await imds.instance("compute/vmId")

    assert run(faulty, body, sleep=time.async_sleep, clock=time.monotonic) == DEFAULT_VM_ID
    assert len(time.sleeps) == 3 and time.sleeps[1] == 2


def test_errors_after_retries(faulty: ServerThread):
    add_fault(faulty, actions=[500])
    time = FakeTime()

    async def body(imds: AsyncIMDSClient):
        with pytest.raises(ServerError):
            await imds.versions()
        return len(time.sleeps)

    assert run(faulty, body, sleep=time.async_sleep, clock=time.monotonic) == 5


def test_not_found_and_no_answer(server: ServerThread):
    async def body(imds: AsyncIMDSClient):
        with pytest.raises(NotFound):
            await imds.load_balancer()

    run(server, body)
    time = FakeTime()

    async def nowhere():
        async with AsyncIMDSClient(
            "http://127.0.0.1:9", sleep=time.async_sleep, clock=time.monotonic
        ) as imds:
            await imds.versions()

    with pytest.raises(IMDSConnectionError):
        asyncio.run(nowhere())


def test_concurrent_requests_share_one_client(server: ServerThread):
    async def body(imds: AsyncIMDSClient):
        return await asyncio.gather(*(imds.instance("compute/vmId") for _ in range(10)))

    assert run(server, body) == [DEFAULT_VM_ID] * 10
