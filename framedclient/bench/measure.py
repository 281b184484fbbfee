"""
What a client process measures about itself, and how a run's numbers are
summarised.

Every client kind (framedclient, the raw protocol, the baselines) reports
through these helpers, so a ratio between two kinds compares the clients and
never two ways of measuring.  Nothing here imports Twisted or asyncio: the
asyncio baseline must not pay for a reactor it does not use.
"""

from __future__ import annotations

import math
import os
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "LATENCY_PERCENTILES",
    "LoopTally",
    "ProcessSample",
    "auto_request_count",
    "closed_loop_result",
    "cpu_seconds",
    "current_rss",
    "fail_all_fields",
    "held_body",
    "latency_summary",
    "peak_rss",
    "percentile",
    "quantile_curve",
    "scale_requests",
    "settle_seconds",
    "tally_result",
    "warmup_count",
]

#: The latency percentiles every run reports (``p50`` ... ``p999``).
LATENCY_PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p999", 99.9),
)

#: How many points of each run's latency distribution travel back to the
#: runner for plotting: enough for a smooth CDF, small enough for JSON.
_CURVE_POINTS = 400

#: Aim for runs of this many seconds when the caller gives no request count.
TARGET_RUN_SECONDS = 2.0


def percentile(ordered: Sequence[float], q: float) -> float:
    """
    The ``q``-th percentile of already sorted samples (nearest rank).

    Nearest rank rather than interpolation: a reported p999 is then a latency
    some request really had.

    :raises ValueError: for an empty sequence, where no percentile exists.
    """
    if not ordered:
        raise ValueError("no samples: cannot take a percentile of nothing")
    rank = math.ceil(q / 100.0 * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def latency_summary(ordered: Sequence[float]) -> dict[str, float]:
    """
    ``{"p50": s, "p90": s, ..., "mean": s, "max": s}`` in seconds, from
    sorted latencies.
    """
    summary = {name: percentile(ordered, q) for name, q in LATENCY_PERCENTILES}
    summary["mean"] = sum(ordered) / len(ordered)
    summary["max"] = ordered[-1]
    return summary


def quantile_curve(
    ordered: Sequence[float], points: int = _CURVE_POINTS
) -> list[float]:
    """
    ``points`` latencies at evenly spaced quantiles (0 to 1 inclusive) of the
    sorted samples: the distribution, small enough to ship as JSON and plot.
    """
    if not ordered:
        return []
    last = len(ordered) - 1
    return [ordered[round(i * last / (points - 1))] for i in range(points)]


def current_rss() -> int:
    """
    Resident set size of this process now, in bytes.

    Read from ``/proc/self/statm`` on Linux (no dependency); elsewhere the
    peak is the best we can do without psutil.
    """
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss()


def peak_rss() -> int:
    """
    The highest resident set size this process has had, in bytes.
    """
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)


def cpu_seconds() -> float:
    """
    User plus system CPU seconds of this process so far, every thread
    counted (a client that loops in threads is charged for all of them).
    """
    t = os.times()
    return t.user + t.system


@dataclass(frozen=True)
class ProcessSample:
    """
    Wall clock and CPU time of this process at one instant; the difference
    of two samples is what a measured phase cost.
    """

    wall: float
    cpu: float
    user: float
    system: float

    @classmethod
    def now(cls) -> ProcessSample:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            time.perf_counter(), time.process_time(), usage.ru_utime, usage.ru_stime
        )


def auto_request_count(warmup_requests: int, warmup_seconds: float) -> int:
    """
    How many requests make a measured run last about
    :data:`TARGET_RUN_SECONDS`, judging from the warm-up's rate.

    Bounded both ways: at least 1,000 so percentiles mean something, at most
    2,000,000 so a misjudged warm-up cannot make a run endless.
    """
    rate = warmup_requests / max(warmup_seconds, 1e-6)
    return int(min(max(rate * TARGET_RUN_SECONDS, 1_000), 2_000_000))


def warmup_count(concurrency: int) -> int:
    """
    Requests in one warm-up round of a closed loop with ``concurrency``
    loops: enough for every loop to send a few, and for the caches and the
    connection setup to be paid for before anything is measured.
    """
    return max(500, 4 * concurrency)


