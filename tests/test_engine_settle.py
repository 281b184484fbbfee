"""
The request engine's two promises that the adapters build on, as plain
deterministic examples (``test_engine_model.py`` fuzzes the same engine
against a model; these name each case):

- every request is settled exactly once, whatever order its reply, its
  cancel, its timeout and the end of its connection come in;
- a request with a timeout is woken up for at its deadline: the first one
  with the connection's usual timeout arms the timer, and a wake-up that
  comes before a deadline arms the next one.

Only the engine's public methods are used (``open``, ``take_unwritten``,
``reply``, ``cancel``, ``wake``, ``lose_all``, ``withdraw_unwritten``),
driven by a :class:`~twisted.internet.task.Clock` as the Twisted adapter
drives it.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock

from framedclient.codecs import Matching
from framedclient.engine import (
    CANCELLED,
    LATE,
    LOST,
    MATCHED,
    REPLY,
    TIMEOUT,
    Request,
    RequestEngine,
)
from framedclient.errors import ConnectionLost, RequestTimeout


def encode(kind: int, request_id: int, body: bytes) -> bytes:
    return request_id.to_bytes(4, "big") + body


class ClockDriver:
    """
    The engine's :class:`~framedclient.engine.EngineActions`, as an adapter
    implements them: ``arm`` replaces the one pending wake-up by a timer on
    ``clock`` that calls ``wake``; outcomes are recorded.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.outcomes: list[tuple[Request, int, Any]] = []
        self.arms: list[float] = []
        self.idles = 0
        self.timer: IDelayedCall | None = None
        self.engine: RequestEngine | None = None

    def deliver(self, request: Request, exit: int, value: Any, now: float) -> None:
        self.outcomes.append((request, exit, value))

    def send_cancel(self, request_id: int) -> None:
        pass

    def arm(self, deadline: float) -> None:
        self.arms.append(deadline)
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        delay = max(0.0, deadline - self.clock.seconds())
        self.timer = self.clock.callLater(delay, self._wake)

    def _wake(self) -> None:
        self.timer = None
        assert self.engine is not None
        self.engine.wake(self.clock.seconds())

    def idle(self) -> None:
        self.idles += 1

    def exits_of(self, request: Request) -> list[int]:
        return [exit for r, exit, _ in self.outcomes if r is request]


def engine_on(
    clock: Clock, matching: Matching = Matching.BY_ID
) -> tuple[RequestEngine, ClockDriver]:
    driver = ClockDriver(clock)
    engine = RequestEngine(
        matching=matching,
        max_id=2**16,
        max_pending=100,
        abandoned_ttl=None,
        supports_cancel=False,
        encode=encode,
        seconds=clock.seconds,
        actions=driver,
    )
    driver.engine = engine
    return engine, driver


def sent(engine: RequestEngine, clock: Clock, timeout: float | None = 5.0) -> Request:
    r = engine.open(b"x", timeout, clock.seconds())
    engine.take_unwritten([])
    return r


MATCHINGS = pytest.mark.parametrize("matching", [Matching.BY_ID, Matching.IN_ORDER])


# -- settled exactly once ---------------------------------------------------------


@MATCHINGS
def test_cancel_after_the_reply_changes_nothing(matching):
    clock = Clock()
    engine, driver = engine_on(clock, matching)
    r = sent(engine, clock)
    assert engine.reply(r.request_id, True, b"answer", clock.seconds()) == MATCHED
    engine.cancel(r)
    assert driver.exits_of(r) == [REPLY]
    assert driver.outcomes[0][2] == b"answer"
    assert (engine.live, engine.tombstones, engine.entries) == (0, 0, 0)
    assert driver.idles == 1


@MATCHINGS
def test_a_reply_after_cancel_is_dropped_as_late(matching):
    clock = Clock()
    engine, driver = engine_on(clock, matching)
    r = sent(engine, clock)
    engine.cancel(r)
    assert driver.exits_of(r) == [CANCELLED]
    assert engine.tombstones == 1  # its ID stays reserved for the reply
    assert engine.reply(r.request_id, True, b"late", clock.seconds()) == LATE
    assert driver.exits_of(r) == [CANCELLED]
    assert (engine.live, engine.tombstones, engine.late_replies) == (0, 0, 1)
    assert driver.idles == 1


@MATCHINGS
def test_cancel_twice_settles_once(matching):
    clock = Clock()
    engine, driver = engine_on(clock, matching)
    r = sent(engine, clock)
    engine.cancel(r)
    engine.cancel(r)
    assert driver.exits_of(r) == [CANCELLED]
    assert (engine.live, engine.tombstones) == (0, 1)
    assert driver.idles == 1


def test_cancel_twice_before_the_write_settles_once_and_sends_nothing():
    clock = Clock()
    engine, driver = engine_on(clock)
    r = engine.open(b"x", 5.0, clock.seconds())
    engine.cancel(r)
    engine.cancel(r)
    chunks: list[bytes] = []
    engine.take_unwritten(chunks)
    assert chunks == []
    assert driver.exits_of(r) == [CANCELLED]
    assert (engine.live, engine.tombstones, engine.entries) == (0, 0, 0)


@MATCHINGS
def test_cancel_after_the_timeout_changes_nothing(matching):
    clock = Clock()
    engine, driver = engine_on(clock, matching)
    r = sent(engine, clock, timeout=5.0)
    clock.advance(5.0)
    assert driver.exits_of(r) == [TIMEOUT]
    assert isinstance(driver.outcomes[0][2], RequestTimeout)
    engine.cancel(r)
    engine.cancel(r)
    assert driver.exits_of(r) == [TIMEOUT]
    assert (engine.live, engine.tombstones) == (0, 1)
    assert driver.idles == 1


