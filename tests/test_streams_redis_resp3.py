"""
Redis pub/sub on shared RESP3 connections (RedisClient protocol=3) against
a real redis-server: messages arrive as push frames between the replies to
other commands on the same connections.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater

from framedclient.backoff import ExponentialBackoff
from framedclient.clients.redis import RedisClient
from framedclient.codecs.redis import RedisCodec
from framedclient.codecs.resp3 import Resp3Codec

from .servers import redis_server

FAST = ExponentialBackoff(initial=0.05, max_delay=0.2, min_connect_timeout=1.0)


@pytest.fixture
def server(tmp_path):
    with redis_server(str(tmp_path)) as server:
        yield server


async def connect(server, **options):
    client = RedisClient.from_endpoint(
        reactor,
        f"tcp:127.0.0.1:{server.port}",
        protocol=3,
        request_timeout=10.0,
        backoff=FAST,
        **options,
    )
    await client.when_ready()
    return client


@pytest_twisted.async_yield_fixture
async def redis(server):
    client = await connect(server, pool_size=2)
    yield client
    await client.close(timeout=2)


async def until_subscribers(redis, channel, count):
    for _ in range(200):
        if await redis.execute("PUBSUB", "NUMSUB", channel) == [channel, count]:
            return
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"{channel!r} never had {count} subscribers")


@pytest_twisted.ensureDeferred
async def test_subscriptions_share_the_connections_that_carry_other_commands(redis):
    news = redis.subscribe("news")
    pattern = redis.psubscribe("sp*")
    sharded = redis.ssubscribe("shard")
    await gatherResults([s.when_subscribed() for s in (news, pattern, sharded)])
    # Only the client's own pool: no connection of their own.
    clients = await redis.execute("CLIENT", "LIST")
    assert clients.count(b"cmd=") == 2 + 0  # the pool's 2 connections
    # Ordinary commands, with their RESP3 replies in RESP2's shape, on
    # the same connections while messages are pushed.
    await redis.hset("h", {"a": "1"})
    for i in range(20):
        assert await redis.execute("PUBLISH", "news", f"n{i}") == 1
        assert await redis.set("k", i)
        assert await redis.get("k") == b"%d" % i
        assert await redis.hgetall("h") == {b"a": b"1"}
        assert await redis.get("missing") is None
    assert await redis.execute("PUBLISH", "sport", "goal") == 1
    assert await redis.execute("SPUBLISH", "shard", "s1") == 1
    got = [await news.next() for _ in range(20)]
    assert [(m.channel, m.data) for m in got] == [
        (b"news", b"n%d" % i) for i in range(20)
    ]
    (p,) = [await pattern.next()]
    assert (p.channel, p.data, p.gap) == (b"sport", b"goal", False)
    (s,) = [await sharded.next()]
    assert (s.channel, s.data) == (b"shard", b"s1")
    assert news.buffered == pattern.buffered == sharded.buffered == 0
    await news.unsubscribe()
    assert await redis.execute("PUBLISH", "news", "gone") == 0
    with pytest.raises(StopAsyncIteration):
        await news.__anext__()


@pytest_twisted.ensureDeferred
async def test_a_channel_and_an_identical_pattern_each_get_the_message_once(redis):
    plain = redis.subscribe("same")
    pattern = redis.psubscribe("same")
    await gatherResults([s.when_subscribed() for s in (plain, pattern)])
    assert await redis.execute("PUBLISH", "same", "x") == 2
    assert await redis.execute("PUBLISH", "same", "y") == 2
    assert [m.data for m in (await plain.next(), await plain.next())] == [b"x", b"y"]
    assert [m.data for m in (await pattern.next(), await pattern.next())] == [
        b"x",
        b"y",
    ]
    assert plain.buffered == pattern.buffered == 0


@pytest_twisted.ensureDeferred
async def test_resp3_subscriptions_resume_after_redis_is_killed(server, redis):
    subs = [redis.subscribe(f"ch-{i}") for i in range(200)]
    await gatherResults([s.when_subscribed() for s in subs])
    server.kill()
    server.start()
    markers = await gatherResults([s.next() for s in subs])
    assert all(m.gap and m.channel == b"ch-%d" % i for i, m in enumerate(markers))
    await until_subscribers(redis, b"ch-199", 1)
    for i in range(200):
        assert await redis.execute("PUBLISH", f"ch-{i}", f"after-{i}") == 1
    after = await gatherResults([s.next() for s in subs])
    assert [(m.channel, m.data, m.gap) for m in after] == [
        (b"ch-%d" % i, b"after-%d" % i, False) for i in range(200)
    ]
    assert all(s.buffered == 0 for s in subs)


@pytest_twisted.ensureDeferred
async def test_a_thousand_subscriptions_get_each_message_once_in_order(server, redis):
    # 1,000 subscriptions over 250 channels (4 per channel) on the shared
    # connections, while a second client publishes 10 messages per channel.
    channels = [b"c-%d" % i for i in range(250)]
    subs = [redis.subscribe(channels[i % 250]) for i in range(1000)]
    await gatherResults([s.when_subscribed() for s in subs])
    publisher = await connect(server)
    try:
        for n in range(10):
            await gatherResults(
                [publisher.execute("PUBLISH", c, b"%s:%d" % (c, n)) for c in channels]
            )
    finally:
        await publisher.close(timeout=2)
    for i, sub in enumerate(subs):
        got = [await sub.next() for _ in range(10)]
        channel = channels[i % 250]
        assert [(m.channel, m.data, m.gap) for m in got] == [
            (channel, b"%s:%d" % (channel, n), False) for n in range(10)
        ]
        assert sub.buffered == 0


def test_protocol_must_be_2_or_3_and_3_needs_a_resp3_codec():
    with pytest.raises(ValueError, match=r"protocol must be 2 .* or 3"):
        RedisClient.from_endpoint(reactor, "tcp:127.0.0.1:1", protocol=4, start=False)
    with pytest.raises(TypeError, match=r"protocol=3 .* needs a Resp3Codec"):
        RedisClient.from_endpoint(
            reactor, "tcp:127.0.0.1:1", protocol=3, codec=RedisCodec(), start=False
        )
    client = RedisClient.from_endpoint(
        reactor, "tcp:127.0.0.1:1", protocol=3, start=False
    )
    assert isinstance(client.client.codec, Resp3Codec)


@pytest_twisted.ensureDeferred
async def test_hello_3_authenticates_the_shared_and_the_cache_connections(tmp_path):
    with redis_server(str(tmp_path), "--requirepass", "s3cret") as server:
        redis = await connect(server, password="s3cret", db=2)
        try:
            news = redis.subscribe("news")
            await news.when_subscribed()
            await redis.set("k", "v")
            assert await redis.execute("PUBLISH", "news", "hi") == 1
            assert (await news.next()).data == b"hi"
            cache = redis.cache()
            await cache.when_ready()
            # The cache reads the same database as the client.
            assert await cache.get("k") == b"v"
        finally:
            await redis.close(timeout=2)