def held_body(payload: int) -> bytes:
    """
    A request body of ``payload`` bytes (or just over, if the prefix needs
    more) that the reference server holds for 600 s before echoing.
    """
    prefix = b"!delay:600 "
    return prefix + b"x" * max(1, payload - len(prefix))


def settle_seconds(inflight: int) -> float:
    """
    How long to let a burst of ``inflight`` requests reach the server before
    measuring memory: the bytes must leave the client's write buffer, or
    the buffer would be counted as per-request memory.
    """
    return 0.3 + inflight * 3e-6


def scale_requests(
    inflight: int, requested: int | None, warmup_requests: int, warmup_seconds: float
) -> int:
    """
    Requests for the scale mode's closed loop: enough for a ~2 s run, and at
    least three times ``inflight`` so most requests are sent in steady state
    rather than in the opening burst.
    """
    if requested:
        return max(requested, inflight)
    return max(3 * inflight, auto_request_count(warmup_requests, warmup_seconds))


def closed_loop_result(
    *,
    kind: str,
    concurrency: int,
    payload: int,
    connections: int,
    requests: int,
    ok: int,
    failed: int,
    first_error: str | None,
    latencies: list[float],
    start: ProcessSample,
    end: ProcessSample,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """
    The JSON-able record of one measured closed-loop run.

    Rates and per-request CPU are computed from the measured phase only
    (warm-up excluded); peak RSS is the process's, warm-up included, because
    that is what an operator sees.

    :param latencies: per-request seconds; sorted in place.
    """
    latencies.sort()
    wall = end.wall - start.wall
    cpu = end.cpu - start.cpu
    done = ok + failed
    result: dict[str, Any] = {
        "kind": kind,
        "concurrency": concurrency,
        "payload": payload,
        "connections": connections,
        "requests": requests,
        "ok": ok,
        "failed": failed,
        "first_error": first_error,
        "wall_seconds": wall,
        "throughput": ok / wall if wall > 0 else 0.0,
        "cpu_seconds": cpu,
        "cpu_user_seconds": end.user - start.user,
        "cpu_system_seconds": end.system - start.system,
        "cpu_per_request": cpu / done if done else 0.0,
        "cpu_utilisation": cpu / wall if wall > 0 else 0.0,
        "peak_rss": peak_rss(),
        "latency": latency_summary(latencies) if latencies else {},
        "latency_curve": quantile_curve(latencies),
    }
    if extra:
        result.update(extra)
    return result


class LoopTally(Protocol):
    """
    What a closed loop counts, whichever event loop ran it (the Twisted
    kinds' and the asyncio baseline's loops both do).
    """

    ok: int
    failed: int
    first_error: str | None
    latencies: list[float]


def tally_result(
    tally: LoopTally,
    *,
    kind: str,
    concurrency: int,
    payload: int,
    connections: int,
    requests: int,
    start: ProcessSample,
    end: ProcessSample,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """
    :func:`closed_loop_result` of the run ``tally`` counted.
    """
    return closed_loop_result(
        kind=kind,
        concurrency=concurrency,
        payload=payload,
        connections=connections,
        requests=requests,
        ok=tally.ok,
        failed=tally.failed,
        first_error=tally.first_error,
        latencies=tally.latencies,
        start=start,
        end=end,
        extra=extra,
    )


def fail_all_fields(
    inflight: int,
    rss_before: int,
    rss_after: int,
    start: ProcessSample,
    end: ProcessSample,
    failed: int,
) -> dict[str, float]:
    """
    The scale mode's first figures: resident memory per pending request
    (``inflight`` of them sent between the two RSS readings), and the CPU
    and wall time from the connection's loss (``start``) until the last of
    them had failed (``end``).
    """
    return {
        "rss_per_request": max(0, rss_after - rss_before) / inflight,
        "fail_cpu_seconds": end.cpu - start.cpu,
        "fail_wall_seconds": end.wall - start.wall,
        "fail_failed": failed,
    }
