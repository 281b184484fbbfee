"""
RedisClusterClient's arguments, refused at the call with what to do, and
the pure pieces of routing: which words of a command are keys, and what a
redirect names.  No network.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from framedclient.clients.cluster import RedisClusterClient
from framedclient.clients.cluster_endpoints import cluster_seeds
from framedclient.clients.cluster_map import (
    CrossSlot,
    command_keys,
    command_route,
    parse_redirect,
)
from framedclient.clients.slots import key_slot
from framedclient.codecs.redis import command
from framedclient.errors import Unavailable


@pytest.mark.parametrize(
    ("seeds", "error", "match"),
    [
        (None, TypeError, "seeds must be an endpoint string or a list of them"),
        ([7000], TypeError, "seeds must be an endpoint string or a list of them"),
        ([], ValueError, "seeds is empty: give at least one node's endpoint"),
    ],
)
def test_bad_seeds_are_refused_naming_the_argument(seeds, error, match) -> None:
    with pytest.raises(error, match=match):
        RedisClusterClient.from_endpoint(Clock(), seeds, start=False)


def test_a_database_other_than_0_is_refused() -> None:
    with pytest.raises(ValueError, match="db must be 0: a Redis Cluster has only"):
        RedisClusterClient.from_endpoint(Clock(), "tcp:127.0.0.1:7000", db=2)


@pytest.mark.parametrize(
    ("name", "value"), [("max_redirects", -1), ("retry_delay", -0.5)]
)
def test_negative_retry_settings_are_refused(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{name} must be 0 or more"):
        RedisClusterClient.from_endpoint(
            Clock(), "tcp:127.0.0.1:7000", start=False, **{name: value}
        )


def test_node_for_before_the_map_is_known_says_to_wait() -> None:
    client = RedisClusterClient.from_endpoint(
        Clock(), "tcp:127.0.0.1:7000", start=False
    )
    with pytest.raises(Unavailable, match="await when_ready"):
        client.node_for("k")


@pytest.mark.parametrize(
    ("words", "keys"),
    [
        ([b"GET", b"k"], [b"k"]),
        ([b"set", b"k", b"v", b"EX", b"5"], [b"k"]),
        ([b"MSET", b"a", b"1", b"b", b"2"], [b"a", b"b"]),
        ([b"DEL", b"a", b"b", b"c"], [b"a", b"b", b"c"]),
        ([b"BLPOP", b"a", b"b", b"0"], [b"a", b"b"]),
        ([b"RENAME", b"a", b"b"], [b"a", b"b"]),
        ([b"EVAL", b"return 1", b"2", b"a", b"b", b"arg"], [b"a", b"b"]),
        ([b"EVAL", b"return 1", b"0"], []),
        ([b"PING"], []),
        ([b"HSET", b"h", b"f", b"v"], [b"h"]),
    ],
)
def test_command_keys(words: list[bytes], keys: list[bytes]) -> None:
    assert command_keys(words) == keys


def test_parse_redirect() -> None:
    assert parse_redirect("MOVED 3999 127.0.0.1:6381") == (
        "MOVED",
        3999,
        "127.0.0.1:6381",
    )
    assert parse_redirect("ASK 12 10.0.0.2:7000") == ("ASK", 12, "10.0.0.2:7000")
    assert parse_redirect("ERR unknown command") is None
    assert parse_redirect("MOVED x y") is None


words_st = st.lists(st.binary(max_size=12), min_size=1, max_size=6)


@given(
    name=st.sampled_from(
        [b"GET", b"set", b"MGET", b"DEL", b"MSET", b"EVAL", b"PING", b"HSET", b"X"]
    ),
    args=words_st,
)
def test_command_route_finds_the_slot_command_keys_names(
    name: bytes, args: list[bytes]
) -> None:
    words = [name, *args]
    if name == b"EVAL":
        words = [name, b"return 1", b"%d" % (len(args) - 1), *args[1:]]
    keys = command_keys(words)
    slots = {key_slot(k) for k in keys}
    if len(slots) > 1:
        with pytest.raises(CrossSlot):
            command_route(command(*words))
        return
    expected = slots.pop() if slots else None
    assert command_route(command(*words)) == (name.upper(), expected)


def test_a_cluster_string_names_its_seeds() -> None:
    assert cluster_seeds(
        "redis-cluster:10.0.0.1:7000, db2.example:7001,[::1]:7002"
    ) == [
        "tcp:host=10.0.0.1:port=7000",
        "tcp:host=db2.example:port=7001",
        "tcp6:host=\\:\\:1:port=7002",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "redis-cluster:",
        "redis-cluster:10.0.0.1",
        "redis-cluster:h:0",
        "redis-cluster:h:x",
    ],
)
def test_a_malformed_cluster_string_is_refused_showing_the_form(text: str) -> None:
    with pytest.raises(ValueError, match="is not HOST:PORT; write 'redis-cluster:"):
        RedisClusterClient.from_endpoint(Clock(), text, start=False)
