"""
``python -m framedclient.bench hostile``: the gateway against hostile HTTP
clients at full size (the test suite runs them scaled down, for time).

``non-reading``
    40 connections (``--clients``) each ``POST !size:16000000`` with a
    4 KiB receive buffer and never read.  Reports the gateway's RSS before,
    while the clients hold their connections, and its peak (``VmHWM``), next
    to what the reply budget says it holds.  The promise: growth at most
    100 MB (the 64 MiB reply budget plus one reply in transit).
``slowloris``
    ``twist framedclient`` with ``RLIMIT_NOFILE=1024`` set in its process;
    1,100 connections (``--connections``) each send a partial header and
    then one more byte every second.  Meanwhile ``/livez`` and ``/readyz``
    are probed (each on a new connection, like a load balancer); reports how
    many answered 200 and how fast, and how many trickling connections the
    gateway evicted.

Both start ``twist framedclient`` (embedded demo backend) on a free loopback
port and stop it with SIGTERM.  Example::

    python -m framedclient.bench hostile non-reading
    python -m framedclient.bench hostile slowloris
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from framedclient.bench.serverproc import start_gateway

__all__ = ["main", "non_reading", "slowloris"]

MB = 1_000_000

#: A free port on the loopback interface only.
_LOOPBACK_0 = "tcp:0:interface=127.0.0.1"


def _status(url: str, path: str, timeout: float = 5.0) -> tuple[int, float]:
    """(status, seconds) of one GET on a new connection; 0 if it failed."""
    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    start = time.monotonic()
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            head = sock.recv(65536)
        return int(head.split(b" ", 2)[1]), time.monotonic() - start
    except (OSError, ValueError, IndexError):
        return 0, time.monotonic() - start


def _stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/v1/stats", timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.terminate()
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _framedserver() -> tuple[subprocess.Popen[bytes], int]:
    """``twist framedserver`` on a free loopback port, and the port."""
    twist = str(Path(sys.executable).with_name("twist"))
    proc = subprocess.Popen(
        [twist, "--log-format", "json", "framedserver", "--listen", _LOOPBACK_0],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.strip(b"\x1e \r\n")
        if line.startswith(b"{") and b'"port"' in line:
            # Not read again: it logs a line per start, nothing per request.
            return proc, int(json.loads(line)["port"])
    raise RuntimeError("twist framedserver did not start")


def non_reading(
    clients: int = 40, size: int = 16_000_000, hold: float = 5.0, embedded: bool = False
) -> dict[str, Any]:
    """
    ``clients`` non-reading ``POST !size:SIZE``; the gateway's memory.  The
    upstream is a separate ``twist framedserver`` unless ``embedded``, so
    that the figures are the gateway's alone (the embedded demo backend
    writes all its replies at once, and its buffers count in the same RSS).
    """
    server = None
    argv: list[str] = []
    if not embedded:
        server, server_port = _framedserver()
        argv = ["--upstream", f"tcp:127.0.0.1:{server_port}"]
    try:
        result = _non_reading(argv, clients, size, hold)
    finally:
        if server is not None:
            _stop(server)
    result["embedded_backend"] = embedded
    return result


def _non_reading(
    argv: list[str], clients: int, size: int, hold: float
) -> dict[str, Any]:
    proc, url = start_gateway(argv)
    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    socks: list[socket.socket] = []
    try:
        before = _memory(proc.pid)
        body = b"!size:%d" % size
        for _ in range(clients):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((host, int(port)))
            sock.sendall(
                b"POST /v1/request?timeout=120 HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            socks.append(sock)
        deadline = time.monotonic() + 120
        while True:
            stats = _stats(url)
            if sum(stats["gateway"]["responses"].values()) >= clients:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"not every request was answered: {stats['gateway']}"
                )
            time.sleep(0.2)
        held = []
        end = time.monotonic() + hold
        while time.monotonic() < end:
            held.append(_memory(proc.pid)["VmRSS"])
            time.sleep(0.2)
        stats = _stats(url)
        after = _memory(proc.pid)
    finally:
        for sock in socks:
            sock.close()
        exit_code = _stop(proc)
    gateway = stats["gateway"]
    return {
        "clients": clients,
        "reply_bytes": size,
        "rss_before": before["VmRSS"],
        "rss_held_max": max(held),
        "rss_growth_held": max(held) - before["VmRSS"],
        "rss_peak_growth": after["VmHWM"] - before["VmRSS"],
        "held_reply_bytes": gateway["held_reply_bytes"],
        "peak_reply_bytes": gateway["peak_reply_bytes"],
        "max_reply_bytes": gateway["max_reply_bytes"],
        "responses": gateway["responses"],
        "exit_code": exit_code,
    }


def _nofile(limit: int) -> Callable[[], None]:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return lower


def slowloris(
    connections: int = 1100, nofile: int = 1024, duration: float = 10.0
) -> dict[str, Any]:
    """
    ``connections`` trickling connections against a gateway whose
    ``RLIMIT_NOFILE`` is ``nofile``; probes of ``/livez`` and ``/readyz``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < connections + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, connections + 256), hard))
    proc, url = start_gateway(
        ["--pool-size", "1", "--http-header-timeout", "60"], preexec=_nofile(nofile)
    )
    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    attack: list[socket.socket] = []
    probes: list[tuple[str, int, float]] = []
    connect_failures = 0
    try:
        for i in range(connections):
            try:
                sock = socket.create_connection((host, int(port)), timeout=5)
                sock.sendall(b"GET / HTTP/1.1\r\nX-")
                attack.append(sock)
            except OSError:
                connect_failures += 1
            if i % 100 == 99:
                for path in ("/livez", "/readyz"):
                    probes.append((path, *_status(url, path)))
        end = time.monotonic() + duration
        while time.monotonic() < end:
            for sock in attack:
                try:
                    sock.sendall(b"a")
                except OSError:
                    pass  # evicted
            for path in ("/livez", "/readyz"):
                probes.append((path, *_status(url, path)))
            time.sleep(1.0)
        stats = _stats(url)
    finally:
        for sock in attack:
            sock.close()
        exit_code = _stop(proc)
    ok = [p for p in probes if p[1] == 200]
    return {
        "connections": connections,
        "rlimit_nofile": nofile,
        "probes": len(probes),
        "probes_200": len(ok),
        "probe_max_seconds": max(p[2] for p in probes),
        "failed_probes": [p for p in probes if p[1] != 200],
        "connect_failures": connect_failures,
        "http_connections_evicted": stats["gateway"].get("http_connections_evicted"),
        "http_connections_refused": stats["gateway"].get("http_connections_refused"),
        "exit_code": exit_code,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m framedclient.bench hostile",
        description="The gateway against hostile HTTP clients, full size.",
    )
    sub = parser.add_subparsers(dest="what", required=True)
    nr = sub.add_parser("non-reading", help="clients that never read 16 MB replies")
    nr.add_argument("--clients", type=int, default=40)
    nr.add_argument("--size", type=int, default=16_000_000)
    nr.add_argument(
        "--embedded",
        action="store_true",
        help="use the embedded demo backend (its buffers count in the RSS)",
    )
    sl = sub.add_parser("slowloris", help="trickling connections past RLIMIT_NOFILE")
    sl.add_argument("--connections", type=int, default=1100)
    sl.add_argument("--nofile", type=int, default=1024)
    sl.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.what == "non-reading":
        result = non_reading(args.clients, args.size, embedded=args.embedded)
    else:
        result = slowloris(args.connections, args.nofile, args.duration)
    result["machine"] = (
        f"{platform.node()} {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}"
    )
    print(json.dumps(result, indent=1))
    return 0
