"""
The Markdown table the side-by-side bench commands print: a heading that
says how the run was set up and on what machine under what load, then a
row per client with its rate, its cost, and framedclient's ratio to each.

Every figure is a rate (items per second of wall time) and a cost (items
per CPU second of the client process): on a machine busy with other work
the cost is the steadier of the two, so both get a ratio.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from framedclient.bench.machine import describe_machine, machine_line

__all__ = ["heading", "load_average", "pinned", "rate_and_ratio_cells", "row"]


def load_average() -> str:
    """
    The 1, 5 and 15 minute load averages, for reading a figure taken on a
    shared machine.
    """
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - no getloadavg
        return "unknown"


def pinned(pin: bool) -> str:
    """How the server and the client shared the CPUs, in the heading's words."""
    return "pinned to different CPUs" if pin else "not pinned"


def heading(setup: str) -> list[str]:
    """
    The lines above a table: ``setup``, then the machine and its load.
    """
    return [
        setup,
        f"machine: {machine_line(describe_machine())}; load average {load_average()}",
        "",
    ]


def _per_cpu(r: dict[str, Any], count: str) -> float | None:
    # A reference program measured from outside (redis-benchmark) has no
    # CPU figure.
    cpu = r.get("cpu")
    return r[count] / cpu if cpu else None


def rate_and_ratio_cells(
    r: dict[str, Any], ours: dict[str, Any] | None, count: str
) -> tuple[str, str, str, str]:
    """
    ``r``'s rate and ``count`` items per CPU second, and ``ours``
    (framedclient's row) over each; ``-`` where a figure is missing.
    """
    per_cpu = _per_cpu(r, count)
    ratio = ours["rate"] / r["rate"] if ours else None
    ours_cpu = _per_cpu(ours, count) if ours else None
    cpu_ratio = ours_cpu / per_cpu if ours_cpu and per_cpu else None
    return (
        f"{r['rate']:,.0f}",
        f"{per_cpu:,.0f}" if per_cpu else "-",
        f"{ratio:.2f}x" if ratio else "-",
        f"{cpu_ratio:.2f}x" if cpu_ratio else "-",
    )


def row(cells: Sequence[str]) -> str:
    """One Markdown table row."""
    return f"| {' | '.join(cells)} |"
