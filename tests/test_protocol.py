"""
FramedProtocol over in-memory transports with a deterministic clock.
"""

from __future__ import annotations

import math

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test.iosim import connect as iosim_connect
from twisted.test.iosim import makeFakeClient, makeFakeServer

from framedclient.codecs import (
    CANCEL,
    ERROR,
    GOAWAY,
    PING,
    PONG,
    REPLY,
    REQUEST,
    FC1Codec,
    HeaderCodec,
    Kind,
    Matching,
    PipelinedCodec,
)
from framedclient.errors import (
    ConnectionLost,
    FrameTooLarge,
    Overloaded,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    RequestTooLarge,
)
from framedclient.framing import Delimited, LengthPrefixed
from framedclient.protocol import FramedClientFactory, FramedProtocol, ProtocolConfig
from framedclient.server import ReferenceServerFactory

from .wire import connect, outcomes


def test_replies_in_any_order_reach_their_own_requests():
    proto, peer, clock = connect()
    ds = [proto.request(b"req-%d" % i) for i in range(5)]
    clock.advance(0)
    sent = peer.received()
    assert [body for _, _, body in sent] == [b"req-%d" % i for i in range(5)]
    for kind, request_id, body in reversed(sent):
        assert kind == REQUEST
        peer.send(REPLY, request_id, b"re:" + body)
    assert outcomes(ds) == [b"re:req-%d" % i for i in range(5)]
    assert proto.pending == 0


def test_requests_from_one_turn_are_written_in_one_transport_write():
    proto, peer, clock = connect()
    writes = []
    original = peer.transport.write
    peer.transport.write = lambda data: (writes.append(data), original(data))  # type: ignore[method-assign]
    for i in range(100):
        proto.request(b"x%d" % i)
    assert writes == [], "nothing is written before the turn ends"
    clock.advance(0)
    assert len(writes) == 1
    assert len(peer.received()) == 100


def test_requests_issued_from_reply_callbacks_are_written_when_the_read_ends():
    proto, peer, clock = connect()
    follow_ups = []
    d = proto.request(b"first")
    d.addCallback(lambda _: follow_ups.append(proto.request(b"second")))
    clock.advance(0)
    ((_, rid, _),) = peer.received()
    peer.send(REPLY, rid, b"ok")
    # No clock turn needed: the follow-up went out at the end of dataReceived.
    assert [body for _, _, body in peer.received()] == [b"second"]
    assert len(follow_ups) == 1


def test_reply_split_into_single_bytes_is_delivered_once_complete():
    proto, peer, clock = connect()
    d = proto.request(b"hello")
    clock.advance(0)
    ((_, rid, _),) = peer.received()
    frame = FC1Codec().encode(REPLY, rid, b"world")
    for i in range(len(frame) - 1):
        proto.dataReceived(frame[i : i + 1])
        assert not d.called
    proto.dataReceived(frame[-1:])
    assert outcomes([d]) == [b"world"]


def test_ten_thousand_concurrent_requests_share_one_connection():
    clock = Clock()
    server_factory = ReferenceServerFactory(clock=clock)
    server = server_factory.buildProtocol(None)
    client = FramedProtocol(ProtocolConfig(), clock)
    pump = iosim_connect(server, makeFakeServer(server), client, makeFakeClient(client))
    ds = [client.request(b"%d" % i) for i in range(10_000)]
    clock.advance(0)
    pump.flush()
    assert outcomes(ds) == [b"%d" % i for i in range(10_000)]
    assert server_factory.requests == 10_000
    assert client.pending == 0 and client.table_size == 0


def test_error_reply_becomes_remote_error_with_the_server_message():
    proto, peer, clock = connect()
    d = proto.request(b"boom")
    clock.advance(0)
    ((_, rid, _),) = peer.received()
    peer.send(ERROR, rid, "disk full ✗".encode())
    (result,) = outcomes([d])
    assert isinstance(result, Failure)
    assert result.check(RemoteError)
    assert result.value.message == "disk full ✗"


def test_request_times_out_with_request_timeout():
    proto, peer, clock = connect()
    d = proto.request(b"slow", timeout=0.5)
    clock.advance(0)
    clock.advance(0.49)
    assert not d.called
    clock.advance(0.01)
    (result,) = outcomes([d])
    assert result.check(RequestTimeout)
    assert result.value.timeout == 0.5
    assert proto.pending == 0


