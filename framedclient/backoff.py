"""
Reconnect-delay policies: how long to wait before the next connection
attempt, and how long that attempt may take.

A policy is a pure function of the attempt number (plus an injected random
source): it never reads a clock and imports nothing from Twisted.  The
connection state machine owns the reactor and asks the policy for numbers;
that split keeps the policies exactly testable (inject ``random=lambda: 0.5``
and the sequence is known to the last bit) and reusable outside Twisted.

Why jitter at all: when a server restarts, every client loses its
connections in the same second.  Without jitter they would all come back in
the same second too, again and again, and the recovering server would face a
synchronised stampede on each round.  Randomising each delay spreads the
fleet out.

Attempt numbering, shared by every policy:

- :meth:`BackoffPolicy.connect_timeout` takes the number of consecutive
  failed attempts *before* the attempt about to start: ``0`` for the very
  first attempt, ``1`` for the first retry, ...
- :meth:`BackoffPolicy.delay` takes the number of consecutive failed
  attempts *so far*, so it is at least ``1``: ``delay(1)`` is the wait after
  the first failure.

A successful connection resets the count to zero; that is the caller's job.

A plain ``Callable[[int], float]`` (the ``retryPolicy`` of Twisted's
``ClientService``, e.g. ``twisted.application.internet.backoffPolicy()``) is
accepted wherever a policy is: :func:`as_backoff_policy` wraps it in a
:class:`CallableBackoff`.  ``ClientService`` calls it with the number of
consecutive failed attempts so far (``>= 1``), exactly what
:meth:`BackoffPolicy.delay` receives, so the function is called with the
same number and the delays match what ``ClientService`` would wait.

Command lines pick a policy with :func:`parse_backoff`.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from framedclient.validation import Number, check_argument

__all__ = [
    "BackoffLike",
    "BackoffPolicy",
    "CallableBackoff",
    "ConstantBackoff",
    "ExponentialBackoff",
    "FullJitterBackoff",
    "as_backoff_policy",
    "parse_backoff",
]


class BackoffPolicy(Protocol):
    """
    How a self-healing connection paces its reconnection attempts.
    """

    def delay(self, attempt: int) -> float:
        """
        How long to wait before the next connection attempt.

        :param attempt: the number of consecutive failed connection attempts
            so far (``>= 1``).
        :returns: seconds, ``>= 0``.
        """

    def connect_timeout(self, attempt: int) -> float:
        """
        How long the next connection attempt may take before it is abandoned
        and counted as a failure.

        :param attempt: the number of consecutive failed attempts before this
            one (``>= 0``; ``0`` is the first attempt).
        :returns: seconds, ``> 0``.
        """


#: The kinds of the policies' arguments (see framedclient.validation).
_POSITIVE = Number(0.0)
_NOT_NEGATIVE = Number(0.0, inclusive=True)
_GROWTH = Number(1.0, inclusive=True)
_SHARE = Number(0.0, inclusive=True, maximum=1.0)


def _check_max_delay(owner: str, max_delay: float, low: float, low_name: str) -> None:
    check_argument(
        Number(low, inclusive=True, bound=low_name), "max_delay", max_delay, owner
    )


def _check_failures(attempt: int) -> None:
    if attempt < 1:
        raise ValueError(
            f"delay() takes the number of failed attempts so far (>= 1), "
            f"got {attempt!r}"
        )


def _check_attempt(attempt: int) -> None:
    if attempt < 0:
        raise ValueError(
            f"connect_timeout() takes the number of failed attempts before "
            f"this one (>= 0), got {attempt!r}"
        )


def _capped_power(scale: float, base: float, exponent: int, cap: float) -> float:
    """
    ``min(scale * base ** exponent, cap)`` that never overflows.

    ``base`` is converted to float first: with an ``int`` base Python would
    happily compute an exact integer with millions of digits for a large
    attempt number.  Float ``**`` raises :exc:`OverflowError` instead of
    returning infinity, and since ``base >= 1`` any overflow is far above
    ``cap``.
    """
    try:
        value = scale * float(base) ** exponent
    except OverflowError:
        return cap
    return min(value, cap)


@attrs.frozen
class ExponentialBackoff:
    """
    gRPC's connection backoff (grpc/doc/connection-backoff.md), the default.

    After the ``n``-th consecutive failure the *current backoff* is
    ``min(initial * multiplier ** (n - 1), max_delay)`` and the delay is that
    value scaled by a uniform factor in ``[1 - jitter, 1 + jitter)``, then
    clamped to ``[0, max_delay]``.  The clamp means that once the backoff
    has reached ``max_delay`` the jitter only ever shortens the wait, so
    ``max_delay`` is a hard promise to the operator ("a dead server is
    retried at least every two minutes").

    The connect timeout of an attempt is ``max(current backoff,
    min_connect_timeout)``, where the current backoff is the one gRPC would
    use for that attempt: ``initial`` for the first attempt, ``initial *
    multiplier`` for the first retry, and so on.  It is not jittered: gRPC
    jitters it only as a side effect of sharing one deadline with the
    sleep, and a deterministic timeout is easier to reason about in logs.

    :param initial: seconds to wait after the first failure (``> 0``).
    :param multiplier: growth factor per failure (``>= 1``).
    :param jitter: relative spread of each delay (``0 <= jitter <= 1``).
    :param max_delay: upper bound of any delay (``>= initial``).
    :param min_connect_timeout: the least time any attempt is given to
        connect (``> 0``); slow networks need a floor independent of how
        short the backoff is.
    :param random: a zero-argument callable returning a float in ``[0, 1)``;
        inject a constant to make the sequence exact in tests.
    """

    initial: float = 1.0
    multiplier: float = 1.6
    jitter: float = 0.2
    max_delay: float = 120.0
    min_connect_timeout: float = 20.0
    random: Callable[[], float] = attrs.field(
        default=_random.random, repr=False, eq=False
    )

    def __attrs_post_init__(self) -> None:
        owner = type(self).__name__
        check_argument(_POSITIVE, "initial", self.initial, owner)
        check_argument(_GROWTH, "multiplier", self.multiplier, owner)
        check_argument(_SHARE, "jitter", self.jitter, owner)
        _check_max_delay(owner, self.max_delay, self.initial, "initial")
        check_argument(
            _POSITIVE, "min_connect_timeout", self.min_connect_timeout, owner
        )
        if not callable(self.random):
            raise TypeError(f"{owner}: random must be a zero-argument callable")

    def _current_backoff(self, failures: int) -> float:
        return _capped_power(
            self.initial, self.multiplier, failures - 1, self.max_delay
        )

    def delay(self, attempt: int) -> float:
        """
        See :meth:`BackoffPolicy.delay`.

        :raises ValueError: if ``attempt < 1``.
        """
        _check_failures(attempt)
        backoff = self._current_backoff(attempt)
        delay = backoff * (1.0 + self.jitter * (2.0 * self.random() - 1.0))
        return min(max(delay, 0.0), self.max_delay)

    def connect_timeout(self, attempt: int) -> float:
        """
        See :meth:`BackoffPolicy.connect_timeout`.

        :raises ValueError: if ``attempt < 0``.
        """
        _check_attempt(attempt)
        return max(self._current_backoff(attempt + 1), self.min_connect_timeout)


@attrs.frozen
class FullJitterBackoff:
    """
    AWS's "full jitter" backoff: the delay after the ``n``-th consecutive
    failure is uniform in ``[0, min(max_delay, base * 2 ** (n - 1)))``.

    Full jitter spreads a fleet of clients out more than gRPC's +/-20% (the
    AWS Architecture Blog measured it finishing the same work with less
    total load), at the cost of occasionally retrying almost immediately.

    The connect timeout is ``max(ceiling, min_connect_timeout)``, with the
    ceiling of that attempt (``base`` for the first attempt, ``2 * base``
    for the first retry, ...), mirroring :class:`ExponentialBackoff`.

    :param base: the ceiling of the first delay (``> 0``).
    :param max_delay: upper bound of any delay (``>= base``).
    :param min_connect_timeout: the least time any attempt is given to
        connect (``> 0``).
    :param random: a zero-argument callable returning a float in ``[0, 1)``.
    """

    base: float = 1.0
    max_delay: float = 120.0
    min_connect_timeout: float = 20.0
    random: Callable[[], float] = attrs.field(
        default=_random.random, repr=False, eq=False
    )

    def __attrs_post_init__(self) -> None:
        owner = type(self).__name__
        check_argument(_POSITIVE, "base", self.base, owner)
        _check_max_delay(owner, self.max_delay, self.base, "base")
        check_argument(
            _POSITIVE, "min_connect_timeout", self.min_connect_timeout, owner
        )
        if not callable(self.random):
            raise TypeError(f"{owner}: random must be a zero-argument callable")

    def _ceiling(self, failures: int) -> float:
        return _capped_power(self.base, 2.0, failures - 1, self.max_delay)

    def delay(self, attempt: int) -> float:
        """
        See :meth:`BackoffPolicy.delay`.

        :raises ValueError: if ``attempt < 1``.
        """
        _check_failures(attempt)
        delay = self.random() * self._ceiling(attempt)
        return min(max(delay, 0.0), self.max_delay)

    def connect_timeout(self, attempt: int) -> float:
        """
        See :meth:`BackoffPolicy.connect_timeout`.

        :raises ValueError: if ``attempt < 0``.
        """
        _check_attempt(attempt)
        return max(self._ceiling(attempt + 1), self.min_connect_timeout)


@attrs.frozen(repr=False)
class ConstantBackoff:
    """
    The same delay and connect timeout for every attempt.

    Meant for tests (a ``task.Clock`` advanced by a known step) and for
    setups with a single client, where there is no fleet to de-synchronise.

    :param delay: seconds between attempts (``>= 0``).
    :param connect_timeout: seconds each attempt may take (``> 0``).
    """

    # Stored under private names because the public names are the methods
    # every policy must have; attrs strips the underscore for __init__, so
    # the constructor still reads ConstantBackoff(delay, connect_timeout=...).
    _delay: float
    _connect_timeout: float = 20.0

    def __attrs_post_init__(self) -> None:
        owner = type(self).__name__
        check_argument(_NOT_NEGATIVE, "delay", self._delay, owner)
        check_argument(_POSITIVE, "connect_timeout", self._connect_timeout, owner)

    def __repr__(self) -> str:
        return (
            f"ConstantBackoff(delay={self._delay!r}, "
            f"connect_timeout={self._connect_timeout!r})"
        )

    def delay(self, attempt: int) -> float:
        """
        See :meth:`BackoffPolicy.delay`.

        :raises ValueError: if ``attempt < 1``.
        """
        _check_failures(attempt)
        return self._delay

    def connect_timeout(self, attempt: int) -> float:
        """
        See :meth:`BackoffPolicy.connect_timeout`.

        :raises ValueError: if ``attempt < 0``.
        """
        _check_attempt(attempt)
        return self._connect_timeout


@attrs.frozen
class CallableBackoff:
    """
    A ``ClientService``-style retry policy, ``Callable[[int], float]``, as a
    :class:`BackoffPolicy`.

    Such a function only knows delays, so every attempt gets the same
    connect timeout: gRPC's minimum, 20 s, unless the connection is given
    its own ``connect_timeout``.

    :param policy: called with the number of consecutive failed attempts so
        far (``>= 1``, as ``ClientService`` does); returns seconds.  A
        negative or NaN result is taken as ``0`` (retry at once) rather
        than crashing the reconnect loop.
    :param min_connect_timeout: seconds each attempt may take (``> 0``).
    """

    policy: Callable[[int], float]
    min_connect_timeout: float = 20.0

    def __attrs_post_init__(self) -> None:
        if not callable(self.policy):
            raise TypeError(
                f"CallableBackoff: policy must be a callable taking the number "
                f"of failed attempts, got {self.policy!r}"
            )
        check_argument(
            _POSITIVE,
            "min_connect_timeout",
            self.min_connect_timeout,
            type(self).__name__,
        )

    def delay(self, attempt: int) -> float:
        """
        See :meth:`BackoffPolicy.delay`.

        :raises ValueError: if ``attempt < 1``.
        """
        _check_failures(attempt)
        delay = float(self.policy(attempt))
        return delay if delay > 0 else 0.0

    def connect_timeout(self, attempt: int) -> float:
        """
        See :meth:`BackoffPolicy.connect_timeout`.

        :raises ValueError: if ``attempt < 0``.
        """
        _check_attempt(attempt)
        return self.min_connect_timeout


#: What a connection accepts as ``backoff=``.
BackoffLike = BackoffPolicy | Callable[[int], float]


def as_backoff_policy(backoff: BackoffLike | None) -> BackoffPolicy:
    """
    The :class:`BackoffPolicy` for ``backoff``.

    :param backoff: a policy (anything with ``delay`` and
        ``connect_timeout`` methods); a plain ``Callable[[int], float]``,
        wrapped in :class:`CallableBackoff`; or ``None`` for gRPC's policy.
    :raises TypeError: naming ``backoff`` if it is neither.
    """
    if backoff is None:
        return ExponentialBackoff()
    if callable(getattr(backoff, "delay", None)) and callable(
        getattr(backoff, "connect_timeout", None)
    ):
        return backoff  # type: ignore[return-value]
    if callable(backoff):
        return CallableBackoff(backoff)
    raise TypeError(
        f"backoff must be a BackoffPolicy (delay() and connect_timeout() "
        f"methods) or a callable taking the number of failed attempts and "
        f"returning seconds, such as Twisted's backoffPolicy(); got {backoff!r}"
    )


_ACCEPTED_FORMS = (
    "accepted forms: 'grpc', "
    "'grpc:initial=S,multiplier=X,jitter=F,max=S,min_connect_timeout=S', "
    "'full-jitter:base=S,max=S,min_connect_timeout=S', 'constant:S' "
    "(S in seconds; every key is optional)"
)

# Command-line key -> constructor argument, per policy.  "max" rather than
# "max_delay" because it is what people type.
_GRPC_KEYS = {
    "initial": "initial",
    "multiplier": "multiplier",
    "jitter": "jitter",
    "max": "max_delay",
    "min_connect_timeout": "min_connect_timeout",
}
_FULL_JITTER_KEYS = {
    "base": "base",
    "max": "max_delay",
    "min_connect_timeout": "min_connect_timeout",
}


def _parse_number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{what} is not a number") from None


def _parse_params(params: str, keys: dict[str, str]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if not params.strip():
        return kwargs
    for item in params.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"{item.strip()!r} is not key=value")
        if key not in keys:
            raise ValueError(f"unknown key {key!r} (known: {', '.join(sorted(keys))})")
        argument = keys[key]
        if argument in kwargs:
            raise ValueError(f"key {key!r} given twice")
        kwargs[argument] = _parse_number(value.strip(), f"{key}={value.strip()!r}")
    return kwargs


def parse_backoff(spec: str) -> BackoffPolicy:
    """
    Build a policy from its command-line spelling.

    - ``grpc``: :class:`ExponentialBackoff` with gRPC's defaults;
    - ``grpc:initial=0.5,max=30,multiplier=1.6,jitter=0.2`` (and
      ``min_connect_timeout=``): the same with some parameters changed;
    - ``full-jitter:base=1,max=60`` (and ``min_connect_timeout=``):
      :class:`FullJitterBackoff`;
    - ``constant:2``: :class:`ConstantBackoff` of 2 seconds.

    The policy name is case-insensitive; spaces around names and values are
    ignored.

    :raises ValueError: with a one-line message that quotes the spec, says
        what is wrong with it and lists the accepted forms.
    """
    kind, _, params = spec.strip().partition(":")
    kind = kind.strip().lower()
    try:
        if kind == "grpc":
            return attrs.evolve(
                ExponentialBackoff(), **_parse_params(params, _GRPC_KEYS)
            )
        if kind == "full-jitter":
            return attrs.evolve(
                FullJitterBackoff(), **_parse_params(params, _FULL_JITTER_KEYS)
            )
        if kind == "constant":
            if not params.strip():
                raise ValueError("constant needs a delay in seconds")
            return ConstantBackoff(_parse_number(params.strip(), repr(params.strip())))
        raise ValueError(f"unknown policy {kind!r}")
    except ValueError as error:
        raise ValueError(
            f"invalid backoff {spec!r}: {error}; {_ACCEPTED_FORMS}"
        ) from None
