"""
How a ``twist framedclient`` process stops on SIGTERM, shared by the single
process (:class:`~framedclient.runner.app.RunnerService`) and the
``--workers`` supervisor (:class:`~framedclient.runner.workers.WorkerSupervisor`)
so the two cannot drift apart.

Under ``twist``, Twisted's own handler stops the reactor and ``twist`` then
re-kills itself with the same signal, so the exit status says "killed by
SIGTERM".  A process that drained cleanly should exit 0 (that is what
systemd, Kubernetes and supervisors expect of a graceful stop), so a
standalone process installs this handler instead: it stops the reactor
without recording the signal, and the service's ``stopService`` drains.
An application that embeds the service on a running reactor keeps its own
signal handling.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.logger import Logger

__all__ = ["HTTP_CLOSE_TIMEOUT", "GracefulStop"]

_log = Logger(namespace="framedclient.runner")

#: Seconds the HTTP connections get to flush their last responses after the
#: drain, before they are aborted.
HTTP_CLOSE_TIMEOUT = 5.0


class GracefulStop:
    """
    The SIGTERM handler of one process: the first SIGTERM stops the reactor
    (whose shutdown runs the services' drain), a later one only says that
    the stop is under way, so an impatient ``kill`` does not cut the drain
    short.

    :ivar received: whether SIGTERM has come.
    """

    def __init__(self, reactor: Any, again: str = "") -> None:
        """
        :param again: appended to the "already stopping" line, e.g. how long
            the drain may still take.
        """
        self._reactor = reactor
        self._again = again
        self.received = False

    def install(self, ignore_interrupt: bool = False) -> None:
        """
        Handle SIGTERM from now on (call with the reactor running: it
        installs its own handlers at startup).

        :param ignore_interrupt: ignore SIGINT too: a ``--workers`` worker,
            which its supervisor stops (with SIGTERM) when Ctrl-C reaches the
            terminal's whole process group; stopping on its own, it would be
            restarted for doing so.
        """

        def on_sigterm(signum: int, frame: object) -> None:
            self._reactor.callFromThread(self.stop)

        signal.signal(signal.SIGTERM, on_sigterm)
        if ignore_interrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def stop(self) -> None:
        """
        What SIGTERM does (in the reactor thread).
        """
        if self.received:
            _log.info("SIGTERM again: already stopping{again}", again=self._again)
            return
        self.received = True
        _log.info("SIGTERM: stopping gracefully")
        self._reactor.stop()
