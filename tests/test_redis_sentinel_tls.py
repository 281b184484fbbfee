"""
Redis Sentinel over TLS only (:mod:`tests.sentinel_servers` with
``tls=``: master, replica and three sentinels take TLS and nothing else,
and replicate and watch over TLS): the master and the replica the
sentinels announce are reached with the sentinels' TLS settings, each
certificate checked against the announced address, through a failover
too; and the ``tls=`` argument and the ``redis-sentinel+tls:`` string.
"""

from __future__ import annotations

import os
import re
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from framedclient._endpoints import endpoint_name
from framedclient.clients.redis import RedisClient, SentinelRedisClient
from framedclient.clients.sentinel import node_endpoints, parse_sentinel_string

from .sentinel_servers import sentinel_group, tls_files
from .test_redis_sentinel import kill_the_master_under_writes, settle


@pytest.fixture
def tls_group(tmp_path):
    files = tls_files(str(tmp_path))
    with sentinel_group(str(tmp_path), tls=files) as group:
        yield group


def roots(group) -> str:
    return os.path.join(os.path.dirname(group.tls.ca), "roots")


def gets_on(group, port: int) -> int:
    info = group.ask(port, "INFO", "commandstats").decode()
    found = re.search(r"cmdstat_get:calls=(\d+)", info)
    return int(found[1]) if found else 0


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_the_announced_master_and_replica_are_reached_with_the_sentinels_tls(
    tls_group,
):
    # The sentinels are given as tls: strings; the servers they name take
    # TLS only, so a plain connection to them would never be ready.
    redis = RedisClient.from_sentinel(
        reactor,
        tls_group.sentinel_endpoints,
        "mymaster",
        read_from_replicas=True,
        request_timeout=5.0,
    )
    try:
        await settle(redis.when_ready(), 10)
        assert redis.sentinel.master == f"127.0.0.1:{tls_group.master.port}"
        assert await redis.set("k", "over tls") is True
        assert tls_group.ask(tls_group.master.port, "GET", "k") == b"over tls"
        assert redis.replicas is not None
        await settle(redis.replicas.when_ready(), 10)
        tls_group.ask(tls_group.master.port, "WAIT", 1, 1000)
        before = gets_on(tls_group, tls_group.replica.port)
        assert await redis.get("k") == b"over tls"
        assert gets_on(tls_group, tls_group.replica.port) == before + 1
        # The subscription to +switch-master runs over TLS too.
        deadline = time.monotonic() + 5
        while redis.sentinel.subscribed_to is None and time.monotonic() < deadline:
            await deferLater(reactor, 0.05, lambda: None)
        assert redis.sentinel.subscribed_to is not None
    finally:
        await redis.close(timeout=2)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_redis_sentinel_tls_string_reaches_sentinels_and_master_over_tls(
    tls_group,
):
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in tls_group.sentinels)
    text = f"redis-sentinel+tls:{hosts}/mymaster:trustRoots={roots(tls_group)}"
    redis = RedisClient.from_endpoint(reactor, text, request_timeout=5.0)
    try:
        assert isinstance(redis, SentinelRedisClient)
        await settle(redis.when_ready(), 10)
        assert redis.sentinel.master == f"127.0.0.1:{tls_group.master.port}"
        assert await redis.incr("n") == 1
        assert tls_group.ask(tls_group.master.port, "GET", "n") == b"1"
    finally:
        await redis.close(timeout=2)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_master_whose_certificate_is_not_trusted_is_not_used_and_says_why(
    tls_group, tmp_path
):
    # The sentinels are trusted; the data nodes are checked against
    # another CA (tls= options), which did not sign their certificate.
    stranger = tls_files(str(tmp_path / "stranger"))
    redis = RedisClient.from_sentinel(
        reactor,
        tls_group.sentinel_endpoints,
        "mymaster",
        tls=f"trustRoots={os.path.dirname(stranger.ca)}/roots",
        sentinel_timeout=1.0,
        request_timeout=1.0,
    )
    try:
        deadline = time.monotonic() + 10
        while redis.sentinel.last_error is None and time.monotonic() < deadline:
            await deferLater(reactor, 0.05, lambda: None)
        error = redis.sentinel.last_error or ""
        assert "does not answer ROLE" in error
        assert "certificate verify failed" in error
        assert redis.sentinel.master is None
    finally:
        await redis.close(timeout=2)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_sigkill_the_master_under_writes_over_tls_writes_resume_on_the_new_one(
    tls_group,
):
    redis = RedisClient.from_sentinel(
        reactor, tls_group.sentinel_endpoints, "mymaster", request_timeout=2.0
    )
    new = f"127.0.0.1:{tls_group.replica.port}"
    try:
        await settle(redis.when_ready(), 10)
        seen = await kill_the_master_under_writes(
            redis, tls_group.master, new, warm_up=0.5, writes_after=200
        )
        log, incrs = seen.log, seen.incrs
        killed_at, switched_at = seen.killed_at, seen.switched_at
        assert redis.sentinel.switches == 1
        # What the new master acknowledged, it holds (read over TLS).
        after = [k for k, r, t in log if r is True and t > switched_at]
        assert after
        values = await redis.mget(*after[-100:])
        assert values == [k.encode() for k in after[-100:]]
        assert tls_group.ask(tls_group.replica.port, "ROLE")[0] == b"master"
        # INCR never counted more than it was called (none sent twice).
        assert int(await redis.get("counter")) <= len(incrs)
        failed = [r for k, r, t in log if r is not True]
        print(
            f"\nsentinel failover over TLS: client switched "
            f"{switched_at - killed_at:.2f} s after the kill; {len(failed)} "
            f"writes failed to their callers "
            f"({sorted({type(f.value).__name__ for f in failed})}), "
            f"{len(after)} acknowledged by the new master"
        )
    finally:
        await redis.close(timeout=2)


