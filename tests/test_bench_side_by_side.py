"""
The scaffolding every side-by-side bench command shares
(:mod:`framedclient.bench.subprocess_runs`,
:mod:`framedclient.bench.ratio_table`): the best run is the fastest, a
client that fails says why, the table's ratios are framedclient's over
each other client's, and ``--no-pin``/``--json`` mean the same everywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from framedclient.bench.ratio_table import heading, rate_and_ratio_cells, row
from framedclient.bench.subprocess_runs import (
    add_pin_and_json_options,
    best_of,
    best_run,
    cpu_pair,
    run_json_child,
    write_rows,
)


def test_the_best_run_is_the_fastest_and_carries_its_rate():
    runs = iter(
        [
            {"requests": 100, "seconds": 2.0},
            {"requests": 100, "seconds": 1.0},
            {"requests": 100, "seconds": 4.0},
        ]
    )
    best = best_of(3, lambda: next(runs), "requests")
    assert best == {"requests": 100, "seconds": 1.0, "rate": 100.0}


def test_a_client_that_cannot_run_gives_no_row():
    calls = []

    def not_installed():
        calls.append(1)
        return None

    assert best_of(3, not_installed, "requests") is None
    assert calls == [1]  # not tried again


def test_ratios_are_framedclients_over_each_client_and_missing_cpu_is_a_dash():
    ours = {"client": "framedclient", "requests": 300, "cpu": 1.0, "rate": 300.0}
    other = {"client": "other", "requests": 100, "cpu": 2.0, "rate": 100.0}
    reference = {"client": "redis-benchmark", "requests": 100, "cpu": None,
                 "rate": 600.0}  # fmt: skip
    assert rate_and_ratio_cells(other, ours, "requests") == (
        "100", "50", "3.00x", "6.00x"
    )  # fmt: skip
    assert rate_and_ratio_cells(reference, ours, "requests") == (
        "600", "-", "0.50x", "-"
    )  # fmt: skip
    assert rate_and_ratio_cells(other, None, "requests")[2:] == ("-", "-")
    assert row(["a", "1"]) == "| a | 1 |"


def test_the_heading_names_the_setup_the_machine_and_the_load():
    setup, machine, blank = heading("some run; not pinned")
    assert setup == "some run; not pinned" and blank == ""
    assert machine.startswith("machine: ") and "load average" in machine


def test_a_failed_client_is_reported_with_its_status_and_stderr():
    command = [sys.executable, "-c", "import sys; sys.exit('no server here')"]
    with pytest.raises(RuntimeError, match="status 1:\nno server here"):
        run_json_child(command, cpu=None, timeout=30)


def test_a_client_reports_on_its_last_line():
    command = [sys.executable, "-c", "print('warming up'); print('{\"ok\": 1}')"]
    assert run_json_child(command, cpu=None, timeout=30) == {"ok": 1}


def test_a_client_that_hangs_is_killed_at_its_timeout():
    class Failed(Exception):
        pass

    command = [sys.executable, "-c", "import time; time.sleep(30)"]
    with pytest.raises(Failed, match=r"did not finish within 0\.5 s"):
        run_json_child(command, cpu=None, timeout=0.5, error=Failed)


def test_no_pin_and_json_options(tmp_path: Path):
    parser = argparse.ArgumentParser()
    add_pin_and_json_options(parser, "the server and the clients")
    assert parser.parse_args([]).pin is True
    args = parser.parse_args(["--no-pin", "--json", str(tmp_path / "rows.json")])
    assert args.pin is False
    assert cpu_pair(args.pin) == (None, None)
    write_rows(args.json, {"rows": [1]})
    assert json.loads((tmp_path / "rows.json").read_text()) == {"rows": [1]}
    write_rows(None, {"rows": [2]})  # no --json: nothing written


def test_the_best_run_is_told_on_stderr_or_that_the_client_is_missing(capsys):
    best = best_run("get x", 1, lambda: {"requests": 10, "seconds": 0.5}, "requests",
                    "req/s")  # fmt: skip
    assert best is not None and best["rate"] == 20
    assert best_run("memaslap", 2, lambda: None, "requests", "req/s") is None
    assert capsys.readouterr().err == (
        "  get x: 20 req/s\n  memaslap: not installed, skipped\n"
    )
