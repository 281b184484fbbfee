"""
The self-healing connection state machine, driven with a Clock and a
scripted endpoint.
"""

from __future__ import annotations

import itertools
from functools import partial

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from framedclient.backoff import ConstantBackoff, ExponentialBackoff
from framedclient.codecs import ERROR, GOAWAY
from framedclient.connection import ConnectFailed, Connection
from framedclient.errors import ClientClosed, ConnectionLost, Unavailable
from framedclient.protocol import FramedClientFactory
from framedclient.testing.memory import memory_client

from .fakes import CODEC, ScriptedEndpoint, answer_all, drop
from .wire import outcomes


def make(
    endpoint: ScriptedEndpoint | None = None, **kw
) -> tuple[Connection, ScriptedEndpoint, Clock]:
    clock = Clock()
    endpoint = endpoint or ScriptedEndpoint()
    kw.setdefault("backoff", ExponentialBackoff(random=lambda: 0.5))
    conn = Connection(endpoint, FramedClientFactory(clock=clock), clock, **kw)
    return conn, endpoint, clock


def test_backoff_follows_grpc_sequence_while_server_is_down():
    conn, endpoint, clock = make(ScriptedEndpoint(auto="down"))
    attempt_times = []
    conn.add_listener(
        lambda c, old, new: (
            attempt_times.append(clock.seconds()) if new == "connecting" else None
        )
    )
    conn.start()
    for _ in range(12):
        clock.advance(conn.debug_state()["next_backoff_delay"])
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(attempt_times)]
    expected = [
        1.0,
        1.6,
        2.56,
        4.096,
        6.5536,
        10.48576,
        16.777216,
        26.8435456,
        42.94967296,
        68.719476736,
        109.9511627776,
        120.0,
    ]
    assert gaps == pytest.approx(expected)
    assert conn.failed_attempts == 13


def test_server_down_at_start_then_up_becomes_ready_and_resets_backoff():
    conn, endpoint, clock = make()
    ready = conn.when_ready()
    conn.start()
    endpoint.refuse()
    endpoint_attempts = len(endpoint.attempts)
    assert conn.state == "backing_off"
    clock.advance(1.0)
    assert len(endpoint.attempts) == endpoint_attempts + 1
    endpoint.refuse()
    clock.advance(1.6)
    proto = endpoint.accept()
    assert conn.state == "ready"
    assert outcomes([ready]) == [proto]
    assert conn.failed_attempts == 0


def test_healthy_connection_lost_reconnects_at_once():
    conn, endpoint, clock = make()
    conn.start()
    proto = endpoint.accept()
    clock.advance(5)  # healthy
    drop(proto)
    assert conn.state == "backing_off"
    clock.advance(0)
    assert conn.state == "connecting"


def test_connection_dying_young_backs_off_instead_of_spinning():
    conn, endpoint, clock = make()
    conn.start()
    endpoint.refuse()
    clock.advance(1.0)
    proto = endpoint.accept()
    clock.advance(0.1)  # not healthy yet
    drop(proto)
    assert conn.state == "backing_off"
    assert conn.debug_state()["next_backoff_delay"] == pytest.approx(1.6)


def answer_with_error(proto):
    """
    The server answers every written request with an error reply.
    """
    transport = proto.transport
    frames = CODEC.new_framer().feed(transport.value())
    transport.clear()
    for frame in frames:
        _, rid, _ = CODEC.decode(frame)
        proto.dataReceived(CODEC.encode(ERROR, rid, b"no"))


@pytest.mark.parametrize("answer", [answer_all, answer_with_error])
def test_a_young_connection_that_answered_and_was_dropped_reconnects_at_once(
    answer,
):
    """
    Issue 23, break 6: a server that drops a working connection within its
    first second (a crash-prone server, one that drops 0.2 % of its
    connections) must not keep the pool in backoff: a connection that
    answered is never a failed attempt, even after earlier failed ones.
    """
    conn, endpoint, clock = make()
    conn.start()
    endpoint.refuse()
    clock.advance(1.0)
    endpoint.refuse()
    clock.advance(1.6)
    for _ in range(5):
        proto = endpoint.accept()
        d = proto.request(b"work")
        clock.advance(0)
        answer(proto)
        assert outcomes([d]) != ["pending"]
        clock.advance(0.2)  # younger than healthy_after (1 s)
        drop(proto)
        assert conn.state == "backing_off"
        assert conn.failed_attempts == 0
        assert conn.debug_state()["next_backoff_delay"] == 0.0
        clock.advance(0)
        assert conn.state == "connecting", "reconnects at once"
    assert conn.connect_failures == 2, "only the refused attempts failed"


