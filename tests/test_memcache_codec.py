"""
memcached's binary header, declared with HeaderCodec alone, against the
byte examples of the protocol's specification (in memory; the client on
top of it is tested against a real memcached).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framedclient.codecs import ERROR, REPLY, REQUEST, Message
from framedclient.codecs.memcache import (
    MEMCACHE_BINARY,
    KeyExists,
    KeyNotFound,
    MemcacheError,
    Opcode,
    memcache_binary_codec,
)
from framedclient.errors import CorruptFrame, FrameTooLarge

# The specification's examples (opaque 0, cas 0 unless said).
GET_HELLO = (
    bytes.fromhex("80 00 0005 00 00 0000 00000005 00000000 0000000000000000") + b"Hello"
)
GET_HIT = (
    bytes.fromhex("81 00 0000 04 00 0000 00000009 00000000 0000000000000001 deadbeef")
    + b"World"
)
GET_MISS = (
    bytes.fromhex("81 00 0000 00 00 0001 00000009 00000000 0000000000000000")
    + b"Not found"
)
ADD_HELLO = (
    bytes.fromhex(
        "80 02 0005 08 00 0000 00000012 00000000 0000000000000000 deadbeef 00000e10"
    )
    + b"HelloWorld"
)


def decode(wire: bytes) -> tuple[int, int, object]:
    (frame,) = MEMCACHE_BINARY.new_framer().feed(wire)
    return MEMCACHE_BINARY.decode(frame)


def test_get_request_matches_the_specification():
    request = Message(fields={"opcode": Opcode.GET}, parts={"key": b"Hello"})
    assert MEMCACHE_BINARY.encode(REQUEST, 0, request) == GET_HELLO


def test_add_request_with_extras_matches_the_specification():
    extras = struct.pack(">II", 0xDEADBEEF, 0xE10)
    request = Message(
        fields={"opcode": Opcode.ADD},
        parts={"extras": extras, "key": b"Hello", "value": b"World"},
    )
    assert MEMCACHE_BINARY.encode(REQUEST, 0, request) == ADD_HELLO


def test_opaque_is_the_request_id():
    wire = MEMCACHE_BINARY.encode(
        REQUEST, 0xCAFE, Message(fields={"opcode": Opcode.NOOP})
    )
    assert wire[12:16] == b"\x00\x00\xca\xfe"
    assert MEMCACHE_BINARY.max_id == 2**32 - 1


def test_hit_keeps_flags_cas_and_value():
    kind, request_id, reply = decode(GET_HIT)
    assert (kind, request_id) == (REPLY, 0)
    assert isinstance(reply, Message)
    assert reply.fields["cas"] == 1
    assert reply.fields["status"] == 0
    assert reply.parts == {"extras": b"\xde\xad\xbe\xef", "key": b"", "value": b"World"}


def test_miss_is_key_not_found_with_status_and_server_text():
    kind, _, error = decode(GET_MISS)
    assert kind == ERROR
    assert isinstance(error, KeyNotFound)
    assert isinstance(error, MemcacheError)
    assert error.code == 1
    assert error.reply.body == b"Not found"


def test_other_statuses_map_to_their_classes_or_carry_the_code():
    exists = bytearray(GET_MISS)
    exists[7] = 2
    assert isinstance(decode(bytes(exists))[2], KeyExists)
    odd = bytearray(GET_MISS)
    odd[6:8] = b"\x00\x42"
    kind, _, error = decode(bytes(odd))
    assert kind == ERROR
    assert type(error) is not KeyNotFound
    assert error.code == 0x42


def test_request_magic_in_a_reply_is_a_corrupt_frame():
    with pytest.raises(CorruptFrame, match="magic"):
        decode(GET_HELLO)


def test_lengths_past_the_body_are_a_corrupt_frame():
    bad = bytearray(GET_HIT)
    bad[4] = 20  # 20 bytes of extras in a 9-byte body
    with pytest.raises(CorruptFrame):
        decode(bytes(bad))


def test_vbucket_is_the_status_field_of_a_request():
    wire = MEMCACHE_BINARY.encode(
        REQUEST,
        1,
        Message(fields={"opcode": Opcode.GET, "status": 7}, parts={"key": b"k"}),
    )
    assert wire[6:8] == b"\x00\x07"


def test_key_over_the_length_field_is_refused():
    with pytest.raises(ValueError, match="key of 65536 bytes does not fit"):
        MEMCACHE_BINARY.encode(REQUEST, 1, Message(parts={"key": b"k" * 65536}))


def test_reply_over_max_frame_is_refused_before_buffering():
    codec = memcache_binary_codec(max_frame=100)
    framer = codec.new_framer()
    with pytest.raises(FrameTooLarge):
        framer.feed(bytes.fromhex("81 00 0000 00 00 0000 00001000") + bytes(12))


# memcached's key limit is 250 bytes whatever type the key is given as: a
# ``str`` key is checked as its UTF-8 bytes, exactly like a ``bytes`` key.
@pytest.mark.parametrize(
    ("key", "accepted"),
    [
        ("k" * 250, True),
        ("k" * 251, False),
        ("é" * 125, True),  # 250 bytes in UTF-8
        ("é" * 124 + "kk", True),
        ("é" * 125 + "k", False),  # 125 characters... but 251 bytes
        (b"k" * 250, True),
        (b"k" * 251, False),
    ],
)
def test_a_key_of_up_to_250_bytes_is_taken_whether_str_or_bytes(key, accepted):
    from twisted.internet import reactor

    from framedclient.clients.memcache import InvalidKey, MemcacheClient, check_key

    raw = key.encode() if isinstance(key, str) else key
    mc = MemcacheClient.from_endpoint(reactor, "tcp:127.0.0.1:1", start=False)
    calls = (
        lambda: mc.get(key),
        lambda: mc.set(key, b"v"),
        lambda: mc.delete(key),
        lambda: mc.get_many([b"fine", key]),
    )
    if accepted:
        assert check_key(key) == raw
        waiting = [call() for call in calls]  # queued, nothing refused
        assert mc.client.queued == len(calls)
        for d in waiting:
            d.addErrback(lambda failure: None)
            d.cancel()
    else:
        with pytest.raises(InvalidKey, match="at most 250 bytes, this one has 251"):
            check_key(key)
        for call in calls:
            with pytest.raises(InvalidKey):
                call()
        assert mc.client.queued == 0


def test_the_clients_old_import_path_says_where_it_moved():
    # The codec no longer imports its client (it sits below the core);
    # code written for the old path learns the new one at the import.
    with pytest.raises(ImportError, match="from framedclient import MemcacheClient"):
        exec("from framedclient.codecs.memcache import MemcacheClient", {})


def test_the_protocol_clients_are_importable_from_the_package():
    import framedclient
    from framedclient.clients.memcache import MemcacheClient
    from framedclient.clients.redis import RedisClient
    from framedclient.config import ClientConfig

    assert framedclient.MemcacheClient is MemcacheClient
    assert framedclient.RedisClient is RedisClient
    assert framedclient.ClientConfig is ClientConfig
    assert {"MemcacheClient", "RedisClient", "ClientConfig"} <= set(
        framedclient.__all__
    )


@settings(max_examples=100, deadline=None)
@given(
    keys=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=20),
    request_id=st.integers(1, 2**32 - 1),
)
def test_a_get_many_is_packed_as_the_declared_codec_writes_each_get(keys, request_id):
    # MemcacheCodec packs get_many's quiet gets at once; the bytes must be
    # the declared codec's, GETKQ per key then the NOOP, all with the ID.
    from framedclient.codecs.memcache import GetMany, MemcacheCodec

    wire = MemcacheCodec().encode(REQUEST, request_id, GetMany(keys))
    declared = [
        MEMCACHE_BINARY.encode(
            REQUEST,
            request_id,
            Message(fields={"opcode": Opcode.GETKQ}, parts={"key": k}),
        )
        for k in keys
    ]
    declared.append(
        MEMCACHE_BINARY.encode(
            REQUEST, request_id, Message(fields={"opcode": Opcode.NOOP})
        )
    )
    assert wire == b"".join(declared)


@settings(max_examples=100, deadline=None)
@given(
    hits=st.lists(
        st.tuples(st.binary(min_size=1, max_size=40), st.binary(max_size=100)),
        max_size=10,
    ),
    request_id=st.integers(1, 2**32 - 1),
)
def test_get_many_hits_come_out_as_the_declared_codec_reads_them(hits, request_id):
    # Hits held by the framer until the NOOP, each read by the short path:
    # key and value as the declared codec's parts.
    from framedclient.codecs.memcache import MemcacheCodec

    header = struct.Struct(">BBHBBHIIQ")
    wire = b"".join(
        header.pack(
            0x81, Opcode.GETKQ, len(k), 4, 0, 0, 4 + len(k) + len(v), request_id, 7
        )
        + b"\0\0\0\1"
        + k
        + v
        for k, v in hits
    ) + header.pack(0x81, Opcode.NOOP, 0, 0, 0, 0, 0, request_id, 0)
    codec = MemcacheCodec()
    (frame,) = codec.new_framer().feed(wire)
    kind, rid, replies = codec.decode(frame)
    assert (kind, rid) == (REPLY, request_id)
    assert [(r.key, r.value) for r in replies] == list(hits)
    assert [(r.parts["key"], r.parts["value"], r.parts["extras"]) for r in replies] == [
        (k, v, b"\0\0\0\1") for k, v in hits
    ]


def test_the_clients_old_import_place_says_where_it_moved():
    # MemcacheClient lived in the codec module until it moved above the core.
    with pytest.raises(ImportError, match="from framedclient import MemcacheClient"):
        exec("from framedclient.codecs.memcache import MemcacheClient", {})
    import framedclient.codecs.memcache as module

    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        module.nothing_here  # noqa: B018
