"""
A lease's requests are bound to its connection on every path.

What users rely on (docs/client.md, docs/protocols.md): while a connection is
leased, the conversation on it (a WATCH, a transaction) is not interleaved
with anything, and it is never moved: when the connection dies or goes away
(GOAWAY) before a lease request is written, that request fails with
``ConnectionLost(written=False)`` instead of running on another connection
where, say, no WATCH is active.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred

from framedclient.clients.redis import RedisClient
from framedclient.codecs import GOAWAY
from framedclient.errors import ConnectionLost

from .fakes import CODEC, answer_all, drop
from .servers import redis_server
from .test_client import make
from .test_goaway import requests_written
from .wire import outcomes


def _lease_and_send(client, clock, body, then):
    """
    Lease a connection, send ``body`` on it (queued, not written yet), call
    ``then(leased)``, and return (the lease request's outcome, the lease's
    connection, the other one).
    """
    box: dict[str, object] = {}

    async def conversation():
        async with client.lease() as conn:
            box["leased"] = conn.protocol
            d = conn.request(body)
            then(conn.protocol)
            box["result"] = outcomes([d])[0]

    done = ensureDeferred(conversation())
    clock.advance(0)
    assert outcomes([done]) == [None]
    return box["result"], box["leased"]


def test_goaway_fails_an_unwritten_lease_request_instead_of_moving_it():
    client, endpoint, clock = make(pool_size=2)
    clock.advance(1.0)
    p1, p2 = endpoint.protocols

    result, leased = _lease_and_send(
        client,
        clock,
        b"EXEC",
        lambda proto: proto.dataReceived(CODEC.encode(GOAWAY, 0, b"")),
    )
    assert result.check(ConnectionLost)
    assert result.value.written is False
    clock.advance(0)
    other = p2 if leased is p1 else p1
    assert requests_written(other) == [], "never sent on another connection"
    assert requests_written(leased) == []


def test_a_lost_connection_fails_an_unwritten_lease_request_instead_of_moving_it():
    client, endpoint, clock = make(pool_size=2)
    clock.advance(1.0)
    p1, p2 = endpoint.protocols

    result, leased = _lease_and_send(client, clock, b"EXEC", drop)
    assert result.check(ConnectionLost)
    assert result.value.written is False
    clock.advance(0)
    other = p2 if leased is p1 else p1
    assert requests_written(other) == [], "never sent on another connection"
    # The slot came back: the client still takes max_in_flight requests.
    assert client.in_flight == 0


def test_requests_outside_the_lease_still_move_off_a_dead_connection():
    # The other side of the rule: an ordinary unwritten request is re-sent.
    client, endpoint, clock = make(pool_size=2)
    clock.advance(1.0)
    p1, p2 = endpoint.protocols
    d = client.request(b"plain")
    holder = p1 if p1.pending else p2
    drop(holder)
    clock.advance(0)
    other = p2 if holder is p1 else p1
    assert requests_written(other) == [b"plain"]
    answer_all(other)
    assert outcomes([d]) == [b"plain"]


@pytest.fixture
def server(tmp_path):
    with redis_server(str(tmp_path)) as server:
        yield server


@pytest_twisted.ensureDeferred
async def test_watch_through_a_lease_whose_connection_dies_before_exec_loses_no_write(
    server,
):
    endpoint = f"tcp:127.0.0.1:{server.port}"
    redis = RedisClient.from_endpoint(
        reactor, endpoint, pool_size=2, request_timeout=10.0
    )
    other = RedisClient.from_endpoint(reactor, endpoint, pool_size=1)
    try:
        await redis.when_ready()
        await other.when_ready()
        # Both connections of the pool are up: a moved request has somewhere
        # to go.
        while redis.client.pool.ready_count < 2:
            await _later(0.01)
        await redis.set("k", "10")
        async with redis.lease() as conn:
            await conn.watch("k")
            balance = int(await conn.get("k"))
            await other.set("k", "100")
            (leased,) = redis.client.pool.leased
            started: Deferred[list[Deferred[object]]] = Deferred()

            def from_a_timer() -> None:
                # The connection dies before the transaction is written.
                leased.transport.abortConnection()
                started.callback([conn.transaction(("SET", "k", balance + 1))])

            reactor.callLater(0, from_a_timer)
            (transaction,) = await started
            with pytest.raises(ConnectionLost) as info:
                await transaction
            assert info.value.written is False
        assert await other.get("k") == b"100", "the concurrent write is kept"
    finally:
        await redis.close(timeout=2)
        await other.close(timeout=2)


def _later(seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
