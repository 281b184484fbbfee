"""
``python -m framedclient.bench stream``: both measurements run end to end
and report what docs/streams.md and docs/benchmarks.md quote.  (The figures
themselves are for a quiet machine; nothing here asserts a speed.)
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import reactor

from framedclient.bench.__main__ import main as bench_main
from framedclient.bench.stream_rate import flow_control, rate
from framedclient.server import ReferenceServerFactory, listen


@pytest_twisted.ensureDeferred
async def test_rate_alternates_stream_and_request_rounds_of_the_same_bytes():
    port = await listen(reactor, "tcp:0:interface=127.0.0.1")
    try:
        address = f"tcp:127.0.0.1:{port.getHost().port}"
        result = await rate(reactor, address, 300, 16, 8, 2)
    finally:
        await port.stopListening()
    assert (
        len(result["rounds"]["stream"]) == len(result["rounds"]["request_reply"]) == 2
    )
    assert len(result["rate_ratios"]) == 2 and result["rate_ratio"] > 0
    for side in ("stream", "request_reply"):
        median = result["median"][side]
        assert median["per_s"] > 0 and median["cpu_us_each"] >= 0


@pytest_twisted.ensureDeferred
async def test_flow_control_measures_plain_requests_alone_and_next_to_a_lagging_stream():
    server = ReferenceServerFactory(clock=reactor)
    port = await listen(reactor, "tcp:0:interface=127.0.0.1", server)
    try:
        address = f"tcp:127.0.0.1:{port.getHost().port}"
        result = await flow_control(reactor, address, count=10, every=0.005)
    finally:
        await port.stopListening()
    assert result["requests"] == 10
    assert result["answered"] == {
        "alone": 10,
        "next_to_lagging_stream": 10,
        "lagging_stream_on_its_own_client": 10,
    }
    assert {"p50", "p99"} <= set(result["next_to_lagging_stream"])
    # Each lagging stream was cancelled at its end: the server was told.
    assert server.cancels == 2


@pytest.mark.slow
def test_the_stream_subcommand_runs_against_a_server_process():
    # The command docs/benchmarks.md quotes, small: its own server process,
    # JSON out, exit status 0.
    command = [sys.executable, "-m", "framedclient.bench", "stream"]
    options = ["--parts", "2000", "--runs", "1", "--json", "--no-pin"]
    done = subprocess.run(
        command + options, capture_output=True, timeout=120, check=True
    )
    result = json.loads(done.stdout)
    assert result["parts"] == 2000 and result["rate_ratio"] > 0
    assert result["machine"]["pinned"] is False


def test_bad_arguments_are_refused_naming_them(capsys):
    with pytest.raises(SystemExit):
        bench_main(["stream", "--parts", "0"])
    assert "--parts must be at least 1" in capsys.readouterr().err
