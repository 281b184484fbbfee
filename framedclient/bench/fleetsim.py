"""
``python -m framedclient.bench fleet-sim``: many clients, many hosts, one
slow and one dead (or another scenario), simulated on the in-memory kit.

Scenarios (``--scenario``), each about host 0:

- ``slow-dead`` (the default): host 0 replies in ``slow_delay``, host 1
  accepts connections and never answers (or refuses them);
- ``slow``: host 0 replies in ``slow_delay``, every other host is well;
- ``flaky``: host 0 answers ``flaky_share`` of its requests (30 %) with an
  error reply, at random but never 5 in a row (so consecutive-failure
  ejection never sees it): only ejection by success rate finds it;
- ``slowdown``: host 0 replies in ``slow_delay`` from ``slow_from`` to
  ``slow_until`` (20 s to 30 s), at the healthy delay before and after; the
  table says when it got its share back.

What a fleet sees cannot be measured on one machine with real sockets (50
client processes and 20 servers), but the client's decisions can be: every
client here is a real :class:`~framedclient.client.FramedClient` with its
default health settings, every host a
:class:`~framedclient.testing.MemoryServer` running the reference server
(or a silent one), and time is a :class:`~twisted.internet.task.Clock`, so
a minute of traffic runs in seconds and the same seed gives the same table.

The load is open-loop, as real callers are: each client starts requests at
Poisson arrival times whatever the earlier ones are doing, so a slow host
builds a queue instead of slowing the callers down (a closed loop would hide
exactly the latency a pick policy is meant to avoid).

What is simulated and what is not: picks, health, ejections, probes,
timeouts, black-hole detection and reconnects are the real code; the
network has no latency of its own (bytes move as soon as time stops), the
servers have no CPU limit (a host's reply time does not grow with its load),
and each client has one connection per host (``pool_size=1``: the default
of 4 only multiplies the connections to simulate).  Latency is what the
caller sees: from ``request()`` to its outcome.

How a run proves that no request is lost or duplicated: every request's
Deferred must fire exactly once before the end, every reply must be the
request's own body (the reference server echoes), and the hosts count each
request body they receive: none may arrive twice (requests are not
idempotent, so nothing may be sent again once written).
"""

from __future__ import annotations

import argparse
import functools
import heapq
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure

from framedclient.client import FramedClient
from framedclient.codecs import REQUEST, FC1Codec
from framedclient.health import EJECTED
from framedclient.server import ReferenceServerFactory
from framedclient.testing import MemoryServer

__all__ = [
    "POLICIES",
    "SCENARIOS",
    "FleetConfig",
    "PolicyResult",
    "by_share_of_clients",
    "main",
    "markdown_table",
    "rule_delays",
    "simulate",
]

#: The pick policies compared, in table order.
POLICIES: tuple[str, ...] = ("p2c", "least_loaded", "round_robin", "ketama")

#: The scenarios (see the module docstring).
SCENARIOS: tuple[str, ...] = ("slow-dead", "slow", "flaky", "slowdown")


@attrs.frozen
class FleetConfig:
    """
    One simulated fleet.

    :ivar clients: client processes, each with a connection to every host.
    :ivar hosts: hosts; host 0 is the slow one, host 1 the dead one.
    :ivar rate: requests per second each client starts (Poisson arrivals).
    :ivar duration: simulated seconds of load; the run then waits for every
        request to end (at most the request timeout).
    :ivar delay: how long a healthy host takes to reply, in seconds.
    :ivar slow_delay: how long the slow host takes.
    :ivar dead: what the dead host does: ``"silent"`` (accepts connections
        and never answers: the worst case, found only by timeouts) or
        ``"refuse"`` (refuses every connection).
    :ivar health: host health on (the default settings) or off
        (``failure_accrual=None``: hosts are never ejected; black-hole
        detection still closes silent connections).
    :ivar hedge_after: hedge after this many seconds (the requests are
        then idempotent: two hosts may see a request, the first and the
        hedge, but still no host sees it twice); ``None``: no hedging, and
        requests are not idempotent.
    :ivar seed: seeds the arrivals, the keys and every random choice of the
        clients (p2c's draws, jitter), so a run is repeatable.
    :ivar scenario: one of :data:`SCENARIOS`.
    :ivar flaky_share: the share of requests the flaky host fails.
    :ivar slow_from: when the ``slowdown`` host turns slow, in seconds.
    :ivar slow_until: when it recovers.
    :ivar background_errors: the share of requests every *other* host
        (healthy, not dead) answers with an error at random, so that a rule
        too quick to eject shows up as healthy hosts ejected.
    :ivar success_rate_min_volume: the clients' ``success_rate_min_volume``
        (``None``: the default), to weigh other volumes against it.
    """

    clients: int = 50
    hosts: int = 20
    rate: float = 20.0
    duration: float = 60.0
    delay: float = 0.001
    slow_delay: float = 0.2
    dead: str = "silent"
    health: bool = True
    hedge_after: float | None = None
    seed: int = 1
    scenario: str = "slow-dead"
    flaky_share: float = 0.3
    slow_from: float = 20.0
    slow_until: float = 30.0
    background_errors: float = 0.0
    success_rate_min_volume: int | None = None


