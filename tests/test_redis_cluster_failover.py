"""
A master SIGKILLed under load: its replica takes over (cluster-node-timeout
1 s), and RedisClusterClient follows it, re-reading the slot map when the
node's connection is gone, without a wrong reply.  Its own cluster (it
loses a node), marked slow.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import deferLater

from framedclient.clients.cluster import RedisClusterClient
from framedclient.clients.slots import key_slot

from .redis_cluster_servers import redis_cluster

pytestmark = pytest.mark.slow


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_reads_follow_a_failover_with_no_wrong_reply(tmp_path) -> None:
    with redis_cluster(tmp_path) as cluster:
        client = RedisClusterClient.from_endpoint(
            reactor, cluster.seeds()[0], pool_size=1, request_timeout=5.0
        )
        try:
            await client.when_ready()
            keys = [f"fo:{i}" for i in range(300)]
            for key in keys:
                await client.set(key, key)
            victim_slot = key_slot(keys[0])
            port = cluster.owner(victim_slot)
            victim = next(n for n in cluster.nodes if n.port == port)
            outcomes: Counter[str] = Counter()
            recovered: list[float] = []
            killed: list[float] = []
            start = time.monotonic()

            async def reader(i: int) -> None:
                j = i
                while time.monotonic() - start < 8:
                    key = keys[j % len(keys)]
                    j += 7
                    sent = time.monotonic()
                    try:
                        value = await client.get(key)
                    except Exception as e:
                        outcomes[type(e).__name__] += 1
                        await deferLater(reactor, 0.01, lambda: None)
                        continue
                    outcomes["ok" if value == key.encode() else "wrong"] += 1
                    if (
                        killed
                        and sent > killed[0]
                        and not recovered
                        and key_slot(key) == victim_slot
                    ):
                        recovered.append(time.monotonic() - killed[0])

            def kill() -> None:
                killed.append(time.monotonic())
                victim.kill()

            reactor.callLater(1.0, kill)
            await gatherResults([ensureDeferred(reader(i)) for i in range(256)])
            total = sum(outcomes.values())
            after = f"{recovered[0]:.2f} s" if recovered else "never"
            print(f"outcomes {dict(outcomes)}; the killed master's slots read {after}")
            assert outcomes["wrong"] == 0
            # Never sent, so sent again: not the caller's failure.
            assert outcomes["ClientClosed"] == outcomes["Unavailable"] == 0
            assert outcomes["ok"] >= 0.99 * total
            assert recovered, "the client never read the killed master's slots again"
            assert f"127.0.0.1:{port}" not in client.stats()["masters"]
        finally:
            await client.close(timeout=2)
