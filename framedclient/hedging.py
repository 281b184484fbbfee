"""
Hedged requests: a second copy of a slow idempotent request, to another
host.

One slow host (a GC pause, a noisy neighbour, a disk stall) sets a fleet's
tail latency: with ``hedge_after`` set, an idempotent request that has not
been answered after that delay is also sent to *another* upstream, and the
first answer wins ("The Tail at Scale", Dean and Barroso).  What it costs
and promises:

- only ``idempotent=True`` requests are hedged (the server may see both
  copies), and only when the first copy went out at once (a request that
  waited for a slot or a connection is not hedged: the client is busy
  already);
- the copy goes to another upstream (with ``ketama``, the next one on the
  ring), never to the first one's host, and takes an in-flight slot like
  any request; no free slot or no other upstream ready: no hedge;
- a :class:`~framedclient.retry.RetryBudget` of its own bounds the extra
  load: 10 % of requests (plus one a second, so a quiet client can hedge
  too) by default;
- the first *answer* wins: a reply, or an error reply from the server
  (:class:`~framedclient.errors.RemoteError`); the other copy is cancelled
  (a cancel frame where the codec has one).  A copy that fails without an
  answer (connection lost, timed out) leaves the other to answer; the
  caller's Deferred fails only when both have failed, with the first copy's
  error.  Either way it fires exactly once.
- ``hedge_after="p95"`` waits the first host's 95th percentile latency,
  from the replies its connections have had so far (re-read once a second);
  until it has had :data:`MIN_SAMPLES` replies, that host's requests are
  not hedged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from framedclient.config import percentile_of
from framedclient.errors import RemoteError
from framedclient.retry import RetryBudget

if TYPE_CHECKING:
    from framedclient.codecs import Message
    from framedclient.metrics import LatencyHistogram
    from framedclient.protocol import FramedProtocol

__all__ = [
    "HEDGE_EVENTS",
    "MIN_SAMPLES",
    "Hedger",
    "SendCopy",
    "default_hedge_budget",
]

#: Replies a host must have had before its percentile is trusted.
MIN_SAMPLES = 50

#: What is counted about hedges: copies sent, copies that answered first,
#: and hedges not sent for want of budget or of another upstream (or slot).
HEDGE_EVENTS = ("sent", "won", "no_budget", "no_host")

#: Seconds a host's percentile is reused before it is read again.
_REFRESH = 1.0


def default_hedge_budget(clock: IReactorTime) -> RetryBudget:
    """
    The default hedge budget: 10 % of requests, plus one a second, at most
    10 saved up.
    """
    return RetryBudget(clock, ratio=0.1, min_per_second=1.0, cap=10.0)


class SendCopy(Protocol):
    """
    How a :class:`Hedger` sends one copy of a request on a connection that
    holds its slot.
    """

    def __call__(
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
    ) -> Deferred[Any]: ...


class Hedger:
    """
    Sends hedged requests for one client.

    :param after: ``hedge_after``: seconds, or ``"pNN"``.
    :param take: an in-flight slot and a connection for a copy, given the
        key and the upstream to avoid (the pool's ``take_for``); ``None``
        when none can take it.
    :param upstream_of: the upstream of a connection.
    :param latency_of: the latency histogram of an upstream (``None``:
        unknown), for percentile delays.
    :param release: gives back a slot ``take`` took (no budget left).
    :param budget: bounds the extra load.
    :param send: sends one copy (the dispatcher's
        :meth:`~framedclient.dispatch.Dispatcher.send_copy`, which traces
        it), with keywords: see :class:`SendCopy`.
    """

    def __init__(
        self,
        clock: IReactorTime,
        after: float | str,
        take: Callable[[bytes | None, str | None], FramedProtocol | None],
        upstream_of: Callable[[FramedProtocol], str | None],
        latency_of: Callable[[str], LatencyHistogram | None],
        release: Callable[[], None],
        budget: RetryBudget,
        send: SendCopy,
    ) -> None:
        self._clock = clock
        self._fixed = after if not isinstance(after, str) else None
        self._percentile = percentile_of(after) if isinstance(after, str) else None
        self._take = take
        self._upstream_of = upstream_of
        self._latency_of = latency_of
        self._release = release
        self.budget = budget
        self._send = send
        self._delays: dict[str, tuple[float, float | None]] = {}
        #: counts by :data:`HEDGE_EVENTS`
        self.counts: dict[str, int] = dict.fromkeys(HEDGE_EVENTS, 0)

    def delay(self, upstream: str) -> float | None:
        """
        Seconds to wait before hedging a request sent to ``upstream``, or
        ``None`` to not hedge it.
        """
        if self._fixed is not None:
            return self._fixed
        now = self._clock.seconds()
        cached = self._delays.get(upstream)
        if cached is not None and now - cached[0] < _REFRESH:
            return cached[1]
        histogram = self._latency_of(upstream)
        value: float | None = None
        if histogram is not None and histogram.count >= MIN_SAMPLES:
            assert self._percentile is not None
            value = histogram.percentile(self._percentile)
        self._delays[upstream] = (now, value)
        return value

    def request(
        self,
        proto: FramedProtocol,
        body: bytes | Message,
        timeout: float,
        key: bytes | None,
        context: object,
    ) -> Deferred[Any]:
        """
        Send idempotent ``body`` on ``proto`` (which holds a slot already),
        and a hedge later if it is slow.
        """
        self.budget.deposit()
        upstream = self._upstream_of(proto)
        delay = self.delay(upstream) if upstream is not None else None
        first = self._send(
            proto,
            body,
            timeout,
            idempotent=True,
            attempt=1,
            hedge=False,
            key=key,
            context=context,
        )
        if upstream is None or delay is None or first.called or delay >= timeout:
            return first
        hedged = _Hedged(self, first, upstream, body, timeout, key, delay)
        hedged.context = context
        hedged.first_proto = proto
        return hedged.outer

    def hedge(self, h: _Hedged) -> None:
        """
        ``h``'s first copy is late: send the second, if allowed.
        """
        proto = self._take(h.key, h.upstream)
        if proto is None:
            self.counts["no_host"] += 1
            return
        if not self.budget.try_withdraw():
            self._release()
            self.counts["no_budget"] += 1
            return
        self.counts["sent"] += 1
        remaining = h.deadline - self._clock.seconds()
        h.second = second = self._send(
            proto,
            h.body,
            remaining,
            idempotent=True,
            attempt=1,
            hedge=True,
            key=h.key,
            context=h.context,
        )
        second.addBoth(h.settled, True)


class _Hedged:
    """
    One hedged request: its two copies and the caller's Deferred (whose
    canceller is :meth:`cancel`).
    """

    __slots__ = (
        "body",
        "context",
        "deadline",
        "done",
        "first",
        "first_failure",
        "first_proto",
        "hedger",
        "key",
        "outer",
        "second",
        "sent_at",
        "timer",
        "upstream",
    )

    def __init__(
        self,
        hedger: Hedger,
        first: Deferred[Any],
        upstream: str,
        body: bytes | Message,
        timeout: float,
        key: bytes | None,
        delay: float,
    ) -> None:
        clock = hedger._clock
        self.hedger = hedger
        self.upstream = upstream
        self.body = body
        self.key = key
        self.sent_at = clock.seconds()
        self.deadline = self.sent_at + timeout
        self.done = False
        self.first_proto: FramedProtocol | None = None
        self.first_failure: Failure | None = None
        self.context: object = None
        self.second: Deferred[Any] | None = None
        self.outer: Deferred[Any] = Deferred(self.cancel)
        self.first = first
        self.timer: IDelayedCall | None = clock.callLater(delay, self.fire)
        first.addBoth(self.settled, False)

    def fire(self) -> None:
        self.timer = None
        if not self.done:
            self.hedger.hedge(self)

    def settled(self, result: Any, hedge: bool) -> None:
        """
        One copy's outcome.  Returns ``None``: the copies' outcomes stop
        here (the loser's cancellation included); the caller gets the
        winner's through ``outer``.
        """
        if self.done:
            return
        if not hedge and self.timer is not None:
            # The first copy is settled: no hedge from now on.
            self.timer.cancel()
            self.timer = None
        other = self.first if hedge else self.second
        if isinstance(result, Failure) and not isinstance(result.value, RemoteError):
            # No answer from this copy; the other may still give one.
            if not hedge:
                self.first_failure = result
            if other is not None and not other.called:
                return
            if self.first_failure is not None:
                result = self.first_failure
        self.done = True
        self.body = b""  # the body is not needed any more
        if hedge and not isinstance(result, Failure):
            self.hedger.counts["won"] += 1
            self._first_lost()
        if other is not None and not other.called:
            other.cancel()
        if isinstance(result, Failure):
            self.outer.errback(result)
        else:
            self.outer.callback(result)

    def _first_lost(self) -> None:
        # The hedge answered while the first copy's connection has read
        # nothing since that copy went out: a failure of its host, as a
        # timeout would be.  Without this a silent host is never ejected
        # while hedging is on: each of its copies is cancelled by a winning
        # hedge, and a cancel is neither a failure nor a timeout.  A host
        # that answers anything meanwhile (other replies, the cancel's
        # answer of an earlier copy read since) is only slow: not counted.
        proto = self.first_proto
        if (
            proto is not None
            and not self.first.called
            and proto.health is not None
            and proto.silent_since(self.sent_at)
        ):
            proto.health.failed()

    def cancel(self, outer: Deferred[Any]) -> None:
        # The caller cancelled: both copies go (cancel frames sent); then
        # Deferred.cancel() fails ``outer`` with CancelledError.
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for d in (self.first, self.second):
            if d is not None and not d.called:
                d.cancel()
