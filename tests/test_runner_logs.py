"""
What ``twist framedclient`` and ``python -m framedclient.server`` log at
startup (issue 21): "ready" only once an upstream connection is, else
"listening; upstream not reachable yet" with the error; a word on stderr
when twist chose JSON on its own; sockets named by purpose, not by class.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.logger import formatEvent, globalLogPublisher

from framedclient.runner.app import log_format_note
from framedclient.runner.workers import _NoAccept
from framedclient.server import listen

from .test_runner_gateway import free_port, running, wait_until


@contextmanager
def captured_log() -> Iterator[list[str]]:
    texts: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        texts.append(formatEvent(event) or "")

    globalLogPublisher.addObserver(observe)
    try:
        yield texts
    finally:
        globalLogPublisher.removeObserver(observe)


def lines_with(texts: list[str], start: str) -> list[str]:
    return [t for t in texts if t.startswith(start)]


# -- "ready" means an upstream connection is ------------------------------------


@pytest_twisted.ensureDeferred
async def test_ready_is_not_logged_while_nothing_listens_on_the_upstream():
    port = free_port()  # nothing listens there yet
    with captured_log() as texts:
        async with running(
            "--upstream",
            f"tcp:127.0.0.1:{port}",
            "--backoff",
            "constant:0.05",
            wait_ready=False,
        ) as runner:
            await wait_until(lambda: lines_with(texts, "framedclient listening"))
            (line,) = lines_with(texts, "framedclient listening")
            assert "upstream not reachable yet: " in line
            assert "refused" in line.lower()  # the connect error itself
            assert f"upstream=tcp:127.0.0.1:{port}" in line
            assert lines_with(texts, "framedclient ready") == []
            # The upstream comes up: now, and only now, "ready".
            server = await listen(reactor, f"tcp:{port}:interface=127.0.0.1")
            try:
                await runner.client.when_ready().addTimeout(10, reactor)
                await wait_until(lambda: lines_with(texts, "framedclient ready"))
                assert len(lines_with(texts, "framedclient ready")) == 1
                # Said once, not per failed attempt.
                assert len(lines_with(texts, "framedclient listening")) == 1
            finally:
                await server.stopListening()


@pytest_twisted.ensureDeferred
async def test_ready_with_a_reachable_upstream_and_the_http_socket_by_its_purpose():
    with captured_log() as texts:
        async with running(wait_ready=True):
            await wait_until(lambda: lines_with(texts, "framedclient ready"))
    assert lines_with(texts, "framedclient listening") == []
    assert any(t.startswith("framedclient HTTP starting on ") for t in texts), texts
    assert not any("_TrackingFactory" in t or "GatewaySite" in t for t in texts)


@pytest_twisted.ensureDeferred
async def test_the_workers_shared_socket_is_named_by_its_purpose():
    with captured_log() as texts:
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            _NoAccept("HTTP")
        )
        number = port.getHost().port
        await port.stopListening()
    starting = [t for t in texts if "starting on" in t]
    assert starting == [
        f"framedclient HTTP (shared by the workers) starting on {number}"
    ]


# -- JSON logs, said ----------------------------------------------------------------


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize(
    ("argv", "tty", "says"),
    [
        (["framedclient"], False, "to stdout (not a terminal) as JSON lines"),
        (["--reactor", "epoll", "framedclient", "--pool-size", "2"], False, "JSON"),
        (["--log-file", "/var/log/fc.log", "framedclient"], True, "/var/log/fc.log"),
        (["--log-file=/tmp/x.log", "framedclient"], True, "/tmp/x.log"),
        (["framedclient"], True, None),  # a terminal: text, nothing to say
        (["--log-format", "json", "framedclient"], False, None),  # asked for
        (["--log-format=text", "framedclient"], False, None),
        (["--log-file", "+", "framedclient"], False, None),
        (["-m", "pytest"], False, None),  # not started by twist
    ],
)
def test_json_logs_chosen_by_twist_are_said_once(argv, tty, says):
    note = log_format_note(argv, _Stream(tty))
    if says is None:
        assert note is None
    else:
        assert note is not None and says in note
        assert "--log-format text" in note


def test_twist_says_on_stderr_that_its_log_is_json(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "twisted",
            "framedclient",
            "--http",
            "tcp:0:interface=127.0.0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(tmp_path),
    )
    try:
        first = proc.stdout.readline() if proc.stdout else ""
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert first.lstrip("\x1e").startswith("{")  # JSON, as twist chose
    assert err.count("as JSON lines") == 1, err


# -- the reference server -----------------------------------------------------------


def test_python_m_framedclient_server_says_what_it_is():
    proc = subprocess.Popen(
        [sys.executable, "-m", "framedclient.server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert line.startswith("framedclient.server (fc1 reference server) listening on ")
    assert "framedserver" not in line
