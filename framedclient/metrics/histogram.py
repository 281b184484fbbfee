"""
:class:`LatencyHistogram`: a latency distribution in fixed buckets, cheap
to record into and exact to add up.

Latency buckets
---------------

:class:`LatencyHistogram` uses fixed log-linear buckets from 10 µs to 120 s:
each decade is split at the mantissas 1.0, 1.1, ..., 1.9, 2.0, 2.25, ...,
3.75, 4.0, 4.5, 5.0, 5.5, ..., 9.5 (30 buckets per decade, 214 in all
with the overflow bucket above 120 s).  No bucket is wider than 12.5% of
its lower bound, so a percentile is never off by more than 12.5% of its
value (and by much less for smooth distributions, because it is
interpolated within the bucket and clamped to the observed minimum and
maximum).  The bounds are round decimal numbers, so the Prometheus
exposition can use a subset of them (1, 2.5, 5 per decade by default)
and stay exact.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "BOUND_INDEX",
    "LATENCY_BUCKET_BOUNDS",
    "LatencyHistogram",
    "format_float",
]


def _latency_bounds() -> tuple[float, ...]:
    # Mantissas in hundredths: steps of 0.1 up to 2, 0.25 up to 4, then 0.5
    # (4.0 -> 4.5 -> 5.0), so no step exceeds 12.5% of where it starts.
    mantissas = [
        *range(100, 200, 10),
        *range(200, 400, 25),
        400,
        450,
        *range(500, 1000, 50),
    ]
    bounds: list[float] = []
    for exponent in range(-7, 1):
        for mantissa in mantissas:
            # Parsing the decimal string gives the double nearest to the
            # round number, whose repr is that round number ("0.0025"), and
            # which equals what a user types as a literal.
            bound = float(f"{mantissa}e{exponent}")
            if bound <= 120.0:
                bounds.append(bound)
    return tuple(bounds)


LATENCY_BUCKET_BOUNDS: tuple[float, ...] = _latency_bounds()
"""Upper bounds (inclusive, seconds) of the finite latency buckets, from
1e-05 to 120.  Values above the last bound go to an overflow bucket."""

BOUND_INDEX: Mapping[float, int] = {
    bound: index for index, bound in enumerate(LATENCY_BUCKET_BOUNDS)
}
"""Each bound of :data:`LATENCY_BUCKET_BOUNDS` to its position, so an
exposition in coarser buckets can check its bounds once and count exactly
(:meth:`LatencyHistogram.cumulative_counts`)."""


def format_float(value: float) -> str:
    """
    Format a number the way the Prometheus text format spells it; a
    histogram's snapshot spells its bucket bounds the same way, so its keys
    read like the ``le`` labels of ``/metrics``.
    """
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


class LatencyHistogram:
    """
    A latency distribution in fixed log-linear buckets (see the module
    docstring for the layout and its error bound).

    Fixed buckets make :meth:`record` constant-time and allocation-free and
    make histograms of different connections mergeable by adding counts.
    """

    __slots__ = ("_count", "_counts", "_max", "_min", "_sum")

    def __init__(self) -> None:
        # One count per finite bucket, plus the overflow bucket at the end.
        self._counts: list[int] = [0] * (len(LATENCY_BUCKET_BOUNDS) + 1)
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = 0.0

    def __repr__(self) -> str:
        return (
            f"<LatencyHistogram count={self._count} "
            f"p50={self.percentile(50):.6g} max={self.max:.6g}>"
        )

    @property
    def count(self) -> int:
        """The number of recorded values."""
        return self._count

    @property
    def sum(self) -> float:
        """The sum of the recorded values, in seconds."""
        return self._sum

    @property
    def min(self) -> float:
        """The smallest recorded value, or 0.0 if there is none."""
        return self._min if self._count else 0.0

    @property
    def max(self) -> float:
        """The largest recorded value, or 0.0 if there is none."""
        return self._max

    def record(self, seconds: float) -> None:
        """
        Add one observation.

        A negative value or NaN is recorded as 0.0: the reactor's clock can
        step backwards (wall-clock time), and one bad reading must not
        poison the sum forever.

        :param seconds: the latency, in seconds.
        """
        if not seconds >= 0.0:
            seconds = 0.0
        # bisect_left: the first bound >= seconds, i.e. buckets are
        # (previous bound, bound], matching Prometheus's "le".
        self._counts[bisect_left(LATENCY_BUCKET_BOUNDS, seconds)] += 1
        self._count += 1
        self._sum += seconds
        if seconds > self._max:
            self._max = seconds
        if seconds < self._min:
            self._min = seconds

    def percentile(self, q: float) -> float:
        """
        Estimate the ``q``-th percentile: the value that ``q`` percent of
        the observations do not exceed.

        The estimate is interpolated linearly within its bucket and clamped
        to the observed minimum and maximum, so ``percentile(0)`` is the
        minimum and ``percentile(100)`` the maximum.

        :param q: the percentile, from 0 to 100.
        :returns: seconds; 0.0 if nothing was recorded.
        :raises ValueError: if ``q`` is outside ``[0, 100]``.
        """
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile must be between 0 and 100, got {q!r}")
        if not self._count:
            return 0.0
        rank = q / 100.0 * self._count
        bounds = LATENCY_BUCKET_BOUNDS
        cumulative = 0
        for index, count in enumerate(self._counts):
            if count and cumulative + count >= rank:
                lower = bounds[index - 1] if index else 0.0
                upper = bounds[index] if index < len(bounds) else self._max
                value = lower + (upper - lower) * ((rank - cumulative) / count)
                return min(max(value, self._min), self._max)
            cumulative += count
        return self._max  # pragma: no cover - only reachable by rounding

    def buckets(self) -> list[tuple[float, int]]:
        """
        Every bucket as ``(upper bound, count)``, not cumulative, in
        increasing order; the last bound is ``math.inf`` (the overflow
        bucket).
        """
        return list(zip((*LATENCY_BUCKET_BOUNDS, math.inf), self._counts, strict=True))

    def cumulative_counts(self, indexes: Sequence[int]) -> list[int]:
        """
        How many observations are at or below each of the given bounds,
        exactly: what a Prometheus ``le`` bucket counts.

        :param indexes: strictly increasing positions in
            :data:`LATENCY_BUCKET_BOUNDS` (see :data:`BOUND_INDEX`).
        """
        counts = self._counts
        cumulative = 0
        previous = 0
        result: list[int] = []
        for index in indexes:
            cumulative += sum(counts[previous : index + 1])
            previous = index + 1
            result.append(cumulative)
        return result

    def merge(self, other: LatencyHistogram) -> None:
        """
        Add ``other``'s observations to this histogram, e.g. to aggregate
        the histograms of several connections.  ``other`` is unchanged.
        """
        counts = self._counts
        for index, count in enumerate(other._counts):
            counts[index] += count
        self._count += other._count
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def export(self) -> dict[str, Any]:
        """
        Every number, losslessly and JSON-able: what :meth:`from_export`
        rebuilds.  Unlike :meth:`snapshot` (percentiles, non-empty buckets
        only) it keeps every bucket count, so histograms of several
        processes merge exactly.
        """
        return {
            "counts": list(self._counts),
            "count": self._count,
            "sum": self._sum,
            "min": self._min if self._count else None,
            "max": self._max,
        }

    @classmethod
    def from_export(cls, data: Mapping[str, Any]) -> LatencyHistogram:
        """
        The histogram :meth:`export` described.

        :raises ValueError: if the bucket layout differs from this
            version's (another framedclient version's export).
        """
        counts = [int(c) for c in data["counts"]]
        if len(counts) != len(LATENCY_BUCKET_BOUNDS) + 1:
            raise ValueError(
                f"histogram export has {len(counts)} buckets, expected "
                f"{len(LATENCY_BUCKET_BOUNDS) + 1}"
            )
        histogram = cls()
        histogram._counts = counts
        histogram._count = int(data["count"])
        histogram._sum = float(data["sum"])
        low = data["min"]
        histogram._min = math.inf if low is None else float(low)
        histogram._max = float(data["max"])
        return histogram

    def snapshot(self) -> dict[str, Any]:
        """
        A JSON-serialisable summary.

        :returns: ``count``, ``sum``, ``min``, ``max``, ``mean``, ``p50``,
            ``p90``, ``p99``, ``p999`` (seconds) and ``buckets``: the
            non-empty buckets as ``{upper bound: count}``, not cumulative,
            with each bound spelt as in Prometheus's ``le`` label (for
            example ``"0.0025"``, ``"+Inf"``), because JSON has neither
            float keys nor infinity.
        """
        count = self._count
        return {
            "count": count,
            "sum": self._sum,
            "min": self.min,
            "max": self._max,
            "mean": self._sum / count if count else 0.0,
            "p50": self.percentile(50),
            "p90": self.percentile(90),
            "p99": self.percentile(99),
            "p999": self.percentile(99.9),
            "buckets": {format_float(bound): n for bound, n in self.buckets() if n},
        }
