"""
``read_from_replicas=True`` while the replica list changes, against the real
3-sentinel deployment (:mod:`tests.sentinel_servers`): a replica that stops
answering is dropped when the sentinels announce ``+sdown`` (not at the
next periodic check), a replica whose connections are lost is not waited
for, and through a SIGKILL failover the reads follow the new list: none to
the dead master, and back to it once it returns as a replica.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from framedclient.bench.keyvalue import server_argv
from framedclient.clients.redis import RedisClient
from framedclient.clients.sentinel import SentinelReplicas, event_service
from framedclient.codecs.redis import RespFramer, parse_reply
from framedclient.errors import ConnectionLost, RequestTimeout, Unavailable

from .sentinel_servers import sentinel_group
from .servers import RealServer, free_port, require_program
from .test_redis_sentinel import fake_sentinel, settle


@pytest.fixture
def group(tmp_path):
    with sentinel_group(str(tmp_path)) as group:
        yield group


def gets_on(group, port: int) -> int:
    info = group.ask(port, "INFO", "commandstats").decode()
    found = re.search(r"cmdstat_get:calls=(\d+)", info)
    return int(found[1]) if found else 0


async def wait_for(condition, seconds: float, what) -> float:
    # Polls condition() on the reactor; the time it took.
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, what()
        await deferLater(reactor, 0.02, lambda: None)
    return time.monotonic() - started


def replica_client(
    group, sentinels=None, *, events_only: bool = True, **options
) -> RedisClient:
    redis = RedisClient.from_sentinel(
        reactor,
        sentinels or group.sentinel_endpoints,
        "mymaster",
        read_from_replicas=True,
        **options,
    )
    assert redis.replica_hosts is not None
    if events_only:
        # Only what the sentinels announce (or a failed request) may
        # change the list during the test, not the periodic check.
        redis.replica_hosts.check_interval = 600.0
    return redis


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_replica_that_stops_answering_is_dropped_on_the_sentinels_sdown(
    group,
):
    redis = replica_client(group, request_timeout=0.5)
    hosts = redis.replica_hosts
    replica = f"127.0.0.1:{group.replica.port}"
    stopped = False
    try:
        await settle(redis.when_ready(), 10)
        await wait_for(lambda: hosts.replicas == [replica], 10, hosts.debug_state)
        await wait_for(lambda: hosts.subscribed_to is not None, 10, hosts.debug_state)
        assert await redis.set("k", "v") is True
        group.ask(group.master.port, "WAIT", 1, 1000)
        # SIGSTOP: its connections stay open and nothing answers, as with
        # a replica behind a partition; only the sentinels can tell.
        os.kill(group.replica.proc.pid, signal.SIGSTOP)
        stopped = True
        took = await wait_for(lambda: hosts.replicas == [], 15, hosts.debug_state)
        # down-after-milliseconds is 1 s; the periodic check is 600 s.
        assert took < 10
        master_gets = gets_on(group, group.master.port)
        for _ in range(20):
            assert await settle(redis.get("k"), 5) == b"v"
        assert gets_on(group, group.master.port) == master_gets + 20
    finally:
        if stopped:
            os.kill(group.replica.proc.pid, signal.SIGCONT)
        await redis.close(timeout=2)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_reads_do_not_wait_for_a_replica_whose_connections_are_lost(group):
    # The client is subscribed to a sentinel that never announces, so the
    # lost connections alone must turn the reads to the master.
    mute = fake_sentinel(None)
    redis = replica_client(
        group,
        [f"127.0.0.1:{mute.getHost().port}", *group.sentinel_endpoints],
        request_timeout=2.0,
    )
    hosts = redis.replica_hosts
    try:
        await settle(redis.when_ready(), 10)
        await wait_for(lambda: hosts.replicas != [], 10, hosts.debug_state)
        await settle(redis.replicas.when_ready(), 10)
        assert await redis.set("k", "v") is True
        group.ask(group.master.port, "WAIT", 1, 1000)
        group.replica.kill()
        # The replica's connections see the reset at once.
        await wait_for(
            lambda: redis.replicas.client.pool.ready_count == 0,
            5,
            redis.replicas.client.debug_state,
        )
        master_gets = gets_on(group, group.master.port)
        started = time.monotonic()
        for _ in range(20):
            assert await settle(redis.get("k"), 5) == b"v"
        # At once, on the master: not after a 2 s wait for a connection.
        assert time.monotonic() - started < 1.5
        assert gets_on(group, group.master.port) == master_gets + 20
    finally:
        await redis.close(timeout=2)
        await mute.stopListening()


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_through_a_failover_reads_follow_the_replica_list_and_the_old_master_returns(
    group,
):
    # The sentinels announce nothing when the returning master's link
    # comes up: the periodic check (5 s) finds it.
    redis = replica_client(group, events_only=False, request_timeout=1.0)
    hosts = redis.replica_hosts
    old, new = group.master.port, group.replica.port
    reads: list = []  # (when issued, outcome)
    try:
        await settle(redis.when_ready(), 10)
        await wait_for(
            lambda: hosts.replicas == [f"127.0.0.1:{new}"], 10, hosts.debug_state
        )
        assert await redis.set("k", "v") is True
        group.ask(old, "WAIT", 1, 1000)

        async def read() -> None:
            issued = time.monotonic()
            try:
                reads.append((issued, await redis.get("k")))
            except Exception as e:
                reads.append((issued, e))

        group.master.kill()
        # The replica is promoted; the old master is listed as a replica
        # the sentinels see down: no replica is usable.
        changed_at = None
        while redis.sentinel.master != f"127.0.0.1:{new}" or hosts.replicas:
            assert len(reads) < 1500, (
                redis.sentinel.debug_state(),
                hosts.debug_state(),
            )
            await read()
            await deferLater(reactor, 0.01, lambda: None)
        changed_at = time.monotonic()
        for _ in range(50):
            await read()
        after = [r for t, r in reads if t >= changed_at]
        assert after == [b"v"] * 50
        # Before: each failure named, none wrong.
        for _, r in reads:
            assert r == b"v" or isinstance(
                r, (ConnectionLost, RequestTimeout, Unavailable)
            ), r

        # The old master comes back; the sentinels make it a replica of the
        # new one, and once it is in sync the reads go to it.
        group.master.start()
        await wait_for(
            lambda: hosts.replicas == [f"127.0.0.1:{old}"], 60, hosts.debug_state
        )
        await settle(redis.replicas.when_ready(), 10)
        before = gets_on(group, old)
        for _ in range(10):
            assert await redis.get("k") == b"v"
        assert gets_on(group, old) == before + 10
    finally:
        await redis.close(timeout=2)


def resp(value) -> bytes:
    # RESP2 encoding of bytes, ints and nested lists (a sentinel's reply).
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(resp(v) for v in value)
    if isinstance(value, int):
        return b":%d\r\n" % value
    return b"$%d\r\n%s\r\n" % (len(value), value)


def replica_entry(port: int) -> list:
    return [
        [
            b"ip",
            b"127.0.0.1",
            b"port",
            str(port).encode(),
            b"flags",
            b"slave",
            b"master-link-status",
            b"ok",
        ]
    ]


class HeldSentinel(Protocol):
    """
    A sentinel whose SENTINEL REPLICAS questions wait in ``held`` until
    the test answers them, and whose subscribers are in ``subscribers``.
    """

    held: list
    subscribers: list

    def connectionMade(self) -> None:
        self.framer = RespFramer()

    def dataReceived(self, data: bytes) -> None:
        for frame in self.framer.feed(data):
            args = parse_reply(frame)
            if args[0].upper() == b"SUBSCRIBE":
                for n, channel in enumerate(args[1:], 1):
                    self.transport.write(resp([b"subscribe", channel, n]))
                self.subscribers.append(self.transport)
            elif args[0].upper() == b"PING":
                self.transport.write(resp([b"pong", b""]))
            else:
                self.held.append(self.transport)


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_an_event_during_a_question_makes_it_ask_again_once_answered():
    # The answer under way may predate the event (a stale list naming a
    # replica that just went down): it is used, and asked again at once.
    held: list = []
    subscribers: list = []
    factory = Factory.forProtocol(
        type("Held", (HeldSentinel,), {"held": held, "subscribers": subscribers})
    )
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    source = SentinelReplicas(
        reactor,
        [f"127.0.0.1:{port.getHost().port}"],
        "mymaster",
        check_interval=600.0,
    )
    updates: list = []
    source.start(lambda hosts: updates.append([h.name for h in hosts]))
    try:
        await wait_for(lambda: held and subscribers, 5, source.debug_state)
        assert len(held) == 1
        subscribers[0].write(
            resp(
                [
                    b"message",
                    b"+sdown",
                    b"slave 127.0.0.1:7001 127.0.0.1 7001 @ mymaster 127.0.0.1 7000",
                ]
            )
        )
        await deferLater(reactor, 0.1, lambda: None)
        # Answered as it was before the event: both replicas.
        held.pop(0).write(resp(replica_entry(7001) + replica_entry(7002)))
        await wait_for(lambda: held, 5, source.debug_state)
        held.pop(0).write(resp(replica_entry(7002)))
        await wait_for(lambda: len(updates) == 2, 5, source.debug_state)
        assert updates == [
            ["127.0.0.1:7001", "127.0.0.1:7002"],
            ["127.0.0.1:7002"],
        ]
    finally:
        source.stop()
        await port.stopListening()


@pytest.mark.parametrize(
    ("channel", "payload", "service"),
    [
        (b"+switch-master", b"mymaster 127.0.0.1 7000 127.0.0.1 7001", "mymaster"),
        (
            b"+sdown",
            b"slave 127.0.0.1:7001 127.0.0.1 7001 @ other 127.0.0.1 7000",
            "other",
        ),
        (
            b"-sdown",
            b"slave 127.0.0.1:7001 127.0.0.1 7001 @ mymaster 1.2.3.4 70",
            "mymaster",
        ),
        (b"+sdown", b"master mymaster 127.0.0.1 7000", "mymaster"),
        (b"+slave", b"garbage", None),
        (b"+slave", b"slave 127.0.0.1:7001 127.0.0.1 7001 @", None),
        (b"+switch-master", b"", None),
    ],
)
def test_an_event_names_its_service(channel, payload, service):
    assert event_service(channel, payload) == service


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_a_replica_added_to_the_deployment_gets_reads(group, tmp_path):
    # The sentinels find a new replica through the master's INFO (every
    # 10 s) and announce +slave; the client uses it once they see it in
    # sync, with the old one.
    redis = replica_client(group, events_only=False, request_timeout=2.0)
    hosts = redis.replica_hosts
    home = tmp_path / "added"
    home.mkdir()
    port = free_port()
    path = require_program("redis-server", "redis-server")
    argv = server_argv("redis", path, port, str(home))
    added = RealServer(
        [*argv, "--replicaof", "127.0.0.1", str(group.master.port)], port
    )
    try:
        await settle(redis.when_ready(), 10)
        assert await redis.set("k", "v") is True
        added.start()
        both = sorted([f"127.0.0.1:{group.replica.port}", f"127.0.0.1:{port}"])
        await wait_for(lambda: sorted(hosts.replicas) == both, 45, hosts.debug_state)
        await wait_for(
            lambda: redis.replicas.client.pool.ready_count >= 2,
            10,
            redis.replicas.client.debug_state,
        )
        before = gets_on(group, port)
        for _ in range(20):
            assert await redis.get("k") == b"v"
        # Spread over both replicas: the new one took some.
        assert gets_on(group, port) > before
    finally:
        await redis.close(timeout=2)
        added.stop()
