"""
Where Redis Cluster keeps a key: its **hash slot**, one of 16,384.

A key's slot is ``CRC16(key) mod 16384``, with the CRC16 of Redis's cluster
specification (XMODEM: polynomial 0x1021, initial value 0, no reflection),
over the whole key, or over its **hash tag** only: the bytes between the
first ``{`` and the first ``}`` after it, when there is at least one byte
between them.  Keys that share a tag share a slot, which is how a
transaction or a multi-key command spanning several keys stays on one node
(``{user:42}:name``, ``{user:42}:email``).

Pure functions, no I/O: :class:`~framedclient.clients.cluster.RedisClusterClient`
routes with them, and a program may use them to group keys itself.
"""

from __future__ import annotations

from binascii import crc_hqx

__all__ = ["SLOTS", "crc16", "hash_tag", "key_slot"]

#: How many hash slots a Redis Cluster has.
SLOTS = 16384


def crc16(data: bytes) -> int:
    """
    CRC16/XMODEM of ``data``, as Redis Cluster computes it
    (``crc16(b"123456789") == 0x31C3``, the specification's check value):
    :func:`binascii.crc_hqx` from 0, which is that CRC, computed in C.
    """
    return crc_hqx(data, 0)


def hash_tag(key: bytes) -> bytes:
    """
    The part of ``key`` that decides its slot: the bytes between the first
    ``{`` and the next ``}`` when that is not empty, else the whole key
    (``b"{user}.a"`` -> ``b"user"``; ``b"{}a"`` and ``b"a{b"`` hash whole).
    """
    start = key.find(b"{")
    if start == -1:
        return key
    end = key.find(b"}", start + 1)
    if end <= start + 1:  # no "}", or "{}" right away
        return key
    return key[start + 1 : end]


def key_slot(key: bytes | str) -> int:
    """
    The hash slot of ``key`` (``str`` is UTF-8 encoded, as Redis receives
    it): what ``CLUSTER KEYSLOT key`` answers.

    :raises TypeError: ``key`` is neither bytes nor str.
    """
    if key.__class__ is not bytes:
        if isinstance(key, str):
            key = key.encode("utf-8")
        elif isinstance(key, (bytes, bytearray, memoryview)):
            key = bytes(key)
        else:
            raise TypeError(
                f"key_slot(): key must be bytes or str, got {type(key).__name__}"
            )
    if b"{" in key:
        key = hash_tag(key)
    return crc_hqx(key, 0) & 0x3FFF
