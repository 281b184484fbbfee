"""
The benchmark's picture: latency distributions and throughput against
concurrency, side by side for every client.

matplotlib is an optional dependency (the ``bench`` extra); everything else
in the benchmark works without it, so it is imported only here, only when a
plot is asked for, and its absence is a clear error rather than a crash at
import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["PlotUnavailable", "plot_report"]


class PlotUnavailable(RuntimeError):
    """
    matplotlib is not installed; ``pip install 'framedclient[bench]'``.
    """


def plot_report(report: dict[str, Any], path: Path) -> None:
    """
    Draw ``report`` to ``path`` (PNG): one latency CDF panel per concurrency
    (log-scale latency, so C=1 and C=1024 both stay readable) and a
    throughput-vs-concurrency panel with min-max error bars.  With a scale
    section, a third row shows throughput and memory per pending request
    against requests in flight.

    :raises PlotUnavailable: matplotlib cannot be imported.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed; we only write files
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError as e:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'framedclient[bench]'"
        ) from e

    results = report["results"]
    concurrencies: list[int] = list(report["config"]["concurrency"])
    kinds: list[str] = list(dict.fromkeys(r["kind"] for r in results))
    scale = report.get("scale") or []
    columns = max(len(concurrencies), 2)
    rows = 3 if scale else 2
    fig, axes = plt.subplots(
        rows, columns, figsize=(5 * columns, 4 * rows), squeeze=False
    )
    colours = {kind: f"C{i}" for i, kind in enumerate(kinds)}

    for column, concurrency in enumerate(concurrencies):
        ax = axes[0][column]
        for r in results:
            if r["concurrency"] != concurrency or not r.get("latency_curve"):
                continue
            curve = [x * 1e3 for x in r["latency_curve"]]
            fractions = [i / (len(curve) - 1) for i in range(len(curve))]
            ax.plot(curve, fractions, label=r["kind"], color=colours[r["kind"]])
        ax.set_xscale("log")
        # Minor tick labels of a log axis spanning less than a decade overlap.
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"latency CDF, C={concurrency}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small", loc="lower right")
    for column in range(len(concurrencies), columns):
        axes[0][column].axis("off")

    ax = axes[1][0]
    for kind in kinds:
        points = sorted(
            (r["concurrency"], r["throughput"]) for r in results if r["kind"] == kind
        )
        if not points:
            continue
        xs = [c for c, _ in points]
        medians = [t["median"] for _, t in points]
        below = [t["median"] - t["min"] for _, t in points]
        above = [t["max"] - t["median"] for _, t in points]
        ax.errorbar(
            xs,
            medians,
            yerr=[below, above],
            marker="o",
            capsize=3,
            label=kind,
            color=colours[kind],
        )
    ax.set_xscale("log")
    ax.set_xlabel("concurrency C (log scale)")
    ax.set_ylabel("requests/s (median, min-max)")
    ax.set_title("throughput vs concurrency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")

    ax = axes[1][1]
    for kind in kinds:
        points = sorted(
            (r["concurrency"], r["cpu_per_request"]["median"] * 1e6)
            for r in results
            if r["kind"] == kind
        )
        if points:
            ax.plot(
                [c for c, _ in points],
                [v for _, v in points],
                marker="o",
                label=kind,
                color=colours[kind],
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("concurrency C (log scale)")
    ax.set_ylabel("client CPU µs per request (log scale)")
    ax.set_title("client CPU per request")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    for column in range(2, columns):
        axes[1][column].axis("off")

    if scale:
        scale_kinds = list(dict.fromkeys(r["kind"] for r in scale))
        for kind in scale_kinds:
            colour = colours.get(kind)
            points = sorted((r["inflight"], r) for r in scale if r["kind"] == kind)
            xs = [m for m, _ in points]
            axes[2][0].plot(
                xs,
                [r["throughput"] for _, r in points],
                marker="o",
                label=kind,
                color=colour,
            )
            axes[2][1].plot(
                xs,
                [r["traced_per_request"] for _, r in points],
                marker="o",
                label=kind,
                color=colour,
            )
        axes[2][0].set_title("throughput vs requests in flight")
        axes[2][0].set_ylabel("requests/s")
        axes[2][1].set_title("memory per pending request (tracemalloc)")
        axes[2][1].set_ylabel("bytes")
        for ax in axes[2][:2]:
            ax.set_xscale("log")
            ax.set_xlabel("requests in flight (log scale)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize="small")
        for column in range(2, columns):
            axes[2][column].axis("off")

    config = report["config"]
    fig.suptitle(
        f"framedclient bench: payload {config['payload']} B, "
        f"{config['connections']} connection(s), {config['runs']} run(s); "
        f"{report['machine']['cpu_model']}, {report['machine']['python']}",
        fontsize="medium",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
