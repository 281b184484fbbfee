"""
:meth:`RedisClient.from_sentinel` against a real Sentinel deployment (one
master, one replica, three sentinels; see :mod:`tests.sentinel_servers`):
it finds the master, skips sentinels that are down or silent, says why
when no master can be found, and follows a failover under a steady write
load.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from framedclient.clients.redis import RedisClient, SentinelRedisClient
from framedclient.codecs.redis import RespError, RespFramer, parse_reply
from framedclient.errors import (
    ConnectionLost,
    RequestTimeout,
    Unavailable,
)

from .sentinel_servers import ask, sentinel_group
from .servers import free_port


class FakeSentinel(Protocol):
    """
    A sentinel that names ``master`` (``None``: knows no such service) and
    accepts a subscription but never announces anything.
    """

    master: tuple[str, int] | None = None

    def connectionMade(self) -> None:
        self.framer = RespFramer()

    def dataReceived(self, data: bytes) -> None:
        for frame in self.framer.feed(data):
            args = parse_reply(frame)
            if args[0].upper() == b"SUBSCRIBE":
                self.transport.write(
                    b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n"
                    % (len(args[1]), args[1])
                )
            elif self.master is None:
                self.transport.write(b"*-1\r\n")
            else:
                ip, port = self.master[0].encode(), str(self.master[1]).encode()
                self.transport.write(
                    b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(ip), ip, len(port), port)
                )


def fake_sentinel(master: tuple[str, int] | None):
    factory = Factory.forProtocol(type("Fake", (FakeSentinel,), {"master": master}))
    return reactor.listenTCP(0, factory, interface="127.0.0.1")


@pytest.fixture
def group(tmp_path):
    with sentinel_group(str(tmp_path)) as group:
        yield group


async def settle(d: Deferred, seconds: float):
    # Wait for d, failing the test (not hanging it) after ``seconds``.
    d.addTimeout(seconds, reactor)
    return await d


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_finds_the_master_and_writes_reach_it(group):
    redis = RedisClient.from_sentinel(reactor, group.sentinel_endpoints, "mymaster")
    try:
        assert isinstance(redis, SentinelRedisClient)
        await settle(redis.when_ready(), 10)
        assert redis.sentinel.master == f"127.0.0.1:{group.master.port}"
        assert await redis.set("k", "v") is True
        # On the master itself, not on some other server.
        assert ask(group.master.port, "GET", "k") == b"v"
    finally:
        await redis.close(timeout=2)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_sentinel_that_is_down_or_silent_is_skipped(group):
    # One refuses connections, one accepts and never answers, one is a
    # real sentinel stopped for the test; the last one answers.
    silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    group.sentinels[0].stop()
    sentinels = [
        f"127.0.0.1:{free_port()}",
        f"tcp:127.0.0.1:{silent.getHost().port}",
        group.sentinel_endpoints[0],
        group.sentinel_endpoints[1],
    ]
    started = time.monotonic()
    redis = RedisClient.from_sentinel(
        reactor, sentinels, "mymaster", sentinel_timeout=0.5
    )
    try:
        await settle(redis.when_ready(), 10)
        # The silent one costs its timeout, not more.
        assert time.monotonic() - started < 3
        assert redis.sentinel.master == f"127.0.0.1:{group.master.port}"
        assert await redis.incr("n") == 1
    finally:
        await redis.close(timeout=2)
        await silent.stopListening()


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_no_master_found_fails_requests_saying_what_each_sentinel_said(group):
    redis = RedisClient.from_sentinel(
        reactor,
        [group.sentinel_endpoints[0], f"127.0.0.1:{free_port()}"],
        "no-such-service",
        sentinel_timeout=0.5,
        request_timeout=1.0,
    )
    try:
        await deferLater(reactor, 0.5, lambda: None)
        with pytest.raises(Unavailable) as caught:
            await settle(redis.get("k"), 10)
        message = str(caught.value)
        assert "does not know 'no-such-service'" in message
        assert "refused" in message.lower()
    finally:
        await redis.close(timeout=2)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_master_named_by_a_sentinel_is_used_only_if_role_says_master(group):
    # A stale sentinel names the replica: ROLE says "slave", so the next
    # sentinel is asked, and writes go to the real master.
    stale = fake_sentinel(("127.0.0.1", group.replica.port))
    redis = RedisClient.from_sentinel(
        reactor,
        [f"127.0.0.1:{stale.getHost().port}", *group.sentinel_endpoints],
        "mymaster",
    )
    try:
        await settle(redis.when_ready(), 10)
        assert redis.sentinel.master == f"127.0.0.1:{group.master.port}"
        assert await redis.set("k", "v") is True
    finally:
        await redis.close(timeout=2)
        await stale.stopListening()


async def failover(group) -> None:
    # A graceful failover: the old master stays up, as a replica.
    reply = await deferToThread(
        ask, group.sentinels[1].port, "SENTINEL", "FAILOVER", "mymaster"
    )
    assert reply == b"OK"


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_an_idle_client_follows_the_switch_master_announcement(group):
    redis = RedisClient.from_sentinel(reactor, group.sentinel_endpoints, "mymaster")
    try:
        await settle(redis.when_ready(), 10)
        await deferLater(reactor, 0.5, lambda: None)  # subscribed by now
        assert redis.sentinel.subscribed_to is not None
        await failover(group)
        # No request fails to tell it: only the announcement does.
        started = time.monotonic()
        while redis.sentinel.master != f"127.0.0.1:{group.replica.port}":
            assert time.monotonic() - started < 10, redis.sentinel.debug_state()
            await deferLater(reactor, 0.05, lambda: None)
        assert await redis.set("k", "v") is True
        assert ask(group.replica.port, "GET", "k") == b"v"
    finally:
        await redis.close(timeout=2)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_readonly_reply_makes_the_client_ask_the_sentinels_again(group):
    # Subscribed to a sentinel that never announces: the demoted master's
    # READONLY reply is what tells the client.
    mute = fake_sentinel(None)
    redis = RedisClient.from_sentinel(
        reactor,
        [f"127.0.0.1:{mute.getHost().port}", *group.sentinel_endpoints],
        "mymaster",
    )
    try:
        await settle(redis.when_ready(), 10)
        await deferLater(reactor, 0.5, lambda: None)
        assert redis.sentinel.subscribed_to == f"127.0.0.1:{mute.getHost().port}"
        await failover(group)
        # The sentinels demote the old master some seconds later; done at
        # once here, as soon as they name the new one.
        while await deferToThread(group.master_port) != group.replica.port:
            await deferLater(reactor, 0.05, lambda: None)
        await deferToThread(
            ask, group.master.port, "REPLICAOF", "127.0.0.1", group.replica.port
        )
        started = time.monotonic()
        refused = 0
        while True:
            assert time.monotonic() - started < 10, redis.sentinel.debug_state()
            try:
                if await redis.set("k", "v") is True and (
                    redis.sentinel.master == f"127.0.0.1:{group.replica.port}"
                ):
                    break
            except RespError as e:
                assert e.message.startswith("READONLY"), e
                refused += 1
            await deferLater(reactor, 0.05, lambda: None)
        assert refused >= 1
        assert ask(group.replica.port, "GET", "k") == b"v"
    finally:
        await redis.close(timeout=2)
        await mute.stopListening()


def subscribers(group) -> int:
    # Clients subscribed on the sentinels: only ours subscribe there (the
    # sentinels talk to each other through the master's hello channel).
    count = 0
    for s in group.sentinels:
        listing = ask(s.port, "CLIENT", "LIST").decode()
        count += sum(" sub=0 " not in f" {line} " for line in listing.splitlines())
    return count


def sentinel_timers() -> list:
    return [
        c
        for c in reactor.getDelayedCalls()
        if type(getattr(c.func, "__self__", None)).__name__ == "SentinelHosts"
    ]


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_close_leaves_no_subscription_and_no_timer_behind(group):
    # Closed at once, while it is still connecting to its sentinel; and
    # closed once subscribed.
    for wait in (0, 0.5):
        redis = RedisClient.from_sentinel(reactor, group.sentinel_endpoints, "mymaster")
        await deferLater(reactor, wait, lambda: None)
        if wait:
            assert await deferToThread(subscribers, group) == 1
        await redis.close(timeout=2)
        await deferLater(reactor, 0.5, lambda: None)
        assert await deferToThread(subscribers, group) == 0
        assert sentinel_timers() == []


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_redis_sentinel_endpoint_string_gives_the_same_client(group):
    down = f"127.0.0.1:{free_port()}"
    ports = ",".join(f"127.0.0.1:{s.port}" for s in group.sentinels)
    redis = RedisClient.from_endpoint(
        reactor, f"redis-sentinel:{down},{ports}/mymaster", request_timeout=2.0
    )
    try:
        assert isinstance(redis, SentinelRedisClient)
        await settle(redis.when_ready(), 10)
        assert redis.sentinel.master == f"127.0.0.1:{group.master.port}"
        assert await redis.set("k", "v") is True
        assert ask(group.master.port, "GET", "k") == b"v"
    finally:
        await redis.close(timeout=2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("redis-sentinel:127.0.0.1:26379", "the master's name"),
        ("redis-sentinel:/mymaster", "the master's name"),
        ("redis-sentinel:127.0.0.1/mymaster", "'127.0.0.1' is not a sentinel"),
        ("redis-sentinel:a:1,b:70000/mymaster", "'b:70000' is not a sentinel"),
        ("redis-sentinel:a:1,/mymaster", "'' is not a sentinel"),
    ],
)
def test_a_malformed_redis_sentinel_string_is_refused_quoting_it(text, message):
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        RedisClient.from_endpoint(reactor, text)
    assert repr(text) in str(caught.value)


def test_a_redis_sentinel_string_stands_alone():
    with pytest.raises(ValueError, match="stands alone"):
        RedisClient.from_endpoint(
            reactor, ["tcp:127.0.0.1:6379", "redis-sentinel:127.0.0.1:26379/m"]
        )


def test_from_sentinel_checks_its_arguments():
    with pytest.raises(ValueError, match="at least one"):
        RedisClient.from_sentinel(reactor, [], "mymaster")
    with pytest.raises(ValueError, match="service must be"):
        RedisClient.from_sentinel(reactor, ["127.0.0.1:26379"], "")
    with pytest.raises(TypeError, match="each sentinel"):
        RedisClient.from_sentinel(reactor, [("127.0.0.1", 26379)], "mymaster")
    with pytest.raises(ValueError, match="1-65535"):
        RedisClient.from_sentinel(reactor, ["127.0.0.1:99999"], "mymaster")
    with pytest.raises(ValueError, match="sentinel_timeout"):
        RedisClient.from_sentinel(
            reactor, ["127.0.0.1:26379"], "mymaster", sentinel_timeout=0
        )


async def steady_writes(redis, stop: Deferred, log: list, incrs: list) -> None:
    # One write every millisecond or so (10 in flight at most): a SET with
    # a key and value of its own (log gets (key, outcome, when)), and one
    # time in ten an INCR of "counter" (incrs gets its outcome).
    n = 0
    in_flight: list[Deferred] = []
    while not stop.called:
        in_flight = [d for d in in_flight if not d.called]
        if len(in_flight) >= 10:
            await deferLater(reactor, 0.001, lambda: None)
            continue
        n += 1
        if n % 10 == 0:
            d = redis.incr("counter")
            d.addBoth(incrs.append)
            in_flight.append(d)
            continue
        key = f"w{n}"

        def done(result, key=key):
            log.append((key, result, time.monotonic()))

        d = redis.set(key, key)
        d.addBoth(done)
        in_flight.append(d)
        await deferLater(reactor, 0.001, lambda: None)
    await DeferredList(in_flight)


@dataclass
class Failover:
    """What :func:`kill_the_master_under_writes` saw."""

    #: (key, outcome, when) of each SET, in the order their outcomes came.
    log: list = field(default_factory=list)
    #: The outcome of each INCR of "counter".
    incrs: list = field(default_factory=list)
    killed_at: float = 0.0
    switched_at: float = 0.0


async def kill_the_master_under_writes(
    redis, master, new: str, warm_up: float, writes_after: int
) -> Failover:
    """
    Write steadily, SIGKILL ``master`` after ``warm_up`` seconds, and go on
    until the client has switched to ``new`` and ``writes_after`` writes
    were acknowledged after the switch; then stop writing.
    """
    seen = Failover()
    stop: Deferred = Deferred()
    writing = Deferred.fromCoroutine(steady_writes(redis, stop, seen.log, seen.incrs))
    try:
        await deferLater(reactor, warm_up, lambda: None)
        seen.killed_at = time.monotonic()
        master.kill()
        switched_at = None
        while True:
            await deferLater(reactor, 0.05, lambda: None)
            if redis.sentinel.master == new:
                switched_at = switched_at or time.monotonic()
                after = sum(1 for e in seen.log if e[1] is True and e[2] > switched_at)
                if after >= writes_after:
                    break
            assert time.monotonic() - seen.killed_at < 60, (
                f"writes did not resume: {redis.sentinel.debug_state()}"
            )
        seen.switched_at = switched_at
    finally:
        stop.callback(None)
        await settle(writing, 10)
    return seen


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_sigkill_the_master_under_writes_writes_resume_on_the_new_master(group):
    redis = RedisClient.from_sentinel(
        reactor, group.sentinel_endpoints, "mymaster", request_timeout=2.0
    )
    new = group.replica.port
    try:
        await settle(redis.when_ready(), 10)
        # Until the client has switched and 500 writes went through after.
        seen = await kill_the_master_under_writes(
            redis, group.master, f"127.0.0.1:{new}", warm_up=1.0, writes_after=500
        )
        log, incrs = seen.log, seen.incrs
        killed_at, switched_at = seen.killed_at, seen.switched_at
        assert redis.sentinel.switches == 1

        # The sentinels wait down-after-milliseconds (1 s), vote, promote;
        # the client follows within moments of their announcement.
        assert switched_at - killed_at < 15
        resumed_at = min(t for k, r, t in log if r is True and t > switched_at)
        # Acknowledged before the client switched: by the old master (its
        # last replies are read after the kill); after: by the new one.
        acked_before = [k for k, r, t in log if r is True and t <= switched_at]
        acked_after = [k for k, r, t in log if r is True and t > switched_at]
        failed = [r for k, r, t in log if r is not True]
        # Each failure is a named one: the old master's connections were
        # lost, or nothing could take a request while there was no master.
        for f in failed:
            assert f.check(ConnectionLost, Unavailable, RequestTimeout, RespError), f
        # What the new master holds of what the client was told was written.
        present = set()
        keys = acked_before + acked_after
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            values = await redis.mget(*chunk)
            present |= {k for k, v in zip(chunk, values, strict=True) if v is not None}
        assert ask(new, "ROLE")[0] == b"master"  # type: ignore[index]
        # Acknowledged by the new master: none is missing.
        assert not [k for k in acked_after if k not in present]
        # INCR is not idempotent: one that may have been written is never
        # sent again, so the counter never counts more than the calls.
        counted = int(await redis.get("counter"))
        assert counted <= len(incrs)
        # The last one acknowledged was by the new master, and is kept.
        last = [r for r in incrs if isinstance(r, int)][-1]
        assert counted >= last
        # By the old master: asynchronous replication may have lost the last
        # few the old master acknowledged (reported, not asserted to 0).
        lost = [k for k in acked_before if k not in present]
        print(
            f"\nsentinel failover: {len(acked_before)} writes acknowledged "
            f"by the old master, {len(lost)} of them missing on the new "
            f"master; {len(failed)} failed to their callers "
            f"({sorted({type(f.value).__name__ for f in failed})}); "
            f"{len(acked_after)} acknowledged by the new master; client "
            f"switched {switched_at - killed_at:.2f} s after the kill, first "
            f"write acknowledged {resumed_at - killed_at:.2f} s after it"
        )
        assert len(lost) <= 10 + len(acked_before) // 100
    finally:
        await redis.close(timeout=2)


@pytest.fixture
def protected(tmp_path):
    with sentinel_group(
        str(tmp_path), password="master-secret", sentinel_password="sentinel-secret"
    ) as group:
        yield group


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_sentinel_and_master_passwords_are_given_separately(protected):
    redis = RedisClient.from_sentinel(
        reactor,
        protected.sentinel_endpoints,
        "mymaster",
        password="master-secret",
        sentinel_password="sentinel-secret",
    )
    try:
        await settle(redis.when_ready(), 10)
        assert await redis.set("k", "v") is True
        assert ask(protected.master.port, "GET", "k", password="master-secret") == b"v"
        # The +switch-master subscription authenticated too.
        deadline = time.monotonic() + 5
        while redis.sentinel.subscribed_to is None and time.monotonic() < deadline:
            await deferLater(reactor, 0.05, lambda: None)
        assert redis.sentinel.subscribed_to is not None
    finally:
        await redis.close(timeout=2)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_without_the_sentinel_password_the_error_says_noauth(protected):
    # The master's password alone does not open the sentinels.
    redis = RedisClient.from_sentinel(
        reactor,
        protected.sentinel_endpoints,
        "mymaster",
        password="master-secret",
        sentinel_timeout=0.5,
    )
    try:
        deadline = time.monotonic() + 5
        while redis.sentinel.last_error is None and time.monotonic() < deadline:
            await deferLater(reactor, 0.05, lambda: None)
        assert "NOAUTH" in (redis.sentinel.last_error or "")
        assert redis.sentinel.master is None
    finally:
        await redis.close(timeout=2)


def test_a_sentinel_username_without_its_password_is_refused():
    with pytest.raises(ValueError, match="sentinel_password"):
        RedisClient.from_sentinel(
            reactor, ["127.0.0.1:26379"], "mymaster", sentinel_username="u"
        )


def gets_on(port: int, password: str | None = None) -> int:
    """How many GETs the server at ``port`` has run (INFO commandstats)."""
    info = ask(port, "INFO", "commandstats", password=password).decode()
    found = re.search(r"cmdstat_get:calls=(\d+)", info)
    return int(found[1]) if found else 0


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_reads_go_to_the_replicas_the_sentinels_list_when_asked(group):
    redis = RedisClient.from_sentinel(
        reactor, group.sentinel_endpoints, "mymaster", read_from_replicas=True
    )
    try:
        await settle(redis.when_ready(), 10)
        assert redis.replicas is not None and redis.replica_hosts is not None
        await settle(redis.replicas.when_ready(), 10)
        assert redis.replica_hosts.replicas == [f"127.0.0.1:{group.replica.port}"]
        assert await redis.set("read-here", "v") is True
        ask(group.master.port, "WAIT", 1, 1000)  # the replica has it
        master_gets = gets_on(group.master.port)
        replica_gets = gets_on(group.replica.port)
        for _ in range(5):
            assert await redis.get("read-here") == b"v"
        # Reads on the replica; writes (and pipelines) on the master.
        assert gets_on(group.replica.port) == replica_gets + 5
        assert gets_on(group.master.port) == master_gets
        assert await redis.incr("written-here") == 1
        assert ask(group.master.port, "GET", "written-here") == b"1"
    finally:
        await redis.close(timeout=2)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_without_read_from_replicas_reads_stay_on_the_master(group):
    redis = RedisClient.from_sentinel(reactor, group.sentinel_endpoints, "mymaster")
    try:
        await settle(redis.when_ready(), 10)
        assert redis.replicas is None
        replica_gets = gets_on(group.replica.port)
        assert await redis.get("anything") is None
        assert gets_on(group.replica.port) == replica_gets
    finally:
        await redis.close(timeout=2)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_replica_the_sentinels_see_down_is_left_out_and_reads_go_to_the_master(
    group,
):
    redis = RedisClient.from_sentinel(
        reactor, group.sentinel_endpoints, "mymaster", read_from_replicas=True
    )
    try:
        await settle(redis.when_ready(), 10)
        hosts = redis.replica_hosts
        assert hosts is not None
        deadline = time.monotonic() + 10
        while not hosts.replicas and time.monotonic() < deadline:
            await deferLater(reactor, 0.05, lambda: None)
        assert hosts.replicas == [f"127.0.0.1:{group.replica.port}"]
        group.replica.kill()
        # down-after-milliseconds is 1 s; the list is asked again every 5 s
        # (refresh() here, to keep the test short).
        deadline = time.monotonic() + 20
        while hosts.replicas and time.monotonic() < deadline:
            hosts.refresh()
            await deferLater(reactor, 0.2, lambda: None)
        assert hosts.replicas == []
        master_gets = gets_on(group.master.port)
        assert await settle(redis.get("after"), 5) is None
        assert gets_on(group.master.port) == master_gets + 1
    finally:
        await redis.close(timeout=2)
