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
from collections.abc import Callable, Iterable, Iterator
from typing import Any, SupportsFloat, SupportsIndex

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from framedclient._mode import mypyc_attr
from framedclient.balance import (
    Balancer,
    PowerOfTwoChoices,
    ReadyConnections,
    UpstreamBalancer,
)
from framedclient.connection import Connection
from framedclient.deadlines import DeadlineQueue
from framedclient.errors import Overloaded
from framedclient.health import PROBING, HealthBoard, HostHealth
from framedclient.protocol import FramedProtocol
from framedclient.validation import Count, Seconds, check_argument

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


# Users may subclass it (mypyc: slower calls from compiled code into it).
@mypyc_attr(allow_interpreted_subclasses=True)
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
        max_in_flight: SupportsIndex,
        max_pending: SupportsIndex,
        acquire_timeout: SupportsFloat | None = None,
    ) -> None:
        # The parameters are typed with protocols, which mypyc does not
        # check at the call, so that a wrong type gets the message below
        # naming the argument, not mypyc's "int object expected"
        # (docs/design.md, "Compiled mode"); _init checks and converts.
        self._init(clock, max_in_flight, max_pending, acquire_timeout)

    def _init(
        self, clock: Any, max_in_flight: Any, max_pending: Any, acquire_timeout: Any
    ) -> None:
        check_argument(Count(1), "max_in_flight", max_in_flight, "Limiter")
        check_argument(Count(0), "max_pending", max_pending, "Limiter")
        check_argument(
            Seconds(optional=True), "acquire_timeout", acquire_timeout, "Limiter"
        )
        self._clock: IReactorTime = clock
        self.max_in_flight: int = max_in_flight
        self.max_pending: int = max_pending
        self.acquire_timeout: float | None = acquire_timeout
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

    def take(self, count: int = 1) -> None:
        """
        Count ``count`` slots as held, without asking: the caller saw one
        free (:meth:`Pool.take` reads ``in_flight`` before it picks a
        connection), or its requests went around the limit and each gives
        its slot back through :meth:`release` like any other (those of a
        connection's ``prepare`` hook).  The only way, with
        :meth:`try_acquire`, :meth:`acquire` and :meth:`release`, that the
        count changes.
        """
        self.in_flight += count

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


