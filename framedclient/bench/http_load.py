"""
``python -m framedclient.bench gateway``: HTTP requests per second through
``twist framedclient`` with 1, 2, ... ``--workers``, side by side.  (This
module loads the gateway, :mod:`framedclient.runner.gateway`, from outside;
it is named for what it measures.)

For each worker count it starts ``twist framedclient --workers N`` on a free
loopback port against the embedded demo backend, waits for ``/readyz``, runs
`wrk <https://github.com/wg/wrk>`_ (Debian: ``apt-get install wrk``) for
``--duration`` seconds of keep-alive ``POST /v1/request``, and stops the
gateway with SIGTERM.  The load generator is pinned to the last CPU with
``taskset`` when there is more than one, so it competes as little as
possible with the workers; on a machine with few cores it still does, which
is why the figures are reported as ratios to the first worker count.

Example::

    python -m framedclient.bench gateway --workers 1,2 --duration 10 --connections 64
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from typing import Any

from framedclient.bench.serverproc import start_gateway

__all__ = ["main", "run_one"]

_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")
_LATENCY = re.compile(r"Latency\s+([0-9.]+)(us|ms|s)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _pin() -> list[str]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(cpus[-1])]


def run_one(
    workers: int, duration: float, connections: int, body: int, pool_size: int
) -> dict[str, Any]:
    """One gateway, one wrk run: requests per second and mean latency."""
    proc, url = start_gateway(
        ["--workers", str(workers), "--pool-size", str(pool_size)]
    )
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(
                'wrk.method = "POST"\n'
                f'wrk.body = string.rep("x", {body})\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"\n'
            )
        command = [
            *_pin(),
            *("wrk", "-t1", f"-c{connections}", f"-d{duration:g}s"),
            *("-s", script.name, url + "/v1/request"),
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=duration + 60
        )
        os.unlink(script.name)
        stats = json.loads(urllib.request.urlopen(url + "/v1/stats", timeout=10).read())
    finally:
        exit_code = _stop(proc)
    rate = _RATE.search(result.stdout)
    if result.returncode != 0 or rate is None:
        raise RuntimeError(f"wrk failed: {result.stdout}{result.stderr}")
    latency = _LATENCY.search(result.stdout)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", result.stdout)
    return {
        "workers": workers,
        "requests_per_second": float(rate.group(1)),
        "mean_latency": float(latency.group(1)) * _UNITS[latency.group(2)]
        if latency
        else None,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "per_worker_ok": [w["requests"]["ok"] for w in stats["workers"]]
        if "workers" in stats
        else [stats["requests"]["ok"]],
        "exit_code": exit_code,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m framedclient.bench gateway",
        description="HTTP req/s through twist framedclient by --workers count.",
    )
    parser.add_argument("--workers", default="1,2", help="worker counts, e.g. 1,2,4")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--body", type=int, default=64, help="request body bytes")
    parser.add_argument("--pool-size", type=int, default=4, help="per worker")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("needs wrk on PATH (Debian: apt-get install wrk)")
    try:
        counts = [int(n) for n in args.workers.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--workers {args.workers!r}: expected e.g. 1,2")
    results = [
        run_one(n, args.duration, args.connections, args.body, args.pool_size)
        for n in counts
    ]
    if args.json:
        json.dump(results, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    base = results[0]["requests_per_second"]
    print(
        f"{'workers':>7}  {'req/s':>9}  {'ratio':>5}  {'mean latency':>12}  "
        "per worker ok"
    )
    for r in results:
        latency = r["mean_latency"]
        shown = f"{latency * 1e3:.2f} ms" if latency is not None else "-"
        print(
            f"{r['workers']:>7}  {r['requests_per_second']:>9.0f}  "
            f"{r['requests_per_second'] / base:>5.2f}  {shown:>12}  "
            f"{r['per_worker_ok']}"
            + (f"  ({r['non_2xx']} non-2xx)" if r["non_2xx"] else "")
        )
    return 0
