"""
Every request ends with exactly one outcome in the metrics, named by its
error class: the client's slow paths, the connection's exits and refusals.
"""

from __future__ import annotations

from framedclient.client import FramedClient
from framedclient.codecs import ERROR
from framedclient.errors import (
    ClientClosed,
    RequestTimeout,
    Unavailable,
)
from framedclient.testing import connected_pair

from .fakes import CODEC, ScriptedEndpoint, answer_all, drop
from .test_client import make
from .wire import outcomes


def counted(client: FramedClient) -> dict[str, int]:
    return {k: v for k, v in client.metrics.outcomes.items() if v}


def test_requests_refused_by_a_closed_client_count_as_closed():
    client, endpoint, clock = make()
    client.close()
    d = client.request(b"late")
    assert outcomes([d])[0].check(ClientClosed)
    assert counted(client) == {"closed": 1}


def test_requests_still_waiting_when_the_client_closes_count_as_closed():
    client, endpoint, clock = make(ScriptedEndpoint(), max_in_flight=1)
    ds = [client.request(b"%d" % i) for i in range(3)]
    client.close()
    assert all(f.check(ClientClosed) for f in outcomes(ds))
    assert counted(client) == {"closed": 3}


def test_a_deadline_that_passes_before_sending_counts_as_a_timeout():
    client, endpoint, clock = make(ScriptedEndpoint(), request_timeout=1.0)
    d = client.request(b"never sent")
    clock.advance(2)
    (f,) = outcomes([d])
    assert f.check(Unavailable) or f.check(RequestTimeout)
    assert sum(counted(client).values()) == 1


def test_cancelling_a_parked_request_counts_as_cancelled():
    client, endpoint, clock = make(ScriptedEndpoint(), request_timeout=10)
    d = client.request(b"parked")
    d.cancel()
    outcomes([d])
    assert counted(client) == {"cancelled": 1}


def test_a_mixed_run_counts_each_request_exactly_once():
    client, endpoint, clock = make(pool_size=2, request_timeout=5.0)
    a, b = endpoint.protocols
    ok = [client.request(b"ok%d" % i) for i in range(4)]
    clock.advance(0)
    for proto in (a, b):
        answer_all(proto)
    err = client.request(b"err")
    clock.advance(0)
    target = a if a.pending else b
    (rid,) = [r.request_id for r in target.engine.requests()]
    target.dataReceived(CODEC.encode(ERROR, rid, b"nope"))
    slow = client.request(b"slow", timeout=1.0)
    cancelled = client.request(b"cancel me")
    clock.advance(0)
    cancelled.cancel()
    clock.advance(1.5)
    lost = client.request(b"lost")
    clock.advance(0)
    for proto in (a, b):
        if proto.pending:
            drop(proto)
    all_ds = [*ok, err, slow, cancelled, lost]
    outcomes(all_ds)
    counts = counted(client)
    assert counts["ok"] == 4
    assert counts["remote_error"] == 1
    assert counts["timeout"] == 1
    assert counts["cancelled"] == 1
    assert sum(counts.values()) == len(all_ds)


def test_a_connection_refusing_a_request_counts_it():
    pair = connected_pair()
    pair.client.close()
    d = pair.client.request(b"x")
    outcomes([d])
    assert pair.client.metrics.outcomes["connection_lost"] == 1


def test_a_protocol_error_is_a_connection_event_not_an_extra_outcome():
    pair = connected_pair()
    proto = pair.client
    d = proto.request(b"in flight", timeout=10)
    proto.flush()
    proto.dataReceived(b"\xff" * 64)  # a length far beyond max_frame
    pair.pump.flush()
    outcomes([d])
    metrics = proto.metrics
    assert metrics.connection_events["protocol_error"] == 1
    assert sum(v for k, v in metrics.outcomes.items()) == 1
    assert metrics.outcomes["connection_lost"] == 1


def test_no_call_is_left_on_the_slow_path_after_close_or_cancel():
    client, endpoint, clock = make(ScriptedEndpoint(), max_in_flight=1, request_timeout=10)
    parked = [client.request(b"%d" % i) for i in range(4)]
    parked[1].cancel()
    assert client.debug_state()["slow_path_calls"] == 3
    client.close()
    outcomes(parked)
    assert client.debug_state()["slow_path_calls"] == 0


def test_no_call_is_left_on_the_slow_path_after_retries_and_timeouts():
    client, endpoint, clock = make(ScriptedEndpoint(auto="up"), request_timeout=1.0)
    (proto,) = endpoint.protocols
    ds = [client.request(b"%d" % i, idempotent=True) for i in range(3)]
    clock.advance(0)
    drop(proto)  # written, idempotent: retried on the next connection
    clock.advance(2)
    outcomes(ds)
    assert client.debug_state()["slow_path_calls"] == 0
