"""
A real Redis Cluster for integration tests: six ``redis-server
--cluster-enabled yes`` on loopback (three masters, three replicas), joined
by ``redis-cli --cluster create ... --cluster-replicas 1``, ready once every
node's ``CLUSTER INFO`` says ``cluster_state:ok`` and all agree on the
slots; stopped by PID.

Follows tests/servers.py: a missing program skips the test locally and fails
it under ``CI=true``.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import attrs
import pytest

from framedclient.bench.keyvalue import server_argv

from .servers import RealServer, require_program

__all__ = ["RedisCluster", "redis_cluster"]


@attrs.frozen
class TlsFiles:
    """A CA and a server certificate (for 127.0.0.1) as PEM files."""

    ca: str
    cert: str
    key: str

    def server_args(self, port: int) -> tuple[str, ...]:
        return (
            "--port", "0", "--tls-port", str(port),
            "--tls-cluster", "yes", "--tls-replication", "yes",
            "--tls-cert-file", self.cert, "--tls-key-file", self.key,
            "--tls-ca-cert-file", self.ca, "--tls-auth-clients", "no",
        )  # fmt: skip

    def cli_args(self) -> tuple[str, ...]:
        return ("--tls", "--cacert", self.ca)


# A cluster node also listens on its bus port, port + 10000.
_BUS_OFFSET = 10000


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """``count`` loopback ports whose bus ports (port + 10000) are free too."""
    ports: list[int] = []
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20000, 40000)
        if port in ports or port + _BUS_OFFSET in ports:
            continue
        if _port_free(port) and _port_free(port + _BUS_OFFSET):
            ports.append(port)
            if len(ports) == count:
                return ports
    pytest.fail("no free loopback ports for a Redis cluster")  # pragma: no cover


class RedisCluster:
    """
    The running nodes; :meth:`cli` runs ``redis-cli`` against one of them.

    :ivar nodes: every node (masters first as created: the first three).
    """

    def __init__(
        self, cli: str, nodes: list[RealServer], tls: tuple[str, ...] = ()
    ) -> None:
        self._cli = cli
        self._tls = tls
        self.nodes = nodes

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def seeds(self) -> list[str]:
        """Endpoint strings of every node, as a client is given them."""
        return [f"tcp:127.0.0.1:{p}" for p in self.ports]

    def cli(self, port: int, *args: str) -> str:
        """``redis-cli -p port args...``; its output, stripped."""
        out = subprocess.run(
            [self._cli, *self._tls, "-h", "127.0.0.1", "-p", str(port), *args],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return out.stdout.decode().strip()

    def masters(self) -> dict[str, int]:
        """Node id -> port of each master that serves slots."""
        masters = {}
        for line in self.cli(self.ports[0], "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" in fields[2] and len(fields) > 8:
                masters[fields[0]] = int(fields[1].split(":")[1].split("@")[0])
        return masters

    def node_id(self, port: int) -> str:
        return self.cli(port, "CLUSTER", "MYID")

    def owner(self, slot: int) -> int:
        """The port of the master that serves ``slot`` (from CLUSTER SLOTS)."""
        for line in self.cli(self.ports[0], "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2]:
                continue
            for spec in fields[8:]:
                if spec.startswith("["):
                    continue
                lo, _, hi = spec.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return int(fields[1].split(":")[1].split("@")[0])
        raise LookupError(f"no master serves slot {slot}")

    def wait_until_ok(self, timeout: float = 30.0) -> None:
        """
        Until every node says ``cluster_state:ok``, all see the same slot
        owners (what a client reads must be what every node answers), and
        every replica is in sync with its master (``CLUSTER SLOTS`` lists
        a replica only then).
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = [self.cli(p, "CLUSTER", "INFO") for p in self.ports]
                views = {self._slots_view(p) for p in self.ports}
                replicas = [self.cli(p, "INFO", "replication") for p in self.ports]
                synced = sum("master_link_status:up" in r for r in replicas)
                if (
                    all("cluster_state:ok" in s for s in states)
                    and len(views) == 1
                    and synced == len(self.ports) // 2
                ):
                    return
            except subprocess.SubprocessError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the Redis cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def _slots_view(self, port: int) -> str:
        lines = self.cli(port, "CLUSTER", "NODES").splitlines()
        view = []
        for line in lines:
            fields = line.split()
            if "master" in fields[2] and len(fields) > 8:
                view.append(fields[0] + " " + " ".join(fields[8:]))
        return "\n".join(sorted(view))


@contextmanager
def redis_cluster(
    workdir: Path,
    *,
    node_timeout_ms: int = 1000,
    tls: TlsFiles | None = None,
    password: str | None = None,
) -> Iterator[RedisCluster]:
    """
    Six nodes, three masters with one replica each, each in its own
    directory under ``workdir``; stopped (by PID) on exit.  With ``tls``,
    every node takes TLS only (clients, the cluster bus, replication) with
    that certificate, and announces its TLS port.  With ``password``, every
    node requires it (``requirepass``; replicas use it as ``masterauth``),
    and :meth:`RedisCluster.cli` gives it.
    """
    server = require_program("redis-server", "redis-server")
    cli = require_program("redis-cli", "redis-tools")
    ports = cluster_ports(6)
    auth: tuple[str, ...] = ()
    cli_auth: tuple[str, ...] = ()
    if password is not None:
        auth = ("--requirepass", password, "--masterauth", password)
        cli_auth = ("-a", password, "--no-auth-warning")
    with ExitStack() as stack:
        nodes = []
        for port in ports:
            home = workdir / str(port)
            home.mkdir()
            argv = server_argv(
                "redis",
                server,
                port,
                str(home),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(home / "nodes.conf"),
                "--cluster-node-timeout",
                str(node_timeout_ms),
                *(tls.server_args(port) if tls is not None else ()),
                *auth,
            )
            node = RealServer(argv, port)
            node.start()
            stack.callback(node.stop)
            nodes.append(node)
        subprocess.run(
            [
                cli,
                *(tls.cli_args() if tls is not None else ()),
                *cli_auth,
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in ports],
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        cli_args = (*(tls.cli_args() if tls is not None else ()), *cli_auth)
        cluster = RedisCluster(cli, nodes, cli_args)
        cluster.wait_until_ok()
        yield cluster
