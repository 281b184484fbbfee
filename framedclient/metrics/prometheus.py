"""
The Prometheus exposition of a :class:`~framedclient.metrics.recorder.Metrics`:
the sample types a layer hands in for its own gauges and counters,
:class:`PrometheusCollector` for a ``prometheus_client`` registry, and
:func:`prometheus_text` for a ``/metrics`` endpoint.

Prometheus is deliberately *not* on the recording path.  We do not keep
``prometheus_client`` ``Counter``/``Histogram`` objects up to date per
request (each update takes a lock and walks label dictionaries); instead,
at scrape time, :class:`PrometheusCollector` reads the numbers
:class:`~framedclient.metrics.recorder.Metrics` already keeps and yields
metric families built from them.  A scrape every 15 s costs a few hundred
microseconds; a request costs nothing extra whether or not anyone scrapes.

``prometheus_client`` is optional (the ``metrics`` extra).  When it is
installed, :func:`prometheus_text` renders through it; when it is not, a
small built-in writer produces the same text format (version 0.0.4), so
``/metrics`` works on a bare install.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from framedclient.metrics.histogram import (
    BOUND_INDEX,
    LATENCY_BUCKET_BOUNDS,
    LatencyHistogram,
    format_float,
)
from framedclient.metrics.recorder import Metrics

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = [
    "PROMETHEUS_BUCKETS",
    "PROMETHEUS_CONTENT_TYPE",
    "CounterSample",
    "GaugeSample",
    "HistogramSample",
    "PrometheusCollector",
    "Sample",
    "prometheus_text",
]

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of what :func:`prometheus_text` returns."""

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
:data:`~framedclient.metrics.histogram.LATENCY_BUCKET_BOUNDS`, so the
cumulative counts are exact."""


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


def _check_metrics(metrics: object, call: str, example: str) -> None:
    """
    Refuse anything but a :class:`~framedclient.metrics.recorder.Metrics`
    where one is expected, naming what to pass instead, so a mistake shows
    at the call rather than as an ``AttributeError`` at the first scrape.
    """
    if isinstance(metrics, Metrics):
        return
    got = type(metrics).__name__
    if isinstance(getattr(metrics, "metrics", None), Metrics):
        # A FramedClient (or a protocol client, or anything else that
        # keeps its figures in .metrics): say what to write instead.
        raise TypeError(
            f"{call}(metrics=...) takes a framedclient.metrics.Metrics, got "
            f"{got}: pass client.metrics instead, as in {example}, where the "
            f"second argument adds the client's in-flight, queue and "
            f"connection gauges"
        )
    raise TypeError(
        f"{call}(metrics=...) takes a framedclient.metrics.Metrics (such as "
        f"client.metrics), got {got}"
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
        increasing subset of
        :data:`~framedclient.metrics.histogram.LATENCY_BUCKET_BOUNDS` (so the
        cumulative counts are exact, not estimates).
    :raises TypeError: if ``metrics`` is not a
        :class:`~framedclient.metrics.recorder.Metrics` (a
        ``FramedClient`` is refused with the fix: pass ``client.metrics``,
        and ``client.gauges``), or ``gauges`` is not callable.
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
        _check_metrics(
            metrics,
            "PrometheusCollector",
            "PrometheusCollector(client.metrics, client.gauges)",
        )
        if gauges is not None and not callable(gauges):
            raise TypeError(
                f"PrometheusCollector(gauges=...) takes a callable it calls at "
                f"each scrape, such as client.gauges (not client.gauges()), got "
                f"{type(gauges).__name__}; for fixed samples pass lambda: samples"
            )
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
            index = BOUND_INDEX.get(bound)
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
        self._les = [format_float(LATENCY_BUCKET_BOUNDS[i]) for i in indexes]

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
        cumulative = histogram.cumulative_counts(self._bucket_indexes)
        buckets = [
            (le, float(count)) for le, count in zip(self._les, cumulative, strict=True)
        ]
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
        return f"{name}{{{labels}}} {format_float(value)}\n"
    return f"{name} {format_float(value)}\n"


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
    :raises TypeError: if ``metrics`` is not a
        :class:`~framedclient.metrics.recorder.Metrics` (a
        ``FramedClient`` is refused with the fix: pass ``client.metrics``,
        and ``client.gauges()``), or ``gauges`` is a callable rather than
        the samples it returns.
    :raises ValueError: if a name, label or bound is invalid.
    :raises ImportError: if ``use_prometheus_client`` is ``True`` and
        ``prometheus_client`` is not installed.
    """
    _check_metrics(
        metrics,
        "prometheus_text",
        "prometheus_text(client.metrics, client.gauges())",
    )
    if callable(gauges) and not isinstance(gauges, Iterable):
        raise TypeError(
            "prometheus_text(gauges=...) takes the samples themselves, got a "
            "callable: call it (client.gauges(), not client.gauges)"
        )
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
