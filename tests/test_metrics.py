"""
Tests for framedclient.metrics: recording, histograms, snapshots and the
Prometheus exposition (through prometheus_client and the built-in writer).
"""

from __future__ import annotations

import itertools
import json
import math
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import framedclient.metrics
from framedclient.metrics import (
    CONNECTION_EVENTS,
    LATENCY_BUCKET_BOUNDS,
    OUTCOMES,
    PROMETHEUS_BUCKETS,
    PROMETHEUS_CONTENT_TYPE,
    CounterSample,
    GaugeSample,
    HistogramSample,
    LatencyHistogram,
    Metrics,
    PrometheusCollector,
    prometheus_text,
)
from framedclient.metrics.histogram import BOUND_INDEX
from framedclient.testing import memory_client
from tests.test_sans_io import runtime_imports

# No bucket is wider than this fraction of its lower bound.
BUCKET_ERROR = 0.125

Render = Callable[..., bytes]


def histogram_of(values: list[float]) -> LatencyHistogram:
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    return histogram


def uniform_milliseconds() -> LatencyHistogram:
    return histogram_of([n / 1000 for n in range(1, 1001)])


class TestBucketLayout:
    def test_bounds_span_10_microseconds_to_120_seconds(self) -> None:
        assert LATENCY_BUCKET_BOUNDS[0] == 1e-5
        assert LATENCY_BUCKET_BOUNDS[-1] == 120.0

    def test_bounds_increase_and_no_bucket_is_wider_than_the_error_bound(
        self,
    ) -> None:
        pairs = itertools.pairwise(LATENCY_BUCKET_BOUNDS)
        ratios = [upper / lower for lower, upper in pairs]
        assert min(ratios) > 1.0
        assert max(ratios) <= 1 + BUCKET_ERROR + 1e-12

    def test_bounds_are_round_decimal_numbers(self) -> None:
        assert all(len(repr(bound)) <= 8 for bound in LATENCY_BUCKET_BOUNDS)

    def test_prometheus_buckets_are_histogram_bounds(self) -> None:
        assert set(PROMETHEUS_BUCKETS) <= set(LATENCY_BUCKET_BOUNDS)
        assert list(PROMETHEUS_BUCKETS) == sorted(PROMETHEUS_BUCKETS)


