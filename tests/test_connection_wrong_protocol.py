"""
A client pointed at a server that speaks another protocol: its timeouts say
so (issue 21, item 5), instead of only "the server is slow".
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from framedclient.client import FramedClient
from framedclient.codecs import REPLY
from framedclient.errors import RequestTimeout
from framedclient.protocol import ProtocolConfig

from .servers import redis_server
from .wire import connect, outcomes


def timeout_message(d) -> str:
    (result,) = outcomes([d])
    assert result.check(RequestTimeout), result
    return str(result.value)


def test_nothing_read_at_all_hints_at_the_protocol():
    proto, peer, clock = connect(ProtocolConfig(request_timeout=1.0))
    d = proto.request(b"hello")
    clock.advance(1.0)
    text = timeout_message(d)
    assert "no reply within 1 s" in text
    assert "nothing at all" in text
    assert "may not speak fc1" in text


def test_bytes_that_never_make_a_frame_are_named():
    proto, peer, clock = connect(ProtocolConfig(request_timeout=1.0))
    d = proto.request(b"hello")
    proto.dataReceived(b"\x00\x00\x01")  # a third of an fc1 header
    clock.advance(1.0)
    text = timeout_message(d)
    assert "3 bytes" in text
    assert "not one complete fc1 frame" in text
    assert "may not speak fc1" in text


def test_a_server_that_answered_before_is_only_slow():
    proto, peer, clock = connect(ProtocolConfig(request_timeout=1.0))
    first = proto.request(b"first")
    clock.advance(0)
    ((_, rid, _),) = peer.received()
    peer.send(REPLY, rid, b"first")
    assert outcomes([first]) == [b"first"]
    d = proto.request(b"second")
    clock.advance(1.0)
    text = timeout_message(d)
    assert "speak" not in text
    assert "the server is slow" in text


def test_a_late_reply_proves_the_protocol_too():
    proto, peer, clock = connect(ProtocolConfig(request_timeout=1.0))
    first = proto.request(b"first")
    clock.advance(0)
    ((_, rid, _),) = peer.received()
    clock.advance(1.0)
    assert "may not speak" in timeout_message(first)
    peer.send(REPLY, rid, b"late")
    d = proto.request(b"second")
    clock.advance(1.0)
    assert "speak" not in timeout_message(d)


@pytest.fixture
def redis(tmp_path):
    with redis_server(str(tmp_path)) as server:
        yield server


@pytest_twisted.ensureDeferred
async def test_an_fc1_client_pointed_at_redis_is_told_the_protocol_may_be_wrong(
    redis,
):
    client = FramedClient.from_endpoint(
        reactor, f"tcp:127.0.0.1:{redis.port}", pool_size=1, request_timeout=0.5
    )
    try:
        with pytest.raises(RequestTimeout) as caught:
            await client.request(b"GET k")
        text = str(caught.value)
        assert "may not speak fc1" in text, text
        assert f"127.0.0.1:{redis.port}" in text
    finally:
        await client.close()
