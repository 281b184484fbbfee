"""
Edges a user meets before anything works: a port that is taken, the TLS
extra that is not installed, the benchmark's wording.  Each says what
happened and what to do, in one line, and the process ends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """
    Run ``python argv...`` with this checkout first on ``sys.path`` (so the
    code under test is the code beside this file and ``twisted/plugins``
    here provides the ``twist`` commands); a process that hangs fails the
    test with ``TimeoutExpired`` (and is killed).
    """
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *argv],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": path},
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    """
    A loopback port some other process (this one) listens on.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        yield taken.getsockname()[1]


def assert_one_line_about_the_port(text: str, port: int) -> None:
    # twist's one-line notice that its log goes to stdout as JSON (stdout
    # is a pipe here) comes first; what the port problem says is one line.
    lines = [
        line
        for line in text.strip().splitlines()
        if "as JSON lines" not in line
    ]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    assert f"port {port} is already in use" in lines[0]
    assert "choose another port" in lines[0]


# -- a port that is taken ----------------------------------------------------------


@pytest.mark.slow
def test_reference_server_on_a_taken_port_says_so_in_one_line_and_exits_1(
    taken_port: int,
) -> None:
    result = run("-m", "framedclient.server", "--port", str(taken_port))
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert_one_line_about_the_port(result.stderr, taken_port)


@pytest.mark.slow
def test_twist_framedserver_on_a_taken_port_says_so_in_one_line_and_exits_1(
    taken_port: int,
) -> None:
    result = run("-m", "twisted", "framedserver", "--port", str(taken_port))
    assert result.returncode == 1, result.stderr
    assert_one_line_about_the_port(result.stderr, taken_port)
    assert "framedserver cannot start" in result.stderr


@pytest.mark.slow
def test_twist_framedclient_on_a_taken_port_says_what_to_do(taken_port: int) -> None:
    result = run(
        "-m",
        "twisted",
        "framedclient",
        "--http",
        f"tcp:{taken_port}:interface=127.0.0.1",
    )
    assert result.returncode == 1, result.stderr
    assert_one_line_about_the_port(result.stderr, taken_port)
    assert "framedclient cannot start" in result.stderr


# -- tls: without the TLS extra ----------------------------------------------------


@pytest.fixture
def without_tls_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Twisted's endpoints module as it is without pyOpenSSL: its TLS names were
    never imported, so parsing ``tls:`` raises ``NameError``.
    """
    import twisted.internet.endpoints as endpoints

    monkeypatch.delattr(endpoints, "optionsForClientTLS")


@pytest.mark.usefixtures("without_tls_extra")
def test_from_endpoint_tls_without_the_extra_says_how_to_install_it() -> None:
    from twisted.internet.testing import MemoryReactorClock

    from framedclient.client import FramedClient

    with pytest.raises(ImportError) as raised:
        FramedClient.from_endpoint(
            MemoryReactorClock(), "tls:localhost:9443", start=False
        )
    message = str(raised.value)
    assert "pip install 'framedclient[tls]'" in message
    assert "tls:localhost:9443" in message
    assert "optionsForClientTLS" not in message


@pytest.mark.usefixtures("without_tls_extra")
def test_twist_framedclient_upstream_tls_without_the_extra_says_how_to_install_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from framedclient.runner.options import Options

    with pytest.raises(SystemExit) as raised:
        Options().parseOptions(["--upstream", "tls:localhost:9443"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "--upstream 'tls:localhost:9443'" in err
    assert "pip install 'framedclient[tls]'" in err
    assert "optionsForClientTLS" not in err


# -- the benchmark's wording -------------------------------------------------------


def bench_report() -> dict[str, object]:
    """
    A two-client benchmark report (framedclient against raw at C=64), with
    just the fields the report formatters read.
    """

    def figure(value: float) -> dict[str, float]:
        return {"median": value, "min": value, "max": value}

    def result(kind: str, throughput: float) -> dict[str, object]:
        return {
            "kind": kind,
            "concurrency": 64,
            "throughput": figure(throughput),
            "latency": {"p50": 0.0005, "p90": 0.0006, "p99": 0.0007, "p999": 0.001},
            "cpu_per_request": figure(6e-6),
            "peak_rss": figure(50e6),
            "failed": 0,
        }

    return {
        "machine": {
            "cpu_model": "test CPU",
            "usable_cpus": 2,
            "os": "Linux",
            "python": "CPython 3.11",
            "twisted": "26.10",
            "reactor": "epoll",
        },
        "config": {
            "clients": ["framedclient"],
            "compare": ["raw"],
            "concurrency": [64],
            "connections": 1,
            "payload": 64,
            "runs": 1,
        },
        "results": [result("framedclient", 80_000.0), result("raw", 100_000.0)],
        "elapsed_seconds": 10.0,
    }


def test_bench_text_report_calls_them_performance_targets_without_issue_numbers() -> (
    None
):
    from framedclient.bench.report import text_report

    text = text_report(bench_report())
    assert "performance targets for framedclient:" in text
    assert "MISS  C=64 throughput ≥ 0.9x raw" in text
    assert "issue" not in text.lower()


def test_bench_markdown_calls_them_performance_targets_without_issue_numbers() -> (
    None
):
    from framedclient.bench.report import markdown_section

    text = markdown_section(bench_report(), "python -m framedclient.bench")
    assert "### Performance targets for `framedclient`" in text
    assert "issue" not in text.lower()


def test_benchmarks_page_headings_match_what_the_report_generates() -> None:
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert "### Performance targets for `framedclient`" in page
    assert "### Targets for" not in page
