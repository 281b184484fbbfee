"""
Redis pub/sub for :class:`~framedclient.clients.redis.RedisClient`:
``subscribe``, ``psubscribe`` and ``ssubscribe`` on dedicated RESP2
connections.

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

from twisted.internet.defer import Deferred, gatherResults

from framedclient.client import FramedClient
from framedclient.codecs.redis import command
from framedclient.streams import DEFAULT_BUFFER_BYTES, Subscription, Subscriptions

__all__ = ["RedisSubscriber"]

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
            verb, unverb = _VERBS[kind]
            client = self._make_client()
            subs = client.subscriptions
            subs.commands = (
                lambda channel: command(verb, channel),
                lambda channel: command(unverb, channel),
            )
            subs.check = _channel
            entry = self._kinds[kind] = (client, subs)
        return entry[1]

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
        closing = [client.close(timeout) for client, _ in self._kinds.values()]
        self._kinds = {}
        return gatherResults(closing, consumeErrors=True).addBoth(lambda _: None)
