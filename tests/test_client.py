"""
FramedClient over scripted endpoints and a Clock: pool, limiter, retries,
wait-for-ready, close, leases.
"""

from __future__ import annotations

import json

import pytest
from twisted.internet.defer import CancelledError, ensureDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from framedclient.backoff import ExponentialBackoff
from framedclient.client import FramedClient
from framedclient.codecs import GOAWAY, PipelinedCodec
from framedclient.errors import (
    ClientClosed,
    ConnectionLost,
    Overloaded,
    RequestTimeout,
    Unavailable,
)
from framedclient.framing import Delimited
from framedclient.retry import RetryBudget

from .fakes import CODEC, ScriptedEndpoint, answer_all, drop
from .wire import outcomes


def make(endpoint=None, **kw):
    clock = Clock()
    endpoint = endpoint or ScriptedEndpoint(auto="up")
    kw.setdefault("backoff", ExponentialBackoff(random=lambda: 0.5))
    kw.setdefault("pool_size", 1)
    client = FramedClient([endpoint], clock, **kw)
    return client, endpoint, clock


def fired_once(ds):
    """
    Attach to each Deferred; returns a list that will hold every firing.
    """
    seen = []
    for i, d in enumerate(ds):
        d.addBoth(lambda r, i=i: (seen.append((i, r)), None)[1])
    return seen


def test_requests_wait_for_a_server_that_is_down_at_start_then_succeed():
    client, endpoint, clock = make(ScriptedEndpoint(), request_timeout=10)
    endpoint.refuse()
    ds = [client.request(b"r%d" % i) for i in range(3)]
    assert client.queued == 3
    clock.advance(1.0)
    proto = endpoint.accept()
    clock.advance(0)
    answer_all(proto)
    assert outcomes(ds) == [b"r0", b"r1", b"r2"]
    assert client.in_flight == 0 and client.queued == 0


def test_wait_for_ready_false_fails_fast_with_unavailable_naming_the_cause():
    client, endpoint, clock = make(ScriptedEndpoint(), wait_for_ready=False)
    endpoint.refuse()
    (result,) = outcomes([client.request(b"x")])
    assert result.check(Unavailable)
    assert "refused" in str(result.value)
    assert client.in_flight == 0


def test_waiting_for_ready_gives_up_at_the_request_deadline():
    client, endpoint, clock = make(ScriptedEndpoint(auto="down"), request_timeout=3)
    d = client.request(b"x")
    clock.advance(2.9)
    assert not d.called
    clock.advance(0.1)
    (result,) = outcomes([d])
    assert result.check(Unavailable)
    assert client.in_flight == 0 and client.queued == 0


def test_server_restart_with_1000_in_flight_fires_each_once_and_resends_unwritten():
    client, endpoint, clock = make(max_in_flight=2000, request_timeout=30)
    first = endpoint.protocols[0]
    clock.advance(5)  # the connection is healthy
    written = [client.request(b"w%d" % i) for i in range(500)]
    clock.advance(0)
    unwritten = [client.request(b"u%d" % i) for i in range(500)]
    seen = fired_once(written + unwritten)
    drop(first, "server restarted")
    # Written requests fail (they may have been processed) ...
    assert len(seen) == 500
    assert all(isinstance(r, Failure) and r.check(ConnectionLost) for _, r in seen)
    assert all(r.value.written for _, r in seen)
    # ... unwritten ones wait for the new connection and succeed there.
    clock.advance(0)
    second = endpoint.protocols[-1]
    assert second is not first
    clock.advance(0)
    answer_all(second)
    assert len(seen) == 1000
    assert sorted(i for i, _ in seen) == list(range(1000))
    assert [r for i, r in sorted(seen) if i >= 500] == [b"u%d" % i for i in range(500)]
    assert client.in_flight == 0
    assert client.stats()["metrics"]["retries"] == 500


