"""
GOAWAY: the server asks the client to drain a connection and move on.

What users rely on: requests already written on the connection still get
their replies (or their timeouts); nothing new is written on it; requests
not yet written are handed back as safe to send elsewhere
(``ConnectionLost(written=False)``), and :class:`FramedClient` does send
them elsewhere, on a replacement connection it opens at once; the
connection closes once drained.  One behaviour per test, through public
API: a bare :class:`~framedclient.protocol.FramedProtocol` talking to a
scripted fc1 peer (``tests/wire.py``), and a ``FramedClient`` over scripted
endpoints (``tests/fakes.py``).
"""

from __future__ import annotations

from twisted.internet.error import ConnectionLost as TwistedConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from framedclient.backoff import ExponentialBackoff
from framedclient.client import FramedClient
from framedclient.codecs import GOAWAY, REPLY, REQUEST
from framedclient.errors import ConnectionLost, RequestTimeout
from framedclient.protocol import FramedProtocol

from .fakes import CODEC, ScriptedEndpoint, answer_all
from .wire import connect, outcomes

# -- a bare protocol ------------------------------------------------------------


def written_request(peer) -> int:
    ((kind, request_id, _),) = peer.received()
    assert kind == REQUEST
    return request_id


def test_requests_written_before_goaway_still_get_their_replies():
    proto, peer, clock = connect()
    first = proto.request(b"first")
    second = proto.request(b"second")
    clock.advance(0)
    (_, id1, _), (_, id2, _) = peer.received()
    peer.send(GOAWAY, 0)
    peer.send(REPLY, id2, b"second done")
    peer.send(REPLY, id1, b"first done")
    assert outcomes([first, second]) == [b"first done", b"second done"]


def test_replies_in_the_same_read_as_goaway_are_delivered_either_side_of_it():
    proto, peer, clock = connect()
    before, after = proto.request(b"before"), proto.request(b"after")
    clock.advance(0)
    (_, id1, _), (_, id2, _) = peer.received()
    proto.dataReceived(
        CODEC.encode(REPLY, id1, b"1")
        + CODEC.encode(GOAWAY, 0, b"")
        + CODEC.encode(REPLY, id2, b"2")
    )
    assert outcomes([before, after]) == [b"1", b"2"]


def test_requests_not_written_at_goaway_fail_as_not_written_and_are_never_sent():
    proto, peer, clock = connect()
    in_flight = proto.request(b"in flight")
    clock.advance(0)
    written_request(peer)
    queued = proto.request(b"queued, not written yet")
    peer.send(GOAWAY, 0)
    (result,) = outcomes([queued])
    assert result.check(ConnectionLost)
    assert result.value.written is False, "safe to send elsewhere"
    clock.advance(0)
    assert peer.received() == []
    assert not in_flight.called


def test_a_draining_protocol_refuses_new_requests_as_not_written():
    proto, peer, clock = connect()
    proto.request(b"keeps it draining")
    clock.advance(0)
    written_request(peer)
    peer.send(GOAWAY, 0)
    assert proto.is_draining and not proto.accepting
    (result,) = outcomes([proto.request(b"new")])
    assert result.check(ConnectionLost) and result.value.written is False
    assert "draining" in str(result.value)
    clock.advance(0)
    assert peer.received() == []


def test_the_connection_closes_once_the_last_in_flight_request_is_answered():
    proto, peer, clock = connect()
    d = proto.request(b"last one")
    clock.advance(0)
    request_id = written_request(peer)
    peer.send(GOAWAY, 0)
    assert not peer.transport.disconnecting
    peer.send(REPLY, request_id, b"done")
    assert outcomes([d]) == [b"done"]
    assert peer.transport.disconnecting


def test_goaway_on_an_idle_connection_closes_it_at_once():
    proto, peer, clock = connect()
    peer.send(GOAWAY, 0)
    assert peer.transport.disconnecting