def test_default_timeout_comes_from_config_and_inf_disables_it():
    proto, peer, clock = connect(ProtocolConfig(request_timeout=1.0))
    d_default = proto.request(b"a")
    d_forever = proto.request(b"b", timeout=math.inf)
    clock.advance(0)
    clock.advance(5)
    assert outcomes([d_default])[0].check(RequestTimeout)
    assert not d_forever.called


def test_late_reply_after_timeout_is_dropped_and_counted():
    proto, peer, clock = connect()
    d = proto.request(b"slow", timeout=1)
    clock.advance(0)
    ((_, rid, _),) = peer.received()
    clock.advance(1)
    assert outcomes([d])[0].check(RequestTimeout)
    assert proto.table_size == 1, "the ID stays reserved until the late reply"
    peer.send(REPLY, rid, b"too late")
    assert proto.late_replies == 1
    assert proto.unknown_replies == 0
    assert proto.table_size == 0


def test_cancel_before_write_sends_nothing_and_frees_the_id():
    proto, peer, clock = connect()
    d = proto.request(b"never")
    d.cancel()
    assert outcomes([d])[0].check(CancelledError)
    clock.advance(0)
    assert peer.received() == []
    assert proto.table_size == 0


def test_cancel_after_write_sends_cancel_frame_and_keeps_id_reserved():
    proto, peer, clock = connect()
    d = proto.request(b"abandon me")
    clock.advance(0)
    ((_, rid, _),) = peer.received()
    d.cancel()
    assert outcomes([d])[0].check(CancelledError)
    clock.advance(0)
    assert peer.received() == [(CANCEL, rid, b"")]
    assert proto.pending == 0
    assert proto.table_size == 1
    # A new request must not receive the abandoned request's reply.
    d2 = proto.request(b"next")
    clock.advance(0)
    ((_, rid2, _),) = peer.received()
    assert rid2 != rid
    peer.send(REPLY, rid, b"late answer to the cancelled one")
    assert not d2.called
    assert proto.late_replies == 1
    peer.send(REPLY, rid2, b"mine")
    assert outcomes([d2]) == [b"mine"]


def test_ids_wrap_around_skipping_ids_still_reserved():
    codec = HeaderCodec(
        lambda: LengthPrefixed(length_size=2, max_frame=1024),
        header_size=2,
        id_size=1,
        kind_offset=1,
        kinds={0: Kind.REQUEST, 1: Kind.REPLY},
    )
    clock = Clock()
    proto = FramedProtocol(ProtocolConfig(codec=codec, max_pending=10), clock)
    transport = StringTransport()
    proto.makeConnection(transport)
    framer = codec.new_framer()
    held = proto.request(b"held")  # id 1, never answered
    clock.advance(0)
    framer.feed(transport.value())
    transport.clear()
    seen = []
    for i in range(600):  # more than the 255 IDs of the space
        d = proto.request(b"%d" % i)
        clock.advance(0)
        (frame,) = framer.feed(transport.value())
        transport.clear()
        _, rid, _ = codec.decode(frame)
        seen.append(rid)
        proto.dataReceived(codec._encoder.encode(bytes([rid, 1]) + b"r"))
        assert outcomes([d]) == [b"r"]
    assert 1 not in seen, "the ID of the still-pending request is never reused"
    assert max(seen) == 255 and min(seen) == 2
    assert not held.called


def test_unknown_and_duplicate_reply_ids_are_counted_not_fatal():
    proto, peer, clock = connect()
    d = proto.request(b"a")
    clock.advance(0)
    ((_, rid, _),) = peer.received()
    peer.send(REPLY, 999_999, b"never asked")
    peer.send(REPLY, rid, b"answer")
    peer.send(REPLY, rid, b"answer again")
    assert outcomes([d]) == [b"answer"]
    assert proto.unknown_replies == 2
    assert not proto.is_closed
    d2 = proto.request(b"still works")
    clock.advance(0)
    ((_, rid2, _),) = peer.received()
    peer.send(REPLY, rid2, b"yes")
    assert outcomes([d2]) == [b"yes"]