@attrs.frozen
class PolicyResult:
    """
    What one pick policy did in one fleet.

    :ivar policy: the ``balancer=`` name.
    :ivar requests: requests started.
    :ivar ok: requests answered with their own body.
    :ivar failed: requests that ended with an error, by outcome.
    :ivar p50: median latency of the answered requests, in seconds.
    :ivar p99: 99th percentile of the answered requests.
    :ivar p99_all: 99th percentile over every request, failures counted at
        the time they took to fail.
    :ivar to_slow: requests the slow host received.
    :ivar to_dead: requests the dead host received.
    :ivar lost: requests whose Deferred never fired (must be 0).
    :ivar wrong: replies that were not the request's body (must be 0).
    :ivar twice: request bodies a host received more than once (must be 0;
        a hedge goes to another host, so hedging does not count here).
    :ivar seconds: real seconds the simulation took.
    :ivar ejected_half: when half the clients had ejected host 0 (seconds
        from the start; ``None``: never).
    :ivar ejected_all: when every client had.
    :ivar ejected_most: when 90 % of the clients had.
    :ivar false_ejections: ejections of healthy hosts (neither host 0 nor
        the dead host), summed over the clients.
    :ivar healthy_errors: the error replies of the healthy hosts
        (``background_errors``).
    :ivar share_back: seconds after ``slow_until`` until host 0 received at
        least 80 % of its fair share of a second's requests again
        (``None``: not in this scenario, or never).
    :ivar first_failure: for each client, when it first saw a request to
        host 0 fail (``None``: never): the earliest any rule that needs a
        client's own evidence could eject it.
    :ivar volume_reached: for each client, when it had seen a failure of
        host 0 *and* ``success_rate_min_volume`` outcomes there (``None``:
        never): the earliest the success-rate rule may judge it.
    :ivar ejected_at: for each client, when it first ejected host 0
        (``None``: never).
    """

    policy: str
    requests: int
    ok: int
    failed: dict[str, int]
    p50: float
    p99: float
    p99_all: float
    to_slow: int
    to_dead: int
    lost: int
    wrong: int
    twice: int
    seconds: float
    ejected_half: float | None = None
    ejected_all: float | None = None
    share_back: float | None = None
    ejected_most: float | None = None
    false_ejections: int = 0
    healthy_errors: int = 0
    first_failure: tuple[float | None, ...] = ()
    volume_reached: tuple[float | None, ...] = ()
    ejected_at: tuple[float | None, ...] = ()

    @property
    def ok_rate(self) -> float:
        return self.ok / self.requests if self.requests else 0.0


class _Counting(ProtocolWrapper):
    """
    Counts each request body the host receives, then lets the wrapped
    server (or nothing, for a silent host) handle the bytes.
    """

    def __init__(self, factory: _CountingFactory, wrapped: Protocol) -> None:
        super().__init__(factory, wrapped)  # type: ignore[arg-type]
        self._framer = factory.codec.new_framer()
        self._seen = factory.seen

    def dataReceived(self, data: bytes) -> None:
        factory = self.factory
        codec = factory.codec
        decode = codec.decode
        second = int(factory.clock.seconds())
        fail = factory.fail
        rewritten: list[bytes] = []
        for frame in self._framer.feed(data):
            kind, request_id, body = decode(frame)
            if kind == REQUEST:
                self._seen[body] += 1
                factory.per_second[second] += 1
                if fail is not None and fail():
                    body = b"!error:flaky"
                    factory.errors += 1
            if fail is not None:
                # Frames come out of the framer without their length prefix.
                rewritten.append(codec.encode(kind, request_id, body))
        if fail is not None:
            data = b"".join(rewritten)
        super().dataReceived(data)  # type: ignore[no-untyped-call]


