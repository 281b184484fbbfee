"""
:class:`FramedClientService`: a client as a node in a Twisted
application's service graph, so it starts with the application and drains
when the application stops (``twist``, ``twistd``, ``MultiService``).

Any client with ``start()`` and ``close(timeout)`` fits
(:class:`ManagedClient`): a :class:`~framedclient.client.FramedClient`, a
:class:`~framedclient.clients.redis.RedisClient`, a
:class:`~framedclient.clients.memcache.MemcacheClient`, or your own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from framedclient.validation import Seconds, check_argument

__all__ = ["ClientT", "FramedClientService", "ManagedClient"]


class ManagedClient(Protocol):
    """
    What :class:`FramedClientService` needs of a client: a way to start it
    and a way to close it that says when it is closed.
    """

    def start(self) -> None:
        """Start connecting (idempotent)."""

    def close(self, timeout: float | None = None) -> Deferred[None]:
        """
        Let what is in flight finish for at most ``timeout`` seconds, then
        close; fires once closed.
        """


#: The client a :class:`FramedClientService` runs, so that ``service.client``
#: has the type ``make_client`` returns (a ``RedisClient``, ...).
ClientT = TypeVar("ClientT", bound=ManagedClient)


class FramedClientService(Service, Generic[ClientT]):
    """
    Starts the client on ``startService`` and closes it (draining in-flight
    requests for up to ``drain_timeout`` seconds) on ``stopService``.

    :param make_client: builds the client; called on start, so a stopped
        and restarted service gets a fresh client.  Receives no arguments;
        pass ``start=False`` to ``from_endpoint`` so the service is the one
        that starts it.
    :ivar client: the running client, or ``None`` while stopped.
    """

    def __init__(
        self,
        make_client: Callable[[], ClientT],
        drain_timeout: float | None = 10.0,
    ) -> None:
        if isinstance(make_client, type):
            # Callable, but its constructor needs endpoints: it would fail
            # only at start, naming a parameter the user never saw.
            name = make_client.__name__
            raise TypeError(
                f"make_client must be a function that builds the client, got "
                f"the class {name}: pass lambda: {name}.from_endpoint(reactor, "
                f"..., start=False) (the service builds it on start)"
            )
        if not callable(make_client):
            raise TypeError(
                f"make_client must be a function that builds the client, got "
                f"{make_client!r}: pass lambda: FramedClient.from_endpoint(..., "
                f"start=False) (the service builds it on start)"
            )
        check_argument(
            Seconds(optional=True),
            "drain_timeout",
            drain_timeout,
            "FramedClientService",
        )
        self._make_client = make_client
        self.drain_timeout = drain_timeout
        self.client: ClientT | None = None

    def startService(self) -> None:
        client = self._make_client()
        if not callable(getattr(client, "start", None)):
            raise TypeError(
                f"make_client returned {client!r}, which has no start(): it "
                f"must build a client (FramedClient, RedisClient, "
                f"MemcacheClient, ...)"
            )
        super().startService()  # type: ignore[no-untyped-call]
        self.client = client
        client.start()

    def stopService(self) -> Deferred[Any]:
        super().stopService()  # type: ignore[no-untyped-call]
        client, self.client = self.client, None
        if client is None:
            d: Deferred[Any] = Deferred()
            d.callback(None)
            return d
        return client.close(self.drain_timeout)
