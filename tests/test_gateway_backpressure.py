"""
Backpressure on the gateway's reply path (issue 12): HTTP clients that do
not read their replies cannot make the gateway hold more than its reply
budget, and are closed after the write deadline.

The end-to-end tests use real loopback sockets (raw clients with a small
receive buffer that never read) against ``makeService``; the writer's own
rules are unit-tested with a fake request and a Clock.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure

from framedclient.runner.gateway import RETRY_AFTER
from framedclient.runner.replies import ReplyBudget, ReplyWriter
from tests.test_runner_gateway import Runner, running, wait_until

MB = 1_000_000
BUDGET = 16 * 1024 * 1024
REPLY = 4 * MB
CLIENTS = 8
DEADLINE = 1.0


def use_budget(runner: Runner, **kwargs: Any) -> ReplyBudget:
    budget = ReplyBudget(reactor, **kwargs)
    runner.service.gateway.replies = budget
    return budget


def port_of(runner: Runner) -> int:
    return int(runner.url.rsplit(":", 1)[1])


def non_reading_client(port: int, body: bytes) -> socket.socket:
    """
    A raw HTTP client with a small receive buffer that sends one POST and
    never reads.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        b"POST /v1/request HTTP/1.1\r\nHost: gateway\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    return sock


async def drain_until_closed(sock: socket.socket, within: float = 5.0) -> bytes:
    """
    Everything the gateway sent before closing.  Reads without blocking and
    lets the reactor run between reads: the gateway shares this process,
    and its close only happens on a later reactor turn.  Fails if the
    gateway keeps the connection open ``within`` seconds.
    """
    received = bytearray()
    sock.setblocking(False)
    deadline = reactor.seconds() + within  # type: ignore[attr-defined]
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            assert reactor.seconds() < deadline, "the gateway kept it open"  # type: ignore[attr-defined]
            await deferLater(reactor, 0.01, lambda: None)
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return bytes(received)


async def watch_held(budget: ReplyBudget, until: Deferred[Any]) -> int:
    """
    The most ``budget.held`` was, sampled every 5 ms until ``until`` fires.
    """
    most = 0
    while not until.called:
        most = max(most, budget.held)
        await deferLater(reactor, 0.005, lambda: None)
    return most


@pytest_twisted.ensureDeferred
async def test_non_reading_clients_never_hold_more_than_the_reply_budget():
    async with running() as runner:
        budget = use_budget(runner, max_bytes=BUDGET, write_deadline=10.0)
        gateway = runner.service.gateway
        port = port_of(runner)
        socks = [non_reading_client(port, b"!size:%d" % REPLY) for _ in range(CLIENTS)]
        try:
            answered: Deferred[None] = Deferred.fromCoroutine(
                wait_until(lambda: sum(gateway.responses.values()) == CLIENTS)
            )
            most = await watch_held(budget, answered)
            await answered
            admitted = BUDGET // REPLY
            assert most <= BUDGET
            assert budget.peak == admitted * REPLY
            assert gateway.responses == {200: admitted, 503: CLIENTS - admitted}
            assert budget.refused == CLIENTS - admitted
            # Meanwhile a client that reads is still answered.
            code, _, reply = await runner.post(b"hello")
            assert (code, reply) == (200, b"hello")
            assert budget.held == admitted * REPLY
            _, stats = await runner.get_json("/v1/stats")
            assert stats["gateway"]["held_reply_bytes"] == admitted * REPLY
            assert stats["gateway"]["replies_refused"] == CLIENTS - admitted
            _, _, metrics = await runner.get("/metrics")
            held = {
                f.name: f.samples[0].value
                for f in text_string_to_metric_families(metrics.decode())
            }["framedclient_gateway_held_reply_bytes"]
            assert held == admitted * REPLY
        finally:
            for sock in socks:
                sock.close()
        await wait_until(lambda: budget.held == 0)


@pytest_twisted.ensureDeferred
async def test_refused_reply_is_503_with_retry_after_and_says_it_was_processed():
    async with running() as runner:
        use_budget(runner, max_bytes=REPLY, write_deadline=10.0)
        sock = non_reading_client(port_of(runner), b"!size:%d" % REPLY)
        try:
            await wait_until(lambda: runner.service.gateway.replies.held == REPLY)
            code, headers, body = await runner.post(b"!size:100")
            assert code == 503
            assert headers.getRawHeaders("retry-after") == [str(RETRY_AFTER)]
            assert b'"error":"reply_overloaded"' in body
            assert b"processed" in body
        finally:
            sock.close()


@pytest_twisted.ensureDeferred
async def test_non_reading_clients_are_closed_after_the_write_deadline():
    async with running() as runner:
        budget = use_budget(runner, max_bytes=BUDGET, write_deadline=DEADLINE)
        port = port_of(runner)
        admitted = BUDGET // REPLY
        socks = [non_reading_client(port, b"!size:%d" % REPLY) for _ in range(admitted)]
        try:
            await wait_until(lambda: budget.held == admitted * REPLY)
            # Not before the deadline...
            await deferLater(reactor, DEADLINE / 2, lambda: None)
            assert budget.stalled == 0
            # ...but soon after it.
            await wait_until(lambda: budget.stalled == admitted, DEADLINE + 3)
            assert budget.held == 0
            for sock in socks:
                sent = await drain_until_closed(sock)
                assert sent.startswith(b"HTTP/1.1 200 ")
                assert len(sent) < REPLY
        finally:
            for sock in socks:
                sock.close()


