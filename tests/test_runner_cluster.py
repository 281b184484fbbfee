"""
How the figures of ``--workers N`` add up (:mod:`framedclient.runner.cluster`)
and the supervisor's control channel, without processes.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, connect

from framedclient.metrics import (
    CounterSample,
    GaugeSample,
    HistogramSample,
    LatencyHistogram,
    Metrics,
    prometheus_text,
)
from framedclient.runner.cluster import (
    WorkerEntry,
    merge_reports,
    retire,
    samples_to_json,
)
from framedclient.runner.workers import ControlChannel, WorkerSupervisor


def report(
    ok_latencies: list[float],
    errors: int = 0,
    in_flight: int = 0,
    responses: int | None = None,
    throughput: list[tuple[float, int, int]] | None = None,
) -> dict[str, Any]:
    """A worker's report as Gateway.report writes it, cut to what is merged."""
    metrics = Metrics()
    for latency in ok_latencies:
        metrics.record_ok(latency)
    for _ in range(errors):
        metrics.record_failure("remote_error", 0.5)
    served = len(ok_latencies) if responses is None else responses
    samples = [
        GaugeSample("framedclient_in_flight", "Requests in flight.", in_flight),
        GaugeSample("framedclient_build_info", "Always 1.", 1, {"version": "1"}),
        CounterSample(
            "framedclient_http_responses_total", "By code.", served, {"code": "200"}
        ),
    ]
    return {
        "metrics": metrics.export(),
        "samples": samples_to_json(samples),
        "stats": {
            "in_flight": in_flight,
            "time": 100.0,
            "uptime": 5.0,
            "ready": 1,
            "closing": False,
            "upstreams": ["tcp:127.0.0.1:1"],
            "connections": {"ready": 1},
            "gateway": {
                "in_flight": in_flight,
                "max_body": 99,
                "responses": {"200": served},
            },
        },
        "state": {"upstreams": [{"name": "tcp:db:1/0", "state": "ready"}]},
        "throughput": {
            "interval": 1.0,
            "window": 300,
            "samples": [
                {"time": t, "ok": ok, "failed": failed}
                for t, ok, failed in (throughput or [])
            ],
        },
    }


def entry(worker: int, rep: dict[str, Any] | None, **kwargs: Any) -> WorkerEntry:
    return WorkerEntry(
        worker=worker,
        pid=100 + worker if rep is not None else None,
        up=rep is not None,
        restarts=kwargs.pop("restarts", 0),
        report=rep,
        **kwargs,
    )


def test_counters_sum_and_histograms_merge_bucket_by_bucket():
    a = [0.001] * 90
    b = [0.1] * 10
    merged = merge_reports([entry(0, report(a, errors=2)), entry(1, report(b))], 0)
    single = LatencyHistogram()
    for value in a + b:
        single.record(value)
    assert merged.metrics.outcomes["ok"] == 100
    assert merged.metrics.outcomes["remote_error"] == 2
    assert merged.metrics.latency.buckets() == single.buckets()
    assert merged.metrics.latency.percentile(95) == single.percentile(95)
    stats = merged.stats()
    assert stats["requests"]["ok"] == 100
    assert stats["latency"]["p99"] == single.percentile(99)
    assert stats["gateway"]["responses"] == {"200": 100}


def test_gauges_sum_but_build_info_stays_one():
    merged = merge_reports(
        [entry(0, report([], in_flight=3)), entry(1, report([], in_flight=4))], 1
    )
    text = prometheus_text(merged.metrics, merged.samples()).decode()
    assert "framedclient_in_flight 7.0" in text
    assert 'framedclient_build_info{version="1"} 1.0' in text
    assert 'framedclient_worker_http_in_flight{worker="1"} 4.0' in text
    stats = merged.stats()
    assert stats["in_flight"] == 7
    assert stats["gateway"]["max_body"] == 99  # a limit, not a sum
    assert stats["upstreams"] == ["tcp:127.0.0.1:1"]
    assert stats["worker"] == 1