def test_connection_loss_while_draining_fails_written_requests_as_written():
    proto, peer, clock = connect()
    d = proto.request(b"may have run")
    clock.advance(0)
    written_request(peer)
    peer.send(GOAWAY, 0)
    proto.connectionLost(Failure(TwistedConnectionLost("server went away")))
    (result,) = outcomes([d])
    assert result.check(ConnectionLost)
    assert result.value.written is True, "the server may have acted on it"


def test_a_second_goaway_is_harmless():
    proto, peer, clock = connect()
    told = []
    proto.when_goaway().addCallback(lambda _: told.append(proto))
    d = proto.request(b"in flight")
    clock.advance(0)
    request_id = written_request(peer)
    peer.send(GOAWAY, 0)
    peer.send(GOAWAY, 0)
    assert told == [proto], "the owner is told once"
    assert not proto.is_closed and not d.called
    peer.send(REPLY, request_id, b"still answered")
    assert outcomes([d]) == [b"still answered"]
    assert peer.transport.disconnecting


def test_timeouts_still_fire_for_draining_requests_and_the_drain_then_ends():
    proto, peer, clock = connect()
    d = proto.request(b"slow", timeout=5)
    clock.advance(0)
    written_request(peer)
    peer.send(GOAWAY, 0)
    clock.advance(4.9)
    assert not d.called
    clock.advance(0.1)
    (result,) = outcomes([d])
    assert result.check(RequestTimeout)
    assert peer.transport.disconnecting, "nothing left to wait for"


# -- FramedClient ---------------------------------------------------------------


def make(endpoint: ScriptedEndpoint | None = None):
    """
    A one-connection client over a scripted endpoint (connects at once
    unless given one to drive by hand).
    """
    clock = Clock()
    endpoint = endpoint or ScriptedEndpoint(auto="up")
    backoff = ExponentialBackoff(random=lambda: 0.5)
    client = FramedClient([endpoint], clock, backoff=backoff, pool_size=1)
    return client, endpoint, clock


def requests_written(proto: FramedProtocol) -> list[bytes]:
    """
    Bodies of the requests ``proto`` has written so far (without consuming
    them, so ``answer_all`` still sees them).
    """
    transport = proto.transport
    assert isinstance(transport, StringTransport)
    framer = CODEC.new_framer()
    return [
        body
        for kind, _, body in map(CODEC.decode, framer.feed(transport.value()))
        if kind == REQUEST
    ]


def test_client_resends_requests_not_written_at_goaway_on_the_replacement():
    client, endpoint, clock = make()
    old = endpoint.protocols[0]
    d = client.request(b"queued when GOAWAY came")
    assert old.pending == 1, "given to the old connection, not written yet"
    old.dataReceived(CODEC.encode(GOAWAY, 0, b""))
    clock.advance(0)
    new = endpoint.protocols[-1]
    assert new is not old
    assert requests_written(old) == []
    assert requests_written(new) == [b"queued when GOAWAY came"]
    answer_all(new)
    assert outcomes([d]) == [b"queued when GOAWAY came"]


def test_client_requests_written_before_goaway_are_answered_on_the_old_connection():
    client, endpoint, clock = make()
    old = endpoint.protocols[0]
    d = client.request(b"in flight")
    clock.advance(0)
    old.dataReceived(CODEC.encode(GOAWAY, 0, b""))
    clock.advance(0)
    new = endpoint.protocols[-1]
    assert requests_written(new) == [], "not sent twice"
    answer_all(old)
    assert outcomes([d]) == [b"in flight"]
    assert old.transport.disconnecting


def test_client_opens_a_replacement_connection_and_sends_new_requests_there():
    client, endpoint, clock = make(ScriptedEndpoint())
    endpoint.accept()
    old = endpoint.protocols[0]
    client.request(b"keeps the old one draining")
    clock.advance(0)
    old.dataReceived(CODEC.encode(GOAWAY, 0, b""))
    assert len(endpoint.pending) == 1, "a replacement is being connected"
    new = endpoint.accept()
    d = client.request(b"after GOAWAY")
    clock.advance(0)
    assert requests_written(old) == [b"keeps the old one draining"]
    assert requests_written(new) == [b"after GOAWAY"]
    answer_all(new)
    assert outcomes([d]) == [b"after GOAWAY"]
