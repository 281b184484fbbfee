"""
A client whose host set changes while it runs: hosts join and take
traffic, removed hosts drain without failing what they hold, weights decide
connection shares, SRV priorities fall back and come back, and
``max_connection_age`` recycles connections.  In memory, on one
``task.Clock``, with the fc1 reference server behind every host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.names import dns

from framedclient.backoff import ConstantBackoff
from framedclient.client import FramedClient
from framedclient.discovery import (
    AddressHosts,
    AddressQuery,
    Host,
    RefreshPolicy,
    ServiceHosts,
    ServiceQuery,
)
from framedclient.errors import ClientClosed, Unavailable
from framedclient.membership import connection_count
from framedclient.testing import MemoryServer
from tests.test_discovery import FakeResolver, a, srv


class PushSource:
    """
    A host source the test drives: :meth:`push` hands a list over.
    """

    description = "pushed"

    def __init__(self) -> None:
        self.update: Callable[[list[Host]], None] | None = None
        self.refreshes = 0
        self.stopped = False

    def start(self, update: Callable[[list[Host]], None]) -> None:
        self.update = update

    def stop(self) -> None:
        self.stopped = True

    def refresh(self) -> None:
        self.refreshes += 1

    def debug_state(self) -> dict[str, Any]:
        return {"source": self.description}

    def push(self, hosts: list[Host]) -> None:
        assert self.update is not None, "the client has not started the source"
        self.update(hosts)


class Fleet:
    """
    Reference servers on one clock, one per host name, and a client.
    """

    def __init__(self) -> None:
        self.clock = Clock()
        self.servers: dict[str, MemoryServer] = {}

    def server(self, name: str) -> MemoryServer:
        if name not in self.servers:
            self.servers[name] = MemoryServer(clock=self.clock)
        return self.servers[name]

    def host(self, name: str, weight: int = 1, priority: int = 0) -> Host:
        return Host(name, name, self.server(name).endpoint(), weight, priority)

    def flush(self) -> None:
        moved = True
        while moved:
            moved = False
            for server in list(self.servers.values()):
                moved = server.flush() or moved

    def advance(self, seconds: float, step: float = 0.05) -> None:
        remaining = seconds
        while remaining > 1e-9:
            now = min(step, remaining)
            self.clock.advance(now)
            self.flush()
            remaining -= now

    def client(self, source: Any, **kw: Any) -> FramedClient:
        kw.setdefault("pool_size", 2)
        kw.setdefault("backoff", ConstantBackoff(1.0))
        kw.setdefault("request_timeout", 30.0)
        client = FramedClient([], self.clock, discovery=[source], **kw)
        self.flush()
        return client

    def open_to(self, name: str) -> int:
        return len(self.servers[name].open_connections)


def results(ds: list[Deferred[bytes]]) -> list[Any]:
    seen: list[Any] = []
    for d in ds:
        d.addBoth(seen.append)
    return seen


def served_by(fleet: Fleet, name: str) -> int:
    requests: int = fleet.servers[name].factory.requests  # type: ignore[attr-defined]
    return requests


def connections_of(client: FramedClient, name: str) -> list[Any]:
    return [c for c in client.pool if c.name.startswith(name + "/")]


# -- joining and leaving ------------------------------------------------------------------


def test_requests_wait_for_the_first_hosts_then_go_to_them():
    fleet, source = Fleet(), PushSource()
    client = fleet.client(source)
    assert len(client.pool) == 0
    ready = client.when_ready()
    ds = [client.request(b"early-%d" % i) for i in range(4)]
    assert not ready.called and client.queued == 4
    source.push([fleet.host("a")])
    fleet.flush()
    assert ready.called
    assert results(ds) == [b"early-%d" % i for i in range(4)]


def test_closing_before_any_host_is_found_fails_the_ready_waiters():
    fleet, source = Fleet(), PushSource()
    client = fleet.client(source)
    ready = client.when_ready()
    client.close()
    [failure] = results([ready])
    assert failure.check(ClientClosed)


def test_without_hosts_a_caller_who_will_not_wait_learns_why():
    fleet, source = Fleet(), PushSource()
    client = fleet.client(source)
    d = client.request(b"now", wait_for_ready=False)
    [failure] = results([d])
    assert failure.check(Unavailable)
    assert "no host found yet" in str(failure.value)


def test_a_host_that_joins_gets_its_connections_and_takes_traffic():
    fleet, source = Fleet(), PushSource()
    client = fleet.client(source)
    source.push([fleet.host("a")])
    fleet.flush()
    source.push([fleet.host("a"), fleet.host("b")])
    fleet.flush()
    assert fleet.open_to("a") == 2 and fleet.open_to("b") == 2
    assert len(client.pool) == 4 and client.pool.ready_count == 4
    ds = [client.request(b"r%d" % i) for i in range(40)]
    fleet.flush()
    assert results(ds) == [b"r%d" % i for i in range(40)]
    assert served_by(fleet, "b") > 0 and served_by(fleet, "a") > 0


def test_the_same_host_again_keeps_its_connections():
    fleet, source = Fleet(), PushSource()
    client = fleet.client(source)
    source.push([fleet.host("a")])
    fleet.flush()
    before = list(client.pool)
    source.push([fleet.host("a")])
    fleet.flush()
    assert list(client.pool) == before
    assert fleet.servers["a"].attempts == 2


def test_a_removed_host_drains_what_it_holds_and_takes_nothing_new():
    fleet, source = Fleet(), PushSource()
    client = fleet.client(source, pool_size=1)
    source.push([fleet.host("a")])
    fleet.flush()
    held = [client.request(b"!delay:2 held-%d" % i) for i in range(5)]
    fleet.flush()
    source.push([fleet.host("b")])
    fleet.flush()
    # a's connection left the pool but is still open, finishing its work.
    assert [c.name for c in client.pool] == ["b/0"]
    assert fleet.open_to("a") == 1
    assert client.debug_state()["discovery"]["retiring_connections"] == 1
    after = [client.request(b"after-%d" % i) for i in range(5)]
    fleet.flush()
    assert results(after) == [b"after-%d" % i for i in range(5)]
    fleet.advance(2.1)
    # Nothing in flight was failed by the removal.
    assert results(held) == [b"!delay:2 held-%d" % i for i in range(5)]
    assert fleet.open_to("a") == 0
    assert client.debug_state()["discovery"]["retiring_connections"] == 0
    assert client.in_flight == 0


def test_a_retired_connection_is_cut_off_after_retire_timeout_and_retries_move():
    fleet, source = Fleet(), PushSource()
    client = fleet.client(source, pool_size=1, retire_timeout=1.0)
    source.push([fleet.host("a")])
    fleet.flush()
    slow = client.request(b"!delay:10 slow", idempotent=True)
    fleet.flush()
    source.push([fleet.host("b")])
    fleet.advance(1.0)
    assert fleet.open_to("a") == 0
    fleet.advance(10.5)
    # Cut off after 1 s, then sent again on b (idempotent, within budget).
    assert results([slow]) == [b"!delay:10 slow"]
    assert served_by(fleet, "b") == 1


def test_set_endpoints_by_hand_replaces_the_hosts():
    fleet = Fleet()
    client = FramedClient(
        [fleet.server("a").endpoint()],
        fleet.clock,
        names=["a"],
        pool_size=1,
        backoff=ConstantBackoff(1.0),
    )
    fleet.flush()
    kept = list(client.pool)
    client.set_endpoints(
        [fleet.server("a").endpoint(), fleet.server("b").endpoint()], names=["a", "b"]
    )
    fleet.flush()
    assert client.pool.connections[0] is kept[0]  # same name: same connection
    assert [c.name for c in client.pool] == ["a/0", "b/0"]
    client.set_endpoints([fleet.server("b").endpoint()], names=["b"])
    fleet.flush()
    assert [c.name for c in client.pool] == ["b/0"] and fleet.open_to("a") == 0
    with pytest.raises(ValueError, match="at least one endpoint"):
        client.set_endpoints([])
    with pytest.raises(ValueError, match="one name per endpoint"):
        client.set_endpoints([fleet.server("b").endpoint()], names=["b", "c"])


def test_switching_to_dns_keeps_the_old_hosts_until_dns_answers():
    fleet, source = Fleet(), PushSource()
    client = FramedClient(
        [fleet.server("a").endpoint()],
        fleet.clock,
        names=["a"],
        pool_size=1,
        backoff=ConstantBackoff(1.0),
    )
    fleet.flush()
    client.set_endpoints([source])
    fleet.flush()
    assert [c.name for c in client.pool] == ["a/0"]  # DNS has not answered yet
    source.push([fleet.host("b")])
    fleet.flush()
    assert [c.name for c in client.pool] == ["b/0"]
    assert fleet.open_to("a") == 0


def test_close_waits_for_retiring_connections_and_stops_the_sources():
    fleet, source = Fleet(), PushSource()
    client = fleet.client(source, pool_size=1)
    source.push([fleet.host("a")])
    fleet.flush()
    held = client.request(b"!delay:1 held")
    fleet.flush()
    source.push([fleet.host("b")])
    fleet.flush()
    closed = client.close()
    fleet.flush()
    assert source.stopped and not closed.called
    fleet.advance(1.0)
    assert results([held]) == [b"!delay:1 held"]
    assert closed.called
    assert fleet.clock.getDelayedCalls() == []


# -- weights and priorities ------------------------------------------------------------


def test_connections_follow_weights():
    assert connection_count(1, [1, 1], 4) == 4
    assert connection_count(3, [3, 1], 4) == 6
    assert connection_count(1, [3, 1], 4) == 2
    assert connection_count(0, [100, 0], 4) == 1  # at least one
    assert connection_count(0, [0, 0], 4) == 4  # all zero: equal


def test_a_heavier_host_gets_more_connections_and_more_requests():
    fleet, source = Fleet(), PushSource()
    # The scanning policy shares requests exactly evenly between
    # connections (p2c, the default, within a request or two).
    client = fleet.client(source, pool_size=2, balancer="least_loaded")
    source.push([fleet.host("a", weight=3), fleet.host("b", weight=1)])
    fleet.flush()
    assert fleet.open_to("a") == 3 and fleet.open_to("b") == 1
    assert {c.weight for c in connections_of(client, "a")} == {3}
    ds = [client.request(b"!delay:1 r%d" % i) for i in range(400)]
    fleet.flush()
    fleet.advance(1.0)
    assert len(results(ds)) == 400
    assert served_by(fleet, "a") == 300 and served_by(fleet, "b") == 100
    # A new weight changes the share: the extra connections drain away.
    source.push([fleet.host("a", weight=1), fleet.host("b", weight=1)])
    fleet.flush()
    assert fleet.open_to("a") == 2 and fleet.open_to("b") == 2


def test_the_next_priority_is_used_only_while_no_host_of_the_first_is_reachable():
    fleet, source = Fleet(), PushSource()
    fleet.server("primary").refuse()
    client = fleet.client(source, pool_size=1)
    source.push([fleet.host("primary", priority=10), fleet.host("backup", priority=20)])
    fleet.flush()
    # The primary was tried first; only once it failed did the backup join.
    assert fleet.servers["primary"].attempts == 1
    assert [c.name for c in client.pool] == ["primary/0", "backup/0"]
    d = client.request(b"while the primary is down")
    fleet.flush()
    assert results([d]) == [b"while the primary is down"]

    fleet.servers["primary"].accept()
    fleet.advance(1.0)  # the primary's next attempt
    assert [c.name for c in client.pool] == ["primary/0"]
    assert fleet.open_to("backup") == 0 and fleet.open_to("primary") == 1


def test_a_reachable_first_priority_never_touches_the_next():
    fleet, source = Fleet(), PushSource()
    fleet.client(source, pool_size=1)
    source.push([fleet.host("primary", priority=0), fleet.host("backup", priority=1)])
    fleet.advance(5.0)
    assert "backup" not in fleet.servers or fleet.servers["backup"].attempts == 0


# -- the whole path from DNS --------------------------------------------------------------


def test_an_srv_zone_change_moves_the_traffic():
    fleet = Fleet()
    resolver = FakeResolver()
    resolver.zone[("_fc._tcp.x", dns.SRV)] = [srv("_fc._tcp.x", "a.x", 1, ttl=10)]
    resolver.zone[("a.x", dns.A)] = [a("a.x", "10.0.0.1", ttl=10)]
    resolver.zone[("c.x", dns.A)] = [a("c.x", "10.0.0.3", ttl=10)]
    by_address = {"10.0.0.1": fleet.server("a"), "10.0.0.3": fleet.server("c")}
    source = ServiceHosts(
        ServiceQuery("_fc._tcp.x"),
        fleet.clock,
        resolver,
        RefreshPolicy(1.0, 60.0, random=lambda: 0.5),
        lambda address, port: by_address[address].endpoint(),
    )
    client = fleet.client(source, pool_size=1)
    assert [c.name for c in client.pool] == ["a.x:1@10.0.0.1:1/0"]
    held = client.request(b"!delay:5 held")
    fleet.flush()
    resolver.zone[("_fc._tcp.x", dns.SRV)] = [srv("_fc._tcp.x", "c.x", 3, ttl=10)]
    fleet.advance(9.9)
    assert [c.name for c in client.pool] == ["a.x:1@10.0.0.1:1/0"]
    fleet.advance(0.2)  # the TTL ran out: asked again
    assert [c.name for c in client.pool] == ["c.x:3@10.0.0.3:3/0"]
    d = client.request(b"to c")
    fleet.advance(5.0)
    assert results([held, d]) == [b"!delay:5 held", b"to c"]
    assert fleet.open_to("a") == 0
    state = client.debug_state()["discovery"]
    assert state["joins"] == 2 and state["leaves"] == 1
    assert state["sources"][0]["source"] == "srv:_fc._tcp.x"


# -- max_connection_age ---------------------------------------------------------------------


def test_an_old_connection_is_replaced_while_it_finishes_its_requests():
    fleet, source = Fleet(), PushSource()
    client = fleet.client(source, pool_size=1, max_connection_age=60.0)
    source.push([fleet.host("a")])
    fleet.flush()
    [conn] = client.pool
    fleet.advance(50.0, step=1.0)
    held = client.request(b"!delay:10 held")
    fleet.flush()
    fleet.advance(4.0, step=1.0)  # 54 s: inside the -10 % jitter window
    assert conn.connects == 1
    fleet.advance(12.0, step=1.0)  # 66 s: past the +10 % one
    assert conn.connects == 2  # a new connection replaced it...
    assert results([held]) == [b"!delay:10 held"]  # ...the old one finished
    assert fleet.open_to("a") == 1
    assert client.metrics.connection_events["recycled"] == 1
    assert source.refreshes == 1  # and the hosts were asked for again
    assert client.debug_state()["discovery"]["recycled"] == 1


def test_connections_made_together_are_recycled_at_different_times():
    fleet, source = Fleet(), PushSource()
    client = fleet.client(source, pool_size=8, max_connection_age=100.0)
    source.push([fleet.host("a")])
    fleet.flush()
    recycled_at = {}
    for _ in range(240):
        fleet.advance(0.5, step=0.5)
        for conn in client.pool:
            if conn.connects > 1 and conn.name not in recycled_at:
                recycled_at[conn.name] = fleet.clock.seconds()
    assert len(recycled_at) == 8
    assert all(90 <= t <= 110.5 for t in recycled_at.values())
    # Spread over the 20 s window (all in at most two half-second steps has
    # a chance of about 3e-8).
    assert len(set(recycled_at.values())) >= 3


def test_without_max_connection_age_connections_are_kept():
    fleet, source = Fleet(), PushSource()
    client = fleet.client(source, pool_size=1)
    source.push([fleet.host("a")])
    fleet.advance(1000.0, step=50.0)
    assert [c.connects for c in client.pool] == [1]


# -- weights on endpoint strings (and so on the command line) ----------------------------


def test_a_weight_on_an_endpoint_string_shares_the_connections():
    client = FramedClient.from_endpoint(
        Clock(),
        ["tcp:10.0.0.1:9000:weight=3", "tcp:10.0.0.2:9000", "tcp:10.0.0.3:9000"],
        pool_size=4,
        start=False,
    )
    try:
        per_host: dict[str, int] = {}
        for conn in client.pool:
            host = conn.name.rpartition("/")[0]
            per_host[host] = per_host.get(host, 0) + 1
        # Weights 3, 1, 1 (mean 5/3): 4 x 3 / (5/3) = 7.2 -> 7; 4 / (5/3) -> 2.
        assert per_host == {
            "tcp:10.0.0.1:9000": 7,
            "tcp:10.0.0.2:9000": 2,
            "tcp:10.0.0.3:9000": 2,
        }
        hosts = client.debug_state()["discovery"]["hosts"]
        assert {h["name"]: h["weight"] for h in hosts}["tcp:10.0.0.1:9000"] == 3
    finally:
        client.close()


def test_a_weight_on_a_dns_string_counts_against_the_other_hosts():
    # Every address of a dns: name has its weight, so the weight cannot be
    # relative to its peers: a host of weight 1 gets pool_size connections,
    # each address of weight N pool_size x N.
    resolver = FakeResolver()
    resolver.zone[("big.x", dns.A)] = [a("big.x", "10.0.1.1"), a("big.x", "10.0.1.2")]
    clock = Clock()
    big = AddressHosts(
        AddressQuery("big.x", 9000, weight=3),
        clock,
        resolver,
        RefreshPolicy(5.0, 300.0),
        lambda address, port: MemoryServer().endpoint(),
    )
    client = FramedClient.from_endpoint(
        clock,
        [big, "dns:10.0.0.9:9000:weight=2", "tcp:10.0.0.1:9000"],
        pool_size=2,
        start=False,
    )
    try:
        client.start()
        per_host: dict[str, int] = {}
        for conn in client.pool:
            host = conn.name.rpartition("/")[0]
            per_host[host] = per_host.get(host, 0) + 1
        assert sorted(per_host.values()) == [2, 4, 6, 6]
        assert per_host["tcp:10.0.0.1:9000"] == 2
        assert per_host["10.0.0.9:9000"] == 4
    finally:
        client.close()


@pytest.mark.parametrize("weight", ["0", "-1", "1.5", "x", ""])
def test_a_bad_weight_is_refused_at_the_call_naming_it(weight):
    with pytest.raises(ValueError, match="weight= takes one whole number >= 1"):
        FramedClient.from_endpoint(
            Clock(), [f"tcp:10.0.0.1:9000:weight={weight}"], start=False
        )
