"""
The slow-server rule: a connection that is reading from its peer is never a
black hole, and a silent one still is.

Most tests run one client connection against the fc1 reference server
(``framedclient.server``, with its ``!delay:`` and ``!mute`` bodies) over
in-memory transports on a ``task.Clock``; the last ones use real servers on
loopback (redis-server, the reference server).
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure

from framedclient.client import FramedClient
from framedclient.clients.redis import RedisClient
from framedclient.errors import ConnectionLost, RequestTimeout
from framedclient.server import ReferenceServerFactory
from framedclient.testing.memory import MemoryPair, connected_pair

from .servers import redis_server
from .wire import outcomes

TICK = 0.001


def pair(delay: float = 0.0, black_hole_after: int = 5) -> MemoryPair:
    clock = Clock()
    return connected_pair(
        ReferenceServerFactory(clock=clock, delay=delay),
        clock=clock,
        black_hole_after=black_hole_after,
    )


def run(p: MemoryPair, seconds: float, each_tick: Any = None) -> None:
    """
    Let ``seconds`` pass in 1 ms ticks, calling ``each_tick(now)`` first in
    each.
    """
    for _ in range(round(seconds / TICK)):
        if each_tick is not None:
            each_tick(p.clock.seconds())
        p.advance(TICK)


def black_holes(p: MemoryPair) -> int:
    events: dict[str, int] = p.client.metrics.totals().connection_events
    return events["black_hole"]


def test_late_replies_reset_the_silence_count():
    """
    A server that answers everything 50 ms late, asked one 20 ms request
    after another: each reply arrives after its request timed out, but it
    arrives, so the connection is not a black hole.
    """
    p = pair(delay=0.05)
    got: list[object] = []

    def next_request(result: object = None) -> None:
        if result is not None:
            got.append(result)
        if p.clock.seconds() < 1.0:
            p.client.request(b"short", timeout=0.02).addBoth(next_request)

    next_request()
    run(p, 1.2)
    assert not p.client.is_closed, p.client.close_reason
    assert black_holes(p) == 0
    assert len(got) >= 40
    assert all(isinstance(f, Failure) and f.check(RequestTimeout) for f in got)
    assert p.client.late_replies >= 40


def test_the_count_starts_over_once_the_peer_speaks():
    """
    Two stalls of a live server, each long enough for three short requests
    to time out with nothing read, separated by its late replies: never
    five in a row, so the connection stays.
    """
    p = pair()
    late: list[Deferred[bytes]] = []
    for _ in range(2):
        for _ in range(3):
            late.append(p.client.request(b"!delay:0.5", timeout=0.02))
            run(p, 0.03)
        run(p, 0.6)  # the late replies arrive
    assert all(f.check(RequestTimeout) for f in outcomes(late))
    assert p.client.late_replies == 6
    assert not p.client.is_closed, p.client.close_reason
    assert black_holes(p) == 0


def test_a_slow_server_keeps_a_long_request_alive_among_short_timeouts():
    """
    Issue 23, break 2: replies 50 ms late, a short request with a 20 ms
    timeout every 5 ms, and a 5 s request waiting on the same connection:
    the 5 s request gets its reply.
    """
    p = pair(delay=0.05)
    long = p.client.request(b"!delay:1", timeout=5.0)
    shorts: list[Deferred[bytes]] = []

    def send(now: float) -> None:
        if now < 2.0 and round(now / TICK) % 5 == 0:
            shorts.append(p.client.request(b"short", timeout=0.02))

    run(p, 2.5, send)
    assert outcomes([long]) == [b"!delay:1"]
    assert not p.client.is_closed, p.client.close_reason
    assert black_holes(p) == 0
    assert all(f.check(RequestTimeout) for f in outcomes(shorts))


def test_a_burst_of_slow_requests_does_not_close_a_busy_connection():
    """
    Issue 23, break 5: 50 callers keep echoes in flight while 8 requests
    that the server holds for 3 s, sent together with a 0.2 s timeout,
    time out in one tick: the connection stays open and no echo fails.
    """
    p = pair(delay=0.01)
    echoes: list[Deferred[bytes]] = []
    stop = [False]

    def caller(_: object = None) -> object:
        if not stop[0]:
            d = p.client.request(b"echo", timeout=1.0)
            echoes.append(d)
            d.addCallback(caller)
        return _

    for _ in range(50):
        caller()
    run(p, 0.1)
    slow = [p.client.request(b"!delay:3", timeout=0.2) for _ in range(8)]
    run(p, 1.0)
    stop[0] = True
    run(p, 3.0)
    assert all(f.check(RequestTimeout) for f in outcomes(slow))
    got = outcomes(echoes)
    assert len(got) > 1000
    assert got == [b"echo"] * len(got)
    assert not p.client.is_closed, p.client.close_reason
    assert black_holes(p) == 0


def test_one_reply_read_during_a_burst_keeps_the_connection():
    """
    Eight requests the server holds for 3 s, sent together with a 0.2 s
    timeout, and one request answered after 0.1 s: the eight time out in
    one tick, but the peer spoke since they were written, so the count
    does not move.
    """
    p = pair()
    burst = [p.client.request(b"!delay:3", timeout=0.2) for _ in range(8)]
    answered = p.client.request(b"!delay:0.1", timeout=1.0)
    run(p, 0.5)
    assert outcomes([answered]) == [b"!delay:0.1"]
    assert all(f.check(RequestTimeout) for f in outcomes(burst))
    assert not p.client.is_closed, p.client.close_reason
    assert black_holes(p) == 0


def test_a_silent_peer_is_still_a_black_hole_and_counted_once():
    """
    The server stops answering (no FIN, no RST): after five requests, sent
    at different moments, time out with nothing read, the connection is
    closed as a black hole, counted in ``connection_events["black_hole"]``,
    and the requests still waiting fail with ``ConnectionLost``.
    """
    p = pair()
    p.client.request(b"!mute")
    p.flush()
    sent: list[Deferred[bytes]] = []

    def send(now: float) -> None:
        if round(now / TICK) % 10 == 0:
            sent.append(p.client.request(b"x", timeout=0.2))

    run(p, 0.25, send)
    assert p.client.is_closed
    assert "black hole" in (p.client.close_reason or "")
    assert black_holes(p) == 1
    got = outcomes(sent)
    assert [f.type for f in got[:5]] == [RequestTimeout] * 5
    assert got[5:] and all(f.check(ConnectionLost) for f in got[5:])


def test_a_request_with_a_longer_deadline_is_given_its_whole_timeout():
    """
    A silent peer with a 2 s request waiting (a blocking pop, a long
    query): short requests time out around it, but the connection is
    closed only once it has been silent for the 2 s, and the long request
    fails with its own timeout, not with the close.
    """
    p = pair()
    p.client.request(b"!mute")
    p.flush()
    long = p.client.request(b"long", timeout=2.0)
    closed_at: list[float] = []

    def send(now: float) -> None:
        if p.client.is_closed:
            if not closed_at:
                closed_at.append(now)
        elif round(now / TICK) % 10 == 0:
            p.client.request(b"x", timeout=0.02).addErrback(lambda _: None)

    run(p, 2.5, send)
    assert outcomes([long])[0].check(RequestTimeout)
    assert closed_at and 2.0 <= closed_at[0] <= 2.1, closed_at
    assert black_holes(p) == 1


# -- against real servers ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_blocking_pop_outlives_short_timeouts_queued_behind_it(tmp_path):
    """
    Redis answers in order: while a ``BLPOP`` waits (0.5 s), the short
    ``GET`` requests behind it on the same connection time out one after
    another with nothing read.  The ``BLPOP`` has a longer timeout, so the
    connection is not a black hole: the pop gets its answer, and so does
    the next request.
    """
    with redis_server(str(tmp_path)) as server:
        redis = RedisClient.from_endpoint(
            reactor, f"tcp:127.0.0.1:{server.port}", pool_size=1
        )
        try:
            await redis.client.when_ready()
            pop = redis.execute("BLPOP", "nothing-here", "0.5", timeout=3.0)
            shorts = []
            for _ in range(10):
                shorts.append(redis.execute("GET", "k", timeout=0.05))
                await deferLater(reactor, 0.02, lambda: None)
            assert await pop is None
            results = await DeferredList(shorts, consumeErrors=True)
            assert all(not ok and f.check(RequestTimeout) for ok, f in results)
            assert await redis.execute("GET", "k", timeout=3.0) is None
            events = redis.client.metrics.totals().connection_events
            assert events["black_hole"] == 0
        finally:
            await redis.client.close(timeout=2)


@pytest_twisted.ensureDeferred
async def test_a_burst_of_slow_requests_keeps_a_busy_loopback_connection():
    """
    Issue 23, break 5, on a real socket: 50 callers keep echoes in flight
    to the reference server while 8 requests it holds for 3 s time out
    together after 0.2 s: no echo fails, the connection stays.
    """
    factory = ReferenceServerFactory(clock=reactor)
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
    client = FramedClient.from_endpoint(
        reactor, f"tcp:127.0.0.1:{port.getHost().port}", pool_size=1
    )
    try:
        await client.when_ready()
        stop = deferLater(reactor, 0.6, lambda: None)
        echoes: list[object] = []

        async def caller() -> None:
            while not stop.called:
                try:
                    echoes.append(await client.request(b"echo", timeout=2.0))
                except Exception as e:  # counted below
                    echoes.append(e)

        callers = [ensureDeferred(caller()) for _ in range(50)]
        await deferLater(reactor, 0.1, lambda: None)
        slow = [client.request(b"!delay:3", timeout=0.2) for _ in range(8)]
        results = await DeferredList(slow, consumeErrors=True)
        await DeferredList(callers)
        assert all(not ok and f.check(RequestTimeout) for ok, f in results)
        assert len(echoes) > 100
        assert echoes == [b"echo"] * len(echoes)
        assert client.metrics.totals().connection_events["black_hole"] == 0
    finally:
        await client.close(timeout=2)
        await port.stopListening()