def test_a_dead_workers_counts_stay_in_the_sums_and_its_gauges_go():
    last = report([0.01] * 5, in_flight=2)
    retired = retire(None, last)
    dead = entry(1, None, restarts=1, retired=retired)
    merged = merge_reports([entry(0, report([0.01] * 3)), dead], 0)
    assert merged.metrics.outcomes["ok"] == 8
    text = prometheus_text(merged.metrics, merged.samples()).decode()
    assert 'framedclient_http_responses_total{code="200"} 8.0' in text
    assert "framedclient_in_flight 0.0" in text
    assert 'framedclient_worker_up{worker="1"} 0.0' in text
    assert 'framedclient_worker_restarts_total{worker="1"} 1.0' in text
    assert 'framedclient_worker_requests_total{outcome="ok",worker="1"} 5.0' in text
    stats = merged.stats()
    assert stats["requests"]["ok"] == 8
    assert stats["gateway"]["responses"] == {"200": 8}
    assert stats["workers"][1]["requests"]["ok"] == 5


def test_retiring_twice_adds_both_lives():
    retired = retire(retire(None, report([0.01] * 2)), report([0.01] * 3))
    assert retired is not None
    assert Metrics.from_export(retired["metrics"]).outcomes["ok"] == 5


def test_debug_state_names_each_connection_by_worker():
    merged = merge_reports([entry(0, report([])), entry(1, report([]))], 0)
    names = [u["name"] for u in merged.debug_state()["upstreams"]]
    assert names == ["w0/tcp:db:1/0", "w1/tcp:db:1/0"]


def test_throughput_adds_the_newest_samples_together():
    one = report([], throughput=[(1.0, 5, 0), (2.0, 6, 1)])
    two = report([], throughput=[(2.1, 4, 0)])
    samples = merge_reports([entry(0, one), entry(1, two)], 0).throughput()["samples"]
    assert samples == [
        {"time": 1.0, "ok": 5, "failed": 0},
        {"time": 2.1, "ok": 10, "failed": 1},
    ]


def test_metrics_export_round_trips_every_number():
    metrics = Metrics()
    metrics.record_ok(0.002)
    metrics.record_failure("timeout", 5.0)
    metrics.record_dropped_reply(late=True)
    metrics.record_connection_event("connected")
    metrics.record_retry()
    metrics.add_bytes(10, 20)
    copy = Metrics.from_export(metrics.export())
    assert copy.snapshot() == metrics.snapshot()


def test_histogram_export_from_another_bucket_layout_is_refused():
    data = LatencyHistogram().export()
    data["counts"] = data["counts"][:-1]
    with pytest.raises(ValueError, match="buckets"):
        LatencyHistogram.from_export(data)


# -- the control channel --------------------------------------------------------


def channels(
    left: dict[str, Any], right: dict[str, Any]
) -> tuple[ControlChannel, ControlChannel, Any, list[Failure]]:
    lost: list[Failure] = []
    a = ControlChannel(left, lost.append)
    b = ControlChannel(right, lost.append)
    pump = connect(a, FakeTransport(a, False), b, FakeTransport(b, True))
    return a, b, pump, lost


def test_a_call_gets_the_other_sides_answer_or_its_error():
    def broken(message: dict[str, Any]) -> None:
        raise ValueError("no such report")

    a, b, pump, _ = channels({}, {"report": lambda m: {"n": m["n"] * 2}, "bad": broken})
    answers: list[Any] = []
    a.call("report", n=21).addCallback(answers.append)
    a.call("bad").addErrback(lambda f: answers.append(str(f.value)))
    a.call("missing").addErrback(lambda f: answers.append(str(f.value)))
    pump.flush()
    assert answers == [{"n": 42}, "no such report", "no operation 'missing'"]


def test_calls_pending_when_the_channel_closes_fail():
    a, b, pump, lost = channels({}, {"report": lambda m: None})
    failures: list[Failure] = []
    a.call("report").addErrback(failures.append)
    a.connectionLost(Failure(ConnectionDone()))
    assert failures and failures[0].check(ConnectionDone)
    assert len(lost) == 1


