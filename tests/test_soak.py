"""
The soak (framedclient.bench.soak), short: thousands of requests through
the fault proxy to the reference server, every invariant asserted; and proof
that the soak notices when something is wrong.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import reactor

from framedclient.bench import soak
from framedclient.bench.soak import SoakConfig, SoakReport, parse_faults, run_soak
from framedclient.codecs import REPLY, REQUEST, FC1Codec
from framedclient.server import ReferenceServerFactory, ReferenceServerProtocol
from framedclient.testing import FAULT_KINDS

# Harsher than the default mix, so that a short run still breaks dozens of
# connections in every way the proxy knows.
SHORT_FAULTS = (
    "cut=0.8,cut_after=1:65536,split=0.02,split_max=16,merge=0.05,"
    "delay=0:0.002,corrupt_length=0.002,silence=0.1,silence_after=0:0.5,"
    "refuse=0.15,refuse_for=0.02:0.1"
)
SHORT = SoakConfig(
    requests=5_000, concurrency=256, seed=7, faults=SHORT_FAULTS, stall_timeout=15.0
)

_reports: dict[str, SoakReport] = {}


async def short_soak() -> SoakReport:
    """
    One short soak per test session, shared by the tests that read it.
    """
    if "short" not in _reports:
        _reports["short"] = await run_soak(reactor, SHORT)
    return _reports["short"]


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_short_soak_every_request_fires_exactly_once_with_its_own_reply():
    report = await short_soak()
    print(report.format())
    assert report.lost == 0
    assert report.fired_twice == 0
    assert report.wrong_reply == 0
    assert report.unexpected == {}
    assert report.logged_failures == {}
    assert sum(report.outcomes.values()) == SHORT.requests


@pytest_twisted.ensureDeferred
async def test_short_soak_really_injects_faults_and_still_mostly_succeeds():
    report = await short_soak()
    for kind in ("cut", "delay", "split", "merge", "corrupt_length", "refuse"):
        assert report.faults[kind] > 0, f"no {kind} fault injected: {report.faults}"
    # Faults cost requests, but most still succeed: a wrong reply could
    # not hide among failures.
    assert report.outcomes[soak.OK] > SHORT.requests // 2
    assert report.outcomes[soak.LOST_UNWRITTEN] == 0  # those are retried
    assert report.outcomes[soak.REMOTE_ERROR] > 0
    assert report.outcomes[soak.CANCELLED] > 0


@pytest_twisted.ensureDeferred
async def test_short_soak_releases_requests_timers_and_sockets_after_close():
    report = await short_soak()
    assert report.close_seconds is not None
    assert report.leftover_pending == 0
    assert report.leftover_in_flight == 0
    assert report.leftover_queued == 0
    assert report.leftover_client_timers == []
    assert report.leftover_reactor_timers == []
    assert all(n == 0 for n in report.live_per_request.values())
    assert report.client_sockets == 0
    assert report.connections_not_closed == []
    assert report.server_connections_left == 0


@pytest_twisted.ensureDeferred
async def test_short_soak_leaves_no_live_protocol_while_the_client_is_alive():
    report = await short_soak()
    assert report.live_protocols == 0
    assert report.released
    assert report.passed, report.failed_invariants


@pytest_twisted.ensureDeferred
async def test_short_soak_memory_stays_bounded():
    report = await short_soak()
    assert report.rss_peak_mb < 400
    assert report.rss_end_mb - report.rss_start_mb < 100


class _MixedUpServer(ReferenceServerProtocol):
    """
    A broken server: answers requests in pairs with their IDs swapped, so
    each reply reaches the other request.
    """

    _first_of_pair: tuple[int, bytes] | None = None

    def _handle(self, frames: list[bytes]) -> None:
        codec = self._codec
        for frame in frames:
            kind, request_id, body = codec.decode(frame)
            if kind != REQUEST:
                continue
            if self._first_of_pair is None:
                self._first_of_pair = (request_id, body)
                continue
            first_id, first_body = self._first_of_pair
            self._first_of_pair = None
            self._out.append(codec.encode(REPLY, first_id, body))
            self._out.append(codec.encode(REPLY, request_id, first_body))


class _MixedUpFactory(ReferenceServerFactory):
    def buildProtocol(self, addr):
        proto = _MixedUpServer(self.codec, self.clock)
        proto.factory = self
        return proto


@pytest_twisted.ensureDeferred
async def test_soak_catches_replies_delivered_to_the_wrong_request(monkeypatch):
    monkeypatch.setattr(soak, "ReferenceServerFactory", _MixedUpFactory)
    config = SoakConfig(
        requests=300, concurrency=32, faults="none", request_timeout=0.5
    )
    report = await run_soak(reactor, config)
    assert report.wrong_reply > 0
    assert not report.passed
    assert "FAIL" in report.format()


def test_judge_fails_on_each_broken_invariant():
    for name, value in (
        ("lost", 1),
        ("fired_twice", 1),
        ("wrong_reply", 1),
        ("unexpected", {"KeyError": 1}),
        ("logged_failures", {"AlreadyCalledError": 1}),
        ("leftover_client_timers", ["framedclient.x"]),
        ("live_protocols", 1),
    ):
        report = SoakReport(config={}, close_seconds=0.01)
        setattr(report, name, value)
        report.judge(max_rss_mb=0)
        assert not report.passed, name
    report = SoakReport(config={}, close_seconds=0.01)
    report.judge(max_rss_mb=0)
    assert report.passed
    report.rss_peak_mb = 2000
    report.judge(max_rss_mb=1024)
    assert not report.passed


def test_parse_faults_reads_ranges_and_rejects_unknown_names():
    schedule = parse_faults("cut=0.5,cut_after=1:4096,delay=0:0.002,throttle=1e6", 3)
    assert schedule.seed == 3
    assert schedule.cut == 0.5 and schedule.cut_after == (1, 4096)
    assert schedule.delay == (0.0, 0.002)
    assert schedule.throttle == 1e6
    assert parse_faults("none", 1).cut == 0.0
    parse_faults(soak.DEFAULT_FAULTS, 1)
    with pytest.raises(ValueError, match="bad fault"):
        parse_faults("explode=1", 1)
    with pytest.raises(ValueError):
        parse_faults("cut=2", 1)


@pytest.mark.slow
def test_soak_command_line_prints_a_report_and_exits_zero():
    env = dict(os.environ)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "framedclient.bench.soak",
            "--requests",
            "2000",
            "--concurrency",
            "128",
            "--seed",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    out = result.stdout
    assert "faults injected:" in out, result.stderr
    for kind in FAULT_KINDS:
        assert kind in out
    for row in ("lost (never fired)", "fired twice", "wrong reply", "peak RSS"):
        assert row in out
    assert "released after close: yes" in out, out
    assert "result: PASS" in out and result.returncode == 0, out


def test_soak_command_line_rejects_bad_arguments():
    result = subprocess.run(
        [sys.executable, "-m", "framedclient.bench.soak", "--requests", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "requests must be >= 1" in result.stderr


def test_codec_is_fc1_for_the_mixed_up_server():
    # The broken server above relies on the reference codec's framing.
    assert isinstance(ReferenceServerFactory(clock=reactor).codec, FC1Codec)
