"""
Hedging: a slow idempotent request gets a second copy on another host; the
first answer wins, the other copy is cancelled, the caller's Deferred fires
once, and a budget bounds the extra load.

On the in-memory kit with deterministic time: two reference servers on one
clock, one of them slow.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock

from framedclient.backoff import ExponentialBackoff
from framedclient.balance import ring_node_name
from framedclient.client import FramedClient
from framedclient.errors import RequestTimeout
from framedclient.hedging import MIN_SAMPLES
from framedclient.ketama import KetamaRing
from framedclient.retry import RetryBudget
from framedclient.server import ReferenceServerFactory
from framedclient.testing import MemoryServer

NAMES = ["tcp:10.0.0.1:9000", "tcp:10.0.0.2:9000"]
RING = KetamaRing([ring_node_name(n) for n in NAMES])
#: keys ketama places on the first (slow) host and on the second (fast) one
SLOW_KEYS = [k for k in (f"k{i}" for i in range(200)) if RING.node_for(k) == "10.0.0.1:9000"]
FAST_KEYS = [k for k in (f"k{i}" for i in range(200)) if RING.node_for(k) == "10.0.0.2:9000"]


class Fleet:
    """
    A client over a slow and a fast in-memory reference server on one clock.
    """

    def __init__(self, slow_delay: float = 2.0, **options: object) -> None:
        self.clock = Clock()
        self.slow_factory = ReferenceServerFactory(clock=self.clock, delay=slow_delay)
        self.fast_factory = ReferenceServerFactory(clock=self.clock)
        self.slow = MemoryServer(self.slow_factory, clock=self.clock)
        self.fast = MemoryServer(self.fast_factory, clock=self.clock)
        options.setdefault("hedge_after", 0.05)
        options.setdefault("balancer", "ketama")
        options.setdefault(
            "hedge_budget", RetryBudget(self.clock, ratio=1.0, min_per_second=0, cap=100)
        )
        self.client = FramedClient(
            [self.slow.endpoint(), self.fast.endpoint()],
            self.clock,
            pool_size=1,
            names=NAMES,
            backoff=ExponentialBackoff(random=lambda: 0.5),
            **options,  # type: ignore[arg-type]
        )
        self.flush()
        assert self.client.pool.ready_count == 2

    def flush(self) -> None:
        for _ in range(10):
            moved = self.slow.flush()
            moved = self.fast.flush() or moved
            if not moved:
                return

    def advance(self, seconds: float, step: float = 0.01) -> None:
        remaining = seconds
        while remaining > 1e-9:
            now = min(step, remaining)
            self.clock.advance(now)
            self.flush()
            remaining -= now


def results(d):
    seen = []
    d.addBoth(seen.append)
    return seen


def test_a_slow_request_is_hedged_to_the_other_host_and_the_first_answer_wins():
    fleet = Fleet()
    seen = results(fleet.client.request(b"hello", key=SLOW_KEYS[0], idempotent=True))
    fleet.advance(0.04)
    assert seen == [] and fleet.fast_factory.requests == 0
    fleet.advance(0.02)
    # Hedged at 0.05 s to the fast host, which answered at once.
    assert seen == [b"hello"]
    assert fleet.fast_factory.requests == 1
    # The slow copy was cancelled (a cancel frame reached the slow host).
    assert fleet.slow_factory.cancels == 1
    assert fleet.client.stats()["hedges"] == {
        "sent": 1,
        "won": 1,
        "no_budget": 0,
        "no_host": 0,
    }
    fleet.advance(3)
    assert seen == [b"hello"]  # fired once, the slow reply changes nothing
    assert fleet.client.in_flight == 0


def test_a_request_answered_before_the_delay_is_not_hedged_and_leaves_no_timer():
    fleet = Fleet()
    seen = results(fleet.client.request(b"quick", key=FAST_KEYS[0], idempotent=True))
    fleet.flush()
    assert seen == [b"quick"]
    fleet.advance(1)
    assert fleet.slow_factory.requests == 0
    assert fleet.client.stats()["hedges"]["sent"] == 0
    # No hedge timer is left behind (the connection's deadline timer is).
    timers = [c.func for c in fleet.clock.getDelayedCalls()]
    assert [f for f in timers if getattr(f, "__name__", "") == "fire"] == []


def test_requests_that_are_not_idempotent_are_never_hedged():
    fleet = Fleet()
    seen = results(fleet.client.request(b"once", key=SLOW_KEYS[0]))
    fleet.advance(1)
    assert fleet.fast_factory.requests == 0 and seen == []
    fleet.advance(3)
    assert seen == [b"once"]


def test_without_budget_the_request_waits_for_its_own_host():
    fleet = Fleet(hedge_budget=RetryBudget(Clock(), ratio=0.0, min_per_second=0.0))
    seen = results(fleet.client.request(b"x", key=SLOW_KEYS[0], idempotent=True))
    fleet.advance(1)
    assert fleet.fast_factory.requests == 0
    assert fleet.client.stats()["hedges"]["no_budget"] == 1
    fleet.advance(3)
    assert seen == [b"x"]
    assert fleet.client.in_flight == 0  # the hedge's slot was given back


def test_the_default_budget_hedges_about_one_request_in_ten():
    # Host health off: the slow host loses every copy to a hedge and would
    # be ejected (see below), which is not what this test counts.
    fleet = Fleet(hedge_budget=None, failure_accrual=None)
    for key in SLOW_KEYS[:40] * 5:
        results(fleet.client.request(b"x", key=key, idempotent=True, timeout=30))
        fleet.advance(0.01, step=0.01)
    fleet.advance(0.1)
    hedges = fleet.client.stats()["hedges"]
    # 200 hedgeable requests over 2 s: 10 % of them, plus one a second, plus
    # the one the budget starts with.
    assert 20 <= hedges["sent"] <= 0.1 * 200 + 1 * 2.1 + 1
    assert hedges["sent"] + hedges["no_budget"] == 200


def test_the_default_budget_bounds_a_burst_of_hedges():
    fleet = Fleet(hedge_budget=None)
    for key in SLOW_KEYS[:40] * 5:
        results(fleet.client.request(b"x", key=key, idempotent=True, timeout=30))
    fleet.advance(0.1)
    # 200 slow requests at once: at most 10 hedges saved up go out.
    assert fleet.client.stats()["hedges"]["sent"] == 10


def test_cancelling_a_hedged_request_cancels_both_copies_and_fires_once():
    fleet = Fleet()
    d = fleet.client.request(b"x", key=SLOW_KEYS[0], idempotent=True)
    seen = results(d)
    # The fast host holds its copy (and would answer too late).
    fleet.fast_factory.delay = 5.0
    fleet.advance(0.06)
    assert fleet.fast_factory.requests == 1
    d.cancel()
    fleet.flush()
    assert len(seen) == 1 and seen[0].check(CancelledError)
    assert fleet.slow_factory.cancels == 1 and fleet.fast_factory.cancels == 1
    fleet.advance(3)
    assert len(seen) == 1
    assert fleet.client.in_flight == 0


def test_when_both_copies_fail_the_caller_gets_the_first_ones_error_once():
    fleet = Fleet()
    fleet.fast_factory.delay = 5.0
    seen = results(
        fleet.client.request(b"x", key=SLOW_KEYS[0], idempotent=True, timeout=1.0)
    )
    fleet.advance(1.5)
    assert len(seen) == 1 and seen[0].check(RequestTimeout)
    assert fleet.client.stats()["hedges"] == {
        "sent": 1,
        "won": 0,
        "no_budget": 0,
        "no_host": 0,
    }


def test_the_hedge_answers_when_the_first_copy_dies_without_an_answer():
    fleet = Fleet(retry_budget=RetryBudget(Clock(), ratio=0.0, min_per_second=0.0))
    fleet.fast_factory.delay = 0.5
    seen = results(fleet.client.request(b"x", key=SLOW_KEYS[0], idempotent=True))
    fleet.advance(0.06)  # hedged
    fleet.slow.drop_all("slow host crashed")
    fleet.flush()
    assert seen == []  # the hedge may still answer
    fleet.advance(0.5)
    assert seen == [b"x"]


def test_a_hedge_goes_nowhere_when_no_other_host_is_ready():
    fleet = Fleet()
    fleet.fast.drop_all("fast host gone")
    fleet.fast.refuse()
    fleet.flush()
    seen = results(fleet.client.request(b"x", key=SLOW_KEYS[0], idempotent=True))
    fleet.advance(0.1)
    assert fleet.client.stats()["hedges"]["no_host"] == 1
    assert fleet.client.in_flight == 1  # the first copy only
    fleet.advance(3)
    assert seen == [b"x"]


def test_a_percentile_delay_waits_for_enough_replies_then_follows_the_host():
    fleet = Fleet(slow_delay=0.02, hedge_after="p50")
    key = SLOW_KEYS[0]
    for _ in range(MIN_SAMPLES - 1):
        seen = results(fleet.client.request(b"x", key=key, idempotent=True))
        fleet.advance(0.05)
        assert seen == [b"x"]
    # Too few replies to trust a percentile: nothing was hedged.
    assert fleet.client.stats()["hedges"]["sent"] == 0
    fleet.advance(1.5)  # the host's percentile is read again
    results(fleet.client.request(b"x", key=key, idempotent=True))
    fleet.advance(0.05)
    results(fleet.client.request(b"x", key=key, idempotent=True))
    fleet.advance(0.05)
    fleet.slow_factory.delay = 2.0
    fleet.advance(1.5)
    seen = results(fleet.client.request(b"x", key=key, idempotent=True))
    # p50 of the slow host's replies so far is about 0.02 s.
    fleet.advance(0.05)
    assert seen == [b"x"]
    assert fleet.client.stats()["hedges"]["won"] == 1


def test_hedges_are_counted_in_the_prometheus_samples():
    fleet = Fleet()
    results(fleet.client.request(b"x", key=SLOW_KEYS[0], idempotent=True))
    fleet.advance(0.1)
    samples = {
        (s.name, tuple(sorted((s.labels or {}).items()))): s.value
        for s in fleet.client.gauges()
    }
    assert samples["framedclient_hedges_total", (("result", "sent"),)] == 1
    assert samples["framedclient_hedges_total", (("result", "won"),)] == 1


@pytest.mark.parametrize("value", ["p0", "p100", "fast", -1, 0])
def test_a_bad_hedge_delay_is_refused_naming_the_setting(value):
    with pytest.raises(ValueError, match=r"^hedge_after "):
        FramedClient([MemoryServer().endpoint()], Clock(), hedge_after=value, start=False)


@pytest.mark.parametrize("seed", range(5))
def test_every_hedged_request_fires_once_whatever_happens(seed):
    import random

    rng = random.Random(seed)
    fleet = Fleet(slow_delay=0.3, request_timeout=1.0)
    fleet.fast_factory.delay = 0.02
    fired: dict[int, list[object]] = {}
    ds = []
    for i in range(300):
        key = rng.choice(SLOW_KEYS[:20] + FAST_KEYS[:20])
        d = fleet.client.request(b"r%d" % i, key=key, idempotent=rng.random() < 0.8)
        d.addBoth(lambda r, i=i: fired.setdefault(i, []).append(r))
        ds.append(d)
        roll = rng.random()
        if roll < 0.05:
            ds[rng.randrange(len(ds))].cancel()
        elif roll < 0.07:
            rng.choice([fleet.slow, fleet.fast]).drop_all("chaos")
        fleet.advance(rng.choice([0.0, 0.01, 0.03, 0.06]))
    fleet.advance(3)
    assert sorted(fired) == list(range(300))
    for i, results in fired.items():
        assert len(results) == 1, (i, results)
        if isinstance(results[0], bytes):
            assert results[0] == b"r%d" % i  # its own reply
    assert fleet.client.in_flight == 0 and fleet.client.queued == 0
    timers = [c.func for c in fleet.clock.getDelayedCalls()]
    assert [f for f in timers if getattr(f, "__name__", "") == "fire"] == []
    hedges = fleet.client.stats()["hedges"]
    assert hedges["won"] > 0  # the chaos did hedge


def test_a_host_that_loses_every_copy_to_a_hedge_is_ejected():
    # The first host never answers (a silent host): every copy sent there
    # is cancelled by a winning hedge.  Five in a row with nothing read
    # from it meanwhile eject it, as five timeouts would; the requests
    # then go to the other host without waiting for a hedge.
    fleet = Fleet(slow_delay=3600.0)
    slow = fleet.client.health.hosts[0]
    for key in SLOW_KEYS[:5]:
        seen = results(fleet.client.request(b"x", key=key, idempotent=True, timeout=30))
        fleet.advance(0.06)
        assert seen == [b"x"]
    assert slow.state == "ejected"
    sent = fleet.client.stats()["hedges"]["sent"]
    seen = results(fleet.client.request(b"x", key=SLOW_KEYS[5], idempotent=True))
    fleet.flush()
    assert seen == [b"x"], "answered at once by the other host"
    assert fleet.client.stats()["hedges"]["sent"] == sent


def test_a_slow_host_that_answers_meanwhile_is_not_ejected_for_lost_hedges():
    # Copies that lose to hedges while the host answers something else on
    # the same connection (here: the cancel of the copy before, which the
    # reference server answers at once) are only slow: no failure counted.
    fleet = Fleet(slow_delay=0.2)
    slow = fleet.client.health.hosts[0]
    for key in SLOW_KEYS[:20]:
        results(fleet.client.request(b"x", key=key, idempotent=True, timeout=30))
        fleet.advance(0.03)
    fleet.advance(0.1)
    assert fleet.client.stats()["hedges"]["won"] == 20
    assert slow.state == "live"