def test_a_collection_before_any_worker_is_ready_does_not_wedge_the_next():
    supervisor = WorkerSupervisor(
        Clock(), {"workers": 2, "drain-timeout": 1.0, "argv": []}
    )
    done: list[None] = []
    supervisor.collect().addCallback(done.append)
    supervisor.collect().addCallback(done.append)
    assert done == [None, None]


def with_upstream_latency(rep: dict[str, Any], latencies: list[float]) -> dict[str, Any]:
    """``rep`` plus a per-upstream latency histogram sample."""
    histogram = LatencyHistogram()
    for latency in latencies:
        histogram.record(latency)
    sample = HistogramSample(
        "framedclient_upstream_request_latency_seconds",
        "By upstream.",
        histogram,
        {"upstream": "tcp:db:1", "outcome": "ok"},
    )
    rep["samples"] += samples_to_json([sample])
    return rep


def test_per_upstream_histograms_merge_across_workers_and_outlive_a_dead_one():
    live = with_upstream_latency(report([]), [0.001] * 4)
    dead = entry(1, None, restarts=1, retired=retire(None, with_upstream_latency(report([]), [0.1] * 6)))
    merged = merge_reports([entry(0, live), dead], 0)
    (sample,) = [
        s for s in merged.samples()
        if s.name == "framedclient_upstream_request_latency_seconds"
    ]
    assert isinstance(sample, HistogramSample)
    single = LatencyHistogram()
    for value in [0.001] * 4 + [0.1] * 6:
        single.record(value)
    assert sample.value.buckets() == single.buckets()
    text = prometheus_text(merged.metrics, merged.samples()).decode()
    assert (
        'framedclient_upstream_request_latency_seconds_count{outcome="ok",upstream="tcp:db:1"} 10.0'
        in text
    )


def with_client_samples(rep: dict[str, Any], eject: bool) -> dict[str, Any]:
    """``rep`` plus the per-upstream samples of a real two-host client."""
    from framedclient.client import FramedClient
    from framedclient.testing import MemoryServer

    clock = Clock()
    servers = [MemoryServer(clock=clock) for _ in range(2)]
    client = FramedClient(
        [s.endpoint() for s in servers],
        clock,
        names=["tcp:db:1", "tcp:db:2"],
        failure_accrual=1,
    )
    for s in servers:
        s.flush()
    if eject:
        client.health.host("tcp:db:1").failed()
    rep["samples"] += samples_to_json(client.telemetry.health_samples())
    client.health.stop()
    return rep


def test_host_health_adds_up_across_workers_and_ejections_outlive_a_dead_one():
    # Worker 0 ejected db:1, worker 1 did not; a dead worker had ejected it too.
    dead = retire(None, with_client_samples(report([]), eject=True))
    merged = merge_reports(
        [
            entry(0, with_client_samples(report([]), eject=True)),
            entry(1, with_client_samples(report([]), eject=False)),
            entry(2, None, restarts=1, retired=dead),
        ],
        0,
    )
    got = {
        (s.name, tuple(sorted((s.labels or {}).items()))): s.value
        for s in merged.samples()
    }
    health = "framedclient_upstream_health"
    # The state gauge counts the live workers that see the host in each
    # state (the dead worker's view died with it) ...
    assert got[health, (("state", "ejected"), ("upstream", "tcp:db:1"))] == 1
    assert got[health, (("state", "live"), ("upstream", "tcp:db:1"))] == 1
    assert got[health, (("state", "live"), ("upstream", "tcp:db:2"))] == 2
    # ... while ejections are counted once each, the dead worker's included.
    ejections = "framedclient_upstream_ejections_total"
    assert got[ejections, (("upstream", "tcp:db:1"),)] == 2
    assert got[ejections, (("upstream", "tcp:db:2"),)] == 0
    text = prometheus_text(merged.metrics, merged.samples()).decode()
    assert 'framedclient_upstream_ejections_total{upstream="tcp:db:1"} 2.0' in text
