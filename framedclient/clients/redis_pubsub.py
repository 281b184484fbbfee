"""
Redis pub/sub for :class:`~framedclient.clients.redis.RedisClient`:
``subscribe``, ``psubscribe`` and ``ssubscribe`` on dedicated RESP2
connections (:class:`RedisSubscriber`), or on the client's own RESP3
connections (:class:`SharedRedisSubscriber`, ``protocol=3``).

A RESP2 connection that has subscribed accepts only subscription commands,
so subscriptions never share the client's pool: each kind gets one
connection of its own (made on first use, with the client's AUTH), through
a :class:`~framedclient.FramedClient` of ``pool_size=1`` whose codec
(:class:`~framedclient.codecs.redis_pubsub.RedisPubSubCodec`) turns
published messages into pushes.  What :mod:`framedclient.streams` gives
every subscription holds here too: ``async for``, bounded buffers, every
channel subscribed again after a reconnect with a gap marker first,
``unsubscribe()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from framedclient.client import FramedClient
from framedclient.codecs.redis import command
from framedclient.protocol import FramedProtocol
from framedclient.streams import DEFAULT_BUFFER_BYTES, Subscription, Subscriptions

__all__ = ["RedisSubscriber", "SharedRedisSubscriber"]

_log = Logger()

#: the subscribe command of each kind, and the one that undoes it
_VERBS = {
    "subscribe": ("SUBSCRIBE", "UNSUBSCRIBE"),
    "psubscribe": ("PSUBSCRIBE", "PUNSUBSCRIBE"),
    "ssubscribe": ("SSUBSCRIBE", "SUNSUBSCRIBE"),
}


def _channel(value: object) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes):
        raise TypeError(
            f"a channel or pattern must be bytes or str, got {type(value).__name__}"
        )
    if not value:
        raise ValueError("a channel or pattern must not be empty")
    return value


class RedisSubscriber:
    """
    The subscriptions of one :class:`~framedclient.clients.redis.RedisClient`.

    :param make_client: a new ``FramedClient`` with one connection to the
        Redis server and a ``RedisPubSubCodec`` (called once per kind).
    """

    def __init__(self, make_client: Callable[[], FramedClient]) -> None:
        self._make_client = make_client
        self._kinds: dict[str, tuple[FramedClient, Subscriptions]] = {}
        self._closed = False

    def subscriptions(self, kind: str) -> Subscriptions:
        """
        The :class:`~framedclient.streams.Subscriptions` of ``kind``
        (``subscribe``, ``psubscribe`` or ``ssubscribe``), with its
        connection made on first use.
        """
        entry = self._kinds.get(kind)
        if entry is None:
            client = self._make_client()
            entry = self._kinds[kind] = (client, _subscriptions(client, kind))
        return entry[1]

    def stats(self) -> dict[str, int]:
        """
        See :meth:`RedisClient.pubsub_stats()
        <framedclient.clients.redis.RedisClient.pubsub_stats>`.
        """
        return _stats([subs for _, subs in self._kinds.values()])

    def subscribe(
        self,
        kind: str,
        channels: tuple[object, ...],
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    ) -> Subscription:
        """
        One subscription to ``channels`` (or patterns) of ``kind``.
        """
        if not channels:
            raise ValueError(f"{kind}() needs at least one channel")
        return self.subscriptions(kind).subscribe_all(channels, buffer_bytes)

    def close(self, timeout: float | None = None) -> Deferred[None]:
        """
        End every subscription and close the subscriber connections.
        """
        for _, subs in self._kinds.values():
            subs.close()
        closing = [client.close(timeout) for client, _ in self._kinds.values()]
        self._kinds = {}
        return gatherResults(closing, consumeErrors=True).addBoth(lambda _: None)


#: which kind of subscription a RESP3 push of each kind belongs to
_KIND_OF_PUSH = {
    b"message": "subscribe",
    b"pmessage": "psubscribe",
    b"smessage": "ssubscribe",
}


class _RedisSubscriptions(Subscriptions):
    """
    The subscriptions of one kind: a lost connection is logged (Redis says
    nothing before it drops a subscriber, so the log says what the usual
    cause is); on a shared RESP3 connection, pushes go through the
    client's router, so the kinds sharing it each get their own messages.
    """

    kind = "subscribe"
    router: Callable[[Any], None] | None = None

    def _attach(self, proto: FramedProtocol) -> None:
        super()._attach(proto)
        if self.router is not None:
            proto.on_push = self.router

    def _lost(self, reason: str, proto: FramedProtocol) -> None:
        if self.proto is proto and not self._closed:
            _log.warn(
                "Redis closed the connection of {count} {kind} channel(s) "
                "({reason}); subscribing again on a new one, and each "
                "subscription's next item is a gap marker. A consumer that "
                "lags makes its connection stop reading, and Redis drops a "
                "subscriber whose output buffer passes client-output-buffer-"
                "limit pubsub",
                count=len(self._by_topic),
                kind=self.kind,
                reason=reason,
            )
        super()._lost(reason, proto)


def _subscriptions(
    client: FramedClient, kind: str, router: Callable[[Any], None] | None = None
) -> _RedisSubscriptions:
    verb, unverb = _VERBS[kind]
    subs = _RedisSubscriptions(
        client._dispatcher,
        client._clock,
        client.when_ready,
        commands=(
            lambda channel: command(verb, channel),
            lambda channel: command(unverb, channel),
        ),
        check=_channel,
    )
    subs.kind = kind
    subs.router = router
    return subs


def _stats(kinds: list[Subscriptions]) -> dict[str, int]:
    return {
        "channels": sum(len(subs._by_topic) for subs in kinds),
        "connections_lost": sum(subs.reconnects for subs in kinds),
    }


class SharedRedisSubscriber:
    """
    The subscriptions of a ``protocol=3`` (RESP3)
    :class:`~framedclient.clients.redis.RedisClient`: on the client's own
    connections, where published messages arrive as push frames between
    the replies to other commands (no connection of their own).  Each kind
    (``subscribe``, ``psubscribe``, ``ssubscribe``) uses one connection of
    the pool, moves to another when that one is lost (subscribing again,
    with a gap marker first), and holds that connection's reading only
    while a consumer lags past its ``buffer_bytes`` (which delays the
    other commands on it: docs/redis-pubsub.md).

    :param client: the RedisClient's ``FramedClient``, whose codec is a
        :class:`~framedclient.codecs.resp3.Resp3Codec` and whose
        connections said ``HELLO 3``.
    """

    def __init__(self, client: FramedClient) -> None:
        self._client = client
        self._kinds: dict[str, Subscriptions] = {}

    def _route(self, push: Any) -> None:
        kind = _KIND_OF_PUSH.get(getattr(push, "kind", b""))
        if kind is not None:
            subs = self._kinds.get(kind)
            if subs is not None:
                subs._on_push(push)

    def subscriptions(self, kind: str) -> Subscriptions:
        """
        The :class:`~framedclient.streams.Subscriptions` of ``kind``.
        """
        subs = self._kinds.get(kind)
        if subs is None:
            subs = self._kinds[kind] = _subscriptions(self._client, kind, self._route)
        return subs

    def stats(self) -> dict[str, int]:
        """
        See :meth:`RedisClient.pubsub_stats()
        <framedclient.clients.redis.RedisClient.pubsub_stats>`.
        """
        return _stats(list(self._kinds.values()))

    def subscribe(
        self,
        kind: str,
        channels: tuple[object, ...],
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    ) -> Subscription:
        """
        One subscription to ``channels`` (or patterns) of ``kind``.
        """
        if not channels:
            raise ValueError(f"{kind}() needs at least one channel")
        return self.subscriptions(kind).subscribe_all(channels, buffer_bytes)

    def close(self, timeout: float | None = None) -> Deferred[None]:
        """
        End every subscription (the client's connections close with it).
        """
        for subs in self._kinds.values():
            subs.close()
        self._kinds = {}
        return succeed(None)