def test_connection_lost_fails_every_pending_request_once_with_written_flag():
    proto, peer, clock = connect()
    written = [proto.request(b"w%d" % i) for i in range(3)]
    clock.advance(0)
    unwritten = [proto.request(b"u%d" % i) for i in range(2)]
    fired = []
    for d in written + unwritten:
        d.addBoth(lambda r: (fired.append(r), None)[1])
    proto.connectionLost(Failure(Exception("reset by peer")))
    assert len(fired) == 5
    assert all(isinstance(f, Failure) and f.check(ConnectionLost) for f in fired)
    assert [f.value.written for f in fired] == [True] * 3 + [False] * 2
    assert "reset by peer" in str(fired[0].value)
    assert proto.pending == 0 and proto.table_size == 0
    # Nothing is left scheduled, and new requests fail at once.
    assert clock.getDelayedCalls() == []
    late = proto.request(b"after")
    assert outcomes([late])[0].check(ConnectionLost)


def test_oversized_frame_from_server_closes_connection_and_fails_pending():
    proto, peer, clock = connect(ProtocolConfig(codec=FC1Codec(max_frame=1024)))
    d = proto.request(b"a")
    clock.advance(0)
    proto.dataReceived(b"\xff\xff\xff\xf0" + b"\x00" * 10)
    assert peer.transport.disconnecting or getattr(
        peer.transport, "disconnected", False
    )
    proto.connectionLost(Failure(Exception("aborted")))
    (result,) = outcomes([d])
    assert result.check(ConnectionLost)
    assert isinstance(result.value.error, FrameTooLarge)
    assert "protocol error" in result.value.reason


def test_replies_decoded_before_a_corrupt_frame_are_still_delivered():
    proto, peer, clock = connect(ProtocolConfig(codec=FC1Codec(max_frame=1024)))
    d1 = proto.request(b"a")
    d2 = proto.request(b"b")
    clock.advance(0)
    (_, r1, _), (_, r2, _) = peer.received()
    proto.dataReceived(FC1Codec().encode(REPLY, r1, b"A") + b"\xff\xff\xff\xff")
    proto.connectionLost(Failure(Exception("aborted")))
    assert outcomes([d1]) == [b"A"]
    assert outcomes([d2])[0].check(ConnectionLost)


def test_pending_table_is_bounded_per_connection():
    proto, peer, clock = connect(ProtocolConfig(max_pending=3))
    ds = [proto.request(b"%d" % i) for i in range(3)]
    extra = proto.request(b"one too many")
    assert outcomes([extra])[0].check(Overloaded)
    assert not proto.accepting
    clock.advance(0)
    (_, rid, _), *_ = peer.received()
    peer.send(REPLY, rid, b"done")
    assert outcomes(ds[:1]) == [b"done"]
    assert proto.accepting


def test_paused_transport_holds_requests_and_bounds_the_buffer():
    proto, peer, clock = connect(ProtocolConfig(max_write_buffer=100, write_timeout=5))
    proto.pauseProducing()
    held = [proto.request(b"x" * 40) for _ in range(2)]
    clock.advance(0)
    assert peer.received() == [], "nothing written while the transport is full"
    # 2 * (13 + 40) bytes queued: over the 100-byte bound.
    shed = proto.request(b"y")
    assert outcomes([shed])[0].check(Overloaded)
    proto.resumeProducing()
    clock.advance(0)
    assert [body for _, _, body in peer.received()] == [b"x" * 40] * 2
    assert not any(d.called for d in held)


def test_transport_that_never_drains_is_closed_after_write_timeout():
    proto, peer, clock = connect(ProtocolConfig(write_timeout=5))
    d = proto.request(b"a")
    proto.pauseProducing()
    clock.advance(4.9)
    assert not peer.transport.disconnecting
    clock.advance(0.1)
    assert peer.transport.disconnecting
    proto.connectionLost(Failure(Exception("aborted")))
    (result,) = outcomes([d])
    assert result.check(ConnectionLost)
    assert result.value.written is False
    assert "write timeout" in result.value.reason


def test_heartbeat_declares_silent_peer_dead_within_interval_plus_timeout():
    proto, peer, clock = connect(
        ProtocolConfig(heartbeat_interval=10, heartbeat_timeout=3)
    )
    d = proto.request(b"a")
    clock.advance(0)
    peer.received()
    clock.advance(10)
    assert peer.received() == [(PING, 0, b"")]
    clock.advance(2.9)
    assert not peer.transport.disconnecting
    clock.advance(0.1)
    assert peer.transport.disconnecting
    proto.connectionLost(Failure(Exception("aborted")))
    assert outcomes([d])[0].check(ConnectionLost)
    assert "heartbeat" in proto.close_reason


