"""
Thundering herd: 200 Connection machines on one task.Clock lose their server
at the same instant, face a 60 s outage (every attempt refused), then the
server comes back.

Jitter must spread their reconnect attempts, and each machine's delays must
be exactly what its backoff policy says.

The threshold, worked out: gRPC's policy (the default) waits
``1.0 * uniform(0.8, 1.2)`` s after the first failure, a 0.4 s wide window.
A 100 ms window therefore catches each machine's first retry with
probability 1/4: 50 of 200 on average, with a binomial standard deviation of
about 6, so the fullest sliding window of that round holds about 60-65.
Later rounds are wider still (the window grows with the delay and the
jitter of earlier rounds adds up).  We allow at most 35 % of the fleet (70
attempts) in any 100 ms window; without jitter the same measure finds 100 %
(checked below, so the measure itself is known to detect a herd).  The
instant reconnect right after losing a *healthy* connection is deliberate
(the server may merely have closed one socket) and is excluded: it happens
while the server is down, and it is the retries that reach a recovering
server.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from itertools import pairwise

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost as TCPConnectionLost
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from framedclient.backoff import ExponentialBackoff, FullJitterBackoff
from framedclient.connection import Connection
from framedclient.protocol import FramedClientFactory, FramedProtocol

FLEET = 200
OUTAGE = 60.0
WINDOW = 0.1
MAX_SHARE = 0.35


class Server:
    """
    What the fleet connects to: up or down, and a log of every attempt.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.up = True
        self.attempts: list[tuple[float, int]] = []  # (time, machine)
        self.protocols: list[FramedProtocol] = []

    def crash(self) -> None:
        self.up = False
        protocols, self.protocols = self.protocols, []
        for proto in protocols:
            proto.connectionLost(Failure(TCPConnectionLost("server crashed")))


class Endpoint:
    """
    One machine's ``IStreamClientEndpoint``: connects at once, or is
    refused at once, depending on the server.
    """

    def __init__(self, server: Server, machine: int) -> None:
        self.server = server
        self.machine = machine

    def connect(self, factory: FramedClientFactory) -> Deferred[FramedProtocol]:
        server = self.server
        server.attempts.append((server.clock.seconds(), self.machine))
        if not server.up:
            return fail(ConnectionRefusedError("server is down"))
        proto = factory.buildProtocol(None)
        proto.makeConnection(StringTransport())
        server.protocols.append(proto)
        return succeed(proto)


def run_until(clock: Clock, end: float) -> None:
    """
    Advance the clock from event to event, so every timer runs at exactly
    its own time (one big advance would run them all at the end time).
    """
    for _ in range(1_000_000):
        calls = [c for c in clock.getDelayedCalls() if c.getTime() <= end]
        if not calls:
            break
        clock.advance(max(0.0, min(c.getTime() for c in calls) - clock.seconds()))
    else:
        raise AssertionError("the fleet never went quiet: a machine is spinning")
    clock.advance(max(0.0, end - clock.seconds()))


def policy(machine: int, jitter: float = 0.2) -> ExponentialBackoff:
    return ExponentialBackoff(
        jitter=jitter, random=random.Random(f"herd/{machine}").random
    )


def run_fleet(make_policy=policy):
    """
    The whole scenario; returns (server, connections, crash time, recovery).
    """
    clock = Clock()
    server = Server(clock)
    factory = FramedClientFactory(clock=clock)
    connections = [
        Connection(
            Endpoint(server, i),
            factory,
            clock,
            backoff=make_policy(i),
            name=f"m{i}",
        )
        for i in range(FLEET)
    ]
    for conn in connections:
        conn.start()
    run_until(clock, 5.0)  # up and healthy
    assert all(c.state == "ready" for c in connections)
    server.attempts.clear()
    crashed_at = clock.seconds()
    server.crash()
    run_until(clock, crashed_at + OUTAGE)
    recovered_at = clock.seconds()
    server.up = True
    run_until(clock, recovered_at + 200.0)
    return server, connections, crashed_at, recovered_at


def fullest_window(times: list[float], width: float = WINDOW) -> int:
    times = sorted(times)
    best = 0
    for i, start in enumerate(times):
        end = bisect_left(times, start + width)
        best = max(best, end - i)
    return best


def retries(server: Server, crashed_at: float) -> list[float]:
    """
    Attempt times, without the deliberate instant reconnect at the crash.
    """
    return [t for t, _ in server.attempts if t > crashed_at]


def test_every_machine_reconnects_once_the_server_is_back():
    server, connections, crashed_at, recovered_at = run_fleet()
    assert all(c.state == "ready" for c in connections)
    # The crash itself: one instant attempt each (losing a healthy
    # connection), every one refused.
    at_crash = [m for t, m in server.attempts if t == crashed_at]
    assert sorted(at_crash) == list(range(FLEET))


def test_reconnect_attempts_are_spread_by_jitter():
    server, connections, crashed_at, recovered_at = run_fleet()
    times = retries(server, crashed_at)
    fullest = fullest_window(times)
    assert fullest <= MAX_SHARE * FLEET, (
        f"{fullest} of {len(times)} attempts within {WINDOW * 1000:.0f} ms"
    )
    # The first attempts that reach the recovered server are spread too.
    first_after = sorted(
        min(t for t, m in server.attempts if m == machine and t >= recovered_at)
        for machine in range(FLEET)
    )
    assert fullest_window(first_after) <= MAX_SHARE * FLEET
    assert first_after[-1] - first_after[0] > 5.0


def test_without_jitter_the_same_measure_finds_the_herd():
    server, connections, crashed_at, recovered_at = run_fleet(
        lambda machine: policy(machine, jitter=0.0)
    )
    times = retries(server, crashed_at)
    assert fullest_window(times) == FLEET


def test_each_machine_waits_exactly_what_its_policy_says():
    server, connections, crashed_at, recovered_at = run_fleet()
    by_machine: dict[int, list[float]] = {i: [] for i in range(FLEET)}
    for t, machine in server.attempts:
        by_machine[machine].append(t)
    for machine, times in by_machine.items():
        # A twin policy with the same seed predicts every delay.
        twin = policy(machine)
        gaps = [b - a for a, b in pairwise(times)]
        expected = [twin.delay(n) for n in range(1, len(gaps) + 1)]
        assert gaps == pytest.approx(expected, rel=1e-9, abs=1e-9), machine
        # It tried until the server was back, and then stopped.
        assert times[-1] >= recovered_at
        assert sum(1 for t in times if t < recovered_at) <= 12  # not spinning


def test_full_jitter_spreads_the_fleet_even_more():
    server, connections, crashed_at, recovered_at = run_fleet(
        lambda machine: FullJitterBackoff(
            random=random.Random(f"herd/full/{machine}").random
        )
    )
    full = fullest_window(retries(server, crashed_at))
    assert all(c.state == "ready" for c in connections)
    # Its first retry is uniform over [0, 1 s): 10 % of the fleet per 100 ms
    # on average, against 25 % for gRPC's +/-20 % around 1 s.
    server, _, crashed_at, _ = run_fleet()
    grpc = fullest_window(retries(server, crashed_at))
    assert full < grpc
    assert full <= 0.2 * FLEET
