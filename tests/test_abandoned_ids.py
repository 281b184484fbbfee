"""
The ID of an abandoned request stays reserved for its late reply.

A request that was written and then timed out or was cancelled may still be
answered by the server.  Until that late reply arrives (or ``abandoned_ttl``
passes), no new request on the connection may get the same ID: with a small
ID space (a 1-byte ID field wraps after 255 requests) the late reply would
otherwise be delivered to the new request as if it were its answer.

Everything here goes through public API only: requests and Deferreds on a
:class:`~framedclient.protocol.FramedProtocol` built by
:class:`~framedclient.protocol.FramedClientFactory`, an in-memory
``StringTransport`` whose bytes are parsed to learn the IDs sent, and a
``Clock``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from framedclient.codecs import CANCEL, REPLY, REQUEST, FC1Codec, HeaderCodec, Kind
from framedclient.errors import Overloaded, RequestTimeout
from framedclient.framing import LengthPrefixed
from framedclient.protocol import FramedClientFactory, FramedProtocol


def one_byte_id_codec() -> HeaderCodec:
    """
    A header codec with a 1-byte ID field: IDs 1..255, then wrap around.
    """
    return HeaderCodec(
        lambda: LengthPrefixed(length_size=2, max_frame=1024),
        header_size=2,
        id_size=1,
        kind_offset=1,
        kinds={0: Kind.REQUEST, 1: Kind.REPLY, 2: Kind.ERROR, 5: Kind.CANCEL},
    )


def tiny_id_codec(max_id: int = 7) -> FC1Codec:
    """
    fc1 framing with an ID space of only ``max_id`` IDs, so wrap-around
    comes fast.
    """
    tiny = type("TinyIdCodec", (FC1Codec,), {"__slots__": (), "max_id": max_id})
    codec: FC1Codec = tiny()
    return codec


CODECS = {
    "one-byte-id": one_byte_id_codec,
    "seven-ids": tiny_id_codec,
}


class Server:
    """
    The far side of a StringTransport: parses what the client wrote and
    answers with frames encoded by the same codec.
    """

    def __init__(self, codec: Any, **config: Any) -> None:
        self.codec = codec
        self.clock = Clock()
        # The most ProtocolConfig allows: one below the ID space.
        config.setdefault("max_pending", codec.max_id - 1)
        # IDs stay reserved until their late reply, however long the test
        # takes, unless the test is about abandoned_ttl.
        config.setdefault("abandoned_ttl", None)
        factory = FramedClientFactory(codec, clock=self.clock, **config)
        self.proto: FramedProtocol = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self._framer = codec.new_framer()

    def received(self) -> list[tuple[int, int, bytes]]:
        """
        Run this reactor turn (the client writes at its end), then return
        the messages written since the last call: (kind, id, body).
        """
        self.clock.advance(0)
        data = self.transport.value()
        self.transport.clear()
        return [self.codec.decode(f) for f in self._framer.feed(data)]

    def sent_request(self) -> int:
        """
        The ID of the one request written since the last look (cancel frames
        for abandoned requests aside).
        """
        ((kind, request_id, _),) = [m for m in self.received() if m[0] != CANCEL]
        assert kind == REQUEST
        return request_id

    def reply(self, request_id: int, body: bytes) -> None:
        self.proto.dataReceived(self.codec.encode(REPLY, request_id, body))


def fired(d: Deferred[Any]) -> list[Any]:
    """
    What ``d`` fired with so far ([] if it has not fired).
    """
    box: list[Any] = []
    d.addBoth(lambda r: (box.append(r), r)[1])
    # Keep a failure from being reported as unhandled: the test inspects it.
    d.addErrback(lambda f: None)
    return box


def abandon(server: Server, how: str) -> tuple[int, Failure]:
    """
    Write one request, then abandon it by timeout or cancel.

    :return: its ID and the failure its Deferred fired with.
    """
    d = server.proto.request(b"old request", timeout=1.0)
    request_id = server.sent_request()
    result = fired(d)
    if how == "timeout":
        server.clock.advance(1.0)
    else:
        d.cancel()
    (failure,) = result
    assert isinstance(failure, Failure)
    return request_id, failure


def cycle_ids(server: Server, rounds: int) -> list[int]:
    """
    Send and answer ``rounds`` requests one after the other, so the
    allocator walks the whole ID space; each gets its own reply.

    :return: the IDs they were sent with.
    """
    seen = []
    for i in range(rounds):
        body = b"cycle %d" % i
        d = server.proto.request(body)
        result = fired(d)
        request_id = server.sent_request()
        seen.append(request_id)
        server.reply(request_id, body)
        assert result == [body]
    return seen


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_the_id_of_an_abandoned_request_is_not_reused_while_reserved(codec, how):
    server = Server(codec())
    old_id, _ = abandon(server, how)
    seen = cycle_ids(server, 3 * server.codec.max_id)
    assert old_id not in seen
    assert len(set(seen)) == server.codec.max_id - 1, "every other ID was used"


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_a_late_reply_to_an_abandoned_id_is_dropped_and_counted(codec, how):
    server = Server(codec())
    old_id, failure = abandon(server, how)
    assert failure.check(RequestTimeout if how == "timeout" else CancelledError)
    cycle_ids(server, 2 * server.codec.max_id)
    # Fill the connection with new requests: whichever got the old ID would
    # receive the late reply.
    waiting = []
    while server.proto.accepting:
        d = server.proto.request(b"new")
        waiting.append(fired(d))
    assert len(waiting) == server.codec.max_id - 2
    server.received()
    server.reply(old_id, b"late reply to the old request")
    assert waiting == [[]] * len(waiting), "no new request got the late reply"
    assert server.proto.late_replies == 1
    assert server.proto.unknown_replies == 0


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
def test_an_abandoned_id_is_released_after_abandoned_ttl(codec):
    server = Server(codec(), abandoned_ttl=30.0)
    old_id, _ = abandon(server, "timeout")
    server.clock.advance(29.9)
    assert old_id not in cycle_ids(server, server.codec.max_id)
    assert server.proto.table_size == 1
    server.clock.advance(0.1)
    assert server.proto.table_size == 0
    assert old_id in cycle_ids(server, server.codec.max_id)


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
def test_an_id_space_full_of_abandoned_ids_refuses_new_requests_with_overloaded(
    codec,
):
    server = Server(codec())
    reserved = set()
    for _ in range(server.codec.max_id - 1):
        reserved.add(abandon(server, "timeout")[0])
    assert len(reserved) == server.codec.max_id - 1
    (result,) = fired(server.proto.request(b"one too many"))
    assert isinstance(result, Failure) and result.check(Overloaded)
    assert "abandoned" in str(result.value)
    assert server.received() == [], "nothing was sent"


@pytest.mark.parametrize("codec", CODECS.values(), ids=CODECS.keys())
def test_a_late_reply_makes_room_for_a_new_request_on_a_free_id(codec):
    server = Server(codec())
    reserved = [abandon(server, "timeout")[0] for _ in range(server.codec.max_id - 1)]
    freed = reserved.pop(3)
    server.reply(freed, b"late")
    d = server.proto.request(b"fits again")
    result = fired(d)
    new_id = server.sent_request()
    assert new_id not in reserved
    server.reply(new_id, b"its own reply")
    assert result == [b"its own reply"]


# -- fuzzing: a model server and random interleavings ---------------------------

#: What may happen next.  "burst" is ordinary traffic: requests answered at
#: once, which walks the allocator around a tiny ID space.
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("request"), st.sampled_from([1.0, 2.5, None])),
        st.tuples(st.just("burst"), st.integers(1, 8)),
        st.tuples(st.just("cancel"), st.integers(0, 7)),
        st.tuples(st.just("reply"), st.sampled_from(["oldest", "newest", 1, 2])),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 3.0])),
    ),
    max_size=60,
)


class ModelServer(Server):
    """
    Answers what it received, whenever the test says, and checks on the wire
    that the client never sends a request with an ID it is still waiting to
    answer (unless the old one's ``abandoned_ttl`` may have passed).
    """

    def __init__(self, max_id: int, ttl: float | None) -> None:
        super().__init__(tiny_id_codec(max_id), abandoned_ttl=ttl)
        self.ttl = ttl
        #: (id, body, when received), in the order received.
        self.unanswered: list[tuple[int, bytes, float]] = []
        self.replies_sent = 0

    def receive(self) -> None:
        now = self.clock.seconds()
        for kind, request_id, body in self.received():
            if kind != REQUEST:
                continue
            for old_id, old_body, when in self.unanswered:
                assert old_id != request_id or (
                    self.ttl is not None and now - when >= self.ttl
                ), (
                    f"{body!r} was sent with ID {request_id}, still reserved "
                    f"for {old_body!r} (sent {now - when:g} s ago, "
                    f"abandoned_ttl={self.ttl})"
                )
            # abandoned_ttl is a promise about the server: it never answers
            # that late.  A server that still did would be answering the new
            # request as far as anyone can tell, so this one forgets the old
            # request once its ID is reused.
            self.unanswered = [u for u in self.unanswered if u[0] != request_id]
            self.unanswered.append((request_id, body, now))

    def answer(self, which: str | int) -> None:
        if not self.unanswered:
            return
        if which == "oldest":
            index = 0
        elif which == "newest":
            index = -1
        else:
            index = int(which) % len(self.unanswered)
        request_id, body, _ = self.unanswered.pop(index)
        self.reply(request_id, b"reply to " + body)
        self.replies_sent += 1


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(ops=OPS, ttl=st.sampled_from([None, 4.0]), max_id=st.sampled_from([3, 7]))
# An ID released by abandoned_ttl and reused: the old request's reply is
# no longer expected (found by this test's fuzzing).
@example(
    ops=[
        ("request", 1.0),
        ("request", 1.0),
        ("request", 1.0),
        ("cancel", 2),
        ("burst", 1),
        ("advance", 1.0),
        ("advance", 3.0),
        ("request", 1.0),
        ("request", 1.0),
        ("reply", "oldest"),
    ],
    ttl=4.0,
    max_id=3,
)
def test_no_request_ever_receives_another_requests_reply(ops, ttl, max_id):
    """
    Requests, bursts of answered requests, cancels, timeouts and (late)
    replies in any order, over an ID space of a few IDs: no ID still
    reserved is sent again; each request fires at most once, and only with
    the reply to itself; every reply the server sends is delivered, or
    counted as late or unknown, exactly once.
    """
    server = ModelServer(max_id, ttl)
    proto = server.proto
    requests: list[tuple[bytes, Deferred[bytes], list[Any]]] = []

    def request(body: bytes, timeout: float | None) -> None:
        d = proto.request(body, timeout=timeout)
        requests.append((body, d, fired(d)))

    for number, (op, arg) in enumerate(ops):
        if op == "request":
            request(b"request %d" % number, arg)
        elif op == "burst":
            for i in range(arg):
                request(b"burst %d.%d" % (number, i), None)
                server.receive()
                server.answer("newest")
        elif op == "cancel" and requests:
            # Before or after it was written, answered or not: all allowed.
            requests[-1 - arg % len(requests)][1].cancel()
        elif op == "reply":
            server.answer(arg)
        elif op == "advance":
            server.clock.advance(arg)
        server.receive()

    delivered = 0
    for body, _, result in requests:
        assert len(result) <= 1
        if result and not isinstance(result[0], Failure):
            assert result[0] == b"reply to " + body, (
                f"{body!r} received another request's reply {result[0]!r}"
            )
            delivered += 1
    assert delivered + proto.late_replies + proto.unknown_replies == (
        server.replies_sent
    ), "every reply is delivered or counted once"
