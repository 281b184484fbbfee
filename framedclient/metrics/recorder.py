"""
In-process metrics: request outcomes, latency histograms, dropped replies,
connection events, retries and bytes; exposed as a JSON-able snapshot and,
optionally, in the Prometheus text format.

Design: record cheaply, format at read time
-------------------------------------------

The protocol, pool and client layers call a :class:`MetricsRecorder` on
their hot paths (every reply, every failure), so recording is plain
arithmetic on ints and lists that already exist: a dictionary increment per
outcome, a :func:`bisect.bisect_left` into a fixed tuple of bucket bounds
per latency.  No lock (everything runs on the reactor thread), no object
built per request, no string formatting, no call into a metrics library.

Prometheus is deliberately *not* on that path.  We do not keep
``prometheus_client`` ``Counter``/``Histogram`` objects up to date per
request (each update takes a lock and walks label dictionaries); instead,
at scrape time, :class:`PrometheusCollector` reads the numbers this module
already keeps and yields metric families built from them.  A scrape every
15 s costs a few hundred microseconds; a request costs nothing extra
whether or not anyone scrapes.  The same numbers feed
:meth:`Metrics.snapshot`, so ``/metrics`` and ``/debug/state`` never
disagree.

``prometheus_client`` is optional (the ``metrics`` extra).  When it is
installed, :func:`prometheus_text` renders through it; when it is not, a
small built-in writer produces the same text format (version 0.0.4), so
``/metrics`` works on a bare install.

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
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from framedclient.errors import OUTCOMES

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = [
    "CONNECTION_EVENTS",
    "LATENCY_BUCKET_BOUNDS",
    "OUTCOMES",
    "PROMETHEUS_BUCKETS",
    "PROMETHEUS_CONTENT_TYPE",
    "CounterSample",
    "GaugeSample",
    "HistogramSample",
    "LatencyHistogram",
    "Metrics",
    "MetricsRecorder",
    "PrometheusCollector",
    "Sample",
    "prometheus_text",
]

CONNECTION_EVENTS: tuple[str, ...] = (
    "connect_attempt",
    "connected",
    "connect_failed",
    "lost",
    "reconnect",
    "protocol_error",
    "black_hole",
    "recycled",
)
"""The connection events :meth:`MetricsRecorder.record_connection_event`
accepts."""

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of what :func:`prometheus_text` returns."""


class MetricsRecorder(Protocol):
    """
    The one interface through which the protocol, pool and client layers
    report what happens.  :class:`Metrics` implements it; a layer should
    accept any recorder so tests can pass their own.

    Every method is called on the reactor thread and must be cheap.
    """

    def record_ok(self, latency: float) -> None:
        """
        A request got its reply.

        :param latency: seconds from sending the request to matching its
            reply.
        """

    def record_failure(self, outcome: str, latency: float | None) -> None:
        """
        A request ended without a reply.

        :param outcome: one of :data:`~framedclient.errors.OUTCOMES` other
            than ``"ok"``.
        :param latency: seconds from sending the request to its failure, or
            ``None`` if it was never sent (shed, unavailable, closed).
        """

    def record_dropped_reply(self, late: bool) -> None:
        """
        A reply arrived that no pending request was waiting for.

        :param late: ``True`` if it answers a request that already timed
            out or was cancelled (the server is slow); ``False`` if its ID
            is unknown or was already answered (the server or codec is
            buggy).
        """

    def record_connection_event(self, event: str) -> None:
        """
        Something happened to a connection.

        :param event: one of :data:`CONNECTION_EVENTS`.
        """

    def record_retry(self) -> None:
        """
        A request is being sent again (it was never sent the first time).
        """

    def add_bytes(self, received: int, sent: int) -> None:
        """
        Count bytes read from and written to the network.
        """


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

PROMETHEUS_BUCKETS: tuple[float, ...] = (
    *(
        float(f"{mantissa}e{exponent}")
        for exponent in range(-4, 2)
        for mantissa in ("1", "2.5", "5")
    ),
    100.0,
)
"""The bucket bounds exposed to Prometheus by default: 1, 2.5 and 5 per
decade from 100 µs to 100 s.  Each is one of
:data:`LATENCY_BUCKET_BOUNDS`, so the cumulative counts are exact."""

