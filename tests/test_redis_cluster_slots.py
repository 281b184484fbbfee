"""
Hash slots as Redis Cluster computes them: CRC16/XMODEM mod 16384 over the
key or its ``{hash tag}``.  The expected values were answered by
``CLUSTER KEYSLOT`` on redis-server 7.0.15 (and the real cluster test in
tests/test_redis_cluster.py asks a live node again).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framedclient.clients.slots import SLOTS, crc16, hash_tag, key_slot

# (key, what CLUSTER KEYSLOT answered)
KNOWN = [
    (b"123456789", 12739),
    (b"foo", 12182),
    (b"bar", 5061),
    (b"hello", 866),
    (b"{user1000}.following", 3443),
    (b"foo{}{bar}", 8363),  # empty first tag: the whole key
    (b"foo{{bar}}zap", 4015),  # tag is "{bar"
    (b"foo{bar}{zap}", 5061),  # first tag only: "bar"
    (b"{}", 15257),
    (b"a{b", 13340),  # no closing brace: the whole key
    (b"", 0),
]


def test_crc16_is_xmodem_with_the_specification_check_value() -> None:
    assert crc16(b"123456789") == 0x31C3


@pytest.mark.parametrize(("key", "slot"), KNOWN)
def test_key_slot_matches_cluster_keyslot(key: bytes, slot: int) -> None:
    assert key_slot(key) == slot


def test_str_key_is_hashed_as_its_utf8_bytes() -> None:
    assert key_slot("héllo") == key_slot("héllo".encode())
    assert key_slot("foo") == 12182


def test_key_slot_refuses_other_types_naming_the_argument() -> None:
    with pytest.raises(TypeError, match="key must be bytes or str, got int"):
        key_slot(42)  # type: ignore[arg-type]


keys = st.binary(max_size=40)
tags = st.binary(min_size=1, max_size=20).filter(lambda b: b"}" not in b)


@given(prefix=keys.filter(lambda b: b"{" not in b), tag=tags, rest=keys)
def test_keys_sharing_a_hash_tag_share_a_slot(
    prefix: bytes, tag: bytes, rest: bytes
) -> None:
    key = prefix + b"{" + tag + b"}" + rest
    assert hash_tag(key) == tag
    assert key_slot(key) == key_slot(b"{" + tag + b"}") == crc16(tag) % SLOTS


@given(key=keys.filter(lambda b: b"{" not in b))
def test_a_key_without_braces_hashes_whole(key: bytes) -> None:
    assert key_slot(key) == crc16(key) % SLOTS
    assert 0 <= key_slot(key) < SLOTS


@given(prefix=keys.filter(lambda b: b"{" not in b), rest=keys)
def test_an_empty_tag_means_the_whole_key(prefix: bytes, rest: bytes) -> None:
    key = prefix + b"{}" + rest
    assert key_slot(key) == crc16(key) % SLOTS
