"""
The benchmark's conductor: start the servers, run every measured client in
a fresh process, one at a time, and gather the numbers.

Runs are interleaved (run 1 of every client at every concurrency, then run
2, ...) so that a slow patch of the machine (another tenant, a thermal
step) spreads over all clients instead of penalising whichever came last.
Nothing runs in parallel while measuring: the server has one core and the
client the other.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

from framedclient.bench.loadgen import SCALE_KINDS
from framedclient.bench.machine import describe_machine
from framedclient.bench.serverproc import (
    AMP_SERVER_COMMAND,
    REFERENCE_SERVER_COMMAND,
    ServerProcess,
)
from framedclient.bench.subprocess_runs import cpu_pair, run_json_child

__all__ = [
    "DEFAULT_SCALE_INFLIGHT",
    "BenchConfig",
    "ClientRunFailed",
    "Progress",
    "aggregate",
    "run_benchmark",
]

#: In-flight counts of the scale mode.
DEFAULT_SCALE_INFLIGHT: tuple[int, ...] = (1, 64, 1024, 16384, 100_000)

#: Figures that get a median and a min-max spread over runs.
_SPREAD_FIELDS = ("throughput", "cpu_per_request", "peak_rss", "server_cpu_per_request")


class ClientRunFailed(RuntimeError):
    """
    A client process exited with an error or printed no result.
    """


@dataclass
class BenchConfig:
    """
    What to measure.  Every count is bounded; ``requests=None`` lets each
    run pick about two seconds' worth from its warm-up.
    """

    clients: list[str] = field(default_factory=lambda: ["framedclient"])
    compare: list[str] = field(default_factory=lambda: ["raw", "amp", "asyncio"])
    concurrency: list[int] = field(default_factory=lambda: [1, 64, 1024])
    payload: int = 64
    requests: int | None = None
    connections: int = 1
    runs: int = 3
    scale: bool = False
    scale_inflight: list[int] = field(
        default_factory=lambda: list(DEFAULT_SCALE_INFLIGHT)
    )
    #: Pin the server to CPU 0 and each client to CPU 1 (when there are two).
    pin: bool = True
    #: Seconds one client process may take before it is killed.
    run_timeout: float = 300.0
    #: Young-generation GC threshold applied in framedclient/proto client
    #: processes (see framedclient.gctune); None keeps CPython's default.
    gc_threshold: int | None = None

    @property
    def kinds(self) -> list[str]:
        """
        Clients then baselines, without repeats, in the order given.
        """
        return list(dict.fromkeys([*self.clients, *self.compare]))


class Progress:
    """
    Where the runner reports progress: a tqdm bar when tqdm is installed and
    wanted, otherwise one line per step on stderr.
    """

    def __init__(self, total: int, enabled: bool = True) -> None:
        self._total = total
        self._done = 0
        self._enabled = enabled
        self._bar: Any = None
        # A bar redrawn with carriage returns is noise in a log file or a
        # pipe; there, one plain line per run reads better.
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, unit="run", file=sys.stderr, leave=False)

    def step(self, label: str, outcome: str) -> None:
        """
        One client run finished.
        """
        self._done += 1
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(f"{label}: {outcome}", refresh=False)
            self._bar.update(1)
        else:
            print(
                f"[{self._done}/{self._total}] {label}: {outcome}",
                file=sys.stderr,
                flush=True,
            )

    def starting(self, label: str) -> None:
        if self._enabled and self._bar is not None:
            self._bar.set_description_str(label)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _run_client(
    args: list[str], cpu: int | None, timeout: float, gc_threshold: int | None = None
) -> dict[str, Any]:
    if gc_threshold is not None and args[2] in ("framedclient", "proto"):
        args = [*args, "--gc-threshold", str(gc_threshold)]
    command = [sys.executable, "-m", "framedclient.bench.loadgen", *args]
    result: dict[str, Any] = run_json_child(
        command, cpu=cpu, timeout=timeout, error=ClientRunFailed
    )
    return result


def _median_spread(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """
    One client at one concurrency over its runs: the median and min-max of
    each headline figure, the median of each latency percentile, and the
    request counts summed (so "every request succeeded" can be checked in
    one place).
    """
    first = runs[0]
    summary: dict[str, Any] = {
        key: first[key]
        for key in ("kind", "concurrency", "payload", "connections", "fallback")
        if key in first
    }
    for name in _SPREAD_FIELDS:
        values = [r[name] for r in runs if r.get(name) is not None]
        if values:
            summary[name] = _median_spread(values)
    summary["latency"] = {
        name: statistics.median(r["latency"][name] for r in runs)
        for name in first["latency"]
    }
    summary["requests"] = sum(r["requests"] for r in runs)
    summary["ok"] = sum(r["ok"] for r in runs)
    summary["failed"] = sum(r["failed"] for r in runs)
    summary["first_error"] = next(
        (r["first_error"] for r in runs if r["first_error"]), None
    )
    # The run whose throughput is the median one, for plotting its latency
    # distribution.
    ordered = sorted(runs, key=lambda r: r["throughput"])
    summary["latency_curve"] = ordered[len(ordered) // 2]["latency_curve"]
    summary["runs"] = [
        {k: v for k, v in r.items() if k != "latency_curve"} for r in runs
    ]
    return summary


def _outcome(result: dict[str, Any]) -> str:
    text = f"{result['throughput']:,.0f} req/s"
    if result.get("failed"):
        text += f", {result['failed']} FAILED"
    return text


def _closed_steps(config: BenchConfig) -> Iterator[tuple[int, int, str]]:
    for run in range(config.runs):
        for concurrency in config.concurrency:
            for kind in config.kinds:
                yield run, concurrency, kind


def run_benchmark(
    config: BenchConfig,
    *,
    progress: bool = True,
    on_server_started: Callable[[ServerProcess], None] | None = None,
) -> dict[str, Any]:
    """
    Run everything ``config`` asks for and return the report (JSON-able):
    ``{"machine", "config", "servers", "results", "scale", "elapsed_seconds"}``.

    Servers are stopped before this returns or raises, including on
    ``KeyboardInterrupt``.
    """
    server_cpu, client_cpu = cpu_pair(config.pin)
    scale_kinds = [k for k in config.kinds if k in SCALE_KINDS] if config.scale else []
    total = config.runs * len(config.concurrency) * len(config.kinds)
    total += len(scale_kinds) * len(config.scale_inflight)
    bar = Progress(total, progress)
    started = time.perf_counter()
    servers: list[dict[str, Any]] = []
    closed: dict[tuple[str, int], list[dict[str, Any]]] = {}
    scale: list[dict[str, Any]] = []
    try:
        with ExitStack() as stack:
            fc1 = stack.enter_context(
                ServerProcess(REFERENCE_SERVER_COMMAND, cpu=server_cpu)
            )
            servers.append({"name": "fc1", "pid": fc1.pid, "port": fc1.port})
            if on_server_started is not None:
                on_server_started(fc1)
            amp: ServerProcess | None = None
            if "amp" in config.kinds:
                amp = stack.enter_context(
                    ServerProcess(AMP_SERVER_COMMAND, cpu=server_cpu)
                )
                servers.append({"name": "amp", "pid": amp.pid, "port": amp.port})
                if on_server_started is not None:
                    on_server_started(amp)

            for run, concurrency, kind in _closed_steps(config):
                server = amp if kind == "amp" and amp is not None else fc1
                label = f"{kind} C={concurrency} run {run + 1}/{config.runs}"
                bar.starting(label)
                args = [
                    "closed",
                    "--kind",
                    kind,
                    "--host",
                    server.host,
                    "--port",
                    str(server.port),
                    "--concurrency",
                    str(concurrency),
                    "--payload",
                    str(config.payload),
                    "--requests",
                    str(config.requests or 0),
                    "--connections",
                    str(config.connections),
                ]
                cpu_before = server.cpu_seconds()
                result = _run_client(
                    args, client_cpu, config.run_timeout, config.gc_threshold
                )
                cpu_after = server.cpu_seconds()
                served = result["requests"] + result.get("warmup_requests", 0)
                if cpu_before is not None and cpu_after is not None and served:
                    result["server_cpu_per_request"] = (cpu_after - cpu_before) / served
                closed.setdefault((kind, concurrency), []).append(result)
                bar.step(label, _outcome(result))

            for kind in scale_kinds:
                for inflight in config.scale_inflight:
                    label = f"scale {kind} {inflight:,} in flight"
                    bar.starting(label)
                    args = [
                        "scale",
                        "--kind",
                        kind,
                        "--host",
                        fc1.host,
                        "--port",
                        str(fc1.port),
                        "--inflight",
                        str(inflight),
                        "--payload",
                        str(config.payload),
                        "--requests",
                        str(config.requests or 0),
                    ]
                    result = _run_client(
                        args, client_cpu, config.run_timeout, config.gc_threshold
                    )
                    result.pop("latency_curve", None)
                    scale.append(result)
                    bar.step(label, _outcome(result))
    finally:
        bar.close()

    results = [
        aggregate(closed[(kind, c)])
        for c in config.concurrency
        for kind in config.kinds
        if (kind, c) in closed
    ]
    return {
        "machine": describe_machine(),
        "config": asdict(config),
        "servers": servers,
        "results": results,
        "scale": scale,
        "elapsed_seconds": time.perf_counter() - started,
    }
