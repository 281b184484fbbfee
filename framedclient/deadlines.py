"""
One timer for many deadlines.

A ``DelayedCall`` per request costs an allocation, a heap push into the
reactor and a cancel when the reply arrives, on every request.  Most
requests finish long before their deadline, so framedclient keeps its own
heap of ``(deadline, seq, item)`` entries and arms a single reactor timer for
the earliest *live* one.  Finished items are not removed eagerly (that would
be O(n)); they are skipped when they reach the top, and the heap is rebuilt
when dead entries outnumber live ones, so memory stays proportional to what
is really outstanding.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from itertools import count
from typing import Generic, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["DeadlineQueue"]

T = TypeVar("T")


class DeadlineQueue(Generic[T]):
    """
    Calls ``on_expire(item)`` once the clock reaches an item's deadline,
    unless ``is_live(item)`` has become false by then.

    :param clock: the source of time and timers.
    :param is_live: whether an item still wants its deadline; must be cheap.
    :param on_expire: called with each live item whose deadline has passed,
        in deadline order.  It must make ``is_live(item)`` false.
    :param live_count: how many items are live right now (the owner usually
        knows this already); used to decide when to compact.
    """

    __slots__ = (
        "_armed_at",
        "_clock",
        "_heap",
        "_is_live",
        "_live_count",
        "_on_expire",
        "_seq",
        "_timer",
    )

    def __init__(
        self,
        clock: IReactorTime,
        is_live: Callable[[T], bool],
        on_expire: Callable[[T], object],
        live_count: Callable[[], int],
    ) -> None:
        self._clock = clock
        self._is_live = is_live
        self._on_expire = on_expire
        self._live_count = live_count
        self._heap: list[tuple[float, int, T]] = []
        self._seq = count()
        self._timer: IDelayedCall | None = None
        self._armed_at = 0.0

    def __len__(self) -> int:
        """
        Entries held, live or not (what the memory bound is about).
        """
        return len(self._heap)

    def add(self, deadline: float, item: T, now: float) -> None:
        """
        Expire ``item`` at ``deadline`` (absolute, in the clock's seconds).
        """
        heap = self._heap
        heapq.heappush(heap, (deadline, next(self._seq), item))
        if len(heap) > 64 and len(heap) > 2 * self._live_count() + 64:
            self._compact()
        timer = self._timer
        if timer is None:
            self._armed_at = deadline
            self._timer = self._clock.callLater(max(0.0, deadline - now), self._fire)
        elif deadline < self._armed_at:
            self._armed_at = deadline
            timer.reset(max(0.0, deadline - now))

    def stop(self) -> None:
        """
        Forget every deadline and cancel the timer (the owner is going away).
        """
        self._heap = []
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _compact(self) -> None:
        is_live = self._is_live
        self._heap = [entry for entry in self._heap if is_live(entry[2])]
        heapq.heapify(self._heap)

    def _fire(self) -> None:
        self._timer = None
        now = self._clock.seconds()
        heap = self._heap
        is_live = self._is_live
        while heap:
            deadline, _, item = heap[0]
            if not is_live(item):
                heapq.heappop(heap)
            elif deadline <= now:
                heapq.heappop(heap)
                self._on_expire(item)
                # on_expire may have stopped us (closing the connection).
                if self._heap is not heap:
                    return
            else:
                break
        if not heap:
            return
        # on_expire callbacks may have added items (and armed a timer) while
        # we were still draining; make sure the timer is for the earliest.
        first = heap[0][0]
        if self._timer is None:
            self._armed_at = first
            self._timer = self._clock.callLater(max(0.0, first - now), self._fire)
        elif first < self._armed_at:
            self._armed_at = first
            self._timer.reset(max(0.0, first - now))