def test_heartbeat_answered_keeps_connection_and_pings_again():
    proto, peer, clock = connect(
        ProtocolConfig(heartbeat_interval=10, heartbeat_timeout=3)
    )
    for _ in range(5):
        clock.advance(10)
        assert peer.received() == [(PING, 0, b"")]
        clock.advance(1)
        peer.send(PONG, 0)
    assert not peer.transport.disconnecting


def test_server_ping_is_answered_with_pong():
    proto, peer, clock = connect()
    peer.send(PING, 0, b"token")
    assert peer.received() == [(PONG, 0, b"token")]


def test_read_timeout_closes_when_outstanding_requests_get_no_bytes():
    proto, peer, clock = connect(ProtocolConfig(read_timeout=5))
    clock.advance(100)  # idle is fine: nothing outstanding
    assert not peer.transport.disconnecting
    d = proto.request(b"a")
    clock.advance(0)
    clock.advance(4)
    assert not peer.transport.disconnecting
    clock.advance(6)
    assert peer.transport.disconnecting
    proto.connectionLost(Failure(Exception("aborted")))
    assert outcomes([d])[0].check(ConnectionLost)
    assert "read timeout" in proto.close_reason


def test_goaway_finishes_in_flight_refuses_new_and_closes():
    proto, peer, clock = connect()
    told = []
    proto.when_goaway().addCallback(lambda _: told.append(proto))
    d1 = proto.request(b"in flight")
    clock.advance(0)
    ((_, rid, _),) = peer.received()
    queued = proto.request(b"not yet written")
    peer.send(GOAWAY, 0)
    assert told == [proto]
    (q,) = outcomes([queued])
    assert q.check(ConnectionLost) and q.value.written is False
    refused = proto.request(b"new")
    assert outcomes([refused])[0].check(ConnectionLost)
    assert not peer.transport.disconnecting
    peer.send(REPLY, rid, b"finished")
    assert outcomes([d1]) == [b"finished"]
    assert peer.transport.disconnecting
    clock.advance(0)
    assert peer.received() == [], "the queued request was never sent"


def test_close_with_drain_waits_for_outstanding_then_disconnects():
    proto, peer, clock = connect()
    d = proto.request(b"a")
    clock.advance(0)
    ((_, rid, _),) = peer.received()
    closed = proto.close()
    assert not peer.transport.disconnecting
    peer.send(REPLY, rid, b"done")
    assert outcomes([d]) == [b"done"]
    assert peer.transport.disconnecting
    proto.connectionLost(Failure(Exception("closed")))
    assert closed.called


def test_pipelined_codec_matches_replies_in_order():
    codec = PipelinedCodec(lambda: Delimited(b"\r\n", max_frame=1024))
    clock = Clock()
    proto = FramedProtocol(ProtocolConfig(codec=codec), clock)
    transport = StringTransport()
    proto.makeConnection(transport)
    ds = [proto.request(b"GET %d" % i) for i in range(3)]
    clock.advance(0)
    assert transport.value() == b"GET 0\r\nGET 1\r\nGET 2\r\n"
    proto.dataReceived(b"zero\r\none\r")
    proto.dataReceived(b"\ntwo\r\n")
    assert outcomes(ds) == [b"zero", b"one", b"two"]


def test_pipelined_cancelled_request_still_consumes_its_reply():
    codec = PipelinedCodec(
        lambda: Delimited(b"\n", max_frame=1024),
        is_error=lambda f: f[4:].decode() if f.startswith(b"ERR ") else None,
    )
    clock = Clock()
    proto = FramedProtocol(ProtocolConfig(codec=codec), clock)
    proto.makeConnection(StringTransport())
    d1, d2, d3 = (proto.request(b"q") for _ in range(3))
    clock.advance(0)
    d1.cancel()
    proto.dataReceived(b"for d1\nfor d2\nERR nope\n")
    assert outcomes([d2]) == [b"for d2"]
    assert outcomes([d3])[0].check(RemoteError)
    assert proto.late_replies == 1