class TestLatencyHistogram:
    def test_empty_histogram_reports_zeros(self) -> None:
        histogram = LatencyHistogram()
        assert histogram.percentile(50) == 0.0
        assert (histogram.count, histogram.sum, histogram.min, histogram.max) == (
            0,
            0.0,
            0.0,
            0.0,
        )
        assert histogram.snapshot() == {
            "count": 0,
            "sum": 0.0,
            "min": 0.0,
            "max": 0.0,
            "mean": 0.0,
            "p50": 0.0,
            "p90": 0.0,
            "p99": 0.0,
            "p999": 0.0,
            "buckets": {},
        }

    def test_uniform_milliseconds_percentiles_are_within_bucket_error(
        self,
    ) -> None:
        histogram = uniform_milliseconds()
        for q, expected in [(50, 0.5), (90, 0.9), (99, 0.99), (99.9, 0.999)]:
            assert histogram.percentile(q) == pytest.approx(expected, rel=BUCKET_ERROR)

    def test_interpolation_is_exact_when_values_fill_buckets_evenly(self) -> None:
        # 451..500 ms fill the (0.45, 0.5] bucket, so the 50th percentile
        # lands on its upper bound.
        assert uniform_milliseconds().percentile(50) == 0.5

    def test_extreme_percentiles_are_the_observed_min_and_max(self) -> None:
        histogram = histogram_of([0.0123, 0.5, 3.21])
        assert histogram.percentile(0) == 0.0123
        assert histogram.percentile(100) == 3.21

    def test_single_value_is_every_percentile(self) -> None:
        histogram = histogram_of([0.0042] * 10)
        for q in (0, 1, 50, 99.9, 100):
            assert histogram.percentile(q) == 0.0042

    @given(
        values=st.lists(
            st.floats(min_value=1e-5, max_value=120.0), min_size=1, max_size=200
        ),
        q=st.floats(min_value=0.0, max_value=100.0),
    )
    def test_percentile_is_within_bucket_error_of_the_true_value(
        self, values: list[float], q: float
    ) -> None:
        ordered = sorted(values)
        rank = q / 100.0 * len(ordered)
        true_value = ordered[max(math.ceil(rank), 1) - 1]
        estimate = histogram_of(values).percentile(q)
        assert abs(estimate - true_value) <= BUCKET_ERROR * true_value * (1 + 1e-9)

    def test_log_normal_percentiles_are_within_bucket_error(self) -> None:
        source = random.Random(1)
        values = [source.lognormvariate(math.log(0.002), 1.0) for _ in range(20000)]
        histogram = histogram_of(values)
        ordered = sorted(values)
        for q in (50, 90, 99):
            true_value = ordered[math.ceil(q / 100 * len(ordered)) - 1]
            assert histogram.percentile(q) == pytest.approx(
                true_value, rel=BUCKET_ERROR
            )

    @pytest.mark.parametrize("q", [-1, 100.5, math.nan])
    def test_percentile_outside_0_to_100_is_rejected(self, q: float) -> None:
        with pytest.raises(ValueError, match="between 0 and 100"):
            LatencyHistogram().percentile(q)

    def test_count_sum_min_max(self) -> None:
        histogram = histogram_of([0.25, 0.5, 0.125])
        assert histogram.count == 3
        assert histogram.sum == 0.875
        assert histogram.min == 0.125
        assert histogram.max == 0.5

    def test_value_on_a_bound_counts_in_the_bucket_it_bounds(self) -> None:
        # Prometheus's "le" means less than or equal.
        histogram = histogram_of([0.001])
        assert (0.001, 1) in histogram.buckets()

    def test_value_above_120_seconds_goes_to_the_overflow_bucket(self) -> None:
        histogram = histogram_of([500.0])
        assert histogram.buckets()[-1] == (math.inf, 1)
        assert histogram.percentile(99) == 500.0
        assert histogram.snapshot()["buckets"] == {"+Inf": 1}

    def test_value_below_10_microseconds_goes_to_the_first_bucket(self) -> None:
        histogram = histogram_of([1e-7])
        assert histogram.buckets()[0] == (1e-5, 1)
        assert histogram.percentile(50) == 1e-7

    @pytest.mark.parametrize("bad", [-0.5, math.nan])
    def test_negative_or_nan_latency_is_recorded_as_zero(self, bad: float) -> None:
        histogram = histogram_of([bad, 0.5])
        assert histogram.count == 2
        assert histogram.sum == 0.5
        assert histogram.min == 0.0

    def test_buckets_are_every_bucket_not_cumulative(self) -> None:
        histogram = histogram_of([0.001, 0.001, 0.002])
        buckets = histogram.buckets()
        assert len(buckets) == len(LATENCY_BUCKET_BOUNDS) + 1
        assert [bound for bound, _ in buckets] == [*LATENCY_BUCKET_BOUNDS, math.inf]
        assert [(b, n) for b, n in buckets if n] == [(0.001, 2), (0.002, 1)]

    def test_snapshot_lists_non_empty_buckets_by_le_spelling(self) -> None:
        snapshot = histogram_of([0.001, 0.001, 0.0025]).snapshot()
        assert snapshot["buckets"] == {"0.001": 2, "0.0025": 1}
        assert snapshot["count"] == 3
        assert snapshot["mean"] == pytest.approx(0.0045 / 3)

    def test_merge_adds_observations(self) -> None:
        left = histogram_of([0.001, 0.5])
        right = histogram_of([0.0001, 2.0, 0.5])
        left.merge(right)
        assert left.count == 5
        assert left.sum == pytest.approx(3.0011)
        assert (left.min, left.max) == (0.0001, 2.0)
        assert left.buckets() == histogram_of([0.001, 0.5, 0.0001, 2.0, 0.5]).buckets()
        assert right.count == 3

    def test_merge_with_empty_histogram_keeps_min(self) -> None:
        histogram = histogram_of([0.3])
        histogram.merge(LatencyHistogram())
        assert histogram.min == 0.3

    @given(
        st.lists(st.floats(min_value=0, max_value=200), max_size=50),
        st.sets(st.sampled_from(LATENCY_BUCKET_BOUNDS), min_size=1, max_size=8),
    )
    def test_cumulative_counts_are_the_values_at_or_below_each_bound(
        self, values: list[float], bounds: set[float]
    ) -> None:
        ordered = sorted(bounds)
        histogram = histogram_of(values)
        counts = histogram.cumulative_counts([BOUND_INDEX[b] for b in ordered])
        assert counts == [sum(v <= b for v in values) for b in ordered]


