"""
The Redis client against a real redis-server: each reply reaches its own
caller, whatever the caller sends.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from framedclient import FramedClient
from framedclient.codecs.redis import RedisCodec, command, parse_reply
from framedclient.errors import InvalidRequest

from .servers import redis_server


@pytest.fixture
def redis(tmp_path):
    with redis_server(str(tmp_path)) as server:
        yield server


@pytest_twisted.ensureDeferred
async def test_a_raw_body_of_two_commands_is_refused_and_nothing_is_sent(redis):
    client = FramedClient.from_endpoint(
        reactor, f"tcp:127.0.0.1:{redis.port}", codec=RedisCodec(), pool_size=1
    )
    try:
        await client.when_ready()
        await client.request(command("SET", "a", "1"))
        two = command("SET", "b", "2") + command("PING")
        with pytest.raises(InvalidRequest, match="exactly one Redis command"):
            await client.request(two)
        # The next caller gets its own reply, and nothing of the refused
        # body reached the server.
        assert parse_reply(await client.request(command("GET", "a"))) == b"1"
        assert parse_reply(await client.request(command("EXISTS", "b"))) == 0
    finally:
        await client.close(timeout=2)