def test_node_endpoints_follow_the_first_tls_sentinel_unless_told(tmp_path):
    files = tls_files(str(tmp_path))
    trust = os.path.join(os.path.dirname(files.ca), "roots")
    tls_sentinel = f"tls:127.0.0.1:26379:trustRoots={trust}"

    def reached(make) -> str:
        return endpoint_name(make("10.0.0.1", 6379))

    assert reached(node_endpoints(reactor, ["10.0.0.9:26379", tls_sentinel])) == (
        "tls:10.0.0.1:6379"
    )
    assert reached(node_endpoints(reactor, ["10.0.0.9:26379"])) == "tcp:10.0.0.1:6379"
    assert reached(node_endpoints(reactor, [tls_sentinel], tls=False)) == (
        "tcp:10.0.0.1:6379"
    )
    told = node_endpoints(reactor, ["10.0.0.9:26379"], tls=f"trustRoots={trust}")
    assert reached(told) == "tls:10.0.0.1:6379"
    assert reached(node_endpoints(reactor, ["10.0.0.9:26379"], tls=True)) == (
        "tls:10.0.0.1:6379"
    )


def test_a_bad_tls_argument_is_refused_at_the_call_naming_it(tmp_path):
    with pytest.raises(TypeError, match="tls must be"):
        RedisClient.from_sentinel(reactor, ["127.0.0.1:26379"], "m", tls=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"tls= options .*trustRoots.*'cafile=/x'"):
        RedisClient.from_sentinel(reactor, ["127.0.0.1:26379"], "m", tls="cafile=/x")
    # Twisted's own error for a missing directory has no message at all.
    missing = tmp_path / "missing"
    with pytest.raises(ValueError, match=r"^tls='trustRoots=.*is a directory of PEM"):
        RedisClient.from_sentinel(
            reactor, ["127.0.0.1:26379"], "m", tls=f"trustRoots={missing}"
        )
    with pytest.raises(ValueError, match=r"^sentinel 'tls:.*is a directory of PEM"):
        RedisClient.from_sentinel(
            reactor, [f"tls:127.0.0.1:26379:trustRoots={missing}"], "m"
        )


def test_a_redis_sentinel_tls_string_gives_tls_sentinels_with_its_options():
    assert parse_sentinel_string(
        "redis-sentinel+tls:10.0.0.1:26379,[::1]:26380/mymaster:trustRoots=/etc/ca"
    ) == (
        [
            "tls:host=10.0.0.1:port=26379:trustRoots=/etc/ca",
            "tls:host=\\:\\:1:port=26380:trustRoots=/etc/ca",
        ],
        "mymaster",
    )
    assert parse_sentinel_string("redis-sentinel+tls:10.0.0.1:26379/m") == (
        ["tls:host=10.0.0.1:port=26379"],
        "m",
    )
    with pytest.raises(ValueError, match="each one of trustRoots"):
        parse_sentinel_string("redis-sentinel+tls:10.0.0.1:26379/m:host=x")
    with pytest.raises(ValueError, match="the master's name"):
        parse_sentinel_string("redis-sentinel+tls:10.0.0.1:26379/:trustRoots=/x")


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_the_gateway_reaches_a_tls_sentinel_deployment_by_its_string(tls_group):
    # twist framedclient --upstream redis-sentinel+tls:...: the gateway's
    # sentinel upstream asks the sentinels over TLS and writes to the
    # master they announce over TLS, as the library's client does.
    from framedclient.codecs.redis import command

    from .test_runner_gateway import running

    hosts = ",".join(f"127.0.0.1:{s.port}" for s in tls_group.sentinels)
    upstream = f"redis-sentinel+tls:{hosts}/mymaster:trustRoots={roots(tls_group)}"
    async with running("--codec", "redis", "--upstream", upstream) as runner:
        code, _, reply = await runner.post(command("SET", "via-gateway", "tls"))
        assert (code, reply) == (200, b"+OK\r\n")
        assert tls_group.ask(tls_group.master.port, "GET", "via-gateway") == b"tls"
        code, _, reply = await runner.post(command("GET", "via-gateway"))
        assert (code, reply) == (200, b"$3\r\ntls\r\n")