def test_exclusive_codec_allows_one_outstanding_request():
    codec = PipelinedCodec(lambda: Delimited(b"\n", max_frame=64), exclusive=True)
    clock = Clock()
    proto = FramedProtocol(ProtocolConfig(codec=codec), clock)
    proto.makeConnection(StringTransport())
    d1 = proto.request(b"a")
    d2 = proto.request(b"b")
    assert outcomes([d2])[0].check(Overloaded)
    clock.advance(0)
    proto.dataReceived(b"A\n")
    assert outcomes([d1]) == [b"A"]
    assert proto.accepting


def test_callback_that_closes_connection_does_not_double_fire_the_rest():
    proto, peer, clock = connect()
    d1, d2 = proto.request(b"1"), proto.request(b"2")
    clock.advance(0)
    (_, r1, _), (_, r2, _) = peer.received()
    d1.addCallback(lambda _: proto.connectionLost(Failure(Exception("closed in cb"))))
    proto.dataReceived(
        FC1Codec().encode(REPLY, r1, b"one") + FC1Codec().encode(REPLY, r2, b"two")
    )
    (r,) = outcomes([d2])
    assert isinstance(r, Failure) and r.check(ConnectionLost)


def test_invalid_config_is_rejected_with_the_option_name():
    with pytest.raises(ValueError, match="max_pending"):
        ProtocolConfig(max_pending=0)
    with pytest.raises(ValueError, match="request_timeout"):
        ProtocolConfig(request_timeout=-1)
    with pytest.raises(ValueError, match="heartbeat_interval"):
        ProtocolConfig(
            codec=PipelinedCodec(lambda: Delimited(b"\n")), heartbeat_interval=1
        )


def test_factory_builds_protocols_sharing_config_and_metrics():
    factory = FramedClientFactory(FC1Codec(), request_timeout=2.0, clock=Clock())
    p1, p2 = factory.buildProtocol(None), factory.buildProtocol(None)
    assert p1.config is p2.config and p1.config.request_timeout == 2.0
    assert p1.metrics is p2.metrics is factory.metrics


def test_metrics_record_outcomes_and_latency():
    proto, peer, clock = connect()
    d1 = proto.request(b"ok")
    d2 = proto.request(b"err")
    d3 = proto.request(b"slow", timeout=1)
    clock.advance(0)
    (_, r1, _), (_, r2, _), _ = peer.received()
    clock.advance(0.25)
    peer.send(REPLY, r1, b"fine")
    peer.send(ERROR, r2, b"bad")
    clock.advance(1)
    outcomes([d1, d2, d3])
    snap = proto.metrics.snapshot()  # type: ignore[attr-defined]
    assert snap["requests"]["ok"] == 1
    assert snap["requests"]["remote_error"] == 1
    assert snap["requests"]["timeout"] == 1
    assert snap["latency"]["count"] >= 1
    assert 0.2 <= snap["latency"]["p50"] <= 0.3


def test_close_of_a_paused_connection_unregisters_the_producer_first():
    # A transport whose paused producer is still registered never closes
    # (it resumes the producer instead); closing must let go of it.
    proto, peer, clock = connect()
    assert peer.transport.producer is proto
    d = proto.request(b"in flight")
    clock.advance(0)
    ((_, rid, _),) = peer.received()
    proto.pauseProducing()
    proto.close()
    assert not peer.transport.disconnecting, "draining: the reply is awaited"
    peer.send(REPLY, rid, b"done")
    assert outcomes([d]) == [b"done"]
    assert peer.transport.producer is None
    assert peer.transport.disconnecting


def test_close_without_drain_aborts_even_if_the_peer_does_not_read():
    proto, peer, clock = connect()
    d = proto.request(b"in flight")
    clock.advance(0)
    proto.pauseProducing()
    aborted = []
    peer.transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
    proto.close(drain=False)
    assert aborted == [True]
    proto.connectionLost(Failure(Exception("aborted")))
    (result,) = outcomes([d])
    assert result.check(ConnectionLost)
    assert "without draining" in result.value.reason


