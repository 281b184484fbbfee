"""
Per-call flags are booleans, refused at the call otherwise; a body is read
at the call.

What users rely on (docs/client.md, "A wrong type or value is refused at the
call"): ``idempotent="no"`` is not taken as true (a truthy string would make a
non-idempotent request retried or hedged, so run twice); it raises
``TypeError`` naming the argument, on every path (a free slot, a queued
request, a bare connection), and leaves nothing behind.  A ``bytearray``
body changed after ``request()`` returned is sent as it was at the call.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from framedclient.backoff import ExponentialBackoff
from framedclient.client import FramedClient
from framedclient.testing import connected_pair

from .fakes import ScriptedEndpoint, answer_all
from .test_goaway import requests_written
from .wire import outcomes

NOT_BOOLS = ["no", "false", "", 0, 1, None, [], b"yes"]


def client_with(up: bool, **kw):
    clock = Clock()
    endpoint = ScriptedEndpoint(auto="up" if up else None)
    client = FramedClient(
        [endpoint],
        clock,
        pool_size=1,
        backoff=ExponentialBackoff(random=lambda: 0.5),
        **kw,
    )
    return client, endpoint, clock


@pytest.mark.parametrize("up", [True, False], ids=["slot-and-connection", "queued"])
@pytest.mark.parametrize("value", NOT_BOOLS, ids=repr)
def test_idempotent_that_is_not_a_bool_raises_type_error_naming_it(up, value):
    client, _, clock = client_with(up)
    with pytest.raises(TypeError, match="idempotent must be True or False"):
        client.request(b"x", idempotent=value)
    assert client.in_flight == 0 and client.queued == 0
    assert client.stats()["queued_bytes"] == 0


@pytest.mark.parametrize("value", NOT_BOOLS, ids=repr)
def test_idempotent_that_is_not_a_bool_is_refused_with_hedging_on(value):
    client, _, clock = client_with(True, hedge_after=0.01)
    with pytest.raises(TypeError, match="idempotent"):
        client.request(b"x", idempotent=value, key="k")
    assert client.in_flight == 0


@pytest.mark.parametrize("up", [True, False], ids=["slot-and-connection", "queued"])
@pytest.mark.parametrize("value", ["no", 0, 1, "", b"x"], ids=repr)
def test_wait_for_ready_that_is_not_a_bool_or_none_raises_naming_it(up, value):
    client, _, clock = client_with(up)
    with pytest.raises(TypeError, match="wait_for_ready must be True, False or None"):
        client.request(b"x", wait_for_ready=value)
    assert client.in_flight == 0 and client.queued == 0


@pytest.mark.parametrize("value", NOT_BOOLS, ids=repr)
def test_protocol_request_refuses_an_idempotent_that_is_not_a_bool(value):
    pair = connected_pair()
    with pytest.raises(TypeError, match="idempotent must be True or False"):
        pair.client.request(b"x", idempotent=value)
    assert pair.client.pending == 0


def test_true_and_false_are_accepted():
    client, endpoint, clock = client_with(True)
    ds = [
        client.request(b"a", idempotent=True, wait_for_ready=False),
        client.request(b"b", idempotent=False, wait_for_ready=True),
    ]
    clock.advance(0)
    answer_all(endpoint.protocols[0])
    assert outcomes(ds) == [b"a", b"b"]


def test_a_bytearray_changed_while_its_request_waits_is_sent_as_it_was():
    # No connection yet: the request waits in the client.
    client, endpoint, clock = client_with(False)
    body = bytearray(b"as called")
    d = client.request(body, wait_for_ready=True)
    body[:] = b"changed!!"
    proto = endpoint.accept()
    clock.advance(0)
    assert requests_written(proto) == [b"as called"]
    answer_all(proto)
    assert outcomes([d]) == [b"as called"]


def test_a_bytearray_changed_while_its_request_waits_for_a_slot_is_sent_as_it_was():
    client, endpoint, clock = client_with(True, max_in_flight=1)
    proto = endpoint.protocols[0]
    first = client.request(b"holds the slot")
    body = bytearray(b"as called")
    d = client.request(body)
    body[:] = b"changed!!"
    clock.advance(0)
    answer_all(proto)
    clock.advance(0)
    answer_all(proto)
    assert outcomes([first, d]) == [b"holds the slot", b"as called"]


def test_a_bytearray_re_sent_after_its_connection_died_is_sent_as_it_was():
    from .fakes import drop

    clock = Clock()
    endpoint = ScriptedEndpoint(auto="up")
    client = FramedClient(
        [endpoint],
        clock,
        pool_size=2,
        backoff=ExponentialBackoff(random=lambda: 0.5),
    )
    clock.advance(1.0)
    p1, p2 = endpoint.protocols
    body = bytearray(b"as called")
    d = client.request(body)
    body[:] = b"changed!!"
    holder = p1 if p1.pending else p2
    drop(holder)
    clock.advance(0)
    other = p2 if holder is p1 else p1
    assert requests_written(other) == [b"as called"]
    answer_all(other)
    assert outcomes([d]) == [b"as called"]
