"""
Streams and pushes over an in-memory transport: the fc1 kinds, the codec
contract, order and exactly-once, cancel, idle timeout, flow control.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError, ensureDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from framedclient.codecs import CANCEL, ERROR, PART, PUSH, REPLY, FC1Codec, Push
from framedclient.codecs.fc1 import encode_push
from framedclient.errors import (
    ConnectionLost,
    CorruptFrame,
    RemoteError,
    RequestTimeout,
)
from framedclient.protocol import FramedProtocol, ProtocolConfig
from framedclient.streams import END, Stream

CODEC = FC1Codec()


class Pausable(StringTransport):
    """A transport that records whether reading is paused."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = True

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True


def connected(clock: Clock) -> tuple[FramedProtocol, Pausable]:
    proto = FramedProtocol(ProtocolConfig(codec=CODEC), clock=clock)
    transport = Pausable()
    proto.makeConnection(transport)
    return proto, transport


def sent_frames(transport: StringTransport) -> list[tuple[int, int, Any]]:
    framer = CODEC.new_framer()
    frames = framer.feed(transport.value())
    transport.clear()
    return [CODEC.decode(f) for f in frames]


def open_stream(
    proto: FramedProtocol,
    clock: Clock,
    body: bytes = b"!stream",
    idle_timeout: float | None = None,
    buffer_bytes: int = 1024,
) -> Stream:
    stream = Stream(clock, idle_timeout, buffer_bytes)
    stream._attach(proto, body)
    clock.advance(0)  # flush
    return stream


def drain(stream: Stream) -> list[Any]:
    items = []
    while True:
        d = stream.next()
        assert d.called
        item = d.result
        if item is END:
            return items
        items.append(item)


# -- the codec contract -------------------------------------------------------


def test_fc1_part_and_push_frames_decode_as_their_kinds() -> None:
    assert CODEC.decode(CODEC.encode(PART, 7, b"p")[4:]) == (PART, 7, b"p")
    frame = encode_push(CODEC, b"news", b"hello")
    kind, rid, body = CODEC.decode(frame[4:])
    assert (kind, rid, CODEC.split_push(body)) == (PUSH, 0, Push(b"news", b"hello"))
    # An empty topic and empty payload are valid; a truncated topic is not.
    assert CODEC.split_push(b"\x00\x00") == Push(b"", b"")
    with pytest.raises(CorruptFrame, match="topic"):
        CODEC.split_push(b"\x00\x05ab")
    with pytest.raises(ValueError, match="65535"):
        encode_push(CODEC, b"t" * 70000, b"")


def test_a_part_for_a_plain_request_is_dropped_and_the_request_still_answered() -> None:
    # Old callers never asked for parts: a PART for their request is not
    # theirs, and the request still gets its final reply.
    clock = Clock()
    proto, transport = connected(clock)
    d = proto.request(b"plain")
    clock.advance(0)
    ((_, rid, _),) = sent_frames(transport)
    proto.dataReceived(CODEC.encode(PART, rid, b"stray"))
    assert not d.called
    assert proto.unknown_replies == 1
    proto.dataReceived(CODEC.encode(REPLY, rid, b"answer"))
    assert d.result == b"answer"


def test_a_corrupt_push_closes_only_that_connection() -> None:
    clock = Clock()
    proto, transport = connected(clock)
    proto.on_push = list().append
    proto.dataReceived(CODEC.encode(PUSH, 0, b"\x00\x09ab"))
    assert transport.disconnecting and "topic" in (proto.close_reason or "")


def test_push_without_subscriber_is_counted_not_fatal() -> None:
    clock = Clock()
    proto, _ = connected(clock)
    proto.dataReceived(encode_push(CODEC, b"t", b"x"))
    assert not proto.is_closed and proto.unknown_replies == 1
    seen: list[Push] = []
    proto.on_push = seen.append
    proto.dataReceived(encode_push(CODEC, b"t", b"y"))
    assert seen == [Push(b"t", b"y")]


# -- streams ------------------------------------------------------------------


def test_parts_of_many_interleaved_streams_arrive_in_order_exactly_once() -> None:
    clock = Clock()
    proto, transport = connected(clock)
    streams = [open_stream(proto, clock, buffer_bytes=10**9) for _ in range(50)]
    ids = [s.request_id for s in streams]
    assert len(set(ids)) == 50
    sent_frames(transport)
    chunks = []
    for part in range(20):
        for i, rid in enumerate(ids):
            chunks.append(CODEC.encode(PART, rid, b"%d:%d" % (i, part)))
    for rid in ids:
        chunks.append(CODEC.encode(REPLY, rid, b""))
    data = b"".join(chunks)
    # Fed in odd-sized pieces: frames cut across reads.
    for at in range(0, len(data), 997):
        proto.dataReceived(data[at : at + 997])
    for i, stream in enumerate(streams):
        assert drain(stream) == [b"%d:%d" % (i, p) for p in range(20)]
        assert stream.finished
    assert proto.engine.live == 0 and proto.engine.entries == 0


