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
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager

import attrs
import pytest

from framedclient.bench.keyvalue import server_argv
from framedclient.codecs.redis import RespFramer, command, parse_reply

from .redis_cluster_servers import TlsFiles
from .servers import RealServer, free_port, redis_server, require_program

__all__ = ["SentinelGroup", "TlsFiles", "ask", "sentinel_group", "tls_files"]

SERVICE = "mymaster"


def tls_files(home: str) -> TlsFiles:
    """
    A CA and a server certificate valid for 127.0.0.1 (and localhost),
    written under ``home``; the CA alone is also in ``home/roots``, the
    directory a ``tls:`` endpoint's ``trustRoots=`` takes.
    """
    from tests.test_tls import cert_pem, key_pem, make_ca, make_server_cert

    ca_key, ca = make_ca("framedclient sentinel TLS test CA")
    key, cert = make_server_cert(ca_key, ca)
    os.makedirs(os.path.join(home, "roots"), exist_ok=True)
    for path, data in (
        ("roots/ca.pem", cert_pem(ca)),
        ("ca.pem", cert_pem(ca)),
        ("server.crt", cert_pem(cert)),
        ("server.key", key_pem(key)),
    ):
        with open(os.path.join(home, path), "wb") as f:
            f.write(data)
    return TlsFiles(
        os.path.join(home, "ca.pem"),
        os.path.join(home, "server.crt"),
        os.path.join(home, "server.key"),
    )


def _tls_server_args(tls: TlsFiles, port: int) -> tuple[str, ...]:
    # TLS only: the plain port closed, replication over TLS.
    return (
        "--port", "0", "--tls-port", str(port), "--tls-replication", "yes",
        "--tls-cert-file", tls.cert, "--tls-key-file", tls.key,
        "--tls-ca-cert-file", tls.ca, "--tls-auth-clients", "no",
    )  # fmt: skip


def ask(
    port: int,
    *args: str | int,
    timeout: float = 2.0,
    password: str | None = None,
    tls: TlsFiles | None = None,
) -> object:
    """
    One command to 127.0.0.1:``port`` on a blocking socket (the fixture
    runs outside the reactor), after ``AUTH password`` when given, over
    TLS verified against ``tls.ca`` when given; its parsed reply.
    """
    framer = RespFramer()
    with _connect(port, timeout, tls) as s:
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


def _connect(port: int, timeout: float, tls: TlsFiles | None) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls is None:
        return s
    context = ssl.create_default_context(cafile=tls.ca)
    return context.wrap_socket(s, server_hostname="127.0.0.1")