class SlowReader(Protocol):
    """
    Reads a response, pausing its transport for ``pause`` seconds after
    every ``every`` bytes.
    """

    def __init__(self, pause: float, every: int) -> None:
        self.pause = pause
        self.every = every
        self.received = bytearray()
        self.since_pause = 0
        self.pauses = 0
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.since_pause += len(data)
        if self.since_pause >= self.every:
            self.since_pause = 0
            self.pauses += 1
            assert self.transport is not None
            self.transport.pauseProducing()  # type: ignore[attr-defined]
            reactor.callLater(  # type: ignore[attr-defined]
                self.pause,
                self.transport.resumeProducing,  # type: ignore[attr-defined]
            )

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closed.callback(None)


@pytest_twisted.ensureDeferred
async def test_slow_client_that_keeps_reading_gets_its_whole_reply():
    async with running() as runner:
        deadline = 0.5
        budget = use_budget(runner, write_deadline=deadline, chunk_size=16 * 1024)
        size = 2 * MB
        reader = SlowReader(pause=0.2, every=256 * 1024)
        await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port_of(runner)), reader
        )
        body = b"!size:%d" % size
        assert reader.transport is not None
        reader.transport.write(
            b"POST /v1/request HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await reader.closed.addTimeout(10, reactor)
        # Paused for longer than the deadline in all, never that long at once.
        assert reader.pauses * reader.pause > deadline
        head, _, reply = bytes(reader.received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert reply == b"x" * size
        assert (budget.stalled, budget.held) == (0, 0)


# -- the writer's rules, deterministic --------------------------------------------


class FakeTransport:
    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class FakeRequest:
    """
    The part of a twisted.web request ReplyWriter uses; ``full_after``
    bytes written pause the producer, as a full transport buffer does.
    """

    def __init__(self, full_after: int) -> None:
        self.full_after = full_after
        self.written = bytearray()
        self.transport = FakeTransport()
        self.channel: object | None = object()
        self.producer: Any = None
        self.finished = False
        self.finish_waiters: list[Deferred[None]] = []

    def notifyFinish(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.finish_waiters.append(d)
        return d

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written += data
        if len(self.written) >= self.full_after:
            self.producer.pauseProducing()

    def finish(self) -> None:
        self.finished = True


def test_writer_hands_the_transport_one_chunk_past_full_and_finishes_on_drain():
    clock = Clock()
    budget = ReplyBudget(clock, max_bytes=100, chunk_size=10, write_deadline=5)
    request = FakeRequest(full_after=25)
    assert budget.reserve(60)
    ReplyWriter(request, b"y" * 60, budget).start()
    assert len(request.written) == 30  # paused by the third chunk
    request.full_after = 1 << 30
    request.producer.resumeProducing()
    assert bytes(request.written) == b"y" * 60
    assert request.finished and request.producer is None
    assert budget.held == 0


def test_writer_aborts_a_connection_paused_past_the_deadline_and_releases():
    clock = Clock()
    budget = ReplyBudget(clock, max_bytes=100, chunk_size=10, write_deadline=5)
    request = FakeRequest(full_after=10)
    done: list[bool] = []
    assert budget.reserve(60)
    ReplyWriter(request, b"y" * 60, budget, done.append).start()
    clock.advance(4.9)
    request.producer.resumeProducing()  # the client read: deadline restarts
    clock.advance(4.9)
    assert not request.transport.aborted and budget.held == 60
    clock.advance(0.1)
    assert request.transport.aborted
    assert (budget.held, budget.stalled, done) == (0, 1, [False])
    assert not request.finished


def test_writer_releases_the_bytes_when_the_client_disconnects():
    clock = Clock()
    budget = ReplyBudget(clock, max_bytes=100, chunk_size=10, write_deadline=5)
    request = FakeRequest(full_after=10)
    assert budget.reserve(60)
    ReplyWriter(request, b"y" * 60, budget).start()
    request.channel = None
    request.finish_waiters[0].errback(Failure(ConnectionResetError()))
    assert budget.held == 0
    assert not clock.getDelayedCalls()


def test_budget_refuses_past_its_bytes_but_lets_one_oversized_reply_through():
    budget = ReplyBudget(Clock(), max_bytes=100)
    assert budget.reserve(150)  # alone: allowed, or it could never be sent
    assert not budget.reserve(1)
    budget.release(150)
    assert budget.reserve(60) and budget.reserve(40)
    assert not budget.reserve(1)
    assert (budget.held, budget.peak, budget.refused) == (100, 150, 2)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_bytes": 0}, {"chunk_size": 0}, {"write_deadline": 0}],
)
def test_budget_rejects_settings_that_could_never_write(kwargs: dict[str, Any]):
    with pytest.raises(ValueError, match="must be"):
        ReplyBudget(Clock(), **kwargs)
