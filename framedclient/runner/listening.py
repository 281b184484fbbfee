"""
A service that listens on a server endpoint string while it runs, and can
stop accepting connections separately from stopping, so the runner can
drain in between.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IProtocolFactory

__all__ = ["ListeningService"]


class ListeningService(Service):
    """
    Base of the gateway's HTTP service and the ``--listen`` proxy service.

    :ivar port: the listening port while listening, else ``None``.
    :ivar listening: fires with the port once listening (or fails: the port
        is taken, the endpoint string is wrong).
    """

    def __init__(self, reactor: Any, description: str) -> None:
        self._reactor = reactor
        self.description = description
        self.port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] = Deferred()

    def _listen(self, factory: IProtocolFactory) -> None:
        from twisted.internet.endpoints import serverFromString

        endpoint = serverFromString(self._reactor, self.description)  # type: ignore[no-untyped-call]
        d: Deferred[IListeningPort] = endpoint.listen(factory)

        def listening(port: IListeningPort) -> IListeningPort:
            self.port = port
            return port

        d.addCallback(listening).chainDeferred(self.listening)

    def stop_accepting(self) -> Deferred[None]:
        """
        Close the listening port; connections already made stay open.  A
        port that fails to close does not hold the shutdown up.
        """
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        d = port.stopListening()
        if d is None:
            return succeed(None)
        result: Deferred[None] = Deferred()
        d.addBoth(lambda _: None).chainDeferred(result)
        return result
