"""
RedisClient through Redis Sentinel (framedclient.clients.sentinel) against
a real master, replica and three sentinels (tests/redis_sentinel_servers.py).
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import Clock, deferLater

from framedclient.clients.sentinel import from_sentinel

from .redis_sentinel_servers import SERVICE, redis_sentinels


@pytest.mark.parametrize(
    ("sentinels", "service", "error", "match"),
    [
        (None, SERVICE, TypeError, "sentinels must be an endpoint string or a list"),
        ([], SERVICE, ValueError, "sentinels is empty"),
        ("tcp:127.0.0.1:26379", "", ValueError, "service must be the master's name"),
    ],
)
def test_bad_arguments_are_refused_naming_them(sentinels, service, error, match):
    with pytest.raises(error, match=match):
        from_sentinel(Clock(), sentinels, service, start=False)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_writes_resume_on_the_new_master_after_a_failover(tmp_path) -> None:
    with redis_sentinels(tmp_path) as setup:
        client = from_sentinel(
            reactor, setup.endpoints(), SERVICE, pool_size=2, request_timeout=2.0
        )
        try:
            await client.when_ready()
            assert await client.set("before", "1") is True
            first = setup.master.port
            acked: list[int] = []
            failed: list[str] = []
            start = time.monotonic()
            killed: list[float] = []
            resumed: list[float] = []

            async def writer(w: int) -> None:
                i = 0
                while time.monotonic() - start < 12:
                    i += 1
                    value = w * 1_000_000 + i
                    sent = time.monotonic()
                    try:
                        await client.execute("SADD", "written", value)
                        acked.append(value)
                        if killed and sent > killed[0] and not resumed:
                            resumed.append(time.monotonic() - killed[0])
                    except Exception as e:
                        failed.append(type(e).__name__)
                        await deferLater(reactor, 0.05, lambda: None)

            def kill() -> None:
                killed.append(time.monotonic())
                setup.master.kill()

            reactor.callLater(1.0, kill)
            await gatherResults([ensureDeferred(writer(w)) for w in range(16)])
            setup.wait_until(lambda: setup.master_port() != first, "fail over")
            assert setup.master_port() == setup.replica.port
            # Writes resumed on the new master, through the same client.
            assert await client.set("after", "2") is True
            stored = {int(v) for v in await client.execute("SMEMBERS", "written")}
            missing = [v for v in acked if v not in stored]
            print(
                f"{len(acked)} writes acknowledged, {len(failed)} failed "
                f"({sorted(set(failed))}); {len(missing)} acknowledged but lost "
                f"(asynchronous replication)"
            )
            print(
                f"writes resumed {resumed[0]:.2f} s after the kill" if resumed else ""
            )
            assert resumed, "no write sent after the kill succeeded"
            assert len(acked) > 1000
            # Only writes acknowledged just before the kill may be missing:
            # what the replica had not received yet.
            assert len(missing) <= 0.01 * len(acked)
        finally:
            await client.close(timeout=2)