class TestMetrics:
    def test_every_outcome_and_event_starts_at_zero(self) -> None:
        metrics = Metrics()
        assert metrics.outcomes == dict.fromkeys(OUTCOMES, 0)
        assert metrics.connection_events == dict.fromkeys(CONNECTION_EVENTS, 0)

    def test_outcomes_are_counted(self) -> None:
        metrics = Metrics()
        metrics.record_ok(0.01)
        metrics.record_ok(0.02)
        metrics.record_failure("timeout", 5.0)
        metrics.record_failure("overloaded", None)
        assert metrics.outcomes["ok"] == 2
        assert metrics.outcomes["timeout"] == 1
        assert metrics.outcomes["overloaded"] == 1
        assert sum(metrics.outcomes.values()) == 4

    def test_successes_and_failures_have_separate_latency(self) -> None:
        metrics = Metrics()
        metrics.record_ok(0.01)
        metrics.record_failure("timeout", 5.0)
        assert (metrics.latency.count, metrics.latency.max) == (1, 0.01)
        assert (metrics.failure_latency.count, metrics.failure_latency.max) == (
            1,
            5.0,
        )

    def test_failure_never_sent_records_no_latency(self) -> None:
        metrics = Metrics()
        metrics.record_failure("unavailable", None)
        assert metrics.failure_latency.count == 0
        assert metrics.latency.count == 0

    @pytest.mark.parametrize("outcome", ["ok", "timed_out", ""])
    def test_unknown_failure_outcome_is_rejected(self, outcome: str) -> None:
        metrics = Metrics()
        with pytest.raises(ValueError, match="unknown failure outcome"):
            metrics.record_failure(outcome, None)
        assert sum(metrics.outcomes.values()) == 0

    def test_dropped_replies_are_counted_by_kind(self) -> None:
        metrics = Metrics()
        metrics.record_dropped_reply(late=True)
        metrics.record_dropped_reply(late=True)
        metrics.record_dropped_reply(late=False)
        assert (metrics.dropped_late, metrics.dropped_unknown) == (2, 1)

    def test_connection_events_are_counted(self) -> None:
        metrics = Metrics()
        for event in ("connect_attempt", "connect_failed", "connect_attempt"):
            metrics.record_connection_event(event)
        assert metrics.connection_events["connect_attempt"] == 2
        assert metrics.connection_events["connect_failed"] == 1

    def test_unknown_connection_event_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="unknown connection event 'up'"):
            Metrics().record_connection_event("up")

    def test_retries_and_bytes_are_counted(self) -> None:
        metrics = Metrics()
        metrics.record_retry()
        metrics.add_bytes(received=100, sent=20)
        metrics.add_bytes(received=1, sent=2)
        assert (metrics.retries, metrics.bytes_received, metrics.bytes_sent) == (
            1,
            101,
            22,
        )

    def test_snapshot_has_the_documented_shape_and_is_strict_json(self) -> None:
        metrics = busy_metrics()
        snapshot = metrics.snapshot()
        assert set(snapshot) == {
            "requests",
            "latency",
            "failure_latency",
            "dropped_replies",
            "connections",
            "retries",
            "bytes",
        }
        assert snapshot["requests"]["ok"] == 1000
        assert snapshot["requests"]["timeout"] == 1
        assert snapshot["dropped_replies"] == {"late": 2, "unknown": 1}
        assert snapshot["connections"]["connected"] == 1
        assert snapshot["retries"] == 3
        assert snapshot["bytes"] == {"received": 4096, "sent": 1024}
        assert snapshot["latency"]["p50"] == pytest.approx(0.5, rel=BUCKET_ERROR)
        assert json.loads(json.dumps(snapshot, allow_nan=False)) == snapshot

    def test_snapshot_is_a_copy(self) -> None:
        metrics = Metrics()
        snapshot = metrics.snapshot()
        metrics.record_ok(0.1)
        assert snapshot["requests"]["ok"] == 0

    def test_merge_adds_every_counter(self) -> None:
        total = busy_metrics()
        total.merge(busy_metrics())
        assert total.outcomes["ok"] == 2000
        assert total.latency.count == 2000
        assert total.failure_latency.count == 2
        assert (total.dropped_late, total.dropped_unknown) == (4, 2)
        assert total.connection_events["connected"] == 2
        assert (total.retries, total.bytes_received, total.bytes_sent) == (
            6,
            8192,
            2048,
        )

    def test_has_no_instance_dict(self) -> None:
        assert not hasattr(Metrics(), "__dict__")
        assert not hasattr(LatencyHistogram(), "__dict__")