@MATCHINGS
def test_a_cancelled_request_does_not_time_out_later(matching):
    clock = Clock()
    engine, driver = engine_on(clock, matching)
    r = sent(engine, clock, timeout=5.0)
    engine.cancel(r)
    clock.advance(10.0)
    assert driver.exits_of(r) == [CANCELLED]


@MATCHINGS
def test_a_request_answered_just_before_its_deadline_does_not_also_time_out(matching):
    clock = Clock()
    engine, driver = engine_on(clock, matching)
    r = sent(engine, clock, timeout=5.0)
    clock.advance(4.9)
    engine.reply(r.request_id, True, b"in time", clock.seconds())
    clock.advance(1.0)
    assert driver.exits_of(r) == [REPLY]


@MATCHINGS
def test_cancel_or_reply_after_the_connection_is_lost_changes_nothing(matching):
    clock = Clock()
    engine, driver = engine_on(clock, matching)
    r = sent(engine, clock)
    engine.lose_all("gone", reached_peer=True)
    engine.cancel(r)
    engine.reply(r.request_id, True, b"ghost", clock.seconds())
    clock.advance(10.0)
    assert driver.exits_of(r) == [LOST]
    lost = driver.outcomes[0][2]
    assert isinstance(lost, ConnectionLost) and lost.written
    assert (engine.live, engine.tombstones, engine.entries) == (0, 0, 0)


def test_cancel_after_goaway_withdrew_it_changes_nothing():
    clock = Clock()
    engine, driver = engine_on(clock)
    r = engine.open(b"x", 5.0, clock.seconds())
    engine.withdraw_unwritten("goaway")
    engine.cancel(r)
    clock.advance(10.0)
    assert driver.exits_of(r) == [LOST]
    assert not driver.outcomes[0][2].written


def test_cancelling_a_request_from_its_own_outcome_settles_it_once():
    clock = Clock()
    engine, driver = engine_on(clock)
    r = sent(engine, clock)
    deliver = driver.deliver

    def cancelling(request: Request, exit: int, value: Any, now: float) -> None:
        deliver(request, exit, value, now)
        engine.cancel(request)  # a callback that cancels what just fired

    driver.deliver = cancelling  # type: ignore[method-assign]
    engine.reply(r.request_id, True, b"answer", clock.seconds())
    assert driver.exits_of(r) == [REPLY]
    assert (engine.live, engine.tombstones) == (0, 0)


# -- the deadline timer ----------------------------------------------------------


def test_the_first_request_with_a_timeout_arms_the_timer_at_its_deadline():
    clock = Clock()
    clock.advance(100.0)
    engine, driver = engine_on(clock)
    r = sent(engine, clock, timeout=5.0)
    assert driver.arms == [105.0]
    clock.advance(4.999)
    assert driver.exits_of(r) == []
    clock.advance(0.001)
    assert driver.exits_of(r) == [TIMEOUT]


def test_a_request_without_a_timeout_arms_nothing_and_never_times_out():
    clock = Clock()
    engine, driver = engine_on(clock)
    for timeout in (None, math.inf):
        sent(engine, clock, timeout=timeout)
    assert driver.arms == []
    clock.advance(1e6)
    assert driver.outcomes == [] and engine.live == 2


def test_requests_sharing_the_usual_timeout_each_time_out_at_their_own_deadline():
    clock = Clock()
    engine, driver = engine_on(clock)
    first = sent(engine, clock, timeout=5.0)
    clock.advance(2.0)
    second = sent(engine, clock, timeout=5.0)
    clock.advance(3.0)
    assert driver.exits_of(first) == [TIMEOUT] and driver.exits_of(second) == []
    clock.advance(2.0)
    assert driver.exits_of(second) == [TIMEOUT]


def test_a_wake_up_before_the_deadline_arms_the_timer_again():
    clock = Clock()
    engine, driver = engine_on(clock)
    r = sent(engine, clock, timeout=5.0)
    # A wake-up that comes early (another deadline's, a timer that fired a
    # little soon): nothing is due, and the deadline is armed again.
    clock.advance(1.0)
    driver.timer.cancel()  # type: ignore[union-attr]
    driver.timer = None
    engine.wake(clock.seconds())
    assert driver.exits_of(r) == []
    assert driver.arms[-1] == 5.0 and driver.timer is not None
    clock.advance(4.0)
    assert driver.exits_of(r) == [TIMEOUT]


def test_after_an_answered_request_the_next_ones_deadline_is_still_woken_for():
    # The first request's wake-up is left armed when it is answered; when it
    # comes, nothing is due and the next request's deadline is armed.
    clock = Clock()
    engine, driver = engine_on(clock)
    first = sent(engine, clock, timeout=5.0)
    clock.advance(1.0)
    engine.reply(first.request_id, True, b"ok", clock.seconds())
    clock.advance(3.0)
    second = sent(engine, clock, timeout=5.0)  # due at 9
    clock.advance(1.0)  # the first one's wake-up, at 5
    assert driver.exits_of(second) == []
    assert driver.arms[-1] == 9.0
    clock.advance(3.999)
    assert driver.exits_of(second) == []
    clock.advance(0.001)
    assert driver.exits_of(second) == [TIMEOUT]


def test_a_request_with_a_shorter_timeout_than_the_usual_one_is_woken_for_first():
    clock = Clock()
    engine, driver = engine_on(clock)
    usual = sent(engine, clock, timeout=5.0)
    short = sent(engine, clock, timeout=0.5)
    assert driver.arms == [5.0, 0.5]
    clock.advance(0.5)
    assert driver.exits_of(short) == [TIMEOUT] and driver.exits_of(usual) == []
    clock.advance(4.5)
    assert driver.exits_of(usual) == [TIMEOUT]
