"""
Ketama consistent hashing, placed exactly like libketama and twemproxy.

Many clients that share a key space (caches above all) must agree on which
server holds a key without talking to each other, and a server joining or
leaving must move only its own share of the keys.  Ketama does both, and
because libketama (memcached clients), twemproxy (``distribution:
ketama``, ``hash: md5``), uhashring, pylibmc and many others place keys the
same way, a framedclient process can share a fleet with them.

The continuum, with equal weights:

- each node (``host:port``, or the name it is given, as twemproxy's
  ``servers:`` names do) gets 160 points: for ``i`` in 0..39, the MD5 digest
  of ``f"{node}-{i}"`` gives four points, bytes ``4j..4j+3`` of the digest
  read as a little-endian unsigned 32-bit integer (``j`` in 0..3);
- a key hashes to the first four bytes of its MD5 digest, little-endian;
- the key's node owns the first point at or after that hash, wrapping to
  the first point of the continuum past the last one.

This module is pure (no Twisted); :class:`~framedclient.balance.Ketama` is
the pick policy built on it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from hashlib import md5

__all__ = ["POINTS_PER_NODE", "KetamaRing", "ketama_hash", "key_bytes"]

#: Points per node with equal weights (40 digests of 4 points), as in
#: libketama and twemproxy.
POINTS_PER_NODE = 160
_DIGESTS_PER_NODE = POINTS_PER_NODE // 4


def key_bytes(key: bytes | str) -> bytes:
    """
    ``key`` as the bytes that are hashed: a ``str`` is UTF-8 encoded, as
    every ketama client does with text keys.

    :raises TypeError: for anything but ``bytes`` or ``str`` (a number would
        hash differently in every client: encode it yourself).
    """
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytearray, memoryview)):
        return bytes(key)
    raise TypeError(
        f"key must be bytes or str, got {type(key).__name__} {key!r}: convert it "
        f"first (str(key)), the same way wherever the key is used"
    )


def ketama_hash(key: bytes) -> int:
    """
    The position of ``key`` on the continuum: the first four bytes of its
    MD5 digest, little-endian (libketama's ``ketama_hashi``).
    """
    return int.from_bytes(md5(key).digest()[:4], "little")


class KetamaRing:
    """
    The ketama continuum of ``nodes`` (equal weights).

    :param nodes: node names, usually ``host:port``; the order does not
        matter, and names must be unique.
    :raises ValueError: no nodes, or a name given twice.
    """

    __slots__ = ("_owners", "_points", "nodes")

    def __init__(self, nodes: Iterable[str]) -> None:
        names = tuple(nodes)
        if not names:
            raise ValueError("a ketama ring needs at least one node")
        if len(set(names)) != len(names):
            raise ValueError(f"ketama node names must be unique, got {names!r}")
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"ketama node names must be str, got {name!r}")
        #: the nodes, in the order given
        self.nodes = names
        points: list[tuple[int, int]] = []
        for index, name in enumerate(names):
            for i in range(_DIGESTS_PER_NODE):
                digest = md5(f"{name}-{i}".encode()).digest()
                for j in range(4):
                    value = int.from_bytes(digest[4 * j : 4 * j + 4], "little")
                    points.append((value, index))
        # Sorted by value only, like libketama; two nodes sharing a point
        # value is rare, and then the owner of that point may differ
        # between implementations (qsort is not stable).
        points.sort(key=lambda p: p[0])
        self._points = [value for value, _ in points]
        self._owners = [names[index] for _, index in points]

    def __repr__(self) -> str:
        return f"KetamaRing({list(self.nodes)!r})"

    def _position(self, key: bytes | str) -> int:
        i = bisect_left(self._points, ketama_hash(key_bytes(key)))
        return 0 if i == len(self._points) else i

    def node_for(self, key: bytes | str) -> str:
        """
        The node that holds ``key``.
        """
        return self._owners[self._position(key)]

    def nodes_for(self, key: bytes | str) -> Iterator[str]:
        """
        Every node, each once, in the order met walking the continuum from
        ``key``'s point: the key's node first, then where the key goes when
        the nodes before are out (twemproxy's ``auto_eject_hosts`` gives the
        same next node for a key when one node is ejected).
        """
        owners = self._owners
        n = len(owners)
        start = self._position(key)
        seen: set[str] = set()
        total = len(self.nodes)
        for i in range(n):
            node = owners[(start + i) % n]
            if node not in seen:
                seen.add(node)
                yield node
                if len(seen) == total:
                    return
