"""
Host sources: ``srv:`` and ``dns:`` strings, the refresh schedule, and the
DNS sources driven by a ``task.Clock`` and a fake resolver (the answers
are ``twisted.names`` records, as a real resolver gives them).
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.names import dns
from twisted.names.error import DNSNameError, DNSServerError

from framedclient.discovery import (
    AddressHosts,
    AddressQuery,
    Host,
    RefreshPolicy,
    ServiceHosts,
    ServiceQuery,
    StaticHosts,
    hosts_from_srv,
    parse_discovery,
    source_for,
    srv_records,
)

# -- records, as twisted.names gives them ----------------------------------------------


def srv(
    name: str, target: str, port: int, priority: int = 0, weight: int = 1, ttl: int = 30
) -> dns.RRHeader:
    return dns.RRHeader(
        name, dns.SRV, dns.IN, ttl, dns.Record_SRV(priority, weight, port, target)
    )


def a(name: str, address: str, ttl: int = 30) -> dns.RRHeader:
    return dns.RRHeader(name, dns.A, dns.IN, ttl, dns.Record_A(address))


def aaaa(name: str, address: str, ttl: int = 30) -> dns.RRHeader:
    return dns.RRHeader(name, dns.AAAA, dns.IN, ttl, dns.Record_AAAA(address))


class FakeResolver:
    """
    Answers from :attr:`zone` (``{(name, type): [records]}``); a name it
    does not know is NXDOMAIN.  With :attr:`hold`, answers wait in
    :attr:`held` until the test fires them.  :attr:`queries` lists every
    question, in order.
    """

    def __init__(self) -> None:
        self.zone: dict[tuple[str, int], list[dns.RRHeader]] = {}
        self.additional: dict[str, list[dns.RRHeader]] = {}
        self.queries: list[tuple[str, int]] = []
        self.broken: Exception | None = None
        self.hold = False
        self.held: list[Deferred[Any]] = []

    def _answer(self, name: str, kind: int) -> Deferred[Any]:
        self.queries.append((name, kind))
        if self.hold:
            d: Deferred[Any] = Deferred()
            self.held.append(d)
            return d
        if self.broken is not None:
            return fail(self.broken)
        if not any(n == name for n, _ in self.zone):
            return fail(DNSNameError(name))
        return succeed(
            (self.zone.get((name, kind), []), [], self.additional.get(name, []))
        )

    def lookupService(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return self._answer(name, dns.SRV)

    def lookupAddress(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return self._answer(name, dns.A)

    def lookupIPV6Address(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return self._answer(name, dns.AAAA)

    def asked(self, kind: int) -> int:
        return sum(1 for _, k in self.queries if k == kind)


def endpoint_of(address: str, port: int) -> str:
    # The sources only pass endpoints along: a string shows what was made.
    return f"endpoint {address} {port}"  # type: ignore[return-value]


NO_JITTER = RefreshPolicy(5.0, 300.0, random=lambda: 0.5)


def updates_of(source: Any) -> list[list[Host]]:
    seen: list[list[Host]] = []
    source.start(seen.append)
    return seen


def addresses(hosts: list[Host]) -> list[str]:
    return sorted(h.address for h in hosts)


# -- parsing ----------------------------------------------------------------------------


def test_srv_string_names_the_service_and_optionally_its_name_servers():
    assert parse_discovery("srv:_fc._tcp.example.com") == ServiceQuery(
        "_fc._tcp.example.com"
    )
    assert parse_discovery("srv:_fc._tcp.example.com.@127.0.0.1:5353,[::1]") == (
        ServiceQuery("_fc._tcp.example.com", (("127.0.0.1", 5353), ("::1", 53)))
    )


def test_dns_string_names_a_host_and_port():
    assert parse_discovery("dns:db.example.com:9000") == AddressQuery(
        "db.example.com", 9000
    )
    assert parse_discovery("dns:db.example.com:9000@10.0.0.53") == AddressQuery(
        "db.example.com", 9000, (("10.0.0.53", 53),)
    )


def test_other_endpoint_strings_are_not_discovery():
    for text in ("tcp:127.0.0.1:9000", "tls:example.com:443", "unix:/tmp/s"):
        assert parse_discovery(text) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("srv:example.com", "srv:_SERVICE._PROTO.NAME"),
        ("srv:_fc._tcp..com", "not a DNS name"),
        ("dns:example.com", "dns:NAME:PORT"),
        ("dns:example.com:http", "port number"),
        ("dns:example.com:70000", "port number"),
        ("srv:_fc._tcp.example.com@ns.example.com", "must be an IP address"),
        ("srv:_fc._tcp.example.com@127.0.0.1:x", "port"),
    ],
)
def test_malformed_discovery_strings_say_the_right_form(text, says):
    with pytest.raises(ValueError, match=says) as caught:
        parse_discovery(text)
    assert repr(text) in str(caught.value)


def test_dns_string_with_an_ip_address_is_one_static_host():
    source = source_for(
        parse_discovery("dns:127.0.0.1:9000"),  # type: ignore[arg-type]
        Clock(),
        NO_JITTER,
        resolver=FakeResolver(),
        make_endpoint=endpoint_of,
    )
    assert isinstance(source, StaticHosts)
    assert addresses(source.hosts) == ["127.0.0.1:9000"]


# -- when to ask again ---------------------------------------------------------------


def test_the_ttl_decides_the_next_refresh_within_the_bounds():
    assert NO_JITTER.after_answer(60) == 60
    assert NO_JITTER.after_answer(0) == 5.0  # Consul's TTL 0: not a busy loop
    assert NO_JITTER.after_answer(86400) == 300.0
    assert NO_JITTER.after_answer(None) == 300.0


def test_failed_lookups_back_off_from_the_minimum_to_the_maximum():
    assert [NO_JITTER.after_failure(n) for n in range(1, 9)] == [
        5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0,
    ]  # fmt: skip


def test_refresh_delays_are_jittered_by_ten_percent_either_way():
    low = RefreshPolicy(5.0, 300.0, random=lambda: 0.0)
    high = RefreshPolicy(5.0, 300.0, random=lambda: 0.999999)
    assert low.after_answer(100) == pytest.approx(90)
    assert high.after_answer(100) == pytest.approx(110)
    assert low.after_failure(1) == pytest.approx(4.5)


def test_refresh_bounds_must_be_positive_and_ordered():
    with pytest.raises(ValueError, match="minimum"):
        RefreshPolicy(0, 10)
    with pytest.raises(ValueError, match="above the maximum"):
        RefreshPolicy(10, 5)


# -- SRV answers to hosts ---------------------------------------------------------------


def test_srv_records_become_hosts_with_their_priority_weight_and_address():
    records = srv_records(
        [
            srv("_fc._tcp.x", "a.x", 9001, priority=10, weight=60, ttl=20),
            srv("_fc._tcp.x", "b.x", 9002, priority=20, weight=5, ttl=40),
        ]
    )
    hosts, ttl, missing = hosts_from_srv(
        records, {"a.x": [("10.0.0.1", 15)], "b.x": [("::1", 50)]}, endpoint_of
    )
    assert [(h.name, h.address, h.priority, h.weight) for h in hosts] == [
        ("a.x:9001", "10.0.0.1:9001", 10, 60),
        ("b.x:9002", "[::1]:9002", 20, 5),
    ]
    assert hosts[0].endpoint == "endpoint 10.0.0.1 9001"
    assert ttl == 15  # the smallest TTL of what was used
    assert missing == []


def test_an_srv_target_without_address_is_left_out_and_named():
    records = srv_records([srv("_fc._tcp.x", "a.x", 1), srv("_fc._tcp.x", "b.x", 2)])
    hosts, _, missing = hosts_from_srv(records, {"a.x": [("10.0.0.1", 5)]}, endpoint_of)
    assert [h.name for h in hosts] == ["a.x:1"]
    assert missing == ["b.x"]


def test_the_srv_no_service_record_gives_no_host():
    # RFC 2782: a single record with target "." means "decidedly not here".
    assert srv_records([srv("_fc._tcp.x", "", 0)]) == []  # the root name


# -- the DNS sources on a clock ----------------------------------------------------------


def address_source(
    resolver: FakeResolver, clock: Clock, policy: RefreshPolicy = NO_JITTER
) -> AddressHosts:
    return AddressHosts(
        AddressQuery("db.x", 9000), clock, resolver, policy, endpoint_of
    )


def test_dns_name_is_asked_again_when_its_ttl_expires():
    resolver, clock = FakeResolver(), Clock()
    resolver.zone[("db.x", dns.A)] = [a("db.x", "10.0.0.1", ttl=30)]
    resolver.zone[("db.x", dns.AAAA)] = [aaaa("db.x", "fd00::1", ttl=60)]
    source = address_source(resolver, clock)
    seen = updates_of(source)
    assert [addresses(hosts) for hosts in seen] == [["10.0.0.1:9000", "[fd00::1]:9000"]]
    assert resolver.asked(dns.A) == 1

    resolver.zone[("db.x", dns.A)] = [a("db.x", "10.0.0.2", ttl=30)]
    clock.advance(29.9)
    assert resolver.asked(dns.A) == 1  # the answer still holds
    clock.advance(0.2)
    assert resolver.asked(dns.A) == 2
    assert addresses(seen[-1]) == ["10.0.0.2:9000", "[fd00::1]:9000"]


def test_a_failed_lookup_keeps_the_hosts_and_asks_again_sooner():
    resolver, clock = FakeResolver(), Clock()
    resolver.zone[("db.x", dns.A)] = [a("db.x", "10.0.0.1", ttl=100)]
    source = address_source(resolver, clock)
    seen = updates_of(source)
    resolver.broken = DNSServerError("SERVFAIL")
    clock.advance(100)
    assert len(seen) == 1  # nothing handed over: the last hosts stand
    assert "DNSServerError" in (source.last_error or "")
    asked = len(resolver.queries)
    clock.advance(5)  # dns_refresh_min after the first failure
    assert len(resolver.queries) > asked
    asked = len(resolver.queries)
    clock.advance(9.9)  # then 10 s: doubling
    assert len(resolver.queries) == asked
    resolver.broken = None
    clock.advance(0.1)
    assert len(seen) == 2 and source.last_error is None
    assert source.debug_state()["next_refresh"] == 100


def test_a_name_that_stops_existing_keeps_the_last_hosts():
    resolver, clock = FakeResolver(), Clock()
    resolver.zone[("db.x", dns.A)] = [a("db.x", "10.0.0.1", ttl=10)]
    source = address_source(resolver, clock)
    seen = updates_of(source)
    resolver.zone.clear()
    clock.advance(10)
    assert len(seen) == 1
    assert "DNSNameError" in (source.last_error or "")


def test_a_stopped_source_asks_nothing_more_and_leaves_no_timer():
    resolver, clock = FakeResolver(), Clock()
    resolver.zone[("db.x", dns.A)] = [a("db.x", "10.0.0.1", ttl=10)]
    source = address_source(resolver, clock)
    seen = updates_of(source)
    source.stop()
    assert clock.getDelayedCalls() == []
    clock.advance(1000)
    assert len(resolver.queries) == 2 and len(seen) == 1


def test_stopping_while_a_lookup_is_out_cancels_it():
    resolver, clock = FakeResolver(), Clock()
    resolver.hold = True
    source = address_source(resolver, clock)
    seen = updates_of(source)
    source.stop()
    assert all(d.called for d in resolver.held)
    assert seen == [] and clock.getDelayedCalls() == []


def test_refresh_asks_at_once_but_not_more_often_than_the_minimum():
    resolver, clock = FakeResolver(), Clock()
    resolver.zone[("db.x", dns.A)] = [a("db.x", "10.0.0.1", ttl=300)]
    source = address_source(resolver, clock)
    updates_of(source)
    source.refresh()
    assert resolver.asked(dns.A) == 1  # asked less than 5 s ago
    clock.advance(5)
    source.refresh()
    assert resolver.asked(dns.A) == 2


def service_source(resolver: FakeResolver, clock: Clock) -> ServiceHosts:
    return ServiceHosts(
        ServiceQuery("_fc._tcp.x"), clock, resolver, NO_JITTER, endpoint_of
    )


def test_srv_source_uses_the_additional_section_and_asks_for_the_rest():
    resolver, clock = FakeResolver(), Clock()
    resolver.zone[("_fc._tcp.x", dns.SRV)] = [
        srv("_fc._tcp.x", "a.x", 9001, weight=3, ttl=60),
        srv("_fc._tcp.x", "b.x", 9002, weight=1, ttl=60),
    ]
    resolver.additional["_fc._tcp.x"] = [a("a.x", "10.0.0.1", ttl=60)]
    resolver.zone[("b.x", dns.A)] = [a("b.x", "10.0.0.2", ttl=8)]
    seen = updates_of(service_source(resolver, clock))
    assert [(h.name, h.address, h.weight) for h in seen[0]] == [
        ("a.x:9001", "10.0.0.1:9001", 3),
        ("b.x:9002", "10.0.0.2:9002", 1),
    ]
    assert ("a.x", dns.A) not in resolver.queries
    # b.x's address expires first: the whole answer is asked again then.
    clock.advance(8)
    assert resolver.asked(dns.SRV) == 2


def test_srv_source_follows_a_zone_change():
    resolver, clock = FakeResolver(), Clock()
    resolver.zone[("_fc._tcp.x", dns.SRV)] = [srv("_fc._tcp.x", "a.x", 1, ttl=10)]
    resolver.zone[("a.x", dns.A)] = [a("a.x", "10.0.0.1", ttl=10)]
    resolver.zone[("c.x", dns.A)] = [a("c.x", "10.0.0.3", ttl=10)]
    seen = updates_of(service_source(resolver, clock))
    resolver.zone[("_fc._tcp.x", dns.SRV)] = [srv("_fc._tcp.x", "c.x", 3, ttl=10)]
    clock.advance(10)
    assert [[h.name for h in hosts] for hosts in seen] == [["a.x:1"], ["c.x:3"]]


def test_srv_source_with_no_record_reports_it_and_hands_nothing_over():
    resolver, clock = FakeResolver(), Clock()
    resolver.zone[("_fc._tcp.x", dns.SRV)] = []
    source = service_source(resolver, clock)
    seen = updates_of(source)
    assert seen == []
    assert source.last_error == "_fc._tcp.x has no SRV record"


def test_a_good_answer_ends_the_outage_the_next_one_backs_off_from_the_minimum():
    resolver, clock = FakeResolver(), Clock()
    resolver.zone[("db.x", dns.A)] = [a("db.x", "10.0.0.1", ttl=100)]
    source = address_source(resolver, clock)
    seen = updates_of(source)

    def failures_then_asks(seconds: list[float]) -> None:
        for delay in seconds:
            asked = len(resolver.queries)
            clock.advance(delay - 0.1)
            assert len(resolver.queries) == asked, f"asked before {delay} s"
            clock.advance(0.1)
            assert len(resolver.queries) > asked, f"not asked after {delay} s"

    # First outage: 4 failed questions, retried after 5, 10, 20, then 40 s.
    resolver.broken = DNSServerError("SERVFAIL")
    failures_then_asks([100, 5, 10, 20])
    assert source.debug_state()["failures"] == 4
    assert source.debug_state()["next_refresh"] == 40
    resolver.broken = None
    failures_then_asks([40])
    assert len(seen) == 2 and source.debug_state()["failures"] == 0

    # The next outage starts over: its first retry after 5 s, not 80 s.
    resolver.broken = DNSServerError("SERVFAIL")
    failures_then_asks([100])
    assert source.debug_state()["failures"] == 1
    assert source.debug_state()["next_refresh"] == 5
    failures_then_asks([5, 10])
def test_every_address_of_an_srv_target_is_a_host_with_the_records_weight():
    records = srv_records(
        [
            srv("_fc._tcp.x", "a.x", 9001, priority=1, weight=30),
            srv("_fc._tcp.x", "b.x", 9002, weight=10),
        ]
    )
    hosts, ttl, missing = hosts_from_srv(
        records,
        {
            "a.x": [("10.0.0.1", 15), ("10.0.0.2", 20), ("::1", 25)],
            "b.x": [("10.0.0.9", 40), ("10.0.0.9", 40)],  # a repeated answer
        },
        endpoint_of,
    )
    assert [(h.name, h.address, h.priority, h.weight) for h in hosts] == [
        ("a.x:9001", "10.0.0.1:9001", 1, 30),
        ("a.x:9001", "10.0.0.2:9001", 1, 30),
        ("a.x:9001", "[::1]:9001", 1, 30),
        ("b.x:9002", "10.0.0.9:9002", 0, 10),
    ]
    assert len({h.key for h in hosts}) == 4, "each address is a host of its own"
    assert [h.endpoint for h in hosts[:2]] == [
        "endpoint 10.0.0.1 9001",
        "endpoint 10.0.0.2 9001",
    ]
    assert ttl == 15 and missing == []


def test_srv_and_dns_with_tls_name_their_trust_roots_and_print_back():
    query = parse_discovery("srv+tls:_fc._tcp.example.com:trustRoots=/etc/ca@10.0.0.53")
    assert query == ServiceQuery(
        "_fc._tcp.example.com", (("10.0.0.53", 53),), tls=True, trust_roots="/etc/ca"
    )
    assert str(query) == "srv+tls:_fc._tcp.example.com:trustRoots=/etc/ca@10.0.0.53:53"
    assert parse_discovery("srv+tls:_fc._tcp.example.com") == ServiceQuery(
        "_fc._tcp.example.com", tls=True
    )
    assert parse_discovery("dns+tls:db.example.com:9000") == AddressQuery(
        "db.example.com", 9000, tls=True
    )
    assert parse_discovery("srv:_fc._tcp.example.com") == ServiceQuery(
        "_fc._tcp.example.com", tls=False
    )


@pytest.mark.parametrize(
    "text",
    [
        "srv:_fc._tcp.example.com:trustRoots=/etc/ca",  # TLS options need +tls
        "srv+tls:_fc._tcp.example.com:verify=no",
        "dns+tls:db.example.com:9000:trustRoots=",
    ],
)
def test_tls_options_where_they_do_not_belong_are_refused(text):
    with pytest.raises(ValueError, match="trustRoots=DIRECTORY") as caught:
        parse_discovery(text)
    assert repr(text) in str(caught.value)


# -- weights on dns: strings -----------------------------------------------------------


def test_a_weight_on_a_dns_string_weighs_every_address_of_the_name():
    query = parse_discovery("dns:db.x:9000:weight=3@10.0.0.53")
    assert query == AddressQuery("db.x", 9000, (("10.0.0.53", 53),), weight=3)
    assert str(query) == "dns:db.x:9000:weight=3@10.0.0.53:53"
    assert parse_discovery(str(query)) == query
    # With TLS, the options in either order.
    assert (
        parse_discovery("dns+tls:db.x:9000:trustRoots=/etc/ca:weight=2")
        == parse_discovery("dns+tls:db.x:9000:weight=2:trustRoots=/etc/ca")
        == AddressQuery("db.x", 9000, tls=True, trust_roots="/etc/ca", weight=2)
    )
    resolver, clock = FakeResolver(), Clock()
    resolver.zone[("db.x", dns.A)] = [a("db.x", "10.0.0.1"), a("db.x", "10.0.0.2")]
    assert isinstance(query, AddressQuery)
    source = AddressHosts(query, clock, resolver, NO_JITTER, endpoint_of)
    (hosts,) = updates_of(source)
    assert [(h.address, h.weight) for h in hosts] == [
        ("10.0.0.1:9000", 3),
        ("10.0.0.2:9000", 3),
    ]
    assert source.absolute_weights
    static = source_for(
        parse_discovery("dns:127.0.0.1:9000:weight=2"),  # type: ignore[arg-type]
        clock,
        NO_JITTER,
        resolver=resolver,
        make_endpoint=endpoint_of,
    )
    assert isinstance(static, StaticHosts) and static.absolute_weights
    assert [h.weight for h in static.hosts] == [2]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("dns:db.x:9000:weight=0", "weight= takes one whole number >= 1"),
        ("dns:db.x:9000:weight=1.5", "weight= takes one whole number >= 1"),
        ("dns:db.x:9000:weight=", "weight= takes one whole number >= 1"),
        ("dns:db.x:9000:weight=2:weight=3", "got weight= twice"),
        ("srv:_fc._tcp.x.y:weight=2", "an SRV record carries its host's weight"),
        ("dns:db.x:9000:wieght=2", "unknown option 'wieght=2'"),
    ],
)
def test_a_bad_weight_on_a_dns_string_is_refused_naming_the_string(text, says):
    with pytest.raises(ValueError, match=says) as caught:
        parse_discovery(text)
    assert repr(text) in str(caught.value)