def test_abandoned_ids_are_released_after_abandoned_ttl():
    proto, peer, clock = connect(ProtocolConfig(abandoned_ttl=30))
    d = proto.request(b"never answered")
    clock.advance(0)
    ((_, rid, _),) = peer.received()
    d.addErrback(lambda f: f.trap(CancelledError))
    d.cancel()
    assert proto.table_size == 1
    clock.advance(29.9)
    assert proto.table_size == 1
    clock.advance(0.1)
    assert proto.table_size == 0
    peer.send(REPLY, rid, b"much too late")
    assert proto.unknown_replies == 1
    assert clock.getDelayedCalls() == []


def test_body_too_large_for_the_codec_fails_alone_and_sends_nothing():
    proto, peer, clock = connect(ProtocolConfig(codec=FC1Codec(max_frame=100)))
    too_big = proto.request(b"x" * 88)
    fits = proto.request(b"x" * 87)
    (result,) = outcomes([too_big])
    # The caller's mistake, not the peer's: not a ProtocolError.
    assert result.check(RequestTooLarge) and not result.check(ProtocolError)
    clock.advance(0)
    assert [len(body) for _, _, body in peer.received()] == [87]
    assert not fits.called and proto.pending == 1


def test_factory_builds_its_protocol_attribute():
    class Custom(FramedProtocol):
        pass

    class CustomFactory(FramedClientFactory):
        protocol = Custom

    assert type(CustomFactory(clock=Clock()).buildProtocol(None)) is Custom


def test_reference_server_answers_cancel_so_the_id_is_released_at_once():
    clock = Clock()
    server_factory = ReferenceServerFactory(clock=clock)
    server = server_factory.buildProtocol(None)
    client = FramedProtocol(ProtocolConfig(), clock)
    pump = iosim_connect(server, makeFakeServer(server), client, makeFakeClient(client))
    held = client.request(b"!hold")
    delayed = client.request(b"!delay:10 x")
    clock.advance(0)
    pump.flush()
    for d in (held, delayed):
        d.addErrback(lambda f: f.trap(CancelledError))
        d.cancel()
    clock.advance(0)
    pump.flush()
    assert server_factory.cancels == 2
    assert client.table_size == 0
    assert client.late_replies == 2


def test_bytes_in_and_out_are_counted_in_the_metrics():
    proto, peer, clock = connect()
    d = proto.request(b"12345")
    clock.advance(0)
    ((_, rid, _),) = peer.received()
    peer.send(REPLY, rid, b"abc")
    outcomes([d])
    snap = proto.metrics.snapshot()  # type: ignore[attr-defined]
    assert snap["bytes"] == {"received": 13 + 3, "sent": 13 + 5}


def test_cancelling_a_request_from_another_ones_connection_lost_errback_leaves_nothing():
    proto, peer, clock = connect(ProtocolConfig(abandoned_ttl=60.0))
    d1 = proto.request(b"one")
    d2 = proto.request(b"two")
    clock.advance(0)
    first: list[Failure] = []

    def cancel_the_other(failure: Failure) -> None:
        first.append(failure)
        d2.cancel()

    d1.addErrback(cancel_the_other)
    proto.connectionLost(Failure(Exception("gone")))
    (f2,) = outcomes([d2])
    assert first[0].check(ConnectionLost) and f2.check(CancelledError)
    assert proto.table_size == 0
    assert proto.debug_state()["table_entries"] == 0
    assert clock.getDelayedCalls() == [], "nothing scheduled on a dead connection"


class _ParsedFrames:
    """
    A framer that hands the codec parsed objects, not bytes (as the RESP
    framer does with replies it has parsed already).
    """

    def feed(self, data: bytes) -> list[object]:
        return [["parsed", data]]


class _ParsedCodec(FC1Codec):
    matching = Matching.IN_ORDER

    def new_framer(self) -> _ParsedFrames:  # type: ignore[override]
        return _ParsedFrames()

    def decode(self, frame: object) -> tuple[int, int, object]:  # type: ignore[override]
        return REPLY, 0, frame


def test_frames_a_framer_gives_as_parsed_objects_reach_the_codec_as_they_are():
    # In compiled mode the data path is a native class: it must not take a
    # frame for bytes (a RESP reply is a parsed list by then).
    clock = Clock()
    proto = FramedProtocol(ProtocolConfig(codec=_ParsedCodec()), clock=clock)
    proto.makeConnection(StringTransport())
    d = proto.request(b"x")
    clock.advance(0)  # written
    proto.dataReceived(b"reply")
    assert outcomes([d]) == [["parsed", b"reply"]]
