"""
Streams and subscriptions against the reference server over loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, ensureDeferred, gatherResults
from twisted.internet.task import deferLater

from framedclient import FramedClient
from framedclient.backoff import ExponentialBackoff
from framedclient.bench.serverproc import REFERENCE_SERVER_COMMAND, ServerProcess
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


def expected(count: int, size: int, tag: bytes = b"") -> list[bytes]:
    # What the reference server's !stream:N:SIZE[:TAG] sends, part by part.
    prefix = tag + b":" if tag else b""
    labels = [b"%s%d:" % (prefix, i) for i in range(count)]
    return [(label + b"x" * size)[: max(size, len(label))] for label in labels]


def held(client: FramedClient) -> dict[str, int]:
    """
    What a client still holds for requests, streams and subscriptions,
    through its public ``debug_state()`` (all zeros: nothing leaked).
    """
    state = client.debug_state()
    protocols = [u["protocol"] for u in state["upstreams"] if u.get("protocol")]
    return {
        "in_flight": state["in_flight"],
        "queued": state["queued"],
        "pending_ids": sum(p["pending"] for p in protocols),
        "tombstone_ids": sum(p["tombstones"] for p in protocols),
        "table_entries": sum(p["table_entries"] for p in protocols),
        "streams_open": state["streams_open"],
        "stream_timers": state["stream_timers"],
        "stream_buffered_parts": state["stream_buffered_parts"],
        "stream_buffered_bytes": state["stream_buffered_bytes"],
        "subscription_buffered_messages": state["subscription_buffered_messages"],
        "feeds_holding_reading": state["feeds_holding_reading"],
    }


async def settled(client: FramedClient, seconds: float = 5.0) -> dict[str, int]:
    # The server's answers to the last cancels may still be on their way.
    books = held(client)
    for _ in range(int(seconds / 0.02)):
        if not any(books.values()):
            break
        await deferLater(reactor, 0.02, lambda: None)
        books = held(client)
    return books


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


@pytest.mark.slow
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
        assert await settled(client) == dict.fromkeys(held(client), 0)


@pytest_twisted.ensureDeferred
async def test_a_consumer_that_never_reads_keeps_memory_bounded_then_gets_everything():
    async with served(pool_size=1) as (client, server):
        limit = 64 * 1024
        stream = client.stream(b"!stream:20000:1000", buffer_bytes=limit)
        await deferLater(reactor, 0.5, lambda: None)
        # 20 MB were asked for; the client holds at most its limit plus one
        # socket read, and the server stopped sending (it streams only as
        # fast as the client reads).
        held_bytes = stream.buffered_bytes
        assert limit <= held_bytes <= limit + 256 * 1024
        (proto,) = [c.protocol for c in client.pool.connections if c.protocol]
        assert proto.reading_held
        received = stream.buffered
        await deferLater(reactor, 0.2, lambda: None)
        assert stream.buffered == received  # nothing more was read
        # The client's books show what the stream holds, and that it holds
        # the connection's reading.
        books = held(client)
        assert books["streams_open"] == 1
        assert books["stream_buffered_parts"] == received
        assert books["stream_buffered_bytes"] == held_bytes == stream.buffered_bytes
        assert books["feeds_holding_reading"] == 1
        parts = await collect(stream)
        assert len(parts) == 20000 and parts == expected(20000, 1000)
        assert not proto.reading_held and server.connections
        assert held(client) == dict.fromkeys(books, 0)


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


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_streams_and_subscriptions_sharing_connections_get_only_their_own_items():
    # The reliability figure: 10,000 concurrent streams and 1,000
    # subscriptions on shared connections (two clients of two connections
    # each; each client's subscriptions share one of its connections with
    # its streams).  Every part names its stream and place, every message
    # its topic and place: 0 twice, 0 out of order, 0 to the wrong one.
    server = ReferenceServerFactory(clock=reactor)
    port = await listen(reactor, "tcp:0:interface=127.0.0.1", server)
    address = f"tcp:127.0.0.1:{port.getHost().port}"
    clients = [
        FramedClient.from_endpoint(
            reactor, address, pool_size=2, max_in_flight=6000, backoff=FAST
        )
        for _ in range(2)
    ]
    try:
        for client in clients:
            await client.when_ready()
        topics = [b"t%d" % i for i in range(500)]
        # Client 0 follows every topic once; client 1 follows the first 250
        # twice (two subscriptions each): 1,000 subscriptions, and topics
        # with one and with three subscribers.
        subs = [(t, clients[0].subscribe(t)) for t in topics]
        subs += [(t, clients[1].subscribe(t)) for t in topics[:250] for _ in (0, 1)]
        assert len(subs) == 1000
        for _, sub in subs:
            await sub.when_subscribed()
        streams = [
            (i, clients[i % 2].stream(b"!stream:%d:8:s%d" % (1 + i % 7, i)))
            for i in range(10_000)
        ]
        messages = 10

        async def publish() -> None:
            # Interleaved with the streams' parts, a reactor turn apart.
            for seq in range(messages):
                for k, topic in enumerate(topics):
                    # Connections, not subscriptions: 2 for the first 250.
                    receivers = server.publish(topic, b"%s:%d" % (topic, seq))
                    assert receivers == (2 if k < 250 else 1)
                    if k % 100 == 99:
                        await deferLater(reactor, 0, lambda: None)

        async def receive(sub: Any) -> list[bytes]:
            got = []
            for _ in range(messages):
                message = await sub.next()
                assert not message.gap
                got.append(message.channel + b"=" + message.data)
            return got

        publishing = ensureDeferred(publish())
        stream_parts, sub_messages, _ = await gatherResults(
            [
                gatherResults([ensureDeferred(collect(s)) for _, s in streams]),
                gatherResults([ensureDeferred(receive(sub)) for _, sub in subs]),
                publishing,
            ]
        )
        for (i, _), parts in zip(streams, stream_parts, strict=True):
            assert parts == expected(1 + i % 7, 8, b"s%d" % i), i
        for (topic, _), got in zip(subs, sub_messages, strict=True):
            assert got == [b"%s=%s:%d" % (topic, topic, n) for n in range(messages)]
        # Nothing more came for any subscription (no duplicate, no stray),
        # and nothing is left held.
        await deferLater(reactor, 0.1, lambda: None)
        for client in clients:
            assert await settled(client) == dict.fromkeys(held(client), 0)
    finally:
        for client in clients:
            await client.close(timeout=2.0)
        await port.stopListening()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_cancelling_half_of_five_thousand_streams_midway_leaves_nothing_held():
    # The figure, through the client's public books: 5,000 streams
    # (an idle timer each), half cancelled half-way through their parts:
    # 0 held IDs, 0 timers, 0 buffered parts afterwards.
    async with served(pool_size=2, max_in_flight=5000) as (client, server):
        count, total = 5000, 200
        streams = [
            client.stream(
                b"!stream:%d:8:s%d" % (total, i), idle_timeout=30.0, buffer_bytes=256
            )
            for i in range(count)
        ]
        opened = client.debug_state()
        assert opened["streams_open"] == count and opened["stream_timers"] == count

        async def consume(i: int, stream: Stream) -> list[bytes] | None:
            parts = []
            for _ in range(total // 2):
                parts.append(await stream.next())
            if i % 2:
                return parts + await collect(stream)
            stream.cancel()
            with pytest.raises(CancelledError):
                await stream.next()
            assert parts == expected(total, 8, b"s%d" % i)[: total // 2]
            return None

        results = await gatherResults(
            [ensureDeferred(consume(i, s)) for i, s in enumerate(streams)]
        )
        for i, parts in enumerate(results):
            if i % 2:
                assert parts == expected(total, 8, b"s%d" % i), i
        assert await settled(client) == dict.fromkeys(held(client), 0)
        # The server was told: it stopped those streams (or had finished).
        assert server.cancels == count // 2
        # No timer of the streams, nor any wake-up for their IDs, is left:
        # the reactor holds only each connection's liveness check.
        assert client.debug_state()["delayed_calls"] == 2


def rss() -> int:
    """This process's resident memory, in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_subscriber_that_never_reads_keeps_client_memory_bounded():
    # The bound, stated: a subscription whose consumer never reads
    # holds at most buffer_bytes plus one socket read; the client's RSS
    # stays within 16 MiB of where it was while the server pushes 48 MB at
    # it.  (The reference server runs in its own process: what it queues
    # for the subscriber is its memory, not ours; Redis would close the
    # subscriber at its client-output-buffer-limit, see docs/streams.md.)
    limit = 256 * 1024
    size, count = 1024, 48_000
    with ServerProcess(REFERENCE_SERVER_COMMAND) as server:
        address = f"tcp:{server.host}:{server.port}"
        subscriber = FramedClient.from_endpoint(reactor, address, pool_size=1)
        publisher = FramedClient.from_endpoint(
            reactor, address, pool_size=1, max_in_flight=64
        )
        try:
            sub = subscriber.subscribe(b"flood", buffer_bytes=limit)
            await sub.when_subscribed()
            await publisher.when_ready()
            padding = b"x" * size

            async def publish(first: int, last: int) -> None:
                # 64 publishes in flight; each must reach the one subscriber.
                for start in range(first, last, 64):
                    replies = await gatherResults(
                        [
                            publisher.request(b"!publish:flood %08d" % n + padding[8:])
                            for n in range(start, min(start + 64, last))
                        ]
                    )
                    assert set(replies) == {b"1"}

            # Warm up (the subscriber's buffer fills, reading stops, the
            # allocator reaches its steady state), then measure.
            await publish(0, 2000)
            before = rss()
            peak = before
            for first in range(2000, count, 2000):
                await publish(first, first + 2000)
                peak = max(peak, rss())
            assert peak - before < 16 * 1024 * 1024, (before, peak)
            state = subscriber.debug_state()
            assert state["feeds_holding_reading"] == 1
            assert limit <= state["subscription_buffered_bytes"] <= limit + 256 * 1024
            # Nothing was lost meanwhile: reading again, every message comes,
            # in order, once (the server and the kernel held the rest).
            for n in range(count):
                message = await sub.next()
                assert not message.gap and message.data[:8] == b"%08d" % n
            assert sub.buffered == 0
            await sub.unsubscribe()
        finally:
            await subscriber.close(timeout=2.0)
            await publisher.close(timeout=2.0)
