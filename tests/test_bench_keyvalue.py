"""
``python -m framedclient.bench redis|memcache``: a short run of
framedclient's clients against the real servers gives a table with a rate
and a CPU cost per client (baseline libraries are in the bench extra and
not needed here).
"""

from __future__ import annotations

import pytest

from framedclient.bench.keyvalue import build_parser, compare, main, render

from .servers import require_program


@pytest.mark.parametrize(
    ("protocol", "program", "package"),
    [("redis", "redis-server", "redis-server"), ("memcache", "memcached", "memcached")],
)
def test_a_short_comparison_measures_framedclient_and_renders_a_table(
    protocol, program, package
):
    require_program(program, package)
    args = build_parser(protocol).parse_args(
        ["--clients", "framedclient", "--requests", "2000", "--runs", "1"]
    )
    rows = compare(protocol, args)
    assert [r["client"] for r in rows] == ["framedclient"]
    assert rows[0]["requests"] == 2000 and rows[0]["rate"] > 0 and rows[0]["cpu"] > 0
    table = render(protocol, rows, args)
    assert f"{protocol} GET" in table and "| framedclient |" in table
    assert "pinned" in table and "load average" in table


@pytest.mark.parametrize(
    ("protocol", "program", "package"),
    [("redis", "redis-server", "redis-server"), ("memcache", "memcached", "memcached")],
)
def test_pipelines_are_measured_in_gets_and_named_in_the_table(
    protocol, program, package
):
    # --pipeline 10: each call a pipeline (get_many) of 10 GETs, every
    # reply checked; the rate counts GETs, as redis-benchmark -P does.
    require_program(program, package)
    args = build_parser(protocol).parse_args(
        "--clients framedclient --requests 2000 --runs 1 --pipeline 10 "
        "--concurrency 2".split()
    )
    rows = compare(protocol, args)
    assert rows[0]["requests"] == 2000 and rows[0]["rate"] > 0
    assert "in pipelines of 10" in render(protocol, rows, args)


def test_pipelines_refuse_clients_that_do_not_take_them(capsys):
    assert main(["redis", "--pipeline", "5", "--clients", "txredisapi"]) == 2
    assert "txredisapi" in capsys.readouterr().err
    assert main(["redis", "--pipeline", "0"]) == 2


def test_unknown_clients_are_refused(capsys):
    assert main(["redis", "--clients", "framedclient,nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["postgres"]) == 2


def test_the_reference_tool_can_open_another_number_of_connections(monkeypatch):
    # Issue 22's pipeline target: framedclient's one connection against
    # redis-benchmark -c 1 -P 50, in one run with framedclient at C=50.
    import framedclient.bench.keyvalue as keyvalue

    seen = []

    def fake_redis_benchmark(port, value_size, c, n, cpu, pipeline=1):
        seen.append((c, pipeline))
        return {"requests": n, "seconds": 1.0, "cpu": None, "wall": 1.0}

    monkeypatch.setattr(keyvalue, "_redis_benchmark", fake_redis_benchmark)
    args = build_parser("redis").parse_args(
        "--clients redis-benchmark --runs 1 --pipeline 50 --concurrency 50 "
        "--reference-connections 1".split()
    )
    rows = compare("redis", args)
    assert seen == [(1, 50)]
    assert "redis-benchmark with 1 connection(s)" in render("redis", rows, args)


def test_reference_connections_must_be_a_positive_count(capsys):
    for wrong in ("0", "many"):
        with pytest.raises(SystemExit):
            build_parser("memcache").parse_args(["--reference-connections", wrong])
        assert "--reference-connections" in capsys.readouterr().err
