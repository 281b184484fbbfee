"""
Smoke test of ``python -m framedclient.bench``: it runs end to end, reports
what it promises, and leaves no server behind.  No timing assertions: the
numbers depend on the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from framedclient.bench.report import MARKDOWN_BEGIN, MARKDOWN_END, update_markdown

ROOT = Path(__file__).resolve().parent.parent


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.slow
def test_smoke_run_reports_every_field_and_stops_its_server(tmp_path: Path) -> None:
    markdown = tmp_path / "bench.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "framedclient.bench",
            "--clients",
            "proto",
            "--compare",
            "raw",
            "--concurrency",
            "4",
            "--requests",
            "200",
            "--runs",
            "1",
            "--scale",
            "--scale-inflight",
            "8",
            "--no-progress",
            "--markdown",
            str(markdown),
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)

    assert {"machine", "config", "servers", "results", "scale"} <= report.keys()
    assert report["machine"]["python"]
    assert [(r["kind"], r["concurrency"]) for r in report["results"]] == [
        ("proto", 4),
        ("raw", 4),
    ]
    for result in report["results"]:
        assert result["requests"] == 200
        assert result["ok"] == 200 and result["failed"] == 0, result["first_error"]
        for figure in ("throughput", "cpu_per_request", "peak_rss"):
            assert {"median", "min", "max"} <= result[figure].keys()
        assert {"p50", "p90", "p99", "p999"} <= result["latency"].keys()
        assert len(result["runs"]) == 1

    assert [(r["kind"], r["inflight"]) for r in report["scale"]] == [
        ("proto", 8),
        ("raw", 8),
    ]
    for row in report["scale"]:
        assert row["failed"] == 0, row["first_error"]
        # Every held request failed when the server dropped the connection.
        assert row["fail_failed"] == 8
        for figure in ("traced_per_request", "rss_per_request", "fail_cpu_seconds"):
            assert row[figure] >= 0

    text = markdown.read_text(encoding="utf-8")
    assert MARKDOWN_BEGIN in text and MARKDOWN_END in text
    assert "proto C=4" in text

    assert report["servers"], "the report names the server processes it started"
    for server in report["servers"]:
        assert _gone(server["pid"]), f"server {server} is still running"


def test_markdown_update_replaces_only_the_generated_block(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        f"# Title\n\nprose before\n\n{MARKDOWN_BEGIN}\nold numbers\n{MARKDOWN_END}\n\n"
        "prose after\n",
        encoding="utf-8",
    )
    update_markdown(doc, "new numbers\n")
    text = doc.read_text(encoding="utf-8")
    assert "old numbers" not in text
    assert (
        text.index("prose before")
        < text.index("new numbers")
        < text.index("prose after")
    )
    assert text.count(MARKDOWN_BEGIN) == 1
