"""
Observability in one place: what happens to requests and connections is
recorded cheaply on the hot path and read at scrape or poll time.

- :mod:`framedclient.metrics.histogram`: :class:`LatencyHistogram` and its
  fixed bucket bounds;
- :mod:`framedclient.metrics.recorder`: :class:`MetricsRecorder`, the one
  interface the layers record through, and :class:`Metrics`, its
  always-on implementation with its tree of per-connection children;
- :mod:`framedclient.metrics.prometheus`: the sample types, the
  :class:`PrometheusCollector` and :func:`prometheus_text`.

Import the names from here; the modules are how the code is arranged, not
a second API.  Nothing in this package imports Twisted or the layers that
record into it.
"""

from framedclient.metrics.histogram import LATENCY_BUCKET_BOUNDS, LatencyHistogram
from framedclient.metrics.prometheus import (
    PROMETHEUS_BUCKETS,
    PROMETHEUS_CONTENT_TYPE,
    CounterSample,
    GaugeSample,
    HistogramSample,
    PrometheusCollector,
    Sample,
    prometheus_text,
)
from framedclient.metrics.recorder import (
    CONNECTION_EVENTS,
    OUTCOMES,
    Metrics,
    MetricsRecorder,
)

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
