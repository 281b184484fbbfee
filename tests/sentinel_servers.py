"""
A real Redis Sentinel deployment for integration tests: one master, one
replica (``--replicaof``) and three sentinels (``redis-server --sentinel``,
each with its own generated ``sentinel.conf``), on free loopback ports.

:func:`sentinel_group` starts them and waits until every sentinel knows the
master, the replica and the two other sentinels (so a failover can be
voted at once), and stops every process by PID afterwards.  The timeouts
are short (``down-after-milliseconds`` 1000), so a killed master is
replaced within a few seconds.  Like :mod:`tests.servers`, a missing
``redis-server`` skips locally and fails under ``CI=true``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import attrs
import pytest

from framedclient.codecs.redis import RespFramer, command, parse_reply

from .servers import RealServer, free_port, redis_server, require_program

__all__ = ["SentinelGroup", "ask", "sentinel_group"]

SERVICE = "mymaster"


def ask(
    port: int, *args: str | int, timeout: float = 2.0, password: str | None = None
) -> object:
    """
    One command to 127.0.0.1:``port`` on a blocking socket (the fixture
    runs outside the reactor), after ``AUTH password`` when given; its
    parsed reply.
    """
    framer = RespFramer()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        wanted = 1
        if password is not None:
            s.sendall(command("AUTH", password))
            wanted = 2
        s.sendall(command(*args))
        frames: list[bytes] = []
        while len(frames) < wanted:
            data = s.recv(65536)
            if not data:
                raise ConnectionError(f"127.0.0.1:{port} closed the connection")
            frames += framer.feed(data)
        return parse_reply(frames[wanted - 1])


@attrs.define
class SentinelGroup:
    """
    :ivar master: the master at start (it may be killed by a test).
    :ivar replica: its replica at start.
    :ivar sentinels: the three sentinels.
    :ivar service: the name they monitor the master under.
    :ivar password: the master's and the replica's (``requirepass``).
    :ivar sentinel_password: the sentinels' own (``requirepass``).
    """

    master: RealServer
    replica: RealServer
    sentinels: list[RealServer]
    service: str = SERVICE
    password: str | None = None
    sentinel_password: str | None = None

    @property
    def sentinel_endpoints(self) -> list[str]:
        return [f"tcp:127.0.0.1:{s.port}" for s in self.sentinels]

    def master_port(self) -> int | None:
        """The master's port, as the first sentinel that answers sees it."""
        for s in self.sentinels:
            try:
                reply = ask(
                    s.port,
                    "SENTINEL",
                    "get-master-addr-by-name",
                    self.service,
                    password=self.sentinel_password,
                )
            except OSError:
                continue
            if isinstance(reply, list):
                return int(reply[1])  # type: ignore[arg-type]
        return None


def _sentinel_conf(
    workdir: str,
    port: int,
    master_port: int,
    password: str | None,
    sentinel_password: str | None,
) -> str:
    path = os.path.join(workdir, f"sentinel-{port}.conf")
    with open(path, "w") as f:
        if password is not None:
            f.write(f"sentinel auth-pass {SERVICE} {password}\n")
        if sentinel_password is not None:
            # The sentinels talk to each other with it too.
            f.write(f"requirepass {sentinel_password}\n")
            f.write(f"sentinel sentinel-pass {sentinel_password}\n")
        f.write(
            f"port {port}\n"
            f"bind 127.0.0.1\n"
            f"dir {workdir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 3000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
    return path


def _ready(group: SentinelGroup) -> str | None:
    # What is still missing, or None when every sentinel sees the whole
    # deployment.
    info = ask(group.replica.port, "INFO", "replication", password=group.password)
    if b"master_link_status:up" not in info:  # type: ignore[operator]
        return "the replica has not synced with the master"
    for s in group.sentinels:
        replicas = ask(
            s.port, "SENTINEL", "replicas", SERVICE, password=group.sentinel_password
        )
        ports = set()
        for entry in replicas:  # type: ignore[union-attr]
            fields = dict(zip(entry[::2], entry[1::2], strict=True))
            if b"s_down" not in fields[b"flags"]:
                ports.add(int(fields[b"port"]))
        if group.replica.port not in ports:
            return f"sentinel {s.port} does not know the replica yet"
        others = ask(
            s.port, "SENTINEL", "sentinels", SERVICE, password=group.sentinel_password
        )
        if len(others) < 2:  # type: ignore[arg-type]
            return f"sentinel {s.port} knows {len(others)} other sentinels"  # type: ignore[arg-type]
    return None


@contextmanager
def sentinel_group(
    workdir: str,
    *,
    password: str | None = None,
    sentinel_password: str | None = None,
) -> Iterator[SentinelGroup]:
    """
    Master, replica and three sentinels, running and known to each other;
    with ``password``, the master and replica require it (and the replica
    and the sentinels use it); with ``sentinel_password``, the sentinels
    require theirs.
    """
    path = require_program("redis-server", "redis-server")
    dirs = [os.path.join(workdir, name) for name in ("master", "replica")]
    for d in dirs:
        os.makedirs(d, exist_ok=True)
    auth: tuple[str, ...] = ()
    if password is not None:
        auth = ("--requirepass", password, "--masterauth", password)
    with redis_server(dirs[0], *auth) as master:
        replicaof = ("--replicaof", "127.0.0.1", str(master.port))
        with redis_server(dirs[1], *replicaof, *auth) as replica:
            sentinels: list[RealServer] = []
            try:
                for _ in range(3):
                    port = free_port()
                    conf = _sentinel_conf(
                        workdir, port, master.port, password, sentinel_password
                    )
                    sentinel = RealServer([path, conf, "--sentinel"], port)
                    sentinels.append(sentinel)
                    sentinel.start()
                group = SentinelGroup(
                    master,
                    replica,
                    sentinels,
                    password=password,
                    sentinel_password=sentinel_password,
                )
                deadline = time.monotonic() + 30
                while (missing := _ready(group)) is not None:
                    if time.monotonic() > deadline:
                        pytest.fail(
                            f"the Sentinel deployment did not settle: {missing}"
                        )
                    time.sleep(0.1)
                yield group
            finally:
                for sentinel in sentinels:
                    sentinel.stop()