def test_final_reply_body_is_the_last_part_and_end_differs_from_error() -> None:
    clock = Clock()
    proto, _ = connected(clock)
    ok = open_stream(proto, clock)
    bad = open_stream(proto, clock)
    proto.dataReceived(
        CODEC.encode(PART, ok.request_id, b"a")  # type: ignore[arg-type]
        + CODEC.encode(REPLY, ok.request_id, b"z")  # type: ignore[arg-type]
        + CODEC.encode(PART, bad.request_id, b"b")  # type: ignore[arg-type]
        + CODEC.encode(ERROR, bad.request_id, b"boom")  # type: ignore[arg-type]
    )
    assert drain(ok) == [b"a", b"z"]
    assert ok.next().result is END  # the end stays the end
    assert bad.next().result == b"b"  # parts before the error still come
    failure = bad.next()
    with pytest.raises(RemoteError, match="boom"):
        failure.result.raiseException()
    failure.addErrback(lambda _: None)


def test_async_for_and_callbacks_both_consume_a_stream() -> None:
    clock = Clock()
    proto, _ = connected(clock)
    first = open_stream(proto, clock)
    second = open_stream(proto, clock)
    got: list[bytes] = []

    async def read() -> list[bytes]:
        return [part async for part in first]

    d = ensureDeferred(read())
    done = second.consume(got.append)
    for s in (first, second):
        rid: int = s.request_id  # type: ignore[assignment]
        proto.dataReceived(
            CODEC.encode(PART, rid, b"1") + CODEC.encode(PART, rid, b"2")
        )
        proto.dataReceived(CODEC.encode(REPLY, rid, b""))
    assert d.result == [b"1", b"2"]
    assert got == [b"1", b"2"] and done.called and done.result is None


def test_async_for_ends_at_the_end_and_raises_the_error_whether_waiting_or_not() -> (
    None
):
    clock = Clock()
    proto, _ = connected(clock)
    waiting, finished_first, failing = (open_stream(proto, clock) for _ in range(3))

    async def read(stream: Stream) -> list[bytes]:
        return [part async for part in stream]

    # The loop waits when the end comes; or the end came before the loop.
    d = ensureDeferred(read(waiting))
    for s in (waiting, finished_first):
        rid: int = s.request_id  # type: ignore[assignment]
        proto.dataReceived(
            CODEC.encode(PART, rid, b"p") + CODEC.encode(REPLY, rid, b"")
        )
    assert d.result == [b"p"]
    assert ensureDeferred(read(finished_first)).result == [b"p"]
    # An error reply is raised by the loop, after the parts before it.
    got: list[bytes] = []

    async def read_all() -> None:
        async for part in failing:
            got.append(part)

    failed = ensureDeferred(read_all())
    rid = failing.request_id  # type: ignore[assignment]
    proto.dataReceived(CODEC.encode(PART, rid, b"a") + CODEC.encode(ERROR, rid, b"no"))
    assert got == [b"a"]
    with pytest.raises(RemoteError, match="no"):
        failed.result.raiseException()
    failed.addErrback(lambda _: None)


def test_cancel_midway_leaves_no_held_id_timer_or_part() -> None:
    clock = Clock()
    proto, transport = connected(clock)
    stream = open_stream(proto, clock, idle_timeout=5.0, buffer_bytes=4)
    rid: int = stream.request_id  # type: ignore[assignment]
    sent_frames(transport)
    proto.dataReceived(CODEC.encode(PART, rid, b"1234") + CODEC.encode(PART, rid, b"5"))
    assert stream.buffered == 2 and not transport.reading  # the buffer is full
    waiting = []
    stream.cancel()
    stream.next().addErrback(lambda f: waiting.append(f.check(CancelledError)))
    assert waiting == [CancelledError]
    assert stream.buffered == 0 and stream.buffered_bytes == 0
    assert transport.reading  # its hold went with it
    assert not stream.timer_active
    clock.advance(0)
    assert [(k, i) for k, i, _ in sent_frames(transport)] == [(CANCEL, rid)]
    # Parts still in flight are dropped; the server's answer to the cancel
    # frees the ID (held until then, so a late part cannot reach another).
    proto.dataReceived(CODEC.encode(PART, rid, b"late"))
    assert stream.buffered == 0 and proto.table_size == 1
    proto.dataReceived(CODEC.encode(ERROR, rid, b"cancelled"))
    assert proto.table_size == 0 and proto.engine.entries == 0
    # The answered cancel leaves no wake-up behind (abandoned_ttl is moot).
    assert clock.getDelayedCalls() == []
    clock.advance(60.0)
    assert clock.getDelayedCalls() == []


