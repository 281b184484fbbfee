"""
Sentinel's promises against an adversary (a real deployment,
:mod:`tests.sentinel_servers`, and fake sentinels on loopback): a sentinel
that answers garbage or dies in the middle of a question is skipped and
named; a wrong master password is a clear error that leaves nothing
unhandled behind; the subscription moves on when its sentinel is killed
and the client still follows the next failover.
"""

from __future__ import annotations

import gc
import os
import signal
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher

from framedclient.clients.redis import RedisClient
from framedclient.errors import Unavailable

from .sentinel_servers import sentinel_group
from .test_redis_sentinel import FakeSentinel, settle
from .test_redis_sentinel_replicas import resp, wait_for


@pytest.fixture
def group(tmp_path):
    with sentinel_group(str(tmp_path)) as group:
        yield group


@pytest.fixture
def protected(tmp_path):
    with sentinel_group(str(tmp_path), password="master-secret") as group:
        yield group


def listen(protocol: type[Protocol]):
    return reactor.listenTCP(0, Factory.forProtocol(protocol), interface="127.0.0.1")


class GarbageSentinel(Protocol):
    """
    Answers every question with a well-framed reply of the wrong shape: a
    port that is no number, replicas that are not field lists.
    """

    def dataReceived(self, data: bytes) -> None:
        if b"SUBSCRIBE" in data:
            self.transport.write(resp([b"subscribe", b"+switch-master", 1]))
        elif b"REPLICAS" in data:
            self.transport.write(resp([b"127.0.0.1", b"6379"]))
        else:
            self.transport.write(resp([b"127.0.0.1", b"not-a-port"]))


