"""
In-process metrics: request outcomes, latency histograms, dropped replies,
connection events, retries and bytes, recorded through one small interface
and read as a JSON-able snapshot.

Design: record cheaply, format at read time
-------------------------------------------

The protocol, pool and client layers call a :class:`MetricsRecorder` on
their hot paths (every reply, every failure), so recording is plain
arithmetic on ints and lists that already exist: a dictionary increment per
outcome, a :func:`bisect.bisect_left` into a fixed tuple of bucket bounds
per latency (:class:`~framedclient.metrics.histogram.LatencyHistogram`).
No lock (everything runs on the reactor thread), no object built per
request, no string formatting, no call into a metrics library.  The
Prometheus exposition (:mod:`framedclient.metrics.prometheus`) reads these
numbers at scrape time, and :meth:`Metrics.snapshot` reads the same ones,
so ``/metrics`` and ``/debug/state`` never disagree.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from framedclient.errors import OUTCOMES
from framedclient.metrics.histogram import LATENCY_BUCKET_BOUNDS, LatencyHistogram

__all__ = [
    "CONNECTION_EVENTS",
    "OUTCOMES",
    "Metrics",
    "MetricsRecorder",
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
    or register with Prometheus through
    :class:`~framedclient.metrics.prometheus.PrometheusCollector`) always
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
        # LatencyHistogram.record, written out: this runs once per reply,
        # and a method call would cost more than the recording itself.  It
        # writes the histogram's own fields, which is why both live in this
        # package and change together.  The "ok" count is the histogram's
        # count (see outcomes).
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
    def ok_histogram(self) -> LatencyHistogram:
        """
        The histogram :meth:`record_ok` records into, this object's own
        (its count is the ``ok`` outcome): a connection's reply path, in
        compiled mode a native class, records each reply's latency into it
        with one direct call instead of an interpreted ``record_ok`` (see
        :mod:`framedclient.datapath`).
        """
        return self._latency

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
