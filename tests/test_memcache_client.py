"""
:class:`MemcacheClient` against a real memcached (binary protocol): every
command, quiet multi-gets, status codes as exception classes, keys checked
before anything is sent, near-limit values, load and a restart under it.
"""

from __future__ import annotations

import struct

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from framedclient.clients.memcache import (
    InvalidKey,
    MemcacheClient,
    _value,
    check_key,
)
from framedclient.codecs import REPLY
from framedclient.codecs.memcache import (
    GetMany,
    KeyNotFound,
    MemcacheCodec,
    NonNumericValue,
    Opcode,
    ValueTooLarge,
)
from framedclient.errors import ConnectionLost, RemoteError, Unavailable

from .servers import memcached_server


@pytest.fixture
def server():
    with memcached_server() as server:
        yield server


def endpoint(server) -> str:
    return f"tcp:127.0.0.1:{server.port}"


@pytest_twisted.async_yield_fixture
async def mc(server):
    client = MemcacheClient.from_endpoint(
        reactor, endpoint(server), pool_size=2, request_timeout=10.0
    )
    await client.when_ready()
    yield client
    await client.close(timeout=2)


# -- every command ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_get_set_and_a_miss_is_none(mc):
    assert await mc.get(b"k") is None
    assert await mc.set(b"k", b"v") is True  # as RedisClient.set
    assert await mc.get(b"k") == b"v"
    assert await mc.get("k") == b"v"  # str keys are UTF-8


@pytest_twisted.ensureDeferred
async def test_add_and_replace_say_whether_they_stored(mc):
    assert await mc.replace(b"k", b"1") is False
    assert await mc.add(b"k", b"1") is True
    assert await mc.add(b"k", b"2") is False
    assert await mc.get(b"k") == b"1"
    assert await mc.replace(b"k", b"3") is True
    assert await mc.get(b"k") == b"3"


@pytest_twisted.ensureDeferred
async def test_gets_and_cas(mc):
    assert await mc.gets(b"k") is None
    await mc.set(b"k", b"v1")
    value, cas = await mc.gets(b"k")
    assert value == b"v1" and cas > 0
    assert await mc.cas(b"k", b"v2", cas) is True
    # The CAS changed with the write: the old one no longer matches.
    assert await mc.cas(b"k", b"v3", cas) is False
    assert await mc.get(b"k") == b"v2"
    await mc.delete(b"k")
    assert await mc.cas(b"k", b"v4", cas) is False
    with pytest.raises(ValueError, match="cas"):
        mc.cas(b"k", b"v", 0)


@pytest_twisted.ensureDeferred
async def test_delete_says_whether_the_key_existed(mc):
    await mc.set(b"k", b"v")
    assert await mc.delete(b"k") is True
    assert await mc.delete(b"k") is False
    assert await mc.get(b"k") is None


@pytest_twisted.ensureDeferred
async def test_incr_and_decr(mc):
    with pytest.raises(KeyNotFound) as info:
        await mc.incr(b"n")
    assert info.value.code == 1
    assert await mc.incr(b"n", 5, initial=10) == 10  # created with initial
    assert await mc.incr(b"n", 5) == 15
    assert await mc.decr(b"n", 20) == 0  # stops at 0
    assert await mc.decr(b"m", initial=3) == 3
    assert await mc.incr(b"n", 2**64 - 1) == 2**64 - 1
    assert await mc.incr(b"n", 1) == 0  # wraps
    await mc.set(b"text", b"abc")
    with pytest.raises(NonNumericValue) as info:
        await mc.incr(b"text")
    assert info.value.code == 6
    with pytest.raises(ValueError, match="delta"):
        mc.incr(b"n", -1)


@pytest_twisted.ensureDeferred
async def test_touch_and_expiry(mc):
    assert await mc.touch(b"k", 100) is False
    await mc.set(b"k", b"v", expire=100)
    assert await mc.touch(b"k", 1000) is True
    # A past Unix time expires at once.
    await mc.set(b"gone", b"v", expire=3_000_000)
    assert await mc.get(b"gone") is None
    with pytest.raises(ValueError, match="expire"):
        mc.set(b"k", b"v", expire=-1)


@pytest_twisted.ensureDeferred
async def test_flags_are_stored(mc):
    await mc.set(b"k", b"v", flags=0xDEADBEEF)
    reply = await mc.client.request(b"k")  # a raw GET: the reply message
    assert reply.parts["extras"] == bytes.fromhex("deadbeef")


@pytest_twisted.ensureDeferred
async def test_version(mc):
    version = await mc.version()
    assert version[:1].isdigit() and "." in version


