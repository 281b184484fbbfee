"""
framedclient.testing.faultproxy: each fault, shown on a real client over
loopback sockets, and the schedule's determinism, shown without sockets.
"""

from __future__ import annotations

import math
import random
import socket
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater

from framedclient.codecs import REPLY, REQUEST, FC1Codec
from framedclient.errors import ConnectionLost, FrameTooLarge, RequestTimeout
from framedclient.protocol import FramedClientFactory, FramedProtocol
from framedclient.server import ReferenceServerFactory, listen
from framedclient.testing import (
    FAULT_KINDS,
    TO_CLIENT,
    TO_SERVER,
    FaultProxy,
    FaultSchedule,
    ProxiedConnection,
)
from framedclient.testing.faultproxy import _Fc1Tracker

CODEC = FC1Codec()
LOOPBACK = "tcp:0:interface=127.0.0.1"


# -- helpers -----------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_reactor():
    """
    Every test leaves the reactor as it found it: no socket still open, no
    timer still pending (what trial calls a dirty reactor).
    """

    def sockets() -> set[object]:
        # Ports and connections have addresses; the reactor's own wakers
        # (started with it by the first test) do not.
        selectables = [*reactor.getReaders(), *reactor.getWriters()]  # type: ignore[attr-defined]
        return {s for s in selectables if hasattr(s, "getHost")}

    before = sockets()
    calls = set(reactor.getDelayedCalls())  # type: ignore[attr-defined]
    yield
    assert sockets() <= before
    leftover = set(reactor.getDelayedCalls()) - calls  # type: ignore[attr-defined]
    assert not [c for c in leftover if c.active()], leftover


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]


async def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    """
    Poll ``predicate`` on the reactor until it holds; fail after ``timeout``
    seconds rather than hang.
    """
    deadline = reactor.seconds() + timeout  # type: ignore[attr-defined]
    while not predicate():
        if reactor.seconds() > deadline:  # type: ignore[attr-defined]
            raise AssertionError(f"condition not met within {timeout} s")
        await sleep(0.005)


async def outcome(d: Deferred[Any], timeout: float = 5.0) -> Any:
    """
    What ``d`` fired with (a result, or the exception), within ``timeout``.
    """
    d.addTimeout(timeout, reactor)
    try:
        return await d
    except Exception as e:
        return e


