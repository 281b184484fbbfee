"""
A service that listens on a server endpoint string while it runs, and can
stop accepting connections separately from stopping, so the runner can
drain in between; and how a ``twist`` command reports that it cannot
listen: one line, then exit status 1.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from framedclient._endpoints import describe_listen_failure

__all__ = [
    "DEFAULT_BACKLOG",
    "ListeningService",
    "address_of",
    "describe_listen_failure",
    "fail_startup",
    "url_of",
    "with_backlog",
]

#: The listen backlog of tcp:, tcp6:, ssl: and unix: endpoints that do not
#: set ``backlog=`` themselves.  Twisted's default, 50, overflows under a
#: burst of new connections, and each connection dropped from a full queue
#: waits for the client's SYN retry (one second, then more).  Linux caps it
#: at ``net.core.somaxconn`` (4096 since 5.4).
DEFAULT_BACKLOG = 1024

_BACKLOG_TYPES = ("tcp", "tcp6", "ssl", "unix")


def with_backlog(description: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """
    ``description`` with ``:backlog=N`` appended when it is an endpoint type
    that takes one and does not set it; other descriptions (``systemd:``,
    whose socket is already listening) unchanged.
    """
    kind = description.split(":", 1)[0].strip().lower()
    if kind not in _BACKLOG_TYPES or "backlog=" in description.lower():
        return description
    return f"{description}:backlog={backlog}"


_log = Logger(namespace="framedclient.runner")


class ListeningService(Service):
    """
    Base of the gateway's HTTP service and the ``--listen`` proxy service.

    :ivar port: the listening port while listening, else ``None``.
    :ivar listening: fires with the port once listening (or fails: the port
        is taken, the endpoint string is wrong).
    """

    def __init__(
        self,
        reactor: Any,
        description: str,
        inherited: tuple[int, int] | None = None,
    ) -> None:
        self._reactor = reactor
        self.description = description
        #: ``(file descriptor, address family)`` of a listening socket that
        #: another process opened (a worker of ``--workers N``): it is
        #: adopted instead of listening on ``description``.
        self.inherited = inherited
        self.port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] = Deferred()

    def _listen(self, factory: IProtocolFactory) -> None:
        from twisted.internet.endpoints import serverFromString

        d: Deferred[IListeningPort]
        if self.inherited is not None:
            fd, family = self.inherited
            try:
                # adoptStreamPort works on its own copy of the descriptor.
                adopted = self._reactor.adoptStreamPort(fd, family, factory)
            except Exception:
                d = fail()
            else:
                d = succeed(adopted)
            finally:
                os.close(fd)
        else:
            endpoint = serverFromString(self._reactor, with_backlog(self.description))  # type: ignore[no-untyped-call]
            d = endpoint.listen(factory)

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


def fail_startup(reactor: Any, program: str, failure: Failure) -> None:
    """
    Log why ``program`` cannot listen as one critical line (``twist``
    prints critical events on stderr), stop the reactor, and exit with
    status 1 once it has stopped, so a supervisor sees the failure
    (``twist`` itself would exit 0).  Works whether or not the reactor runs
    yet.
    """
    # The program name is part of the format (not a field) so that the log
    # format itself names who failed.
    _log.critical(
        program + " cannot start: {reason}; stopping",
        reason=describe_listen_failure(failure),
    )
    reactor.addSystemEventTrigger("after", "shutdown", exit_failed)
    reactor.callWhenRunning(reactor.stop)


def exit_failed() -> None:
    """
    Exit with status 1 after the reactor shut down (startup failed).

    ``os._exit`` because ``twist`` offers no way to choose the status and a
    ``SystemExit`` raised in a shutdown trigger is only logged.
    """
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def url_of(port: IListeningPort, description: str) -> str:
    """
    The URL people type for the HTTP listener ``port`` (a wildcard
    address shown as loopback).
    """
    address = port.getHost()
    host = getattr(address, "host", None)
    number = getattr(address, "port", None)
    if host is None or number is None:
        return f"{description} ({address})"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if description.lower().startswith(("ssl:", "tls:")) else "http"
    return f"{scheme}://{shown}:{number}/"


def address_of(port: IListeningPort, description: str) -> str:
    """``HOST:PORT`` of ``port``, or the description for other kinds."""
    address = port.getHost()
    host = getattr(address, "host", None)
    number = getattr(address, "port", None)
    if host is None or number is None:
        return f"{description} ({address})"
    return f"{host}:{number}"