@pytest_twisted.ensureDeferred
async def test_get_many_returns_the_hits_only(mc):
    assert await mc.get_many([]) == {}
    await mc.set(b"a", b"1")
    await mc.set(b"c", b"3")
    assert await mc.get_many([b"a", b"b", "c", b"a"]) == {b"a": b"1", b"c": b"3"}
    assert await mc.get_many([b"nothing", b"here"]) == {}


@pytest_twisted.ensureDeferred
async def test_many_get_manys_and_gets_interleaved_on_one_connection(server):
    mc = MemcacheClient.from_endpoint(reactor, endpoint(server), pool_size=1)
    try:
        await mc.when_ready()
        await gatherResults([mc.set(b"k%d" % i, b"v%d" % i) for i in range(0, 200, 2)])
        many = [mc.get_many([b"k%d" % j for j in range(i, i + 10)]) for i in range(190)]
        singles = [mc.get(b"k%d" % i) for i in range(200)]
        for i, found in enumerate(await gatherResults(many)):
            assert found == {
                b"k%d" % j: b"v%d" % j for j in range(i, i + 10) if j % 2 == 0
            }
        for i, value in enumerate(await gatherResults(singles)):
            assert value == (b"v%d" % i if i % 2 == 0 else None)
    finally:
        await mc.close(timeout=2)


# -- keys, values, errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        b"",
        b"x" * 251,
        b"with space",
        b"tab\there",
        b"new\nline",
        b"nul\x00",
        b"del\x7f",
    ],
)
def test_bad_keys_are_refused_at_the_call_and_nothing_is_sent(key):
    mc = MemcacheClient.from_endpoint(reactor, "tcp:127.0.0.1:1", start=False)
    for call in (
        lambda: mc.get(key),
        lambda: mc.set(key, b"v"),
        lambda: mc.delete(key),
        lambda: mc.incr(key),
        lambda: mc.get_many([b"fine", key]),
    ):
        with pytest.raises(InvalidKey):
            call()
    assert mc.client.in_flight == 0 and mc.client.queued == 0


@pytest_twisted.ensureDeferred
async def test_binary_values_and_the_longest_key(mc):
    every_byte = bytes(range(256)) * 4
    key = b"k" * 250
    await mc.set(key, every_byte)
    assert await mc.get(key) == every_byte
    await mc.set(b"empty", b"")
    assert await mc.get(b"empty") == b""
    assert await mc.get_many([key, b"empty"]) == {key: every_byte, b"empty": b""}


@pytest_twisted.ensureDeferred
async def test_values_near_the_item_limit(mc):
    # memcached's default item limit is 1 MB, item header and key included.
    near = b"x" * (1024 * 1024 - 512)
    await mc.set(b"near", near)
    assert await mc.get(b"near") == near
    with pytest.raises(ValueTooLarge) as info:
        await mc.set(b"over", b"x" * (1024 * 1024 + 1))
    assert info.value.code == 3
    # The connection carries on.
    assert await mc.get(b"near") == near
    assert await mc.get_many([b"near", b"near"]) == {b"near": near}


@pytest_twisted.ensureDeferred
async def test_get_many_hits_over_max_frame_fail_that_request_alone(server):
    mc = MemcacheClient.from_endpoint(
        reactor, endpoint(server), codec=MemcacheCodec(max_frame=64 * 1024), pool_size=1
    )
    try:
        await mc.when_ready()
        await mc.set(b"big", b"x" * 40_000)
        assert len(await mc.get_many([b"big"])) == 1
        with pytest.raises(RemoteError, match="exceed max_frame"):
            await mc.get_many([b"big", b"big"])
        assert await mc.get(b"big") == b"x" * 40_000
        assert mc.client.stats()["connections"] == {"ready": 1}
    finally:
        await mc.close(timeout=2)


def reply_frame(
    opcode: int, opaque: int, key: bytes = b"", value: bytes = b""
) -> bytes:
    """A reply as memcached sends it (magic 0x81, status 0)."""
    header = struct.pack(
        ">BBHBBHIIQ", 0x81, opcode, len(key), 0, 0, 0, len(key) + len(value), opaque, 0
    )
    return header + key + value


