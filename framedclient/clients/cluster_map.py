"""
The slot map of a Redis Cluster: which master serves each of the 16,384
hash slots, read from ``CLUSTER SHARDS`` (Redis 7) or ``CLUSTER SLOTS``
(older servers), and which command words are keys.

Pure functions, no I/O:
:class:`~framedclient.clients.cluster.RedisClusterClient` asks a node and
hands the reply here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from framedclient.clients.slots import SLOTS, key_slot
from framedclient.errors import InvalidRequest

__all__ = [
    "READ_ONLY_COMMANDS",
    "CrossSlot",
    "SlotMap",
    "command_keys",
    "command_route",
    "command_words",
    "key_is_first_argument",
    "parse_cluster_shards",
    "parse_cluster_slots",
    "parse_redirect",
]

#: A node's address as the cluster names it: ``"host:port"``.
Address = str


class CrossSlot(InvalidRequest):
    """
    A transaction or a multi-key command whose keys are in different hash
    slots: no node can run it, so nothing was sent.  Give the keys one
    ``{hash tag}`` (``{user:42}:name``, ``{user:42}:email``) so they share
    a slot.

    :ivar slots: each slot named, with the keys in it.
    """

    def __init__(self, what: str, slots: dict[int, list[bytes]]) -> None:
        named = "; ".join(
            f"slot {slot}: {', '.join(repr(k) for k in keys[:3])}"
            + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            for slot, keys in sorted(slots.items())
        )
        super().__init__(
            f"{what} has keys in {len(slots)} different hash slots ({named}); "
            f"a cluster runs it on one node only, so nothing was sent. Give "
            f"the keys one {{hash tag}} (e.g. '{{user:42}}:a', '{{user:42}}:b') "
            f"so they share a slot"
        )
        self.slots = slots


def address(host: bytes | str, port: int) -> Address:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    return f"{host}:{port}"


class SlotMap:
    """
    Slot -> master address, with each master's replicas.

    :ivar owners: slot -> its master's address (``None``: unknown); the
        list a :meth:`move` changes in place, so a router may hold it and
        index it without a method call per request.
    :ivar masters: the address of each master that serves at least one slot.
    :ivar replicas: master address -> its replicas' addresses.
    """

    def __init__(self) -> None:
        self.owners: list[Address | None] = [None] * SLOTS
        self.masters: set[Address] = set()
        self.replicas: dict[Address, list[Address]] = {}

    def assign(self, first: int, last: int, master: Address) -> None:
        if not 0 <= first <= last < SLOTS:
            raise ValueError(f"slot range {first}-{last} is outside 0-{SLOTS - 1}")
        self.owners[first : last + 1] = [master] * (last - first + 1)
        self.masters.add(master)

    def move(self, slot: int, master: Address) -> None:
        """A ``MOVED`` reply: ``slot`` is now served by ``master``."""
        self.owners[slot] = master
        self.masters.add(master)

    def owner(self, slot: int) -> Address | None:
        return self.owners[slot]

    def covered(self) -> int:
        """How many slots have a master."""
        return SLOTS - self.owners.count(None)

    def nodes(self) -> set[Address]:
        """Every address the map knows, masters and replicas."""
        known = set(self.masters)
        for replicas in self.replicas.values():
            known.update(replicas)
        return known


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def parse_cluster_shards(reply: Any, asked: Address) -> SlotMap:
    """
    A :class:`SlotMap` from ``CLUSTER SHARDS``'s RESP2 reply: a list of
    shards, each ``[b"slots", [first, last, ...], b"nodes", [node, ...]]``
    with each node a flat field/value list (``id``, ``port``, ``ip``,
    ``endpoint``, ``role``, ``health``...).  A node's ``endpoint`` of
    ``"?"`` or empty means "the address you asked" (``asked``).
    """
    table = SlotMap()
    asked_host = asked.rsplit(":", 1)[0]
    for shard in reply:
        fields = _pairs(shard)
        ranges = fields.get("slots") or []
        master: Address | None = None
        replicas: list[Address] = []
        for node in fields.get("nodes") or []:
            info = {k: _text(v) for k, v in _pairs(node).items()}
            host = info.get("endpoint") or info.get("ip") or ""
            if host in ("", "?"):
                host = info.get("ip") or asked_host
            port = int(info.get("port") or info.get("tls-port") or 0)
            where = address(host, port)
            if info.get("role") == "master":
                if master is None or info.get("health") == "online":
                    master = where
            elif info.get("health", "online") == "online":
                replicas.append(where)
        if master is None or not ranges:
            continue
        for i in range(0, len(ranges) - 1, 2):
            table.assign(int(ranges[i]), int(ranges[i + 1]), master)
        table.replicas[master] = replicas
    return table


def _pairs(flat: Any) -> dict[str, Any]:
    items = list(flat) if isinstance(flat, list) else []
    return {_text(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


def parse_cluster_slots(reply: Any, asked: Address) -> SlotMap:
    """
    A :class:`SlotMap` from ``CLUSTER SLOTS``: ``[[first, last, [host,
    port, id], [replica...]...], ...]``; an empty host means the address
    asked.
    """
    table = SlotMap()
    asked_host = asked.rsplit(":", 1)[0]
    for entry in reply:
        first, last, *nodes = entry
        where = []
        for node in nodes:
            host = _text(node[0]) or asked_host
            if host == "?":
                host = asked_host
            where.append(address(host, int(node[1])))
        if not where:
            continue
        table.assign(int(first), int(last), where[0])
        # A master with several slot ranges names its replicas in each.
        known = table.replicas.setdefault(where[0], [])
        known += [r for r in where[1:] if r not in known]
    return table


def parse_redirect(message: str) -> tuple[str, int, Address] | None:
    """
    ``("MOVED" | "ASK", slot, "host:port")`` from a redirect error's text
    (``MOVED 3999 127.0.0.1:6381``), else ``None``.  An empty host
    (``MOVED 3999 :6381``) is left empty: the caller knows whom it asked.
    """
    kind, _, rest = message.partition(" ")
    if kind not in ("MOVED", "ASK"):
        return None
    slot, _, where = rest.partition(" ")
    try:
        return kind, int(slot), where.strip()
    except ValueError:
        return None


def command_words(body: bytes) -> list[bytes]:
    """
    The words of one RESP command (``*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n``
    -> ``[b"GET", b"k"]``), as :func:`~framedclient.codecs.redis.command`
    makes them.
    """
    end = body.index(b"\r\n")
    count = int(body[1:end])
    pos = end + 2
    words = []
    for _ in range(count):
        end = body.index(b"\r\n", pos)
        size = int(body[pos + 1 : end])
        pos = end + 2
        words.append(body[pos : pos + size])
        pos += size + 2
    return words


def split_commands(batch: bytes, count: int) -> list[bytes]:
    """The ``count`` RESP commands of a batch, each as its own bytes."""
    commands = []
    pos = 0
    for _ in range(count):
        start = pos
        end = batch.index(b"\r\n", pos)
        words = int(batch[pos + 1 : end])
        pos = end + 2
        for _ in range(words):
            end = batch.index(b"\r\n", pos)
            pos = end + 2 + int(batch[pos + 1 : end]) + 2
        commands.append(batch[start:pos])
    return commands


# Commands that only read: safe to send again after a connection lost once
# they were written, and to send to a replica.  The cluster client re-sends
# them itself (after a map refresh, to the slot's owner then); not
# idempotent=True to the node's client, which would retry on the same node
# and costs a deadline entry per request.
READ_ONLY_COMMANDS = frozenset(
    {
        b"GET", b"MGET", b"EXISTS", b"TTL", b"PTTL", b"TYPE", b"STRLEN",
        b"GETRANGE", b"HGET", b"HMGET", b"HGETALL", b"HEXISTS", b"HLEN",
        b"HKEYS", b"HVALS", b"LRANGE", b"LLEN", b"LINDEX", b"SMEMBERS",
        b"SISMEMBER", b"SCARD", b"ZRANGE", b"ZSCORE", b"ZCARD", b"ZRANK",
        b"PING", b"ECHO", b"DBSIZE", b"INFO", b"TIME",
    }
)  # fmt: skip


# Where a command's keys are: (first, last, step), last -1 meaning "to the
# end", as COMMAND INFO reports them.  A command not listed takes its first
# argument as its key (what most commands do); a wrong guess costs one MOVED
# redirect, never a wrong reply, since a node refuses a key it does not serve.
_ALL = (1, -1, 1)
_KEY_SPECS: dict[bytes, tuple[int, int, int] | None] = {
    b"DEL": _ALL,
    b"UNLINK": _ALL,
    b"EXISTS": _ALL,
    b"TOUCH": _ALL,
    b"MGET": _ALL,
    b"WATCH": _ALL,
    b"SINTER": _ALL,
    b"SUNION": _ALL,
    b"SDIFF": _ALL,
    b"PFCOUNT": _ALL,
    b"PFMERGE": _ALL,
    b"SINTERSTORE": _ALL,
    b"SUNIONSTORE": _ALL,
    b"SDIFFSTORE": _ALL,
    b"MSET": (1, -1, 2),
    b"MSETNX": (1, -1, 2),
    b"RENAME": (1, 2, 1),
    b"RENAMENX": (1, 2, 1),
    b"SMOVE": (1, 2, 1),
    b"RPOPLPUSH": (1, 2, 1),
    b"LMOVE": (1, 2, 1),
    b"COPY": (1, 2, 1),
    b"BLPOP": (1, -2, 1),
    b"BRPOP": (1, -2, 1),
    # No key: any node answers.
    b"PING": None,
    b"ECHO": None,
    b"INFO": None,
    b"TIME": None,
    b"DBSIZE": None,
    b"COMMAND": None,
    b"CLUSTER": None,
    b"MULTI": None,
    b"EXEC": None,
    b"DISCARD": None,
    b"UNWATCH": None,
    b"ASKING": None,
    b"READONLY": None,
    b"SCRIPT": None,
    b"CONFIG": None,
    b"CLIENT": None,
    b"FLUSHALL": None,
    b"FLUSHDB": None,
    b"RANDOMKEY": None,
    b"SCAN": None,
    b"KEYS": None,
    b"PUBLISH": None,
}
_FIRST = (1, 1, 1)
_NUMKEYS = {b"EVAL", b"EVALSHA", b"EVAL_RO", b"EVALSHA_RO", b"FCALL", b"FCALL_RO"}


def command_keys(words: Sequence[bytes]) -> list[bytes]:
    """The keys of one command, by where its name says they are."""
    name = words[0].upper()
    if name in _NUMKEYS:
        if len(words) < 3:
            return []
        return list(words[3 : 3 + int(words[2])])
    spec = _KEY_SPECS.get(name, _FIRST)
    if spec is None:
        return []
    first, last, step = spec
    stop = len(words) + last + 1 if last < 0 else last + 1
    return list(words[first:stop:step])


def slot_of(what: str, keys: Sequence[bytes]) -> int | None:
    """
    The one slot of ``keys`` (``None`` without keys).

    :raises CrossSlot: they are in different slots.
    """
    if not keys:
        return None
    slot = key_slot(keys[0])
    for key in keys[1:]:
        if key_slot(key) != slot:
            slots: dict[int, list[bytes]] = {}
            for k in keys:
                slots.setdefault(key_slot(k), []).append(k)
            raise CrossSlot(what, slots)
    return slot


def key_is_first_argument(name: bytes) -> bool:
    """Whether command ``name`` (upper case) has one key, its first argument."""
    return _KEY_SPECS.get(name, _FIRST) is _FIRST and name not in _NUMKEYS


def command_route(body: bytes) -> tuple[bytes, int | None]:
    """
    The name (upper case) of the one RESP command in ``body`` and the slot
    of its keys (``None`` without keys).  Reads only the first two words
    of a command whose one key is its first argument (``GET``, ``SET``,
    ``INCR``...), the common case.

    :raises CrossSlot: its keys are in different slots.
    """
    end = body.index(b"\r\n")
    count = int(body[1:end])
    pos = end + 2
    end = body.index(b"\r\n", pos)
    size = int(body[pos + 1 : end])
    pos = end + 2
    name = body[pos : pos + size].upper()
    if key_is_first_argument(name):
        if count < 2:
            return name, None
        pos += size + 2
        end = body.index(b"\r\n", pos)
        size = int(body[pos + 1 : end])
        pos = end + 2
        return name, key_slot(body[pos : pos + size])
    keys = command_keys(command_words(body))
    return name, slot_of(name.decode("ascii", "replace"), keys)
