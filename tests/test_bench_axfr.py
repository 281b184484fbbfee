"""
``python -m framedclient.bench axfr``: a short run of framedclient's zone
transfer from a real NSD gives a table with a rate and a CPU cost, every
record counted (dnspython, the baseline, is in the bench extra and not
needed here).
"""

from __future__ import annotations

import pytest

from framedclient.bench.__main__ import main as bench_main
from framedclient.bench.axfr import build_parser, compare, render
from framedclient.bench.nsd import nsd_program

from .servers import require_program


def test_a_short_transfer_bench_measures_framedclient_and_renders_a_table():
    if nsd_program() is None:
        require_program("nsd", "nsd")
    args = build_parser().parse_args(
        "--clients framedclient --records 2000 --transfers 2 --runs 1".split()
    )
    rows = compare(args)
    assert [r["client"] for r in rows] == ["framedclient"]
    (row,) = rows
    assert row["counts"] == [2000, 2000] and row["records"] == 4000
    assert row["rate"] > 0 and row["seconds"] > 0
    table = render(rows, args)
    assert "AXFR of a 2,000-record zone" in table and "| framedclient |" in table
    assert "pinned" in table and "load average" in table


def test_unknown_clients_are_refused(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        bench_main(["axfr", "--clients", "framedclient,nope"])
    assert "nope" in capsys.readouterr().err


@pytest.mark.slow
def test_the_latency_mode_answers_queries_during_a_transfer_both_ways(
    capsys: pytest.CaptureFixture[str],
):
    if nsd_program() is None:
        require_program("nsd", "nsd")
    assert bench_main(["axfr", "latency", "--records", "20000"]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| its own")]
    rows += [line for line in table.splitlines() if line.startswith("| the queries'")]
    assert len(rows) == 2
    for row in rows:
        answered = int(row.split("|")[2])
        assert answered >= 1
