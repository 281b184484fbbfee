"""
Host health: failure accrual, ejection windows, probes, the cap on the
ejected share, black-hole detection and the per-connection in-flight cap;
on a Clock and the in-memory kit.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock

from framedclient.backoff import ConstantBackoff
from framedclient.client import FramedClient
from framedclient.codecs import GOAWAY, FC1Codec
from framedclient.config import ClientConfig
from framedclient.errors import ConnectionLost, Overloaded, RequestTimeout
from framedclient.health import (
    EJECTED,
    LIVE,
    PROBE_SENT,
    PROBING,
    HealthBoard,
    HostHealth,
)
from framedclient.testing import MemoryServer

from .wire import outcomes


def board(hosts: int = 3, **kw) -> tuple[HealthBoard, Clock]:
    clock = Clock()
    kw.setdefault("random", lambda: 0.5)  # no jitter: windows are exact
    b = HealthBoard(clock, **kw)
    for i in range(hosts):
        b.host(f"h{i}")
    return b, clock


# -- the state machine of one host --------------------------------------------------


def test_consecutive_failures_eject_a_host():
    b, clock = board(failure_accrual=3)
    host = b.hosts[0]
    host.failed()
    host.failed()
    assert host.state == LIVE and host.eligible
    host.failed()
    assert host.state == EJECTED and not host.eligible
    assert host.ejected_until == 5.0


def test_an_answer_between_failures_starts_the_count_again():
    b, clock = board(failure_accrual=3)
    host = b.hosts[0]
    for _ in range(5):
        host.failed()
        host.failed()
        host.succeeded()
    assert host.state == LIVE and host.failures == 0


def test_after_the_window_one_probe_goes_through_and_an_answer_revives():
    b, clock = board(failure_accrual=1)
    host = b.hosts[0]
    host.failed()
    clock.advance(4.99)
    assert host.state == EJECTED
    clock.advance(0.01)
    assert host.state == PROBING and host.eligible
    host.probe_sent()
    assert host.state == PROBE_SENT and not host.eligible, "one probe at a time"
    host.succeeded()
    assert host.state == LIVE and host.failures == 0 and host.ejections == 0


def test_a_failed_probe_ejects_again_for_longer():
    b, clock = board(failure_accrual=1)
    host = b.hosts[0]
    host.failed()
    clock.advance(5.0)
    host.probe_sent()
    host.failed()
    assert host.state == EJECTED
    assert host.ejected_until == pytest.approx(5.0 + 8.0)  # 5 s x 1.6
    clock.advance(8.0)
    host.probe_sent()
    host.failed()
    assert host.ejected_until == pytest.approx(13.0 + 12.8)


def test_windows_stop_growing_at_a_minute():
    b, clock = board(failure_accrual=1)
    host = b.hosts[0]
    for _ in range(20):
        host.failed()
        clock.advance(host.ejected_until - clock.seconds())
        host.probe_sent()
    assert b.window(20) == 60.0


def test_a_probe_whose_outcome_never_comes_is_sent_again():
    b, clock = board(failure_accrual=1)
    host = b.hosts[0]
    host.failed()
    clock.advance(5.0)
    host.probe_sent()  # then cancelled, say: no verdict
    clock.advance(5.0)
    assert host.state == PROBING


def test_late_answers_do_not_cut_a_window_short():
    b, clock = board(failure_accrual=1)
    host = b.hosts[0]
    host.failed()
    host.succeeded()  # a request sent before the ejection
    assert host.state == EJECTED


def test_closing_cancels_the_timers():
    b, clock = board(failure_accrual=1)
    b.hosts[0].failed()
    b.stop()
    assert clock.getDelayedCalls() == []


def test_accrual_off_never_ejects():
    b, clock = board(failure_accrual=None)
    for _ in range(100):
        b.hosts[0].failed()
    assert b.hosts[0].state == LIVE


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="failure_accrual"):
        HealthBoard(Clock(), failure_accrual=0)
    with pytest.raises(ValueError, match="ejection_time"):
        HealthBoard(Clock(), ejection_time=0)
    with pytest.raises(ValueError, match="max_ejected_share"):
        HealthBoard(Clock(), max_ejected_share=1.5)


# -- the ejected share ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("hosts", "share", "most"),
    [(1, 1.0, 0), (2, 1.0, 1), (2, 0.5, 1), (3, 0.5, 1), (4, 0.5, 2), (10, 0.1, 1)],
)
def test_never_more_than_the_share_and_never_every_host(hosts, share, most):
    b, clock = board(hosts, failure_accrual=1, max_ejected_share=share)
    for h in b.hosts:
        h.failed()
    assert sum(1 for h in b.hosts if h.state == EJECTED) == most
    assert any(h.eligible for h in b.hosts)


def test_past_the_cap_the_first_hosts_to_fail_are_the_ones_ejected():
    b, clock = board(3, failure_accrual=2, max_ejected_share=0.5)
    worst, bad, good = b.hosts
    worst.failed()
    worst.failed()
    bad.failed()
    bad.failed()
    good.failed()
    assert [h.state for h in b.hosts] == [EJECTED, LIVE, LIVE]
    # Once the worst revives, the next failure of the other ejects it.
    clock.advance(5.0)
    worst.probe_sent()
    worst.succeeded()
    bad.failed()
    assert bad.state == EJECTED


# -- the pool and the client on the memory kit ---------------------------------------


class Fleet:
    """
    ``n`` memory servers on one clock, and a client with one endpoint each.
    """

    def __init__(self, n: int, silent: tuple[int, ...] = (), **options) -> None:
        self.clock = Clock()
        self.servers = [
            MemoryServer(
                Factory.forProtocol(Protocol) if i in silent else None, clock=self.clock
            )
            for i in range(n)
        ]
        options.setdefault("backoff", ConstantBackoff(1.0))
        # These tests count requests per host: the scanning policy spreads
        # an idle pool's requests exactly one per connection.
        options.setdefault("balancer", "least_loaded")
        self.client = FramedClient(
            [s.endpoint() for s in self.servers], self.clock, **options
        )
        self.flush()

    def flush(self) -> None:
        while any([s.flush() for s in self.servers]):
            pass

    def advance(self, seconds: float, step: float = 0.1) -> None:
        target = self.clock.seconds() + seconds
        while self.clock.seconds() < target:
            self.clock.advance(min(step, target - self.clock.seconds()))
            self.flush()

    def server_of(self, proto) -> int:
        for i, s in enumerate(self.servers):
            if any(c.client is proto for c in s.connections):
                return i
        raise AssertionError(proto)


def test_the_pool_gives_no_request_to_an_ejected_host_and_probes_it_once():
    # Host 0 accepts connections and never answers.
    fleet = Fleet(
        3,
        silent=(0,),
        pool_size=1,
        failure_accrual=3,
        request_timeout=1.0,
        abandoned_ttl=0.5,
    )
    client = fleet.client
    for _ in range(3):
        ds = [client.request(b"x") for _ in range(3)]  # one per host
        fleet.flush()
        fleet.advance(2.0)
        assert outcomes(ds).count(b"x") == 2
    sick = client.health.hosts[0]
    assert sick.state == EJECTED
    # Every request now goes to the two others.
    picked = Counter(fleet.server_of(client.pool.pick()) for _ in range(30))
    assert set(picked) == {1, 2}
    fleet.advance(sick.ejected_until - fleet.clock.seconds())
    assert sick.state == PROBING
    picked = Counter(fleet.server_of(client.pool.pick()) for _ in range(30))
    assert picked[0] == 1, "one probe, then nothing until its outcome"
    assert sick.state == PROBE_SENT


def test_a_host_that_answers_its_probe_takes_requests_again():
    fleet = Fleet(2, pool_size=1, failure_accrual=1, request_timeout=1.0)
    client = fleet.client
    conn0 = fleet.servers[0].open_connections[0]
    conn0.stop_reading(pause_at=1 << 30)
    ds = [client.request(b"a%d" % i) for i in range(4)]
    fleet.flush()
    fleet.advance(1.0)
    outcomes(ds)
    sick = client.health.hosts[0]
    assert sick.state == EJECTED
    conn0.resume_reading()
    fleet.advance(sick.ejected_until - fleet.clock.seconds())
    assert sick.state == PROBING
    sent = []
    while sick.state == PROBING and len(sent) < 4:
        sent.append(client.request(b"probe-%d" % len(sent)))
    assert sick.state == PROBE_SENT
    fleet.flush()
    assert outcomes(sent) == [b"probe-%d" % i for i in range(len(sent))]
    assert sick.state == LIVE
    assert {fleet.server_of(client.pool.pick()) for _ in range(10)} == {0, 1}


def test_requests_waiting_for_capacity_go_to_a_host_whose_window_ended():
    fleet = Fleet(
        2,
        silent=(0,),
        pool_size=1,
        failure_accrual=1,
        max_in_flight_per_connection=1,
        request_timeout=1.0,
    )
    client = fleet.client
    outcomes([client.request(b"x") for _ in range(2)])  # one per host
    fleet.flush()
    fleet.advance(1.0)
    sick = client.health.hosts[0]
    assert sick.state == EJECTED
    held = client.request(b"!hold", timeout=30)  # host 1, at its cap now
    waiting = client.request(b"waits", timeout=30)
    fleet.flush()
    assert client.queued == 1
    fleet.advance(sick.ejected_until - fleet.clock.seconds())
    assert client.queued == 0, "sent as the probe when the window ended"
    assert sick.state == PROBE_SENT
    del held, waiting


def test_debug_state_shows_each_host():
    fleet = Fleet(2, pool_size=1)
    hosts = fleet.client.debug_state()["hosts"]
    assert [h["state"] for h in hosts] == ["live", "live"]
    names = [h["name"] for h in hosts]
    assert len(set(names)) == 2, f"each host has a name of its own: {names}"


# -- black holes --------------------------------------------------------------------


def test_a_silent_connection_is_closed_and_replaced_with_default_settings():
    """
    One of four connections goes silent (no FIN, no RST) under steady load:
    with default settings the client closes it within about 10 s, a
    replacement takes its place, and it swallowed only the few requests the
    balancer gave it before its table grew.
    """
    server = MemoryServer()
    clock = server.clock
    client = FramedClient([server.endpoint()], clock)
    server.flush()
    silent = server.open_connections[0]
    victim = silent.client
    silent.stop_reading(pause_at=1 << 30)
    results = []
    closed_at = None
    for tick in range(1, 1201):  # 12 s at 2,000 req/s, in 10 ms ticks
        results.extend(client.request(b"r") for _ in range(20))
        server.advance(0.01)
        if closed_at is None and victim.is_closed:
            closed_at = tick * 0.01
    server.advance(6.0, step=0.1)
    assert closed_at is not None and closed_at <= 10.0
    assert "black hole" in victim.close_reason
    assert client.pool.ready_count == 4
    assert victim not in [c.protocol for c in client.pool]
    got = outcomes(results)
    swallowed = [r for r in got if r != b"r"]
    assert all(f.check(RequestTimeout, ConnectionLost) for f in swallowed)
    # LeastLoaded stops giving the silent connection requests once its table
    # is a few dozen longer than the others'.
    assert 0 < len(swallowed) <= 48, len(swallowed)


def test_an_idle_silent_connection_is_found_by_the_default_heartbeat():
    server = MemoryServer()
    client = FramedClient([server.endpoint()], server.clock, pool_size=1)
    server.flush()
    silent = server.open_connections[0]
    victim = silent.client
    silent.stop_reading(pause_at=1 << 30)
    server.advance(10.0, step=0.5)
    assert victim.is_closed and "heartbeat" in victim.close_reason
    assert client.pool.ready_count == 1


def test_timeouts_with_answers_in_between_do_not_close_a_connection():
    server = MemoryServer()
    client = FramedClient([server.endpoint()], server.clock, pool_size=1)
    server.flush()
    proto = server.open_connections[0].client
    for _ in range(10):
        held = client.request(b"!hold", timeout=0.5)
        ok = client.request(b"fine")
        server.flush()
        server.advance(0.5)
        assert outcomes([ok]) == [b"fine"]
        outcomes([held])
    assert not proto.is_closed


# -- no storms ------------------------------------------------------------------------


class GoawayAtOnce(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(FC1Codec().encode(GOAWAY, 0, b""))


def test_a_server_that_sends_goaway_to_every_connection_sees_a_few_attempts_per_second():
    clock = Clock()
    server = MemoryServer(Factory.forProtocol(GoawayAtOnce), clock=clock)
    client = FramedClient([server.endpoint()], clock)  # defaults: gRPC backoff
    server.advance(10.0, step=0.01)
    # Before: ~5,400 connections per second from a pool of four.
    assert server.attempts <= 4 * 5, server.attempts
    assert all(c.failed_attempts >= 3 for c in client.pool)
    assert client.metrics.connection_events["connect_failed"] >= 12


# -- spreading and capping exposure ----------------------------------------------


def test_no_connection_holds_more_than_its_in_flight_cap():
    server = MemoryServer()
    client = FramedClient(
        [server.endpoint()],
        server.clock,
        pool_size=2,
        max_in_flight=8,
        max_in_flight_per_connection=3,
    )
    server.flush()
    held = [client.request(b"!hold", timeout=10) for _ in range(6)]
    waiting = [client.request(b"!hold", timeout=2) for _ in range(2)]
    server.flush()
    assert sorted(c.protocol.pending for c in client.pool) == [3, 3]
    assert client.queued == 2, "the rest wait in the client, not on a connection"
    server.advance(2.0)
    waited = outcomes(waiting)
    assert all(f.check(Overloaded) for f in waited)
    assert "max_in_flight_per_connection=3" in waited[0].getErrorMessage()
    assert outcomes(held) == ["pending"] * 6


def test_the_default_cap_is_twice_the_fair_share():
    server = MemoryServer()
    client = FramedClient(
        [server.endpoint()], server.clock, pool_size=4, max_in_flight=16
    )
    server.flush()
    assert all(c.protocol._in_flight_cap == 8 for c in client.pool)


class FirstAccepting:
    """
    A pick policy that always takes the first connection that can take a
    request: host 0's connections while it has any.
    """

    def pick(self, ready, leased):
        return next((p for p in ready if p.accepting and p not in leased), None)


def test_the_cap_follows_the_number_of_connections_as_hosts_join_and_leave():
    clock = Clock()
    first, second = MemoryServer(clock=clock), MemoryServer(clock=clock)
    client = FramedClient([first.endpoint()], clock, pool_size=4, max_in_flight=16)
    first.flush()
    assert client.pool.in_flight_cap == 8
    client.set_endpoints([first.endpoint(), second.endpoint()], names=["a", "b"])
    first.flush()
    second.flush()
    assert client.pool.in_flight_cap == 4
    assert {c.protocol._in_flight_cap for c in client.pool if c.protocol} == {4}
    assert [h.name for h in client.health.hosts] == ["a", "b"], "the old host left"


def test_an_idempotent_request_lost_with_its_host_is_retried_on_another_host():
    fleet = Fleet(2, pool_size=2, balancer=FirstAccepting())
    client = fleet.client
    ds = [client.request(b"!delay:0.5 job-%d" % i, idempotent=True) for i in range(6)]
    fleet.flush()
    first = fleet.servers[0].open_connections[0]
    assert first.client.pending == 6
    # That connection dies with the requests written; host 0 still has a
    # ready connection, which the policy would pick, but the retries go to
    # host 1.
    first.cut()
    fleet.advance(1.0, step=0.01)
    assert outcomes(ds) == [b"!delay:0.5 job-%d" % i for i in range(6)]
    served = [sum(c.client.ok_count for c in s.connections) for s in fleet.servers]
    assert served == [0, 6]
    assert client.metrics.retries == 6


def _health_series(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted((s.labels or {}).items()))): s.value
        for s in client.gauges()
        if s.name.startswith(
            (
                "framedclient_upstream_health",
                "framedclient_upstream_ejections",
                "framedclient_upstream_probes",
                "framedclient_upstream_black_holes",
            )
        )
    }


def test_metrics_show_each_hosts_state_ejections_probes_and_black_holes():
    # Host 0 accepts connections and never answers.
    fleet = Fleet(
        2,
        silent=(0,),
        pool_size=1,
        failure_accrual=2,
        black_hole_after=2,
        request_timeout=1.0,
        abandoned_ttl=0.5,
    )
    client = fleet.client
    sick, well = (h.name for h in client.health.hosts)
    # The health series carry the same upstream label as the other
    # per-upstream series, so one PromQL selector joins them.
    assert {sick, well} == set(client.pool.upstreams)
    for _ in range(2):
        outcomes([client.request(b"x") for _ in range(2)])  # one per host
        fleet.flush()
        fleet.advance(1.5)
    got = _health_series(client)
    up = "framedclient_upstream_health"
    assert got[up, (("state", "ejected"), ("upstream", sick))] == 1
    assert got[up, (("state", "live"), ("upstream", sick))] == 0
    assert got[up, (("state", "live"), ("upstream", well))] == 1
    states = [v for (n, labels), v in got.items() if n == up and ("upstream", sick) in labels]
    assert sorted(states) == [0, 0, 0, 1], "one state at a time"
    assert got["framedclient_upstream_ejections_total", (("upstream", sick),)] == 1
    assert got["framedclient_upstream_ejections_total", (("upstream", well),)] == 0
    assert got["framedclient_upstream_black_holes_total", (("upstream", sick),)] == 1
    assert got["framedclient_upstream_black_holes_total", (("upstream", well),)] == 0
    assert got["framedclient_upstream_probes_total", (("upstream", sick),)] == 0
    host = client.health.hosts[0]
    fleet.advance(host.ejected_until - fleet.clock.seconds())
    assert host.state == PROBING
    sent = 0
    while host.state == PROBING and sent < 4:
        client.request(b"probe").addBoth(lambda _: None)
        sent += 1
    fleet.flush()
    got = _health_series(client)
    assert got["framedclient_upstream_probes_total", (("upstream", sick),)] == 1
    assert got[up, (("state", "probe_sent"), ("upstream", sick))] == 1
    groups = client.debug_state()["by_upstream"]
    assert groups[sick]["health"]["probe_sent"] == 1
    assert groups[sick]["ejections"] == 1
    assert groups[well]["health"] == {
        "live": 1, "ejected": 0, "probing": 0, "probe_sent": 0
    }


# -- latency estimates (peak EWMA) ------------------------------------------------


def test_a_slow_reply_counts_in_full_at_once_and_fast_ones_pull_it_down():
    b, clock = board(hosts=1, decay_time=2.0)
    host = b.hosts[0]
    assert host.latency(0.0) == 0.0, "no sample yet: cold"
    host.settled(0.001, True, 0.0)
    host.settled(0.200, True, 0.1)
    assert host.latency(0.1) == pytest.approx(0.200), "the peak, not an average"
    for i in range(2, 12):
        host.settled(0.001, True, i * 0.1)
    # Ten fast replies in a second pull it down, but not to 1 ms at once.
    assert 0.001 < host.latency(1.1) < 0.2 * 0.7


def test_replies_read_at_one_instant_keep_the_peak_and_the_success_counts():
    # The replies of one read share its clock reading: a fast one leaves
    # the estimate where the slowest so far put it, a slower one raises it
    # at once, and each counts towards the success rate.
    b, clock = board(hosts=1, decay_time=2.0)
    host = b.hosts[0]
    host.settled(0.001, True, 0.0)
    host.settled(0.001, True, 1.0)
    rank = host.rank
    host.settled(0.0005, True, 1.0)
    assert host.latency(1.0) == pytest.approx(0.001)
    assert host.rank == rank
    host.settled(0.050, True, 1.0)
    assert host.latency(1.0) == pytest.approx(0.050), "the peak, in the same read"
    assert host.rank > rank
    host.settled(0.010, True, 1.0)
    assert host.latency(1.0) == pytest.approx(0.050)
    assert host.success_rate(1.0) == (1.0, 5)


def test_an_unused_hosts_estimate_forgets_a_slow_spell_in_seconds():
    b, clock = board(hosts=1, decay_time=2.0)
    host = b.hosts[0]
    host.settled(0.200, True, 0.0)
    assert host.latency(2.0) == pytest.approx(0.200 / math.e)
    assert host.latency(12.0) < 0.001, "below a 1 ms host's within 12 s"


def test_ranks_compare_as_the_estimates_decayed_to_any_instant():
    b, clock = board(hosts=2, decay_time=2.0)
    slow, fast = b.hosts
    slow.settled(0.200, True, 0.0)
    for t in (1.0, 5.0, 10.0, 11.0, 20.0):
        fast.settled(0.001, True, t)
        for now in (t, t + 0.5, t + 3.0):
            assert (slow.rank < fast.rank) == (slow.latency(now) < fast.latency(now))
    assert slow.rank < fast.rank, "by t=20 the slow spell is forgotten"


def test_the_client_feeds_each_hosts_estimate_from_its_replies():
    fleet = Fleet(2, pool_size=1)
    client = fleet.client
    ds = [client.request(b"!delay:0.3"), client.request(b"fast")]
    fleet.flush()
    fleet.advance(0.5)
    assert outcomes(ds)[1] == b"fast"
    estimates = sorted(h.latency(fleet.clock.seconds()) for h in client.health.hosts)
    assert estimates[0] < 0.01 < 0.2 < estimates[1]


# -- outlier detection by success rate ---------------------------------------------


def feed(host, ok: int, failed: int, now: float = 1.0) -> None:
    for _ in range(ok):
        host.settled(0.001, True, now)
    for _ in range(failed):
        host.settled(0.001, False, now)


def test_a_host_whose_success_rate_is_far_below_the_others_is_ejected():
    b, clock = board(hosts=6, success_rate_min_volume=10)
    for h in b.hosts[1:]:
        feed(h, 19, 1)
    flaky = b.hosts[0]
    feed(flaky, 14, 5)
    assert flaky.state == EJECTED and flaky.failures == 0
    assert [h.state for h in b.hosts[1:]] == [LIVE] * 5
    # Like any ejection: a window, then one probe, revived by an answer.
    clock.advance(flaky.ejected_until)
    assert flaky.state == PROBING


def test_success_rates_within_the_spread_of_the_others_eject_no_one():
    b, clock = board(hosts=6, success_rate_min_volume=10)
    for i, h in enumerate(b.hosts):
        feed(h, 20 - i, i)  # 100 % down to 75 %, evenly spread
    assert [h.state for h in b.hosts] == [LIVE] * 6


def test_too_few_requests_or_too_few_hosts_say_nothing():
    b, clock = board(hosts=6, success_rate_min_volume=10)
    for h in b.hosts[1:]:
        feed(h, 20, 0)
    feed(b.hosts[0], 5, 4)  # 9 requests: below the volume
    assert b.hosts[0].state == LIVE
    b, clock = board(hosts=6, success_rate_min_volume=10, success_rate_min_hosts=7)
    for h in b.hosts[1:]:
        feed(h, 20, 0)
    feed(b.hosts[0], 10, 10)  # 6 hosts with the volume, 7 needed
    assert b.hosts[0].state == LIVE


def test_outcomes_older_than_the_window_do_not_count():
    b, clock = board(hosts=6, success_rate_min_volume=10, success_rate_window=10.0)
    flaky = b.hosts[0]
    feed(flaky, 0, 9, now=0.0)  # just below the volume...
    feed(flaky, 1, 0, now=6.0)  # (the next half window)
    for h in b.hosts[1:]:
        feed(h, 20, 0, now=20.0)
    # ...and 20 s later they are gone: one failure now is 1 of 1.
    feed(flaky, 0, 1, now=20.0)
    assert flaky.state == LIVE


def test_the_success_rate_rule_never_passes_the_ejected_share():
    b, clock = board(hosts=6, success_rate_min_volume=10, max_ejected_share=0.2)
    for h in b.hosts[2:]:
        feed(h, 20, 0)
    feed(b.hosts[0], 10, 10)
    feed(b.hosts[1], 10, 10)
    assert [h.state for h in b.hosts[:2]] == [EJECTED, LIVE], "1 of 6 at most"


def test_the_success_rate_rule_is_off_with_none_and_with_accrual_off():
    for kw in ({"success_rate_factor": None}, {"failure_accrual": None}):
        b, clock = board(hosts=6, success_rate_min_volume=10, **kw)
        for h in b.hosts[1:]:
            feed(h, 20, 0)
        feed(b.hosts[0], 10, 10)
        assert b.hosts[0].state == LIVE, kw


def test_a_host_ejected_again_soon_after_its_revival_is_out_for_longer():
    b, clock = board(hosts=6, success_rate_min_volume=10)
    for h in b.hosts[1:]:
        feed(h, 20, 0, now=0.0)
    flaky = b.hosts[0]
    feed(flaky, 10, 5, now=0.0)
    assert flaky.state == EJECTED and flaky.ejected_until == 5.0
    clock.advance(5.0)
    flaky.succeeded()  # its probe was answered
    assert flaky.state == LIVE
    clock.advance(1.0)
    for h in b.hosts[1:]:
        feed(h, 5, 0, now=6.0)
    feed(flaky, 0, 1, now=6.0)
    assert flaky.state == EJECTED
    assert flaky.ejected_until == 6.0 + 5.0 * 1.6, "the second in a row"


def test_error_replies_count_against_a_hosts_success_rate():
    fleet = Fleet(5, pool_size=1, balancer="round_robin", request_timeout=1.0)
    client = fleet.client
    for h in client.health.hosts:
        assert h.state == LIVE
    # Round robin: one host gets requests 0, 5, 10, ...; it errs on every
    # other one (answered, so never a consecutive failure).
    for i in range(60):
        body = b"!error:flaky" if i % 5 == 0 and i % 10 < 5 else b"ok"
        client.request(body).addErrback(lambda f: None)
        fleet.flush()
    assert [h.state for h in client.health.hosts].count(EJECTED) == 1


def flaky_traffic(**settings) -> FramedClient:
    # Round robin over 5 hosts: one host gets requests 0, 5, 10, ... and
    # errs on every other one (answered, so never a consecutive failure).
    fleet = Fleet(5, pool_size=1, balancer="round_robin", request_timeout=1.0, **settings)
    client = fleet.client
    for i in range(60):
        body = b"!error:flaky" if i % 5 == 0 and i % 10 < 5 else b"ok"
        client.request(body).addErrback(lambda f: None)
        fleet.flush()
    return client


@pytest.mark.parametrize(
    "settings",
    [
        {"success_rate_factor": None},
        {"success_rate_factor": 10.0},
        {"success_rate_min_volume": 13},
        {"success_rate_min_hosts": 6},
    ],
    ids=lambda s: next(iter(s)),
)
def test_the_success_rate_settings_of_the_client_rule_its_hosts(settings):
    ejected = [h.state for h in flaky_traffic().health.hosts].count(EJECTED)
    assert ejected == 1, "with the defaults"
    # Off; a factor no spread reaches; 12 requests a host, fewer than the
    # volume; 5 hosts, fewer than needed; a window holding one instant.
    client = flaky_traffic(**settings)
    assert [h.state for h in client.health.hosts].count(EJECTED) == 0


def test_the_latency_decay_time_and_window_of_the_client_rule_its_hosts():
    fleet = Fleet(1, pool_size=1, latency_decay_time=4.0, success_rate_window=3.0)
    client = fleet.client
    assert client.health.success_rate_window == 3.0
    d = client.request(b"!delay:0.2")
    fleet.flush()
    fleet.advance(0.3)
    assert outcomes([d]) == [b"!delay:0.2"]
    (host,) = client.health.hosts
    now = fleet.clock.seconds()
    assert host.latency(now + 4.0) == pytest.approx(host.latency(now) / math.e)


def test_bad_health_settings_get_an_error_naming_them():
    for name, value in [
        ("success_rate_factor", -1.0),
        ("success_rate_factor", math.nan),
        ("success_rate_window", 0),
        ("success_rate_min_volume", 0),
        ("success_rate_min_hosts", 2.5),
        ("latency_decay_time", -2.5),
    ]:
        with pytest.raises(ValueError, match=name):
            ClientConfig(**{name: value})


def test_failures_before_the_volume_is_reached_are_judged_when_it_is():
    b, clock = board(hosts=6, success_rate_min_volume=10)
    for h in b.hosts[1:]:
        feed(h, 20, 0)
    flaky = b.hosts[0]
    feed(flaky, 0, 4)
    feed(flaky, 5, 0)
    assert flaky.state == LIVE, "9 requests: too few to judge"
    feed(flaky, 1, 0)
    assert flaky.state == EJECTED, "the 10th, a success, completes the volume"


def test_by_default_a_host_is_judged_on_its_second_request():
    # At 1 request a second per host (a client of a fleet), what a client
    # lacks is a failure seen, not requests: a default volume of 2 judges a
    # host as soon as it has failed one of two, where 5 waited seconds
    # more (docs/scaling.md, "Why a volume of 2").
    b, clock = board(hosts=6)
    for h in b.hosts[1:]:
        feed(h, 2, 0)
    flaky = b.hosts[0]
    feed(flaky, 0, 1)
    assert flaky.state == LIVE, "one request: no rate yet"
    feed(flaky, 1, 0)
    assert flaky.state == EJECTED
    # Hosts with one request each set no norm yet.
    b, clock = board(hosts=6)
    for h in b.hosts[1:]:
        feed(h, 1, 0)
    feed(b.hosts[0], 1, 1)
    assert b.hosts[0].state == LIVE


def test_failures_judged_before_enough_hosts_had_the_volume_are_judged_again():
    # The clients of a fleet start together: the flaky host's first
    # failures come while the other hosts have too few requests to say what
    # is normal.  They are judged again at its next outcome, not forgotten
    # until its next failure (at 1 request a second, seconds later).
    b, clock = board(hosts=6, success_rate_min_volume=10)
    flaky = b.hosts[0]
    for h in b.hosts[1:]:
        feed(h, 5, 0)
    feed(flaky, 10, 4)
    assert flaky.state == LIVE, "the others have 5 requests each: too few"
    for h in b.hosts[1:]:
        feed(h, 5, 0)
    feed(flaky, 1, 0)
    assert flaky.state == EJECTED


def test_a_host_judged_normal_is_not_judged_again_on_every_success(monkeypatch):
    # Judging compares every host: the hot path pays it on failures, not on
    # each success of a host whose rate was found normal.
    b, clock = board(hosts=6, success_rate_min_volume=10)
    for i, h in enumerate(b.hosts):
        feed(h, 20 - i, i)
    calls: list[HostHealth] = []
    judge = HostHealth._judge
    monkeypatch.setattr(
        HostHealth, "_judge", lambda self, now: (calls.append(self), judge(self, now))
    )
    feed(b.hosts[5], 5, 0)
    assert calls == [] and b.hosts[5].state == LIVE


def test_a_request_given_up_raises_the_estimate_to_its_wait_and_no_lower():
    b, clock = board(hosts=1, decay_time=2.0)
    host = b.hosts[0]
    host.settled(0.001, True, 0.0)
    host.waited(0.010, 0.5)  # a hedge won after 10 ms: at least 10 ms
    assert host.latency(0.5) == pytest.approx(0.010)
    host.waited(0.002, 0.5)  # a shorter wait says nothing new
    assert host.latency(0.5) == pytest.approx(0.010)
    assert host.success_rate(0.5) == (1.0, 1), "not an outcome"


def test_a_hedged_copy_cancelled_on_a_slow_host_feeds_its_estimate():
    fleet = Fleet(2, pool_size=1, hedge_after=0.01, balancer="round_robin")
    client = fleet.client
    fleet.servers[0].open_connections[0].stop_reading(pause_at=1 << 30)
    # Round robin: one of the two lands on host 0, which reads nothing; its
    # hedge, 10 ms later, is answered by host 1 and the copy is cancelled.
    ds = [client.request(b"a", idempotent=True), client.request(b"b", idempotent=True)]
    fleet.flush()
    fleet.advance(0.05, step=0.005)
    assert outcomes(ds) == [b"a", b"b"]
    stalled = client.health.hosts[0]
    assert stalled.latency(fleet.clock.seconds()) >= 0.009, "at least its wait"
