"""
Servers and clients in their own processes, and making sure they go away.

The server must not share a process (or, on a two-core machine, a core)
with the client being measured, or the client's CPU time would include the
server's.  A benchmark that leaves a server running after an error or a
Ctrl-C is a benchmark nobody runs twice, so :class:`ServerProcess` kills
what it started on every way out, and on Linux the children also die with
the benchmark if it is killed outright (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = [
    "AMP_SERVER_COMMAND",
    "REFERENCE_SERVER_COMMAND",
    "ServerProcess",
    "child_setup",
    "free_port",
    "process_cpu_seconds",
    "start_gateway",
    "start_on_port",
    "wait_for_port",
]

#: The fc1 reference server on an ephemeral loopback port.
REFERENCE_SERVER_COMMAND: tuple[str, ...] = (
    "-m",
    "framedclient.server",
    "--port",
    "0",
    "--host",
    "127.0.0.1",
)
#: The AMP echo server of :mod:`framedclient.bench.baselines`.
AMP_SERVER_COMMAND: tuple[str, ...] = (
    "-m",
    "framedclient.bench.baselines",
    "amp-server",
    "--port",
    "0",
    "--host",
    "127.0.0.1",
)

_LISTENING = re.compile(r"listening on (?P<host>[^\s:]+):(?P<port>\d+)")
_PR_SET_PDEATHSIG = 1


def child_setup(cpu: int | None) -> Callable[[], None]:
    """
    A ``preexec_fn`` for benchmark children: die with the parent (Linux),
    and run on ``cpu`` alone when given, so server and client each keep one
    core of a two-core machine and do not migrate mid-run.
    """

    def setup() -> None:
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            except (OSError, AttributeError):
                pass
        if cpu is not None and hasattr(os, "sched_setaffinity"):
            try:
                os.sched_setaffinity(0, {cpu})
            except OSError:
                pass

    return setup


def free_port() -> int:
    """
    A TCP port free on 127.0.0.1 just now, for a server that must be told
    its port (redis-server, memcached).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    """
    Return once 127.0.0.1:``port`` accepts connections.

    :raises RuntimeError: ``proc`` exited first, or 10 s went by.
    """
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{proc.args!r} did not start") from None
            time.sleep(0.05)


def start_on_port(
    argv: Sequence[str], port: int, cpu: int | None
) -> subprocess.Popen[bytes]:
    """
    Start ``argv``, a server told to listen on 127.0.0.1:``port``, on
    ``cpu``, its output discarded; return once it accepts connections.

    :raises RuntimeError: it exited or did not listen within 10 s (it is
        killed then: nothing is left running).
    """
    proc = subprocess.Popen(
        list(argv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=child_setup(cpu),
    )
    try:
        wait_for_port(port, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def start_gateway(
    argv: Sequence[str], preexec: Callable[[], None] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """
    Start ``twist framedclient`` with ``argv`` on a free loopback port and
    return it and its URL once ``/readyz`` answers 200.

    It logs JSON to a file, not a pipe: a pipe nobody reads during the run
    would fill and stall the gateway.

    :raises RuntimeError: it exited, or was not ready within 60 s (it is
        killed then); the message holds its log.
    """
    twist = str(Path(sys.executable).with_name("twist"))
    log = Path(tempfile.mkdtemp()) / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(twist, "--log-format", "json", "framedclient"),
                *("--http", "tcp:0:interface=127.0.0.1"),
                *argv,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=preexec,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        for line in log.read_bytes().split(b"\n"):
            line = line.strip(b"\x1e \r")
            if line.startswith(b"{") and b'"http_url"' in line:
                url: str = json.loads(line)["http_url"].rstrip("/")
                if _ready(url, deadline):
                    return proc, url
                break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise RuntimeError("twist framedclient did not start:\n" + log.read_text())


def _ready(url: str, deadline: float) -> bool:
    # /readyz: 200 once the upstream pool has a connection.
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def process_cpu_seconds(pid: int) -> float | None:
    """
    User plus system CPU seconds used so far by process ``pid``, or ``None``
    where that cannot be read (no ``/proc``).
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            # The command name may contain spaces; fields resume after ")".
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class ServerProcess:
    """
    A server started as ``python ARGS...``, ready once it printed its
    "listening on HOST:PORT" line.

    Use as a context manager; the process is terminated (then killed) on
    exit, whatever the exit.

    :param args: arguments after the interpreter, e.g.
        :data:`REFERENCE_SERVER_COMMAND`.
    :param cpu: pin the server to this CPU, or ``None``.
    :param startup_timeout: seconds to wait for the listening line.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        cpu: int | None = None,
        startup_timeout: float = 20.0,
        python: str = sys.executable,
    ) -> None:
        self.args = [python, *args]
        self.cpu = cpu
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.host = ""
        self.port = 0
        self._stderr: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the server process is not started")
        return self.process.pid

    def cpu_seconds(self) -> float | None:
        """
        CPU seconds the server has used so far (``None`` if unknown).
        """
        return process_cpu_seconds(self.pid)

    def start(self) -> ServerProcess:
        """
        Start the server and wait for its listening line.

        :raises RuntimeError: the server exited or stayed silent past
            ``startup_timeout``; its stderr is in the message.
        """
        # stderr to a file, not a pipe: nobody reads it while the benchmark
        # runs, and a full pipe would block the server.
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            preexec_fn=child_setup(self.cpu),
        )
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        deadline = time.monotonic() + self.startup_timeout
        seen = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(
                    f"{' '.join(self.args)} printed no listening line within "
                    f"{self.startup_timeout:g} s{self._stderr_tail()}"
                )
            ready, _, _ = select.select([stdout], [], [], left)
            if not ready:
                continue
            line = stdout.readline()
            if not line:
                code = self.process.wait(timeout=5)
                raise RuntimeError(
                    f"{' '.join(self.args)} exited with status {code} before "
                    f"listening{self._stderr_tail()}"
                )
            seen += line
            match = _LISTENING.search(line.decode("utf-8", "replace"))
            if match:
                self.host = match["host"]
                self.port = int(match["port"])
                return

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read()[-2000:].decode("utf-8", "replace").strip()
        return f"; its stderr:\n{text}" if text else ""

    def stop(self) -> None:
        """
        Terminate the server, kill it if it lingers, and reap it.  Safe to
        call more than once.
        """
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None and process.stdout is not None:
            process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
