"""
When a failed request may be sent again, and how often.

Retries are how a client turns a blip into a success, and how a fleet of
clients turns an overloaded server into a dead one.  framedclient retries
only what is safe:

- a request that was **never written** to any connection (the connection
  died or went away first) is re-sent on another connection: the server
  cannot have seen it;
- a request marked ``idempotent=True`` may also be re-sent after its
  connection was lost *after* writing it, within a :class:`RetryBudget`
  (Finagle's design, like gRPC's retry throttling): retries may add at most
  ``ratio`` (20 %) to the request rate, plus a small floor of
  ``min_per_second`` so a quiet client can still retry.

Both kinds stay inside the request's overall deadline.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

__all__ = ["RetryBudget", "retry_delay"]


class RetryBudget:
    """
    A token bucket fed by requests: each request deposits ``ratio`` tokens,
    each retry withdraws one, and ``min_per_second`` tokens trickle in over
    time so that low-traffic clients can retry too.  The balance is capped
    at ``ratio * window * (recent request rate)``-ish by ``cap``, so a long
    quiet period cannot bank a retry storm.

    :param ratio: retries allowed per request (0.2 = 20 %).
    :param min_per_second: retries always allowed per second.
    :param cap: the most tokens that can be saved up.
    """

    __slots__ = (
        "_clock",
        "_counted",
        "_last",
        "_tokens",
        "cap",
        "min_per_second",
        "ratio",
        "requests",
    )

    def __init__(
        self,
        clock: IReactorTime,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        cap: float = 100.0,
    ) -> None:
        if not 0 <= ratio <= 1:
            raise ValueError(f"retry ratio must be within 0..1, got {ratio!r}")
        if not min_per_second >= 0:
            raise ValueError(f"min_per_second must be >= 0, got {min_per_second!r}")
        if not cap >= 1:
            raise ValueError(f"cap must be >= 1, got {cap!r}")
        self._clock = clock
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.cap = cap
        self._tokens = min(cap, min_per_second)
        self._last = clock.seconds()
        #: Requests sent so far (not retries), counted by :meth:`deposit`
        #: only; deposits are credited lazily when a retry is asked for, so
        #: counting a request costs one addition.
        self.requests = 0
        self._counted = 0

    def deposit(self) -> None:
        """
        Count one request (not a retry).
        """
        self.requests += 1

    def try_withdraw(self) -> bool:
        """
        Take one retry from the budget, if it holds one.
        """
        now = self._clock.seconds()
        elapsed = now - self._last
        self._last = now
        fresh = self.requests - self._counted
        self._counted = self.requests
        tokens = self._tokens + fresh * self.ratio
        if elapsed > 0:
            tokens += elapsed * self.min_per_second
        self._tokens = min(self.cap, tokens)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    @property
    def balance(self) -> float:
        fresh = self.requests - self._counted
        return min(self.cap, self._tokens + fresh * self.ratio)


def retry_delay(
    attempt: int,
    base: float = 0.025,
    cap: float = 1.0,
    random: Callable[[], float] = _random.random,
) -> float:
    """
    Full-jitter exponential delay before retry number ``attempt`` (>= 1) of
    an idempotent request: short, because the caller is waiting, and
    jittered, because its neighbours lost the same connection.
    """
    return float(random()) * min(cap, base * 2.0 ** min(attempt - 1, 30))