class _CountingFactory(WrappingFactory):
    protocol = _Counting  # type: ignore[assignment]

    def __init__(
        self,
        wrapped: IProtocolFactory,
        seen: Counter[bytes],
        clock: Clock,
        fail: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self.codec = FC1Codec()
        self.seen = seen
        self.clock = clock
        #: whether the next request fails (``None``: none does)
        self.fail = fail
        #: requests received in each second of the run
        self.per_second: Counter[int] = Counter()
        #: requests made to fail
        self.errors = 0

    def registerProtocol(self, p: Any) -> None:
        # WrappingFactory keeps every protocol ever made; a simulation
        # makes many and needs none of them.
        pass

    def unregisterProtocol(self, p: Any) -> None:
        pass


def _flaky(share: float, rng: random.Random) -> Callable[[], bool]:
    """
    Fails ``share`` of the calls at random, never 5 in a row.
    """
    in_a_row = 0

    def fail() -> bool:
        nonlocal in_a_row
        if in_a_row < 4 and rng.random() < share:
            in_a_row += 1
            return True
        in_a_row = 0
        return False

    return fail


class _HeapClock(Clock):
    """
    A :class:`~twisted.internet.task.Clock` whose timers live in a heap.

    ``Clock`` sorts its whole list of calls at every ``callLater``, which is
    what a test with a few timers wants; fifty clients hold a few thousand
    timers (deadlines, heartbeats, server delays), and the sorting would
    cost more than everything else.  Same behaviour, O(log n) per timer:
    cancelled and rescheduled calls leave stale entries that are skipped.
    """

    def __init__(self) -> None:
        super().__init__()
        self._heap: list[tuple[float, int, DelayedCall]] = []
        self._seq = 0

    def _push(self, call: DelayedCall) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (call.getTime(), self._seq, call))

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: object, **kw: object
    ) -> DelayedCall:
        call = DelayedCall(
            self.seconds() + delay,
            callable,
            args,
            kw,
            lambda c: None,
            self._push,
            self.seconds,
        )
        self._push(call)
        return call

    def _head(self) -> DelayedCall | None:
        heap = self._heap
        while heap:
            when, _, call = heap[0]
            if call.cancelled or call.called or when > call.getTime():
                # Gone, or moved earlier by reset() (which pushed it anew).
                heapq.heappop(heap)
                continue
            if when < call.getTime():
                # Moved later by reset() or delay(), which push nothing.
                heapq.heappop(heap)
                self._push(call)
                continue
            return call
        return None

    def next_time(self) -> float:
        """
        When the next timer is due (infinity if none).
        """
        head = self._head()
        return head.getTime() if head is not None else float("inf")

    def getDelayedCalls(self) -> list[DelayedCall]:
        live = {id(c): c for _, _, c in self._heap if not (c.cancelled or c.called)}
        return list(live.values())

    def advance(self, amount: float) -> None:
        self.rightNow += amount
        while True:
            head = self._head()
            if head is None or head.getTime() > self.rightNow:
                return
            heapq.heappop(self._heap)
            head.called = 1
            head.func(*head.args, **head.kw)


