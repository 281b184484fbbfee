"""
RequestBatch: N requests as one unit (one Deferred, one slot, one result
list in the caller's order), over in-memory transports with a
deterministic clock, then against the reference server on loopback.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure

from framedclient.batch import RequestBatch
from framedclient.client import FramedClient
from framedclient.codecs import (
    CANCEL,
    ERROR,
    REPLY,
    REQUEST,
    FC1Codec,
    Matching,
    PipelinedCodec,
)
from framedclient.errors import (
    ConnectionLost,
    InvalidRequest,
    Overloaded,
    RemoteError,
    RequestTimeout,
)
from framedclient.framing import Delimited
from framedclient.protocol import PendingRequest, ProtocolConfig
from framedclient.server import ReferenceServerFactory, listen
from framedclient.testing.memory import memory_client

from .wire import connect, outcomes


def batch(n: int, prefix: bytes = b"q") -> RequestBatch:
    return RequestBatch([prefix + b"%d" % i for i in range(n)])


def test_a_unit_sends_each_body_with_its_own_id_and_fires_once_in_order():
    proto, peer, clock = connect()
    d = proto.request(batch(4))
    assert isinstance(d, PendingRequest)  # one Deferred for the four
    clock.advance(0)
    sent = peer.received()
    assert [body for _, _, body in sent] == [b"q0", b"q1", b"q2", b"q3"]
    assert len({rid for _, rid, _ in sent}) == 4
    assert proto.pending == 4, "each ID is an entry of the table"
    # Answered in reverse: each reply lands in its body's slot.
    for kind, rid, body in reversed(sent):
        assert kind == REQUEST
        assert not d.called
        peer.send(REPLY, rid, b"re:" + body)
    assert outcomes([d]) == [[b"re:q0", b"re:q1", b"re:q2", b"re:q3"]]
    assert proto.pending == 0 and proto.engine.entries == 0
    assert proto.ok_count == 1, "a unit is one request in the counts"


def test_an_error_reply_fills_its_slot_and_the_others_still_arrive():
    proto, peer, clock = connect()
    d = proto.request(batch(3))
    clock.advance(0)
    (_, a, _), (_, b, _), (_, c, _) = peer.received()
    peer.send(REPLY, a, b"A")
    peer.send(ERROR, b, b"no such key")
    peer.send(REPLY, c, b"C")
    (result,) = outcomes([d])
    assert result[0] == b"A" and result[2] == b"C"
    assert isinstance(result[1], RemoteError)
    assert result[1].message == "no such key"


def test_a_unit_that_times_out_keeps_its_unanswered_ids_until_their_late_replies():
    proto, peer, clock = connect(ProtocolConfig(request_timeout=1.0))
    d = proto.request(batch(3))
    clock.advance(0)
    (_, a, _), (_, b, _), (_, c, _) = peer.received()
    peer.send(REPLY, a, b"A")
    assert proto.pending == 2
    clock.advance(1.0)
    (result,) = outcomes([d])
    assert isinstance(result, Failure) and result.check(RequestTimeout)
    engine = proto.engine
    assert engine.live == 0 and engine.tombstones == 2
    # New requests never get a reserved ID.
    proto.request(b"next")
    clock.advance(0)
    ((_, fresh, _),) = peer.received()
    assert fresh not in (a, b, c)
    peer.send(REPLY, b, b"late")
    peer.send(REPLY, c, b"late")
    assert engine.tombstones == 0 and engine.late_replies == 2
    peer.send(REPLY, fresh, b"ok")
    assert engine.entries == 0


def test_an_abandoned_unit_frees_every_id_after_abandoned_ttl():
    proto, peer, clock = connect(ProtocolConfig(request_timeout=1.0, abandoned_ttl=5.0))
    proto.request(batch(3))
    clock.advance(0)
    ids = [rid for _, rid, _ in peer.received()]
    clock.advance(1.0)
    assert proto.engine.tombstones == 3
    clock.advance(5.0)
    assert proto.engine.tombstones == 0 and proto.engine.entries == 0
    # A reply that still comes is unknown, and reaches nobody.
    peer.send(REPLY, ids[0], b"too late")
    assert proto.engine.unknown_replies == 1


def test_cancelling_a_unit_sends_a_cancel_frame_for_each_unanswered_id():
    proto, peer, clock = connect()
    d = proto.request(batch(3))
    clock.advance(0)
    (_, a, _), (_, b, _), (_, c, _) = peer.received()
    peer.send(REPLY, b, b"B")
    d.cancel()
    (result,) = outcomes([d])
    assert isinstance(result, Failure) and result.check(CancelledError)
    clock.advance(0)
    cancels = peer.received()
    assert sorted(rid for kind, rid, _ in cancels if kind == CANCEL) == sorted([a, c])
    assert proto.engine.tombstones == 2


def test_a_unit_cancelled_before_it_is_written_sends_nothing_and_holds_nothing():
    proto, peer, clock = connect()
    d = proto.request(batch(3))
    d.cancel()
    clock.advance(0)
    assert peer.received() == []
    assert proto.engine.entries == 0 and proto.engine.live == 0


def test_a_lost_connection_fails_the_unit_once_and_frees_the_table():
    proto, peer, clock = connect()
    d = proto.request(batch(3))
    clock.advance(0)
    (_, a, _), _, _ = peer.received()
    peer.send(REPLY, a, b"A")
    proto.connectionLost(Failure(ConnectionLost(True, "gone")))
    (result,) = outcomes([d])
    assert isinstance(result, Failure) and result.check(ConnectionLost)
    assert result.value.written
    assert proto.engine.entries == 0 and proto.engine.live == 0


def test_a_unit_larger_than_the_room_left_is_refused_whole():
    proto, peer, clock = connect(ProtocolConfig(max_pending=4))
    held = proto.request(b"one")
    d = proto.request(batch(4))
    (result,) = outcomes([d])
    assert isinstance(result, Failure) and result.check(Overloaded)
    assert "batch of 4" in str(result.value)
    clock.advance(0)
    assert [body for _, _, body in peer.received()] == [b"one"]
    # Three fit beside the one.
    proto.request(batch(3))
    assert proto.engine.full
    assert outcomes([held]) == ["pending"]


def test_a_body_the_codec_refuses_is_named_and_nothing_of_the_unit_is_sent():
    codec = FC1Codec(max_frame=64)
    proto, peer, clock = connect(ProtocolConfig(codec=codec))
    d = proto.request(RequestBatch([b"ok", b"x" * 100, b"ok"]))
    (result,) = outcomes([d])
    assert isinstance(result, Failure) and result.check(InvalidRequest)
    assert "bodies[1]" in str(result.value)
    clock.advance(0)
    assert peer.received() == []
    assert proto.engine.entries == 0


def test_in_order_codecs_take_the_next_n_replies_as_the_unit():
    codec = PipelinedCodec(
        lambda: Delimited(b"\n"),
        is_error=lambda f: f[4:].decode() if f.startswith(b"ERR ") else None,
    )
    proto, peer, clock = connect(ProtocolConfig(codec=codec))
    d = proto.request(RequestBatch([b"a", b"b", b"c"]))
    after = proto.request(b"d")
    clock.advance(0)
    assert peer.transport.value() == b"a\nb\nc\nd\n"
    proto.dataReceived(b"A\nERR nope\nC\nD\n")
    result, last = outcomes([d, after])
    assert result[0] == b"A" and result[2] == b"C"
    assert isinstance(result[1], RemoteError) and result[1].message == "nope"
    assert last == b"D"


def test_a_body_that_takes_several_replies_in_order_is_refused_by_index():
    # A Redis CommandBatch inside a RequestBatch would take 2 replies where
    # the unit counts 1: every later reply would reach the wrong slot.
    from framedclient.codecs.redis import CommandBatch, RedisCodec, command

    proto, peer, clock = connect(ProtocolConfig(codec=RedisCodec()))
    inner = CommandBatch.of([command("GET", "a"), command("GET", "b")])
    d = proto.request(RequestBatch([command("GET", "c"), inner]))
    (result,) = outcomes([d])
    assert isinstance(result, Failure) and result.check(InvalidRequest)
    assert "bodies[1]" in str(result.value)
    clock.advance(0)
    assert peer.transport.value() == b""
    assert proto.engine.entries == 0


def test_a_codec_that_allows_one_request_at_a_time_refuses_units():
    codec = PipelinedCodec(lambda: Delimited(b"\n"), exclusive=True)
    proto, peer, clock = connect(ProtocolConfig(codec=codec))
    (result,) = outcomes([proto.request(RequestBatch([b"a", b"b"]))])
    assert isinstance(result, Failure) and result.check(InvalidRequest)
    assert "one request at a time" in str(result.value)


@pytest.mark.parametrize(
    ("bodies", "error", "words"),
    [
        (b"abc", TypeError, "list of request bodies"),
        ([], ValueError, "at least one body"),
        ([b"a", "text"], TypeError, "bodies[1]"),
        ([RequestBatch([b"a"])], TypeError, "do not nest"),
        ([b"a", None], TypeError, "bodies[1] must be bytes or a Message"),
    ],
)
def test_bad_batches_are_refused_at_the_call_naming_the_body(bodies, error, words):
    with pytest.raises(error, match=words.replace("[", r"\[").replace("]", r"\]")):
        RequestBatch(bodies)


def test_a_bytearray_body_is_copied_at_the_call():
    buf = bytearray(b"abc")
    b = RequestBatch([buf])
    buf[:] = b"xyz"
    assert b.bodies == (b"abc",) and len(b) == 3


@given(
    n=st.integers(1, 12),
    data=st.data(),
)
@settings(max_examples=60, deadline=None)
def test_any_reply_order_and_error_mix_gives_each_slot_its_own_reply(n, data):
    proto, peer, clock = connect()
    d = proto.request(batch(n))
    clock.advance(0)
    sent = peer.received()
    order = data.draw(st.permutations(range(n)))
    errors = data.draw(st.sets(st.integers(0, n - 1)))
    for i in order:
        _, rid, body = sent[i]
        if i in errors:
            peer.send(ERROR, rid, b"e:" + body)
        else:
            peer.send(REPLY, rid, b"r:" + body)
    (result,) = outcomes([d])
    for i in range(n):
        if i in errors:
            assert isinstance(result[i], RemoteError)
            assert result[i].message == f"e:q{i}"
        else:
            assert result[i] == b"r:q%d" % i
    assert proto.engine.entries == 0


# -- through FramedClient --------------------------------------------------------


def client_on_memory(**options):
    client, server = memory_client(**options)
    server.flush()
    return client, server, server.clock


def test_the_limiter_counts_a_unit_as_one_request():
    client, server, clock = client_on_memory(max_in_flight=2, pool_size=1)
    d = client.request(batch(5, b"e"))
    other = client.request(b"one")
    waiting = client.request(b"two")
    server.flush()
    assert outcomes([d, other]) == [[b"e%d" % i for i in range(5)], b"one"]
    server.flush()
    assert outcomes([waiting]) == [b"two"]


def test_a_unit_never_written_is_sent_again_on_another_connection():
    client, server, clock = client_on_memory(pool_size=2)
    d = client.request(batch(3, b"e"))
    # The connection it went to dies before writing anything.
    for conn in server.connections:
        conn.cut()
        break
    server.flush()
    clock.advance(1.0)
    server.flush()
    assert outcomes([d]) == [[b"e0", b"e1", b"e2"]]


@pytest_twisted.ensureDeferred
async def test_a_unit_against_the_reference_server_over_loopback():
    server = ReferenceServerFactory(clock=reactor)
    port = await listen(reactor, "tcp:0:interface=127.0.0.1", server)
    client = FramedClient.from_endpoint(
        reactor,
        f"tcp:127.0.0.1:{port.getHost().port}",
        codec=FC1Codec(),
        request_timeout=5.0,
    )
    try:
        await client.when_ready()
        # Delayed replies come back out of order; one body is an error.
        bodies = [b"!delay:0.0%d d%d" % (4 - i % 5, i) for i in range(10)]
        bodies.insert(3, b"!error:nope")
        result = await client.request(RequestBatch(bodies))
        assert result[:3] == bodies[:3]
        assert isinstance(result[3], RemoteError) and result[3].message == "nope"
        assert result[4:] == bodies[4:]
        many = await client.request(RequestBatch([b"x%d" % i for i in range(1000)]))
        assert many == [b"x%d" % i for i in range(1000)]
        try:
            await client.request(RequestBatch([b"a", b"!hold"]), timeout=0.1)
        except RequestTimeout:
            pass
        else:
            raise AssertionError("a unit with a held body did not time out")
    finally:
        await client.close()
        await port.stopListening()


# -- the engine's units against a model of IDs (sans-IO) -------------------------------


class _Actions:
    def __init__(self) -> None:
        self.delivered: dict[int, list[tuple[int, Any]]] = {}
        self.cancels: list[int] = []

    def deliver(self, r, ending, value, now):
        self.delivered.setdefault(id(r), []).append((ending, value))

    def send_cancel(self, request_id):
        self.cancels.append(request_id)

    def arm(self, deadline):
        pass

    def idle(self):
        pass


def _encode(kind, request_id, body):
    if body == b"refuse":
        raise ValueError("refused by the test codec")
    return b"%d:%s;" % (request_id, body)


@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(
                ["one", "unit", "write", "reply", "error", "cancel", "time", "late"]
            ),
            st.integers(0, 2**16),
        ),
        max_size=60,
    ),
    ttl=st.sampled_from([None, 1.5]),
    max_id=st.integers(4, 12),
)
@settings(max_examples=150, deadline=None)
def test_units_by_id_never_share_an_id_and_free_every_one(ops, ttl, max_id):
    # Singles and units of 1-4 on a tiny ID space: an ID is never held by
    # two records; live and tombstones count each unit's unanswered IDs;
    # each record is delivered once; a unit's slots are its own replies;
    # at the end (and after lose_all) nothing is held.
    from framedclient.engine import REPLY as ENGINE_REPLY
    from framedclient.engine import RequestEngine

    now = [0.0]
    actions = _Actions()
    engine = RequestEngine(
        matching=Matching.BY_ID,
        max_id=max_id,
        max_pending=max_id - 1,
        abandoned_ttl=ttl,
        supports_cancel=True,
        encode=_encode,
        seconds=lambda: now[0],
        actions=actions,
    )
    held: dict[int, Any] = {}  # ID -> record (live or tombstone), the model
    units: dict[int, Any] = {}  # id(record) -> record
    answers: dict[int, dict[int, bytes]] = {}  # id(record) -> slot -> body sent

    everyone = []  # every record stays alive: id() keys are never reused

    def take_ids(r, ids):
        everyone.append(r)
        for request_id in ids:
            assert request_id not in held, f"ID {request_id} given twice"
            held[request_id] = r

    for op, n in ops:
        if op == "one" and not engine.full:
            r = engine.open(b"s", 1.0, now[0])
            take_ids(r, [r.request_id])
        elif op == "unit":
            size = n % 4 + 1
            bodies = tuple(b"u%d" % i for i in range(size))
            if not engine.fits(size + 1):
                with pytest.raises(Overloaded):
                    engine.open_many((*bodies, b"x"), None, 1.0, now[0])
            if n % 7 == 0 and engine.fits(size + 1):
                bodies = (*bodies, b"refuse")
                with pytest.raises(InvalidRequest, match=f"bodies\\[{size}\\]"):
                    engine.open_many(bodies, None, 1.0, now[0])
                continue
            if not engine.fits(size):
                continue
            r = engine.open_many(bodies, None, 1.0, now[0])
            take_ids(r, list(r.ids))
            units[id(r)] = r
            answers[id(r)] = {}
        elif op == "write":
            engine.take_unwritten([])
        elif op in ("reply", "error", "late") and held:
            request_id = sorted(held)[n % len(held)]
            r = held[request_id]
            ok = op != "error"
            slot = r.ids.get(request_id) if id(r) in units else None
            found = engine.reply(request_id, ok, b"r%d" % request_id, now[0])
            if found != 2:  # not UNKNOWN: the ID is free now
                del held[request_id]
                if slot is not None and r.state != 2:
                    answers[id(r)][slot] = b"r%d" % request_id if ok else "error"
        elif op == "cancel" and held:
            r = held[sorted(held)[n % len(held)]]
            engine.cancel(r)
        elif op == "time":
            now[0] += (n % 4) * 0.5
            engine.wake(now[0])
        # Drop from the model what the engine released (settled while
        # queued; tombstones past their TTL).
        for request_id, r in list(held.items()):
            if r.state == 3 or (r.state == 0 and id(r) in actions.delivered):
                del held[request_id]
            elif id(r) in units and r.state == 2 and request_id not in r.ids:
                del held[request_id]
        assert engine.live + engine.tombstones == len(held)
        for key, outs in actions.delivered.items():
            assert len(outs) == 1, "a record delivered twice"
            ending, value = outs[0]
            if key in units and ending == ENGINE_REPLY:
                for slot, body in answers[key].items():
                    if body == "error":
                        assert isinstance(value[slot], RemoteError)
                    else:
                        assert value[slot] == body
    engine.lose_all("end of the test", True)
    assert engine.entries == 0 and engine.live == 0 and engine.tombstones == 0
    assert all(len(v) == 1 for v in actions.delivered.values())
