"""
The pool: N self-healing connections, one chosen per request by a pick
policy (:mod:`framedclient.balance`), and a limiter that caps the work in
flight.

The limiter is the Deferred-based cousin of Twisted's
``DeferredSemaphore``, with what a client under load needs on top: a
*bounded* FIFO of waiters (beyond it, :class:`~framedclient.errors.Overloaded`
at once: load shedding, never unbounded memory), a timeout per waiter, and
waiters that leave the queue when cancelled without leaking a slot.  Its fast
path (a slot is free) allocates nothing: ``try_acquire()`` is one integer
comparison.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from framedclient.balance import Balancer, LeastLoaded
from framedclient.connection import Connection
from framedclient.deadlines import DeadlineQueue
from framedclient.errors import Overloaded
from framedclient.protocol import FramedProtocol

__all__ = ["Limiter", "Pool"]


class _Waiter:
    """
    One caller queued for a slot.  Also the Deferred's canceller.
    """

    __slots__ = ("deadline", "deferred", "limiter", "live", "queued_at")

    def __init__(self, limiter: Limiter, queued_at: float) -> None:
        self.limiter = limiter
        self.live = True
        self.queued_at = queued_at
        self.deadline = queued_at
        self.deferred: Deferred[None]

    def __call__(self, deferred: Deferred[None]) -> None:
        if self.live:
            self.live = False
            self.limiter._left_queue()


def _waiter_is_live(w: _Waiter) -> bool:
    return w.live


def _waiter_deadline(w: _Waiter) -> float:
    return w.deadline


class Limiter:
    """
    At most ``max_in_flight`` holders at once; at most ``max_pending``
    callers waiting for a slot.

    :param acquire_timeout: seconds a caller may wait in the queue before
        its Deferred fails with :class:`~framedclient.errors.Overloaded`;
        ``None`` waits until cancelled.
    """

    def __init__(
        self,
        clock: IReactorTime,
        max_in_flight: int,
        max_pending: int,
        acquire_timeout: float | None = None,
    ) -> None:
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError(
                f"max_in_flight must be a positive integer, got {max_in_flight!r}"
            )
        if not isinstance(max_pending, int) or max_pending < 0:
            raise ValueError(
                f"max_pending must be an integer >= 0, got {max_pending!r}"
            )
        if acquire_timeout is not None and not acquire_timeout > 0:
            raise ValueError(
                f"acquire_timeout must be a positive number of seconds or None, "
                f"got {acquire_timeout!r}"
            )
        self._clock = clock
        self.max_in_flight = max_in_flight
        self.max_pending = max_pending
        self.acquire_timeout = acquire_timeout
        #: slots held right now
        self.in_flight = 0
        #: callers waiting right now
        self.queued = 0
        #: requests refused because the queue was full
        self.shed = 0
        self._queue: deque[_Waiter] = deque()
        self._deadlines: DeadlineQueue[_Waiter] = DeadlineQueue(
            clock, _waiter_is_live, self._expire, lambda: self.queued, _waiter_deadline
        )

    def try_acquire(self) -> bool:
        """
        Take a slot if one is free now.  The caller must :meth:`release` it.
        Never jumps the queue: with waiters queued there is no free slot.
        """
        if self.in_flight < self.max_in_flight:
            self.in_flight += 1
            return True
        return False

    def acquire(self) -> Deferred[None]:
        """
        A slot, now or when one frees up.

        :return: fires (with ``None``) once the caller holds a slot; fails at
            once with ``Overloaded`` when the queue is full, or later when
            ``acquire_timeout`` passes.  Cancelling it leaves the queue.
        """
        d: Deferred[None]
        if self.in_flight < self.max_in_flight:
            self.in_flight += 1
            d = Deferred()
            d.callback(None)
            return d
        if self.queued >= self.max_pending:
            self.shed += 1
            d = Deferred()
            d.errback(self._overloaded())
            return d
        now = self._clock.seconds()
        waiter = _Waiter(self, now)
        d = Deferred(waiter)
        waiter.deferred = d
        self._queue.append(waiter)
        self.queued += 1
        if self.acquire_timeout is not None:
            waiter.deadline = now + self.acquire_timeout
            self._deadlines.add(waiter.deadline, waiter)
        return d

    def _overloaded(self) -> Overloaded:
        return Overloaded(
            f"{self.in_flight} requests in flight (max_in_flight="
            f"{self.max_in_flight}) and {self.queued} queued (max_pending="
            f"{self.max_pending}): request shed without being sent; back off "
            f"and retry, or raise the limits if the server can take more"
        )

    def release(self) -> None:
        """
        Give a slot back: to the first live waiter, else to the pool.
        """
        queue = self._queue
        while queue:
            waiter = queue.popleft()
            if waiter.live:
                waiter.live = False
                self.queued -= 1
                # The slot passes straight to the waiter: in_flight unchanged.
                waiter.deferred.callback(None)
                return
        self.in_flight -= 1

    def _left_queue(self) -> None:
        self.queued -= 1
        # Dead entries are skipped by release(); compact when they dominate
        # so a stream of cancellations cannot grow the deque without bound.
        queue = self._queue
        if len(queue) > 2 * self.queued + 64:
            self._queue = deque(w for w in queue if w.live)

    def _expire(self, waiter: _Waiter) -> None:
        waiter.live = False
        self._left_queue()
        waiter.deferred.errback(
            Overloaded(
                f"waited {self.acquire_timeout:g} s for one of "
                f"{self.max_in_flight} in-flight slots (acquire_timeout); "
                f"the request was not sent"
            )
        )

    def fail_all(self, error: Exception) -> None:
        """
        Fail every waiter (the client is closing).
        """
        queue, self._queue = self._queue, deque()
        self._deadlines.stop()
        for waiter in queue:
            if waiter.live:
                waiter.live = False
                self.queued -= 1
                waiter.deferred.errback(error)


class Pool:
    """
    The connections of one client and the choice between them.

    :param balancer: the pick policy; least-loaded with rotating ties by
        default (see :mod:`framedclient.balance`).

    A connection that is leased (see
    :meth:`FramedClient.lease() <framedclient.client.FramedClient.lease>`)
    or not accepting (full, draining, not ready) is skipped.
    """

    def __init__(
        self,
        connections: list[Connection],
        balancer: Balancer | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self.connections = connections
        #: the slots :meth:`take` hands out with a connection (``None``: no
        #: cap)
        self.limiter = limiter
        self.balancer: Balancer = balancer if balancer is not None else LeastLoaded()
        self._pick = self.balancer.pick
        self.leased: set[FramedProtocol] = set()
        self._ready: list[FramedProtocol] = []
        for conn in connections:
            conn.add_listener(self._state_changed)

    def __iter__(self) -> Iterator[Connection]:
        return iter(self.connections)

    def __len__(self) -> int:
        return len(self.connections)

    def _state_changed(self, conn: Connection, old: str, new: str) -> None:
        self._ready = [p for c in self.connections if (p := c.protocol) is not None]

    def add(self, connections: Iterable[Connection]) -> None:
        """
        New connections join (a host joined, or got more weight); the
        caller starts them.
        """
        for conn in connections:
            conn.add_listener(self._state_changed)
            self.connections.append(conn)
        self._ready = [p for c in self.connections if (p := c.protocol) is not None]

    def remove(self, connections: Iterable[Connection]) -> None:
        """
        Connections leave: none of them is picked from now on.  The caller
        closes them (draining, so what they hold finishes).
        """
        gone = set(connections)
        self.connections = [c for c in self.connections if c not in gone]
        self._ready = [p for c in self.connections if (p := c.protocol) is not None]

    @property
    def ready_count(self) -> int:
        return len(self._ready)

    def pick(self) -> FramedProtocol | None:
        """
        The connection the balancer picks for the next request, or ``None``
        when no connection can take a request now.
        """
        ready = self._ready
        if len(ready) == 1:
            # One ready connection (pool_size=1, or a larger pool while the
            # others reconnect): no choice to make, whatever the policy.
            proto = ready[0]
            if proto.accepting and proto not in self.leased:
                return proto
            return None
        return self._pick(ready, self.leased)

    def take(self) -> FramedProtocol | None:
        """
        A free slot of the limiter and the connection to use it on, in one
        step: the client's fast path.  ``None`` takes nothing (no slot is
        free, or no connection can take a request now); the caller then
        finds out which with :meth:`Limiter.try_acquire`.  The slot goes
        back through :meth:`Limiter.release`.
        """
        limiter = self.limiter
        if limiter is not None and limiter.in_flight >= limiter.max_in_flight:
            return None
        proto = self.pick()
        if proto is not None and limiter is not None:
            limiter.in_flight += 1
        return proto

    def pick_idle(self) -> FramedProtocol | None:
        """
        A ready, unleased connection with nothing in flight (for leases and
        exclusive use), or ``None``.
        """
        for proto in self._ready:
            if proto.accepting and proto not in self.leased and not proto.table_size:
                return proto
        return None

    def counts_by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for conn in self.connections:
            counts[conn.state] = counts.get(conn.state, 0) + 1
        return counts

    def debug_state(self) -> list[dict[str, Any]]:
        return [conn.debug_state() for conn in self.connections]