# Users may subclass it (mypyc: slower calls from compiled code into it).
@mypyc_attr(allow_interpreted_subclasses=True)
class Pool:
    """
    The connections of one client and the choice between them.

    :param balancer: the pick policy; power of two choices by default (see
        :mod:`framedclient.balance`).
    :param health: the health of the hosts the connections lead to (each
        protocol's ``health``; see :mod:`framedclient.health`); the hosts of
        the pool's connections are the board's hosts.
    :param in_flight_cap: the in-flight cap of each connection given how
        many connections the pool has (see
        :meth:`~framedclient.config.ClientConfig.in_flight_per_connection`);
        applied to each connection as it becomes ready and whenever
        connections join or leave.  ``None``: the connections' own
        ``max_in_flight``.

    A connection that is leased (see
    :meth:`FramedClient.lease() <framedclient.client.FramedClient.lease>`)
    or not accepting (full, draining, not ready) is skipped.  The balancer
    sees only the ready connections of eligible hosts (not ejected, no probe
    out), so any policy honours host health unchanged; when no eligible host has a ready
    connection, it sees every ready connection (a degraded host serves
    better than none).  The first request picked for a probing host is its
    probe.

    A connection's upstream (host) is its name up to its last ``/``, as
    :class:`~framedclient.client.FramedClient` names them (``HOST/N``).
    """

    def __init__(
        self,
        connections: list[Connection],
        balancer: Balancer | UpstreamBalancer | None = None,
        limiter: Limiter | None = None,
        health: HealthBoard | None = None,
        in_flight_cap: Callable[[int], int] | None = None,
    ) -> None:
        self.connections = connections
        self._in_flight_cap = in_flight_cap
        self._cap: int | None = None
        #: the slots :meth:`take` hands out with a connection (``None``: no
        #: cap)
        self.limiter = limiter
        self.balancer: Balancer | UpstreamBalancer = (
            balancer if balancer is not None else PowerOfTwoChoices()
        )
        self._pick_upstream = (
            self.balancer.pick_upstream
            if isinstance(self.balancer, UpstreamBalancer)
            else None
        )
        self._pick = (
            self._pick_by_upstream
            if self._pick_upstream is not None
            else self.balancer.pick  # type: ignore[union-attr]
        )
        self.leased: set[FramedProtocol] = set()
        #: the ready connections the balancer may pick, grouped by upstream
        #: (``upstreams``: every upstream of the pool, eligible or not)
        self.view = ReadyConnections()
        # The plain list a Balancer gets, once per request.
        self._ready: list[FramedProtocol] = self.view.connections
        self._names: dict[FramedProtocol, str] = {}
        #: whether some host in ``_ready`` waits for its probe (so the hot
        #: path checks one boolean, not the host of every pick)
        self._probing = False
        self.health = health
        for conn in connections:
            conn.add_listener(self._state_changed)
        if health is not None:
            health.add_listener(self._health_changed)
        self._members_changed()

    def __iter__(self) -> Iterator[Connection]:
        return iter(self.connections)

    def __len__(self) -> int:
        return len(self.connections)

    def _state_changed(self, conn: Connection, old: str, new: str) -> None:
        self._rebuild()

    def _health_changed(self, host: HostHealth) -> None:
        self._rebuild()

    def _members_changed(self) -> None:
        if self._in_flight_cap is not None:
            self._cap = self._in_flight_cap(len(self.connections))
        if self.health is not None:
            self.health.retain(
                {h for c in self.connections if (h := c.factory.health) is not None}
            )
        self._rebuild()

    def _rebuild(self) -> None:
        # On every change of state, health or host set, never per request.
        upstream_names = self.upstream_names
        upstream_of: dict[FramedProtocol, str] = {}
        names: dict[FramedProtocol, str] = {}
        for conn, upstream in zip(self.connections, upstream_names, strict=True):
            p = conn.protocol
            if p is not None:
                upstream_of[p] = upstream
                names[p] = getattr(conn, "name", "")
        self._names = names
        ready = list(upstream_of)
        cap = self._cap
        if cap is not None:
            for p in ready:
                p.set_in_flight_cap(cap)
        if self.health is not None:
            eligible = [p for p in ready if p.health is None or p.health.eligible]
            if eligible:
                ready = eligible
            self._probing = any(
                p.health is not None and p.health.state == PROBING for p in ready
            )
        self.view = ReadyConnections(
            tuple(dict.fromkeys(upstream_names)), ((upstream_of[p], p) for p in ready)
        )
        self._ready = self.view.connections

    @property
    def upstream_names(self) -> list[str]:
        """
        The upstream of each connection, in order.
        """
        return [_upstream_of(conn) for conn in self.connections]

    @property
    def upstreams(self) -> tuple[str, ...]:
        """
        Every upstream that has connections in the pool, in order.
        """
        return self.view.upstreams

    def add(self, connections: Iterable[Connection]) -> None:
        """
        New connections join (a host joined, or got more weight); the
        caller starts them.
        """
        for conn in connections:
            conn.add_listener(self._state_changed)
            self.connections.append(conn)
        self._members_changed()

    def remove(self, connections: Iterable[Connection]) -> None:
        """
        Connections leave: none of them is picked from now on.  The caller
        closes them (draining, so what they hold finishes).
        """
        gone = set(connections)
        self.connections = [c for c in self.connections if c not in gone]
        self._members_changed()

    @property
    def in_flight_cap(self) -> int | None:
        """
        The in-flight cap the pool gives each connection now (``None``:
        their own).
        """
        return self._cap

    @property
    def ready_count(self) -> int:
        return len(self._ready)

    def pick(self) -> FramedProtocol | None:
        """
        The connection the balancer picks for the next request, or ``None``
        when no connection can take a request now.
        """
        # _choose, inlined: this runs once per request.
        ready = self._ready
        proto: FramedProtocol | None
        if len(ready) == 1:
            # One ready connection (pool_size=1, or a larger pool while the
            # others reconnect): no choice to make, whatever the policy.
            proto = ready[0]
            if not proto.accepting or proto in self.leased:
                return None
        else:
            proto = self._pick(ready, self.leased)
        if self._probing and proto is not None:
            self._probe(proto)
        return proto

    def pick_avoiding(self, host: HostHealth | None) -> FramedProtocol | None:
        """
        Like :meth:`pick`, but on a connection to another host than
        ``host`` when one can take the request (a retry of a request that
        died with its host); else on any.
        """
        if host is not None:
            others = [p for p in self._ready if p.health is not host]
            if others:
                proto = self._choose(others)
                if proto is not None:
                    return proto
        return self._choose(self._ready)

    def _choose(self, ready: list[FramedProtocol]) -> FramedProtocol | None:
        proto: FramedProtocol | None
        if len(ready) == 1:
            proto = ready[0]
            if not proto.accepting or proto in self.leased:
                return None
        else:
            proto = self._pick(ready, self.leased)
        if self._probing and proto is not None:
            self._probe(proto)
        return proto

    def upstream_of(self, proto: FramedProtocol) -> str | None:
        """
        The upstream of a connection the balancer may pick (``None`` once
        it may not).
        """
        return self.view.upstream_of.get(proto)

    def ready_upstreams(self) -> dict[FramedProtocol, str]:
        """
        Each connection the balancer may pick, and its upstream (a
        read-only view: do not change it).
        """
        return self.view.upstream_of

    def connection_name(self, proto: FramedProtocol) -> str | None:
        """
        The name of a ready connection (``None`` once it is not ready).
        """
        return self._names.get(proto)

    def pick_for(
        self, key: bytes | None, avoid: str | None = None
    ) -> FramedProtocol | None:
        """
        Like :meth:`pick`, for a request with a routing ``key`` (``None``:
        none), on a connection to any upstream but ``avoid`` (``None``: any
        upstream).
        """
        view = self.view
        if avoid is not None:
            view = view.without(avoid)
        proto: FramedProtocol | None
        if self._pick_upstream is not None:
            proto = self._pick_upstream(view, self.leased, key)
        else:
            # A request's key is ignored by policies that do not route by key.
            proto = self._pick(view.connections, self.leased)
        if self._probing and proto is not None:
            self._probe(proto)
        return proto

    def take_for(
        self, key: bytes | None, avoid: str | None = None
    ) -> FramedProtocol | None:
        """
        :meth:`take` for :meth:`pick_for`'s requests.
        """
        limiter = self.limiter
        if limiter is not None and limiter.in_flight >= limiter.max_in_flight:
            return None
        proto = self.pick_for(key, avoid)
        if proto is not None and limiter is not None:
            limiter.take()
        return proto

    def _pick_by_upstream(
        self, ready: list[FramedProtocol], leased: set[FramedProtocol]
    ) -> FramedProtocol | None:
        # pick() for an UpstreamBalancer, for requests without a key; ready
        # may be a part of the view (a retry avoiding its host).
        assert self._pick_upstream is not None
        view = self.view
        if ready is not view.connections:
            upstream_of = view.upstream_of
            view = ReadyConnections(
                view.upstreams, ((upstream_of[p], p) for p in ready)
            )
        return self._pick_upstream(view, leased, None)

    def _probe(self, proto: FramedProtocol) -> None:
        host = proto.health
        if host is not None and host.state == PROBING:
            # This request is the host's probe; the pool rebuilds its list
            # without the host until the probe's outcome is known.
            host.probe_sent()

    def take(self) -> FramedProtocol | None:
        """
        A free slot of the limiter and the connection to use it on, in one
        step: the client's fast path.  ``None`` takes nothing (no slot is
        free, or no connection can take a request now); the caller then
        finds out which with :meth:`Limiter.try_acquire`.  The slot is
        taken through :meth:`Limiter.take` and goes back through
        :meth:`Limiter.release`.
        """
        limiter = self.limiter
        if limiter is not None and limiter.in_flight >= limiter.max_in_flight:
            return None
        proto = self.pick()
        if proto is not None and limiter is not None:
            limiter.take()
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
        return [
            {**conn.debug_state(), "upstream": upstream}
            for conn, upstream in zip(
                self.connections, self.upstream_names, strict=True
            )
        ]


def _upstream_of(conn: Connection) -> str:
    name: str = getattr(conn, "name", "")
    return name.rpartition("/")[0] or name
