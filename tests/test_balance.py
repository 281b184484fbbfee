"""
Pick policies: the pool asks its balancer, and LeastLoaded spreads load.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from framedclient.backoff import ExponentialBackoff
from framedclient.balance import LeastLoaded
from framedclient.client import FramedClient

from .fakes import ScriptedEndpoint


class FakeProto:
    def __init__(self, name: str, load: int, accepting: bool = True) -> None:
        self.name = name
        self.table_size = load
        self.accepting = accepting

    def __repr__(self) -> str:
        return self.name


def test_least_loaded_picks_the_connection_with_the_smallest_table():
    protos = [FakeProto("a", 5), FakeProto("b", 1), FakeProto("c", 3)]
    assert LeastLoaded().pick(protos, set()).name == "b"  # type: ignore[arg-type,union-attr]


def test_least_loaded_skips_leased_and_full_connections():
    a, b, c = FakeProto("a", 0), FakeProto("b", 0, accepting=False), FakeProto("c", 9)
    assert LeastLoaded().pick([a, b, c], {a}) is c  # type: ignore[arg-type,list-item]


def test_least_loaded_returns_none_when_nothing_can_take_a_request():
    protos = [FakeProto("a", 0, accepting=False)]
    assert LeastLoaded().pick(protos, set()) is None  # type: ignore[arg-type]
    assert LeastLoaded().pick([], set()) is None


def test_least_loaded_rotates_ties_over_every_connection():
    protos = [FakeProto(n, 0) for n in "abc"]
    policy = LeastLoaded()
    picked = {policy.pick(protos, set()).name for _ in range(3)}  # type: ignore[arg-type,union-attr]
    assert picked == {"a", "b", "c"}


class Always:
    """
    A policy that always wants the last ready connection.
    """

    def __init__(self) -> None:
        self.calls = 0

    def pick(self, ready, leased):
        self.calls += 1
        candidates = [p for p in ready if p.accepting and p not in leased]
        return candidates[-1] if candidates else None


def test_the_client_sends_where_the_pools_balancer_says():
    clock = Clock()
    endpoint = ScriptedEndpoint(auto="up")
    policy = Always()
    client = FramedClient(
        [endpoint],
        clock,
        pool_size=3,
        backoff=ExponentialBackoff(random=lambda: 0.5),
        balancer=policy,
    )
    for i in range(6):
        client.request(b"%d" % i)
    assert policy.calls == 6
    loads = sorted(p.pending for p in endpoint.protocols)
    assert loads == [0, 0, 6]


def test_take_hands_out_a_slot_and_a_connection_together_or_nothing():
    from framedclient.pool import Limiter, Pool

    class FakeConnection:
        def __init__(self, proto):
            self.protocol = proto
            self.listeners = []

        def add_listener(self, listener):
            self.listeners.append(listener)

    a = FakeProto("a", 0)
    conn = FakeConnection(a)
    limiter = Limiter(Clock(), max_in_flight=1, max_pending=0)
    pool = Pool([conn], limiter=limiter)  # type: ignore[list-item]
    for listener in conn.listeners:
        listener(conn, "connecting", "ready")
    assert pool.take() is a and limiter.in_flight == 1
    assert pool.take() is None and limiter.in_flight == 1  # no slot left
    limiter.release()
    a.accepting = False
    assert pool.take() is None and limiter.in_flight == 0  # no connection
