"""
Streams and subscriptions against the reference server over loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, ensureDeferred, gatherResults
from twisted.internet.task import deferLater

from framedclient import FramedClient
from framedclient.backoff import ExponentialBackoff
from framedclient.errors import Unavailable
from framedclient.server import ReferenceServerFactory, listen
from framedclient.streams import Stream

FAST = ExponentialBackoff(initial=0.05, max_delay=0.2, min_connect_timeout=1.0)


@asynccontextmanager
async def served(
    **options: object,
) -> AsyncIterator[tuple[FramedClient, ReferenceServerFactory]]:
    server = ReferenceServerFactory(clock=reactor)
    port = await listen(reactor, "tcp:0:interface=127.0.0.1", server)
    client = FramedClient.from_endpoint(
        reactor,
        f"tcp:127.0.0.1:{port.getHost().port}",
        request_timeout=10.0,
        backoff=FAST,
        **options,  # type: ignore[arg-type]
    )
    try:
        await client.when_ready()
        yield client, server
    finally:
        await client.close(timeout=2.0)
        await port.stopListening()


def expected(count: int, size: int) -> list[bytes]:
    # What the reference server's !stream:N:SIZE sends, part by part.
    return [
        ((b"%d:" % i) + b"x" * size)[: max(size, len(b"%d:" % i))] for i in range(count)
    ]


async def collect(stream: Stream) -> list[bytes]:
    return [part async for part in stream]


@pytest_twisted.ensureDeferred
async def test_many_concurrent_streams_on_one_connection_each_get_their_parts_in_order():
    async with served(pool_size=1, max_in_flight=1000) as (client, _):
        streams = [
            client.stream(b"!stream:%d:%d" % (20 + i % 30, i % 50)) for i in range(500)
        ]
        # Plain requests share the connection meanwhile.
        echoes = [client.request(b"echo-%d" % i) for i in range(200)]
        results = await gatherResults([ensureDeferred(collect(s)) for s in streams])
        for i, parts in enumerate(results):
            assert parts == expected(20 + i % 30, i % 50), i
        assert await gatherResults(echoes) == [b"echo-%d" % i for i in range(200)]
        assert client.in_flight == 0


@pytest_twisted.ensureDeferred
async def test_cancelling_half_the_streams_midway_leaves_nothing_held():
    async with served(pool_size=1, max_in_flight=2000) as (client, server):
        streams = [
            client.stream(b"!stream:5000:16", buffer_bytes=64) for _ in range(400)
        ]

        # One consumer per stream (a consumer must not wait on one stream
        # while another stream of its connection is full: see streams.md).
        async def consume(i: int, stream: Stream) -> list[bytes] | None:
            first = await stream.next()
            assert first == b"0:xxxxxxxxxxxxxx"
            if i % 2:
                return [first, *await collect(stream)]
            await deferLater(reactor, 0, lambda: None)
            stream.cancel()
            with pytest.raises(CancelledError):
                await stream.next()
            assert stream.buffered == 0 and stream.buffered_bytes == 0
            assert not stream.timer_active
            return None

        results = await gatherResults(
            [ensureDeferred(consume(i, s)) for i, s in enumerate(streams)]
        )
        kept = [r for r in results if r is not None]
        assert len(kept) == 200 and all(parts == expected(5000, 16) for parts in kept)
        # The server answered every cancel: no ID is held, no slot taken.
        for _ in range(100):
            protos = [c.protocol for c in client.pool.connections if c.protocol]
            if all(p.table_size == 0 for p in protos):
                break
            await deferLater(reactor, 0.02, lambda: None)
        assert [p.table_size for p in protos] == [0]
        assert client.in_flight == 0 and server.cancels == 200
        assert not any(p.reading_held for p in protos)


@pytest_twisted.ensureDeferred
async def test_a_consumer_that_never_reads_keeps_memory_bounded_then_gets_everything():
    async with served(pool_size=1) as (client, server):
        limit = 64 * 1024
        stream = client.stream(b"!stream:20000:1000", buffer_bytes=limit)
        await deferLater(reactor, 0.5, lambda: None)
        # 20 MB were asked for; the client holds at most its limit plus one
        # socket read, and the server stopped sending (it streams only as
        # fast as the client reads).
        held = stream.buffered_bytes
        assert limit <= held <= limit + 256 * 1024
        (proto,) = [c.protocol for c in client.pool.connections if c.protocol]
        assert proto.reading_held
        received = stream.buffered
        await deferLater(reactor, 0.2, lambda: None)
        assert stream.buffered == received  # nothing more was read
        parts = await collect(stream)
        assert len(parts) == 20000 and parts == expected(20000, 1000)
        assert not proto.reading_held and server.connections


@pytest_twisted.ensureDeferred
async def test_a_subscription_survives_a_reconnect_with_a_gap_marker_and_ends_on_unsubscribe():
    async with served(pool_size=1) as (client, server):
        sub = client.subscribe(b"news")
        other = client.subscribe(b"sport")
        await sub.when_subscribed()
        await other.when_subscribed()
        assert await client.request(b"!publish:news one") == b"1"
        assert await client.request(b"!publish:sport goal") == b"1"
        first = await sub.next()
        assert (first.channel, first.data, first.gap) == (b"news", b"one", False)
        server.drop_all()
        # Back on a new connection: re-subscribed, and told of the gap.
        marker = await sub.next()
        assert (marker.channel, marker.gap) == (b"news", True)
        assert await client.request(b"!publish:news two") == b"1"
        second = await sub.next()
        assert (second.data, second.gap) == (b"two", False)
        # The other topic's subscriber saw only its own messages, then a gap.
        items = [await other.next(), await other.next()]
        assert [(m.channel, m.data, m.gap) for m in items] == [
            (b"sport", b"goal", False),
            (b"sport", b"", True),
        ]
        await sub.unsubscribe()
        assert await client.request(b"!publish:news three") == b"0"
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()
        assert sub.buffered == 0


@pytest_twisted.ensureDeferred
async def test_a_stream_opened_before_the_client_is_ready_waits_for_a_connection():
    server = ReferenceServerFactory(clock=reactor)
    port = await listen(reactor, "tcp:0:interface=127.0.0.1", server)
    number = port.getHost().port
    client = FramedClient.from_endpoint(reactor, f"tcp:127.0.0.1:{number}")
    try:
        parts = await collect(client.stream(b"!stream:3:4"))
        assert parts == expected(3, 4)
    finally:
        await client.close(timeout=2.0)
    # With no server at all, the wait ends with Unavailable at idle_timeout,
    # and gives its slot back.
    await port.stopListening()
    client = FramedClient.from_endpoint(
        reactor, f"tcp:127.0.0.1:{number}", backoff=FAST
    )
    try:
        stream = client.stream(b"!stream:3:4", idle_timeout=0.3)
        with pytest.raises(Unavailable):
            await stream.next()
        assert client.in_flight == 0
    finally:
        await client.close(timeout=2.0)


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_ten_thousand_concurrent_streams_on_shared_connections():
    # The figure: 10,000 streams at once over 2 connections, each
    # part checked (its stream, its place), none twice, none missing.
    async with served(pool_size=2, max_in_flight=10_000) as (client, _):
        streams = [client.stream(b"!stream:%d:8" % (1 + i % 7)) for i in range(10_000)]
        results = await gatherResults([ensureDeferred(collect(s)) for s in streams])
        for i, parts in enumerate(results):
            assert parts == expected(1 + i % 7, 8), i
        assert client.in_flight == 0
