"""Turns: one client's burst of requests cannot hold the event loop from the others.

In process: ``azimds.serving.protocol`` connections from several client addresses on one
listener, over transports that record what is written, and an app that answers every request
at once. A turn of the loop is one pass over the callbacks ready (``turn``). The rules
(docs/behaviour.md, "Limits"): alone, a client is answered at most ``CONNECTION_TURN``
requests in a row on a connection; while another address is connected, an address is answered
at most ``CLIENT_TURN`` requests in a turn. Whatever waits is answered in later turns, in
order, none lost. The real-socket figures are in test_exhaustion.py and bench/flood.py.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Iterator

import pytest

from azimds.serving import protocol
from azimds.serving.exchange import Exchange
from tests.serving.transport import Transport

GET = b"GET /x HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"


def answers(transport: Transport) -> int:
    return transport.written.count(b"HTTP/1.1 200 OK\r\n")


class Numbered:
    """Answers each request at once, its body the request's number on its connection."""

    body_limit = 1024

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def handle(self, exchange: Exchange) -> None:
        number = self.seen.get(exchange.client, 0)
        self.seen[exchange.client] = number + 1
        exchange.response_bytes(200, (), b"%d" % number)


class Node:
    def __init__(self, listener: protocol._Listener) -> None:
        self.listener = listener
        self.port = 40000

    def connect(self, host: str) -> tuple[protocol._Connection, Transport]:
        self.port += 1
        connection = protocol._Connection(self.listener, (host, self.port))
        self.listener.open.add(connection)
        transport = Transport()
        connection.connection_made(transport)
        return connection, transport


@pytest.fixture
def node() -> Iterator[Node]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with socket.socket() as unused:
        listener = loop.run_until_complete(_listener(unused))
        listener.accepting = True  # as if accepting: a closed connection must not start it
        yield Node(listener)
    for connection in list(listener.open):
        connection.connection_lost(None)
    loop.run_until_complete(asyncio.sleep(0))
    asyncio.set_event_loop(None)
    loop.close()


async def _listener(sock: socket.socket) -> protocol._Listener:
    return protocol._Listener(Numbered(), sock, 3600.0, 100, protocol.Clients())


def turn(node: Node) -> None:
    """One turn of the loop: what is ready runs, what it schedules waits for the next."""
    loop = node.listener.loop
    loop.call_soon(loop.stop)
    loop.run_forever()


def in_order(transport: Transport, count: int) -> bool:
    bodies = [part.rsplit(b"\r\n\r\n", 1)[-1] for part in transport.written.split(b"HTTP/1.1 ")[1:]]
    return bodies == [b"%d" % n for n in range(count)]


def test_alone_a_connection_is_answered_in_runs_of_its_turn(node: Node) -> None:
    connection, transport = node.connect("10.0.0.4")
    connection.data_received(GET * 200)
    runs = [answers(transport)]
    while answers(transport) < 200 and len(runs) < 20:
        turn(node)
        runs.append(answers(transport))
    assert runs[:4] == [64, 128, 192, 200], runs
    assert in_order(transport, 200)


def test_another_clients_request_is_answered_before_a_burst_goes_on(node: Node) -> None:
    burst = [node.connect("10.0.0.4") for _ in range(3)]
    other, other_transport = node.connect("10.0.0.5")
    for connection, _ in burst:
        connection.data_received(GET * 100)
    first = sum(answers(transport) for _, transport in burst)
    other.data_received(GET)
    assert answers(other_transport) == 1  # at once: the burst's share does not touch it
    assert first <= protocol.CLIENT_TURN, first
    totals = [first]
    for _ in range(100):
        turn(node)
        totals.append(sum(answers(transport) for _, transport in burst))
        if totals[-1] == 300:
            break
    steps = [b - a for a, b in itertools.pairwise(totals)]
    assert totals[-1] == 300 and max(steps) <= protocol.CLIENT_TURN, totals
    assert all(in_order(transport, 100) for _, transport in burst)
    # Round robin: no connection of the burst waits while another is answered all its share.
    assert min(answers(transport) for _, transport in burst) == 100


def test_a_connection_that_goes_while_waiting_its_turn_holds_up_no_other(node: Node) -> None:
    burst = [node.connect("10.0.0.4") for _ in range(3)]
    node.connect("10.0.0.5")  # another client: turns apply
    for connection, _ in burst:
        connection.data_received(GET * 20)
    gone, gone_transport = burst[1]
    assert gone.waiting_turn
    gone.connection_lost(None)
    for _ in range(50):
        turn(node)
    assert [answers(t) for _, t in burst] == [20, answers(gone_transport), 20]
    assert answers(gone_transport) < 20


def test_a_client_alone_again_is_held_back_by_its_connection_turn_only(node: Node) -> None:
    connection, transport = node.connect("10.0.0.4")
    other, _ = node.connect("10.0.0.5")
    connection.data_received(GET * 100)
    assert answers(transport) == protocol.CLIENT_TURN
    other.connection_lost(None)  # the other client leaves: alone again
    turn(node)
    assert answers(transport) == protocol.CLIENT_TURN + protocol.CONNECTION_TURN
    turn(node)
    assert answers(transport) == 100 and in_order(transport, 100)