class RecordingFramedProtocol(FramedProtocol):
    """
    A FramedProtocol that remembers the size of every read.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reads: list[int] = []

    def dataReceived(self, data: bytes) -> None:
        self.reads.append(len(data))
        super().dataReceived(data)


class RecordingClientFactory(FramedClientFactory):
    def buildProtocol(self, addr: object) -> FramedProtocol:
        proto = RecordingFramedProtocol(self.config, self.clock, self.metrics)
        proto.factory = self
        return proto


class RawPeer(Protocol):
    """
    Bytes in, bytes recorded: for checking what crosses the proxy exactly.
    """

    def __init__(self, pause_reading: bool = False) -> None:
        self.data = bytearray()
        self.reads: list[int] = []
        self.lost = False
        self._pause_reading = pause_reading

    def connectionMade(self) -> None:
        if self._pause_reading:
            # A small receive buffer, so the kernel cannot soak up what the
            # proxy must hold back.
            self.transport.getHandle().setsockopt(  # type: ignore[union-attr]
                socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024
            )
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self.reads.append(len(data))

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True


class Rig:
    """
    Reference server <- FaultProxy <- clients, all on 127.0.0.1, torn down
    completely on exit (clients, proxy, server connections, listener).
    """

    def __init__(self, schedule: FaultSchedule | None = None, **proxy_options: Any):
        self.schedule = schedule
        self.proxy_options = proxy_options
        self.server = ReferenceServerFactory(clock=reactor)
        self.port: IListeningPort | None = None
        self.proxy: FaultProxy
        self.clients: list[Any] = []

    async def __aenter__(self) -> Rig:
        self.port = await listen(reactor, LOOPBACK, self.server)
        self.proxy = FaultProxy(
            reactor,
            ("127.0.0.1", self.port.getHost().port),  # type: ignore[attr-defined]
            self.schedule,
            **self.proxy_options,
        )
        await self.proxy.listen()
        return self

    async def client(self, factory: FramedClientFactory | None = None) -> Any:
        factory = factory or FramedClientFactory(FC1Codec(), request_timeout=5.0)
        proto = await self.proxy.client_endpoint().connect(factory)
        self.clients.append(proto)
        return proto

    async def raw(self) -> RawPeer:
        peer = RawPeer()
        await connectProtocol(self.proxy.client_endpoint(), peer)
        self.clients.append(peer)
        return peer

    async def link_of(self, proto: Any) -> ProxiedConnection:
        """
        The proxy's handle for a client connection (matched by port).
        """
        port = proto.transport.getHost().port

        def find() -> ProxiedConnection | None:
            for link in self.proxy.connections:
                if link.client_address.port == port:  # type: ignore[attr-defined]
                    return link
            return None

        await wait_until(lambda: find() is not None)
        link = find()
        assert link is not None
        return link

    async def __aexit__(self, *exc: object) -> None:
        for proto in self.clients:
            if proto.transport is not None and not getattr(proto, "lost", False):
                proto.transport.abortConnection()
        await self.proxy.stop()
        await wait_until(lambda: not self.server.connections)
        await wait_until(lambda: all(_closed(p) for p in self.clients))
        assert self.port is not None
        await self.port.stopListening()


def _closed(proto: Any) -> bool:
    if isinstance(proto, FramedProtocol):
        return proto.is_closed
    return bool(proto.lost)


def fc1_stream(kind: int, bodies: list[bytes]) -> bytes:
    return b"".join(CODEC.encode(kind, i + 1, body) for i, body in enumerate(bodies))


# -- the schedule, without sockets ------------------------------------------


def chunk_decisions(schedule: FaultSchedule, index: int, sizes: list[int]) -> list[Any]:
    flow = schedule.flow_faults(index, TO_CLIENT)
    return [flow.chunk(size) for size in sizes]


CHAOS = FaultSchedule(
    seed=1,
    cut=0.2,
    split=0.3,
    split_max=5,
    merge=0.2,
    delay=(0.0, 0.002),
    corrupt_length=0.1,
    silence=0.1,
    refuse=0.1,
    refuse_for=0.2,
)


def test_same_seed_gives_the_same_fault_decisions():
    sizes = [random.Random(9).randint(1, 5000) for _ in range(200)]
    again = FaultSchedule(**{f: getattr(CHAOS, f) for f in CHAOS.__dataclass_fields__})
    assert [CHAOS.plan(i) for i in range(100)] == [again.plan(i) for i in range(100)]
    for index in range(5):
        assert chunk_decisions(CHAOS, index, sizes) == chunk_decisions(
            again, index, sizes
        )
        first = CHAOS.flow_faults(index, TO_CLIENT)
        second = again.flow_faults(index, TO_CLIENT)
        assert [first.corrupt_header() for _ in range(200)] == [
            second.corrupt_header() for _ in range(200)
        ]


def test_different_seeds_give_different_fault_decisions():
    other = FaultSchedule(**{**_fields(CHAOS), "seed": 2})
    assert [CHAOS.plan(i) for i in range(100)] != [other.plan(i) for i in range(100)]
    sizes = [100] * 200
    assert chunk_decisions(CHAOS, 0, sizes) != chunk_decisions(other, 0, sizes)


def test_each_connection_and_direction_has_its_own_decisions():
    sizes = [100] * 200
    assert chunk_decisions(CHAOS, 0, sizes) != chunk_decisions(CHAOS, 1, sizes)
    a = CHAOS.flow_faults(0, TO_SERVER)
    b = CHAOS.flow_faults(0, TO_CLIENT)
    assert [a.chunk(100) for _ in range(100)] != [b.chunk(100) for _ in range(100)]


def test_turning_one_fault_up_leaves_the_other_decisions_unchanged():
    more_cuts = FaultSchedule(**{**_fields(CHAOS), "cut": 0.9})
    for i in range(200):
        a, b = CHAOS.plan(i), more_cuts.plan(i)
        assert (a.refuse, a.silence_at, a.silence_for) == (
            b.refuse,
            b.silence_at,
            b.silence_for,
        )
        if a.cut_after is not None:
            assert (a.cut_after, a.cut_in) == (b.cut_after, b.cut_in)


def test_probabilities_hold_over_many_decisions():
    schedule = FaultSchedule(seed=3, cut=0.25, split=0.5, merge=0.1, refuse=0.05)
    plans = [schedule.plan(i) for i in range(4000)]
    assert 0.22 < sum(p.cut_after is not None for p in plans) / 4000 < 0.28
    assert 0.035 < sum(p.refuse for p in plans) / 4000 < 0.065
    chunks = chunk_decisions(schedule, 0, [100] * 4000)
    merged = sum(c.merge for c in chunks) / 4000
    split = sum(c.split_seed is not None for c in chunks) / 4000
    assert 0.08 < merged < 0.12
    # A merged chunk is never also split.
    assert 0.42 < split < 0.48
    assert not any(c.merge and c.split_seed is not None for c in chunks)


def test_planned_values_stay_in_their_ranges():
    schedule = FaultSchedule(
        seed=4,
        cut=1.0,
        cut_after=(10, 20),
        cut_in=TO_SERVER,
        silence=1.0,
        silence_after=(0.5, 1.5),
        silence_for=(2.0, 3.0),
        refuse=1.0,
        refuse_for=(0.1, 0.2),
        delay=(0.01, 0.005),
    )
    for i in range(500):
        plan = schedule.plan(i)
        assert plan.cut_after is not None and 10 <= plan.cut_after <= 20
        assert plan.cut_in == TO_SERVER
        assert plan.silence_at is not None and 0.5 <= plan.silence_at <= 1.5
        assert 2.0 <= plan.silence_for <= 3.0
        assert plan.refuse and 0.1 <= plan.refuse_for <= 0.2
    for chunk in chunk_decisions(schedule, 0, [10] * 500):
        assert 0.01 <= chunk.delay <= 0.015
    assert FaultSchedule(silence=1.0).plan(0).silence_for == math.inf
    assert {FaultSchedule(cut=1.0, seed=5).plan(i).cut_in for i in range(50)} == {
        TO_SERVER,
        TO_CLIENT,
    }


def test_default_schedule_injects_nothing():
    schedule = FaultSchedule()
    for i in range(100):
        plan = schedule.plan(i)
        assert not plan.refuse and plan.cut_after is None and plan.silence_at is None
    flow = schedule.flow_faults(0, TO_CLIENT)
    assert not flow.active
    assert not any(flow.corrupt_header() for _ in range(100))


@pytest.mark.parametrize(
    "options",
    [
        {"cut": 1.5},
        {"split": -0.1},
        {"cut_after": (10, 5)},
        {"silence_for": 0},
        {"delay": (-1.0, 0.0)},
        {"cut_in": "sideways"},
        {"split_max": 0},
        {"merge_window": 0},
        {"corrupt_value": 2**32},
        {"throttle": 0},
        {"max_buffer": 0},
    ],
)
def test_invalid_schedules_are_rejected_with_the_field_named(options):
    with pytest.raises(ValueError, match=next(iter(options))):
        FaultSchedule(**options)


def _fields(schedule: FaultSchedule) -> dict[str, Any]:
    return {f: getattr(schedule, f) for f in schedule.__dataclass_fields__}


# -- frame tracking, without sockets -------------------------------------------


def feed_in_pieces(tracker: _Fc1Tracker, stream: bytes, rng: random.Random, corrupt):
    out = bytearray()
    pos = 0
    hits = 0
    while pos < len(stream):
        n = rng.randint(1, 7)
        data, h = tracker.feed(stream[pos : pos + n], corrupt)
        out += data
        hits += h
        pos += n
    return bytes(out), hits


def test_tracker_overwrites_exactly_the_chosen_header_however_the_stream_is_split():
    bodies = [b"", b"a", b"bb" * 50, b"c" * 3, b""] * 4
    stream = fc1_stream(REPLY, bodies)
    for seed in range(20):
        decisions = iter([i == 7 for i in range(len(bodies))])
        tracker = _Fc1Tracker(None, 0xFFFF_FFFF)
        out, hits = feed_in_pieces(
            tracker, stream, random.Random(seed), decisions.__next__
        )
        assert hits == 1
        assert len(out) == len(stream)
        start = len(fc1_stream(REPLY, bodies[:7]))
        assert out[start : start + 4] == b"\xff\xff\xff\xff"
        assert out[:start] == stream[:start]
        assert out[start + 4 :] == stream[start + 4 :]


def test_tracker_moves_a_cut_that_falls_on_a_frame_boundary_into_the_next_frame():
    bodies = [b"x" * 10, b"", b"y" * 3]
    boundaries = [len(fc1_stream(REPLY, bodies[:i])) for i in range(len(bodies) + 1)]
    for boundary in boundaries:
        tracker = _Fc1Tracker(boundary, 0)
        feed_in_pieces(tracker, fc1_stream(REPLY, bodies), random.Random(1), None)
        assert tracker.cut_at == boundary + 1
    inside = _Fc1Tracker(5, 0)
    feed_in_pieces(inside, fc1_stream(REPLY, bodies), random.Random(1), None)
    assert inside.cut_at == 5


# -- each fault on a real client --------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_without_faults_bytes_pass_through_unchanged_both_ways():
    rng = random.Random(0)
    bodies = [rng.randbytes(rng.randint(0, 4000)) for _ in range(300)]
    async with Rig() as rig:
        peer = await rig.raw()
        peer.transport.write(fc1_stream(REQUEST, bodies))  # type: ignore[union-attr]
        expected = fc1_stream(REPLY, bodies)
        await wait_until(lambda: len(peer.data) >= len(expected))
        assert bytes(peer.data) == expected
        (link,) = rig.proxy.connections
        assert link.to_server.delivered == link.to_server.received
        assert link.to_client.delivered == len(expected)
        assert rig.proxy.faults == {}


@pytest_twisted.ensureDeferred
async def test_without_faults_concurrent_requests_get_their_own_replies():
    async with Rig() as rig:
        proto = await rig.client()
        bodies = [b"req-%d" % i for i in range(300)]
        assert await gatherResults([proto.request(b) for b in bodies]) == bodies
        assert rig.proxy.connections_accepted == 1
        assert rig.proxy.connections_refused == 0


@pytest_twisted.ensureDeferred
async def test_split_makes_the_client_read_one_byte_at_a_time_and_replies_stay_correct():
    async with Rig(FaultSchedule(seed=1, split=1.0)) as rig:
        proto = await rig.client(
            RecordingClientFactory(FC1Codec(), request_timeout=5.0)
        )
        bodies = [b"split-%d" % i for i in range(20)]
        assert await gatherResults([proto.request(b) for b in bodies]) == bodies
        assert rig.proxy.faults["split"] >= 1
        # One piece per reactor turn: the client sees fragments, not frames.
        assert len(proto.reads) > 50
        assert max(proto.reads) < 14  # an fc1 header alone is 13 bytes


@pytest_twisted.ensureDeferred
async def test_split_into_small_random_pieces_keeps_replies_correct():
    async with Rig(FaultSchedule(seed=2, split=0.5, split_max=9)) as rig:
        proto = await rig.client()
        bodies = [b"piece-%d-" % i + b"z" * i for i in range(100)]
        assert await gatherResults([proto.request(b) for b in bodies]) == bodies
        assert rig.proxy.faults["split"] >= 1


@pytest_twisted.ensureDeferred
async def test_merge_delivers_many_replies_in_one_read():
    schedule = FaultSchedule(seed=1, merge=1.0, merge_window=0.15)
    async with Rig(schedule) as rig:
        proto = await rig.client(
            RecordingClientFactory(FC1Codec(), request_timeout=5.0)
        )
        # The server answers each at a different time, in separate writes.
        bodies = [b"!delay:0.%03d m%d" % (5 * i, i) for i in range(10)]
        assert await gatherResults([proto.request(b) for b in bodies]) == bodies
        assert rig.proxy.faults["merge"] >= 1
        assert len(proto.reads) <= 3


@pytest_twisted.ensureDeferred
async def test_delay_holds_each_chunk_in_each_direction_and_replies_stay_correct():
    async with Rig(FaultSchedule(seed=1, delay=(0.05, 0.02))) as rig:
        proto = await rig.client()
        started = reactor.seconds()  # type: ignore[attr-defined]
        bodies = [b"slow-%d" % i for i in range(50)]
        assert await gatherResults([proto.request(b) for b in bodies]) == bodies
        elapsed = reactor.seconds() - started  # type: ignore[attr-defined]
        # At least the base delay each way; never an upper bound.
        assert elapsed >= 0.5 * 2 * 0.05
        assert rig.proxy.faults["delay"] >= 2


@pytest_twisted.ensureDeferred
async def test_chunk_faults_together_keep_every_reply_correct_on_every_connection():
    schedule = FaultSchedule(
        seed=11, split=0.3, split_max=7, merge=0.3, merge_window=0.003, delay=(0, 0.003)
    )
    async with Rig(schedule) as rig:
        protos = [await rig.client() for _ in range(3)]
        requests = []
        expected = []
        # Ten rounds in ten reactor turns: many chunks, so many decisions.
        for round in range(10):
            for n, proto in enumerate(protos):
                for i in range(10):
                    body = b"c%d-r%d-%d-" % (n, round, i) + b"q" * (i * 37 % 300)
                    expected.append(body)
                    requests.append(proto.request(body))
            await sleep(0.002)
        assert await gatherResults(requests) == expected
        assert {"split", "merge", "delay"} <= set(rig.proxy.faults)


@pytest_twisted.ensureDeferred
async def test_under_every_fault_at_once_each_request_fires_once_and_nothing_leaks():
    schedule = FaultSchedule(
        seed=7,
        cut=0.2,
        cut_after=(1, 3000),
        split=0.1,
        split_max=8,
        merge=0.1,
        delay=(0.0, 0.002),
        corrupt_length=0.01,
        silence=0.2,
        silence_after=(0.0, 0.05),
        silence_for=(0.05, 0.2),
        refuse=0.05,
        refuse_for=0.01,
        max_buffer=32 * 1024,
    )
    outcomes: dict[tuple[int, int, int], list[Any]] = {}

    async def worker(rig: Rig, w: int) -> None:
        for c in range(5):
            factory = FramedClientFactory(FC1Codec(), request_timeout=0.5)
            try:
                proto = await rig.proxy.client_endpoint().connect(factory)
            except ConnectError:
                continue
            rig.clients.append(proto)
            ds = []
            for i in range(20):
                body = b"w%d-c%d-%d-" % (w, c, i) + b"y" * (i * 53 % 700)
                box = outcomes.setdefault((w, c, i), [])
                d = proto.request(body)
                d.addBoth(lambda r, box=box, body=body: box.append((body, r)))
                ds.append(d)
            # The callbacks above consume every outcome.
            await gatherResults(ds)
            proto.abort("worker done")
            await proto.when_closed()

    async with Rig(schedule) as rig:
        await gatherResults([ensureDeferred(worker(rig, w)) for w in range(4)])
        assert rig.proxy.connections_accepted + rig.proxy.connections_refused >= 20
        assert {"cut", "delay", "split", "merge"} <= set(rig.proxy.faults)
    assert outcomes and all(len(box) == 1 for box in outcomes.values())
    for body, result in (box[0] for box in outcomes.values()):
        if isinstance(result, bytes):
            assert result == body
        else:
            assert result.check(ConnectionLost, RequestTimeout), result


@pytest_twisted.ensureDeferred
async def test_scheduled_cut_fails_pending_requests_with_connection_lost():
    async with Rig(FaultSchedule(seed=1, cut=1.0, cut_after=(1, 100))) as rig:
        proto = await rig.client()
        # Requests and replies are longer than the cut offset, whichever
        # direction the schedule cuts.
        pending = [proto.request(b"p" * 200) for _ in range(3)]
        for d in pending:
            error = await outcome(d)
            assert isinstance(error, ConnectionLost)
            assert error.written
        assert rig.proxy.faults["cut"] == 1
        await wait_until(lambda: not rig.proxy.connections)


@pytest_twisted.ensureDeferred
async def test_cut_lands_inside_a_frame_and_the_receiver_gets_exactly_that_many_bytes():
    schedule = FaultSchedule(seed=5, cut=1.0, cut_after=(20, 4000), cut_in=TO_CLIENT)
    cut_after = schedule.plan(0).cut_after
    assert cut_after is not None
    async with Rig(schedule) as rig:
        peer = await rig.raw()
        peer.transport.write(CODEC.encode(REQUEST, 1, b"!size:5000"))  # type: ignore[union-attr]
        await wait_until(lambda: peer.lost)
        assert bytes(peer.data) == CODEC.encode(REPLY, 1, b"x" * 5000)[:cut_after]


@pytest_twisted.ensureDeferred
async def test_cut_all_fails_pending_requests_and_a_new_connection_works():
    async with Rig() as rig:
        proto = await rig.client()
        assert await proto.request(b"before") == b"before"
        held = proto.request(b"!hold")
        assert rig.proxy.cut_all() == 1
        error = await outcome(held)
        assert isinstance(error, ConnectionLost)
        again = await rig.client()
        assert await again.request(b"after") == b"after"


@pytest_twisted.ensureDeferred
async def test_corrupt_length_closes_that_client_with_frame_too_large_and_spares_others():
    async with Rig() as rig:
        victim = await rig.client()
        bystander = await rig.client()
        assert await victim.request(b"warm-up") == b"warm-up"
        assert await bystander.request(b"warm-up") == b"warm-up"
        (await rig.link_of(victim)).corrupt_next_header()
        error = await outcome(victim.request(b"doomed"))
        assert isinstance(error, ConnectionLost)
        assert isinstance(error.error, FrameTooLarge)
        assert error.error.length >= 0xFFFF_FFFF
        await victim.when_closed()
        bodies = [b"fine-%d" % i for i in range(20)]
        assert await gatherResults([bystander.request(b) for b in bodies]) == bodies
        assert rig.proxy.faults["corrupt_length"] == 1


@pytest_twisted.ensureDeferred
async def test_scheduled_corrupt_length_hits_the_first_reply_header():
    async with Rig(FaultSchedule(seed=1, corrupt_length=1.0)) as rig:
        proto = await rig.client()
        error = await outcome(proto.request(b"hello"))
        assert isinstance(error, ConnectionLost)
        assert isinstance(error.error, FrameTooLarge)


@pytest_twisted.ensureDeferred
async def test_silence_times_requests_out_but_keeps_the_connection_open_until_resumed():
    async with Rig() as rig:
        proto = await rig.client()
        assert await proto.request(b"hello") == b"hello"
        assert rig.proxy.silence_all() == 1
        error = await outcome(proto.request(b"anyone?", timeout=0.2))
        assert isinstance(error, RequestTimeout)
        assert not proto.is_closed
        (link,) = rig.proxy.connections
        assert not link.closed
        rig.proxy.resume()
        assert await proto.request(b"back") == b"back"
        assert rig.proxy.faults["silence"] == 1


@pytest_twisted.ensureDeferred
async def test_scheduled_silence_with_a_duration_delivers_when_it_ends():
    schedule = FaultSchedule(seed=1, silence=1.0, silence_after=0.0, silence_for=0.3)
    async with Rig(schedule) as rig:
        proto = await rig.client()
        await rig.link_of(proto)
        await sleep(0.02)
        impatient = proto.request(b"quick", timeout=0.1)
        patient = proto.request(b"patient", timeout=5.0)
        assert isinstance(await outcome(impatient), RequestTimeout)
        assert await patient == b"patient"


@pytest_twisted.ensureDeferred
async def test_refuse_new_refuses_connections_until_the_period_ends():
    async with Rig() as rig:
        rig.proxy.refuse_new(0.3)
        assert await refused(rig)
        assert rig.proxy.connections_refused == 1
        await sleep(0.35)
        proto = await rig.client()
        assert await proto.request(b"let in") == b"let in"
        assert rig.proxy.connections_accepted == 1


@pytest_twisted.ensureDeferred
async def test_scheduled_refusal_starts_a_period_that_later_ends():
    async with Rig(FaultSchedule(seed=1, refuse=1.0, refuse_for=0.3)) as rig:
        assert await refused(rig)
        rig.proxy.schedule = FaultSchedule()
        assert await refused(rig), "still inside the refusal period"
        await sleep(0.35)
        proto = await rig.client()
        assert await proto.request(b"ok") == b"ok"
        assert rig.proxy.faults["refuse"] == 2


async def refused(rig: Rig) -> bool:
    """
    Whether a new connection is refused: either the connect fails, or the
    connection is closed before anything could be sent on it.
    """
    factory = FramedClientFactory(FC1Codec(), request_timeout=1.0)
    endpoint = rig.proxy.client_endpoint()
    try:
        proto = await endpoint.connect(factory)
    except ConnectError:
        return True
    rig.clients.append(proto)
    d = proto.when_closed()
    d.addTimeout(1.0, reactor)
    try:
        await d
    except Exception:
        return False
    return True


@pytest_twisted.ensureDeferred
async def test_throttle_limits_bandwidth_to_about_the_rate():
    rate = 40_000
    async with Rig(FaultSchedule(seed=1, throttle=rate)) as rig:
        proto = await rig.client()
        started = reactor.seconds()  # type: ignore[attr-defined]
        reply = await proto.request(b"!size:20000")
        elapsed = reactor.seconds() - started  # type: ignore[attr-defined]
        assert reply == b"x" * 20000
        # A loose lower bound only: a busy machine may be slower, never faster.
        assert elapsed >= 0.5 * 20000 / rate
        assert rig.proxy.faults["throttle"] == 1


@pytest_twisted.ensureDeferred
async def test_proxy_memory_stays_bounded_when_the_server_stops_reading():
    stuck = RawPeer(pause_reading=True)
    port = await listen_raw(stuck)
    max_buffer = 64 * 1024
    proxy = FaultProxy(
        reactor,
        ("127.0.0.1", port.getHost().port),
        FaultSchedule(max_buffer=max_buffer),
    )
    await proxy.listen()
    client = RawPeer()
    try:
        await connectProtocol(proxy.client_endpoint(), client)
        total = 16 * 1024 * 1024
        client.transport.write(b"\0" * total)  # type: ignore[union-attr]
        (link,) = proxy.connections
        await wait_until(lambda: link.to_server.received > 0)
        # Wait until the proxy stops taking bytes (bounded).
        last = -1
        for _ in range(60):
            await sleep(0.05)
            if link.to_server.received == last:
                break
            last = link.to_server.received
        assert link.to_server.peak_held <= max_buffer + 64 * 1024
        assert link.to_server.received < total, "the proxy kept reading"
        assert link.to_server.held <= max_buffer + 64 * 1024
    finally:
        client.transport.abortConnection()  # type: ignore[union-attr]
        # Not reading, it would not notice the proxy going away.
        stuck.transport.abortConnection()  # type: ignore[union-attr]
        await proxy.stop()
        await wait_until(lambda: client.lost and stuck.lost)
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_bytes_held_for_a_delay_stay_under_max_buffer():
    max_buffer = 64 * 1024
    schedule = FaultSchedule(delay=10.0, max_buffer=max_buffer)
    async with Rig(schedule) as rig:
        peer = await rig.raw()
        total = 4 * 1024 * 1024
        peer.transport.write(b"\0" * total)  # type: ignore[union-attr]
        link = await rig.link_of(peer)
        await wait_until(lambda: link.to_server.received >= max_buffer)
        await sleep(0.1)
        # Nothing is due for 10 s, so everything read is held; reading
        # stopped at the cap (plus the read that crossed it).
        assert link.to_server.delivered == 0
        assert max_buffer <= link.to_server.held <= max_buffer + 64 * 1024
        assert link.to_server.peak_held <= max_buffer + 64 * 1024


async def listen_raw(peer: RawPeer) -> IListeningPort:
    factory = Factory.forProtocol(lambda: peer)
    factory.noisy = False
    return await listen(reactor, LOOPBACK, factory)  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_server_closing_closes_the_client_side_too():
    async with Rig() as rig:
        proto = await rig.client()
        error = await outcome(proto.request(b"!drop"))
        assert isinstance(error, ConnectionLost)
        await proto.when_closed()
        await wait_until(lambda: not rig.proxy.connections)


@pytest_twisted.ensureDeferred
async def test_client_closing_closes_the_server_side_too():
    async with Rig() as rig:
        proto = await rig.client()
        assert await proto.request(b"hi") == b"hi"
        assert len(rig.server.connections) == 1
        await proto.close()
        await wait_until(lambda: not rig.server.connections)
        await wait_until(lambda: not rig.proxy.connections)


@pytest_twisted.ensureDeferred
async def test_stop_closes_the_listener_and_every_connection():
    async with Rig() as rig:
        proto = await rig.client()
        assert await proto.request(b"hi") == b"hi"
        held = proto.request(b"!hold")
        endpoint = rig.proxy.client_endpoint()
        await rig.proxy.stop()
        assert isinstance(await outcome(held), ConnectionLost)
        assert not rig.proxy.connections
        with pytest.raises(ConnectError):
            await endpoint.connect(FramedClientFactory(FC1Codec()))


@pytest_twisted.ensureDeferred
async def test_unreachable_upstream_drops_the_client_and_is_counted():
    # A port that was just free: nothing listens there.
    placeholder = await listen(reactor, LOOPBACK)
    dead_port = placeholder.getHost().port  # type: ignore[attr-defined]
    await placeholder.stopListening()
    proxy = FaultProxy(reactor, ("127.0.0.1", dead_port))
    await proxy.listen()
    try:
        proto = await proxy.client_endpoint().connect(FramedClientFactory(FC1Codec()))
        d = proto.when_closed()
        d.addTimeout(3.0, reactor)
        await d
        assert proxy.upstream_failures == 1
    finally:
        await proxy.stop()


def test_fault_kinds_name_every_counter_key():
    assert set(FAULT_KINDS) == {
        "cut",
        "delay",
        "split",
        "merge",
        "corrupt_length",
        "silence",
        "refuse",
        "throttle",
    }


@pytest_twisted.ensureDeferred
async def test_listening_twice_is_an_error():
    proxy = FaultProxy(reactor, ("127.0.0.1", 1))
    await proxy.listen()
    try:
        with pytest.raises(RuntimeError):
            proxy.listen()
    finally:
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_timers_run_on_the_injected_clock():
    clock = Clock()
    async with Rig(FaultSchedule(delay=1.0), clock=clock) as rig:
        peer = await rig.raw()
        link = await rig.link_of(peer)
        peer.transport.write(CODEC.encode(REQUEST, 1, b"tick"))  # type: ignore[union-attr]
        await wait_until(lambda: link.to_server.received > 0)
        await sleep(0.05)
        assert link.to_server.delivered == 0, "real time does not move this clock"
        clock.advance(1.0)
        await wait_until(lambda: link.to_client.received > 0)
        # The reply is held for a second of the injected clock too.
        await sleep(0.05)
        assert peer.data == b""
        clock.advance(1.0)
        await wait_until(lambda: bytes(peer.data) == CODEC.encode(REPLY, 1, b"tick"))