_BOUND_INDEX = {bound: index for index, bound in enumerate(LATENCY_BUCKET_BOUNDS)}


def _format_float(value: float) -> str:
    """
    Format a number the way the Prometheus text format spells it.
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
            "buckets": {_format_float(bound): n for bound, n in self.buckets() if n},
        }


class Metrics:
    """
    The always-on :class:`MetricsRecorder`: plain counters and two latency
    histograms, plus the live figures of any child :class:`Metrics`
    attached to it.

    ``latency`` holds successful requests only; ``failure_latency`` holds
    failed requests that were sent.  They are kept apart because failures
    distort the picture either way: timeouts all land exactly at the
    timeout value and would make p99 report the timeout instead of the
    server, while fast errors would make the server look quicker than it
    is.

    Children: a client gives each connection a :class:`Metrics` of its own
    (so the status page can show each connection's latency) and
    :meth:`attach`\\ es it to the client's one.  Recording into a child
    costs what recording anywhere costs: nothing is added up per request.
    Reading the parent adds its children's current figures to its own, so
    one long-lived object (the one you pass as ``FramedClient(metrics=...)``
    or register with Prometheus through :class:`PrometheusCollector`) always
    shows live totals.  :meth:`detach` folds a finished child's figures
    into the parent, so totals never go back (Prometheus counters must
    not).

    The attributes below are read-only views: without children they are the
    live objects, with children fresh sums built on each read.  Record only
    through the :class:`MetricsRecorder` methods.

    :ivar latency: :class:`LatencyHistogram` of successful requests.
    :ivar failure_latency: :class:`LatencyHistogram` of sent requests that
        failed.
    :ivar outcomes: requests by outcome; every key of
        :data:`~framedclient.errors.OUTCOMES` is present.
    :ivar dropped_late: replies to requests that had already timed out or
        been cancelled.
    :ivar dropped_unknown: replies with an unknown or already-answered ID.
    :ivar connection_events: counts by :data:`CONNECTION_EVENTS` key.
    :ivar retries: requests sent again.
    :ivar bytes_received: bytes read from the network.
    :ivar bytes_sent: bytes written to the network.
    """

    __slots__ = (
        "_bytes_received",
        "_bytes_sent",
        "_children",
        "_connection_events",
        "_dropped_late",
        "_dropped_unknown",
        "_failure_latency",
        "_latency",
        "_outcomes",
        "_retries",
    )

    def __init__(self) -> None:
        self._latency = LatencyHistogram()
        self._failure_latency = LatencyHistogram()
        self._outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self._dropped_late = 0
        self._dropped_unknown = 0
        self._connection_events: dict[str, int] = dict.fromkeys(CONNECTION_EVENTS, 0)
        self._retries = 0
        self._bytes_received = 0
        self._bytes_sent = 0
        # An insertion-ordered set: attach and detach are O(1).
        self._children: dict[Metrics, None] = {}

    def __repr__(self) -> str:
        outcomes = self.outcomes
        return (
            f"<Metrics ok={outcomes['ok']} "
            f"failed={sum(outcomes.values()) - outcomes['ok']} "
            f"p50={self.latency.percentile(50):.6g}>"
        )

    # -- recording: plain arithmetic on this object's own numbers ---------

    def record_ok(self, latency: float) -> None:
        """See :meth:`MetricsRecorder.record_ok`."""
        # LatencyHistogram.record, written out: this runs once per reply.
        # The "ok" count is the histogram's count (see outcomes).
        h = self._latency
        if not latency >= 0.0:
            latency = 0.0
        h._counts[bisect_left(LATENCY_BUCKET_BOUNDS, latency)] += 1
        h._count += 1
        h._sum += latency
        if latency > h._max:
            h._max = latency
        if latency < h._min:
            h._min = latency

    def record_failure(self, outcome: str, latency: float | None) -> None:
        """
        See :meth:`MetricsRecorder.record_failure`.

        :param outcome: an error's
            :attr:`~framedclient.errors.FramedClientError.outcome` (or
            :func:`~framedclient.errors.outcome_of` for any exception).
        :raises ValueError: if ``outcome`` is ``"ok"`` or not in
            :data:`~framedclient.errors.OUTCOMES`: a typo would otherwise
            vanish into a counter nobody reads.
        """
        outcomes = self._outcomes
        if outcome == "ok" or outcome not in outcomes:
            raise ValueError(
                f"unknown failure outcome {outcome!r}; expected one of "
                f"{', '.join(OUTCOMES[1:])} (use record_ok for successes)"
            )
        outcomes[outcome] += 1
        if latency is not None:
            self._failure_latency.record(latency)

    def record_dropped_reply(self, late: bool) -> None:
        """See :meth:`MetricsRecorder.record_dropped_reply`."""
        if late:
            self._dropped_late += 1
        else:
            self._dropped_unknown += 1

    def record_connection_event(self, event: str) -> None:
        """
        See :meth:`MetricsRecorder.record_connection_event`.

        :raises ValueError: if ``event`` is not in :data:`CONNECTION_EVENTS`.
        """
        events = self._connection_events
        if event not in events:
            raise ValueError(
                f"unknown connection event {event!r}; expected one of "
                f"{', '.join(CONNECTION_EVENTS)}"
            )
        events[event] += 1

    def record_retry(self) -> None:
        """See :meth:`MetricsRecorder.record_retry`."""
        self._retries += 1

    def add_bytes(self, received: int, sent: int) -> None:
        """See :meth:`MetricsRecorder.add_bytes`."""
        self._bytes_received += received
        self._bytes_sent += sent

    # -- children -----------------------------------------------------------

    @property
    def children(self) -> tuple[Metrics, ...]:
        """The attached children, in the order they were attached."""
        return tuple(self._children)

    def attach(self, child: Metrics) -> None:
        """
        Include ``child``'s live figures in every read of this object, until
        :meth:`detach`.  Attaching a child twice is a no-op.

        :raises ValueError: if ``child`` is this object or already includes
            it (the sums would never end).
        """
        if child is self or self in _descendants(child):
            raise ValueError(
                f"attaching {child!r} would make a cycle: it already includes "
                f"the metrics it is attached to"
            )
        self._children[child] = None

    def detach(self, child: Metrics) -> None:
        """
        Stop reading ``child`` live and add its figures (its own children's
        included) to this object's own, once: the totals stay where they
        were, and never go back.  Detaching a child that is not attached is
        a no-op, so a connection's end may be reported twice.
        """
        if child in self._children:
            del self._children[child]
            self._add(child)

    def move(self, child: Metrics, to: Metrics) -> None:
        """
        Read ``child`` through ``to`` (one of this object's descendants)
        instead of directly, figures and all: nothing is folded, so nothing
        is counted twice.  A no-op if ``child`` is not attached here.
        """
        if child in self._children:
            del self._children[child]
            to.attach(child)

    def merge(self, other: Metrics) -> None:
        """
        Add ``other``'s current figures (its children's included) to these,
        once.  ``other`` is unchanged.  To follow ``other`` live instead,
        :meth:`attach` it.
        """
        self._add(other)

    def _add(self, other: Metrics) -> None:
        self._latency.merge(other.latency)
        self._failure_latency.merge(other.failure_latency)
        outcomes = self._outcomes
        for outcome, count in other.outcomes.items():
            if outcome != "ok":  # counted by the latency merged above
                outcomes[outcome] += count
        self._dropped_late += other.dropped_late
        self._dropped_unknown += other.dropped_unknown
        events = self._connection_events
        for event, count in other.connection_events.items():
            events[event] += count
        self._retries += other.retries
        self._bytes_received += other.bytes_received
        self._bytes_sent += other.bytes_sent

    def totals(self) -> Metrics:
        """
        A detached copy of the current figures, children included: one
        consistent reading for a scrape or a snapshot, which later
        recording does not change.
        """
        total = Metrics()
        total._add(self)
        return total

    # -- reading: own figures plus the children's, at read time ------------

    def _histogram(self, own: LatencyHistogram, name: str) -> LatencyHistogram:
        # This object's histogram ``own``, plus the children's ``name``.
        if not self._children:
            return own
        total = LatencyHistogram()
        total.merge(own)
        for child in self._children:
            total.merge(getattr(child, name))
        return total

    def _counts(self, own: dict[str, int], name: str) -> dict[str, int]:
        # This object's counts ``own``, plus the children's ``name``.
        if not self._children:
            return own
        total = dict(own)
        for child in self._children:
            for key, count in getattr(child, name).items():
                total[key] += count
        return total

    @property
    def latency(self) -> LatencyHistogram:
        """:class:`LatencyHistogram` of successful requests."""
        return self._histogram(self._latency, "latency")

    @property
    def failure_latency(self) -> LatencyHistogram:
        """:class:`LatencyHistogram` of sent requests that failed."""
        return self._histogram(self._failure_latency, "failure_latency")

    @property
    def outcomes(self) -> dict[str, int]:
        """
        Requests by outcome; every key of
        :data:`~framedclient.errors.OUTCOMES` is present.
        """
        own = self._outcomes
        # Each success is one latency observation: counting it twice on the
        # hot path would cost a dictionary update per reply.
        own["ok"] = self._latency._count
        return self._counts(own, "outcomes")

    @property
    def connection_events(self) -> dict[str, int]:
        """Counts by :data:`CONNECTION_EVENTS` key."""
        return self._counts(self._connection_events, "connection_events")

    @property
    def dropped_late(self) -> int:
        """Replies to requests that had already timed out or been cancelled."""
        return self._dropped_late + sum(c.dropped_late for c in self._children)

    @property
    def dropped_unknown(self) -> int:
        """Replies with an unknown or already-answered ID."""
        return self._dropped_unknown + sum(c.dropped_unknown for c in self._children)

    @property
    def retries(self) -> int:
        """Requests sent again."""
        return self._retries + sum(c.retries for c in self._children)

    @property
    def bytes_received(self) -> int:
        """Bytes read from the network."""
        return self._bytes_received + sum(c.bytes_received for c in self._children)

    @property
    def bytes_sent(self) -> int:
        """Bytes written to the network."""
        return self._bytes_sent + sum(c.bytes_sent for c in self._children)

    def snapshot(self) -> dict[str, Any]:
        """
        A JSON-serialisable copy of every number, children included, for
        ``/debug/state``, ``stats()`` and logs::

            {"requests": {outcome: count, ...},   # every outcome, zeros too
             "latency": {...},                    # LatencyHistogram.snapshot
             "failure_latency": {...},
             "dropped_replies": {"late": n, "unknown": n},
             "connections": {event: count, ...},  # every event, zeros too
             "retries": n,
             "bytes": {"received": n, "sent": n}}
        """
        m = self.totals() if self._children else self
        return {
            "requests": dict(m.outcomes),
            "latency": m.latency.snapshot(),
            "failure_latency": m.failure_latency.snapshot(),
            "dropped_replies": {
                "late": m.dropped_late,
                "unknown": m.dropped_unknown,
            },
            "connections": dict(m.connection_events),
            "retries": m.retries,
            "bytes": {"received": m.bytes_received, "sent": m.bytes_sent},
        }

    def export(self) -> dict[str, Any]:
        """
        Every number (children included), losslessly and JSON-able, for
        another process to :meth:`from_export` and :meth:`merge`: how the
        ``--workers`` of ``twist framedclient`` add up their figures.
        """
        m = self.totals() if self._children else self
        return {
            "latency": m._latency.export(),
            "failure_latency": m._failure_latency.export(),
            "outcomes": dict(m.outcomes),
            "dropped_late": m._dropped_late,
            "dropped_unknown": m._dropped_unknown,
            "connection_events": dict(m._connection_events),
            "retries": m._retries,
            "bytes_received": m._bytes_received,
            "bytes_sent": m._bytes_sent,
        }

    @classmethod
    def from_export(cls, data: Mapping[str, Any]) -> Metrics:
        """
        A detached :class:`Metrics` holding the figures :meth:`export`
        described; outcomes and events this version does not know are
        left out.

        :raises ValueError: if the histograms' bucket layout differs.
        :raises KeyError: if a field is missing.
        """
        metrics = cls()
        metrics._latency = LatencyHistogram.from_export(data["latency"])
        metrics._failure_latency = LatencyHistogram.from_export(data["failure_latency"])
        for outcome, count in data["outcomes"].items():
            if outcome in metrics._outcomes and outcome != "ok":
                metrics._outcomes[outcome] = int(count)
        for event, count in data["connection_events"].items():
            if event in metrics._connection_events:
                metrics._connection_events[event] = int(count)
        metrics._dropped_late = int(data["dropped_late"])
        metrics._dropped_unknown = int(data["dropped_unknown"])
        metrics._retries = int(data["retries"])
        metrics._bytes_received = int(data["bytes_received"])
        metrics._bytes_sent = int(data["bytes_sent"])
        return metrics


def _descendants(metrics: Metrics) -> Iterator[Metrics]:
    """Every Metrics ``metrics`` reads live, at any depth."""
    for child in metrics._children:
        yield child
        yield from _descendants(child)


if TYPE_CHECKING:
    # Let mypy prove that Metrics satisfies the interface the layers use.
    _recorder_check: MetricsRecorder = Metrics()


class GaugeSample(NamedTuple):
    """
    One gauge value for the Prometheus exposition, supplied by the layer
    that owns it (in-flight requests, queued waiters, connections by
    state).

    Several samples with the same ``name`` form one metric family and must
    have the same ``help`` and the same label names, e.g.::

        GaugeSample("framedclient_connections", "Connections by state.",
                    3, {"state": "ready"})
        GaugeSample("framedclient_connections", "Connections by state.",
                    1, {"state": "backing_off"})

    :ivar name: the metric name (``[a-zA-Z_:][a-zA-Z0-9_:]*``).
    :ivar help: one line saying what the value means.
    :ivar value: the current value.
    :ivar labels: label names to values; ``None`` for none.
    """

    name: str
    help: str
    value: float
    labels: Mapping[str, str] | None = None


class CounterSample(NamedTuple):
    """
    One counter value supplied by the layer that owns it (the HTTP
    gateway's responses by status code, for instance); pass it where a
    :class:`GaugeSample` goes and it is exposed with ``# TYPE ... counter``.

    The rules of :class:`GaugeSample` apply, and the name must end with
    ``_total`` (Prometheus's naming rule for counters, which ``promtool
    check metrics`` enforces).  The value must never go down.

    :ivar name: the metric name, ending with ``_total``.
    :ivar help: one line saying what is counted.
    :ivar value: the current count.
    :ivar labels: label names to values; ``None`` for none.
    """

    name: str
    help: str
    value: float
    labels: Mapping[str, str] | None = None


class HistogramSample(NamedTuple):
    """
    One latency histogram supplied by the layer that owns it (a client's
    per-upstream latency), exposed with ``# TYPE ... histogram`` in the
    collector's buckets; pass it where a :class:`GaugeSample` goes.

    The rules of :class:`GaugeSample` apply; ``le`` is not a label of yours.

    :ivar name: the metric name (``..._seconds``).
    :ivar help: one line saying what is measured.
    :ivar value: the histogram, read at scrape time.
    :ivar labels: label names to values; ``None`` for none.
    """

    name: str
    help: str
    value: LatencyHistogram
    labels: Mapping[str, str] | None = None


#: What a gauges callable may hand the collector.
Sample = GaugeSample | CounterSample | HistogramSample

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

_REQUESTS = "framedclient_requests_total"
_LATENCY = "framedclient_request_latency_seconds"
_DROPPED = "framedclient_dropped_replies_total"
_CONNECTION_EVENTS = "framedclient_connection_events_total"
_RETRIES = "framedclient_retries_total"
_BYTES_RECEIVED = "framedclient_received_bytes_total"
_BYTES_SENT = "framedclient_sent_bytes_total"
_BUILTIN_NAMES = frozenset(
    {
        _REQUESTS,
        _LATENCY,
        _DROPPED,
        _CONNECTION_EVENTS,
        _RETRIES,
        _BYTES_RECEIVED,
        _BYTES_SENT,
    }
)
# Label names used by the built-in families, which constant labels must not
# shadow.
_BUILTIN_LABELS = frozenset({"outcome", "kind", "event", "le"})


class _Family(NamedTuple):
    """
    One metric family, independent of how it is rendered.

    ``series`` holds ``(label values, value)`` for counters and gauges and
    ``(label values, (cumulative buckets, sum))`` for histograms, where the
    cumulative buckets are ``(le, count)`` pairs ending with ``"+Inf"``.
    """

    name: str
    kind: str
    help: str
    label_names: tuple[str, ...]
    series: list[tuple[tuple[str, ...], Any]]


def _check_label_name(name: str) -> None:
    if not _LABEL_NAME.match(name) or name.startswith("__"):
        raise ValueError(
            f"invalid Prometheus label name {name!r}: must match "
            f"[a-zA-Z_][a-zA-Z0-9_]* and not start with '__'"
        )


class PrometheusCollector:
    """
    A ``prometheus_client`` collector that reads a :class:`Metrics` at
    scrape time.

    Register it with any ``prometheus_client.CollectorRegistry`` (the
    global ``REGISTRY`` of an application that already exports its own
    metrics, for instance); :func:`prometheus_text` uses one on a private
    registry.  Only :meth:`collect` needs ``prometheus_client``.

    :param metrics: the numbers to expose, read afresh at every scrape
        (children included), so pass the long-lived object, such as
        ``client.metrics``, not a copy.
    :param gauges: called at every scrape for the current gauge values (and
        counter values, as :class:`CounterSample`), so they are read when
        Prometheus asks, not when they change.
    :param labels: constant labels added to every sample (for example
        ``{"target": "db1"}`` when one process runs several clients).
    :param buckets: the latency bucket bounds to expose, a strictly
        increasing subset of :data:`LATENCY_BUCKET_BOUNDS` (so the
        cumulative counts are exact, not estimates).
    :raises ValueError: if a label name or bucket bound is invalid.
    """

    def __init__(
        self,
        metrics: Metrics,
        gauges: Callable[[], Iterable[Sample]] | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        buckets: Sequence[float] = PROMETHEUS_BUCKETS,
    ) -> None:
        const_labels = dict(labels or {})
        for name in const_labels:
            _check_label_name(name)
            if name in _BUILTIN_LABELS:
                raise ValueError(
                    f"constant label {name!r} clashes with a label of the "
                    f"built-in metrics ({', '.join(sorted(_BUILTIN_LABELS))})"
                )
        indexes: list[int] = []
        for bound in buckets:
            index = _BOUND_INDEX.get(bound)
            if index is None:
                raise ValueError(
                    f"bucket bound {bound!r} is not a LATENCY_BUCKET_BOUNDS "
                    f"value; exposing it would misstate the cumulative counts"
                )
            if indexes and index <= indexes[-1]:
                raise ValueError(
                    f"bucket bounds must be strictly increasing, got {bound!r} "
                    f"after {LATENCY_BUCKET_BOUNDS[indexes[-1]]!r}"
                )
            indexes.append(index)
        self._metrics = metrics
        self._gauges = gauges
        self._label_names = tuple(const_labels)
        self._label_values = tuple(const_labels.values())
        self._bucket_indexes = indexes
        self._les = [_format_float(LATENCY_BUCKET_BOUNDS[i]) for i in indexes]

    def _families(self) -> list[_Family]:
        """
        Read the current numbers into renderer-independent families.

        :raises ValueError: if a gauge sample is invalid or clashes with
            another.
        """
        # One reading of every number (children added up once), so the
        # families of one scrape agree with each other.
        metrics = self._metrics.totals()
        names = self._label_names
        values = self._label_values

        def counter(
            name: str, help: str, label: str | None, counts: Mapping[str, int]
        ) -> _Family:
            label_names = names if label is None else (label, *names)
            series: list[tuple[tuple[str, ...], Any]] = [
                (values if label is None else (key, *values), float(count))
                for key, count in counts.items()
            ]
            return _Family(name, "counter", help, label_names, series)

        families = [
            counter(
                _REQUESTS,
                "Requests that ended, by outcome.",
                "outcome",
                metrics.outcomes,
            ),
            _Family(
                _LATENCY,
                "histogram",
                "Seconds from sending a request to its end; outcome=ok for "
                "replies, outcome=error for sent requests that failed.",
                ("outcome", *names),
                [
                    (("ok", *values), self._histogram(metrics.latency)),
                    (("error", *values), self._histogram(metrics.failure_latency)),
                ],
            ),
            counter(
                _DROPPED,
                "Replies no request was waiting for: kind=late answers a "
                "timed-out or cancelled request, kind=unknown has an unknown "
                "or already-answered ID.",
                "kind",
                {"late": metrics.dropped_late, "unknown": metrics.dropped_unknown},
            ),
            counter(
                _CONNECTION_EVENTS,
                "Connection attempts, successes, failures, losses and reconnects.",
                "event",
                metrics.connection_events,
            ),
            counter(
                _RETRIES,
                "Requests tried again after an attempt that failed before they "
                "were sent.",
                None,
                {"": metrics.retries},
            ),
            counter(
                _BYTES_RECEIVED,
                "Bytes read from the network.",
                None,
                {"": metrics.bytes_received},
            ),
            counter(
                _BYTES_SENT,
                "Bytes written to the network.",
                None,
                {"": metrics.bytes_sent},
            ),
        ]
        if self._gauges is not None:
            families.extend(self._gauge_families(self._gauges()))
        return families

    def _histogram(
        self, histogram: LatencyHistogram
    ) -> tuple[list[tuple[str, float]], float]:
        counts = histogram._counts
        cumulative = 0
        previous = 0
        buckets: list[tuple[str, float]] = []
        for le, index in zip(self._les, self._bucket_indexes, strict=True):
            cumulative += sum(counts[previous : index + 1])
            previous = index + 1
            buckets.append((le, float(cumulative)))
        buckets.append(("+Inf", float(histogram.count)))
        return buckets, histogram.sum

    def _gauge_families(
        self, gauges: Iterable[Sample]
    ) -> list[_Family]:
        by_name: dict[str, _Family] = {}
        seen: set[tuple[str, tuple[str, ...]]] = set()
        for sample in gauges:
            name, help, value, sample_labels = sample
            if not _METRIC_NAME.match(name):
                raise ValueError(
                    f"invalid Prometheus metric name {name!r}: must match "
                    f"[a-zA-Z_:][a-zA-Z0-9_:]*"
                )
            if name in _BUILTIN_NAMES:
                raise ValueError(f"gauge {name!r} clashes with a built-in metric")
            if isinstance(sample, CounterSample):
                kind = "counter"
            elif isinstance(sample, HistogramSample):
                kind = "histogram"
            else:
                kind = "gauge"
            if kind == "counter" and not name.endswith("_total"):
                raise ValueError(
                    f"counter {name!r} must end with _total (Prometheus naming)"
                )
            own = dict(sample_labels or {})
            for label in own:
                _check_label_name(label)
                if kind == "histogram" and label == "le":
                    raise ValueError(f"histogram {name!r} may not have an 'le' label")
                if label in self._label_names:
                    raise ValueError(
                        f"gauge {name!r} label {label!r} clashes with a constant label"
                    )
            label_names = (*own, *self._label_names)
            label_values = (*own.values(), *self._label_values)
            family = by_name.get(name)
            if family is None:
                family = _Family(name, kind, help, label_names, [])
                by_name[name] = family
            elif (
                family.label_names != label_names
                or family.help != help
                or family.kind != kind
            ):
                raise ValueError(
                    f"gauge {name!r}: every sample of one gauge must have the "
                    f"same help and label names, and one type"
                )
            key = (name, label_values)
            if key in seen:
                raise ValueError(f"gauge {name!r} has two samples with labels {own!r}")
            seen.add(key)
            if isinstance(value, LatencyHistogram):
                family.series.append((label_values, self._histogram(value)))
            else:
                family.series.append((label_values, float(value)))
        return list(by_name.values())

    def collect(self) -> Iterator[Metric]:
        """
        Yield ``prometheus_client`` metric families for the current
        numbers; the ``prometheus_client`` ``Collector`` interface.

        :raises ImportError: if ``prometheus_client`` is not installed.
        """
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        for family in self._families():
            metric: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
            if family.kind == "counter":
                metric = CounterMetricFamily(
                    family.name, family.help, labels=family.label_names
                )
                for label_values, value in family.series:
                    metric.add_metric(label_values, value)
            elif family.kind == "gauge":
                metric = GaugeMetricFamily(
                    family.name, family.help, labels=family.label_names
                )
                for label_values, value in family.series:
                    metric.add_metric(label_values, value)
            else:
                metric = HistogramMetricFamily(
                    family.name, family.help, labels=family.label_names
                )
                for label_values, (buckets, sum_value) in family.series:
                    metric.add_metric(label_values, buckets, sum_value)
            yield metric


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _sample_line(
    name: str, label_names: Sequence[str], label_values: Sequence[str], value: float
) -> str:
    if label_names:
        # Sorted by name, as prometheus_client writes them, so both
        # renderers produce the same series text.
        pairs = sorted(zip(label_names, label_values, strict=True))
        labels = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in pairs)
        return f"{name}{{{labels}}} {_format_float(value)}\n"
    return f"{name} {_format_float(value)}\n"


def _render_text(families: Iterable[_Family]) -> bytes:
    """
    Write families in the Prometheus text format, version 0.0.4, without
    ``prometheus_client``.
    """
    lines: list[str] = []
    for family in families:
        help = family.help.replace("\\", r"\\").replace("\n", r"\n")
        lines.append(f"# HELP {family.name} {help}\n")
        lines.append(f"# TYPE {family.name} {family.kind}\n")
        names = family.label_names
        for label_values, value in family.series:
            if family.kind != "histogram":
                lines.append(_sample_line(family.name, names, label_values, value))
                continue
            buckets, sum_value = value
            bucket_names = (*names, "le")
            for le, count in buckets:
                lines.append(
                    _sample_line(
                        f"{family.name}_bucket",
                        bucket_names,
                        (*label_values, le),
                        count,
                    )
                )
            lines.append(
                _sample_line(
                    f"{family.name}_count", names, label_values, buckets[-1][1]
                )
            )
            lines.append(
                _sample_line(f"{family.name}_sum", names, label_values, sum_value)
            )
    return "".join(lines).encode("utf-8")


def prometheus_text(
    metrics: Metrics,
    gauges: Iterable[Sample] = (),
    *,
    labels: Mapping[str, str] | None = None,
    buckets: Sequence[float] = PROMETHEUS_BUCKETS,
    use_prometheus_client: bool | None = None,
) -> bytes:
    """
    Render ``metrics`` and ``gauges`` in the Prometheus text format, for a
    ``/metrics`` endpoint (serve it with :data:`PROMETHEUS_CONTENT_TYPE`).

    Exposed metrics:

    - ``framedclient_requests_total{outcome}`` (counter, every outcome of
      :data:`~framedclient.errors.OUTCOMES`);
    - ``framedclient_request_latency_seconds{outcome="ok"|"error"}``
      (histogram with the ``buckets`` bounds and ``+Inf``; the label is
      ``outcome``, like on ``framedclient_requests_total``);
    - ``framedclient_dropped_replies_total{kind="late"|"unknown"}``;
    - ``framedclient_connection_events_total{event}``;
    - ``framedclient_retries_total``, ``framedclient_received_bytes_total``,
      ``framedclient_sent_bytes_total`` (Prometheus naming: the unit before
      ``_total``);
    - every :class:`GaugeSample` (and :class:`CounterSample`) in ``gauges``.

    :param labels: constant labels added to every sample.
    :param buckets: see :class:`PrometheusCollector`.
    :param use_prometheus_client: ``None`` (the default) renders through
        ``prometheus_client`` when it is installed and with the built-in
        writer otherwise; ``True`` insists on ``prometheus_client``;
        ``False`` always uses the built-in writer.
    :raises ValueError: if a name, label or bound is invalid.
    :raises ImportError: if ``use_prometheus_client`` is ``True`` and
        ``prometheus_client`` is not installed.
    """
    samples = list(gauges)
    collector = PrometheusCollector(
        metrics, lambda: samples, labels=labels, buckets=buckets
    )
    if use_prometheus_client is None:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            use_prometheus_client = False
        else:
            use_prometheus_client = True
    if not use_prometheus_client:
        return _render_text(collector._families())

    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
