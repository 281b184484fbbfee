"""
One timer for many deadlines.

A ``DelayedCall`` per request costs an allocation, a heap push into the
reactor and a cancel when the reply arrives, on every request.  Most
requests finish long before their deadline, so framedclient keeps its own
queue of deadlines and arms a single reactor timer for the earliest *live*
one.

Requests on a connection nearly always share one timeout, so their deadlines
arrive in order: those go to a FIFO (one ``deque.append`` of the item itself,
no tuple).  A deadline earlier than the last one appended goes to a heap.
Finished items are not removed eagerly (that would be O(n)); they are
skipped when they reach the front, and the queue is compacted when dead
entries outnumber live ones, so memory stays proportional to what is really
outstanding.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from itertools import count
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    # Types only: the sans-IO core (and the engine above it) must import
    # nothing from Twisted; DeadlineTimer only calls a clock's methods.
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["DeadlineQueue", "DeadlineTimer", "Deadlines"]

#: The type of the items a :class:`DeadlineQueue` holds.
T = TypeVar("T")


class Deadlines(Generic[T]):
    """
    The sans-IO core: calls ``on_expire(item)`` for each live item whose
    deadline has passed when :meth:`expire` is called, and asks for a wake-up
    through ``arm(deadline)`` whenever the earliest deadline it needs to be
    woken for gets earlier.  It never reads a clock or schedules anything
    itself, so the request engine can use it without Twisted.

    :param is_live: whether an item still wants its deadline; must be cheap.
    :param on_expire: called with each live item whose deadline has passed,
        in deadline order.  It must make ``is_live(item)`` false.
    :param live_count: how many items are live right now (the owner usually
        knows this already); used to decide when to compact.
    :param deadline_of: an item's deadline, as given to :meth:`add`.
    :param arm: "call :meth:`expire` at this absolute time"; each call
        replaces the previous one.
    """

    __slots__ = (
        "_arm",
        "_armed_at",
        "_check_at",
        "_deadline_of",
        "_fifo",
        "_fifo_last",
        "_heap",
        "_is_live",
        "_live_count",
        "_on_expire",
        "_seq",
    )

    def __init__(
        self,
        is_live: Callable[[T], bool],
        on_expire: Callable[[T], object],
        live_count: Callable[[], int],
        deadline_of: Callable[[T], float],
        arm: Callable[[float], object],
    ) -> None:
        self._is_live = is_live
        self._on_expire = on_expire
        self._live_count = live_count
        self._deadline_of = deadline_of
        self._arm = arm
        self._fifo: deque[T] = deque()
        self._fifo_last = -math.inf
        self._heap: list[tuple[float, int, T]] = []
        self._seq = count()
        #: the wake-up asked for last (inf: none)
        self._armed_at = math.inf
        # Size at which to consider compacting; doubles as the queue grows,
        # so the check costs one comparison per add.
        self._check_at = 128

    def __len__(self) -> int:
        """
        Entries held, live or not (what the memory bound is about).
        """
        return len(self._fifo) + len(self._heap)

    def add(self, deadline: float, item: T) -> None:
        """
        Expire ``item`` at ``deadline`` (absolute), which must equal
        ``deadline_of(item)``.
        """
        if deadline >= self._fifo_last:
            fifo = self._fifo
            fifo.append(item)
            self._fifo_last = deadline
            if len(fifo) >= self._check_at:
                self._maybe_compact()
        else:
            heapq.heappush(self._heap, (deadline, next(self._seq), item))
            if len(self._heap) >= self._check_at:
                self._maybe_compact()
        if deadline < self._armed_at:
            self._armed_at = deadline
            self._arm(deadline)

    def clear(self) -> None:
        """
        Forget every deadline (the owner is going away).
        """
        self._fifo = deque()
        self._fifo_last = -math.inf
        self._heap = []
        self._armed_at = math.inf

    def expire(self, now: float) -> None:
        """
        The wake-up came (or the owner wants to check now): expire what is
        due and ask for the next wake-up, if any.
        """
        self._armed_at = math.inf
        first = self._next(now)
        # on_expire callbacks may have added items (and asked for a wake-up)
        # meanwhile; make sure the wake-up is for the earliest.
        if first is not None and first < self._armed_at:
            self._armed_at = first
            self._arm(first)

    def take_due(self, now: float) -> list[T]:
        """
        Like :meth:`expire`, but hand the live items that are due back, in
        deadline order, instead of expiring them: for an owner that merges
        them with deadlines it keeps elsewhere.
        """
        self._armed_at = math.inf
        due: list[T] = []
        first = self._next(now, due)
        if first is not None:
            self._armed_at = first
            self._arm(first)
        return due

    def _maybe_compact(self) -> None:
        # Compact when dead entries outnumber live ones: O(n) work after at
        # least n/2 additions, so amortised O(1) per add.
        if len(self) > 2 * self._live_count() + 64:
            is_live = self._is_live
            self._fifo = deque(item for item in self._fifo if is_live(item))
            self._heap = [entry for entry in self._heap if is_live(entry[2])]
            heapq.heapify(self._heap)
        self._check_at = max(128, 2 * max(len(self._fifo), len(self._heap)))

    def _next(self, now: float, due: list[T] | None = None) -> float | None:
        """
        Expire what is due (or collect it in ``due``), drop dead entries at
        the fronts, and return the earliest remaining deadline (or
        ``None``).
        """
        is_live = self._is_live
        deadline_of = self._deadline_of
        # A timer armed for (deadline - then) can land a rounding error
        # short of deadline: allow for it, or the item would wait for the
        # next tick.
        now += 1e-9
        while True:
            fifo, heap = self._fifo, self._heap
            while fifo and not is_live(fifo[0]):
                fifo.popleft()
            if not fifo:
                self._fifo_last = -math.inf
            while heap and not is_live(heap[0][2]):
                heapq.heappop(heap)
            first_fifo = deadline_of(fifo[0]) if fifo else None
            first_heap = heap[0][0] if heap else None
            if first_fifo is None and first_heap is None:
                return None
            if first_heap is None or (
                first_fifo is not None and first_fifo <= first_heap
            ):
                assert first_fifo is not None
                if first_fifo > now:
                    return first_fifo
                item = fifo.popleft()
            else:
                if first_heap > now:
                    return first_heap
                item = heapq.heappop(heap)[2]
            if due is None:
                self._on_expire(item)
            else:
                due.append(item)


class DeadlineTimer:
    """
    One reactor timer that calls ``wake(now)`` at the time last asked for
    with :meth:`arm`: the Twisted side of :class:`Deadlines`.
    """

    __slots__ = ("_clock", "_timer", "_wake")

    def __init__(self, clock: IReactorTime, wake: Callable[[float], object]) -> None:
        self._clock = clock
        self._wake = wake
        self._timer: IDelayedCall | None = None

    def arm(self, deadline: float) -> None:
        if deadline == math.inf:
            self.cancel()
            return
        delay = max(0.0, deadline - self._clock.seconds())
        timer = self._timer
        if timer is None:
            self._timer = self._clock.callLater(delay, self._fire)
        else:
            timer.reset(delay)

    def cancel(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        self._wake(self._clock.seconds())


class DeadlineQueue(Deadlines[T]):
    """
    :class:`Deadlines` with its own reactor timer: calls ``on_expire(item)``
    once the clock reaches an item's deadline, unless ``is_live(item)`` has
    become false by then.

    :param clock: the source of time and timers.
    """

    __slots__ = ("_timer",)

    def __init__(
        self,
        clock: IReactorTime,
        is_live: Callable[[T], bool],
        on_expire: Callable[[T], object],
        live_count: Callable[[], int],
        deadline_of: Callable[[T], float],
    ) -> None:
        self._timer = DeadlineTimer(clock, self.expire)
        super().__init__(is_live, on_expire, live_count, deadline_of, self._timer.arm)

    def stop(self) -> None:
        """
        Forget every deadline and cancel the timer (the owner is going away).
        """
        self.clear()
        self._timer.cancel()