def test_idempotent_request_is_retried_after_loss_within_budget():
    client, endpoint, clock = make(request_timeout=10)
    clock.advance(5)
    safe = client.request(b"read", idempotent=True)
    unsafe = client.request(b"write")
    seen = fired_once([safe])
    clock.advance(0)
    drop(endpoint.protocols[0])
    (u,) = outcomes([unsafe])
    assert u.check(ConnectionLost) and u.value.written
    assert seen == [], "the idempotent request waits for its retry"
    clock.advance(1)  # retry delay, reconnect
    clock.advance(0)
    answer_all(endpoint.protocols[-1])
    assert seen == [(0, b"read")]


def test_retry_budget_exhausted_fails_idempotent_requests_too():
    clock = Clock()
    endpoint = ScriptedEndpoint(auto="up")
    budget = RetryBudget(clock, ratio=0.0, min_per_second=0.0, cap=1.0)
    budget._tokens = 0.0
    client = FramedClient([endpoint], clock, pool_size=1, retry_budget=budget)
    clock.advance(5)
    d = client.request(b"read", idempotent=True)
    clock.advance(0)
    drop(endpoint.protocols[0])
    assert outcomes([d])[0].check(ConnectionLost)


def test_each_request_earns_the_retry_budget_its_share():
    clock = Clock()
    endpoint = ScriptedEndpoint(auto="up")
    budget = RetryBudget(clock, ratio=0.5, min_per_second=0.0, cap=100.0)
    budget._tokens = 0.0
    client = FramedClient([endpoint], clock, pool_size=1, retry_budget=budget)
    clock.advance(5)
    sent = [client.request(b"r%d" % i) for i in range(4)]
    clock.advance(0)
    answer_all(endpoint.protocols[0])
    assert outcomes(sent) == [b"r0", b"r1", b"r2", b"r3"]
    assert budget.balance == 2.0, "half a retry per request, fast path too"


def test_limiter_queues_then_sheds_and_queued_requests_run_as_slots_free():
    client, endpoint, clock = make(max_in_flight=2, max_pending=2)
    proto = endpoint.protocols[0]
    running = [client.request(b"a"), client.request(b"b")]
    queued = [client.request(b"c"), client.request(b"d")]
    (shed,) = outcomes([client.request(b"e")])
    assert shed.check(Overloaded)
    assert client.in_flight == 2 and client.queued == 2
    clock.advance(0)
    answer_all(proto)
    assert outcomes(running) == [b"a", b"b"]
    clock.advance(0)
    answer_all(proto)
    assert outcomes(queued) == [b"c", b"d"]
    assert client.stats()["shed"] == 1


def test_acquire_timeout_sheds_a_request_stuck_in_the_queue():
    client, endpoint, clock = make(max_in_flight=1, max_pending=5, acquire_timeout=0.5)
    client.request(b"hog", timeout=100)
    waiting = client.request(b"waits", timeout=100)
    clock.advance(0.5)
    (result,) = outcomes([waiting])
    assert result.check(Overloaded)
    assert client.queued == 0 and client.in_flight == 1


def test_request_deadline_passes_while_queued_for_a_slot():
    client, endpoint, clock = make(max_in_flight=1, max_pending=5)
    client.request(b"hog", timeout=100)
    waiting = client.request(b"waits", timeout=1)
    clock.advance(1)
    (result,) = outcomes([waiting])
    assert result.check(RequestTimeout)
    assert client.queued == 0


def test_cancel_while_queued_never_leaks_a_slot():
    client, endpoint, clock = make(max_in_flight=1, max_pending=5)
    proto = endpoint.protocols[0]
    hog = client.request(b"hog")
    queued = client.request(b"queued")
    queued.cancel()
    assert outcomes([queued])[0].check(CancelledError)
    clock.advance(0)
    answer_all(proto)
    assert outcomes([hog]) == [b"hog"]
    assert client.in_flight == 0 and client.queued == 0
    after = client.request(b"after")
    clock.advance(0)
    answer_all(proto)
    assert outcomes([after]) == [b"after"]


def test_cancel_while_waiting_for_a_connection():
    client, endpoint, clock = make(ScriptedEndpoint())
    d = client.request(b"x")
    d.cancel()
    assert outcomes([d])[0].check(CancelledError)
    assert client.in_flight == 0 and client.queued == 0