class TestChildren:
    def test_parent_reads_an_attached_childs_figures_live(self) -> None:
        parent, child = Metrics(), Metrics()
        parent.attach(child)
        child.record_ok(0.01)
        child.record_failure("timeout", 1.0)
        child.add_bytes(received=10, sent=5)
        assert parent.outcomes["ok"] == 1 and parent.outcomes["timeout"] == 1
        assert (parent.latency.count, parent.failure_latency.count) == (1, 1)
        assert (parent.bytes_received, parent.bytes_sent) == (10, 5)
        child.record_ok(0.02)
        assert parent.outcomes["ok"] == 2

    def test_parent_adds_its_own_figures_and_every_childs(self) -> None:
        parent = Metrics()
        parent.record_retry()
        for child in (busy_metrics(), busy_metrics()):
            parent.attach(child)
        assert parent.outcomes["ok"] == 2000
        assert parent.latency.count == 2000
        assert (parent.dropped_late, parent.dropped_unknown) == (4, 2)
        assert parent.connection_events["connected"] == 2
        assert parent.retries == 7

    def test_recording_into_a_child_leaves_the_parents_own_numbers_alone(
        self,
    ) -> None:
        # Nothing is added up per request: the sum is made when read.
        parent, child = Metrics(), Metrics()
        parent.attach(child)
        child.record_ok(0.01)
        parent.detach(child)
        assert parent.outcomes["ok"] == 1
        child.record_ok(0.01)
        assert parent.outcomes["ok"] == 1

    def test_detached_childs_figures_stay_in_the_totals(self) -> None:
        parent, child = Metrics(), busy_metrics()
        parent.attach(child)
        before = parent.snapshot()
        parent.detach(child)
        assert parent.snapshot() == before
        assert parent.children == ()

    def test_detaching_twice_counts_once(self) -> None:
        parent, child = Metrics(), busy_metrics()
        parent.attach(child)
        parent.detach(child)
        parent.detach(child)
        assert parent.outcomes["ok"] == 1000

    def test_attaching_twice_counts_once(self) -> None:
        parent, child = Metrics(), busy_metrics()
        parent.attach(child)
        parent.attach(child)
        assert parent.outcomes["ok"] == 1000

    def test_grandchildren_are_read_through_their_parent(self) -> None:
        top, middle, bottom = Metrics(), Metrics(), Metrics()
        top.attach(middle)
        middle.attach(bottom)
        bottom.record_ok(0.01)
        assert top.outcomes["ok"] == 1
        top.detach(middle)
        assert top.outcomes["ok"] == 1

    @pytest.mark.parametrize("depth", [0, 1, 2])
    def test_a_cycle_is_rejected(self, depth: int) -> None:
        chain = [Metrics() for _ in range(depth + 1)]
        for parent, child in itertools.pairwise(chain):
            parent.attach(child)
        with pytest.raises(ValueError, match="cycle"):
            chain[-1].attach(chain[0])

    def test_totals_is_a_copy_that_later_recording_does_not_change(self) -> None:
        parent, child = Metrics(), Metrics()
        parent.attach(child)
        child.record_ok(0.01)
        totals = parent.totals()
        child.record_ok(0.01)
        assert totals.outcomes["ok"] == 1 and totals.children == ()

    def test_snapshot_includes_children(self) -> None:
        parent, child = Metrics(), busy_metrics()
        parent.attach(child)
        assert parent.snapshot() == child.snapshot()

    def test_collector_reads_a_childs_figures_at_each_scrape(self) -> None:
        parent, child = Metrics(), Metrics()
        registry = CollectorRegistry()
        registry.register(PrometheusCollector(parent))
        parent.attach(child)
        child.record_ok(0.01)
        first = parse(generate_latest(registry))
        child.record_ok(0.01)
        parent.detach(child)
        second = parse(generate_latest(registry))
        ok = key("framedclient_requests_total", outcome="ok")
        assert (first[ok], second[ok]) == (1, 2)


def _result(d: Any) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, f"{d!r} has not fired"
    return box[0]


def _send(client: Any, server: Any, n: int) -> None:
    ds = [client.request(b"r%d" % i) for i in range(n)]
    server.flush()
    assert [_result(d) for d in ds] == [b"r%d" % i for i in range(n)]


class TestClientMetrics:
    """
    The figures a user embeds (their own ``metrics=`` object, a collector
    in their own registry) are live, through the in-memory client.
    """

    def test_the_metrics_object_passed_in_counts_every_request(self) -> None:
        mine = Metrics()
        client, server = memory_client(metrics=mine, pool_size=2)
        _send(client, server, 5)
        assert mine.outcomes["ok"] == 5
        assert mine.latency.count == 5
        assert client.metrics is mine

    def test_client_metrics_is_one_object_on_every_read(self) -> None:
        client, server = memory_client()
        assert client.metrics is client.metrics

    def test_collector_in_a_users_registry_sees_live_figures(self) -> None:
        client, server = memory_client(pool_size=2)
        registry = CollectorRegistry()
        registry.register(
            PrometheusCollector(client.metrics, labels={"upstream": "memory"})
        )
        ok = key("framedclient_requests_total", outcome="ok", upstream="memory")
        count = key(
            "framedclient_request_latency_seconds_count",
            outcome="ok",
            upstream="memory",
        )
        _send(client, server, 7)
        first = parse(generate_latest(registry))
        assert (first[ok], first[count]) == (7, 7)
        _send(client, server, 3)
        second = parse(generate_latest(registry))
        assert (second[ok], second[count]) == (10, 10)

    def test_totals_never_go_back_when_connections_end(self) -> None:
        client, server = memory_client(pool_size=2, request_timeout=30.0)
        _send(client, server, 6)
        sent = client.metrics.bytes_sent
        server.clock.advance(2)  # healthy connections reconnect at once
        assert server.drop_all() == 2
        server.flush()
        assert client.metrics.outcomes["ok"] == 6
        assert client.metrics.bytes_sent == sent
        _send(client, server, 2)
        assert client.metrics.outcomes["ok"] == 8

    def test_each_connection_keeps_its_own_latency_for_the_status_page(
        self,
    ) -> None:
        client, server = memory_client(pool_size=2)
        _send(client, server, 10)
        per_connection = [
            u["protocol"]["latency"]["count"] for u in client.debug_state()["upstreams"]
        ]
        assert sum(per_connection) == 10