def test_young_connections_dropped_before_answering_still_back_off_more_each_time():
    """
    A server that accepts and then drops every connection before answering
    anything is retried with a growing backoff, not in a tight loop: such a
    connection is a failed attempt.
    """
    conn, endpoint, clock = make()
    conn.start()
    delays = []
    for _ in range(4):
        proto = endpoint.accept()
        proto.request(b"never answered").addErrback(lambda _: None)
        clock.advance(0.2)
        drop(proto)
        assert conn.state == "backing_off"
        delays.append(conn.debug_state()["next_backoff_delay"])
        clock.advance(delays[-1])
    assert delays == pytest.approx([1.0, 1.6, 2.56, 4.096])


def test_when_ready_fails_fast_after_n_failed_attempts():
    conn, endpoint, clock = make(ScriptedEndpoint(auto="down"))
    d = conn.when_ready(fail_after=3)
    conn.start()
    clock.advance(1.0)
    assert not d.called
    clock.advance(1.6)
    (result,) = outcomes([d])
    assert isinstance(result, Failure) and result.check(ConnectFailed)
    assert result.value.attempts == 3
    assert "refused" in str(result.value)


def test_connect_timeout_fails_the_attempt():
    conn, endpoint, clock = make(connect_timeout=5.0)
    conn.start()
    clock.advance(4.9)
    assert conn.state == "connecting"
    clock.advance(0.1)
    assert conn.state == "backing_off"
    assert "timed out" in conn.last_error


def test_default_connect_timeout_is_grpc_minimum_of_20_seconds():
    conn, endpoint, clock = make()
    conn.start()
    clock.advance(19.9)
    assert conn.state == "connecting"
    clock.advance(0.1)
    assert conn.state == "backing_off"


def test_prepare_hook_runs_before_ready_and_its_failure_is_a_failed_attempt():
    seen = []
    results = [fail(RuntimeError("auth rejected")), succeed(None)]

    def prepare(proto):
        seen.append(proto)
        return results.pop(0)

    conn, endpoint, clock = make(prepare=prepare)
    conn.start()
    first = endpoint.accept()
    assert conn.state == "backing_off"
    assert "auth rejected" in conn.last_error
    assert first.transport.disconnecting, "the unprepared connection is closed"
    clock.advance(1.0)
    second = endpoint.accept()
    assert conn.state == "ready" and conn.protocol is second
    assert seen == [first, second]


def test_slow_prepare_hook_delays_ready():
    gate: Deferred[None] = Deferred()
    conn, endpoint, clock = make(prepare=lambda proto: gate)
    conn.start()
    endpoint.accept()
    assert conn.state == "connecting"
    gate.callback(None)
    assert conn.state == "ready"


def test_goaway_retires_the_connection_and_opens_a_replacement():
    conn, endpoint, clock = make()
    conn.start()
    old = endpoint.accept()
    d = old.request(b"in flight")
    clock.advance(1.0)  # healthy: a GOAWAY now is a graceful hand-over
    old.dataReceived(CODEC.encode(GOAWAY, 0, b""))
    assert conn.state == "connecting"
    assert old in conn.draining
    new = endpoint.accept()
    assert conn.protocol is new
    answer_all(old)
    assert outcomes([d]) == [b"in flight"]
    assert old.transport.disconnecting
    drop(old)
    assert conn.draining == set()
    assert conn.state == "ready"


def test_goaway_soon_after_connecting_is_a_failed_attempt_and_backs_off():
    conn, endpoint, clock = make(backoff=ConstantBackoff(2.0))
    conn.start()
    for attempt in (1, 2, 3):
        proto = endpoint.accept()
        clock.advance(0.5)  # younger than healthy_after (1 s)
        proto.dataReceived(CODEC.encode(GOAWAY, 0, b""))
        assert conn.state == "backing_off"
        assert conn.failed_attempts == attempt
        assert "GOAWAY 0.500 s after connecting" in conn.last_error
        assert not endpoint.pending, "no new attempt before the delay"
        clock.advance(1.99)
        assert not endpoint.pending
        clock.advance(0.01)
        assert len(endpoint.pending) == 1
    assert conn.connect_failures == 3


