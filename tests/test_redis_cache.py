"""
RedisClient.cache(): a client-side cache kept right by CLIENT TRACKING,
against a real redis-server.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from framedclient.backoff import ExponentialBackoff
from framedclient.clients.redis import RedisClient
from framedclient.codecs.redis import command, parse_reply
from framedclient.errors import ClientClosed

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


@pytest_twisted.async_yield_fixture
async def cache(redis):
    cache = redis.cache(max_keys=100)
    await cache.when_ready()
    yield cache
    await cache.close(timeout=2)


async def until(predicate, what):
    for _ in range(250):
        if predicate():
            return
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"never: {what}")


@pytest_twisted.ensureDeferred
async def test_a_write_from_another_client_invalidates_the_cached_key(redis, cache):
    await redis.set("k", "v1")
    assert await cache.get("k") == b"v1"
    assert await cache.get(b"k") == b"v1"
    assert await cache.get("missing") is None
    assert await cache.get("missing") is None
    assert (cache.hits, cache.misses) == (2, 2)
    await redis.set("k", "v2")
    await until(lambda: "k" not in cache, "the invalidation of k arrived")
    assert cache.invalidations == 1
    assert await cache.get("k") == b"v2"
    assert cache.misses == 3
    # A key that appears is invalidated too (missing keys are tracked);
    # sync() waits for the invalidations of the writes done before it.
    await redis.set("missing", "now")
    await cache.sync()
    assert "missing" not in cache
    assert await cache.get("missing") == b"now"


@pytest_twisted.ensureDeferred
async def test_an_invalidation_while_a_get_is_in_flight_keeps_its_reply_out(
    redis, cache
):
    await redis.set("k", "v1")
    assert await cache.get("k") == b"v1"
    # Evict k locally (max_keys is 100) while Redis still tracks it for
    # this connection, so the next read of k goes to Redis.
    for i in range(100):
        await cache.get(f"filler-{i}")
    assert "k" not in cache
    # The next GET waits on the tracking connection behind a BLPOP; while it
    # is in flight another client writes k, so k's invalidation arrives
    # before the GET's reply.
    blocked = cache.client.request(b"*3\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n$1\r\n5\r\n")
    in_flight = cache.get("k")
    await until(lambda: cache.misses == 102, "the GET was sent")
    invalidations = cache.invalidations
    await redis.set("k", "v2")
    await until(
        lambda: cache.invalidations == invalidations + 1,
        "k's invalidation arrived while its GET was in flight",
    )
    assert not in_flight.called
    await redis.lpush("q", "go")
    await blocked
    assert await in_flight == b"v2"
    # Answered, but not cached: it was read while k was changing.
    assert "k" not in cache
    assert await cache.get("k") == b"v2"
    assert cache.misses == 103
    assert "k" in cache


@pytest_twisted.ensureDeferred
async def test_the_cache_holds_at_most_max_keys_least_recently_used_out(redis):
    cache = redis.cache(max_keys=3)
    try:
        for key in ("a", "b", "c"):
            await cache.get(key)
        await cache.get("a")  # a is now the most recently used
        await cache.get("d")
        assert len(cache) == 3
        assert "b" not in cache
        assert all(k in cache for k in ("a", "c", "d"))
    finally:
        await cache.close(timeout=2)


@pytest_twisted.ensureDeferred
async def test_the_cache_is_flushed_when_its_connection_is_lost(redis, cache):
    await redis.set("k", "v1")
    assert await cache.get("k") == b"v1"
    flushes = cache.flushes
    cache_id = parse_reply(await cache.client.request(command("CLIENT", "ID")))
    assert await redis.execute("CLIENT", "KILL", "ID", cache_id) == 1
    await until(lambda: cache.flushes == flushes + 1, "the cache saw its loss")
    assert len(cache) == 0
    # Changes while it was down are not served...
    await redis.set("k", "v2")
    assert await cache.get("k") == b"v2"
    # ...and the new connection tracks again.
    await redis.set("k", "v3")
    await until(lambda: "k" not in cache, "the invalidation on the new connection")
    assert await cache.get("k") == b"v3"


@pytest_twisted.ensureDeferred
async def test_flushall_empties_the_cache(redis, cache):
    await redis.set("k", "v1")
    await cache.get("k")
    await cache.get("j")
    await redis.execute("FLUSHALL")
    await until(lambda: len(cache) == 0, "FLUSHALL's invalidation of every key")
    assert await cache.get("k") is None


def test_bad_arguments_are_refused_at_the_call():
    client = RedisClient.from_endpoint(reactor, "tcp:127.0.0.1:1", start=False)
    with pytest.raises(ValueError, match="max_keys must be a positive int"):
        client.cache(max_keys=0)
    cache = client.cache(max_keys=1)
    with pytest.raises(TypeError, match="key must be bytes or str"):
        cache.get(5)


@pytest_twisted.ensureDeferred
async def test_closing_the_client_closes_its_caches(server):
    redis = RedisClient.from_endpoint(
        reactor, f"tcp:127.0.0.1:{server.port}", request_timeout=10.0, backoff=FAST
    )
    cache = redis.cache()
    await cache.when_ready()
    await cache.get("k")
    await redis.close(timeout=2)
    assert len(cache) == 0
    with pytest.raises(ClientClosed):
        await cache.get("k")
