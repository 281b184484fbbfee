"""
Live resharding under load: ``redis-cli --cluster reshard`` moves 2,000
slots between masters while 256 callers run mixed GET/SET/INCR through one
RedisClusterClient.  Every reply is right, none is lost, and every INCR the
client acknowledged is counted exactly once by the servers.  Its own
cluster; marked slow.
"""

from __future__ import annotations

import random
import subprocess
from collections import Counter

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.threads import deferToThread

from framedclient.clients.cluster import RedisClusterClient

from .redis_cluster_servers import redis_cluster

pytestmark = pytest.mark.slow

REQUESTS = 20_000
CALLERS = 256


@pytest.mark.timeout(240)
@pytest_twisted.ensureDeferred
async def test_live_resharding_loses_nothing_and_counts_each_incr_once(
    tmp_path,
) -> None:
    with redis_cluster(tmp_path) as cluster:
        client = RedisClusterClient.from_endpoint(
            reactor, cluster.seeds()[0], pool_size=2, request_timeout=10.0
        )
        try:
            await client.when_ready()
            values = {f"val:{i}": f"v{i}" for i in range(500)}
            for key, value in values.items():
                await client.set(key, value)
            counters = [f"ctr:{i}" for i in range(200)]
            acked: Counter[str] = Counter()
            outcomes: Counter[str] = Counter()
            masters = cluster.masters()
            source, target = sorted(masters)[:2]
            reshard = deferToThread(
                subprocess.run,
                [
                    cluster._cli,
                    "--cluster", "reshard", f"127.0.0.1:{cluster.ports[0]}",
                    "--cluster-from", source, "--cluster-to", target,
                    "--cluster-slots", "2000", "--cluster-yes",
                    "--cluster-pipeline", "50",
                ],
                capture_output=True,
                timeout=200,
            )  # fmt: skip
            moving = [True]
            reshard.addBoth(lambda result: moving.clear() or result)
            issued = [0]

            async def caller(seed: int) -> None:
                # At least REQUESTS, and for as long as the slots move.
                rng = random.Random(seed)
                while moving or issued[0] < REQUESTS:
                    issued[0] += 1
                    op = rng.random()
                    try:
                        if op < 0.4:
                            key = rng.choice(list(values))
                            got = await client.get(key)
                            ok = got == values[key].encode()
                        elif op < 0.7:
                            key = rng.choice(list(values))
                            ok = await client.set(key, values[key])
                        else:
                            key = rng.choice(counters)
                            await client.incr(key)
                            acked[key] += 1
                            ok = True
                    except Exception as e:
                        outcomes[type(e).__name__] += 1
                        continue
                    outcomes["ok" if ok else "wrong"] += 1

            await gatherResults([ensureDeferred(caller(i)) for i in range(CALLERS)])
            done = await reshard
            assert done.returncode == 0, done.stderr.decode()[-2000:]
            print(f"outcomes {dict(outcomes)}; {client.stats()['moved']} MOVED, "
                  f"{issued[0]} requests, "
                  f"{client.stats()['ask']} ASK")  # fmt: skip
            assert outcomes["ok"] == issued[0] >= REQUESTS, dict(outcomes)
            counted = await client.mget(*counters)
            assert {k: int(v or 0) for k, v in zip(counters, counted, strict=True)} == {
                k: acked[k] for k in counters
            }
        finally:
            await client.close(timeout=2)
