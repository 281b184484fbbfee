"""
The figures of ``twist framedclient --workers N``: how the reports of the
workers add up into what ``/metrics``, ``/v1/stats``, ``/debug/state`` and
``/v1/throughput`` serve, whichever worker answers.

Each worker reports its own figures as one JSON-able dict
(:meth:`~framedclient.runner.gateway.Gateway.report`); the supervisor
(:mod:`framedclient.runner.workers`) gathers a fresh report from every
worker when one of them is asked, and hands the answering worker a
:class:`WorkerEntry` per worker slot.  Everything here is a pure function
of those entries, so the arithmetic is tested without processes.

How each kind of figure adds up:

- **counters** (requests by outcome, bytes, responses by code, ...) sum,
  including the figures a worker had before it died and was restarted
  (:attr:`WorkerEntry.retired`), so the sums never go back;
- **histograms** merge bucket by bucket (every worker uses the same fixed
  buckets, so the merged percentiles are those of all requests), the
  per-upstream latency samples too, and like counters they keep what dead
  processes counted;
- **gauges** sum (in flight, queued, connections, held reply bytes: the
  gateway's totals); ``framedclient_build_info`` stays 1;
- the **per-worker breakdown** is kept apart: ``framedclient_worker_*``
  families with a ``worker`` label, and ``"workers"`` in ``/v1/stats``.
  The breakdown is not a ``worker`` label on the summed families, so that
  ``sum(framedclient_requests_total)`` in PromQL counts each request once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from framedclient.metrics import (
    CounterSample,
    GaugeSample,
    HistogramSample,
    LatencyHistogram,
    Metrics,
)

__all__ = [
    "BUILD_INFO",
    "WorkerEntry",
    "merge_reports",
    "merge_samples",
    "retire",
    "samples_from_json",
    "samples_to_json",
    "sum_figures",
]

#: A gauge that is 1 in every worker and must stay 1 in the sum.
BUILD_INFO = "framedclient_build_info"

_Sample = GaugeSample | CounterSample | HistogramSample

#: Sample kinds that only grow, and outlive the process that counted them.
_LASTING = ("counter", "histogram")


def samples_to_json(samples: Iterable[_Sample]) -> list[list[Any]]:
    """
    Gauge, counter and histogram samples as JSON: ``[kind, name, help,
    value, labels]``, a histogram's value being its lossless export.
    """
    out: list[list[Any]] = []
    for s in samples:
        value: Any
        if isinstance(s, HistogramSample):
            kind, value = "histogram", s.value.export()
        else:
            kind = "counter" if isinstance(s, CounterSample) else "gauge"
            value = s.value
        out.append([kind, s.name, s.help, value, dict(s.labels or {})])
    return out


def samples_from_json(data: Iterable[Sequence[Any]]) -> list[_Sample]:
    """The samples :func:`samples_to_json` wrote."""
    samples: list[_Sample] = []
    for kind, name, help, value, labels in data:
        if kind == "histogram":
            histogram = LatencyHistogram.from_export(value)
            samples.append(HistogramSample(name, help, histogram, labels or None))
        else:
            cls = CounterSample if kind == "counter" else GaugeSample
            samples.append(cls(name, help, value, labels or None))
    return samples


def _plus(kind: str, a: Any, b: Any) -> Any:
    # Two workers' values of one series: numbers add, histograms merge.
    if kind != "histogram":
        return a + b
    merged = LatencyHistogram.from_export(a)
    merged.merge(LatencyHistogram.from_export(b))
    return merged.export()


@attrs.frozen
class WorkerEntry:
    """
    One worker slot, as the supervisor knows it.

    :ivar worker: the slot's index, 0 to N - 1.
    :ivar pid: the current process, ``None`` while it is being restarted.
    :ivar up: whether the process runs and answered.
    :ivar restarts: how often the slot's process died and was restarted.
    :ivar report: the worker's latest report (fresh when ``stale`` is
        false); ``None`` if it never reported.
    :ivar stale: ``report`` is the last one collected, not a fresh one (the
        worker did not answer in time, or is gone).
    :ivar retired: the counters of the slot's earlier, dead processes
        (:func:`retire`), ``None`` if it never died.
    """

    worker: int
    pid: int | None
    up: bool
    restarts: int
    report: dict[str, Any] | None
    stale: bool = False
    retired: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerEntry:
        return cls(**data)


def retire(
    retired: dict[str, Any] | None, report: dict[str, Any] | None
) -> dict[str, Any] | None:
    """
    ``retired`` plus the counters of ``report``, the last report of a
    process that died: its metrics and its counter samples (gauges die with
    the process).
    """
    if report is None:
        return retired
    metrics = Metrics.from_export(report["metrics"])
    counters: dict[tuple[str, tuple[tuple[str, str], ...]], list[Any]] = {}
    sources: list[list[list[Any]]] = [report["samples"]]
    if retired is not None:
        metrics.merge(Metrics.from_export(retired["metrics"]))
        sources.append(retired["samples"])
    for samples in sources:
        for kind, name, help, value, labels in samples:
            if kind not in _LASTING:
                continue
            key = (name, tuple(sorted(labels.items())))
            if key in counters:
                counters[key][3] = _plus(kind, counters[key][3], value)
            else:
                counters[key] = [kind, name, help, value, dict(labels)]
    return {"metrics": metrics.export(), "samples": list(counters.values())}


def _slot_metrics(entry: WorkerEntry) -> Metrics:
    # Everything the slot counted: its live process and the dead ones.
    metrics = Metrics()
    if entry.report is not None:
        metrics.merge(Metrics.from_export(entry.report["metrics"]))
    if entry.retired is not None:
        metrics.merge(Metrics.from_export(entry.retired["metrics"]))
    return metrics


def merge_samples(groups: Iterable[Iterable[_Sample]]) -> list[_Sample]:
    """
    The samples of several clients (the nodes of a Redis Cluster upstream)
    as one client's: a series (name and labels) in more than one group is
    added up (histograms merged), each other kept as it is, in the order
    first seen.
    """
    summed: dict[tuple[str, tuple[tuple[str, str], ...]], list[Any]] = {}
    for group in groups:
        for kind, name, help, value, labels in samples_to_json(group):
            key = (name, tuple(sorted(labels.items())))
            if key in summed:
                summed[key][3] = _plus(kind, summed[key][3], value)
            else:
                summed[key] = [kind, name, help, value, labels]
    return samples_from_json(summed.values())


def sum_figures(values: list[Any]) -> Any:
    """
    The sum of one field over several reports (workers, or the nodes of a
    Redis Cluster upstream): numbers add, flags are true if any is, dicts
    add key by key, lists of names are joined without repeats; anything
    else is the first one's.
    """
    return _sum(values)


def _sum(values: list[Any]) -> Any:
    """
    The sum of one field over the workers: numbers add, flags are true if
    any is, dicts add key by key, lists of names are joined without
    repeats; anything else is the first worker's.
    """
    first = values[0]
    if isinstance(first, bool):
        return any(values)
    if isinstance(first, int | float):
        return sum(v for v in values if isinstance(v, int | float))
    if isinstance(first, dict):
        keys: dict[str, None] = {}
        for value in values:
            if isinstance(value, dict):
                keys.update(dict.fromkeys(value))
        return {
            k: _sum([v[k] for v in values if isinstance(v, dict) and k in v])
            for k in keys
        }
    if isinstance(first, list) and all(isinstance(x, str) for x in first):
        joined: dict[str, None] = {}
        for value in values:
            joined.update(dict.fromkeys(value))
        return list(joined)
    return first


class Merged:
    """
    The sum of every worker's figures; each endpoint's view is a method.

    :param entries: one per worker slot, from the supervisor.
    :param answering: the index of the worker that serves the answer.
    """

    def __init__(self, entries: Sequence[WorkerEntry], answering: int) -> None:
        self.entries = list(entries)
        self.answering = answering
        self.live = [e for e in self.entries if e.report is not None]
        self.metrics = Metrics()
        for entry in self.entries:
            self.metrics.merge(_slot_metrics(entry))

    # -- /metrics -------------------------------------------------------------

    def samples(self) -> list[_Sample]:
        """
        The gateway's and client's gauges and counters, summed (counters of
        dead processes included), then the per-worker families.
        """
        summed: dict[tuple[str, tuple[tuple[str, str], ...]], list[Any]] = {}
        order: list[tuple[str, tuple[tuple[str, str], ...]]] = []

        def add(
            kind: str, name: str, help: str, value: Any, labels: dict[str, str]
        ) -> None:
            key = (name, tuple(sorted(labels.items())))
            if key not in summed:
                summed[key] = [kind, name, help, value, labels]
                order.append(key)
            elif name == BUILD_INFO:
                summed[key][3] = max(summed[key][3], value)
            else:
                summed[key][3] = _plus(kind, summed[key][3], value)

        for entry in self.entries:
            if entry.report is not None and not (entry.stale and not entry.up):
                for sample in entry.report["samples"]:
                    add(*sample)
            if entry.retired is not None:
                for sample in entry.retired["samples"]:
                    add(*sample)
        merged = samples_from_json(summed[key] for key in order)
        return merged + self._worker_samples()

    def _worker_samples(self) -> list[_Sample]:
        samples: list[_Sample] = []
        for entry in self.entries:
            worker = str(entry.worker)
            samples.append(
                GaugeSample(
                    "framedclient_worker_up",
                    "1 while the worker process runs and answers its supervisor.",
                    1 if entry.up and not entry.stale else 0,
                    {"worker": worker},
                )
            )
            samples.append(
                CounterSample(
                    "framedclient_worker_restarts_total",
                    "Times the worker process died and was restarted.",
                    entry.restarts,
                    {"worker": worker},
                )
            )
            outcomes = _slot_metrics(entry).outcomes
            samples.extend(
                CounterSample(
                    "framedclient_worker_requests_total",
                    "Requests that ended, by worker and outcome (the sum is "
                    "framedclient_requests_total).",
                    count,
                    {"worker": worker, "outcome": outcome},
                )
                for outcome, count in outcomes.items()
            )
            in_flight = 0
            if entry.report is not None and entry.up:
                in_flight = entry.report["stats"]["gateway"]["in_flight"]
            samples.append(
                GaugeSample(
                    "framedclient_worker_http_in_flight",
                    "HTTP requests waiting for their upstream reply, by worker.",
                    in_flight,
                    {"worker": worker},
                )
            )
        return samples

    # -- /v1/stats ------------------------------------------------------------

    def _live_reports(self) -> list[dict[str, Any]]:
        return [e.report for e in self.entries if e.report is not None and e.up]

    def stats(self) -> dict[str, Any]:
        """
        ``/v1/stats``: every number summed over the live workers, the request
        counts and latency over all processes ever (dead ones included), and
        ``"workers"``: the per-worker breakdown.
        """
        reports = self._live_reports() or [e.report for e in self.live if e.report]
        stats: dict[str, Any] = _sum([r["stats"] for r in reports]) if reports else {}
        snapshot = self.metrics.snapshot()
        stats.update(
            {
                "requests": snapshot["requests"],
                "latency": snapshot["latency"],
                "failure_latency": snapshot["failure_latency"],
                "dropped_replies": snapshot["dropped_replies"],
                "retries": snapshot["retries"],
                "time": max(r["stats"]["time"] for r in reports) if reports else 0,
                "uptime": max(r["stats"]["uptime"] for r in reports) if reports else 0,
                "workers": self.breakdown(),
                "worker": self.answering,
            }
        )
        if reports:
            for key in reports[0].get("facts", ()):
                if key in reports[0]["stats"]:
                    stats[key] = reports[0]["stats"][key]
        gateway = stats.get("gateway")
        if isinstance(gateway, dict):
            gateway["max_body"] = reports[0]["stats"]["gateway"]["max_body"]
            responses = gateway.setdefault("responses", {})
            for entry in self.entries:
                if entry.retired is None:
                    continue
                for _, name, _, value, labels in entry.retired["samples"]:
                    if name == "framedclient_http_responses_total":
                        code = labels["code"]
                        responses[code] = responses.get(code, 0) + int(value)
        return stats

    def breakdown(self) -> list[dict[str, Any]]:
        """Per worker: process, requests by outcome, what it holds now."""
        rows = []
        for entry in self.entries:
            stats = entry.report["stats"] if entry.report is not None else {}
            gateway = stats.get("gateway", {})
            live = entry.up and entry.report is not None
            rows.append(
                {
                    "worker": entry.worker,
                    "pid": entry.pid,
                    "up": entry.up and not entry.stale,
                    "restarts": entry.restarts,
                    "requests": _slot_metrics(entry).outcomes,
                    "in_flight": stats.get("in_flight", 0) if live else 0,
                    "queued": stats.get("queued", 0) if live else 0,
                    "ready": stats.get("ready", 0) if live else 0,
                    "http_in_flight": gateway.get("in_flight", 0) if live else 0,
                    "http_connections": gateway.get("http_connections", 0)
                    if live
                    else 0,
                    "uptime": stats.get("uptime", 0) if live else 0,
                }
            )
        return rows

    # -- /debug/state ---------------------------------------------------------

    def debug_state(self) -> dict[str, Any]:
        """
        ``/debug/state``: the live workers' states summed, every upstream
        connection of every worker (named ``wN/NAME``, so the status page
        shows one row per worker's connection), and the breakdown.
        """
        states = [e for e in self.entries if e.report is not None and e.up]
        state: dict[str, Any] = (
            _sum([e.report["state"] for e in states if e.report]) if states else {}
        )
        upstreams = []
        for entry in states:
            assert entry.report is not None
            for upstream in entry.report["state"].get("upstreams", []):
                upstreams.append(
                    {**upstream, "name": f"w{entry.worker}/{upstream['name']}"}
                )
        state["upstreams"] = upstreams
        state["metrics"] = self.metrics.snapshot()
        state["workers"] = self.breakdown()
        return state

    # -- /v1/throughput -------------------------------------------------------

    def throughput(self) -> dict[str, Any]:
        """
        ``/v1/throughput``: each worker samples once a second; the k-th
        newest samples of all workers add up (their times differ by less
        than a second).
        """
        histories = [e.report["throughput"] for e in self.live if e.report]
        if not histories:
            return {"interval": 1.0, "window": 0, "samples": []}
        longest = max(len(h["samples"]) for h in histories)
        samples = []
        for back in range(longest, 0, -1):
            picked = [
                h["samples"][-back] for h in histories if len(h["samples"]) >= back
            ]
            samples.append(
                {
                    "time": max(s["time"] for s in picked),
                    "ok": sum(s["ok"] for s in picked),
                    "failed": sum(s["failed"] for s in picked),
                }
            )
        return {
            "interval": histories[0]["interval"],
            "window": histories[0]["window"],
            "samples": samples,
        }


def merge_reports(entries: Sequence[WorkerEntry], answering: int) -> Merged:
    """The sums of ``entries``, as served by worker ``answering``."""
    return Merged(entries, answering)
