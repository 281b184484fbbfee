"""
Feed.consume(callback): items go straight to a ready callback, a callback's
Deferred holds the next ones back (with the buffer's flow control), an
error stops it, and it ends as async for does.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock

from framedclient.codecs import PART, REPLY

from .test_streams import CODEC, connected, open_stream


def feed(proto: Any, rid: int, *parts: bytes, end: bool = False) -> None:
    data = b"".join(CODEC.encode(PART, rid, p) for p in parts)
    if end:
        data += CODEC.encode(REPLY, rid, b"")
    proto.dataReceived(data)


def test_a_ready_callback_gets_each_part_as_it_arrives_nothing_buffered() -> None:
    clock = Clock()
    proto, _ = connected(clock)
    stream = open_stream(proto, clock)
    got: list[bytes] = []

    def on_part(part: bytes) -> None:
        # Nothing waits in the buffer while the callback runs.
        assert stream.buffered == 0
        got.append(part)

    done = stream.consume(on_part)
    feed(proto, stream.request_id, b"1", b"2", b"3")
    assert got == [b"1", b"2", b"3"] and not done.called
    feed(proto, stream.request_id, b"4", end=True)
    assert got == [b"1", b"2", b"3", b"4"]
    assert done.called and done.result is None


def test_a_callbacks_deferred_holds_the_next_parts_with_flow_control() -> None:
    clock = Clock()
    proto, transport = connected(clock)
    stream = open_stream(proto, clock, buffer_bytes=300)
    got: list[bytes] = []
    pending: list[Deferred[None]] = []

    def on_part(part: bytes) -> Deferred[None]:
        got.append(part)
        d: Deferred[None] = Deferred()
        pending.append(d)
        return d

    done = stream.consume(on_part)
    feed(proto, stream.request_id, *[b"%03d" % i + b"x" * 97 for i in range(4)])
    # The first went to the callback; the rest wait, and the buffer's limit
    # stopped reading.
    assert len(got) == 1 and stream.buffered == 3 and not transport.reading
    feed_end = CODEC.encode(REPLY, stream.request_id, b"")
    while pending:
        pending.pop().callback(None)
        if len(got) == 4:
            proto.dataReceived(feed_end)
    assert [p[:3] for p in got] == [b"000", b"001", b"002", b"003"]
    assert transport.reading and stream.buffered == 0
    assert done.called and done.result is None


def test_already_fired_deferreds_do_not_nest_calls() -> None:
    clock = Clock()
    proto, _ = connected(clock)
    stream = open_stream(proto, clock, buffer_bytes=10**9)
    # Parts buffered before the consumer comes, then handed over in a loop.
    feed(proto, stream.request_id, *[b"p"] * 5000)
    got: list[bytes] = []
    done = stream.consume(lambda p: succeed(got.append(p)))
    assert len(got) == 5000 and not done.called


def test_an_error_in_the_callback_stops_it_and_fails_its_deferred() -> None:
    clock = Clock()
    proto, _ = connected(clock)
    stream = open_stream(proto, clock)
    got: list[bytes] = []

    def on_part(part: bytes) -> None:
        if part == b"bad":
            raise ValueError("cannot take it")
        got.append(part)

    done = stream.consume(on_part)
    feed(proto, stream.request_id, b"1", b"bad", b"3")
    errors: list[Any] = []
    done.addErrback(errors.append)
    assert got == [b"1"] and errors[0].check(ValueError)
    # What came after stays in the stream for another reader.
    assert stream.next().result == b"3"


def test_one_consumer_at_a_time_and_cancel_ends_consuming() -> None:
    clock = Clock()
    proto, _ = connected(clock)
    stream = open_stream(proto, clock)
    done = stream.consume(lambda p: None)
    errors: list[Any] = []
    stream.next().addErrback(errors.append)
    stream.consume(lambda p: None).addErrback(errors.append)
    assert [e.check(RuntimeError) for e in errors] == [RuntimeError, RuntimeError]
    stream.cancel()
    with pytest.raises(CancelledError):
        done.result.raiseException()
    done.addErrback(lambda _: None)
