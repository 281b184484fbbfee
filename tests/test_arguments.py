"""
Bad arguments: one rule.  A wrong type or value raises TypeError/ValueError
naming the argument at the call, on every path (a free slot, a queued
request, a bare connection), and leaves no slot or queue entry behind.
"""

from __future__ import annotations

import math

import pytest
from twisted.internet.task import Clock

from framedclient.backoff import ExponentialBackoff
from framedclient.client import FramedClient
from framedclient.protocol import FramedProtocol
from framedclient.testing import connected_pair

from .fakes import ScriptedEndpoint

BAD_BODIES = [None, "text", 123, 1.5, [b"a"], object()]
BAD_TIMEOUTS = [("5", TypeError), (True, TypeError), ([1], TypeError),
                (0, ValueError), (-1, ValueError), (-math.inf, ValueError),
                (math.nan, ValueError)]


def client_with(up: bool, **kw):
    clock = Clock()
    endpoint = ScriptedEndpoint(auto="up" if up else None)
    client = FramedClient(
        [endpoint], clock, pool_size=1, backoff=ExponentialBackoff(random=lambda: 0.5),
        **kw,
    )
    return client, clock


@pytest.mark.parametrize("up", [True, False], ids=["slot-and-connection", "queued"])
@pytest.mark.parametrize("body", BAD_BODIES, ids=repr)
def test_client_request_with_a_non_bytes_body_raises_type_error_naming_body(up, body):
    client, clock = client_with(up)
    with pytest.raises(TypeError, match="body must be bytes"):
        client.request(body)
    assert client.in_flight == 0 and client.queued == 0
    assert client.stats()["queued_bytes"] == 0


def test_a_str_body_is_told_to_encode():
    client, clock = client_with(True)
    with pytest.raises(TypeError, match=r"encode\(\)"):
        client.request("hello")  # type: ignore[arg-type]


@pytest.mark.parametrize("up", [True, False], ids=["slot-and-connection", "queued"])
@pytest.mark.parametrize(("timeout", "error"), BAD_TIMEOUTS, ids=repr)
def test_client_request_with_a_bad_timeout_raises_naming_timeout(up, timeout, error):
    client, clock = client_with(up)
    with pytest.raises(error, match="timeout"):
        client.request(b"x", timeout=timeout)
    assert client.in_flight == 0 and client.queued == 0


def test_bad_arguments_while_every_slot_is_taken_still_raise_at_the_call():
    client, clock = client_with(True, max_in_flight=1, max_pending=1)
    client.request(b"holds the slot")
    with pytest.raises(TypeError, match="body"):
        client.request(None)  # type: ignore[arg-type]
    assert client.in_flight == 1 and client.queued == 0


def test_bytearray_bodies_are_accepted():
    client, clock = client_with(True)
    d = client.request(bytearray(b"x"))
    assert client.in_flight == 1
    seen = []
    d.addErrback(seen.append)
    d.cancel()
    assert client.in_flight == 0 and len(seen) == 1


@pytest.mark.parametrize("body", BAD_BODIES, ids=repr)
def test_protocol_request_with_a_bad_body_raises_and_holds_nothing(body):
    pair = connected_pair()
    proto: FramedProtocol = pair.client
    with pytest.raises(TypeError, match="body must be bytes"):
        proto.request(body)
    assert proto.pending == 0
    assert proto.debug_state()["table_entries"] == 0


@pytest.mark.parametrize(("timeout", "error"), BAD_TIMEOUTS, ids=repr)
def test_protocol_request_with_a_bad_timeout_raises(timeout, error):
    pair = connected_pair()
    with pytest.raises(error, match="timeout"):
        pair.client.request(b"x", timeout=timeout)
    assert pair.client.pending == 0


@pytest.mark.parametrize("endpoint", [None, 123, b"tcp:127.0.0.1:1", object()], ids=repr)
def test_a_client_of_something_that_is_not_an_endpoint_raises_type_error(endpoint):
    with pytest.raises(TypeError, match=r"endpoints\[0\] must be a Twisted client"):
        FramedClient([endpoint], Clock())  # type: ignore[list-item]


def test_endpoint_strings_given_to_the_constructor_point_at_from_endpoint():
    with pytest.raises(TypeError, match="from_endpoint"):
        FramedClient("tcp:127.0.0.1:1", Clock())  # type: ignore[arg-type]


@pytest.mark.parametrize("endpoint", [None, 123, object()], ids=repr)
def test_from_endpoint_refuses_what_is_not_an_endpoint(endpoint):
    with pytest.raises(TypeError, match="endpoint"):
        FramedClient.from_endpoint(Clock(), endpoint, start=False)


def test_from_endpoint_asks_for_str_not_bytes():
    with pytest.raises(TypeError, match="decode"):
        FramedClient.from_endpoint(Clock(), b"tcp:127.0.0.1:1", start=False)
