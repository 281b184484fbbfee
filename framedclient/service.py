"""
:class:`FramedClientService`: a :class:`~framedclient.client.FramedClient`
as a node in a Twisted application's service graph, so it starts with the
application and drains when the application stops (``twist``, ``twistd``,
``MultiService``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from framedclient.client import FramedClient

__all__ = ["FramedClientService"]


class FramedClientService(Service):
    """
    Starts the pool on ``startService`` and closes it (draining in-flight
    requests for up to ``drain_timeout`` seconds) on ``stopService``.

    :param make_client: builds the client; called on start, so a stopped
        and restarted service gets a fresh client.  Receives no arguments;
        pass ``start=False`` to ``FramedClient`` yourself if you build it
        elsewhere.
    :ivar client: the running client, or ``None`` while stopped.
    """

    def __init__(
        self,
        make_client: Callable[[], FramedClient],
        drain_timeout: float | None = 10.0,
    ) -> None:
        self._make_client = make_client
        self.drain_timeout = drain_timeout
        self.client: FramedClient | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.client = self._make_client()
        self.client.start()

    def stopService(self) -> Deferred[Any]:
        super().stopService()  # type: ignore[no-untyped-call]
        client, self.client = self.client, None
        if client is None:
            d: Deferred[Any] = Deferred()
            d.callback(None)
            return d
        return client.close(self.drain_timeout)