def test_the_codec_gathers_quiet_hits_split_anywhere():
    codec = MemcacheCodec()
    hit = reply_frame(Opcode.GETKQ, 7, b"a", b"1")
    other = reply_frame(Opcode.GET, 8, value=b"z")
    noop = reply_frame(Opcode.NOOP, 7)
    stream = hit + other + hit + noop
    for cut in range(1, len(stream)):
        framer = codec.new_framer()
        frames = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        decoded = [codec.decode(f) for f in frames]
        assert [(k, i) for k, i, _ in decoded] == [(REPLY, 8), (REPLY, 7)]
        assert decoded[0][2].parts["value"] == b"z"
        hits = decoded[1][2]
        assert [(h.parts["key"], h.parts["value"]) for h in hits] == [(b"a", b"1")] * 2
        assert framer.buffered == 0


def test_a_get_many_request_is_quiet_gets_then_a_noop_with_one_opaque():
    wire = MemcacheCodec().encode(0, 5, GetMany([b"a", b"bc"]))
    opcodes = []
    pos = 0
    while pos < len(wire):
        (length,) = struct.unpack_from(">I", wire, pos + 8)
        opcodes.append((wire[pos + 1], struct.unpack_from(">I", wire, pos + 12)[0]))
        pos += 24 + length
    assert opcodes == [(Opcode.GETKQ, 5), (Opcode.GETKQ, 5), (Opcode.NOOP, 5)]


# -- load -------------------------------------------------------------------------------


def expect_miss(failure):
    return failure  # any failure on a plain get is a failure


def mixed_operation(mc, i: int) -> Deferred:
    kind = i % 5
    key = b"load:%d" % i
    value = b"%d:" % i + bytes([i % 256]) * (i % 70)
    if kind == 0:
        return mc.set(key, value).addCallback(lambda r: r is True)
    if kind == 1:
        d = mc.set(key, value).addCallback(lambda _: mc.get(key))
        return d.addCallback(lambda r: r == value)
    if kind == 2:
        return mc.incr(b"counter:%d" % (i % 7), 1, initial=1).addCallback(
            lambda r: r >= 1
        )
    if kind == 3:
        d = mc.set(key, value).addCallback(
            lambda _: mc.get_many([key, b"missing:%d" % i])
        )
        return d.addCallback(lambda r: r == {key: value})
    return mc.get(b"never:%d" % i).addCallback(lambda r: r is None)


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_ten_thousand_concurrent_mixed_requests_each_get_their_own_reply(server):
    mc = MemcacheClient.from_endpoint(
        reactor,
        endpoint(server),
        pool_size=4,
        max_in_flight=20_000,
        max_pending=20_000,
        request_timeout=60.0,
    )
    try:
        await mc.when_ready()
        results = await gatherResults([mixed_operation(mc, i) for i in range(10_000)])
        assert [i for i, ok in enumerate(results) if not ok] == []
        assert mc.client.in_flight == 0
    finally:
        await mc.close(timeout=5)


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_a_server_restart_mid_load_loses_nothing_and_mixes_nothing(server):
    mc = MemcacheClient.from_endpoint(
        reactor,
        endpoint(server),
        pool_size=2,
        max_in_flight=20_000,
        max_pending=20_000,
        request_timeout=20.0,
    )
    try:
        await mc.when_ready()
        ds = []
        for wave in range(10):
            ds += [mixed_operation(mc, wave * 1000 + i) for i in range(1000)]
            if wave == 4:
                await deferToThread(server.restart)
            else:
                await deferLater(reactor, 0, lambda: None)
        outcomes = await DeferredList(ds, consumeErrors=True)
        ok = failed = 0
        for i, (success, result) in enumerate(outcomes):
            if success:
                assert result is True, f"request {i} got a wrong reply"
                ok += 1
            else:
                assert result.check(ConnectionLost, Unavailable), result
                failed += 1
        assert ok + failed == len(ds) and ok > len(ds) // 2
        assert mc.client.in_flight == 0
        assert await mc.version()
    finally:
        await mc.close(timeout=5)


def test_from_endpoint_needs_a_memcache_codec():
    from framedclient.codecs import FC1Codec

    with pytest.raises(TypeError, match="MemcacheCodec"):
        MemcacheClient.from_endpoint(
            reactor, "tcp:127.0.0.1:1", codec=FC1Codec(), start=False
        )


