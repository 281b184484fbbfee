"""
The Deferred-based limiter: cap, bounded FIFO queue, timeouts, cancel.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock

from framedclient.errors import Overloaded
from framedclient.pool import Limiter

from .wire import outcomes


def test_slots_are_granted_immediately_up_to_the_cap():
    limiter = Limiter(Clock(), max_in_flight=3, max_pending=0)
    assert all(outcomes([limiter.acquire()]) == [None] for _ in range(3))
    assert limiter.in_flight == 3
    (shed,) = outcomes([limiter.acquire()])
    assert shed.check(Overloaded)
    assert "max_in_flight=3" in str(shed.value)
    assert limiter.shed == 1


def test_waiters_are_served_in_fifo_order_as_slots_free():
    limiter = Limiter(Clock(), max_in_flight=1, max_pending=3)
    limiter.acquire()
    order = []
    for i in range(3):
        limiter.acquire().addCallback(lambda _, i=i: order.append(i))
    assert limiter.queued == 3
    for _ in range(3):
        limiter.release()
    assert order == [0, 1, 2]
    assert limiter.in_flight == 1 and limiter.queued == 0
    limiter.release()
    assert limiter.in_flight == 0


def test_queue_beyond_max_pending_sheds_at_once():
    limiter = Limiter(Clock(), max_in_flight=1, max_pending=2)
    limiter.acquire()
    queued = [limiter.acquire(), limiter.acquire()]
    (shed,) = outcomes([limiter.acquire()])
    assert shed.check(Overloaded)
    assert not any(d.called for d in queued)


def test_cancelled_waiter_leaves_queue_and_never_leaks_a_slot():
    limiter = Limiter(Clock(), max_in_flight=1, max_pending=2)
    limiter.acquire()
    first, second = limiter.acquire(), limiter.acquire()
    first.cancel()
    assert outcomes([first])[0].check(CancelledError)
    assert limiter.queued == 1
    limiter.release()
    assert outcomes([second]) == [None]
    limiter.release()
    assert limiter.in_flight == 0 and limiter.queued == 0


def test_waiter_times_out_with_overloaded_and_frees_its_place():
    clock = Clock()
    limiter = Limiter(clock, max_in_flight=1, max_pending=1, acquire_timeout=2.0)
    limiter.acquire()
    waiter = limiter.acquire()
    clock.advance(1.9)
    assert not waiter.called
    clock.advance(0.1)
    (result,) = outcomes([waiter])
    assert result.check(Overloaded) and "acquire_timeout" in str(result.value)
    assert limiter.queued == 0
    again = limiter.acquire()
    limiter.release()
    assert outcomes([again]) == [None]
    assert limiter.in_flight == 1


def test_many_cancellations_keep_the_queue_bounded():
    limiter = Limiter(Clock(), max_in_flight=1, max_pending=10)
    limiter.acquire()
    for _ in range(10_000):
        d = limiter.acquire()
        d.addErrback(lambda _: None)
        d.cancel()
    assert limiter.queued == 0
    assert len(limiter._queue) <= 64 + 1


def test_invalid_limits_are_rejected_with_the_option_name():
    with pytest.raises(ValueError, match="max_in_flight"):
        Limiter(Clock(), 0, 1)
    with pytest.raises(ValueError, match="max_pending"):
        Limiter(Clock(), 1, -1)
    with pytest.raises(ValueError, match="acquire_timeout"):
        Limiter(Clock(), 1, 1, acquire_timeout=0)
