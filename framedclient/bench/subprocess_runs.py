"""
What every side-by-side bench command does around its measurements: pick
a CPU for the server and one for the clients, run each measured client in
a process of its own and read the one JSON line it prints, keep the best
of several runs, and take the same ``--no-pin``/``--json`` options.

One copy of this, so that ``redis``, ``memcache``, ``pubsub``,
``redis-cluster``, ``axfr`` and the fc1 loop (:mod:`.runner`) pin, fail
and pick their best run the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from framedclient.bench.serverproc import child_setup

__all__ = [
    "add_pin_and_json_options",
    "best_of",
    "best_run",
    "cpu_pair",
    "run_json_child",
    "write_rows",
]


def cpu_pair(pin: bool) -> tuple[int | None, int | None]:
    """
    CPUs for (server, clients): two different ones when ``pin`` and this
    process may use at least two, so neither side migrates mid-run;
    otherwise ``(None, None)``, no pinning.
    """
    if not pin or not hasattr(os, "sched_getaffinity"):
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


def run_json_child(
    command: Sequence[str],
    *,
    cpu: int | None,
    timeout: float,
    error: type[Exception] = RuntimeError,
) -> Any:
    """
    Run ``command`` on ``cpu`` (dying with this process) and return the
    JSON value of the last line it printed: a measured client reports that
    way, whatever it logged before.

    :raises error: the child was killed at ``timeout`` seconds, exited
        with a status other than 0, or printed nothing; the message holds
        the command and the tail of its stderr, which is where the reason
        is.
    """
    try:
        done = subprocess.run(
            list(command),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            preexec_fn=child_setup(cpu),
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise error(
            f"{' '.join(command)} did not finish within {timeout:g} s (killed)"
        ) from e
    stdout = done.stdout.decode("utf-8", "replace").strip()
    if done.returncode != 0 or not stdout:
        stderr = done.stderr.decode("utf-8", "replace").strip()[-3000:]
        raise error(
            f"{' '.join(command)} exited with status {done.returncode}:\n{stderr}"
        )
    return json.loads(stdout.splitlines()[-1])


def best_of(
    runs: int, measure: Callable[[], dict[str, Any] | None], count: str
) -> dict[str, Any] | None:
    """
    ``measure`` ``runs`` times; the run with the highest rate (``count``
    items over its ``"seconds"``, stored as ``"rate"``) is kept: the least
    disturbed by the rest of the machine.  ``None`` when ``measure`` says
    it cannot run (a reference program not installed).
    """
    best: dict[str, Any] | None = None
    for _ in range(runs):
        result = measure()
        if result is None:
            return best
        result["rate"] = result[count] / result["seconds"]
        if best is None or result["rate"] > best["rate"]:
            best = result
    return best


def best_run(
    label: str,
    runs: int,
    measure: Callable[[], dict[str, Any] | None],
    count: str,
    unit: str,
) -> dict[str, Any] | None:
    """
    :func:`best_of`, and a line on stderr saying its rate in ``unit`` (or
    that the client is not installed), so a long comparison shows how far
    it got.
    """
    best = best_of(runs, measure, count)
    if best is None:
        print(f"  {label}: not installed, skipped", file=sys.stderr)
    else:
        print(f"  {label}: {best['rate']:,.0f} {unit}", file=sys.stderr)
    return best


def add_pin_and_json_options(parser: argparse.ArgumentParser, pinned: str) -> None:
    """
    ``--no-pin`` (``args.pin`` false) and ``--json FILE``, the options
    every side-by-side command takes; ``pinned`` names what is pinned
    ("the server and the clients").
    """
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help=f"do not pin {pinned} to different CPUs",
    )
    parser.add_argument("--json", help="also write the rows to this JSON file")


def write_rows(path: str | None, report: dict[str, Any]) -> None:
    """
    Write ``report`` (the arguments and the rows) to ``path`` as ``--json``
    asked; nothing when it did not.
    """
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