keys = st.binary(min_size=0, max_size=300)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    keys,
    st.sampled_from([int(o) for o in Opcode]),
    st.binary(max_size=8),
    st.binary(max_size=40),
    st.integers(0, 0x90),
    st.integers(0, 2**64 - 1),
)
def test_the_short_paths_agree_with_the_declared_codec(
    opaque, key, opcode, extras, value, status, cas
):
    from framedclient.codecs.memcache import MEMCACHE_BINARY

    codec = MemcacheCodec()
    assert codec.encode(0, opaque, key) == MEMCACHE_BINARY.encode(0, opaque, key)
    header = struct.pack(
        ">BBHBBHIIQ",
        0x81,
        opcode,
        len(key),
        len(extras),
        0,
        status,
        len(extras) + len(key) + len(value),
        opaque,
        cas,
    )
    frame = header + extras + key + value
    mine, declared = codec.decode(frame), MEMCACHE_BINARY.decode(frame)
    if isinstance(declared[2], Exception):
        assert type(mine[2]) is type(declared[2]) and mine[2].code == declared[2].code
        assert mine[:2] == declared[:2]
    else:
        # get() reads the value alone first; the whole message, made later,
        # is still the declared codec's.
        assert _value(mine[2]) == declared[2].parts["value"]
        assert mine == declared
        assert len(mine[2]) == len(declared[2])


@settings(max_examples=300, deadline=None)
@given(keys | st.text(max_size=260))
def test_a_key_is_accepted_exactly_when_memcached_can_take_it(key):
    raw = key.encode() if isinstance(key, str) else key
    acceptable = 0 < len(raw) <= 250 and all(0x20 < b != 0x7F for b in raw)
    if acceptable:
        assert check_key(key) == raw
    else:
        with pytest.raises(InvalidKey):
            check_key(key)


# -- values and key lists: the same type rule as Redis, refusals that say what to do


@pytest_twisted.ensureDeferred
async def test_str_and_number_values_are_stored_as_redis_would_send_them(mc):
    assert await mc.set(b"text", "héllo") is True
    assert await mc.get(b"text") == "héllo".encode()
    assert await mc.add(b"n", 41) is True
    assert await mc.incr(b"n") == 42  # stored as decimal text
    assert await mc.replace(b"n", 0.5) is True
    assert await mc.get(b"n") == b"0.5"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.get_many(b"k"), "get_many takes a list of keys, got one bytes"),
        (lambda m: m.get_many("abc"), "get_many takes a list of keys, got one str"),
        (lambda m: m.get_many(7), "get_many takes a list of keys, got one int"),
        (lambda m: m.get_many([b"a", 7]), "get_many(): each key must be bytes or str"),
        (lambda m: m.get(7), "key must be bytes or str, got int 7"),
        (lambda m: m.set(b"k", None), "set(): value must be bytes, str, int or float"),
        (lambda m: m.set(b"k", [104, 105]), "set(): value must be"),
        (lambda m: m.add(b"k", True), "no boolean"),
        (lambda m: m.cas(b"k", {"a": 1}, 5), "cas(): value must be"),
    ],
)
def test_a_wrong_argument_is_refused_at_the_call_naming_it(call, message):
    mc = MemcacheClient.from_endpoint(reactor, "tcp:127.0.0.1:1", start=False)
    with pytest.raises(TypeError) as refused:
        call(mc)
    assert message in str(refused.value)
    assert "nothing was sent" in str(refused.value)
    assert mc.stats()["in_flight"] == 0 and mc.stats()["queued"] == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.set(b"k", b"v", flags=True), "flags must be a whole number"),
        (lambda m: m.set(b"k", b"v", flags="1"), "flags must be a whole number"),
        (lambda m: m.set(b"k", b"v", flags=2**32), "flags must be a whole number"),
        (lambda m: m.incr(b"n", initial=True), "initial must be a whole number"),
        (lambda m: m.incr(b"n", initial=-1), "initial must be a whole number"),
    ],
)
def test_numbers_of_the_wrong_type_or_range_are_refused_naming_them(call, message):
    mc = MemcacheClient.from_endpoint(reactor, "tcp:127.0.0.1:1", start=False)
    with pytest.raises(ValueError, match=message):
        call(mc)


@pytest_twisted.ensureDeferred
async def test_a_request_batch_of_gets_against_memcached_fills_each_slot(mc):
    # The generic unit on an ID-matched codec: one GET per body, each with
    # its own opaque; a miss is that slot's KeyNotFound, the others' values
    # arrive (real memcached).
    from framedclient.batch import RequestBatch

    for i in range(0, 20, 2):
        await mc.set(b"b%d" % i, b"v%d" % i)
    result = await mc.client.request(RequestBatch([b"b%d" % i for i in range(20)]))
    assert len(result) == 20
    for i, slot in enumerate(result):
        if i % 2:
            assert isinstance(slot, KeyNotFound)
        else:
            assert slot.parts["value"] == b"v%d" % i
    assert mc.client.stats()["in_flight"] == 0
