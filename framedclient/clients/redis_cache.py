"""
A client-side cache of Redis ``GET`` replies, kept right by ``CLIENT
TRACKING``: what :meth:`RedisClient.cache()
<framedclient.clients.redis.RedisClient.cache>` returns.

The cache reads through one connection of its own that said ``HELLO 3``
and ``CLIENT TRACKING ON``: Redis remembers the keys that connection read
and, when one of them changes (a write from any client, an expiry, an
eviction), pushes an invalidation on that same connection.  Replies and
invalidations share one ordered byte stream, so what the cache learns
always arrives in the order Redis sent it.

The rules that keep it from serving a stale value:

- an invalidation removes the key at once, before anything after it on the
  connection is read;
- a ``GET`` whose key is invalidated while it is in flight is answered but
  not cached (its value may predate the change);
- an invalidation of every key (``FLUSHALL``, or Redis dropping keys from
  its tracking table) and the loss of the connection empty the cache, and
  every ``GET`` in flight then is not cached either: while the connection
  is down, nobody would tell the cache about changes.

It holds at most ``max_keys`` keys, the least recently used going first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from framedclient.client import FramedClient
from framedclient.codecs.redis import RespError, command, parse_reply
from framedclient.codecs.resp3 import INVALIDATE
from framedclient.errors import RemoteError
from framedclient.protocol import FramedProtocol

__all__ = ["RedisCache"]


def _key(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if value.__class__ is bytes:
        return value  # type: ignore[return-value]
    raise TypeError(
        f"RedisCache.get(): key must be bytes or str, got {type(value).__name__}; "
        f"nothing was sent"
    )


class _Read:
    """
    One ``GET`` in flight: whether its reply may still be cached.
    """

    __slots__ = ("cacheable",)

    def __init__(self) -> None:
        self.cacheable = True


class RedisCache:
    """
    ``GET`` through a bounded, invalidated local cache (see the module's
    notes).  Writes go through the
    :class:`~framedclient.clients.redis.RedisClient` as usual; Redis tells
    the cache which keys they changed.

    :param make_client: a new ``FramedClient`` with one connection that
        says ``HELLO 3`` and ``CLIENT TRACKING ON``, then runs the hook it
        is given on that connection.
    :param max_keys: how many keys it holds at most.

    :ivar hits: reads answered from the cache.
    :ivar misses: reads sent to Redis.
    :ivar invalidations: keys Redis said changed while cached or read.
    :ivar flushes: times the whole cache was emptied (an invalidation of
        every key, or the connection lost).
    """

    def __init__(
        self,
        make_client: Callable[[Callable[[FramedProtocol], None]], FramedClient],
        max_keys: int = 10_000,
    ) -> None:
        if max_keys.__class__ is not int or max_keys < 1:
            raise ValueError(
                f"cache(): max_keys must be a positive int (the most keys held "
                f"locally), got {max_keys!r}"
            )
        self.max_keys = max_keys
        self._entries: OrderedDict[bytes, bytes | None] = OrderedDict()
        self._reads: dict[bytes, list[_Read]] = {}
        self.hits = 0
        self.misses = 0
        self.invalidations = 0
        self.flushes = 0
        #: the ``FramedClient`` of the tracking connection
        self.client = make_client(self._connected)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return _key(key) in self._entries

    def when_ready(self) -> Deferred[None]:
        """
        Fires once the tracking connection is ready.
        """
        return self.client.when_ready()

    def stats(self) -> dict[str, int]:
        """
        The counters, and how many keys are held.
        """
        return {
            "keys": len(self._entries),
            "hits": self.hits,
            "misses": self.misses,
            "invalidations": self.invalidations,
            "flushes": self.flushes,
        }

    def sync(self, timeout: float | None = None) -> Deferred[None]:
        """
        Fires once the cache has applied the invalidations of every write
        Redis finished before this call: a ``PING`` on the tracking
        connection, whose reply comes after them.  For reading one's own
        writes: ``await redis.set(k, v); await cache.sync()``, then
        ``cache.get(k)`` is not older than ``v``.
        """
        d = self.client.request(command("PING"), timeout)
        return d.addCallback(lambda _: None)

    def get(self, key: bytes | str, timeout: float | None = None) -> Deferred[Any]:
        """
        ``GET key``: from the cache when it holds the key (a missing key is
        cached too, as ``None``), else from Redis, kept for the next read
        unless the key was invalidated meanwhile.

        :raises TypeError: ``key`` is not bytes or str.
        """
        key = _key(key)
        entries = self._entries
        if key in entries:
            entries.move_to_end(key)
            self.hits += 1
            return succeed(entries[key])
        self.misses += 1
        read = _Read()
        self._reads.setdefault(key, []).append(read)
        d = self.client.request(command("GET", key), timeout)
        return d.addCallbacks(
            self._answered,
            self._failed,
            callbackArgs=(key, read),
            errbackArgs=(key, read),
        )

    def _done(self, key: bytes, read: _Read) -> None:
        reads = self._reads[key]
        reads.remove(read)
        if not reads:
            del self._reads[key]

    def _answered(self, frame: bytes, key: bytes, read: _Read) -> Any:
        self._done(key, read)
        value = parse_reply(frame)
        if read.cacheable:
            entries = self._entries
            entries[key] = value  # type: ignore[assignment]
            entries.move_to_end(key)
            if len(entries) > self.max_keys:
                entries.popitem(last=False)
        return value

    def _failed(self, failure: Failure, key: bytes, read: _Read) -> Failure:
        self._done(key, read)
        error = failure.value
        if type(error) is RemoteError:
            raise RespError(error.message) from None
        return failure

    # -- the tracking connection -------------------------------------------------

    def _connected(self, proto: FramedProtocol) -> None:
        proto.on_push = self._on_push
        proto.when_closed().addCallback(self._lost)

    def _on_push(self, push: Any) -> None:
        if push.key != INVALIDATE:
            return
        keys = push.data
        if keys is None:
            self.flush()
            return
        entries = self._entries
        reads = self._reads
        for key in keys:
            if entries.pop(key, _ABSENT) is not _ABSENT or key in reads:
                self.invalidations += 1
            for read in reads.get(key, ()):
                read.cacheable = False

    def _lost(self, reason: object) -> None:
        self.flush()

    def flush(self) -> None:
        """
        Empty the cache; no ``GET`` in flight will be cached.
        """
        self.flushes += 1
        self._entries.clear()
        for reads in self._reads.values():
            for read in reads:
                read.cacheable = False

    def close(self, timeout: float | None = None) -> Deferred[None]:
        """
        Close the tracking connection and empty the cache.
        """
        self.flush()
        return self.client.close(timeout)


_ABSENT: Any = object()
