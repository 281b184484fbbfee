"""
``when_ready`` waiters are released when cancelled, and listeners and
callbacks find a connection they may query and drive.
"""

from __future__ import annotations

import gc
import weakref

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from framedclient.backoff import ConstantBackoff
from framedclient.client import FramedClient
from framedclient.connection import Connection
from framedclient.errors import ClientClosed
from framedclient.protocol import FramedClientFactory

from .fakes import ScriptedEndpoint, drop
from .wire import outcomes


def make(
    endpoint: ScriptedEndpoint | None = None,
) -> tuple[Connection, ScriptedEndpoint, Clock]:
    clock = Clock()
    endpoint = endpoint or ScriptedEndpoint()
    conn = Connection(
        endpoint, FramedClientFactory(clock=clock), clock, backoff=ConstantBackoff(1.0)
    )
    return conn, endpoint, clock


def waiters(conn: Connection) -> int:
    return conn.debug_state()["ready_waiters"]


def test_cancelled_when_ready_calls_leave_no_waiter_on_the_connection():
    conn, endpoint, clock = make()
    conn.start()
    calls = [conn.when_ready() for _ in range(100)]
    assert waiters(conn) == 100
    for d in calls:
        d.cancel()
    assert waiters(conn) == 0
    assert all(r.check(CancelledError) for r in outcomes(calls))


def test_a_cancelled_waiter_is_not_fired_when_the_connection_becomes_ready():
    conn, endpoint, clock = make()
    conn.start()
    cancelled, kept = conn.when_ready(), conn.when_ready()
    cancelled.cancel()
    proto = endpoint.accept()
    assert outcomes([kept]) == [proto]
    assert outcomes([cancelled])[0].check(CancelledError)


def test_cancelling_the_clients_when_ready_releases_every_connection_wait():
    clock = Clock()
    endpoints = [ScriptedEndpoint(), ScriptedEndpoint()]
    client = FramedClient(endpoints, clock, pool_size=1)
    calls = [client.when_ready() for _ in range(100)]
    assert [waiters(c) for c in client.pool] == [100, 100]
    for d in calls:
        d.cancel()
    assert [waiters(c) for c in client.pool] == [0, 0]
    assert all(r.check(CancelledError) for r in outcomes(calls))
    client.close(timeout=0)


def test_a_ready_connection_releases_the_clients_other_waits():
    clock = Clock()
    endpoints = [ScriptedEndpoint(), ScriptedEndpoint()]
    client = FramedClient(endpoints, clock, pool_size=1)
    ready = client.when_ready()
    endpoints[0].accept()
    assert outcomes([ready]) == [None]
    assert [waiters(c) for c in client.pool] == [0, 0]
    client.close(timeout=0)


def test_when_ready_while_ready_fires_at_once_with_the_protocol():
    conn, endpoint, clock = make()
    conn.start()
    proto = endpoint.accept()
    assert outcomes([conn.when_ready()]) == [proto]
    assert waiters(conn) == 0


def test_closing_fails_parked_waiters_and_leaves_none():
    conn, endpoint, clock = make()
    conn.start()
    d = conn.when_ready()
    conn.close()
    (result,) = outcomes([d])
    assert isinstance(result, Failure) and result.check(ClientClosed)
    assert waiters(conn) == 0


def test_listeners_may_query_the_connection_during_a_change():
    conn, endpoint, clock = make()
    seen = []
    conn.add_listener(
        lambda c, old, new: seen.append((old, new, c.protocol is not None, repr(c)))
    )
    conn.start()
    endpoint.accept()
    assert seen[-1][:3] == ("connecting", "ready", True)
    assert "ready" in seen[-1][3]


def test_listeners_hear_every_change_in_order_even_when_it_is_immediate():
    conn, endpoint, clock = make(ScriptedEndpoint(auto="down"))
    heard = []
    conn.add_listener(lambda c, old, new: heard.append((old, new)))
    conn.start()
    assert heard == [("idle", "connecting"), ("connecting", "backing_off")]


def test_a_waiter_callback_may_close_the_connection():
    conn, endpoint, clock = make()
    conn.start()
    d = conn.when_ready()
    closed = []
    d.addCallback(lambda proto: conn.close().addCallback(closed.append))
    proto = endpoint.accept()
    assert conn.state == "closing"
    drop(proto)
    assert conn.state == "closed" and closed == [None]


def test_a_closed_connection_keeps_no_protocol_alive():
    conn, endpoint, clock = make()
    conn.start()
    proto = endpoint.accept()
    ref = weakref.ref(proto)
    closed = conn.close()
    drop(proto)
    assert outcomes([closed]) == [None]
    endpoint.attempts.clear()
    endpoint.protocols.clear()
    del proto
    gc.collect()
    assert ref() is None, gc.get_referrers(ref())
