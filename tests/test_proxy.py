"""
framedclient.runner.proxy over real loopback sockets: downstream clients ->
proxy -> FramedClient (2 connections) -> reference server.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    serverFromString,
)
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from framedclient.client import FramedClient
from framedclient.codecs import (
    CANCEL,
    ERROR,
    GOAWAY,
    PING,
    PONG,
    REPLY,
    REQUEST,
    FC1Codec,
    PipelinedCodec,
)
from framedclient.errors import RemoteError
from framedclient.framing import LengthPrefixed
from framedclient.protocol import FramedClientFactory, FramedProtocol
from framedclient.runner.proxy import DownstreamProtocol, ProxyFactory
from framedclient.server import (
    ReferenceServerFactory,
    ReferenceServerProtocol,
    listen,
)

CODEC = FC1Codec()
LOOPBACK = "tcp:0:interface=127.0.0.1"


# -- helpers -----------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_reactor():
    """
    Every test leaves the reactor as it found it: no socket still open, no
    timer still pending.
    """

    def sockets() -> set[object]:
        selectables = [*reactor.getReaders(), *reactor.getWriters()]
        return {s for s in selectables if hasattr(s, "getHost")}

    before = sockets()
    calls = set(reactor.getDelayedCalls())
    yield
    assert sockets() <= before
    leftover = set(reactor.getDelayedCalls()) - calls
    assert not [c for c in leftover if c.active()], leftover


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """
    Poll ``predicate`` on the reactor until it holds; fail after ``timeout``
    seconds rather than hang.
    """
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await sleep(0.005)


class CountingServer(ReferenceServerFactory):
    """
    The reference server, counting every connection it ever accepted.
    """

    def __init__(self) -> None:
        super().__init__(clock=reactor)
        self.connects = 0

    def buildProtocol(self, addr: Any) -> ReferenceServerProtocol:
        self.connects += 1
        return super().buildProtocol(addr)


class RawDownstream(Protocol):
    """
    A downstream that writes hand-made frames (exact IDs, garbage) and
    records every message the proxy sends back as ``(kind, id, body)``.
    """

    def __init__(self, never_read: bool = False) -> None:
        self.framer = CODEC.new_framer()
        self.messages: list[tuple[int, int, bytes]] = []
        self.lost = False
        self._never_read = never_read

    def connectionMade(self) -> None:
        if self._never_read:
            # A small receive buffer, so the kernel cannot soak up what the
            # proxy must hold back, then stop reading for good.
            self.transport.getHandle().setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024
            )
            self.transport.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        self.messages.extend(CODEC.decode(f) for f in self.framer.feed(data))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = True

    def send(self, *messages: tuple[int, int, bytes]) -> None:
        """
        Write all ``(kind, id, body)`` messages in one write.
        """
        self.transport.write(b"".join(CODEC.encode(k, i, b) for k, i, b in messages))

    def write(self, data: bytes) -> None:
        self.transport.write(data)


class Rig:
    """
    Reference server, a FramedClient with two connections to it, and a
    proxy in front of the client; tears all of it down on exit.
    """

    def __init__(
        self, client_options: dict[str, Any] | None = None, **proxy_options: Any
    ) -> None:
        self.client_options = {
            "pool_size": 2,
            "request_timeout": 5,
            **(client_options or {}),
        }
        self.proxy_options = proxy_options
        self.downstreams: list[Protocol] = []

    async def __aenter__(self) -> Rig:
        self.server = CountingServer()
        self.server_port = await listen(reactor, LOOPBACK, self.server)
        self.client = FramedClient.from_endpoint(
            reactor,
            f"tcp:127.0.0.1:{self.server_port.getHost().port}",
            **self.client_options,
        )
        await self.client.when_ready()
        self.proxy = ProxyFactory(self.client, clock=reactor, **self.proxy_options)
        self.proxy_port = await serverFromString(reactor, LOOPBACK).listen(self.proxy)
        self.endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.proxy_port.getHost().port
        )
        return self

    async def downstream(self) -> FramedProtocol:
        """
        A framedclient FramedProtocol as downstream: it allocates IDs 1, 2,
        3, ... like every other one, so IDs overlap across downstreams.
        """
        proto: FramedProtocol = await self.endpoint.connect(
            FramedClientFactory(FC1Codec(), request_timeout=5.0)
        )
        self.downstreams.append(proto)
        return proto

    async def raw(self, never_read: bool = False) -> RawDownstream:
        proto = await connectProtocol(self.endpoint, RawDownstream(never_read))
        self.downstreams.append(proto)
        if never_read:
            # Small kernel buffers on the proxy's side too, so what the
            # proxy holds does not depend on how far Linux autotunes them.
            port = proto.transport.getHost().port
            await wait_until(lambda: self.proxy_side(port) is not None)
            self.proxy_side(port).transport.getHandle().setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024
            )
        return proto

    def proxy_side(self, port: int) -> DownstreamProtocol | None:
        """
        The proxy's protocol for the downstream whose local port is ``port``.
        """
        for downstream in self.proxy.downstreams:
            if downstream.transport.getPeer().port == port:
                return downstream
        return None

    def upstream_protocols(self) -> list[FramedProtocol]:
        return [c.protocol for c in self.client.pool if c.protocol is not None]

    async def __aexit__(self, *exc: object) -> None:
        await self.proxy_port.stopListening()
        for proto in self.downstreams:
            transport = proto.transport
            if transport is not None and transport.connected:
                transport.abortConnection()
        await wait_until(lambda: not self.proxy.downstreams)
        await self.client.close()
        await self.server_port.stopListening()
        await wait_until(lambda: not self.server.connections)


async def outcome(d: Deferred[Any], timeout: float = 5.0) -> Any:
    """
    What ``d`` fired with (a result, or the exception), within ``timeout``.
    """
    d.addTimeout(timeout, reactor)
    try:
        return await d
    except Exception as e:
        return e


def expected_outcome(body: bytes) -> Any:
    """
    What the reference server answers to ``body``: the error message for
    ``!error:``, else the body itself.
    """
    if body.startswith(b"!error:"):
        return ("error", body[len(b"!error:") :].decode())
    return body


def observed(result: Any) -> Any:
    if isinstance(result, RemoteError):
        return ("error", result.message)
    return result


# -- many downstreams, few upstream connections -----------------------------


@pytest_twisted.ensureDeferred
async def test_fifty_downstreams_with_overlapping_ids_share_two_upstream_connections():
    async with Rig() as rig:
        downstreams = [await rig.downstream() for _ in range(45)]
        raws = [await rig.raw() for _ in range(5)]
        calls: list[tuple[bytes, Deferred[bytes]]] = []
        for c, proto in enumerate(downstreams):
            for r in range(30):
                tag = b"c%d-r%d" % (c, r)
                if r % 3 == 0:
                    body = tag
                elif r % 3 == 1:
                    # Delayed replies come back out of order.
                    body = b"!delay:0.0%d %s" % ((c + r) % 6, tag)
                else:
                    body = b"!error:" + tag
                calls.append((body, proto.request(body)))
        # Raw downstreams all use the very same IDs 1..20.
        for c, raw in enumerate(raws):
            raw.send(
                *[
                    (REQUEST, i, b"!delay:0.0%d raw%d-id%d" % (i % 4, c, i))
                    for i in range(1, 21)
                ]
            )
        results = [await outcome(d) for _, d in calls]
        for (body, _), result in zip(calls, results, strict=True):
            assert observed(result) == expected_outcome(body)
        await wait_until(lambda: all(len(r.messages) == 20 for r in raws))
        for c, raw in enumerate(raws):
            assert sorted(raw.messages) == [
                (REPLY, i, b"!delay:0.0%d raw%d-id%d" % (i % 4, c, i))
                for i in range(1, 21)
            ]
        # Every downstream multiplexed onto the pool's two connections.
        assert rig.server.connects == 2
        assert len(rig.server.connections) == 2
        stats = rig.proxy.stats()
        json.dumps(stats)
        assert stats["downstreams"] == 50
        assert stats["forwarded"] == 45 * 30 + 5 * 20
        assert stats["replies"] == 45 * 20 + 5 * 20
        assert stats["errors"] == 45 * 10
        assert stats["errors_by_kind"] == {"remote": 45 * 10}
        assert stats["in_flight"] == 0
        assert rig.client.stats()["in_flight"] == 0


@pytest_twisted.ensureDeferred
async def test_replies_reaching_a_downstream_in_one_turn_go_out_in_one_write():
    async with Rig() as rig:
        raw = await rig.raw()
        await wait_until(lambda: rig.proxy.downstreams)
        (downstream,) = rig.proxy.downstreams
        writes: list[int] = []
        write = downstream.transport.write

        def counting_write(data: bytes) -> None:
            writes.append(len(data))
            write(data)

        downstream.transport.write = counting_write
        # Answered by the proxy itself, within one read: one write.
        raw.send(*[(PING, i, b"") for i in range(1, 51)])
        await wait_until(lambda: len(raw.messages) == 50)
        assert len(writes) == 1
        # Replies come back over two upstream connections in a few reads
        # each; without coalescing this would be 200 writes.
        raw.send(*[(REQUEST, i, b"echo %d" % i) for i in range(1, 201)])
        await wait_until(lambda: len(raw.messages) == 250)
        assert len(writes) <= 21
        assert sorted(m for m in raw.messages if m[0] == REPLY) == [
            (REPLY, i, b"echo %d" % i) for i in range(1, 201)
        ]


# -- a downstream that goes away --------------------------------------------


@pytest_twisted.ensureDeferred
async def test_downstream_disconnecting_mid_flight_cancels_its_upstream_requests():
    async with Rig() as rig:
        leaving = await rig.downstream()
        staying = await rig.downstream()
        held = [leaving.request(b"!hold %d" % i) for i in range(10)]
        held.append(leaving.request(b"!delay:5 late"))
        await wait_until(lambda: rig.server.requests == 11)
        assert rig.client.stats()["in_flight"] == 11
        leaving.transport.loseConnection()
        await DeferredList(held, consumeErrors=True)

        await wait_until(lambda: rig.server.cancels == 11)
        await wait_until(lambda: len(rig.proxy.downstreams) == 1)
        assert rig.client.stats()["in_flight"] == 0
        assert [p.pending for p in rig.upstream_protocols()] == [0, 0]
        stats = rig.proxy.stats()
        assert stats["abandoned"] == 11
        assert stats["in_flight"] == 0
        assert stats["replies"] == 0 and stats["errors"] == 0
        # The other downstream never noticed.
        assert await staying.request(b"still here") == b"still here"


@pytest_twisted.ensureDeferred
async def test_after_every_downstream_leaves_no_state_is_left():
    async with Rig() as rig:
        protos = [await rig.downstream() for _ in range(10)]
        pending = [p.request(b"!hold") for p in protos for _ in range(5)]
        pending += [p.request(b"echo") for p in protos]
        await wait_until(lambda: rig.server.requests == 60)
        for p in protos:
            p.transport.loseConnection()
        await DeferredList(pending, consumeErrors=True)
        await wait_until(lambda: not rig.proxy.downstreams)
        assert rig.proxy.stats()["in_flight"] == 0
        assert rig.client.stats()["in_flight"] == 0
        assert rig.client.stats()["queued"] == 0
        assert [p.pending for p in rig.upstream_protocols()] == [0, 0]


# -- downstreams that misbehave ---------------------------------------------


@pytest_twisted.ensureDeferred
async def test_garbage_from_one_downstream_closes_only_it_and_cancels_its_requests():
    async with Rig() as rig:
        good = await rig.downstream()
        bad = await rig.raw()
        slow = good.request(b"!delay:0.2 survives")
        bad.send((REQUEST, 1, b"!hold"))
        await wait_until(lambda: rig.server.requests == 2)
        # A well-framed message of a kind fc1 does not have.
        bad.write(b"\x00\x00\x00\x09" + b"\x00" * 8 + b"\x63")
        await wait_until(lambda: bad.lost)
        await wait_until(lambda: rig.server.cancels == 1)
        assert rig.proxy.stats()["closed_by_reason"]["protocol_error"] == 1
        assert rig.proxy.stats()["closed_for_abuse"] == 1
        assert bad.messages == []
        assert await slow == b"!delay:0.2 survives"
        assert await good.request(b"after") == b"after"


@pytest_twisted.ensureDeferred
async def test_oversized_frame_from_one_downstream_closes_only_it():
    async with Rig() as rig:
        good = await rig.downstream()
        bad = await rig.raw()
        # Announces 2 GiB: rejected from the header, nothing buffered.
        bad.write(b"\x80\x00\x00\x00" + b"\x00" * 100)
        await wait_until(lambda: bad.lost)
        assert rig.proxy.stats()["closed_by_reason"]["frame_too_large"] == 1
        assert await good.request(b"fine") == b"fine"
        assert len(rig.proxy.downstreams) == 1


@pytest_twisted.ensureDeferred
async def test_a_server_frame_kind_from_a_downstream_closes_it():
    async with Rig() as rig:
        bad = await rig.raw()
        bad.send((REPLY, 1, b"I am not a server"))
        await wait_until(lambda: bad.lost)
        assert rig.proxy.stats()["closed_by_reason"]["protocol_error"] == 1


@pytest_twisted.ensureDeferred
async def test_downstream_that_never_reads_is_closed_at_its_buffer_bound_while_others_carry_on():
    async with Rig(max_buffered_replies_bytes=1024 * 1024) as rig:
        good = await rig.downstream()
        stuck = await rig.raw(never_read=True)
        # 12.5 MiB of replies, all requested before the proxy could pause
        # reading from it.
        stuck.send(*[(REQUEST, i, b"!size:65536") for i in range(1, 201)])
        meanwhile = [good.request(b"meanwhile %d" % i) for i in range(20)]
        await wait_until(lambda: rig.proxy.stats()["closed_for_abuse"] == 1)
        assert await gatherResults(meanwhile) == [
            b"meanwhile %d" % i for i in range(20)
        ]
        stats = rig.proxy.stats()
        assert stats["closed_by_reason"]["reply_buffer_full"] == 1
        # Dropped long before its replies were all held.
        assert stats["replies"] < 100
        assert stats["abandoned"] > 100
        await wait_until(lambda: len(rig.proxy.downstreams) == 1)
        await wait_until(lambda: rig.client.stats()["in_flight"] == 0)
        assert rig.proxy.stats()["buffered_bytes"] == 0
        assert await good.request(b"after") == b"after"


@pytest_twisted.ensureDeferred
async def test_downstream_that_stops_reading_is_paused_and_sends_no_more_work():
    async with Rig() as rig:
        good = await rig.downstream()
        stuck = await rig.raw(never_read=True)
        stuck.send(*[(REQUEST, i, b"!size:65536") for i in range(1, 41)])
        await wait_until(lambda: rig.proxy.stats()["replies"] == 40)
        stats = rig.proxy.stats()
        assert stats["paused_downstreams"] == 1
        assert 0 < stats["buffered_bytes"] <= 4 * 1024 * 1024
        # The proxy no longer reads from it, so these are never forwarded.
        stuck.send(*[(REQUEST, i, b"more") for i in range(41, 61)])
        bodies = [b"unaffected %d" % i for i in range(50)]
        assert await gatherResults([good.request(b) for b in bodies]) == bodies
        assert rig.proxy.stats()["forwarded"] == 40 + 50
        assert rig.proxy.stats()["closed_for_abuse"] == 0
        assert not stuck.lost


@pytest_twisted.ensureDeferred
async def test_slow_reader_gets_every_reply_once_it_reads_again():
    async with Rig() as rig:
        slow = await rig.raw(never_read=True)
        slow.send(*[(REQUEST, i, b"!size:65536") for i in range(1, 41)])
        await wait_until(lambda: rig.proxy.stats()["replies"] == 40)
        assert rig.proxy.stats()["paused_downstreams"] == 1
        slow.send(*[(REQUEST, i, b"later %d" % i) for i in range(41, 61)])
        slow.transport.resumeProducing()
        await wait_until(lambda: len(slow.messages) == 60)
        assert sorted(slow.messages) == [
            (REPLY, i, b"x" * 65536) for i in range(1, 41)
        ] + [(REPLY, i, b"later %d" % i) for i in range(41, 61)]
        stats = rig.proxy.stats()
        assert stats["paused_downstreams"] == 0
        assert stats["buffered_bytes"] == 0
        assert stats["closed_for_abuse"] == 0


# -- frames the proxy answers itself ----------------------------------------


@pytest_twisted.ensureDeferred
async def test_ping_is_answered_by_the_proxy_not_forwarded():
    async with Rig() as rig:
        raw = await rig.raw()
        raw.send((PING, 42, b"are you there"))
        await wait_until(lambda: raw.messages)
        assert raw.messages == [(PONG, 42, b"are you there")]
        assert rig.server.requests == 0
        assert rig.proxy.stats()["pings"] == 1


@pytest_twisted.ensureDeferred
async def test_cancel_from_downstream_cancels_upstream_and_sends_nothing_back():
    async with Rig() as rig:
        raw = await rig.raw()
        raw.send((REQUEST, 5, b"!hold"))
        await wait_until(lambda: rig.server.requests == 1)
        # The ping is a barrier: its pong comes after anything the proxy
        # would have said about request 5.
        raw.send((CANCEL, 5, b""), (PING, 6, b""))
        await wait_until(lambda: rig.server.cancels == 1)
        await wait_until(lambda: raw.messages)
        assert raw.messages == [(PONG, 6, b"")]
        assert rig.client.stats()["in_flight"] == 0
        assert rig.proxy.stats()["cancels"] == 1
        assert rig.proxy.stats()["in_flight"] == 0


@pytest_twisted.ensureDeferred
async def test_cancel_through_a_framedclient_downstream_reaches_the_server():
    async with Rig() as rig:
        proto = await rig.downstream()
        d = proto.request(b"!delay:5 never")
        await wait_until(lambda: rig.server.requests == 1)
        d.cancel()
        await DeferredList([d], consumeErrors=True)
        await wait_until(lambda: rig.server.cancels == 1)
        assert rig.client.stats()["in_flight"] == 0


@pytest_twisted.ensureDeferred
async def test_duplicate_in_flight_id_gets_an_error_and_the_first_keeps_its_reply():
    async with Rig() as rig:
        raw = await rig.raw()
        raw.send((REQUEST, 7, b"!delay:0.1 first"), (REQUEST, 7, b"second"))
        await wait_until(lambda: len(raw.messages) == 2)
        (kind, rid, body), reply = raw.messages
        assert (kind, rid) == (ERROR, 7)
        assert body.startswith(b"duplicate: request id 7 is already in flight")
        assert reply == (REPLY, 7, b"!delay:0.1 first")
        assert rig.server.requests == 1
        # Once answered, the ID is free again.
        raw.send((REQUEST, 7, b"again"))
        await wait_until(lambda: len(raw.messages) == 3)
        assert raw.messages[2] == (REPLY, 7, b"again")


@pytest_twisted.ensureDeferred
async def test_requests_beyond_the_per_downstream_cap_are_refused_as_overloaded():
    async with Rig(max_in_flight_per_downstream=3) as rig:
        raw = await rig.raw()
        other = await rig.downstream()
        raw.send(*[(REQUEST, i, b"!delay:0.1 n%d" % i) for i in range(1, 6)])
        await wait_until(lambda: len(raw.messages) == 5)
        errors = sorted(m for m in raw.messages if m[0] == ERROR)
        assert [(k, i) for k, i, _ in errors] == [(ERROR, 4), (ERROR, 5)]
        assert all(b.startswith(b"overloaded: ") for _, _, b in errors)
        replies = sorted(m for m in raw.messages if m[0] == REPLY)
        assert replies == [(REPLY, i, b"!delay:0.1 n%d" % i) for i in range(1, 4)]
        assert rig.server.requests == 3
        # The cap is per downstream: another one is not affected.
        others = [other.request(b"!delay:0.05 o%d" % i) for i in range(3)]
        assert await gatherResults(others) == [b"!delay:0.05 o%d" % i for i in range(3)]


# -- upstream failures as error frames --------------------------------------


@pytest_twisted.ensureDeferred
async def test_upstream_timeout_becomes_a_timeout_error_frame():
    async with Rig({"request_timeout": 0.1}) as rig:
        raw = await rig.raw()
        raw.send((REQUEST, 1, b"!hold"), (REQUEST, 2, b"!error:no such key"))
        await wait_until(lambda: len(raw.messages) == 2)
        by_id = {rid: (kind, body) for kind, rid, body in raw.messages}
        assert by_id[2] == (ERROR, b"no such key")  # verbatim
        kind, body = by_id[1]
        assert kind == ERROR and body.startswith(b"timeout: ")
        assert rig.proxy.stats()["errors_by_kind"] == {"remote": 1, "timeout": 1}


@pytest_twisted.ensureDeferred
async def test_pool_shedding_becomes_an_overloaded_error_frame():
    async with Rig({"max_in_flight": 1, "max_pending": 0}) as rig:
        raw = await rig.raw()
        raw.send((REQUEST, 1, b"!delay:0.1 a"), (REQUEST, 2, b"b"))
        await wait_until(lambda: len(raw.messages) == 2)
        by_id = {rid: (kind, body) for kind, rid, body in raw.messages}
        assert by_id[1] == (REPLY, b"!delay:0.1 a")
        kind, body = by_id[2]
        assert kind == ERROR and body.startswith(b"overloaded: ")


# -- lifecycle ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_close_sends_goaway_answers_in_flight_and_refuses_new_work():
    async with Rig() as rig:
        raw = await rig.raw()
        proto = await rig.downstream()
        raw.send((REQUEST, 1, b"!delay:0.3 slow"))
        answered = proto.request(b"!delay:0.2 also slow")
        await wait_until(lambda: rig.server.requests == 2)
        closed = rig.proxy.close(timeout=5)
        await wait_until(lambda: raw.messages)
        assert raw.messages[0] == (GOAWAY, 0, b"")
        raw.send((REQUEST, 2, b"too late"))
        await wait_until(lambda: len(raw.messages) == 2)
        kind, rid, body = raw.messages[1]
        assert (kind, rid) == (ERROR, 2) and body.startswith(b"unavailable: ")
        assert await answered == b"!delay:0.2 also slow"
        await closed
        await wait_until(lambda: raw.lost)
        assert raw.messages[2:] == [(REPLY, 1, b"!delay:0.3 slow")]
        assert not rig.proxy.downstreams
        # Late arrivals are turned away at the door.
        late = await rig.raw()
        await wait_until(lambda: late.lost)
        assert rig.proxy.stats()["refused"] == 1


@pytest_twisted.ensureDeferred
async def test_close_timeout_aborts_downstreams_that_do_not_finish():
    async with Rig() as rig:
        raw = await rig.raw()
        raw.send((REQUEST, 1, b"!hold"))
        await wait_until(lambda: rig.server.requests == 1)
        await rig.proxy.close(timeout=0.2)
        await wait_until(lambda: raw.lost)
        await wait_until(lambda: rig.server.cancels == 1)
        assert rig.client.stats()["in_flight"] == 0


@pytest_twisted.ensureDeferred
async def test_idle_downstream_is_closed_but_one_waiting_for_a_reply_is_not():
    async with Rig(idle_timeout=0.2) as rig:
        idle = await rig.raw()
        busy = await rig.raw()
        busy.send((REQUEST, 1, b"!delay:0.4 worth the wait"))
        await wait_until(lambda: idle.lost)
        assert not busy.lost
        await wait_until(lambda: busy.messages)
        assert busy.messages == [(REPLY, 1, b"!delay:0.4 worth the wait")]
        await wait_until(lambda: busy.lost)
        assert rig.proxy.stats()["closed_idle"] == 2
        assert rig.proxy.stats()["closed_for_abuse"] == 0


@pytest_twisted.ensureDeferred
async def test_connections_beyond_max_downstreams_are_turned_away():
    async with Rig(max_downstreams=2) as rig:
        first = await rig.downstream()
        await rig.raw()
        await wait_until(lambda: len(rig.proxy.downstreams) == 2)
        extra = await rig.raw()
        await wait_until(lambda: extra.lost)
        assert rig.proxy.stats()["refused"] == 1
        assert await first.request(b"still served") == b"still served"


def test_a_codec_without_request_ids_is_rejected():
    client = FramedClient(
        [TCP4ClientEndpoint(reactor, "127.0.0.1", 1)], reactor, start=False
    )
    with pytest.raises(ValueError, match="matches replies by ID"):
        ProxyFactory(client, PipelinedCodec(LengthPrefixed))


@pytest.mark.parametrize(
    "options",
    [
        {"max_in_flight_per_downstream": 0},
        {"max_buffered_replies_bytes": -1},
        {"idle_timeout": 0},
        {"max_downstreams": True},
    ],
)
def test_bounds_must_be_positive(options: dict[str, Any]) -> None:
    client = FramedClient(
        [TCP4ClientEndpoint(reactor, "127.0.0.1", 1)], reactor, start=False
    )
    with pytest.raises(ValueError, match=next(iter(options))):
        ProxyFactory(client, **options)