@attrs.define
class SentinelGroup:
    """
    :ivar master: the master at start (it may be killed by a test).
    :ivar replica: its replica at start.
    :ivar sentinels: the three sentinels.
    :ivar service: the name they monitor the master under.
    :ivar password: the master's and the replica's (``requirepass``).
    :ivar sentinel_password: the sentinels' own (``requirepass``).
    :ivar tls: with it, every server takes TLS only (and replicates and
        watches over TLS).
    """

    master: RealServer
    replica: RealServer
    sentinels: list[RealServer]
    service: str = SERVICE
    password: str | None = None
    sentinel_password: str | None = None
    tls: TlsFiles | None = None

    @property
    def sentinel_endpoints(self) -> list[str]:
        if self.tls is not None:
            roots = os.path.join(os.path.dirname(self.tls.ca), "roots")
            return [
                f"tls:127.0.0.1:{s.port}:trustRoots={roots}" for s in self.sentinels
            ]
        return [f"tcp:127.0.0.1:{s.port}" for s in self.sentinels]

    def ask(self, port: int, *args: str | int, **options: object) -> object:
        """:func:`ask`, over TLS when the group takes it."""
        return ask(port, *args, tls=self.tls, **options)  # type: ignore[arg-type]

    def master_port(self) -> int | None:
        """The master's port, as the first sentinel that answers sees it."""
        for s in self.sentinels:
            try:
                reply = self.ask(
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
    tls: TlsFiles | None = None,
) -> str:
    path = os.path.join(workdir, f"sentinel-{port}.conf")
    with open(path, "w") as f:
        if tls is not None:
            # Listens on TLS only, and reaches the servers and the other
            # sentinels over TLS (tls-replication).
            f.write(
                f"port 0\ntls-port {port}\ntls-replication yes\n"
                f"tls-cert-file {tls.cert}\ntls-key-file {tls.key}\n"
                f"tls-ca-cert-file {tls.ca}\ntls-auth-clients no\n"
            )
        if password is not None:
            f.write(f"sentinel auth-pass {SERVICE} {password}\n")
        if sentinel_password is not None:
            # The sentinels talk to each other with it too.
            f.write(f"requirepass {sentinel_password}\n")
            f.write(f"sentinel sentinel-pass {sentinel_password}\n")
        f.write(
            ("" if tls is not None else f"port {port}\n") + f"bind 127.0.0.1\n"
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
    info = group.ask(group.replica.port, "INFO", "replication", password=group.password)
    if b"master_link_status:up" not in info:  # type: ignore[operator]
        return "the replica has not synced with the master"
    for s in group.sentinels:
        replicas = group.ask(
            s.port, "SENTINEL", "replicas", SERVICE, password=group.sentinel_password
        )
        ports = set()
        for entry in replicas:  # type: ignore[union-attr]
            fields = dict(zip(entry[::2], entry[1::2], strict=True))
            # Seen up and in sync: what a client reading from replicas
            # takes as usable.
            if (
                b"s_down" not in fields[b"flags"]
                and fields.get(b"master-link-status") == b"ok"
            ):
                ports.add(int(fields[b"port"]))
        if group.replica.port not in ports:
            return f"sentinel {s.port} does not see the replica up and in sync yet"
        others = group.ask(
            s.port, "SENTINEL", "sentinels", SERVICE, password=group.sentinel_password
        )
        if len(others) < 2:  # type: ignore[arg-type]
            return f"sentinel {s.port} knows {len(others)} other sentinels"  # type: ignore[arg-type]
    return None


@contextmanager
def _redis_server(
    workdir: str, tls: TlsFiles | None, *extra: str
) -> Iterator[RealServer]:
    if tls is None:
        with redis_server(workdir, *extra) as server:
            yield server
        return
    path = require_program("redis-server", "redis-server")
    port = free_port()
    argv = server_argv("redis", path, port, workdir, *extra)
    server = RealServer([*argv, *_tls_server_args(tls, port)], port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def sentinel_group(
    workdir: str,
    *,
    password: str | None = None,
    sentinel_password: str | None = None,
    tls: TlsFiles | None = None,
) -> Iterator[SentinelGroup]:
    """
    Master, replica and three sentinels, running and known to each other;
    with ``password``, the master and replica require it (and the replica
    and the sentinels use it); with ``sentinel_password``, the sentinels
    require theirs; with ``tls`` (see :func:`tls_files`), all five take
    TLS only.
    """
    path = require_program("redis-server", "redis-server")
    dirs = [os.path.join(workdir, name) for name in ("master", "replica")]
    for d in dirs:
        os.makedirs(d, exist_ok=True)
    auth: tuple[str, ...] = ()
    if password is not None:
        auth = ("--requirepass", password, "--masterauth", password)
    with _redis_server(dirs[0], tls, *auth) as master:
        replicaof = ("--replicaof", "127.0.0.1", str(master.port))
        with _redis_server(dirs[1], tls, *replicaof, *auth) as replica:
            sentinels: list[RealServer] = []
            try:
                for _ in range(3):
                    port = free_port()
                    conf = _sentinel_conf(
                        workdir, port, master.port, password, sentinel_password, tls
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
                    tls=tls,
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
