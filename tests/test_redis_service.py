"""
:class:`RedisClient` embedded as a Twisted citizen, against a real
redis-server: under :class:`FramedClientService`, in ``async with``, and
under ``twistd`` as docs/twistd.md shows it.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from framedclient import FramedClientService, RedisClient
from framedclient.errors import ClientClosed

from .servers import redis_server
from .test_doc_samples import _run_twistd

TWISTD_DOC = Path(__file__).resolve().parents[1] / "docs" / "twistd.md"


@pytest.fixture
def server(tmp_path):
    with redis_server(str(tmp_path)) as server:
        yield server


def endpoint(server) -> str:
    return f"tcp:127.0.0.1:{server.port}"


@pytest_twisted.ensureDeferred
async def test_redis_client_runs_under_framed_client_service(server):
    service = FramedClientService(
        lambda: RedisClient.from_endpoint(reactor, endpoint(server), start=False),
        drain_timeout=2.0,
    )
    assert service.client is None
    service.startService()
    redis = service.client
    assert isinstance(redis, RedisClient)
    await redis.when_ready()
    assert await redis.set("k", b"v") is True
    assert await redis.get("k") == b"v"
    await service.stopService()
    assert service.client is None
    with pytest.raises(ClientClosed):
        await redis.get("k")


@pytest_twisted.ensureDeferred
async def test_redis_client_is_closed_on_leaving_async_with(server):
    async with RedisClient.from_endpoint(reactor, endpoint(server)) as redis:
        assert isinstance(redis, RedisClient)
        assert await redis.incr("n") == 1
    with pytest.raises(ClientClosed):
        await redis.incr("n")


@pytest_twisted.ensureDeferred
async def test_redis_client_with_start_false_connects_only_once_started(server):
    redis = RedisClient.from_endpoint(reactor, endpoint(server), start=False)
    try:
        assert redis.stats()["connections"].get("ready", 0) == 0
        redis.start()
        await redis.when_ready()
        assert redis.stats()["connections"]["ready"] >= 1
    finally:
        await redis.close(2)


@pytest_twisted.ensureDeferred
async def test_redis_stats_and_metrics_are_reachable_without_dot_client(server):
    async with RedisClient.from_endpoint(reactor, endpoint(server)) as redis:
        await redis.set("k", b"v")
        await redis.get("k")
        assert redis.metrics is redis.client.metrics
        stats = redis.stats()
        assert stats["metrics"]["requests"]["ok"] == 2
        assert stats["in_flight"] == 0
        assert redis.debug_state()["upstreams"]


def _doc_tac(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", TWISTD_DOC.read_text(), re.S)
    (block,) = [b for b in blocks if marker in b]
    return block


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_redis_client_runs_under_twistd_as_documented(server, tmp_path):
    tac = tmp_path / "visits.tac"
    code = _doc_tac("RedisClient.from_endpoint")
    tac.write_text(code.replace("127.0.0.1:6379", f"127.0.0.1:{server.port}"))
    # Twice: the client serves the timer's calls, not just the first.
    status, log = _run_twistd(tac, "visits: 2")
    assert status in (0, -signal.SIGTERM), log
    assert "Server Shut Down." in log and "Traceback" not in log, log
    async with RedisClient.from_endpoint(reactor, endpoint(server)) as redis:
        assert int(await redis.get("visits")) >= 2
