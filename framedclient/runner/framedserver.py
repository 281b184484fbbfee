"""
``twist framedserver``: the fc1 reference server as a service.

The same server as ``python -m framedclient.server``, for people who run
everything with ``twist`` (and for the gateway's demos and tests); see
:mod:`framedclient.server` for the commands a request body may carry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, Service
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from framedclient.codecs import DEFAULT_MAX_FRAME, FC1Codec
from framedclient.runner.listening import fail_startup
from framedclient.runner.options import (
    check_server_endpoint,
    usage_exit,
    version_exit,
    with_suggestion,
)
from framedclient.server import ReferenceServerFactory

__all__ = ["DEFAULT_LISTEN", "Options", "makeService"]

_log = Logger(namespace="framedclient.runner")

DEFAULT_LISTEN = "tcp:9000:interface=127.0.0.1"


class Options(usage.Options):
    """
    ``twist framedserver`` options; ``--port N`` is shorthand for
    ``--listen tcp:N:interface=127.0.0.1``.
    """

    synopsis = "[options]"
    longdesc = (
        "Run the fc1 reference server: it echoes each request body, unless the "
        "body starts with a command (!delay:S, !error:MSG, !drop, !hold, "
        "!goaway, !size:N, !mute, !reverse:N)."
    )
    optParameters = [
        [
            "listen",
            None,
            DEFAULT_LISTEN,
            "Server endpoint to listen on (any Twisted server endpoint string).",
        ],
        [
            "port",
            None,
            None,
            "TCP port on 127.0.0.1; shorthand for --listen tcp:PORT:interface="
            "127.0.0.1.",
        ],
        [
            "max-frame",
            None,
            str(DEFAULT_MAX_FRAME),
            "Largest frame accepted, in bytes, length field included.",
        ],
    ]

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except usage.UsageError as error:
            names = [o.rstrip("=") for o in self.longOpt]
            usage_exit("framedserver", with_suggestion(error, names))

    def opt_version(self) -> NoReturn:
        """
        Print framedclient's version (and Twisted's and Python's) and exit.
        """
        version_exit()

    def postOptions(self) -> None:
        if self["port"] is not None:
            port = self["port"]
            if not (port.isdigit() and 0 <= int(port) <= 65535):
                raise usage.UsageError(f"--port {port!r}: expected 0..65535")
            self["listen"] = f"tcp:{int(port)}:interface=127.0.0.1"
        check_server_endpoint("listen", self["listen"])
        raw = self["max-frame"]
        if not (raw.isdigit() and int(raw) >= 13):
            raise usage.UsageError(
                f"--max-frame {raw!r}: expected a number of bytes >= 13"
            )
        self["max-frame"] = int(raw)


class _ServerService(StreamServerEndpointService):
    """
    Logs where it listens once it does: the line scripts wait for.  When it
    cannot listen it says so in one line and the process exits 1, as
    ``twist framedclient`` does (not the traceback Twisted would print).
    """

    def __init__(self, reactor: Any, endpoint: Any, factory: Any) -> None:
        super().__init__(endpoint, factory)  # type: ignore[no-untyped-call]
        self._reactor = reactor

    def privilegedStartService(self) -> None:
        # Not the base class's: it either raises (a traceback under twist)
        # or logs the failure with a traceback and keeps running.
        Service.privilegedStartService(self)  # type: ignore[no-untyped-call]
        self._waitingForPort = self.endpoint.listen(self.factory)
        self._waitingForPort.addCallbacks(self._listening, self._failed)

    def _listening(self, port: Any) -> Any:
        address = port.getHost()
        _log.info(
            "framedserver listening on {host}:{port}",
            host=getattr(address, "host", address),
            port=getattr(address, "port", ""),
        )
        return port

    def _failed(self, failure: Failure) -> None:
        if not failure.check(CancelledError):  # type: ignore[no-untyped-call]
            fail_startup(self._reactor, "framedserver", failure)


def makeService(options: Options) -> IService:
    """
    The ``twist framedserver`` entry point.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    factory = ReferenceServerFactory(FC1Codec(options["max-frame"]), reactor)
    factory.noisy = False
    endpoint = serverFromString(reactor, options["listen"])  # type: ignore[no-untyped-call]
    return _ServerService(reactor, endpoint, factory)