def test_goaway_on_a_healthy_connection_resets_the_backoff():
    conn, endpoint, clock = make(backoff=ConstantBackoff(2.0))
    conn.start()
    endpoint.accept().dataReceived(CODEC.encode(GOAWAY, 0, b""))
    clock.advance(2.0)
    proto = endpoint.accept()
    clock.advance(1.0)
    proto.dataReceived(CODEC.encode(GOAWAY, 0, b""))
    assert conn.state == "connecting", "reconnects at once"
    assert conn.failed_attempts == 0


def test_goaway_on_a_young_connection_that_served_requests_is_a_hand_over():
    conn, endpoint, clock = make(backoff=ConstantBackoff(2.0))
    conn.start()
    proto = endpoint.accept()
    d = proto.request(b"served")
    clock.advance(0)
    answer_all(proto)
    assert outcomes([d]) == [b"served"]
    proto.dataReceived(CODEC.encode(GOAWAY, 0, b""))
    assert conn.state == "connecting", "reconnects at once"
    assert conn.failed_attempts == 0


def test_close_waits_for_draining_goaway_connections():
    conn, endpoint, clock = make()
    conn.start()
    old = endpoint.accept()
    old.request(b"x")
    clock.advance(1.0)
    old.dataReceived(CODEC.encode(GOAWAY, 0, b""))
    new = endpoint.accept()
    closed = conn.close()
    drop(new)
    assert conn.state == "closed"
    assert not closed.called, "the retired connection is still draining"
    answer_all(old)
    drop(old)
    assert closed.called


@pytest.mark.parametrize("where", ["idle", "connecting", "backing_off", "ready"])
def test_close_in_each_state_ends_closed_and_fires(where):
    conn, endpoint, clock = make()
    waiter = conn.when_ready()
    if where != "idle":
        conn.start()
    if where == "backing_off":
        endpoint.refuse()
    proto = endpoint.accept() if where == "ready" else None
    assert conn.state == where
    closed = conn.close()
    if proto is not None:
        assert conn.state == "closing"
        drop(proto)
    assert conn.state == "closed"
    assert closed.called
    clock.advance(1000)
    assert clock.getDelayedCalls() == [], "no retry timer left behind"
    assert len(endpoint.pending) == 0
    if where != "ready":
        assert outcomes([waiter])[0].check(ClientClosed)
    assert outcomes([conn.when_ready()])[0].check(ClientClosed)


def test_close_with_drain_lets_in_flight_requests_finish():
    conn, endpoint, clock = make()
    conn.start()
    proto = endpoint.accept()
    d = proto.request(b"finish me")
    clock.advance(0)
    closed = conn.close()
    assert conn.state == "closing"
    answer_all(proto)
    assert outcomes([d]) == [b"finish me"]
    drop(proto)
    assert closed.called


def test_abort_fails_in_flight_requests():
    conn, endpoint, clock = make()
    conn.start()
    proto = endpoint.accept()
    d = proto.request(b"doomed")
    clock.advance(0)
    conn.close(drain=False)
    drop(proto)
    assert outcomes([d])[0].check(ConnectionLost)
    assert conn.state == "closed"


def test_listener_may_close_reentrantly_during_a_transition():
    conn, endpoint, clock = make()
    conn.add_listener(lambda c, old, new: c.close() if new == "ready" else None)
    conn.start()
    proto = endpoint.accept()
    assert conn.state == "closing"
    drop(proto)
    assert conn.state == "closed"


# -- every input in every state ------------------------------------------------

INPUTS = [
    "start",
    "connected",
    "connect_failed",
    "lost",
    "retry",
    "goaway",
    "early_goaway",
    "drained",
    "when_ready",
    "close",
    "abort",
    "state_name",
    "ready_protocol",
]
# The state each input leads to, in INPUTS order.
EXPECTED = {
    state: row.split()
    for state, row in {
        "idle": "connecting idle idle idle idle idle idle idle idle closed closed "
        "idle idle",
        "connecting": "connecting ready backing_off connecting connecting connecting "
        "connecting connecting connecting closed closed connecting connecting",
        "ready": "ready ready ready backing_off ready connecting backing_off "
        "ready ready closing closing ready ready",
        "backing_off": "backing_off backing_off backing_off backing_off connecting "
        "backing_off backing_off backing_off backing_off closed closed backing_off "
        "backing_off",
        "closing": "closing closing closed closed closing closing closing "
        "closing closing closing closing closing closing",
        "closed": " ".join(["closed"] * 13),
    }.items()
}