def busy_metrics() -> Metrics:
    metrics = Metrics()
    for n in range(1, 1001):
        metrics.record_ok(n / 1000)
    metrics.record_failure("timeout", 5.0)
    metrics.record_failure("overloaded", None)
    metrics.record_dropped_reply(late=True)
    metrics.record_dropped_reply(late=True)
    metrics.record_dropped_reply(late=False)
    metrics.record_connection_event("connect_attempt")
    metrics.record_connection_event("connected")
    for _ in range(3):
        metrics.record_retry()
    metrics.add_bytes(received=4096, sent=1024)
    return metrics


def parse(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page, keyed by name and labels."""
    samples = {}
    for family in text_string_to_metric_families(text.decode("utf-8")):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def families(text: bytes) -> dict[str, str]:
    """Family name -> type."""
    return {
        family.name: family.type
        for family in text_string_to_metric_families(text.decode("utf-8"))
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (name, frozenset(labels.items()))


@pytest.fixture(params=["prometheus_client", "builtin"])
def render(request: pytest.FixtureRequest) -> Render:
    """prometheus_text through each of its two renderers."""
    use = request.param == "prometheus_client"

    def render(*args: Any, **kwargs: Any) -> bytes:
        return prometheus_text(*args, use_prometheus_client=use, **kwargs)

    return render


class TestPrometheusText:
    def test_request_counters_by_outcome(self, render: Render) -> None:
        samples = parse(render(busy_metrics()))
        assert samples[key("framedclient_requests_total", outcome="ok")] == 1000
        assert samples[key("framedclient_requests_total", outcome="timeout")] == 1
        for outcome in OUTCOMES:
            assert key("framedclient_requests_total", outcome=outcome) in samples

    def test_metric_types(self, render: Render) -> None:
        assert families(render(busy_metrics())) == {
            "framedclient_requests": "counter",
            "framedclient_request_latency_seconds": "histogram",
            "framedclient_dropped_replies": "counter",
            "framedclient_connection_events": "counter",
            "framedclient_retries": "counter",
            "framedclient_received_bytes": "counter",
            "framedclient_sent_bytes": "counter",
        }

    def test_help_and_type_lines_precede_each_family(self, render: Render) -> None:
        lines = render(busy_metrics()).decode().splitlines()
        assert lines[0].startswith("# HELP framedclient_requests_total ")
        assert lines[1] == "# TYPE framedclient_requests_total counter"
        assert "# TYPE framedclient_request_latency_seconds histogram" in lines

    @pytest.mark.parametrize("result", ["ok", "error"])
    def test_latency_buckets_are_cumulative_and_end_at_inf_equal_to_count(
        self, render: Render, result: str
    ) -> None:
        metrics = busy_metrics()
        samples = parse(render(metrics))
        name = "framedclient_request_latency_seconds"
        les = [repr(bound) for bound in PROMETHEUS_BUCKETS] + ["+Inf"]
        counts = [samples[key(f"{name}_bucket", le=le, outcome=result)] for le in les]
        assert counts == sorted(counts)
        histogram = metrics.latency if result == "ok" else metrics.failure_latency
        assert counts[-1] == histogram.count
        assert samples[key(f"{name}_count", outcome=result)] == histogram.count
        assert samples[key(f"{name}_sum", outcome=result)] == pytest.approx(
            histogram.sum
        )
        bucket_keys = [k for k in samples if k[0] == f"{name}_bucket"]
        assert len(bucket_keys) == 2 * len(les)

    def test_latency_bucket_counts_are_exact(self, render: Render) -> None:
        samples = parse(render(busy_metrics()))
        name = "framedclient_request_latency_seconds_bucket"
        # 1..1000 ms: exactly n observations are <= n ms.
        assert samples[key(name, le="0.0025", outcome="ok")] == 2
        assert samples[key(name, le="0.1", outcome="ok")] == 100
        assert samples[key(name, le="0.5", outcome="ok")] == 500
        assert samples[key(name, le="0.0001", outcome="ok")] == 0
        assert samples[key(name, le="2.5", outcome="error")] == 0
        assert samples[key(name, le="5.0", outcome="error")] == 1

    def test_other_counters(self, render: Render) -> None:
        samples = parse(render(busy_metrics()))
        assert samples[key("framedclient_dropped_replies_total", kind="late")] == 2
        assert samples[key("framedclient_dropped_replies_total", kind="unknown")] == 1
        events = "framedclient_connection_events_total"
        assert samples[key(events, event="connect_attempt")] == 1
        assert samples[key(events, event="lost")] == 0
        assert samples[key("framedclient_retries_total")] == 3
        assert samples[key("framedclient_received_bytes_total")] == 4096
        assert samples[key("framedclient_sent_bytes_total")] == 1024

    def test_counter_samples_are_exposed_as_counters(self, render: Render) -> None:
        counters = [
            CounterSample("framedclient_things_total", "Things.", 5, {"code": "200"}),
            CounterSample("framedclient_things_total", "Things.", 2, {"code": "503"}),
        ]
        text = render(Metrics(), counters)
        samples = parse(text)
        assert samples[key("framedclient_things_total", code="200")] == 5
        assert samples[key("framedclient_things_total", code="503")] == 2
        # prometheus_client's parser names a counter family without _total.
        assert families(text)["framedclient_things"] == "counter"

    def test_byte_counters_put_the_unit_before_total(self, render: Render) -> None:
        names = {name for name, _ in parse(render(busy_metrics()))}
        assert "framedclient_received_bytes_total" in names
        assert "framedclient_sent_bytes_total" in names
        assert not any(name.startswith("framedclient_bytes_") for name in names)

    def test_outcome_is_the_one_label_name_for_outcomes(self, render: Render) -> None:
        label_names = {
            label
            for name, labels in parse(render(busy_metrics()))
            if name.startswith(("framedclient_requests", "framedclient_request_"))
            for label, _ in labels
        }
        assert label_names == {"outcome", "le"}

    def test_gauges_with_and_without_labels(self, render: Render) -> None:
        gauges = [
            GaugeSample("framedclient_in_flight", "Requests in flight.", 7),
            GaugeSample(
                "framedclient_connections",
                "Connections by state.",
                3,
                {"state": "ready"},
            ),
            GaugeSample(
                "framedclient_connections",
                "Connections by state.",
                1,
                {"state": "backing_off"},
            ),
        ]
        text = render(Metrics(), gauges)
        samples = parse(text)
        assert samples[key("framedclient_in_flight")] == 7
        assert samples[key("framedclient_connections", state="ready")] == 3
        assert samples[key("framedclient_connections", state="backing_off")] == 1
        assert families(text)["framedclient_connections"] == "gauge"
        assert text.decode().count("# TYPE framedclient_connections gauge") == 1

    def test_constant_labels_go_on_every_sample(self, render: Render) -> None:
        text = render(
            busy_metrics(),
            [GaugeSample("framedclient_queued", "Waiters.", 2)],
            labels={"target": "db1"},
        )
        samples = parse(text)
        assert samples
        assert all(("target", "db1") in labels for _, labels in samples)
        assert samples[key("framedclient_queued", target="db1")] == 2

    def test_label_values_are_escaped(self, render: Render) -> None:
        awkward = 'a "quoted"\\back\nslash'
        text = render(
            Metrics(), [GaugeSample("framedclient_odd", "Odd.", 1, {"v": awkward})]
        )
        assert parse(text)[key("framedclient_odd", v=awkward)] == 1

    def test_help_text_is_escaped(self, render: Render) -> None:
        text = render(Metrics(), [GaugeSample("framedclient_odd", "two\nlines", 1)])
        help_lines = [
            line
            for line in text.decode().splitlines()
            if line.startswith("# HELP framedclient_odd ")
        ]
        assert help_lines == [r"# HELP framedclient_odd two\nlines"]

    @pytest.mark.parametrize(
        ("result", "expected"),
        [
            ("ok", {"0.001": 1, "0.5": 500, "+Inf": 1000}),
            ("error", {"0.001": 0, "0.5": 0, "+Inf": 1}),
        ],
    )
    def test_custom_bucket_subset(
        self, render: Render, result: str, expected: dict[str, float]
    ) -> None:
        samples = parse(render(busy_metrics(), buckets=[0.001, 0.5]))
        name = "framedclient_request_latency_seconds_bucket"
        buckets = {
            dict(labels)["le"]: value
            for (sample_name, labels), value in samples.items()
            if sample_name == name and ("outcome", result) in labels
        }
        assert buckets == expected

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"buckets": [0.0033]}, "not a LATENCY_BUCKET_BOUNDS value"),
            ({"buckets": [0.5, 0.1]}, "strictly increasing"),
            ({"buckets": [0.5, 0.5]}, "strictly increasing"),
            ({"labels": {"outcome": "x"}}, "clashes with a label"),
            ({"labels": {"bad-name": "x"}}, "invalid Prometheus label name"),
            ({"labels": {"__reserved": "x"}}, "invalid Prometheus label name"),
            (
                {"gauges": [GaugeSample("1bad", "Bad.", 1)]},
                "invalid Prometheus metric name",
            ),
            (
                {"gauges": [GaugeSample("framedclient_retries_total", "Clash.", 1)]},
                "clashes with a built-in metric",
            ),
            (
                {"gauges": [CounterSample("framedclient_things", "No suffix.", 1)]},
                "must end with _total",
            ),
            (
                {
                    "gauges": [
                        GaugeSample("framedclient_c_total", "C.", 1, {"s": "a"}),
                        CounterSample("framedclient_c_total", "C.", 1, {"s": "b"}),
                    ]
                },
                "one type",
            ),
            (
                {
                    "gauges": [
                        GaugeSample("framedclient_c", "C.", 1, {"state": "a"}),
                        GaugeSample("framedclient_c", "C.", 1, {"phase": "a"}),
                    ]
                },
                "same help and label names",
            ),
            (
                {
                    "gauges": [
                        GaugeSample("framedclient_c", "C.", 1, {"state": "a"}),
                        GaugeSample("framedclient_c", "C.", 2, {"state": "a"}),
                    ]
                },
                "two samples",
            ),
            (
                {
                    "labels": {"state": "x"},
                    "gauges": [GaugeSample("framedclient_c", "C.", 1, {"state": "a"})],
                },
                "clashes with a constant label",
            ),
        ],
    )
    def test_invalid_input_is_rejected(
        self, render: Render, kwargs: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            render(Metrics(), **kwargs)


class TestRenderers:
    def test_both_renderers_produce_the_same_samples(self) -> None:
        gauges = [
            GaugeSample("framedclient_connections", "By state.", 2, {"state": "ready"})
        ]
        with_client = prometheus_text(
            busy_metrics(), gauges, labels={"t": "x"}, use_prometheus_client=True
        )
        builtin = prometheus_text(
            busy_metrics(), gauges, labels={"t": "x"}, use_prometheus_client=False
        )
        assert parse(with_client) == parse(builtin)
        assert families(with_client) == families(builtin)

    def test_histogram_samples_render_the_same_with_both_renderers(self) -> None:
        histogram = busy_metrics().latency
        gauges = [
            HistogramSample(
                "framedclient_upstream_request_latency_seconds",
                "By upstream.",
                histogram,
                {"upstream": "tcp:a:1"},
            )
        ]
        with_client = prometheus_text(Metrics(), gauges, use_prometheus_client=True)
        builtin = prometheus_text(Metrics(), gauges, use_prometheus_client=False)
        assert parse(with_client) == parse(builtin)
        assert families(with_client) == families(builtin)
        count = parse(builtin)[
            "framedclient_upstream_request_latency_seconds_count",
            frozenset({("upstream", "tcp:a:1")}),
        ]
        assert count == histogram.count > 0

    def test_a_histogram_sample_may_not_have_an_le_label(self) -> None:
        gauges = [HistogramSample("x_seconds", "X.", Metrics().latency, {"le": "1"})]
        with pytest.raises(ValueError, match="'le' label"):
            prometheus_text(Metrics(), gauges, use_prometheus_client=False)

    def test_falls_back_to_builtin_writer_without_prometheus_client(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        expected = prometheus_text(busy_metrics(), use_prometheus_client=False)
        monkeypatch.setitem(sys.modules, "prometheus_client", None)
        assert prometheus_text(busy_metrics()) == expected

    def test_insisting_on_prometheus_client_without_it_raises(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "prometheus_client", None)
        with pytest.raises(ImportError):
            prometheus_text(Metrics(), use_prometheus_client=True)

    def test_content_type_is_the_0_0_4_text_format(self) -> None:
        assert PROMETHEUS_CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


class TestPrometheusCollector:
    def test_reads_current_numbers_at_each_scrape(self) -> None:
        metrics = Metrics()
        registry = CollectorRegistry()
        registry.register(PrometheusCollector(metrics))
        before = parse(generate_latest(registry))
        metrics.record_ok(0.01)
        after = parse(generate_latest(registry))
        assert before[key("framedclient_requests_total", outcome="ok")] == 0
        assert after[key("framedclient_requests_total", outcome="ok")] == 1

    def test_gauge_callable_is_called_at_each_scrape(self) -> None:
        depth = [1]
        registry = CollectorRegistry()
        registry.register(
            PrometheusCollector(
                Metrics(),
                lambda: [GaugeSample("framedclient_queued", "Waiters.", depth[0])],
            )
        )
        depth[0] = 5
        assert parse(generate_latest(registry))[key("framedclient_queued")] == 5

    def test_invalid_constant_labels_are_rejected_when_constructed(self) -> None:
        with pytest.raises(ValueError, match="clashes"):
            PrometheusCollector(Metrics(), labels={"le": "1"})

    def test_a_client_instead_of_its_metrics_is_refused_with_the_fix(self) -> None:
        # Issue 21 item 10: accepted before, it failed at the first scrape
        # with "'FramedClient' object has no attribute 'totals'".
        client, _server = memory_client()
        with pytest.raises(TypeError) as raised:
            PrometheusCollector(client)  # type: ignore[arg-type]
        message = str(raised.value)
        assert "got FramedClient" in message
        assert "PrometheusCollector(client.metrics, client.gauges)" in message

    def test_prometheus_text_of_a_client_is_refused_with_the_fix(self) -> None:
        client, _server = memory_client()
        with pytest.raises(TypeError, match=r"pass client\.metrics"):
            prometheus_text(client)  # type: ignore[arg-type]

    @pytest.mark.parametrize("wrong", [None, 3, {"ok": 1}])
    def test_something_else_than_metrics_is_refused_at_construction(
        self, wrong: Any
    ) -> None:
        with pytest.raises(TypeError, match=r"metrics=.*Metrics.*got"):
            PrometheusCollector(wrong)

    def test_gauges_given_as_a_list_are_refused_with_the_fix(self) -> None:
        samples = [GaugeSample("framedclient_queued", "Waiters.", 1)]
        with pytest.raises(TypeError, match=r"gauges=.*callable.*lambda: samples"):
            PrometheusCollector(Metrics(), samples)  # type: ignore[arg-type]

    def test_prometheus_text_given_the_gauges_method_says_to_call_it(self) -> None:
        client, _server = memory_client()
        with pytest.raises(TypeError, match=r"client\.gauges\(\)"):
            prometheus_text(client.metrics, client.gauges)  # type: ignore[arg-type]

    def test_a_refused_collector_leaves_the_registry_as_it_was(self) -> None:
        registry = CollectorRegistry()
        with pytest.raises(TypeError):
            registry.register(PrometheusCollector(object()))  # type: ignore[arg-type]
        assert b"framedclient_requests_total" not in generate_latest(registry)


PACKAGE = Path(framedclient.metrics.__file__).parent


@pytest.mark.parametrize(
    "path",
    # telemetry.py reads a client's collaborators (connection and health
    # states, hedge events) to build its samples: it sits above them
    # (tests/test_layers.py), and the package's __init__ never imports it.
    sorted(p for p in PACKAGE.glob("*.py") if p.name != "telemetry.py"),
    ids=lambda p: p.name,
)
def test_metrics_import_nothing_above_them_and_no_event_loop(path: Path) -> None:
    # Observability sits near the bottom of the layers (docs/design.md):
    # every layer records into it, so it may not import them back, nor
    # Twisted (an asyncio or threaded program can read a Metrics).
    imported = runtime_imports(f"metrics/{path.stem}")
    inside = {m for m in imported if m.split(".")[0] == "framedclient"}
    allowed = {"framedclient.errors"}
    assert {
        m for m in inside if m not in allowed and not m.startswith("framedclient.metrics")
    } == set()
    assert not {m for m in imported if m.split(".")[0] in ("twisted", "asyncio", "zope")}


def test_every_name_of_the_old_module_is_importable_from_the_package() -> None:
    # framedclient.metrics was one module; code written against it keeps
    # working against the package.
    for name in framedclient.metrics.__all__:
        assert getattr(framedclient.metrics, name) is not None
    assert set(framedclient.metrics.__all__) >= {
        "CONNECTION_EVENTS", "LATENCY_BUCKET_BOUNDS", "OUTCOMES",
        "PROMETHEUS_BUCKETS", "PROMETHEUS_CONTENT_TYPE", "CounterSample",
        "GaugeSample", "HistogramSample", "LatencyHistogram", "Metrics",
        "MetricsRecorder", "PrometheusCollector", "Sample", "prometheus_text",
    }
