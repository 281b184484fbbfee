"""
``twist framedclient --workers 2`` as real processes on 127.0.0.1, against
the embedded demo backend: both workers serve the one socket, any worker's
``/metrics`` and ``/v1/stats`` add all of them up, SIGTERM drains every
worker and exits 0, and a killed worker is restarted with its counts kept.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater

from framedclient.runner.app import RunnerService, makeService
from framedclient.runner.options import Options, UsageExit
from tests.test_runner_process import TwistProcess, http_client, spawn

pytestmark = pytest.mark.slow

#: Rounds of concurrent requests sent until both workers have served some;
#: the kernel hands each connection to whichever worker accepts first.
ROUNDS = 30


@asynccontextmanager
async def two_workers(*argv: str) -> AsyncIterator[tuple[TwistProcess, str]]:
    proc = spawn(
        "http_url",
        "framedclient",
        *("--workers", "2", "--http", "tcp:0:interface=127.0.0.1"),
        *("--pool-size", "1", "--drain-timeout", "5"),
        *argv,
    )
    try:
        startup = await proc.found
        url = startup["http_url"].rstrip("/")
        http = http_client()
        for _ in range(500):
            health = await http.get(url + "/readyz")
            await health.content()
            if health.code == 200:
                break
            await deferLater(reactor, 0.02, lambda: None)
        yield proc, url
    finally:
        if proc.transport.pid is not None:  # type: ignore[attr-defined]
            for pid in worker_pids(proc):
                _kill(pid)
            proc.transport.signalProcess("KILL")
            await proc.ended


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def worker_pids(proc: TwistProcess) -> set[int]:
    """Every worker process the supervisor reported as ready."""
    return {
        e["pid"]
        for e in proc.events
        if str(e.get("log_format", "")).startswith("framedclient worker")
    }


async def stats(url: str) -> dict[str, Any]:
    response = await http_client().get(url + "/v1/stats")
    assert response.code == 200
    result: dict[str, Any] = json.loads(await response.content())
    return result


async def post_many(url: str, bodies: list[bytes]) -> list[tuple[int, bytes]]:
    http = http_client()

    async def one(body: bytes) -> tuple[int, bytes]:
        response = await http.post(url + "/v1/request", data=body)
        return response.code, await response.content()

    result: list[tuple[int, bytes]] = await gatherResults(
        [Deferred.fromCoroutine(one(b)) for b in bodies]
    )
    return result


async def until_both_served(url: str) -> dict[str, Any]:
    """Send rounds of concurrent requests until each worker answered some."""
    for _ in range(ROUNDS):
        replies = await post_many(url, [b"r%d" % i for i in range(20)])
        assert {code for code, _ in replies} == {200}
        current = await stats(url)
        if all(w["requests"]["ok"] for w in current["workers"]):
            return current
    raise AssertionError(f"one worker served everything: {current['workers']}")


@pytest_twisted.ensureDeferred
async def test_both_workers_serve_and_any_workers_metrics_add_up_all():
    async with two_workers() as (proc, url):
        current = await until_both_served(url)
        workers = current["workers"]
        assert [w["worker"] for w in workers] == [0, 1]
        assert len({w["pid"] for w in workers}) == 2
        ok = sum(w["requests"]["ok"] for w in workers)
        assert current["requests"]["ok"] == ok
        assert current["latency"]["count"] == ok
        assert current["gateway"]["responses"]["200"] == ok
        assert current["workers"] and current["connections"]["ready"] == 2

        response = await http_client().get(url + "/metrics")
        text = (await response.content()).decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        requests = {
            s.labels["outcome"]: s.value
            for s in families["framedclient_requests"].samples
        }
        assert requests["ok"] == ok
        per_worker = {
            s.labels["worker"]: s.value
            for s in families["framedclient_worker_requests"].samples
            if s.labels["outcome"] == "ok"
        }
        assert per_worker == {
            "0": workers[0]["requests"]["ok"],
            "1": workers[1]["requests"]["ok"],
        }
        latency_count = next(
            s.value
            for s in families["framedclient_request_latency_seconds"].samples
            if s.name.endswith("_count") and s.labels["outcome"] == "ok"
        )
        assert latency_count == ok
        ready = {
            s.labels["state"]: s.value
            for s in families["framedclient_connections"].samples
        }
        assert ready["ready"] == 2  # one upstream connection per worker
        build = families["framedclient_build_info"].samples
        assert [s.value for s in build] == [1]

        state_response = await http_client().get(url + "/debug/state")
        state = json.loads(await state_response.content())
        assert sorted(u["name"].split("/")[0] for u in state["upstreams"]) == [
            "w0",
            "w1",
        ]


@pytest_twisted.ensureDeferred
async def test_sigterm_drains_in_flight_requests_on_every_worker_and_exits_0():
    async with two_workers() as (proc, url):
        await until_both_served(url)
        pending: list[Deferred[list[tuple[int, bytes]]]] = []
        for round_ in range(ROUNDS):
            bodies = [b"!delay:2 slow%d-%d" % (round_, i) for i in range(8)]
            pending.append(Deferred.fromCoroutine(post_many(url, bodies)))
            await deferLater(reactor, 0.2, lambda: None)
            workers = (await stats(url))["workers"]
            if all(w["http_in_flight"] for w in workers):
                break
        else:
            raise AssertionError("the slow requests never reached both workers")
        proc.transport.signalProcess("TERM")
        for batch in pending:
            for code, body in await batch:
                assert code == 200
                assert body.startswith(b"!delay:2 slow")
        exit_code, signal_number = await proc.ended.addTimeout(30, reactor)
        assert (exit_code, signal_number) == (0, None), proc.log_text()
        messages = proc.messages()
        assert messages.count("framedclient stopped") == 3, proc.log_text()
        assert not any(
            e.get("log_level", {}).get("name") in ("critical", "error")
            for e in proc.events
        ), proc.log_text()


@pytest_twisted.ensureDeferred
async def test_a_killed_worker_is_restarted_and_its_counts_are_kept():
    async with two_workers() as (proc, url):
        before = await until_both_served(url)
        victim = before["workers"][1]
        os.kill(victim["pid"], signal.SIGKILL)
        for _ in range(500):
            current = await stats(url)
            worker = current["workers"][1]
            if worker["up"] and worker["pid"] != victim["pid"]:
                break
            await deferLater(reactor, 0.02, lambda: None)
        else:
            raise AssertionError(f"worker 1 was not restarted: {proc.log_text()}")
        assert worker["restarts"] == 1
        assert worker["requests"]["ok"] == victim["requests"]["ok"]
        assert current["requests"]["ok"] == before["requests"]["ok"]
        assert any(
            "restarting it in" in str(e.get("log_format")) and e["worker"] == 1
            for e in proc.events
        )
        replies = await post_many(url, [b"after"] * 5)
        assert replies == [(200, b"after")] * 5
        response = await http_client().get(url + "/metrics")
        text = (await response.content()).decode()
        assert 'framedclient_worker_restarts_total{worker="1"} 1.0' in text
        proc.transport.signalProcess("TERM")
        exit_code, _ = await proc.ended.addTimeout(30, reactor)
        assert exit_code == 0, proc.log_text()


# -- options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0"], "--workers '0': must be a whole number from 1 to 256"),
        (["--workers", "two"], "--workers 'two': must be a whole number"),
        (
            ["--workers", "2", "--http", "unix:/tmp/fc.sock"],
            "--http 'unix:/tmp/fc.sock': --workers above 1 shares tcp: and tcp6:",
        ),
        (
            ["--workers", "2", "--listen", "unix:/tmp/fc.sock"],
            "--listen 'unix:/tmp/fc.sock': --workers above 1 shares tcp:",
        ),
    ],
)
def test_bad_workers_options_fail_on_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
):
    with pytest.raises(UsageExit):
        Options().parseOptions(argv)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err


def test_one_worker_is_the_single_process_gateway_without_a_supervisor():
    options = Options()
    options.parseOptions(["--workers", "1", "--http", "tcp:0:interface=127.0.0.1"])
    service = makeService(options)
    assert isinstance(service, RunnerService)
    assert service.link is None and service.gateway.cluster is None


@pytest_twisted.ensureDeferred
async def test_ctrl_c_to_the_whole_group_stops_the_workers_once_without_restarts():
    async with two_workers() as (proc, url):
        current = await stats(url)
        pids = [w["pid"] for w in current["workers"]]
        # What a terminal's Ctrl-C does: SIGINT to every process of the group.
        for pid in [proc.transport.pid, *pids]:  # type: ignore[attr-defined]
            os.kill(pid, signal.SIGINT)
        exit_code, signal_number = await proc.ended.addTimeout(30, reactor)
        # twist reports a Ctrl-C by dying of SIGINT after its graceful stop.
        assert (exit_code, signal_number) in ((0, None), (None, signal.SIGINT))
        assert proc.messages().count("framedclient stopped") == 3, proc.log_text()
        assert not any(
            "restarting it in" in str(e.get("log_format")) for e in proc.events
        ), proc.log_text()


@pytest_twisted.ensureDeferred
async def test_the_supervisor_says_ready_only_once_every_worker_has_an_upstream():
    from framedclient.server import listen
    from tests.test_runner_gateway import free_port

    port = free_port()  # nothing listens there yet
    proc = spawn(
        "http_url",
        "framedclient",
        *("--workers", "2", "--http", "tcp:0:interface=127.0.0.1"),
        *("--pool-size", "1", "--backoff", "constant:0.1"),
        *("--upstream", f"tcp:127.0.0.1:{port}"),
    )
    try:
        startup = await proc.found
        assert startup["log_format"].startswith(
            "framedclient listening; upstream not reachable yet in 2 of 2 workers"
        ), proc.log_text()
        assert "refused" in startup["reason"].lower()
        assert ready_lines(proc) == []
        server = await listen(reactor, f"tcp:{port}:interface=127.0.0.1")
        try:
            for _ in range(500):
                if ready_lines(proc):
                    break
                await deferLater(reactor, 0.02, lambda: None)
            else:
                raise AssertionError(proc.log_text())
        finally:
            await server.stopListening()
        assert len(ready_lines(proc)) == 1  # once
    finally:
        if proc.transport.pid is not None:  # type: ignore[attr-defined]
            for pid in worker_pids(proc):
                _kill(pid)
            proc.transport.signalProcess("KILL")
            await proc.ended


def ready_lines(proc: TwistProcess) -> list[str]:
    return [m for m in proc.messages() if m.startswith("framedclient ready")]
