"""
Redis pub/sub (RedisClient.subscribe/psubscribe/ssubscribe) against a real
redis-server, killed and restarted under subscriptions.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher

from framedclient.backoff import ExponentialBackoff
from framedclient.clients.redis import RedisClient
from framedclient.codecs import PUSH, REPLY, Push
from framedclient.codecs.redis_pubsub import RedisPubSubCodec

from .servers import redis_server

FAST = ExponentialBackoff(initial=0.05, max_delay=0.2, min_connect_timeout=1.0)


@pytest.fixture
def server(tmp_path):
    with redis_server(str(tmp_path)) as server:
        yield server


@pytest_twisted.async_yield_fixture
async def redis(server):
    client = RedisClient.from_endpoint(
        reactor, f"tcp:127.0.0.1:{server.port}", request_timeout=10.0, backoff=FAST
    )
    await client.when_ready()
    yield client
    await client.close(timeout=2)


def test_pubsub_codec_classifies_messages_as_pushes_and_confirmations_as_replies():
    codec = RedisPubSubCodec()
    message = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
    assert codec.decode(message) == (PUSH, 0, Push(b"news", b"hi"))
    pmessage = b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
    assert codec.decode(pmessage) == (PUSH, 0, Push(b"news", b"hi", b"n*"))
    confirm = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    assert codec.decode(confirm) == (REPLY, 0, confirm)
    # A message-shaped reply to a command is a reply (a list of 3 strings
    # whose first is not a message kind).
    other = b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
    assert codec.decode(other)[0] == REPLY


async def receive(sub, count):
    return [await sub.next() for _ in range(count)]


@pytest_twisted.ensureDeferred
async def test_subscribe_psubscribe_ssubscribe_deliver_only_their_channels(redis):
    news = redis.subscribe("news", b"weather")
    pattern = redis.psubscribe("sp*")
    sharded = redis.ssubscribe("shard")
    await gatherResults([s.when_subscribed() for s in (news, pattern, sharded)])
    assert await redis.execute("PUBLISH", "news", "n1") == 1
    assert await redis.execute("PUBLISH", "sport", "goal") == 1
    assert await redis.execute("PUBLISH", "weather", "rain") == 1
    assert await redis.execute("PUBLISH", "other", "nobody") == 0
    assert await redis.execute("SPUBLISH", "shard", "s1") == 1
    got = await receive(news, 2)
    assert [(m.channel, m.data, m.gap) for m in got] == [
        (b"news", b"n1", False),
        (b"weather", b"rain", False),
    ]
    (p,) = await receive(pattern, 1)
    assert (p.channel, p.data) == (b"sport", b"goal")
    (s,) = await receive(sharded, 1)
    assert (s.channel, s.data) == (b"shard", b"s1")
    assert news.buffered == pattern.buffered == sharded.buffered == 0
    await news.unsubscribe()
    assert await redis.execute("PUBLISH", "news", "n2") == 0
    with pytest.raises(StopAsyncIteration):
        await news.__anext__()


@pytest_twisted.ensureDeferred
async def test_subscriptions_resume_after_redis_is_killed_with_a_gap_marker_first(
    server, redis
):
    subs = [redis.subscribe(f"ch-{i}") for i in range(200)]
    await gatherResults([s.when_subscribed() for s in subs])
    for i in range(0, 200, 50):
        await redis.execute("PUBLISH", f"ch-{i}", f"before-{i}")
    server.kill()
    server.start()
    # Every subscription is subscribed again by itself; the first item
    # after the reconnect is the gap marker.
    for i in range(0, 200, 50):
        before = await subs[i].next()
        assert (before.data, before.gap) == (b"before-%d" % i, False)
    markers = await gatherResults([s.next() for s in subs])
    assert all(m.gap and m.channel == b"ch-%d" % i for i, m in enumerate(markers))
    for _ in range(100):
        if await redis.execute("PUBSUB", "NUMSUB", "ch-199") == [b"ch-199", 1]:
            break
        await deferLater(reactor, 0.02, lambda: None)
    for i in range(200):
        assert await redis.execute("PUBLISH", f"ch-{i}", f"after-{i}") == 1
    after = await gatherResults([s.next() for s in subs])
    assert [(m.channel, m.data, m.gap) for m in after] == [
        (b"ch-%d" % i, b"after-%d" % i, False) for i in range(200)
    ]
    assert all(s.buffered == 0 for s in subs)


def test_subscribing_needs_a_client_made_from_an_endpoint():
    from framedclient import FramedClient
    from framedclient.codecs.redis import RedisCodec

    client = FramedClient.from_endpoint(
        reactor, "tcp:127.0.0.1:1", codec=RedisCodec(), start=False
    )
    with pytest.raises(TypeError, match="from_endpoint"):
        RedisClient(client).subscribe("x")


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest_twisted.ensureDeferred
async def test_redis_dropping_a_subscriber_that_never_reads_is_a_reported_gap(redis):
    # Redis drops a subscriber whose output buffer passes 512 kB.
    await redis.execute(
        "CONFIG", "SET", "client-output-buffer-limit", "pubsub 512kb 256kb 1"
    )
    sub = redis.subscribe("flood", buffer_bytes=64 * 1024)
    await sub.when_subscribed()
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        before = rss_bytes()
        # 8 kB messages to a consumer that never reads, until Redis has
        # dropped it: more than Redis's limit and the kernel's socket
        # buffers together.
        body = b"." * (8 * 1024 - 10)
        sent = 0
        while await redis.execute("CLIENT", "LIST", "TYPE", "pubsub") and sent < 20000:
            pipe = redis.pipeline()
            for i in range(sent, sent + 200):
                pipe.add("PUBLISH", "flood", b"%010d" % i + body)
            await pipe.execute()
            sent += 200
        assert await redis.execute("CLIENT", "LIST", "TYPE", "pubsub") == b""
        # What the client holds stays bounded: the subscription's buffer
        # (buffer_bytes, plus the one read that crossed it), whatever was
        # published.
        assert sub.buffered_bytes <= 64 * 1024 + 64 * 1024 + 8 * 1024
        assert rss_bytes() - before < 16 * 1024 * 1024
        # The consumer reads: what was buffered, then what the kernel held
        # when Redis closed (its reading was paused, so the close is seen
        # only now), in order, then the gap marker.
        numbers = []
        while True:
            message = await sub.next()
            if message.gap:
                break
            numbers.append(int(message.data[:10]))
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert numbers == list(range(len(numbers))) and len(numbers) < sent
    assert redis.pubsub_stats() == {"channels": 1, "connections_lost": 1}
    assert any("client-output-buffer-limit" in formatEvent(e) for e in logged)
    # Subscribed again on a new connection.
    await until_subscribed(redis, b"flood")
    assert await redis.execute("PUBLISH", "flood", b"%010d" % 10**9) == 1
    assert (await sub.next()).data == b"%010d" % 10**9


async def until_subscribed(redis, channel):
    for _ in range(200):
        if await redis.execute("PUBSUB", "NUMSUB", channel) == [channel, 1]:
            return
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"{channel!r} was not subscribed again")
