"""
framedclient.testing.memory: the in-memory client/server pair users drive
from their own tests, on a task.Clock, without sockets.
"""

from __future__ import annotations

import gc

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock

from framedclient.backoff import ExponentialBackoff
from framedclient.codecs import PING, REPLY, FC1Codec, PipelinedCodec
from framedclient.errors import (
    ClientClosed,
    ConnectionLost,
    Overloaded,
    RemoteError,
    RequestTimeout,
)
from framedclient.framing import Delimited
from framedclient.protocol import FramedProtocol
from framedclient.testing import (
    MemoryEndpoint,
    connected_pair,
    memory_client,
)

CODEC = FC1Codec()


def result_of(d):
    """
    What a Deferred fired with (value or Failure); fails the test if it has
    not fired.
    """
    box: list = []
    d.addBoth(box.append)
    assert box, f"{d!r} has not fired"
    return box[0]


def test_pair_matches_many_concurrent_replies_to_their_requests():
    client, server, pump = connected_pair()
    bodies = [b"body-%d" % i for i in range(100)]
    ds = [client.request(b) for b in bodies]
    assert all(not d.called for d in ds)  # nothing moves until the test pumps
    pump.flush()
    assert [result_of(d) for d in ds] == bodies


def test_pair_unpacks_and_exposes_its_clock():
    clock = Clock()
    pair = connected_pair(clock=clock)
    client, server, pump = pair
    assert pair.clock is clock and pump.clock is clock
    assert isinstance(client, FramedProtocol)
    assert server.transport is not None


def test_pair_request_times_out_when_the_clock_advances():
    pair = connected_pair(request_timeout=2.0)
    d = pair.client.request(b"!hold")
    pair.flush()
    assert not d.called
    pair.advance(1.9)
    assert not d.called
    pair.advance(0.2)
    assert isinstance(result_of(d).value, RequestTimeout)


def test_pair_delayed_replies_arrive_out_of_order_on_the_clock():
    pair = connected_pair()
    slow = pair.client.request(b"!delay:1.0 slow")
    fast = pair.client.request(b"fast")
    pair.flush()
    assert result_of(fast) == b"fast" and not slow.called
    pair.advance(1.0)
    assert result_of(slow) == b"!delay:1.0 slow"


def test_pair_error_reply_fails_with_remote_error():
    pair = connected_pair()
    d = pair.client.request(b"!error:no such key")
    pair.flush()
    error = result_of(d).value
    assert isinstance(error, RemoteError) and error.message == "no such key"


def test_pair_cut_fails_written_requests_with_connection_lost():
    pair = connected_pair()
    d = pair.client.request(b"!hold")
    pair.flush()
    pair.cut("cable pulled")
    error = result_of(d).value
    assert isinstance(error, ConnectionLost) and error.written
    assert "cable pulled" in str(error)
    assert pair.client.is_closed


def test_pair_with_other_codec_needs_a_server_factory():
    codec = PipelinedCodec(lambda: Delimited(b"\n"))
    with pytest.raises(ValueError, match="server_factory"):
        connected_pair(codec=codec)


class _LineEcho(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data.upper())


def test_pair_with_own_server_and_pipelined_codec():
    codec = PipelinedCodec(lambda: Delimited(b"\n"))
    pair = connected_pair(Factory.forProtocol(_LineEcho), codec=codec)
    ds = [pair.client.request(b"a"), pair.client.request(b"b")]
    pair.flush()
    assert [result_of(d) for d in ds] == [b"A", b"B"]


class _PingForever(Protocol):
    """
    Answers every pong with another ping: the client pongs each one, so
    bytes never stop moving.
    """

    def connectionMade(self) -> None:
        self.transport.write(CODEC.encode(PING, 0, b""))

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(CODEC.encode(PING, 0, b""))


def test_flush_reports_a_livelock_instead_of_hanging():
    pair = connected_pair(Factory.forProtocol(_PingForever), greet=False)
    with pytest.raises(RuntimeError, match="livelock"):
        pair.flush(max_rounds=50)


def test_memory_client_connects_sends_and_answers_on_flush():
    client, server = memory_client(pool_size=2)
    d = client.request(b"hello")
    assert not d.called and server.pending_attempts == 2
    server.flush()
    assert result_of(d) == b"hello"
    assert len(server.open_connections) == 2
    assert isinstance(server.endpoint(), MemoryEndpoint)
    assert IStreamClientEndpoint.providedBy(server.endpoint())


def test_memory_client_rides_out_a_server_crash():
    client, server = memory_client(
        pool_size=1,
        request_timeout=30.0,
        backoff=ExponentialBackoff(initial=1.0, jitter=0.0),
    )
    server.flush()
    server.clock.advance(5)  # the connection is healthy: reconnect at once
    held = client.request(b"!hold")
    server.flush()
    assert server.drop_all() == 1
    error = result_of(held).value
    assert isinstance(error, ConnectionLost) and error.written
    d = client.request(b"after")
    server.flush()
    assert result_of(d) == b"after"
    assert server.attempts == 2


