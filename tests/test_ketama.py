"""
Ketama placement: framedclient puts a key on the same server as libketama,
twemproxy (``distribution: ketama``, ``hash: md5``) and uhashring.
"""

from __future__ import annotations

from hashlib import md5
from itertools import pairwise

import pytest
from uhashring import HashRing

from framedclient.ketama import POINTS_PER_NODE, KetamaRing, ketama_hash, key_bytes

THREE = ["127.0.0.1:11211", "127.0.0.1:11212", "127.0.0.1:11213"]

# Computed with twemproxy's own code (src/hashkit/nc_ketama.c's continuum
# and dispatch, nc_md5.c, equal weights), compiled from its source.
TWEMPROXY_THREE = {
    "foo": "127.0.0.1:11213",
    "bar": "127.0.0.1:11212",
    "hello": "127.0.0.1:11211",
    "user:1000": "127.0.0.1:11213",
    "session:42": "127.0.0.1:11213",
    "a": "127.0.0.1:11212",
    "z": "127.0.0.1:11213",
    "memcached": "127.0.0.1:11213",
    "framedclient": "127.0.0.1:11211",
    "ключ": "127.0.0.1:11212",
}
# The same keys once 127.0.0.1:11212 is out of the pool.
TWEMPROXY_WITHOUT_11212 = {
    "foo": "127.0.0.1:11213",
    "bar": "127.0.0.1:11213",
    "hello": "127.0.0.1:11211",
    "user:1000": "127.0.0.1:11213",
    "session:42": "127.0.0.1:11213",
    "a": "127.0.0.1:11213",
    "z": "127.0.0.1:11213",
    "memcached": "127.0.0.1:11213",
    "framedclient": "127.0.0.1:11211",
    "ключ": "127.0.0.1:11211",
}


def test_keys_land_where_twemproxy_puts_them():
    ring = KetamaRing(THREE)
    assert {key: ring.node_for(key) for key in TWEMPROXY_THREE} == TWEMPROXY_THREE


def test_keys_land_where_twemproxy_puts_them_with_a_server_gone():
    ring = KetamaRing([THREE[0], THREE[2]])
    placed = {key: ring.node_for(key) for key in TWEMPROXY_WITHOUT_11212}
    assert placed == TWEMPROXY_WITHOUT_11212


@pytest.mark.parametrize("count", [1, 2, 3, 7, 20])
def test_thousands_of_keys_land_where_uhashring_puts_them(count):
    nodes = [f"10.0.{i // 250}.{i % 250 + 1}:11211" for i in range(count)]
    ours = KetamaRing(nodes)
    theirs = HashRing(nodes, hash_fn="ketama")
    keys = [f"user:{i}" for i in range(5000)]
    differ = [k for k in keys if ours.node_for(k) != theirs.get_node(k)]
    assert differ == []


def test_each_node_has_160_points_and_keys_spread_over_all_nodes():
    nodes = [f"10.0.0.{i}:11211" for i in range(1, 6)]
    ring = KetamaRing(nodes)
    assert len(ring._points) == POINTS_PER_NODE * 5
    counts = dict.fromkeys(nodes, 0)
    for i in range(10000):
        counts[ring.node_for(b"k%d" % i)] += 1
    # 160 points each: every node gets a real share (about 20 %).
    assert min(counts.values()) > 1000


def test_the_next_node_is_where_the_key_goes_when_its_node_leaves():
    # twemproxy with auto_eject_hosts rebuilds the ring without the ejected
    # server; walking the full ring past that server's points must agree.
    nodes = [f"10.0.0.{i}:11211" for i in range(1, 8)]
    ring = KetamaRing(nodes)
    for gone in nodes:
        smaller = KetamaRing([n for n in nodes if n != gone])
        for i in range(1000):
            key = f"key-{i}"
            walk = [n for n in ring.nodes_for(key) if n != gone]
            assert walk[0] == smaller.node_for(key)


def test_the_walk_meets_every_node_once_starting_with_the_keys_node():
    nodes = [f"h{i}:1" for i in range(5)]
    ring = KetamaRing(nodes)
    walk = list(ring.nodes_for("x"))
    assert walk[0] == ring.node_for("x")
    assert sorted(walk) == sorted(nodes)


def test_only_the_leaving_nodes_keys_move():
    nodes = [f"10.0.0.{i}:11211" for i in range(1, 6)]
    before = KetamaRing(nodes)
    after = KetamaRing(nodes[:-1])
    for i in range(3000):
        key = f"k{i}"
        if before.node_for(key) != nodes[-1]:
            assert after.node_for(key) == before.node_for(key)


def test_text_keys_are_hashed_as_utf8():
    ring = KetamaRing(THREE)
    assert ring.node_for("ключ") == ring.node_for("ключ".encode())
    assert key_bytes(bytearray(b"ab")) == b"ab"


def test_the_key_hash_is_the_first_four_md5_bytes_little_endian():
    # md5(b"foo") = acbd18db...
    assert ketama_hash(b"foo") == 0xDB18BDAC


@pytest.mark.parametrize("key", [42, None, 1.5])
def test_keys_that_are_not_text_or_bytes_are_refused(key):
    with pytest.raises(TypeError, match="key must be bytes or str"):
        KetamaRing(THREE).node_for(key)


def test_a_ring_needs_unique_nodes():
    with pytest.raises(ValueError, match="at least one node"):
        KetamaRing([])
    with pytest.raises(ValueError, match="unique"):
        KetamaRing(["a:1", "a:1"])


def continuum(nodes: list[str]) -> list[tuple[int, str]]:
    """
    The ketama continuum built here from the spec (libketama, twemproxy),
    independently of :class:`KetamaRing`: ``(point, owner)`` sorted.
    """
    points = []
    for node in nodes:
        for i in range(40):
            digest = md5(f"{node}-{i}".encode()).digest()
            for j in range(4):
                points.append((int.from_bytes(digest[4 * j : 4 * j + 4], "little"), node))
    return sorted(points)


FIVE = [f"10.0.0.{i}:11211" for i in range(1, 6)]


def test_a_key_hashing_exactly_onto_a_point_goes_to_that_points_owner():
    # libketama and twemproxy take the first point AT or after the hash.  The
    # key "<node>-<i>" hashes exactly onto the first point of that node's
    # i-th digest, so such keys hit points exactly; take those whose next
    # point has another owner, where "after" would give the wrong node.
    points = continuum(FIVE)
    on_a_point = {ketama_hash(f"{n}-{i}".encode()): f"{n}-{i}" for n in FIVE for i in range(40)}
    exact = [
        (on_a_point[value], owner)
        for (value, owner), (_, after) in pairwise(points)
        if value in on_a_point and after != owner
    ]
    assert len(exact) > 100  # the case is hit, many times over
    ring = KetamaRing(FIVE)
    assert [(key, ring.node_for(key)) for key, _ in exact] == exact
    assert [(key, next(ring.nodes_for(key))) for key, _ in exact] == exact


def test_a_key_past_the_last_point_wraps_to_the_first_points_owner():
    points = continuum(FIVE)
    (_, first), (last_point, last) = points[0], points[-1]
    assert first != last  # else a wrong wrap could not be seen
    # Here about 1 key in 33,000 hashes past the last point: 4 of these.
    keys = [k for k in (f"k{i}" for i in range(100000)) if ketama_hash(k.encode()) > last_point]
    assert len(keys) >= 2
    ring = KetamaRing(FIVE)
    assert {ring.node_for(k) for k in keys} == {first}
    assert {next(ring.nodes_for(k)) for k in keys} == {first}
