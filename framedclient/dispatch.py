"""
The one owner of a request, from admission to its end.

:class:`FramedClient <framedclient.client.FramedClient>` checks a request's
arguments and takes the fast path itself (a free slot and a connection that
can take it: the connection's own Deferred, nothing added).  Everything else
belongs to the :class:`Dispatcher`, and only to it:

- the limiter slot while the request waits for one, and the request while it
  waits for a connection (parked) or sits out a retry delay;
- routed (``key=``), traced and hedged requests (the hedged copies'
  bookkeeping is the :class:`~framedclient.hedging.Hedger`'s, which it
  owns);
- retries: the connections report to it (it is their
  :class:`~framedclient.protocol.RequestOwner`) when a request's slot is
  free, and offer it the requests they can no longer serve that are safe to
  send again; it re-sends them, with their deadline, routing key and
  tracing parent, within the retry budget;
- leases: connections borrowed whole, whose requests are bound to them.

A request on the slow path is a :class:`Call`; its state is one
:class:`CallState`, changed by ``Dispatcher._move`` and nowhere else.
"""

from __future__ import annotations

import importlib.util
import math
from collections import deque
from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from framedclient.deadlines import DeadlineQueue
from framedclient.errors import (
    ClientClosed,
    ConnectionLost,
    Overloaded,
    RequestTimeout,
    Unavailable,
    outcome_of,
)
from framedclient.hedging import HEDGE_EVENTS, Hedger
from framedclient.protocol import PendingRequest
from framedclient.retry import RetryBudget, retry_delay

if TYPE_CHECKING:
    from framedclient.codecs import Message
    from framedclient.connection import Connection
    from framedclient.health import HostHealth
    from framedclient.metrics import LatencyHistogram, MetricsRecorder
    from framedclient.pool import Limiter, Pool
    from framedclient.protocol import FramedProtocol

__all__ = [
    "MAX_ATTEMPTS",
    "Call",
    "CallState",
    "Dispatcher",
    "Lease",
    "make_tracer",
]

#: How many times one request may be re-sent because it was never written;
#: a bound so that a pathological flapping pool cannot spin.
MAX_ATTEMPTS = 8


class CallState(IntEnum):
    """
    Where a request on the slow path is.  The states before :attr:`SENT`
    are the client's to end (a cancel or the deadline ends them here);
    from :attr:`SENT` on, the connection's.
    """

    #: waiting for a limiter slot
    ACQUIRING = 0
    #: holds a slot, parked until a connection can take it
    WAITING = 1
    #: holds a slot, sitting out a retry delay
    DELAYED = 2
    #: handed to a connection
    SENT = 3
    #: ended
    DONE = 4


_ACQUIRING = CallState.ACQUIRING
_WAITING = CallState.WAITING
_DELAYED = CallState.DELAYED
_SENT = CallState.SENT
_DONE = CallState.DONE


class Call:
    """
    A request on the slow path: what the dispatcher needs to send it (again),
    and where it is.  Only the :class:`Dispatcher` changes it.
    """

    __slots__ = (
        "attempt",
        "avoid",
        "body",
        "context",
        "current",
        "deadline",
        "dispatcher",
        "has_slot",
        "idempotent",
        "key",
        "outer",
        "queued_bytes",
        "state",
        "timeout",
        "timer",
        "wait",
    )

    def __init__(
        self,
        dispatcher: Dispatcher,
        body: bytes | Message,
        deadline: float,
        timeout: float,
        *,
        idempotent: bool,
        wait: bool,
        attempt: int,
        key: bytes | None,
        context: object,
    ) -> None:
        self.dispatcher = dispatcher
        self.body = body
        self.deadline = deadline
        self.timeout = timeout
        self.idempotent = idempotent
        self.wait = wait
        self.attempt = attempt
        #: the routing key (``None``: none)
        self.key = key
        #: the caller's tracing context (``None`` when not tracing)
        self.context = context
        self.has_slot = False
        #: the host a retry should avoid (the one the request died with)
        self.avoid: HostHealth | None = None
        self.queued_bytes = 0
        self.state = _ACQUIRING
        #: what a cancel must reach: the slot wait, or the connection's
        #: Deferred once sent
        self.current: Deferred[Any] | None = None
        self.timer: IDelayedCall | None = None
        self.outer: Deferred[Any] = Deferred(self._cancelled)

    def __repr__(self) -> str:
        return f"<Call {self.state.name} attempt={self.attempt}>"

    def _cancelled(self, outer: Deferred[Any]) -> None:
        self.dispatcher.cancel(self)