def _percentile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class _Fleet:
    """
    The hosts and clients of one run, and the loop that moves time.
    """

    def __init__(self, config: FleetConfig, policy: str) -> None:
        self.config = config
        self.clock = _HeapClock()
        self.seen: list[Counter[bytes]] = []
        self.servers: list[MemoryServer] = []
        #: Pumps with bytes (or a close) to move.
        #: (A dict, not a set: the order bytes move in must not depend on
        #: memory addresses, so that a seed gives one result.)
        self.dirty: dict[Any, None] = {}
        self.watched: set[Any] = set()
        self.counting: list[_CountingFactory] = []
        scenario = config.scenario
        dead = scenario == "slow-dead"
        for i in range(config.hosts):
            inner: IProtocolFactory
            if i == 1 and dead and config.dead == "silent":
                inner = Factory.forProtocol(Protocol)
            else:
                slow = i == 0 and scenario in ("slow-dead", "slow")
                delay = config.slow_delay if slow else config.delay
                inner = reference = ReferenceServerFactory(
                    clock=self.clock, delay=delay
                )
                if i == 0 and scenario == "slowdown":
                    self.clock.callLater(
                        config.slow_from, setattr, reference, "delay",
                        config.slow_delay,
                    )
                    self.clock.callLater(
                        config.slow_until, setattr, reference, "delay", config.delay
                    )
            seen: Counter[bytes] = Counter()
            self.seen.append(seen)
            fail = None
            if i == 0 and scenario == "flaky":
                fail = _flaky(config.flaky_share, random.Random(config.seed + 1))
            elif config.background_errors and not (i == 1 and dead):
                fail = _flaky(
                    config.background_errors, random.Random(config.seed + 2 + i)
                )
            counting = _CountingFactory(inner, seen, self.clock, fail)
            self.counting.append(counting)
            server = MemoryServer(counting, clock=self.clock)
            if i == 1 and dead and config.dead == "refuse":
                server.refuse()
            self.servers.append(server)
        names = [f"tcp:10.0.0.{i + 1}:9000" for i in range(config.hosts)]
        # Health off: hosts are never ejected (the other settings stay).
        options: dict[str, Any] = {} if config.health else {"failure_accrual": None}
        if config.success_rate_min_volume is not None:
            options["success_rate_min_volume"] = config.success_rate_min_volume
        if config.hedge_after is not None:
            options["hedge_after"] = config.hedge_after
        self.clients = [
            FramedClient(
                [s.endpoint() for s in self.servers],
                self.clock,
                names=names,
                balancer=policy,
                pool_size=1,
                **options,
            )
            for _ in range(config.clients)
        ]
        #: when each client first ejected host 0
        self.ejected: dict[int, float] = {}
        #: ejections of the healthy hosts
        self.false_ejections = 0
        #: the names of the hosts that may be ejected rightly
        self.suspects = {names[0], names[1]} if dead else {names[0]}
        self.suspects_first = names[0]
        for index, client in enumerate(self.clients):
            client.health.add_listener(functools.partial(self._health_changed, index))
        self.settle()

    def _health_changed(self, index: int, host: Any) -> None:
        if host.state != EJECTED:
            return
        if host.name not in self.suspects:
            self.false_ejections += 1
        elif host.name == self.suspects_first and index not in self.ejected:
            self.ejected[index] = self.clock.seconds()

    def settle(self) -> None:
        """
        Run what is due now and move bytes until nothing moves.

        Only connections written to (or closed) since the last round are
        pumped: with a thousand connections, visiting each one at every
        step would cost more than the clients do.
        """
        clock = self.clock
        dirty = self.dirty
        for _ in range(10_000):
            clock.advance(0)
            moved = False
            for server in self.servers:
                if server.pending_attempts:
                    server.flush()
                    self._watch(server)
                    moved = True
            while dirty:
                pumps, self.dirty = dirty, {}
                dirty = self.dirty
                for pump in pumps:
                    if not pump.closed and pump.pump(advanceClock=False):
                        moved = True
            if not moved and not clock.next_time() <= clock.seconds():
                return
        raise RuntimeError("the fleet keeps moving bytes without time passing")

    def _watch(self, server: MemoryServer) -> None:
        """
        Have the new connections of ``server`` mark themselves dirty when
        either side writes or closes.
        """
        for conn in server.connections:
            pump = conn.pump
            if pump in self.watched:
                continue
            self.watched.add(pump)
            for io in (pump.clientIO, pump.serverIO):
                for name in ("write", "loseConnection", "abortConnection"):
                    method = getattr(io, name)

                    def marked(*args: Any, _m: Any = method, _p: Any = pump) -> Any:
                        self.dirty[_p] = None
                        return _m(*args)

                    setattr(io, name, marked)

    def next_timer(self) -> float:
        return self.clock.next_time()

    def advance_to(self, when: float) -> None:
        now = self.clock.seconds()
        if when > now:
            self.clock.advance(when - now)
        self.settle()

    def forget_closed(self) -> None:
        for server in self.servers:
            server.forget_closed()
        self.watched = {c.pump for s in self.servers for c in s.connections}

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.settle()


