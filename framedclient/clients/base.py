"""
:class:`ProtocolClient`: what every protocol client shares with
:class:`~framedclient.FramedClient` itself, so that a Redis or memcached
client is embedded the same way: ``async with``, ``start()``/``close()``,
``when_ready()``, ``stats()`` and ``metrics``, and
:class:`~framedclient.FramedClientService` (hence ``twistd`` and ``twist``).

A protocol client holds one ``FramedClient`` and adds command methods; the
lifecycle and the figures are the ``FramedClient``'s, passed through here
once instead of in every client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Self

from twisted.internet.defer import Deferred

from framedclient.client import ClientKeywords, FramedClient
from framedclient.codecs import Codec
from framedclient.config import did_you_mean
from framedclient.metrics import Metrics

__all__ = ["ProtocolClient", "check_keywords"]


def check_keywords(
    owner: str, options: Mapping[str, object], own: Iterable[str]
) -> None:
    """
    Refuse a keyword that neither ``owner`` nor ``FramedClient`` takes,
    with the closest name among both: ``FramedClient`` alone would suggest
    only its own (``pasword`` would find no ``password``).

    :raises TypeError: naming the keyword, ``owner`` and the closest name.
    """
    known = {*ClientKeywords.__annotations__, *own}
    for key in options:
        if key not in known:
            raise TypeError(
                f"{owner} got an unexpected keyword argument "
                f"{key!r}{did_you_mean(key, known)}"
            )


class ProtocolClient:
    """
    The lifecycle and introspection of a protocol client, delegated to the
    :class:`~framedclient.FramedClient` underneath.

    :param client: the client the commands go through.
    :ivar client: that :class:`~framedclient.FramedClient` (for what this
        class does not pass through: ``lease``, ``set_endpoints``, ...).
    """

    #: the codec the client's connections must speak (a subclass says)
    codec_type: ClassVar[type[Codec]]
    #: the server's usual port, for the messages that say how to connect
    default_port: ClassVar[int]

    def __init__(self, client: FramedClient) -> None:
        if not isinstance(client.codec, self.codec_type):
            name, codec = type(self).__name__, self.codec_type.__name__
            raise TypeError(
                f"{name} needs a client with a {codec}, got {client.codec!r}: "
                f"build it with {name}.from_endpoint(reactor, "
                f"'tcp:HOST:{self.default_port}'), or pass codec={codec}() to the "
                f"FramedClient"
            )
        self.client = client

    @classmethod
    def _codec(cls, codec: Codec | None) -> Codec:
        """
        ``from_endpoint``'s ``codec``: a fresh default one, or the one given
        if it is of this client's kind.
        """
        if codec is None:
            return cls.codec_type()
        if not isinstance(codec, cls.codec_type):
            name = cls.codec_type.__name__
            raise TypeError(
                f"codec must be a {name}, got {codec!r}: leave it out (a "
                f"{name}() is made), or pass {name}(max_frame=...)"
            )
        return codec

    def start(self) -> None:
        """
        Start connecting (idempotent).  ``from_endpoint`` starts the client
        unless given ``start=False``, as
        :class:`~framedclient.FramedClientService` wants it.
        """
        self.client.start()

    def when_ready(self, fail_after: int | None = None) -> Deferred[None]:
        """
        Fires once a connection is ready; see
        :meth:`FramedClient.when_ready <framedclient.FramedClient.when_ready>`.
        """
        return self.client.when_ready(fail_after)

    def close(self, timeout: float | None = None) -> Deferred[None]:
        """
        Stop taking requests, let those in flight finish (for at most
        ``timeout`` seconds), close the connections; fires when they are
        gone.
        """
        return self.client.close(timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def stats(self) -> dict[str, Any]:
        """The client's JSON-able snapshot (in flight, connections, metrics)."""
        return self.client.stats()

    def debug_state(self) -> dict[str, Any]:
        """:meth:`stats` plus each connection in detail."""
        return self.client.debug_state()

    @property
    def metrics(self) -> Metrics:
        """
        The client's metrics tree (outcomes, latency), as
        :class:`~framedclient.metrics.PrometheusCollector` takes it.
        """
        return self.client.metrics
