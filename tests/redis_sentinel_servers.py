"""
A real Redis Sentinel setup for integration tests: a master, one replica
and three sentinels (quorum 2, ``down-after-milliseconds`` 1000) on
loopback, each in its own directory; ready once the replica is in sync and
every sentinel knows the replica and the two other sentinels; stopped by
PID.  Follows tests/servers.py: a missing program skips locally and fails
under ``CI=true``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from framedclient.bench.keyvalue import server_argv

from .servers import RealServer, free_port, require_program

__all__ = ["SentinelSetup", "redis_sentinels"]

SERVICE = "fcmaster"


class SentinelSetup:
    """
    :ivar master: the first master's server.
    :ivar replica: its replica's.
    :ivar sentinels: the three sentinels'.
    """

    def __init__(
        self,
        cli: str,
        master: RealServer,
        replica: RealServer,
        sentinels: list[RealServer],
    ) -> None:
        self._cli = cli
        self.master = master
        self.replica = replica
        self.sentinels = sentinels

    def endpoints(self) -> list[str]:
        return [f"tcp:127.0.0.1:{s.port}" for s in self.sentinels]

    def cli(self, port: int, *args: str) -> str:
        out = subprocess.run(
            [self._cli, "-h", "127.0.0.1", "-p", str(port), *args],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return out.stdout.decode().strip()

    def master_port(self) -> int:
        """The master's port as the first sentinel names it now."""
        answer = self.cli(
            self.sentinels[0].port, "SENTINEL", "get-master-addr-by-name", SERVICE
        )
        return int(answer.split()[1])

    def wait_until(self, check: object, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():  # type: ignore[operator]
                    return
            except subprocess.SubprocessError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the sentinel setup did not {what}")
            time.sleep(0.1)


@contextmanager
def redis_sentinels(workdir: Path) -> Iterator[SentinelSetup]:
    server = require_program("redis-server", "redis-server")
    cli = require_program("redis-cli", "redis-tools")
    with ExitStack() as stack:

        def run(argv: list[str], port: int) -> RealServer:
            node = RealServer(argv, port)
            node.start()
            stack.callback(node.stop)
            return node

        homes = []
        for name in ("master", "replica", "s1", "s2", "s3"):
            home = workdir / name
            home.mkdir()
            homes.append(home)
        mport = free_port()
        master = run(server_argv("redis", server, mport, str(homes[0])), mport)
        rport = free_port()
        replica = run(
            server_argv(
                "redis", server, rport, str(homes[1]),
                "--replicaof", "127.0.0.1", str(mport),
            ),
            rport,
        )  # fmt: skip
        sentinels = []
        for home in homes[2:]:
            port = free_port()
            conf = home / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {home}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {mport} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            sentinels.append(run([server, str(conf), "--sentinel"], port))
        setup = SentinelSetup(cli, master, replica, sentinels)
        setup.wait_until(
            lambda: "master_link_status:up" in setup.cli(rport, "INFO", "replication"),
            "sync the replica",
        )

        def known() -> bool:
            for s in sentinels:
                info = setup.cli(s.port, "SENTINEL", "MASTER", SERVICE).split()
                fields = dict(zip(info[::2], info[1::2], strict=False))
                if fields.get("num-slaves") != "1":
                    return False
                if fields.get("num-other-sentinels") != "2":
                    return False
            return True

        setup.wait_until(known, "see the replica and each other")
        yield setup
