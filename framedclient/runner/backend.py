"""
The embedded demo backend: the fc1 reference server, in-process, on an
ephemeral loopback port.

``twist framedclient`` without ``--upstream`` starts it, so the first command
of the README shows real traffic (echo, ``!delay:S``, ``!error:MSG``, ...)
on a fresh machine with nothing else running.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IListeningPort

from framedclient.server import ReferenceServerFactory

__all__ = ["EmbeddedBackendService"]


class EmbeddedBackendService(Service):
    """
    Runs a :class:`ReferenceServerFactory` on ``127.0.0.1`` port 0 while
    running.

    It listens with ``reactor.listenTCP`` rather than an endpoint because the
    client, started right after it, needs the port number synchronously;
    a TCP listen either binds at once or raises.

    :ivar factory: the server (its counters are handy in tests).
    :ivar port: the listening port while running.
    """

    name = "embedded-backend"

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.factory = ReferenceServerFactory(clock=reactor)
        self.factory.noisy = False
        self.port: IListeningPort | None = None

    @property
    def endpoint(self) -> str:
        """
        The client endpoint string of the running server.

        :raises RuntimeError: while stopped.
        """
        if self.port is None:
            raise RuntimeError("the embedded backend is not running")
        address = self.port.getHost()
        return f"tcp:127.0.0.1:{address.port}"  # type: ignore[attr-defined]

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.port = self._reactor.listenTCP(0, self.factory, interface="127.0.0.1")

    def stopService(self) -> Any:
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        if port is None:
            return None
        d = port.stopListening()
        # By now the client has drained and closed its connections; drop
        # anything left (a client that was aborted) as a crash would.
        self.factory.drop_all()
        return d