def test_requests_go_to_the_least_loaded_ready_connection():
    client, endpoint, clock = make(pool_size=3, balancer="least_loaded")
    protos = endpoint.protocols
    for i in range(9):
        client.request(b"%d" % i)
    assert [p.pending for p in protos] == [3, 3, 3]


def test_goaway_moves_new_requests_to_the_replacement_connection():
    client, endpoint, clock = make()
    clock.advance(1.0)  # healthy: GOAWAY is a hand-over, not a failed attempt
    old = endpoint.protocols[0]
    in_flight = client.request(b"old")
    clock.advance(0)
    old.dataReceived(CODEC.encode(GOAWAY, 0, b""))
    new = endpoint.protocols[-1]
    assert new is not old
    after = client.request(b"new")
    clock.advance(0)
    answer_all(new)
    answer_all(old)
    assert outcomes([in_flight, after]) == [b"old", b"new"]


def test_half_open_peer_is_detected_by_heartbeat_and_reconnected():
    client, endpoint, clock = make(heartbeat_interval=5, heartbeat_timeout=2)
    proto = endpoint.protocols[0]
    d = client.request(b"into the void", timeout=60)
    clock.advance(0)
    clock.advance(5)  # ping sent
    clock.advance(2)  # no answer: dead
    assert proto.transport.disconnecting
    drop(proto, "aborted")
    (result,) = outcomes([d])
    assert result.check(ConnectionLost) and "heartbeat" in result.value.reason
    clock.advance(1)
    assert endpoint.protocols[-1] is not proto
    assert client.pool.ready_count == 1


@pytest.mark.parametrize("where", ["connecting", "backing_off", "ready"])
def test_close_in_any_state_fails_waiting_requests_and_stops_reconnecting(where):
    endpoint = ScriptedEndpoint()
    client, endpoint, clock = make(endpoint)
    if where == "backing_off":
        endpoint.refuse()
    if where == "ready":
        endpoint.accept()
    waiting = client.request(b"x") if where != "ready" else None
    closed = client.close()
    if where == "ready":
        drop(endpoint.protocols[0])
    assert closed.called
    if waiting is not None:
        assert outcomes([waiting])[0].check(ClientClosed)
    assert outcomes([client.request(b"late")])[0].check(ClientClosed)
    attempts = len(endpoint.attempts)
    clock.advance(1000)
    assert len(endpoint.attempts) == attempts
    assert clock.getDelayedCalls() == []


def test_close_drains_in_flight_then_timeout_aborts_the_rest():
    client, endpoint, clock = make()
    proto = endpoint.protocols[0]
    a = client.request(b"a", timeout=100)
    b = client.request(b"b", timeout=100)
    clock.advance(0)
    closed = client.close(timeout=5)
    assert not closed.called
    # answer only "a"
    from framedclient.codecs import REPLY

    rid_a = min(r.request_id for r in proto.engine.requests())
    proto.dataReceived(CODEC.encode(REPLY, rid_a, b"a"))
    assert outcomes([a]) == [b"a"]
    clock.advance(5)
    drop(proto, "aborted by close timeout")
    assert outcomes([b])[0].check(ConnectionLost)
    assert closed.called


def test_exclusive_codec_uses_one_request_per_connection():
    codec = PipelinedCodec(lambda: Delimited(b"\n", max_frame=64), exclusive=True)
    client, endpoint, clock = make(codec=codec, pool_size=2)
    protos = endpoint.protocols
    ds = [client.request(b"q%d" % i) for i in range(4)]
    answered = 0
    while answered < 4:
        clock.advance(0)
        # Never more than one request outstanding on a connection.
        sent = [p.transport.value() for p in protos]
        assert all(v.count(b"\n") <= 1 for v in sent)
        assert any(sent)
        for p, v in zip(protos, sent, strict=True):
            if v:
                p.transport.clear()
                p.dataReceived(b"r" + v[1:])
                answered += 1
    assert outcomes(ds) == [b"r0", b"r1", b"r2", b"r3"]