def test_a_cancelled_stream_leaves_no_timer_once_the_server_answers_the_cancel() -> (
    None
):
    # The ID of a cancelled stream is held until the server answers the
    # CANCEL (or abandoned_ttl passes); once it is answered nothing of the
    # stream may stay scheduled: no idle timer, and no wake-up for the
    # abandoned_ttl of an ID already released.
    clock = Clock()
    proto, transport = connected(clock)
    streams = [open_stream(proto, clock, idle_timeout=5.0) for _ in range(3)]
    for stream in streams:
        proto.dataReceived(CODEC.encode(PART, stream.request_id, b"1"))  # type: ignore[arg-type]
        stream.cancel()
    clock.advance(0)
    sent_frames(transport)
    for stream in streams:
        proto.dataReceived(CODEC.encode(ERROR, stream.request_id, b"cancelled"))  # type: ignore[arg-type]
        assert not stream.timer_active
    assert proto.table_size == 0 and proto.debug_state()["tombstones"] == 0
    assert clock.getDelayedCalls() == []
    # The timer is armed again for what comes next: a request's timeout
    # still fires, and a new cancel's ID is still released at abandoned_ttl.
    d = proto.request(b"slow", timeout=2.0)
    errors: list[Any] = []
    d.addErrback(errors.append)
    clock.advance(2.0)
    assert errors and errors[0].check(RequestTimeout)
    late = open_stream(proto, clock)
    late.cancel()
    assert proto.table_size == 2  # both IDs held until answered or expired
    clock.advance(60.0)
    assert proto.table_size == 0 and clock.getDelayedCalls() == []


def test_idle_timeout_counts_only_while_the_consumer_waits() -> None:
    clock = Clock()
    proto, transport = connected(clock)
    stream = open_stream(proto, clock, idle_timeout=2.0)
    rid: int = stream.request_id  # type: ignore[assignment]
    clock.advance(1.5)
    proto.dataReceived(CODEC.encode(PART, rid, b"a"))
    clock.advance(1.5)  # 3 s since the request, 1.5 since the part
    assert not stream.finished
    # A consumer that does not read is not the server's fault.
    clock.advance(10.0)
    assert not stream.finished
    assert stream.next().result == b"a"  # buffer empty: the clock starts
    errors: list[Any] = []
    stream.next().addErrback(errors.append)
    clock.advance(2.0)
    assert errors and errors[0].check(RequestTimeout)
    assert "idle_timeout" in str(errors[0].value)
    clock.advance(0)
    assert (CANCEL, rid) in [(k, i) for k, i, _ in sent_frames(transport)]
    proto.dataReceived(CODEC.encode(ERROR, rid, b"cancelled"))
    assert proto.table_size == 0
    clock.advance(60.0)
    assert clock.getDelayedCalls() == []


def test_a_consumer_that_never_reads_holds_reading_at_the_limit() -> None:
    clock = Clock()
    proto, transport = connected(clock)
    stream = open_stream(proto, clock, buffer_bytes=1000)
    rid: int = stream.request_id  # type: ignore[assignment]
    part = CODEC.encode(PART, rid, b"x" * 100)
    fed = 0
    while transport.reading and fed < 10_000:
        proto.dataReceived(part)
        fed += 1
    # Reading stopped as soon as the buffer reached its limit: what is
    # buffered is bounded by buffer_bytes, whatever the server sends.
    assert not transport.reading and fed == 10
    assert stream.buffered_bytes == 1000 and proto.reading_held
    # Reading resumes once the consumer has taken half of it.
    for _ in range(4):
        stream.next()
    assert not transport.reading
    stream.next()
    assert transport.reading and not proto.reading_held


def test_holding_reading_pauses_liveness_so_a_lagging_consumer_is_not_a_dead_peer() -> (
    None
):
    clock = Clock()
    proto = FramedProtocol(ProtocolConfig(codec=CODEC, read_timeout=1.0), clock=clock)
    transport = Pausable()
    proto.makeConnection(transport)
    stream = open_stream(proto, clock, buffer_bytes=1)
    rid: int = stream.request_id  # type: ignore[assignment]
    proto.dataReceived(CODEC.encode(PART, rid, b"x"))
    assert proto.reading_held
    clock.advance(30.0)
    assert not transport.disconnecting and proto.close_reason is None
    stream.next()
    assert not proto.reading_held
    clock.advance(1.5)  # reading again: the read timeout applies again
    assert "read timeout" in (proto.close_reason or "")


def test_a_lost_connection_fails_the_stream_after_its_parts() -> None:
    clock = Clock()
    proto, transport = connected(clock)
    stream = open_stream(proto, clock)
    rid: int = stream.request_id  # type: ignore[assignment]
    proto.dataReceived(CODEC.encode(PART, rid, b"a"))
    proto.connectionLost()
    assert stream.next().result == b"a"
    d = stream.next()
    assert d.called
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures[0].check(ConnectionLost)
    assert proto.engine.entries == 0


def test_bad_stream_arguments_raise_at_the_call() -> None:
    from framedclient.streams import open_stream as client_open

    with pytest.raises(TypeError, match="body"):
        client_open(None, Clock(), None, "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="idle_timeout"):
        client_open(None, Clock(), None, b"x", idle_timeout=-1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="buffer_bytes"):
        client_open(None, Clock(), None, b"x", buffer_bytes=1.5)  # type: ignore[arg-type]