def _call_is_live(call: Call) -> bool:
    return call.state < _SENT


def _call_deadline(call: Call) -> float:
    return call.deadline


def _relay(result: Any, target: Deferred[Any]) -> None:
    if isinstance(result, Failure):
        target.errback(result)
    else:
        target.callback(result)


class Dispatcher:
    """
    Owns every request that does not take the fast path, the connections'
    reports (:class:`~framedclient.protocol.RequestOwner`), retries, hedges
    and leases, for one client.

    :param limiter: the in-flight slots; written only through its methods.
    :param events: where outcomes decided here are recorded (requests that
        end before a connection takes them, retries).
    :param budget: bounds retries of written requests.
    :param tracer: a :class:`~framedclient.tracing.RequestTracer`, or
        ``None`` when not tracing.
    :param hedge_after: ``hedge_after`` (``None``: no hedging), with
        ``hedge_budget`` and ``latency_of`` (an upstream's latency, for
        percentile delays).
    :param unavailable: builds the :class:`Unavailable` for a request no
        connection can take, given the deadline it waited out (or ``None``).
    """

    def __init__(
        self,
        clock: IReactorTime,
        pool: Pool,
        limiter: Limiter,
        *,
        events: MetricsRecorder,
        budget: RetryBudget,
        tracer: Any,
        hedge_after: float | str | None,
        hedge_budget: RetryBudget,
        latency_of: Callable[[str], LatencyHistogram | None],
        wait_for_ready: bool,
        max_queued_bytes: float,
        max_pending_per_connection: int,
        unavailable: Callable[[float | None], Unavailable],
        usual_timeout: float | None = None,
    ) -> None:
        #: the timeout most requests have (the client's ``request_timeout``):
        #: each connection's engine tracks requests with it in order, one
        #: wake-up for all (see :class:`~framedclient.engine.RequestEngine`)
        self.usual_timeout = usual_timeout
        self._clock = clock
        self.pool = pool
        self.limiter = limiter
        self._events = events
        self.budget = budget
        self._tracer = tracer
        self.wait_for_ready = wait_for_ready
        self.max_queued_bytes = max_queued_bytes
        self._max_pending_per_connection = max_pending_per_connection
        self._unavailable = unavailable
        self.hedger: Hedger | None = None
        if hedge_after is not None:
            self.hedger = Hedger(
                clock,
                hedge_after,
                pool.take_for,
                pool.upstream_of,
                latency_of,
                limiter.release,
                hedge_budget,
                self.send_copy,
            )
        #: bytes of request bodies waiting in the client
        self.queued_bytes = 0
        #: calls on the slow path (waiting for a slot, a connection or a
        #: retry delay): 0 once nothing is queued (a leak shows up here)
        self.slow_live = 0
        self._parked: deque[Call] = deque()
        self._delayed: set[Call] = set()
        self._lease_waiters: deque[Deferred[FramedProtocol]] = deque()
        self._deadlines: DeadlineQueue[Call] = DeadlineQueue(
            clock, _call_is_live, self._expire, self._slow_count, _call_deadline
        )
        self._closing = False
        self._release = limiter.release
        #: whether requests without a key may take the client's fast path
        #: (no hedging, no tracing)
        self.plain = self.hedger is None and tracer is None
        # After the pool's listener: it knows the host's connections first.
        if pool.health is not None:
            pool.health.add_listener(self._host_changed)

    # -- the one place a call's state changes --------------------------------

    def _move(self, call: Call, state: CallState) -> None:
        if call.state < _SENT and state >= _SENT:
            self.slow_live -= 1
        call.state = state

    def _slow_count(self) -> int:
        return self.slow_live

    # -- admission -------------------------------------------------------------

    def submit(
        self,
        body: bytes | Message,
        timeout: float,
        *,
        idempotent: bool,
        wait_for_ready: bool | None,
        key: bytes | None,
        routed: bool,
    ) -> Deferred[Any]:
        """
        A request the fast path did not take: routed, traced or hedged
        (``routed``: tried on a connection here first), or one that must
        wait for a slot or a connection.  Arguments are checked already.
        """
        context: object = None
        if routed:
            if self._tracer is not None:
                context = self._tracer.context()
            proto = self.pool.take_for(key)
            if proto is not None:
                if idempotent and self.hedger is not None:
                    return self.hedger.request(proto, body, timeout, key, context)
                return self.send_copy(
                    proto,
                    body,
                    timeout,
                    idempotent=idempotent,
                    attempt=1,
                    hedge=False,
                    key=key,
                    context=context,
                )
        # No slot, or a slot but no connection that can take it now.
        limiter = self.limiter
        has_slot = limiter.try_acquire()
        size = len(body)
        if self.queued_bytes + size > self.max_queued_bytes:
            if has_slot:
                limiter.release()
            self._events.record_failure(Overloaded.outcome, None)
            return fail(
                Overloaded(
                    f"{self.queued_bytes} bytes of requests already wait in the "
                    f"client (max_queued_bytes={self.max_queued_bytes}); this "
                    f"{size}-byte request was shed without being sent"
                )
            )
        deadline = self._clock.seconds() + timeout
        call = Call(
            self,
            body,
            deadline,
            timeout,
            idempotent=idempotent,
            wait=self.wait_for_ready if wait_for_ready is None else wait_for_ready,
            attempt=1,
            key=key,
            context=context,
        )
        self.slow_live += 1
        call.queued_bytes = size
        self.queued_bytes += size
        if deadline != math.inf:
            self._deadlines.add(deadline, call)
        if has_slot:
            # A slot but no connection that can take it now.
            call.has_slot = True
            self._dispatch(call)
            return call.outer
        acquired = limiter.acquire()
        if not acquired.called:
            call.current = acquired
        # Fires at once when a slot is free (the fast path found no
        # connection), else when a slot is handed over.
        acquired.addCallbacks(
            self._acquired,
            self._acquire_failed,
            callbackArgs=(call,),
            errbackArgs=(call,),
        )
        return call.outer

    def _acquired(self, _: None, call: Call) -> None:
        call.current = None
        if call.state != _ACQUIRING:
            # Cancelled or expired meanwhile: give the slot back.
            self.request_settled()
            return
        call.has_slot = True
        self._dispatch(call)

    def _acquire_failed(self, failure: Failure, call: Call) -> None:
        call.current = None
        if call.state == _ACQUIRING:
            self._finish(call, failure)

    def _pick_for(self, call: Call) -> FramedProtocol | None:
        pool = self.pool
        if call.avoid is None:
            if call.key is None:
                return pool.pick()
            return pool.pick_for(call.key)
        # A retry of a request that died with its host: another host first
        # (with a key: the key's next host, as ketama places it), else any.
        if call.key is not None:
            return pool.pick_for(call.key, call.avoid.name) or pool.pick_for(
                call.key
            )
        return pool.pick_avoiding(call.avoid)

    def _dispatch(self, call: Call, proto: FramedProtocol | None = None) -> None:
        """
        Hand a slot-holding call to a connection (``proto``, or the one the
        pool picks), or park it until one can take it.
        """
        if proto is None:
            proto = self._pick_for(call)
        if proto is None:
            if self._closing:
                self._finish(call, ClientClosed("the client is closing"))
                return
            if not call.wait and not self.pool.ready_count:
                self._finish(call, self.unavailable())
                return
            self._move(call, _WAITING)
            self._parked.append(call)
            return
        remaining = call.deadline - self._clock.seconds()
        if remaining <= 0:
            self._finish(
                call,
                RequestTimeout(
                    call.timeout,
                    "the deadline passed before the request could be sent",
                ),
            )
            return
        self._move(call, _SENT)
        self._unqueue(call)
        call.has_slot = False  # the connection's request_settled() releases it
        d = self.send_copy(
            proto,
            call.body,
            remaining,
            idempotent=call.idempotent,
            attempt=call.attempt,
            hedge=False,
            key=call.key,
            context=call.context,
        )
        call.current = d
        d.addBoth(self._forward, call)

    def send_copy(
        self,
        proto: FramedProtocol,
        body: bytes | Message,
        timeout: float,
        *,
        idempotent: bool,
        attempt: int,
        hedge: bool,
        key: bytes | None,
        context: object,
    ) -> Deferred[Any]:
        """
        One copy of a request, on ``proto`` (which holds its slot), traced
        when tracing is on.  The routing key and tracing context ride on
        the connection's record, so a re-send after the connection died
        keeps them.
        """
        d = proto.send(body, timeout, idempotent, attempt)
        if (key is not None or context is not None) and isinstance(
            d, PendingRequest
        ):
            d.route = (key, context)
        if self._tracer is not None:
            pool = self.pool
            self._tracer.traced(
                d,
                pool.upstream_of(proto),
                pool.connection_name(proto),
                attempt,
                hedge,
                context,
            )
        return d

    # -- how a call ends -------------------------------------------------------

    def cancel(self, call: Call) -> None:
        """
        The caller cancelled ``call.outer``.
        """
        state = call.state
        if state == _ACQUIRING or state == _SENT:
            if call.current is not None:
                # Fails with CancelledError, which reaches outer.
                call.current.cancel()
        elif state == _WAITING or state == _DELAYED:
            self._finish(call, CancelledError())
            self._forget_parked()

    def _finish(self, call: Call, result: Any) -> None:
        """
        The call's final outcome, reached before (or instead of) being
        handed to a connection.
        """
        if call.state == _DONE:
            return
        self._move(call, _DONE)
        self._unqueue(call)
        self._delayed.discard(call)
        if call.timer is not None:
            if call.timer.active():
                call.timer.cancel()
            call.timer = None
        if call.has_slot:
            call.has_slot = False
            self.request_settled()
        if isinstance(result, (Failure, BaseException)):
            # Ended before reaching a connection: its one outcome is
            # recorded here (a connection records those it took).
            error = result.value if isinstance(result, Failure) else result
            self._events.record_failure(outcome_of(error), None)
            call.outer.errback(result)
        else:
            call.outer.callback(result)

    def _unqueue(self, call: Call) -> None:
        # The body no longer waits in the client (sent, or given up).
        if call.queued_bytes:
            self.queued_bytes -= call.queued_bytes
            call.queued_bytes = 0

    def _forward(self, result: Any, call: Call) -> None:
        # The connection's Deferred (and any retries chained to it) ended;
        # the connection already gave the slot back.
        self._move(call, _DONE)
        call.current = None
        _relay(result, call.outer)

    def _forget_parked(self) -> None:
        # A parked call was cancelled: it stays in the deque until kick()
        # passes it, so rebuild the deque when dead entries dominate (a
        # stream of cancellations while no connection is ready).
        parked = self._parked
        if len(parked) > 64 and len(parked) > 2 * self.slow_live + 64:
            self._parked = deque(c for c in parked if c.state == _WAITING)

    def _expire(self, call: Call) -> None:
        state = call.state
        if state == _ACQUIRING:
            acquiring, call.current = call.current, None
            # Done first, so _acquire_failed ignores the cancellation.
            self._move(call, _DONE)
            self._unqueue(call)
            if acquiring is not None and not acquiring.called:
                acquiring.cancel()
            error = RequestTimeout(
                call.timeout,
                f"no in-flight slot freed up within {call.timeout:g} s "
                f"(max_in_flight={self.limiter.max_in_flight}); the "
                f"request was not sent",
            )
            self._events.record_failure(error.outcome, None)
            call.outer.errback(error)
        elif state == _WAITING:
            try:
                self._parked.remove(call)
            except ValueError:
                pass
            if self.pool.ready_count:
                # Connections were ready but none could take it: each was at
                # its in-flight cap (or its table was full) all along.
                self._finish(
                    call,
                    Overloaded(
                        f"every ready connection stayed full for the request's "
                        f"{call.timeout:g} s deadline (max_in_flight_per_connection="
                        f"{self.pool.in_flight_cap}, max_pending_per_connection="
                        f"{self._max_pending_per_connection}); the request "
                        f"was not sent"
                    ),
                )
                return
            self._finish(
                call,
                self.unavailable(call.timeout),
            )
        elif state == _DELAYED:
            self._finish(
                call,
                RequestTimeout(
                    call.timeout, "the deadline passed while waiting to retry"
                ),
            )

    def unavailable(self, waited: float | None = None) -> Unavailable:
        """
        The error for a request no connection can take, naming why
        (``waited``: the deadline it waited out for a connection, ``None``
        when it asked not to wait).
        """
        return self._unavailable(waited)

    # -- RequestOwner: what the connections report -------------------------------

    def request_settled(self) -> None:
        """
        A request's slot is free (see
        :meth:`~framedclient.protocol.RequestOwner.request_settled`).
        """
        self._release()
        if self._parked or self._lease_waiters:
            self.kick()

    def request_orphaned(
        self,
        p: PendingRequest,
        lost: ConnectionLost,
        host: HostHealth | None = None,
    ) -> bool:
        """
        A connection died (or went away) holding ``p``, which is safe to
        send again: never written, or idempotent.  Take it over if its
        deadline, the attempt bound and (for written ones) the retry budget
        allow; it keeps its in-flight slot, its routing key and tracing
        parent, and goes to another host than ``host`` (the connection's)
        when another can take it.
        """
        if self._closing or p.attempt >= MAX_ATTEMPTS or p.body is None:
            return False
        now = self._clock.seconds()
        deadline = p.deadline
        if now >= deadline:
            return False
        delay = 0.0
        if lost.written:
            if not self.budget.try_withdraw():
                return False
            delay = retry_delay(p.attempt)
            if now + delay >= deadline:
                return False
        self._events.record_retry()
        route = getattr(p, "route", None)
        call = Call(
            self,
            p.body,
            deadline,
            p.timeout if p.timeout else math.inf,
            idempotent=p.idempotent,
            wait=True,
            attempt=p.attempt + 1,
            key=route[0] if route is not None else None,
            context=route[1] if route is not None else None,
        )
        self.slow_live += 1
        call.has_slot = True
        call.avoid = host
        # A retry's body waits in the client too (never refused: it already
        # holds a slot).
        call.queued_bytes = len(p.body)
        self.queued_bytes += call.queued_bytes
        p.body = None
        # The caller holds p (it is the caller's Deferred): relay the
        # retry's outcome to it, and send a cancel of p to the retry.
        p.redirect = call.outer
        call.outer.addBoth(_relay, p)
        if deadline != math.inf:
            self._deadlines.add(deadline, call)
        if delay > 0:
            self._move(call, _DELAYED)
            call.timer = self._clock.callLater(delay, self._after_delay, call)
            self._delayed.add(call)
        else:
            self._dispatch(call)
        return True

    def _after_delay(self, call: Call) -> None:
        call.timer = None
        self._delayed.discard(call)
        if call.state == _DELAYED:
            self._move(call, _ACQUIRING)
            self._dispatch(call)

    def kick(self) -> None:
        """
        Capacity appeared (a connection became ready, a request finished, a
        host's window ended): send parked requests, in order, while
        connections take them; then hand out connections to lease waiters.
        """
        parked = self._parked
        while parked:
            call = parked[0]
            if call.state != _WAITING:
                parked.popleft()
                continue
            proto = self._pick_for(call)
            if proto is None:
                break
            parked.popleft()
            self._move(call, _ACQUIRING)
            self._dispatch(call, proto)
        leases = self._lease_waiters
        while leases:
            if leases[0].called:
                leases.popleft()
                continue
            proto = self.pool.pick_idle()
            if proto is None:
                break
            self.pool.leased.add(proto)
            leases.popleft().callback(proto)

    def _host_changed(self, host: HostHealth) -> None:
        if host.eligible and self._parked:
            # A host's window ended or it revived: capacity appeared.
            self.kick()

    def connection_changed(self, conn: Connection, old: str, new: str) -> None:
        """
        A connection's state changed (a connection listener): a ready one
        is capacity; when the last ready one goes, parked callers who asked
        not to wait (one may have parked while it was dying) learn now.
        """
        if new == "ready":
            self.kick()
        elif old == "ready" and not self.pool.ready_count and self._parked:
            self._nothing_ready()

    def _nothing_ready(self) -> None:
        parked, self._parked = self._parked, deque()
        for call in parked:
            if call.state == _WAITING and not call.wait:
                self._finish(call, self.unavailable())
            elif call.state == _WAITING:
                self._parked.append(call)

    # -- leases ----------------------------------------------------------------

    def lease_connection(self, timeout: float | None) -> Deferred[FramedProtocol]:
        """
        A ready connection with nothing in flight, taken out of the pool's
        choice until :meth:`return_lease`.
        """
        if self._closing:
            return fail(ClientClosed("the client is closed"))
        proto = self.pool.pick_idle()
        if proto is not None and not self._lease_waiters:
            self.pool.leased.add(proto)
            return succeed(proto)
        d: Deferred[FramedProtocol] = Deferred()
        self._lease_waiters.append(d)
        if timeout is not None:
            d.addTimeout(timeout, self._clock)
        return d

    def return_lease(self, proto: FramedProtocol) -> None:
        self.pool.leased.discard(proto)
        self.kick()

    def lease_request(
        self, proto: FramedProtocol, body: bytes | Message, timeout: float | None
    ) -> Deferred[Any]:
        """
        A request bound to the leased ``proto``: it takes a slot like any
        (the connection's request_settled() gives it back), and is never
        re-sent elsewhere.
        """
        limiter = self.limiter
        if limiter.try_acquire():
            return proto.request_bound(body, timeout)
        d: Deferred[Any] = limiter.acquire().addCallback(
            lambda _: proto.request_bound(body, timeout)
        )
        return d

    # -- the end -------------------------------------------------------------

    def close(self, error: ClientClosed) -> None:
        """
        Fail everything still waiting in the client (never sent) with
        ``error``; take nothing new.
        """
        self._closing = True
        self.limiter.fail_all(error)
        parked, self._parked = self._parked, deque()
        for call in parked:
            self._finish(call, error)
        delayed, self._delayed = self._delayed, set()
        for call in delayed:
            if call.state == _DELAYED:
                self._finish(call, error)
        leases, self._lease_waiters = self._lease_waiters, deque()
        for d in leases:
            d.errback(error)

    def stop(self) -> None:
        """
        Every connection is gone: stop the deadline timer.
        """
        self._deadlines.stop()

    # -- introspection ---------------------------------------------------------

    @property
    def queued(self) -> int:
        """
        Requests waiting for a slot, or holding one and waiting for a
        connection.
        """
        return self.limiter.queued + sum(
            1 for c in self._parked if c.state == _WAITING
        )

    def hedges(self) -> dict[str, int]:
        """
        Hedges by what became of them (see
        :data:`~framedclient.hedging.HEDGE_EVENTS`): ``sent``, ``won`` (the
        hedge answered first), ``no_budget``, ``no_host``; zeros when
        hedging is off.
        """
        if self.hedger is None:
            return dict.fromkeys(HEDGE_EVENTS, 0)
        return dict(self.hedger.counts)

    def stats(self) -> dict[str, Any]:
        """
        The requests' part of ``FramedClient.stats()``: slots, queues,
        budgets, hedges.
        """
        limiter = self.limiter
        return {
            "in_flight": limiter.in_flight,
            "queued": self.queued,
            "max_in_flight": limiter.max_in_flight,
            "max_pending": limiter.max_pending,
            "shed": limiter.shed,
            "queued_bytes": self.queued_bytes,
            "retry_budget": round(self.budget.balance, 3),
            "hedges": self.hedges(),
            "tracing": self._tracer is not None,
        }

    def debug_state(self) -> dict[str, int]:
        """
        The slow path's books, where a leak shows up: calls still on it,
        entries its parked queue holds (cancelled ones included, until
        passed or compacted), retries sitting out their delay.
        """
        return {
            "slow_path_calls": self.slow_live,
            "parked_entries": len(self._parked),
            "delayed_retries": len(self._delayed),
        }


