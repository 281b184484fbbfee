"""
The Redis (RESP2) codec: framing of nested replies, in-order matching, and a
real redis-server on loopback when one is installed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from framedclient import FramedClient, RemoteError
from framedclient.codecs.redis import (
    RedisCodec,
    RespError,
    RespFramer,
    command,
    parse_reply,
)
from framedclient.errors import CorruptFrame, FrameTooLarge, ProtocolError
from framedclient.protocol import FramedProtocol, ProtocolConfig

from .wire import outcomes


def to_resp(value) -> bytes:
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, str):  # simple string
        return b"+%s\r\n" % value.encode()
    return b"*%d\r\n" % len(value) + b"".join(to_resp(v) for v in value)


values = st.recursive(
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.binary(max_size=40)
    | st.text("abcXYZ 01", max_size=10),
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(values, min_size=1, max_size=8), st.data())
def test_any_replies_split_anywhere_come_out_whole_and_in_order(replies, data):
    stream = b"".join(to_resp(v) for v in replies)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)))))
    framer = RespFramer()
    frames = []
    last = 0
    for cut in [*cuts, len(stream)]:
        frames += framer.feed(stream[last:cut])
        last = cut
    assert frames == [to_resp(v) for v in replies]
    assert framer.buffered == 0


def test_one_byte_at_a_time_parses_a_large_array_linearly():
    reply = to_resp([b"x" * 10] * 20_000)
    framer = RespFramer()
    frames = []
    for i in range(len(reply)):
        frames += framer.feed(reply[i : i + 1])
    assert frames == [reply]


def test_a_bulk_string_over_max_frame_is_refused_before_buffering():
    framer = RespFramer(max_frame=1024)
    with pytest.raises(FrameTooLarge):
        framer.feed(b"$1000000\r\n")
    assert framer.buffered < 64
    with pytest.raises(ProtocolError):
        framer.feed(b"+OK\r\n")  # broken for good: close the connection


def test_garbage_is_a_protocol_error_with_the_replies_before_it():
    framer = RespFramer()
    with pytest.raises(CorruptFrame) as info:
        framer.feed(b"+OK\r\n?what\r\n")
    assert info.value.frames == [b"+OK\r\n"]
    with pytest.raises(ProtocolError):
        framer.feed(b"$x\r\n")


def test_parse_reply_gives_python_values():
    assert parse_reply(b"+OK\r\n") == b"OK"
    assert parse_reply(b":-7\r\n") == -7
    assert parse_reply(b"$-1\r\n") is None
    nested = parse_reply(b"*3\r\n$1\r\na\r\n*1\r\n:1\r\n-ERR inner\r\n")
    assert nested[:2] == [b"a", [1]]
    assert isinstance(nested[2], RespError) and str(nested[2]) == "ERR inner"
    assert command("SET", b"k", 5) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n"


def test_replies_are_matched_in_order_and_errors_fail_their_request():
    clock = Clock()
    proto = FramedProtocol(ProtocolConfig(codec=RedisCodec()), clock)
    transport = StringTransport()
    proto.makeConnection(transport)
    ds = [proto.request(command("GET", f"k{i}")) for i in range(3)]
    clock.advance(0)
    assert transport.value().count(b"GET") == 3
    proto.dataReceived(b"$2\r\nv0\r\n-WRONGTYPE no\r\n*2\r\n:1\r")
    proto.dataReceived(b"\n:2\r\n")
    r0, r1, r2 = outcomes(ds)
    assert r0 == b"$2\r\nv0\r\n"
    assert r1.check(RemoteError) and r1.value.message == "WRONGTYPE no"
    assert parse_reply(r2) == [1, 2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_port():
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        pytest.fail("redis-server did not start")
                    time.sleep(0.05)
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


@pytest_twisted.ensureDeferred
async def test_pipelined_commands_against_a_real_redis(redis_port):
    client = FramedClient.from_endpoint(
        reactor,
        f"tcp:127.0.0.1:{redis_port}",
        codec=RedisCodec(),
        pool_size=2,
        request_timeout=5.0,
    )
    try:
        await client.when_ready()
        sets = [client.request(command("SET", f"key:{i}", f"v{i}")) for i in range(500)]
        assert set(await gatherResults(sets)) == {b"+OK\r\n"}
        gets = [client.request(command("GET", f"key:{i}")) for i in range(500)]
        replies = [parse_reply(r) for r in await gatherResults(gets)]
        assert replies == [b"v%d" % i for i in range(500)]
        with pytest.raises(RemoteError, match=r"WRONGTYPE|ERR"):
            await client.request(command("LPUSH", "key:1", "x"))
        reply = await client.request(command("MGET", "key:1", "missing", "key:2"))
        assert parse_reply(reply) == [b"v1", None, b"v2"]
    finally:
        await client.close(timeout=2)
