"""
``twist framedclient`` and ``twist framedserver`` as real processes: plugin
discovery, the startup line, serving, SIGTERM drain and exit status.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool

from framedclient.client import FramedClient

pytestmark = pytest.mark.slow

TWIST = str(Path(sys.executable).with_name("twist"))


class TwistProcess(ProcessProtocol):
    """
    A ``twist --log-format json ...`` child: parses its log events and
    fires :attr:`found` with the first event that has ``wanted`` as a
    field.
    """

    def __init__(self, wanted: str) -> None:
        self.wanted = wanted
        self.events: list[dict[str, Any]] = []
        self.stderr = b""
        self._buffer = b""
        self.found: Deferred[dict[str, Any]] = Deferred()
        self.ended: Deferred[tuple[int | None, int | None]] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            # jsonFileLogObserver starts each record with RS (0x1e).
            line = line.strip(b"\x1e \r")
            if not line:
                continue
            event = json.loads(line)
            self.events.append(event)
            if self.wanted in event and not self.found.called:
                self.found.callback(event)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        if not self.found.called:
            self.found.errback(
                RuntimeError(f"exited before logging {self.wanted}: {self.log_text()}")
            )
        value = reason.value
        self.ended.callback((value.exitCode, value.signal))

    def messages(self) -> list[str]:
        return [str(e.get("log_format", "")).split("{")[0] for e in self.events]

    def log_text(self) -> str:
        return "\n".join(self.messages()) + "\nstderr: " + self.stderr.decode()


def spawn(wanted: str, *argv: str) -> TwistProcess:
    proto = TwistProcess(wanted)
    reactor.spawnProcess(
        proto,
        TWIST,
        [TWIST, "--log-format", "json", *argv],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # Not the checkout: the plugin must be found through the install.
        path="/",
    )
    proto.found.addTimeout(30, reactor)
    return proto


def http_client() -> HTTPClient:
    return HTTPClient(
        Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
    )


def test_twist_help_lists_both_plugins():
    result = subprocess.run(
        [TWIST, "--help"], cwd="/", capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    commands = [
        line.split()[0]
        for line in result.stdout.splitlines()
        if line.startswith("    ")
    ]
    assert "framedclient" in commands
    assert "framedserver" in commands


@pytest_twisted.ensureDeferred
async def test_sigterm_drains_the_in_flight_request_and_exits_0():
    proc = spawn(
        "http_url",
        "framedclient",
        "--http",
        "tcp:0:interface=127.0.0.1",
        "--pool-size",
        "2",
        "--drain-timeout",
        "5",
    )
    try:
        startup = await proc.found
    except Exception:
        proc.transport.signalProcess("KILL")
        raise
    url = startup["http_url"].rstrip("/")
    assert startup["log_format"].startswith("framedclient ready")
    assert "embedded reference server" in startup["upstreams"]
    http = http_client()
    # The embedded backend is up once /healthz says so.
    for _ in range(200):
        health = await http.get(url + "/healthz")
        await health.content()
        if health.code == 200:
            break
        await deferLater(reactor, 0.02, lambda: None)
    response = await http.post(url + "/v1/request", data=b"hello")
    assert (response.code, await response.content()) == (200, b"hello")

    slow = http.post(url + "/v1/request?timeout=5", data=b"!delay:0.5 slow")
    for _ in range(200):
        stats = await http.get(url + "/v1/stats")
        if json.loads(await stats.content())["gateway"]["in_flight"] == 1:
            break
        await deferLater(reactor, 0.01, lambda: None)
    else:
        raise AssertionError("the slow request never reached the gateway")
    proc.transport.signalProcess("TERM")

    response = await slow
    assert response.code == 200
    assert await response.content() == b"!delay:0.5 slow"
    exit_code, signal = await proc.ended.addTimeout(20, reactor)
    assert (exit_code, signal) == (0, None), proc.log_text()
    messages = proc.messages()
    assert "SIGTERM: stopping gracefully" in messages
    assert "framedclient stopped" in messages
    assert not any(
        e.get("log_level", {}).get("name") == "critical" for e in proc.events
    )


@pytest_twisted.ensureDeferred
async def test_port_in_use_is_a_logged_failure_and_exit_1():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = spawn(
            "never", "framedclient", "--http", f"tcp:{port}:interface=127.0.0.1"
        )
        proc.found.addErrback(lambda _: None)
        exit_code, _ = await proc.ended.addTimeout(20, reactor)
    assert exit_code == 1, proc.log_text()
    assert any("cannot start" in m for m in proc.messages()), proc.log_text()


@pytest_twisted.ensureDeferred
async def test_twist_framedserver_serves_fc1():
    proc = spawn("port", "framedserver", "--listen", "tcp:0:interface=127.0.0.1")
    try:
        event = await proc.found
        client = FramedClient.from_endpoint(
            reactor, f"tcp:127.0.0.1:{event['port']}", pool_size=1
        )
        try:
            assert await client.request(b"ping") == b"ping"
        finally:
            await client.close()
    finally:
        proc.transport.signalProcess("TERM")
        exit_code, signal = await proc.ended.addTimeout(20, reactor)
    # twist re-raises SIGTERM after a clean stop: killed by it, not crashed.
    assert exit_code == 0 or signal == 15