class DyingSentinel(Protocol):
    """Drops the connection as soon as it is asked anything."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.abortConnection()


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_sentinel_answering_garbage_or_dying_mid_question_is_skipped(group):
    garbage = listen(GarbageSentinel)
    dying = listen(DyingSentinel)
    fakes = [f"127.0.0.1:{p.getHost().port}" for p in (garbage, dying)]
    redis = RedisClient.from_sentinel(
        reactor,
        [*fakes, *group.sentinel_endpoints],
        "mymaster",
        read_from_replicas=True,
    )
    try:
        await settle(redis.when_ready(), 10)
        assert redis.sentinel.master == f"127.0.0.1:{group.master.port}"
        hosts = redis.replica_hosts
        await wait_for(lambda: hosts.replicas, 10, hosts.debug_state)
        assert hosts.replicas == [f"127.0.0.1:{group.replica.port}"]
    finally:
        await redis.close(timeout=2)
        await garbage.stopListening()
        await dying.stopListening()


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_sentinel_answering_garbage_is_named_in_the_error():
    garbage = listen(GarbageSentinel)
    name = f"127.0.0.1:{garbage.getHost().port}"
    redis = RedisClient.from_sentinel(
        reactor, [name], "mymaster", read_from_replicas=True, request_timeout=1.0
    )
    try:
        with pytest.raises(Unavailable) as caught:
            await settle(redis.get("k"), 10)
        assert f"sentinel {name} answered" in str(caught.value)
        hosts = redis.replica_hosts
        await wait_for(lambda: hosts.last_error, 5, hosts.debug_state)
        assert f"sentinel {name} answered" in hosts.last_error
    finally:
        await redis.close(timeout=2)
        await garbage.stopListening()


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_wrong_master_password_is_a_clear_error_and_leaves_nothing_unhandled(
    protected,
):
    logged: list = []
    globalLogPublisher.addObserver(logged.append)
    redis = RedisClient.from_sentinel(
        reactor,
        protected.sentinel_endpoints,
        "mymaster",
        password="wrong",
        request_timeout=1.0,
    )
    try:
        with pytest.raises(Unavailable) as caught:
            await settle(redis.set("k", "v"), 10)
        message = str(caught.value)
        assert "does not answer ROLE" in message
        assert "WRONGPASS" in message
        assert redis.sentinel.master is None
    finally:
        await redis.close(timeout=2)
        gc.collect()
        await deferLater(reactor, 0, lambda: None)
        globalLogPublisher.removeObserver(logged.append)
    unhandled = [
        e for e in logged if "Unhandled error in Deferred" in str(e.get("log_format"))
    ]
    assert unhandled == []
    # Nothing was written anywhere.
    assert protected.ask(protected.master.port, "DBSIZE", password="master-secret") == 0


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_when_the_subscribed_sentinel_is_killed_the_next_one_carries_the_news(
    group,
):
    redis = RedisClient.from_sentinel(reactor, group.sentinel_endpoints, "mymaster")
    try:
        await settle(redis.when_ready(), 10)
        source = redis.sentinel
        await wait_for(lambda: source.subscribed_to, 10, source.debug_state)
        first = source.subscribed_to
        victim = next(s for s in group.sentinels if first.endswith(f":{s.port}"))
        victim.kill()
        await wait_for(
            lambda: source.subscribed_to not in (None, first), 10, source.debug_state
        )
        # The remaining two still make a quorum; only the announcement
        # tells this idle client.
        alive = next(s for s in group.sentinels if s is not victim)
        reply = await deferToThread(
            group.ask, alive.port, "SENTINEL", "FAILOVER", "mymaster"
        )
        assert reply == b"OK"
        started = time.monotonic()
        await wait_for(
            lambda: source.master == f"127.0.0.1:{group.replica.port}",
            15,
            source.debug_state,
        )
        assert time.monotonic() - started < 15
        assert await redis.set("k", "v") is True
        assert group.ask(group.replica.port, "GET", "k") == b"v"
    finally:
        await redis.close(timeout=2)


class StaleSentinel(FakeSentinel):
    """
    Names the master it was made with for ever (a sentinel that has not
    heard of the failover yet), and takes no subscription, so the client
    subscribes to a real one.
    """

    def dataReceived(self, data: bytes) -> None:
        if b"SUBSCRIBE" in data:
            self.transport.abortConnection()
        else:
            super().dataReceived(data)


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_after_switch_master_a_stale_sentinel_does_not_keep_the_old_master(
    group,
):
    # The old master says "master" for some seconds after the switch (the
    # sentinels demote it later): a stale sentinel asked first would keep
    # the writes going to it, to be thrown away when it is demoted.
    stale = reactor.listenTCP(
        0,
        Factory.forProtocol(
            type(
                "Stale", (StaleSentinel,), {"master": ("127.0.0.1", group.master.port)}
            )
        ),
        interface="127.0.0.1",
    )
    redis = RedisClient.from_sentinel(
        reactor,
        [f"127.0.0.1:{stale.getHost().port}", *group.sentinel_endpoints],
        "mymaster",
    )
    try:
        await settle(redis.when_ready(), 10)
        source = redis.sentinel
        assert source.master == f"127.0.0.1:{group.master.port}"
        await wait_for(lambda: source.subscribed_to, 10, source.debug_state)
        reply = await deferToThread(
            group.ask, group.sentinels[1].port, "SENTINEL", "FAILOVER", "mymaster"
        )
        assert reply == b"OK"
        await wait_for(
            lambda: source.master == f"127.0.0.1:{group.replica.port}",
            10,
            source.debug_state,
        )
        # The next question goes to the sentinel that announced the
        # switch, not to the stale one: the client does not switch back.
        await deferLater(reactor, 0.3, lambda: None)
        source.refresh()
        await deferLater(reactor, 1.0, lambda: None)
        assert source.master == f"127.0.0.1:{group.replica.port}"
        assert source.switches == 1
        assert await redis.set("k", "v") is True
        assert group.ask(group.replica.port, "GET", "k") == b"v"
    finally:
        await redis.close(timeout=2)
        await stale.stopListening()


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_a_subscribed_sentinel_that_hangs_is_left_and_the_failover_followed(
    group,
):
    # SIGSTOP: the subscription's connection stays open and says nothing,
    # so only a liveness check can tell the announcements will not come.
    redis = RedisClient.from_sentinel(
        reactor, group.sentinel_endpoints, "mymaster", sentinel_timeout=0.5
    )
    stopped = None
    try:
        await settle(redis.when_ready(), 10)
        source = redis.sentinel
        await wait_for(lambda: source.subscribed_to, 10, source.debug_state)
        first = source.subscribed_to
        stopped = next(s for s in group.sentinels if first.endswith(f":{s.port}"))
        os.kill(stopped.proc.pid, signal.SIGSTOP)
        alive = next(s for s in group.sentinels if s is not stopped)
        reply = await deferToThread(
            group.ask, alive.port, "SENTINEL", "FAILOVER", "mymaster"
        )
        assert reply == b"OK"
        # Well before the 30 s periodic check.
        await wait_for(
            lambda: source.master == f"127.0.0.1:{group.replica.port}",
            15,
            source.debug_state,
        )
        assert source.subscribed_to not in (None, first)
    finally:
        if stopped is not None:
            os.kill(stopped.proc.pid, signal.SIGCONT)
        await redis.close(timeout=2)