def simulate(config: FleetConfig, policy: str) -> PolicyResult:
    """
    Run ``config`` with every client using ``policy``; see the module
    docstring for what is simulated.
    """
    started = time.perf_counter()
    # The clients' own random choices (p2c's draws, backoff and ejection
    # jitter) use the random module's global generator: seed it, so the
    # same seed gives the same table.
    random.seed(config.seed)
    rng = random.Random(config.seed)
    fleet = _Fleet(config, policy)
    arrivals: list[tuple[float, int]] = []
    for index in range(config.clients):
        t = rng.expovariate(config.rate)
        while t < config.duration:
            arrivals.append((t, index))
            t += rng.expovariate(config.rate)
    arrivals.sort()
    fired: list[int] = []
    latencies: list[float] = []
    all_latencies: list[float] = []
    failed: Counter[str] = Counter()
    wrong = 0
    keyed = policy == "ketama"
    hedged = config.hedge_after is not None

    # What each client learnt of host 0: its outcomes there, its first
    # failure there, and when it had both a failure and the volume.
    volume = fleet.clients[0].health.success_rate_min_volume
    to_host0 = fleet.seen[0]
    outcomes = [0] * config.clients
    first_failure: list[float | None] = [None] * config.clients
    volume_reached: list[float | None] = [None] * config.clients

    def ended(
        result: object, number: int, index: int, body: bytes, start: float
    ) -> None:
        nonlocal wrong
        fired[number] += 1
        now = fleet.clock.seconds()
        took = now - start
        all_latencies.append(took)
        bad = isinstance(result, Failure)
        if bad:
            assert isinstance(result, Failure)
            failed[getattr(result.value, "outcome", type(result.value).__name__)] += 1
        elif result == body:
            latencies.append(took)
        else:
            wrong += 1
        if body in to_host0:
            # (No hedging in the scenarios that matter here: a body reaches
            # one host, so this outcome is host 0's.)
            outcomes[index] += 1
            if bad and first_failure[index] is None:
                first_failure[index] = now
            if (
                volume_reached[index] is None
                and first_failure[index] is not None
                and outcomes[index] >= volume
            ):
                volume_reached[index] = now

    clock = fleet.clock
    for number, (when, index) in enumerate(arrivals):
        while True:
            timer = fleet.next_timer()
            if timer >= when:
                break
            fleet.advance_to(timer)
        fleet.advance_to(when)
        body = b"c%d-%d" % (index, number)
        key = b"k%d" % rng.getrandbits(32) if keyed else None
        fired.append(0)
        fleet.clients[index].request(body, key=key, idempotent=hedged).addBoth(
            ended, number, index, body, clock.seconds()
        )
        if number % 5000 == 4999:
            fleet.forget_closed()
    # Every request ends within its timeout; then stop.
    end = clock.seconds() + 60.0
    while any(n == 0 for n in fired[-2000:]) or len(all_latencies) < len(fired):
        timer = fleet.next_timer()
        if timer > end:
            break
        fleet.advance_to(timer)
    fleet.stop()
    ordered = sorted(latencies)
    ordered_all = sorted(all_latencies)
    received = [sum(seen.values()) for seen in fleet.seen]
    ejected_at = tuple(fleet.ejected.get(i) for i in range(config.clients))
    ejected_half, ejected_most, ejected_all = by_share_of_clients(ejected_at)
    share_back = None
    if config.scenario == "slowdown":
        host0 = fleet.counting[0].per_second
        total: Counter[int] = Counter()
        for counting in fleet.counting:
            total.update(counting.per_second)
        fair = 0.8 / config.hosts
        for second in range(int(config.slow_until), int(config.duration)):
            if total[second] and host0[second] >= fair * total[second]:
                share_back = second + 1 - config.slow_until
                break
    return PolicyResult(
        policy=policy,
        requests=len(fired),
        ok=len(latencies),
        failed=dict(failed),
        p50=_percentile(ordered, 50),
        p99=_percentile(ordered, 99),
        p99_all=_percentile(ordered_all, 99),
        to_slow=received[0],
        to_dead=received[1],
        lost=sum(1 for n in fired if n == 0),
        wrong=wrong,
        twice=sum(1 for seen in fleet.seen for n in seen.values() if n > 1),
        seconds=time.perf_counter() - started,
        ejected_half=ejected_half,
        ejected_all=ejected_all,
        ejected_most=ejected_most,
        false_ejections=fleet.false_ejections,
        healthy_errors=sum(
            c.errors for i, c in enumerate(fleet.counting) if i >= len(fleet.suspects)
        ),
        share_back=share_back,
        first_failure=tuple(first_failure),
        volume_reached=tuple(volume_reached),
        ejected_at=ejected_at,
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def _scenario_text(config: FleetConfig) -> str:
    slow = _ms(config.slow_delay)
    return {
        "slow-dead": f"one in {slow} ms, one is dead ({config.dead})",
        "slow": f"one in {slow} ms",
        "flaky": f"one fails {config.flaky_share:.0%} of its requests at random "
        f"(error replies, never 5 in a row)",
        "slowdown": f"one in {slow} ms from {config.slow_from:g} s to "
        f"{config.slow_until:g} s",
    }[config.scenario]


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def by_share_of_clients(
    times: Sequence[float | None],
) -> tuple[float | None, float | None, float | None]:
    """
    When half, 90 % and all of the clients had done something, from each
    client's time of it (``None``: never, or not that many clients).
    """
    done = sorted(t for t in times if t is not None)
    n = len(times)
    half, most = (n + 1) // 2, math.ceil(n * 0.9)
    return (
        done[half - 1] if len(done) >= half else None,
        done[most - 1] if len(done) >= most else None,
        done[-1] if done and len(done) == n else None,
    )


def rule_delays(result: PolicyResult) -> list[float]:
    """
    For each client that both saw host 0 fail and ejected it, how long
    after its first failure there it ejected it: what the ejection rule
    adds to the evidence.
    """
    return sorted(
        ejected - failed
        for ejected, failed in zip(result.ejected_at, result.first_failure, strict=True)
        if ejected is not None and failed is not None
    )


def markdown_table(config: FleetConfig, results: Sequence[PolicyResult]) -> str:
    """
    The results as a Markdown table, one row per policy.
    """
    scenario = config.scenario
    host0 = {"flaky": "flaky host", "slowdown": "slowing host"}.get(
        scenario, "slow host"
    )
    extra_head = extra_rule = ""
    if scenario == "flaky":
        extra_head = (
            " ejected by half / 90 % / all clients, s |"
            " first failure seen by half / 90 % / all, s |"
            " rule's delay median / max, s |"
        )
        extra_rule = "--:|--:|--:|"
    elif scenario == "slowdown":
        extra_head = " share back after, s |"
        extra_rule = "--:|"
    dead = scenario == "slow-dead"
    lines = [
        f"{config.clients} clients \N{MULTIPLICATION SIGN} {config.hosts} hosts, "
        f"{config.rate:g} req/s "
        f"per client for {config.duration:g} simulated s (seed {config.seed}); "
        f"hosts reply in {_ms(config.delay)} ms, {_scenario_text(config)}; "
        + (
            f"the others fail {config.background_errors:.2%} at random; "
            if config.background_errors
            else ""
        )
        + f"{'default health settings' if config.health else 'health off'}"
        + (
            f" but success_rate_min_volume={config.success_rate_min_volume}"
            if config.success_rate_min_volume is not None and config.health
            else ""
        )
        + ", "
        + (
            f"hedged after {_ms(config.hedge_after)} ms, "
            if config.hedge_after is not None
            else ""
        )
        + "pool_size=1.",
        "",
        "| policy | requests | ok | failed | p50 ms | p99 ms | p99 ms (all) "
        f"| to {host0} |{' to dead host |' if dead else ''} healthy hosts ejected "
        "| lost / twice / wrong |"
        + extra_head,
        "|---|--:|--:|--:|--:|--:|--:|--:|" + ("--:|" if dead else "") + "--:|--:|"
        + extra_rule,
    ]
    for r in results:
        extra = ""
        if scenario == "flaky":
            seen = " / ".join(map(_seconds, by_share_of_clients(r.first_failure)))
            delays = rule_delays(r)
            delay = (
                f"{delays[(len(delays) - 1) // 2]:.1f} / {delays[-1]:.1f}"
                if delays
                else "none"
            )
            extra = (
                f" {_seconds(r.ejected_half)} / {_seconds(r.ejected_most)} / "
                f"{_seconds(r.ejected_all)} | {seen} | {delay} |"
            )
        elif scenario == "slowdown":
            extra = f" {_seconds(r.share_back)} |"
        lines.append(
            f"| {r.policy} | {r.requests:,} | {r.ok_rate * 100:.2f} % "
            f"| {sum(r.failed.values()):,} | {_ms(r.p50)} | {_ms(r.p99)} "
            f"| {_ms(r.p99_all)} | {r.to_slow:,} |"
            + (f" {r.to_dead:,} |" if dead else "")
            + f" {r.false_ejections:,} |"
            + f" {r.lost} / {r.twice} / {r.wrong} |"
            + extra
        )
    return "\n".join(lines) + "\n"


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be within [0, 1), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = FleetConfig()
    parser = argparse.ArgumentParser(
        prog="python -m framedclient.bench fleet-sim",
        description=(
            "Simulate many clients and hosts (one slow, one dead) on the "
            "in-memory kit and print each pick policy's ok-rate and latency "
            "as a Markdown table."
        ),
    )
    parser.add_argument("--clients", type=_positive(int), default=defaults.clients)
    parser.add_argument("--hosts", type=_positive(int), default=defaults.hosts)
    parser.add_argument(
        "--rate", type=_positive(float), default=defaults.rate,
        help="requests per second each client starts (default %(default)s)",
    )
    parser.add_argument(
        "--duration", type=_positive(float), default=defaults.duration,
        help="simulated seconds of load (default %(default)s)",
    )
    parser.add_argument(
        "--slow-delay", type=_positive(float), default=defaults.slow_delay,
        help="the slow host's reply time in seconds (default %(default)s)",
    )
    parser.add_argument(
        "--dead", choices=("silent", "refuse"), default=defaults.dead,
        help="what the dead host does (default %(default)s)",
    )
    parser.add_argument(
        "--no-health", action="store_true",
        help="never eject a host (failure_accrual=None), to compare",
    )
    parser.add_argument(
        "--hedge-after", type=_positive(float), default=None, metavar="SECONDS",
        help="idempotent requests, hedged after SECONDS (hedge_after=)",
    )
    parser.add_argument(
        "--background-errors", type=_share, default=defaults.background_errors,
        metavar="SHARE",
        help="the share of requests every healthy host answers with an error "
        "at random, to see healthy hosts ejected (default %(default)s)",
    )
    parser.add_argument(
        "--success-rate-min-volume", type=_positive(int), default=None,
        metavar="N",
        help="the clients' success_rate_min_volume (default: the client's own)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--seeds", type=_positive(int), default=1, metavar="N",
        help="run N seeds, from --seed on, one table each (default %(default)s)",
    )
    parser.add_argument(
        "--scenario", choices=SCENARIOS, default=defaults.scenario,
        help="what host 0 (and host 1) do: slow-dead (one slow, one dead), "
        "slow (one slow), flaky (one failing 30 %% at random), slowdown (one "
        "slow from 20 s to 30 s); default %(default)s",
    )
    parser.add_argument(
        "--policies",
        default=",".join(POLICIES),
        help="comma-separated pick policies (default %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.hosts < 3:
        parser.error("--hosts must be at least 3 (one slow, one dead, one well)")
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        parser.error(
            f"unknown policies {', '.join(unknown)}; "
            f"choose from {', '.join(POLICIES)}"
        )
    config = FleetConfig(
        clients=args.clients,
        hosts=args.hosts,
        rate=args.rate,
        duration=args.duration,
        slow_delay=args.slow_delay,
        dead=args.dead,
        health=not args.no_health,
        hedge_after=args.hedge_after,
        seed=args.seed,
        scenario=args.scenario,
        background_errors=args.background_errors,
        success_rate_min_volume=args.success_rate_min_volume,
    )
    broken = False
    for n in range(args.seeds):
        seeded = attrs.evolve(config, seed=config.seed + n)
        results = []
        for policy in policies:
            result = simulate(seeded, policy)
            print(
                f"{policy}: {result.requests:,} requests in {result.seconds:.1f} s",
                file=sys.stderr,
            )
            results.append(result)
            broken = broken or bool(result.lost or result.twice or result.wrong)
        print(("\n" if n else "") + markdown_table(seeded, results), end="")
    return 1 if broken else 0