def into(state: str) -> tuple[Connection, ScriptedEndpoint, Clock]:
    conn, endpoint, clock = make()
    if state != "idle":
        conn.start()
    if state == "backing_off":
        endpoint.refuse()
    if state in ("ready", "closing"):
        proto = endpoint.accept()
        proto.request(b"keeps the drain open")
        clock.advance(0)
    if state == "closing":
        conn.close()
    if state == "closed":
        conn.close()
    assert conn.state == state
    return conn, endpoint, clock


def feed(conn: Connection, endpoint: ScriptedEndpoint, name: str) -> None:
    machine = conn._machine
    run = conn._core.feed
    if name == "connected":
        stray = FramedClientFactory().buildProtocol(None)
        stray.makeConnection(StringTransport())
        if conn.state == "connecting":
            endpoint.attempts[-1][1].callback(stray)
        else:
            run(partial(machine.connected, stray))
    elif name == "connect_failed":
        if conn.state == "connecting":
            endpoint.refuse()
        else:
            run(machine.connect_failed)
    elif name == "lost":
        if conn.state in ("ready", "closing") and conn._core.protocol is not None:
            drop(conn._core.protocol)
        else:
            run(machine.lost)
    elif name in ("goaway", "early_goaway"):
        if conn.state == "ready":
            if name == "goaway":
                # A healthy connection: older than healthy_after.
                conn._core.clock.advance(1.0)
            conn.protocol.dataReceived(CODEC.encode(GOAWAY, 0, b""))
        else:
            run(getattr(machine, name))
    elif name == "drained":
        stray = FramedClientFactory().buildProtocol(None)
        run(partial(machine.drained, stray))
    elif name == "when_ready":
        conn.when_ready().addErrback(lambda f: None)
    elif name == "close":
        conn.close()
    elif name == "abort":
        conn.close(drain=False)
    elif name == "state_name":
        assert machine.state_name() == conn.state
    elif name == "ready_protocol":
        assert machine.ready_protocol() is conn.protocol
    else:
        run(getattr(machine, name))


@pytest.mark.parametrize("state", list(EXPECTED))
@pytest.mark.parametrize("index", range(len(INPUTS)), ids=INPUTS)
def test_every_input_in_every_state_is_defined(state, index):
    conn, endpoint, clock = into(state)
    heard = []
    conn.add_listener(lambda c, old, new: heard.append((old, new)))
    feed(conn, endpoint, INPUTS[index])
    after = EXPECTED[state][index]
    assert conn.state == after
    if after != state:
        assert heard[0][0] == state and heard[-1][1] == after, "listeners heard"
    else:
        assert heard == []


def test_constant_backoff_policy_is_honoured():
    conn, endpoint, clock = make(
        ScriptedEndpoint(auto="down"), backoff=ConstantBackoff(2.0)
    )
    conn.start()
    clock.advance(1.99)
    assert len(endpoint.attempts) == 1
    clock.advance(0.01)
    assert len(endpoint.attempts) == 2


def test_listeners_see_why_when_backing_off():
    conn, endpoint, clock = make()
    seen = []
    conn.add_listener(lambda c, old, new: seen.append((new, c.last_error)))
    conn.start()
    endpoint.refuse()
    assert seen[-1][0] == "backing_off"
    assert "refused" in seen[-1][1]


def test_a_server_that_drops_one_request_in_500_does_not_stall_the_pool():
    """
    Issue 23, break 6, through the client: a server that drops the
    connection on 0.2 % of requests (each of the pool's 4 connections is
    dropped about once a second, young each time) keeps serving: the
    connections reconnect at once, nothing fails with ``Unavailable``, and
    only the requests in flight on a dropped connection are lost.
    """
    client, server = memory_client(pool_size=4)
    server.flush()
    results = []
    drops = 0
    ready = []
    for tick in range(500):  # 5 s at 2,000 requests a second
        for i in range(20):
            if (tick * 20 + i) % 500 == 499:
                drops += 1
                results.append(client.request(b"!drop"))
            else:
                results.append(client.request(b"r"))
        server.advance(0.01)
        ready.append(client.pool.ready_count)
    server.advance(1.0)
    got = outcomes(results)
    failures = [r for r in got if isinstance(r, Failure)]
    assert not [f for f in failures if f.check(Unavailable)]
    assert all(f.check(ConnectionLost) for f in failures), failures[:3]
    # What was in flight on the dropped connection (its request included).
    assert len(failures) <= drops * 10, (len(failures), drops)
    assert min(ready[50:]) >= 3, "at most the one just dropped is reconnecting"
    assert got.count(b"r") >= len(got) - drops * 10