def test_lease_keeps_other_requests_off_the_leased_connection():
    client, endpoint, clock = make(pool_size=2)
    p1, p2 = endpoint.protocols
    results = []

    async def conversation():
        async with client.lease() as conn:
            leased = conn.protocol
            other = p2 if leased is p1 else p1
            first = conn.request(b"BEGIN")
            for i in range(5):
                client.request(b"other%d" % i)
            clock.advance(0)
            assert other.pending == 5 and leased.pending == 1
            answer_all(leased)
            results.append(await first)
        results.append("released")

    d = ensureDeferred(conversation())
    assert outcomes([d]) == [None]
    assert results == [b"BEGIN", "released"]
    assert client.pool.leased == set()


def test_debug_state_is_json_and_shows_pending_age():
    client, endpoint, clock = make()
    client.request(b"x", timeout=100)
    clock.advance(0)
    clock.advance(2.5)
    state = client.debug_state()
    json.dumps(state)
    (upstream,) = state["upstreams"]
    assert upstream["state"] == "ready"
    assert upstream["protocol"]["pending"] == 1
    assert upstream["protocol"]["oldest_pending_age"] == pytest.approx(2.5)
    assert state["connections"] == {"ready": 1}
    assert state["in_flight"] == 1


def test_async_context_manager_closes_the_client_on_exit():
    endpoint = ScriptedEndpoint(auto="up")
    clock = Clock()
    client = FramedClient([endpoint], clock, pool_size=1)

    async def use():
        async with client as c:
            assert c is client
            assert client.pool.ready_count == 1
        return "exited"

    d = ensureDeferred(use())
    assert client.pool.connections[0].state == "closing"
    drop(endpoint.protocols[0])
    assert outcomes([d]) == ["exited"]
    assert client.pool.connections[0].state == "closed"


def test_unwritten_request_moved_off_a_dead_connection_can_still_be_cancelled():
    client, endpoint, clock = make(ScriptedEndpoint(), request_timeout=10)
    first = endpoint.accept()
    clock.advance(5)
    d = client.request(b"not yet written")
    seen = fired_once([d])
    drop(first)  # before the turn ends: the request was never written
    assert seen == [] and client.in_flight == 1
    d.cancel()
    assert len(seen) == 1 and seen[0][1].check(CancelledError)
    assert client.in_flight == 0 and client.queued == 0
    clock.advance(0)
    second = endpoint.accept()
    clock.advance(0)
    assert answer_all(second) == 0, "the cancelled request is not sent"


def test_moved_request_keeps_its_original_deadline():
    client, endpoint, clock = make(ScriptedEndpoint(), request_timeout=10)
    first = endpoint.accept()
    clock.advance(5)
    d = client.request(b"x", idempotent=True)
    seen = fired_once([d])
    clock.advance(4)  # written; 4 s of the 10 s spent
    drop(first)
    clock.advance(5.9)
    assert seen == []
    clock.advance(0.1)  # 10 s after it was sent: no connection came back
    ((_, result),) = seen
    assert result.check(Unavailable)
    assert client.in_flight == 0


def test_when_ready_fires_once_the_pool_can_use_the_connection():
    client, endpoint, clock = make(ScriptedEndpoint())
    ready = client.when_ready()
    picked = []
    ready.addCallback(lambda _: picked.append(client.pool.pick()))
    proto = endpoint.accept()
    assert picked == [proto]


def test_cancelling_many_parked_requests_keeps_the_queue_bounded():
    client, endpoint, clock = make(ScriptedEndpoint(), max_in_flight=4)
    client.request(b"stays", timeout=100)
    for _ in range(5_000):
        d = client.request(b"cancelled", timeout=100)
        d.addErrback(lambda f: f.trap(CancelledError))
        d.cancel()
    assert client.in_flight == 1 and client.queued == 1
    # The parked queue's entries (cancelled ones included, until compacted)
    # stay bounded: where a leak would show up.
    assert client.debug_state()["parked_entries"] < 200
    proto = endpoint.accept()
    clock.advance(0)
    assert answer_all(proto) == 1


