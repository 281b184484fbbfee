"""
One owner per request (framedclient.dispatch): a request is checked once,
the limiter's count comes back to zero on every path, and the slow path's
books are empty once nothing waits.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import CancelledError

import framedclient.client
import framedclient.protocol
from framedclient.engine import check_request

from .fakes import ScriptedEndpoint, answer_all, drop
from .test_client import make
from .wire import outcomes


@pytest.fixture
def checks(monkeypatch):
    """
    Counts the calls of check_request, wherever the request path makes them.
    """
    calls: list[object] = []

    def counting(*args, **kwargs):
        calls.append(args[0])
        return check_request(*args, **kwargs)

    monkeypatch.setattr(framedclient.client, "check_request", counting)
    monkeypatch.setattr(framedclient.protocol, "check_request", counting)
    return calls


@pytest.mark.parametrize(
    "kw", [{}, {"key": "k"}, {"idempotent": True}], ids=["plain", "keyed", "idem"]
)
def test_a_request_through_the_client_is_checked_once(checks, kw):
    client, endpoint, clock = make(pool_size=2)
    d = client.request(bytearray(b"x"), timeout=5, **kw)
    clock.advance(0)
    for proto in endpoint.protocols:
        answer_all(proto)
    assert outcomes([d]) == [b"x"]
    assert len(checks) == 1


def test_a_request_that_waited_and_was_re_sent_is_still_checked_once(checks):
    client, endpoint, clock = make(ScriptedEndpoint(), pool_size=1)
    d = client.request(b"waits", timeout=5.0, wait_for_ready=True)
    first = endpoint.accept()
    drop(first)  # before the write: re-sent on the next connection
    clock.advance(1)
    second = endpoint.accept()
    clock.advance(0)
    answer_all(second)
    assert outcomes([d]) == [b"waits"]
    assert len(checks) == 1


def test_the_slot_count_comes_back_to_zero_on_every_path():
    client, endpoint, clock = make(pool_size=2, max_in_flight=2, max_pending=10)
    clock.advance(1)
    p1, p2 = endpoint.protocols
    ds = [client.request(b"%d" % i, idempotent=True) for i in range(6)]
    assert client.in_flight == 2 and client.queued == 4
    ds[3].cancel()  # cancelled while waiting for a slot
    clock.advance(0)
    drop(p1)  # written and idempotent: retried after a delay
    clock.advance(1)
    for _ in range(10):
        for proto in endpoint.protocols[1:]:
            answer_all(proto)
        clock.advance(1)
    results = outcomes(ds)
    assert results[3].check(CancelledError)
    assert [r for i, r in enumerate(results) if i != 3] == [
        b"0",
        b"1",
        b"2",
        b"4",
        b"5",
    ]
    assert client.in_flight == 0 and client.queued == 0
    state = client.debug_state()
    assert state["slow_path_calls"] == 0
    assert state["delayed_retries"] == 0
    assert state["queued_bytes"] == 0
