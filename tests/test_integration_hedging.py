"""
Hedging over loopback: two reference servers, one slow; idempotent requests
are answered by the fast one, none lost, none answered twice or wrongly.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater

from framedclient import FramedClient
from framedclient.backoff import ExponentialBackoff
from framedclient.retry import RetryBudget
from framedclient.server import ReferenceServerFactory, listen

FAST = ExponentialBackoff(initial=0.05, max_delay=0.2, min_connect_timeout=1.0)
SLOW_DELAY = 3.0
HEDGE_AFTER = 0.05


@pytest_twisted.ensureDeferred
async def test_one_slow_host_costs_the_hedge_delay_not_its_latency():
    slow = ReferenceServerFactory(clock=reactor, delay=SLOW_DELAY)
    fast = ReferenceServerFactory(clock=reactor)
    slow_port = await listen(reactor, "tcp:0:interface=127.0.0.1", slow)
    fast_port = await listen(reactor, "tcp:0:interface=127.0.0.1", fast)
    client = FramedClient.from_endpoint(
        reactor,
        [
            f"tcp:127.0.0.1:{slow_port.getHost().port}",
            f"tcp:127.0.0.1:{fast_port.getHost().port}",
        ],
        pool_size=2,
        request_timeout=10.0,
        backoff=FAST,
        hedge_after=HEDGE_AFTER,
        # Every slow request may be hedged here; the default budget (10 %)
        # is checked with deterministic time in test_hedging.py.
        hedge_budget=RetryBudget(reactor, ratio=1.0, min_per_second=0, cap=1000),
    )
    try:
        await client.when_ready()
        for _ in range(100):  # all four connections, bounded
            if client.pool.ready_count == 4:
                break
            await deferLater(reactor, 0.02, lambda: None)
        fired: dict[int, list[object]] = {}
        latencies: list[float] = []

        def settle(result: object, i: int, started: float) -> object:
            fired.setdefault(i, []).append(result)
            latencies.append(reactor.seconds() - started)
            return result

        count = 0
        for _wave in range(4):
            ds = []
            for _ in range(50):
                d = client.request(b"r%d" % count, idempotent=True)
                d.addBoth(settle, count, reactor.seconds())
                ds.append(d)
                count += 1
            replies = await gatherResults(ds)
            assert replies == [b"r%d" % i for i in range(count - 50, count)]
        # Every request fired once, with its own reply.
        assert sorted(fired) == list(range(count))
        assert all(results == [b"r%d" % i] for i, results in fired.items())
        hedges = client.stats()["hedges"]
        # p2c sent about half the first copies to the slow host; each was
        # hedged, and the fast host's copy won.  (On a loaded machine a
        # first copy on the fast host may be hedged to the slow one too,
        # and win.)
        assert 0 < hedges["won"] <= hedges["sent"] < count
        # No request waited for the slow host: the slowest took the hedge
        # delay plus a loopback round trip, far below SLOW_DELAY even on a
        # loaded machine.
        latencies.sort()
        assert latencies[-1] < SLOW_DELAY / 2
        # The slow host answers nothing in time, so every copy it got lost
        # and was cancelled (cancel frames follow their requests on the
        # wire); every request went out once, plus its hedge if any.
        for _ in range(100):
            if slow.requests and slow.cancels == slow.requests:
                break
            await deferLater(reactor, 0.02, lambda: None)
        assert slow.cancels == slow.requests > 0
        assert fast.requests + slow.requests == count + hedges["sent"]
        assert client.in_flight == 0
    finally:
        await client.close(timeout=2)
        await slow_port.stopListening()
        await fast_port.stopListening()