def test_sequential_requests_rotate_over_idle_connections():
    client, endpoint, clock = make(pool_size=3, balancer="least_loaded")
    protos = endpoint.protocols
    for i in range(9):
        d = client.request(b"%d" % i)
        clock.advance(0)
        for p in protos:
            answer_all(p)
        assert outcomes([d]) == [b"%d" % i]
    assert [p.ok_count for p in protos] == [3, 3, 3]


def test_sequential_requests_use_every_idle_connection_with_p2c():
    client, endpoint, clock = make(pool_size=3)
    protos = endpoint.protocols
    for i in range(60):
        d = client.request(b"%d" % i)
        clock.advance(0)
        for p in protos:
            answer_all(p)
        assert outcomes([d]) == [b"%d" % i]
    assert all(p.ok_count > 0 for p in protos)


def test_close_fails_a_retry_waiting_out_its_delay_and_leaves_no_timer():
    client, endpoint, clock = make(request_timeout=10)
    clock.advance(5)
    d = client.request(b"read", idempotent=True)
    seen = fired_once([d])
    clock.advance(0)
    drop(endpoint.protocols[0])  # written, idempotent: retried after a delay
    assert seen == [] and client.debug_state()["delayed_retries"] == 1
    closed = client.close()
    assert len(seen) == 1 and seen[0][1].check(ClientClosed)
    for p in endpoint.protocols[1:]:
        drop(p)
    assert closed.called
    assert clock.getDelayedCalls() == []
    assert client.in_flight == 0


def test_each_connection_reports_its_own_latency_and_the_client_adds_them_up():
    client, endpoint, clock = make(pool_size=2)
    p1, p2 = endpoint.protocols
    ds = [client.request(b"%d" % i) for i in range(4)]
    clock.advance(0)
    clock.advance(0.1)
    answer_all(p1)
    clock.advance(0.2)
    answer_all(p2)
    assert len(outcomes(ds)) == 4
    upstreams = {u["name"]: u["protocol"] for u in client.debug_state()["upstreams"]}
    p50s = sorted(u["latency"]["p50"] for u in upstreams.values())
    assert p50s == [pytest.approx(0.1, rel=0.15), pytest.approx(0.3, rel=0.15)]
    assert client.stats()["metrics"]["requests"]["ok"] == 4
    # A connection's numbers stay in the totals after it is gone.
    drop(p1)
    totals = client.metrics
    assert totals.outcomes["ok"] == 4
    assert totals.latency.count == 4


def test_lease_requests_count_against_max_in_flight():
    client, endpoint, clock = make(pool_size=2, max_in_flight=1)
    p1, p2 = endpoint.protocols
    results = []

    async def conversation():
        async with client.lease() as conn:
            # The other connection's request holds the only slot.
            pending = conn.request(b"in the lease")
            results.append(pending.called)
            results.append(await pending)

    hog = client.request(b"hog")
    leased = ensureDeferred(conversation())
    clock.advance(0)
    assert results == [False], "the lease request waits for a slot"
    assert client.in_flight == 1
    for p in (p1, p2):
        answer_all(p)  # the hog's reply frees the slot
    clock.advance(0)
    for p in (p1, p2):
        answer_all(p)
    assert outcomes([hog, leased]) == [b"hog", None]
    assert results == [False, b"in the lease"]
    assert client.in_flight == 0


def test_bodies_waiting_in_the_client_are_bounded_in_bytes():
    client, endpoint, clock = make(
        ScriptedEndpoint(), max_in_flight=100, max_pending=100, max_queued_bytes=1000
    )
    waiting = [client.request(b"x" * 300) for _ in range(3)]
    (shed,) = outcomes([client.request(b"y" * 200)])
    assert shed.check(Overloaded) and "max_queued_bytes" in str(shed.value)
    assert client.stats()["queued_bytes"] == 900
    small = client.request(b"z" * 100)  # still fits
    waiting[0].addErrback(lambda f: f.trap(CancelledError))
    waiting[0].cancel()
    assert client.stats()["queued_bytes"] == 700
    proto = endpoint.accept()
    clock.advance(0)
    assert answer_all(proto) == 3
    assert len(outcomes([*waiting[1:], small])) == 3
    assert client.stats()["queued_bytes"] == 0
    assert client.in_flight == 0
