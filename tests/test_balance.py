"""
Pick policies: the pool asks its balancer; p2c, least-loaded, round robin,
weights and ketama spread load or route by key as documented.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from twisted.internet.task import Clock

from framedclient.backoff import ExponentialBackoff
from framedclient.balance import (
    Ketama,
    LeastLoaded,
    PowerOfTwoChoices,
    ReadyConnections,
    RoundRobin,
    WeightedRoundRobin,
    make_balancer,
    ring_node_name,
)
from framedclient.client import FramedClient
from framedclient.config import InvalidSetting
from framedclient.health import HealthBoard
from framedclient.ketama import KetamaRing

from .fakes import ScriptedEndpoint, answer_all


class FakeProto:
    #: Connections made outside a client have no host: p2c compares loads.
    health = None

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


# -- the policies --------------------------------------------------------------



def grouped(*pairs):
    """
    ReadyConnections from ``(upstream, proto)`` pairs, every upstream listed.
    """
    upstreams = tuple(dict.fromkeys(u for u, _ in pairs))
    return ReadyConnections(upstreams, pairs)


def ready(*pairs):
    """
    The plain list a Balancer gets.
    """
    return grouped(*pairs).connections


def scripted(draws):
    values = iter(draws)
    return lambda: next(values)


def test_p2c_sends_to_the_less_loaded_of_its_two_draws():
    a, b, c = FakeProto("a", 9), FakeProto("b", 2), FakeProto("c", 5)
    # Draws index 0 (a), then 1 of the remaining two (c): c is less loaded.
    policy = PowerOfTwoChoices(random=scripted([0.0, 0.9]))
    assert policy.pick(ready(("u", a), ("u", b), ("u", c)), set()) is c


def test_p2c_never_draws_the_same_connection_twice():
    a, b = FakeProto("a", 5), FakeProto("b", 0)
    # Both draws land on index 0 of their range: a, then the other one, b.
    policy = PowerOfTwoChoices(random=scripted([0.0, 0.0]))
    assert policy.pick(ready(("u", a), ("u", b)), set()) is b


def test_p2c_is_reproducible_with_a_seeded_random():
    protos = [FakeProto(str(i), i % 3) for i in range(8)]
    conns = ready(*(("u", p) for p in protos))
    first = PowerOfTwoChoices(random.Random(7).random)
    second = PowerOfTwoChoices(random.Random(7).random)
    assert [first.pick(conns, set()) for _ in range(50)] == [
        second.pick(conns, set()) for _ in range(50)
    ]


def test_p2c_keeps_the_last_winner_while_it_is_less_busy_than_a_random_one():
    a, b, c = FakeProto("a", 0), FakeProto("b", 0), FakeProto("c", 0)
    conns = ready(("u", a), ("u", b), ("u", c))
    policy = PowerOfTwoChoices(random=scripted([0.9, 0.0, 0.4, 0.9, 0.0, 0.0]))
    # First pick: draws c (index 2) and a (index 0); on a tie the random
    # draw, c, wins and is remembered.
    assert policy.pick(conns, set()) is c
    a.table_size, b.table_size = 5, 3
    # c (remembered, 0) against b (drawn, 3): c stays.
    assert policy.pick(conns, set()) is c
    # The draw is c itself: another one, a (5); c stays.
    assert policy.pick(conns, set()) is c
    # c against a random one that is just as idle: the random one wins.
    a.table_size = 0
    assert policy.pick(conns, set()) is a


def test_p2c_without_memory_draws_both_candidates():
    a, b, c = FakeProto("a", 0), FakeProto("b", 5), FakeProto("c", 5)
    policy = PowerOfTwoChoices(random=scripted([0.5, 0.9, 0.5, 0.9]), memory=False)
    conns = ready(("u", a), ("u", b), ("u", c))
    # Draws b (index 1) then c (index 2) both times: a is never a candidate,
    # and on their tie the first draw, b, wins.
    assert policy.pick(conns, set()) is b
    assert policy.pick(conns, set()) is b


def test_p2c_uses_the_other_draw_when_one_cannot_take_a_request():
    a, b = FakeProto("a", 0, accepting=False), FakeProto("b", 7)
    policy = PowerOfTwoChoices(random=scripted([0.0, 0.0]))
    assert policy.pick(ready(("u", a), ("u", b)), set()) is b


def test_p2c_scans_when_neither_draw_can_take_a_request():
    a, b, c = FakeProto("a", 0), FakeProto("b", 0), FakeProto("c", 4)
    policy = PowerOfTwoChoices(random=scripted([0.0, 0.0]))
    assert policy.pick(ready(("u", a), ("u", b), ("u", c)), {a, b}) is c
    assert PowerOfTwoChoices().pick(ready(("u", a)), {a}) is None
    assert PowerOfTwoChoices().pick(ready(), set()) is None


def test_p2c_spreads_an_even_load_over_every_connection():
    protos = [FakeProto(str(i), 0) for i in range(4)]
    policy = PowerOfTwoChoices(random.Random(1).random)
    conns = ready(*(("u", p) for p in protos))
    for _ in range(400):
        policy.pick(conns, set()).table_size += 1  # type: ignore[union-attr]
    loads = sorted(p.table_size for p in protos)
    # Two choices keep the loads within a few requests of each other.
    assert loads[-1] - loads[0] <= 4


def test_round_robin_takes_each_connection_in_turn_skipping_full_ones():
    a, b, c = FakeProto("a", 9), FakeProto("b", 0, accepting=False), FakeProto("c", 0)
    policy = RoundRobin()
    conns = ready(("u", a), ("u", b), ("u", c))
    assert [policy.pick(conns, set()).name for _ in range(4)] == ["a", "c", "a", "c"]  # type: ignore[union-attr]
    assert policy.pick(conns, {a, c}) is None


def test_weighted_round_robin_shares_requests_by_weight_smoothly():
    a1, a2, b = FakeProto("a1", 0), FakeProto("a2", 0), FakeProto("b", 0)
    policy = WeightedRoundRobin({"A": 3, "B": 1})
    conns = grouped(("A", a1), ("A", a2), ("B", b))
    picks = []
    for _ in range(8):
        proto = policy.pick_upstream(conns, set(), None)
        assert proto is not None
        proto.table_size += 1
        picks.append("B" if proto is b else "A")
    assert picks.count("A") == 6 and picks.count("B") == 2
    # Smooth: B gets one of every four picks, not two in a row after six As.
    assert picks[:4].count("B") == 1 and picks[4:].count("B") == 1
    # Within an upstream, the least-loaded connection.
    assert abs(a1.table_size - a2.table_size) <= 1


def test_weighted_round_robin_skips_upstreams_that_cannot_take_a_request():
    a, b = FakeProto("a", 0, accepting=False), FakeProto("b", 0)
    policy = WeightedRoundRobin({"A": 100})
    conns = grouped(("A", a), ("B", b))
    assert all(policy.pick_upstream(conns, set(), None) is b for _ in range(5))


@pytest.mark.parametrize("weight", [0, -1, float("inf"), True, "2"])
def test_weights_must_be_positive_numbers(weight):
    with pytest.raises(ValueError, match="weight of 'A'"):
        WeightedRoundRobin({"A": weight})


@pytest.mark.parametrize(
    ("upstream", "node"),
    [
        ("tcp:10.0.0.1:11211", "10.0.0.1:11211"),
        ("tcp:host=cache1:port=11211", "cache1:11211"),
        ("tls:cache1:443:trustRoots=/etc/ca", "cache1:443"),
        ("cache-a", "cache-a"),
        ("cache.example.com:11211@10.0.0.7:11211", "10.0.0.7:11211"),
        ("tcp:[::1]:11211", "[::1]:11211"),
        ("tcp6:host=2001\\:db8\\:\\:1:port=11211", "[2001:db8::1]:11211"),
        ("unix:/run/cache.sock", "unix:/run/cache.sock"),
    ],
)
def test_ring_nodes_are_named_host_port(upstream, node):
    assert ring_node_name(upstream) == node


def test_ketama_sends_a_key_to_its_upstreams_least_loaded_connection():
    names = ["tcp:10.0.0.1:11211", "tcp:10.0.0.2:11211", "tcp:10.0.0.3:11211"]
    protos = {n: [FakeProto(f"{n}/0", 3), FakeProto(f"{n}/1", 1)] for n in names}
    conns = grouped(*((n, p) for n in names for p in protos[n]))
    ring = KetamaRing([ring_node_name(n) for n in names])
    policy = Ketama()
    for i in range(200):
        key = b"key%d" % i
        proto = policy.pick_upstream(conns, set(), key)
        home = "tcp:" + ring.node_for(key)
        assert proto is protos[home][1]


def test_ketama_moves_a_key_to_the_next_upstream_on_the_ring_when_its_own_is_out():
    names = ["tcp:10.0.0.1:11211", "tcp:10.0.0.2:11211", "tcp:10.0.0.3:11211"]
    protos = {n: FakeProto(n, 0) for n in names}
    down = names[1]
    # The down upstream stays on the ring (upstreams), with no connection.
    conns = ReadyConnections(tuple(names), ((n, protos[n]) for n in names if n != down))
    ring = KetamaRing([ring_node_name(n) for n in names])
    without = KetamaRing([ring_node_name(n) for n in names if n != down])
    policy = Ketama()
    for i in range(300):
        key = b"k%d" % i
        picked = policy.pick_upstream(conns, set(), key)
        assert picked is protos["tcp:" + without.node_for(key)]
        if ring.node_for(key) != ring_node_name(down):
            # Keys of the hosts that are up do not move.
            assert picked is protos["tcp:" + ring.node_for(key)]


def test_ketama_without_a_key_spreads_like_p2c():
    a, b = FakeProto("a", 5), FakeProto("b", 0)
    policy = Ketama(fallback=PowerOfTwoChoices(random=scripted([0.0, 0.0])))
    assert policy.pick_upstream(grouped(("A", a), ("B", b)), set(), None) is b


def test_ketama_finds_nothing_when_no_upstream_can_take_the_request():
    a = FakeProto("a", 0, accepting=False)
    assert Ketama().pick_upstream(grouped(("tcp:h:1", a)), set(), b"k") is None


def test_every_policy_name_the_settings_accept_can_be_made():
    from framedclient.balance import BALANCERS
    from framedclient.config import BALANCER_NAMES

    assert sorted(BALANCERS) == sorted(BALANCER_NAMES)


def test_policies_are_made_fresh_from_their_names():
    assert isinstance(make_balancer("p2c"), PowerOfTwoChoices)
    assert isinstance(make_balancer("round-robin"), RoundRobin)
    assert make_balancer("ketama") is not make_balancer("ketama")
    policy = RoundRobin()
    assert make_balancer(policy) is policy
    with pytest.raises(ValueError, match="unknown balancer 'nope'"):
        make_balancer("nope")


# -- the client: balancer=, key= ------------------------------------------------


def keyed_client(balancer="ketama", n=3, **options):
    clock = Clock()
    endpoints = [ScriptedEndpoint(auto="up") for _ in range(n)]
    names = [f"tcp:10.0.0.{i + 1}:11211" for i in range(n)]
    client = FramedClient(
        endpoints,
        clock,
        pool_size=2,
        backoff=ExponentialBackoff(random=lambda: 0.5),
        balancer=balancer,
        names=names,
        **options,
    )
    return client, endpoints, names


def pending_by_endpoint(endpoints):
    return [sum(p.pending for p in e.protocols) for e in endpoints]


def test_the_default_policy_is_power_of_two_choices():
    client, _, _ = keyed_client(balancer="p2c")
    assert isinstance(client.pool.balancer, PowerOfTwoChoices)
    assert FramedClient([ScriptedEndpoint()], Clock(), start=False).config.balancer == "p2c"


def test_a_keyed_request_goes_to_the_host_ketama_places_its_key_on():
    client, endpoints, names = keyed_client()
    ring = KetamaRing([ring_node_name(n) for n in names])
    for i in range(60):
        key = f"user:{i}"
        before = pending_by_endpoint(endpoints)
        client.request(b"x", key=key)
        after = pending_by_endpoint(endpoints)
        home = names.index("tcp:" + ring.node_for(key))
        assert [a - b for a, b in zip(after, before, strict=True)] == [
            int(e == home) for e in range(len(endpoints))
        ]


def test_text_and_bytes_keys_go_to_the_same_host():
    client, endpoints, _ = keyed_client()
    client.request(b"x", key="ключ")
    first = pending_by_endpoint(endpoints)
    client.request(b"x", key="ключ".encode())
    assert pending_by_endpoint(endpoints) == [2 * n for n in first]


def test_a_key_of_the_wrong_type_raises_at_the_call():
    client, endpoints, _ = keyed_client()
    with pytest.raises(TypeError, match="key must be bytes or str"):
        client.request(b"x", key=42)  # type: ignore[arg-type]
    assert client.in_flight == 0


def test_a_key_is_ignored_by_a_policy_that_does_not_route_by_key():
    client, endpoints, _ = keyed_client(balancer="round_robin")
    for _ in range(6):
        client.request(b"x", key="same")
    assert pending_by_endpoint(endpoints) == [2, 2, 2]


def test_a_keyed_request_that_waits_for_a_connection_goes_to_its_host():
    clock = Clock()
    endpoints = [ScriptedEndpoint() for _ in range(2)]
    names = ["tcp:10.0.0.1:11211", "tcp:10.0.0.2:11211"]
    client = FramedClient(
        endpoints, clock, pool_size=1, balancer="ketama", names=names
    )
    ring = KetamaRing([ring_node_name(n) for n in names])
    key = next(k for k in (f"k{i}" for i in range(100)) if ring.node_for(k) == "10.0.0.2:11211")
    d = client.request(b"hello", key=key)
    endpoints[1].accept()
    endpoints[0].accept()
    assert pending_by_endpoint(endpoints) == [0, 1]
    clock.advance(0)  # written at the end of the reactor turn
    answer_all(endpoints[1].protocols[0])
    assert d.result == b"hello"


def test_the_balancer_is_chosen_by_name_in_from_endpoint_and_checked():
    from twisted.internet import reactor

    client = FramedClient.from_endpoint(
        reactor,
        ["tcp:127.0.0.1:1", "tcp:127.0.0.1:2"],
        balancer="round_robin",
        start=False,
    )
    assert isinstance(client.pool.balancer, RoundRobin)
    assert client.pool.upstream_names == ["tcp:127.0.0.1:1"] * 4 + ["tcp:127.0.0.1:2"] * 4
    with pytest.raises(InvalidSetting, match="balancer must be one of"):
        FramedClient([ScriptedEndpoint()], Clock(), balancer="fastest", start=False)
    with pytest.raises(TypeError, match="balancer must be one of"):
        FramedClient([ScriptedEndpoint()], Clock(), balancer=3, start=False)


def test_unnamed_endpoints_are_named_by_address_and_told_apart():
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint

    e = TCP4ClientEndpoint(reactor, "127.0.0.1", 9000)
    client = FramedClient([e, e], Clock(), pool_size=1, start=False)
    assert client.pool.upstream_names == ["tcp:127.0.0.1:9000", "tcp:127.0.0.1:9000#2"]


def test_two_upstreams_with_one_ketama_node_name_are_refused_at_construction():
    with pytest.raises(ValueError, match="same ketama node name"):
        FramedClient(
            [ScriptedEndpoint(), ScriptedEndpoint()],
            Clock(),
            balancer="ketama",
            names=["tcp:cache:11211", "tls:cache:11211"],
            start=False,
        )


def test_a_weighted_policy_object_shares_requests_between_hosts_by_weight():
    names = ["tcp:10.0.0.1:11211", "tcp:10.0.0.2:11211"]
    policy = WeightedRoundRobin({names[0]: 3, names[1]: 1})
    client, endpoints, _ = keyed_client(balancer=policy, n=2)
    assert client.pool.balancer is policy
    for _ in range(40):
        client.request(b"x")
    assert pending_by_endpoint(endpoints) == [30, 10]


def test_weights_of_hosts_the_client_does_not_have_are_refused():
    policy = WeightedRoundRobin({"tcp:10.0.0.1:9000": 3})
    with pytest.raises(ValueError, match="not upstreams of this client"):
        keyed_client(balancer=policy, n=2)


def test_ketama_follows_the_host_set_moving_only_the_keys_of_a_new_host():
    client, endpoints, names = keyed_client(n=2)
    third = ScriptedEndpoint(auto="up")
    client.set_endpoints([*endpoints, third], names=[*names, "tcp:10.0.0.3:11211"])
    assert client.pool.ready_count == 6
    before = KetamaRing([ring_node_name(n) for n in names])
    after = KetamaRing([ring_node_name(n) for n in [*names, "tcp:10.0.0.3:11211"]])
    everyone = [*endpoints, third]
    for i in range(60):
        key = f"user:{i}"
        counts = pending_by_endpoint(everyone)
        client.request(b"x", key=key)
        home = [a - b for a, b in zip(pending_by_endpoint(everyone), counts, strict=True)]
        node = after.node_for(key)
        assert home[["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"].index(node)] == 1
        if node != "10.0.0.3:11211":
            assert node == before.node_for(key)  # keys of the old hosts stay


def weighted_sequence(weights: dict[str, float], picks: int) -> str:
    """
    The upstreams a WeightedRoundRobin picks, one letter each, with one
    connection per upstream listed in ``weights``' order.
    """
    protos = {name: FakeProto(name, 0) for name in weights}
    policy = WeightedRoundRobin(weights)
    conns = grouped(*protos.items())
    sequence = ""
    for _ in range(picks):
        proto = policy.pick_upstream(conns, set(), None)
        assert proto is not None
        sequence += proto.name
    return sequence


def test_weighted_round_robin_gives_nginxs_smooth_order_for_5_1_1():
    # nginx's documented example (ngx_http_upstream_round_robin.c): weights
    # 5, 1, 1 give a a b a c a a over each cycle of 7, and every cycle repeats.
    assert weighted_sequence({"a": 5, "b": 1, "c": 1}, 14) == "aabacaa" * 2


@pytest.mark.parametrize(
    ("weights", "cycle"),
    [
        ({"a": 4, "b": 2, "c": 1}, "abacaba"),
        ({"a": 1, "b": 1, "c": 1}, "abc"),
        ({"a": 2, "b": 3}, "babab"),
    ],
)
def test_weighted_round_robin_cycles_in_nginxs_order_ties_to_the_first_upstream(
    weights, cycle
):
    assert weighted_sequence(weights, 2 * len(cycle)) == cycle * 2
# -- p2c by peak-EWMA latency x (in flight + 1) --------------------------------------


class HostedProto(FakeProto):
    def __init__(self, name: str, health, load: int = 0, last_read: float = 0.0):
        super().__init__(name, load)
        self.health = health
        self.last_read = last_read


def two_hosts(decay_time: float = 2.0):
    clock = Clock()
    board = HealthBoard(clock, decay_time=decay_time)
    return clock, board.host("fast"), board.host("slow")


def picks(protos, n: int = 200) -> Counter:
    policy = PowerOfTwoChoices(random.Random(3).random)
    return Counter(policy.pick(protos, set()).name for _ in range(n))  # type: ignore[union-attr]


def test_p2c_sends_nothing_to_a_slow_host_while_a_fast_one_is_idle():
    clock, fast, slow = two_hosts()
    fast.settled(0.001, True, 0.0)
    slow.settled(0.200, True, 0.0)
    protos = [HostedProto("fast", fast), HostedProto("slow", slow)]
    assert picks(protos) == {"fast": 200}
    # Without latency, the same two idle connections split evenly.
    blind = PowerOfTwoChoices(random.Random(3).random, latency=False)
    counted = Counter(blind.pick(protos, set()).name for _ in range(200))  # type: ignore[arg-type,union-attr]
    assert min(counted.values()) > 50


def test_p2c_weighs_latency_by_the_requests_in_flight_plus_one():
    clock, fast, slow = two_hosts()
    fast.settled(0.001, True, 0.0)
    slow.settled(0.200, True, 0.0)
    # 1 ms x 300 in flight costs more than 200 ms x 1.
    busy = HostedProto("fast", fast, load=299, last_read=0.0)
    assert picks([busy, HostedProto("slow", slow)]) == {"slow": 200}
    busy.table_size = 150
    assert picks([busy, HostedProto("slow", slow)]) == {"fast": 200}


def test_the_queue_a_latency_already_holds_is_not_counted_twice():
    # 64 callers keep ~8 requests on each connection to a fast host, whose
    # replies then take 10 ms (they wait behind each other).  An idle host
    # replying in 50 ms is no cheaper: a new request on the busy connection
    # waits 10 ms too, not 10 ms x 9 (Finagle's product would say 90 ms).
    clock, fast, slow = two_hosts()
    fast.settled(0.010, True, 0.0, 8)
    slow.settled(0.050, True, 0.0)
    busy = HostedProto("fast", fast, load=8, last_read=0.0)
    assert picks([busy, HostedProto("slow", slow)]) == {"fast": 200}
    # More in flight than its replies waited behind does cost more.
    busy.table_size = 60
    assert picks([busy, HostedProto("slow", slow)]) == {"slow": 200}
    # The latency estimate itself is what the replies took.
    assert fast.latency(0.0) == pytest.approx(0.010)


def test_a_cold_host_gets_a_trial_then_one_request_at_a_time_until_it_replies():
    clock, warm, cold = two_hosts()
    warm.settled(0.001, True, 0.0)
    idle_cold = HostedProto("cold", cold)
    assert picks([HostedProto("warm", warm), idle_cold]) == {"cold": 200}
    idle_cold.table_size = 1
    assert picks([HostedProto("warm", warm), idle_cold]) == {"warm": 200}


def test_a_slow_host_gets_a_new_trial_once_its_spell_has_decayed():
    clock, fast, slow = two_hosts(decay_time=2.0)
    slow.settled(0.200, True, 0.0)
    protos = [HostedProto("fast", fast), HostedProto("slow", slow)]
    fast.settled(0.001, True, 5.0)
    assert picks(protos) == {"fast": 200}, "5 s later, still slower"
    fast.settled(0.001, True, 12.0)
    assert picks(protos) == {"slow": 200}, "12 s later: 0.5 ms < 1 ms, a trial"


def test_a_connection_that_reads_nothing_with_requests_out_does_not_get_cheaper():
    clock, fast, silent = two_hosts(decay_time=2.0)
    silent.settled(5.0, False, 0.0)  # a timeout
    clock.advance(20.0)
    fast.settled(0.001, True, 20.0)
    waiting = HostedProto("silent", silent, load=1, last_read=20.0)
    # Its estimate has decayed to ~0.2 ms, but one request has been out,
    # unanswered, for 10 ms: it costs more than the fast host.
    clock.advance(0.01)
    assert picks([HostedProto("fast", fast), waiting]) == {"fast": 200}
    assert picks([HostedProto("fast", fast), HostedProto("silent", silent)]) == {
        "silent": 200
    }, "with nothing out, its decayed estimate wins: one trial"
