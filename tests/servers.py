"""
Real servers for integration tests: each fixture starts its program on a
free loopback port, waits until it accepts connections, and stops it by PID.

A missing program skips the test on a developer's machine, but fails it
under ``CI=true``: ``.ci/run`` installs every one of them, so a missing
server there is a broken CI, not a reason to pass.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest

from framedclient.bench.keyvalue import server_argv

__all__ = [
    "RealServer",
    "free_port",
    "memcached_server",
    "redis_server",
    "require_program",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def require_program(name: str, package: str) -> str:
    """
    The path of ``name``; skips the test when it is missing, or fails it
    under ``CI=true``.
    """
    path = shutil.which(name)
    if path is None:
        message = (
            f"{name} is not installed (Debian package {package}; .ci/run installs it)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": failing under CI=true")
        pytest.skip(message)
    return path


class RealServer:
    """
    One server process on 127.0.0.1:``port``; :meth:`restart` stops it and
    starts it again on the same port (for restart-under-load tests).
    """

    def __init__(self, argv: Sequence[str], port: int) -> None:
        self.argv = list(argv)
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    pytest.fail(f"{self.argv[0]} did not start on port {self.port}")
                time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def kill(self) -> None:
        """
        Stop at once (SIGKILL): connections reset mid-reply.
        """
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()


@contextmanager
def redis_server(workdir: str, *extra: str) -> Iterator[RealServer]:
    path = require_program("redis-server", "redis-server")
    port = free_port()
    server = RealServer(server_argv("redis", path, port, workdir, *extra), port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def memcached_server() -> Iterator[RealServer]:
    path = require_program("memcached", "memcached")
    port = free_port()
    # memcached refuses to run as root without -u root (CI is root).
    argv = server_argv("memcached", path, port, "", "-m", "64")
    server = RealServer(argv, port)
    server.start()
    try:
        yield server
    finally:
        server.stop()