class Lease:
    """
    A connection borrowed for exclusive use; see
    :meth:`FramedClient.lease() <framedclient.client.FramedClient.lease>`.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        timeout: float | None,
        request_timeout: float | None,
    ) -> None:
        self._dispatcher = dispatcher
        self._timeout = timeout
        self._request_timeout = request_timeout
        self.protocol: FramedProtocol | None = None

    async def __aenter__(self) -> Lease:
        self.protocol = await self._dispatcher.lease_connection(self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.protocol is not None:
            proto, self.protocol = self.protocol, None
            self._dispatcher.return_lease(proto)

    def request(
        self, body: bytes | Message, timeout: float | None = None
    ) -> Deferred[Any]:
        """
        A request on the leased connection (same contract as
        :meth:`~framedclient.protocol.FramedProtocol.request`).  It is bound
        to this connection: never retried, hedged or moved; if the
        connection dies or sends GOAWAY before it is answered, it fails
        with :class:`~framedclient.errors.ConnectionLost` (``written``
        tells whether it may have run).  It counts against
        ``max_in_flight`` like any request.
        """
        proto = self.protocol
        if proto is None:
            return fail(ClientClosed("the lease is not held (use async with)"))
        if timeout is None:
            timeout = self._request_timeout
        return self._dispatcher.lease_request(proto, body, timeout)


def make_tracer(tracing: bool, tracer_provider: object) -> Any:
    """
    The :class:`~framedclient.tracing.RequestTracer` of a client, or
    ``None``: tracing off, OpenTelemetry not installed, or no provider for
    spans to go to.
    """
    if not tracing or not _otel_installed():
        return None
    # Imported only here: without OpenTelemetry, or with tracing off,
    # requests pay nothing for it.
    from framedclient.tracing import request_tracer

    return request_tracer(tracer_provider)


def _otel_installed() -> bool:
    # find_spec of a top-level name imports nothing.
    try:
        return importlib.util.find_spec("opentelemetry") is not None
    except (ImportError, ValueError):
        return False