def test_memory_server_refusing_makes_the_client_back_off():
    client, server = memory_client(
        pool_size=1,
        request_timeout=30.0,
        backoff=ExponentialBackoff(initial=1.0, multiplier=2.0, jitter=0.0),
    )
    server.refuse()
    d = client.request(b"patience")
    server.flush()
    assert server.attempts == 1 and not d.called
    # Delays 1, 2, 4: three more attempts by t=7, not hundreds.
    server.advance(7.5, step=0.1)
    assert server.attempts == 4
    assert "refused" in (client.pool.connections[0].last_error or "")
    server.accept()
    server.advance(8.0, step=0.1)
    assert result_of(d) == b"patience"


def test_memory_server_hanging_attempts_hit_the_connect_timeout():
    client, server = memory_client(
        pool_size=1,
        connect_timeout=2.0,
        backoff=ExponentialBackoff(initial=1.0, jitter=0.0),
    )
    server.hang()
    server.flush()
    assert server.pending_attempts == 1
    server.advance(2.0)
    conn = client.pool.connections[0]
    assert conn.state == "backing_off"
    assert server.pending_attempts == 0  # the timeout cancelled the attempt
    assert "timed out" in (conn.last_error or "")


def test_server_that_stops_reading_pauses_the_client_and_sheds_past_the_bound():
    pair_client, server = memory_client(pool_size=1, max_write_buffer=1000)
    server.flush()
    conn = server.open_connections[0]
    conn.stop_reading(pause_at=200)
    first = [pair_client.request(b"x" * 90) for _ in range(3)]
    server.flush()
    proto = conn.client
    assert isinstance(proto, FramedProtocol)
    assert proto.debug_state()["paused"]
    # Paused: requests queue in memory up to max_write_buffer bytes...
    queued = [pair_client.request(b"y" * 90) for _ in range(10)]
    # ...and past it fail at once, without being sent.
    shed = pair_client.request(b"z" * 90)
    assert isinstance(result_of(shed).value, Overloaded)
    conn.resume_reading()
    server.flush()
    assert [result_of(d) for d in first + queued] == [b"x" * 90] * 3 + [b"y" * 90] * 10


def test_send_to_client_delivers_raw_bytes():
    client, server = memory_client(pool_size=1)
    server.flush()
    conn = server.open_connections[0]
    conn.send_to_client(CODEC.encode(REPLY, 12345, b"never asked"))
    server.flush()
    assert conn.client.unknown_replies == 1


def test_cancel_in_memory_frees_the_request():
    client, server = memory_client(pool_size=1)
    server.flush()
    d = client.request(b"!delay:10 slow")
    server.flush()
    d.cancel()
    assert isinstance(result_of(d).value, CancelledError)
    server.flush()
    assert server.factory.cancels == 1


def test_closing_the_memory_client_leaves_no_timer_and_no_connection():
    client, server = memory_client(
        pool_size=3, heartbeat_interval=1.0, read_timeout=5.0
    )
    ds = [client.request(b"%d" % i) for i in range(20)]
    server.flush()
    assert all(result_of(d) for d in ds)
    closed = client.close()
    server.flush()
    assert result_of(closed) is None
    assert server.clock.getDelayedCalls() == []
    assert server.open_connections == []
    assert isinstance(result_of(client.request(b"late")).value, ClientClosed)


def test_server_close_is_clean_and_the_client_reconnects():
    client, server = memory_client(pool_size=1)
    server.flush()
    server.clock.advance(2)
    server.open_connections[0].close()
    server.flush()
    assert len(server.connections) == 2
    assert len(server.open_connections) == 1
    server.forget_closed()
    assert len(server.connections) == 1


def test_closed_client_holds_no_protocol():
    client, server = memory_client(pool_size=2)
    ds = [client.request(b"%d" % i) for i in range(10)]
    server.flush()
    assert all(result_of(d) for d in ds)
    closed = client.close()
    server.flush()
    assert result_of(closed) is None
    del ds, closed
    server.connections.clear()  # the test's own references to the protocols
    gc.collect()
    live = [o for o in gc.get_objects() if isinstance(o, FramedProtocol)]
    assert live == [], f"{len(live)} FramedProtocol objects retained by the client"
    assert client is not None


def test_debug_state_counts_the_connections_made():
    client, server = memory_client(pool_size=1)
    server.flush()
    server.clock.advance(2)
    server.drop_all()
    server.flush()
    assert server.attempts == 2
    assert client.pool.connections[0].debug_state()["connects"] == 2
