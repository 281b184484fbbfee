"""
``twist framedclient --workers N``: N processes serve one listening socket,
each with its own upstream pool, under a supervisor process.

**The socket.**  The supervisor listens (on ``--http``, and ``--listen`` if
given) and never accepts; each worker is started with a copy of the
listening descriptor and adopts it (``reactor.adoptStreamPort``), so the
kernel hands each new connection to whichever worker accepts first.  This
was chosen over ``SO_REUSEPORT`` (one socket per worker) because a shared
socket has one accept queue: connections waiting in it are not lost when a
worker dies, a restarted worker serves the very same socket, port 0 works,
and nothing else can bind the port in between.

**The figures.**  Each worker is connected to the supervisor by a
socketpair carrying length-prefixed JSON messages (:class:`ControlChannel`).
When a worker is asked for ``/metrics``, ``/v1/stats``, ``/debug/state`` or
``/v1/throughput``, it asks the supervisor for ``entries``; the supervisor
asks every worker for a fresh ``report`` (its own figures, losslessly),
waits at most :data:`REPORT_TIMEOUT` for each, and answers with one
:class:`~framedclient.runner.cluster.WorkerEntry` per worker, which the
asking worker adds up (:mod:`framedclient.runner.cluster`).  So any worker
answers with the sum over all of them, as fresh as the request.  The
supervisor also collects every :data:`COLLECT_INTERVAL` seconds, and keeps
the counters of a worker that dies (:func:`~framedclient.runner.cluster.retire`):
the sums never go back, and what a dead worker counted in its last second
(since the last collection) is all that is lost.

**The lifecycle.**  SIGTERM to the supervisor closes its copy of the
listening sockets and sends SIGTERM to every worker, each of which drains as
the single-process gateway does; the supervisor exits 0 once they all have
(status 1 if one had to be killed).  A worker that dies otherwise is
restarted after a backoff (:data:`RESTART_BACKOFF`, reset once a worker has
run :data:`HEALTHY_AFTER` seconds), logged as a warning.  A worker whose
supervisor disappears stops gracefully, so no orphan keeps the port.

``--workers 1`` runs no supervisor: it is the single process it always was.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IDelayedCall, IListeningPort
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from framedclient.backoff import ExponentialBackoff
from framedclient.runner.cluster import WorkerEntry, retire
from framedclient.runner.listening import (
    address_of,
    describe_listen_failure,
    fail_startup,
    url_of,
    with_backlog,
)
from framedclient.runner.stopping import HTTP_CLOSE_TIMEOUT, GracefulStop

__all__ = [
    "COLLECT_INTERVAL",
    "ENVIRONMENT",
    "HEALTHY_AFTER",
    "REPORT_TIMEOUT",
    "RESTART_BACKOFF",
    "ControlChannel",
    "WorkerLink",
    "WorkerRole",
    "WorkerSupervisor",
    "worker_command",
]

_log = Logger(namespace="framedclient.runner")

#: The environment variable that makes a ``twist framedclient`` process a
#: worker: JSON of :class:`WorkerRole`.
ENVIRONMENT = "FRAMEDCLIENT_WORKER"

#: Seconds the supervisor waits for one worker's report before using the
#: last one it has (marked stale).
REPORT_TIMEOUT = 2.0

#: Seconds between the supervisor's own collections, which bound what a
#: worker that dies can take with it.
COLLECT_INTERVAL = 1.0

#: Delay before restarting a worker that died, by consecutive quick deaths.
RESTART_BACKOFF = ExponentialBackoff(
    initial=0.5, multiplier=2.0, jitter=0.2, max_delay=30.0
)

#: A worker that ran this many seconds before dying is restarted after the
#: first (shortest) delay again.
HEALTHY_AFTER = 10.0

#: Seconds the supervisor gives its workers to drain, beyond
#: ``--drain-timeout`` and the HTTP close timeout, before it kills them.
STOP_MARGIN = 10.0

#: Signals a worker may be stopped by, gracefully, while stopping.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Where the listening sockets and the control socket are in a worker.
_CONTROL_FD = 3
_FIRST_LISTENER_FD = 4


_DONE = Failure(ConnectionDone())  # type: ignore[no-untyped-call]


class ControlChannel(Int32StringReceiver):
    """
    Length-prefixed JSON messages between the supervisor and one worker:
    requests with an ``id`` (answered with the same ``id`` and ``reply`` or
    ``error``) and notices without one.

    Why not AMP: an AMP value is at most 64 KiB, and a report (every
    connection's state and histograms) of a large pool exceeds it.

    :param handlers: operation name -> handler; a handler takes the message
        and returns a JSON-able value or a Deferred of one.
    :param lost: called once when the channel closes.
    """

    MAX_LENGTH = 256 * 1024 * 1024

    def __init__(
        self,
        handlers: dict[str, Callable[[dict[str, Any]], Any]],
        lost: Callable[[Failure], None] = lambda reason: None,
    ) -> None:
        self.handlers = handlers
        self._lost = lost
        self._next_id = 0
        self._pending: dict[int, Deferred[Any]] = {}
        self.connected_: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.connected_.callback(None)

    def _send(self, message: dict[str, Any]) -> None:
        if self.transport is not None:
            data = json.dumps(message, separators=(",", ":")).encode()
            self.sendString(data)  # type: ignore[no-untyped-call]

    def call(self, op: str, **arguments: Any) -> Deferred[Any]:
        """
        Ask the other side to run ``op``; fires with its reply, fails with
        its error or when the channel closes first.
        """
        self._next_id += 1
        request_id = self._next_id

        def forget(d: Deferred[Any]) -> None:
            # Cancelled (a timeout): a late answer is then ignored.
            self._pending.pop(request_id, None)

        d: Deferred[Any] = Deferred(forget)
        self._pending[request_id] = d
        self._send({"op": op, "id": request_id, **arguments})
        return d

    def notify(self, op: str, **arguments: Any) -> None:
        """Tell the other side something; no answer."""
        self._send({"op": op, **arguments})

    def stringReceived(self, data: bytes) -> None:
        message = json.loads(data)
        if "op" not in message:
            d = self._pending.pop(message.get("id"), None)
            if d is None:
                return  # answered after a timeout
            if "error" in message:
                d.errback(RuntimeError(message["error"]))
            else:
                d.callback(message.get("reply"))
            return
        handler = self.handlers.get(message["op"])
        request_id = message.get("id")
        if handler is None:
            if request_id is not None:
                self._send(
                    {"id": request_id, "error": f"no operation {message['op']!r}"}
                )
            return
        result = maybeDeferred(handler, message)
        if request_id is None:
            result.addErrback(
                lambda f: _log.failure(
                    "Control message {op} failed", f, op=message["op"]
                )
            )
            return

        def reply(value: Any) -> None:
            self._send({"id": request_id, "reply": value})

        def error(failure: Failure) -> None:
            self._send({"id": request_id, "error": str(failure.value)})

        result.addCallbacks(reply, error)

    def connectionLost(self, reason: Failure = _DONE) -> None:
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(ConnectionDone("the control channel closed"))
        self._lost(reason)


class _GivenProtocol(Factory):
    # adoptStreamConnection builds its protocol through a factory.
    def __init__(self, protocol: Protocol) -> None:
        self.given = protocol

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        return self.given


class _NoAccept(Factory):
    """The supervisor's factory: it never accepts (its workers do)."""

    noisy = False

    def __init__(self, what: str) -> None:
        self._what = what

    def logPrefix(self) -> str:
        # Twisted logs "<prefix> starting on PORT": the socket's purpose,
        # not this class's name.
        return f"framedclient {self._what} (shared by the workers)"

    def buildProtocol(self, addr: IAddress | None) -> None:
        return None


@attrs.frozen
class WorkerRole:
    """
    What makes a process a worker: its index, and where its control socket
    and inherited listening sockets are (``(fd, address family)``).
    """

    index: int
    control: int
    http: tuple[int, int]
    listen: tuple[int, int] | None = None

    def to_environment(self) -> str:
        return json.dumps(attrs.asdict(self))

    @classmethod
    def from_environment(
        cls, environ: dict[str, str] | None = None
    ) -> WorkerRole | None:
        """The role in :data:`ENVIRONMENT`, or ``None`` (not a worker)."""
        raw = (os.environ if environ is None else environ).get(ENVIRONMENT)
        if not raw:
            return None
        data = json.loads(raw)
        listen = data.get("listen")
        return cls(
            index=int(data["index"]),
            control=int(data["control"]),
            http=(int(data["http"][0]), int(data["http"][1])),
            listen=None if listen is None else (int(listen[0]), int(listen[1])),
        )


class WorkerLink:
    """
    A worker's end of its control channel: it answers the supervisor's
    ``report`` requests and asks it for every worker's figures
    (:class:`~framedclient.runner.gateway.Cluster`).

    :param report: this worker's figures now, or ``None`` while stopped.
    :param lost: called if the supervisor goes away.
    """

    def __init__(
        self,
        reactor: Any,
        role: WorkerRole,
        report: Callable[[], dict[str, Any] | None],
        lost: Callable[[], None],
    ) -> None:
        self.worker = role.index
        self.closing = False

        def channel_lost(reason: Failure) -> None:
            if not self.closing:
                lost()

        self.channel = ControlChannel({"report": lambda _: report()}, channel_lost)
        reactor.adoptStreamConnection(
            role.control, socket.AF_UNIX, _GivenProtocol(self.channel)
        )
        os.close(role.control)

    def entries(self) -> Deferred[list[WorkerEntry]]:
        """Every worker's fresh figures, from the supervisor."""
        d = self.channel.call("entries")
        return d.addCallback(lambda rows: [WorkerEntry.from_json(r) for r in rows])

    def ready(self, **facts: Any) -> None:
        """Tell the supervisor this worker serves (with what it says at startup)."""
        self.channel.notify("ready", pid=os.getpid(), **facts)

    def upstream_ready(self) -> None:
        """
        Tell the supervisor that an upstream connection is now ready, after
        :meth:`ready` said none was.
        """
        self.channel.notify("upstream_ready")


def worker_command(plugin_argv: list[str]) -> list[str]:
    """
    The ``twist`` arguments a worker runs with: the supervisor's own (its
    ``--log-format`` and so on), when this process is that ``twist``, else
    just ``framedclient`` and the plugin's arguments.
    """
    argv = sys.argv[1:]
    n = len(plugin_argv)
    head = argv[: len(argv) - n]
    if argv[len(argv) - n :] == plugin_argv and head[-1:] == ["framedclient"]:
        return [*head, *plugin_argv]
    return ["framedclient", *plugin_argv]


class _Slot(ProcessProtocol):
    """One worker slot: its current process and what the supervisor knows."""

    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.pid: int | None = None
        self.channel: ControlChannel | None = None
        self.ready = False
        self.report: dict[str, Any] | None = None
        self.stale = False
        self.retired: dict[str, Any] | None = None
        self.restarts = 0
        self.quick_deaths = 0
        self.started_at = 0.0
        self.facts: dict[str, Any] = {}
        self.restart_call: IDelayedCall | None = None
        #: fires with the exit status (``None`` if killed) when it ends.
        self.ended: Deferred[int | None] | None = None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def entry(self) -> WorkerEntry:
        return WorkerEntry(
            worker=self.index,
            pid=self.pid,
            up=self.running and self.ready,
            restarts=self.restarts,
            report=self.report,
            stale=self.stale,
            retired=self.retired,
        )

    def fetch(self) -> Deferred[None]:
        """Refresh :attr:`report`; never fails (a silent worker is stale)."""
        channel = self.channel
        if channel is None or not self.ready:
            return succeed(None)
        d = channel.call("report")
        d.addTimeout(REPORT_TIMEOUT, self.supervisor.reactor)

        def got(report: dict[str, Any] | None) -> None:
            if report is not None and self.channel is channel:
                self.report, self.stale = report, False

        def silent(failure: Failure) -> None:
            if self.channel is channel:
                self.stale = True

        return d.addCallbacks(got, silent)

    def processEnded(self, reason: Failure) -> None:
        self.supervisor._ended(self, reason)


class WorkerSupervisor(Service):
    """
    The supervisor process of ``--workers N``: listens, starts the workers,
    gathers their figures for them, restarts the ones that die, and stops
    them all on SIGTERM (see the module docstring).

    :ivar ready: fires with the HTTP URL once every worker serves.
    """

    def __init__(self, reactor: Any, options: Any) -> None:
        self.reactor = reactor
        self.options = options
        self.count: int = options["workers"]
        self.drain_timeout: float = options["drain-timeout"]
        self.command = worker_command(list(options.get("argv", [])))
        self.slots = [_Slot(self, i) for i in range(self.count)]
        self.ports: list[IListeningPort] = []
        self.ready: Deferred[str] = Deferred()
        self.http_url: str | None = None
        self.stopping = False
        self.standalone = False
        self.failed_workers = 0
        #: The startup line logged: None, "listening" or "ready".
        self._announced: str | None = None
        self._collecting: Deferred[Any] | None = None
        self._waiting: list[Deferred[None]] = []
        self._collector = LoopingCall(self._collect_quietly)
        self._collector.clock = reactor
        self._graceful_stop = GracefulStop(reactor)

    # -- starting --------------------------------------------------------------

    def startService(self) -> None:
        from twisted.internet.endpoints import serverFromString

        super().startService()  # type: ignore[no-untyped-call]
        self.standalone = not self.reactor.running
        descriptions = [self.options["http"]]
        if self.options.get("listen") is not None:
            descriptions.append(self.options["listen"])
        listening = [
            serverFromString(self.reactor, with_backlog(d)).listen(_NoAccept(what))  # type: ignore[no-untyped-call]
            for d, what in zip(descriptions, ("HTTP", "proxy"), strict=False)
        ]
        d = gatherResults(listening, consumeErrors=True)
        d.addCallbacks(self._listening, self._listen_failed)
        if self.standalone:
            self.reactor.callWhenRunning(self._graceful_stop.install)

    def _listening(self, ports: list[IListeningPort]) -> None:
        for port in ports:
            # The workers accept; this process only keeps the socket open
            # (for workers started later).
            port.stopReading()  # type: ignore[attr-defined]
        self.ports = ports
        self.http_url = url_of(ports[0], self.options["http"])
        for slot in self.slots:
            self._spawn(slot)
        self._collector.start(COLLECT_INTERVAL, now=False)

    def _listen_failed(self, failure: Failure) -> None:
        if self.standalone:
            self.ready.addErrback(lambda _: None)
            fail_startup(self.reactor, "framedclient", failure)
        else:
            _log.critical(
                "framedclient cannot start: {reason}",
                reason=describe_listen_failure(failure),
            )
        sub = getattr(failure.value, "subFailure", None)
        self.ready.errback(sub if sub is not None else failure)

    def _spawn(self, slot: _Slot) -> None:
        slot.restart_call = None
        if self.stopping:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        theirs.setblocking(False)
        fds: dict[int, Any] = {0: "w", 1: 1, 2: 2, _CONTROL_FD: theirs.fileno()}
        listeners: list[tuple[int, int]] = []
        for offset, port in enumerate(self.ports):
            fd = _FIRST_LISTENER_FD + offset
            fds[fd] = port.fileno()  # type: ignore[attr-defined]
            listeners.append((fd, _family(port)))
        role = WorkerRole(
            index=slot.index,
            control=_CONTROL_FD,
            http=listeners[0],
            listen=listeners[1] if len(listeners) > 1 else None,
        )
        env = {**os.environ, ENVIRONMENT: role.to_environment()}
        slot.ready = False
        slot.report = None
        slot.stale = False
        slot.started_at = self.reactor.seconds()
        try:
            process = self.reactor.spawnProcess(
                slot,
                sys.executable,
                [sys.executable, "-m", "twisted", *self.command],
                env=env,
                childFDs=fds,
            )
        finally:
            theirs.close()
        process.closeStdin()
        slot.pid = process.pid
        slot.ended = Deferred()
        channel = ControlChannel(
            {
                "ready": lambda m: self._worker_ready(slot, m),
                "upstream_ready": lambda _: self._upstream_ready(slot),
                "entries": self._entries,
            },
            lambda reason: self._channel_lost(slot, channel),
        )
        slot.channel = channel
        try:
            self.reactor.adoptStreamConnection(
                ours.fileno(), socket.AF_UNIX, _GivenProtocol(channel)
            )
        finally:
            ours.close()

    def _channel_lost(self, slot: _Slot, channel: ControlChannel) -> None:
        if slot.channel is channel:
            slot.channel = None

    def _worker_ready(self, slot: _Slot, message: dict[str, Any]) -> None:
        slot.ready = True
        slot.facts = message
        _log.info(
            "framedclient worker {worker} ready (pid {pid})",
            worker=slot.index,
            pid=message.get("pid"),
        )
        if self._announced is not None or not all(s.ready for s in self.slots):
            return
        self._announce()

    def _upstream_ready(self, slot: _Slot) -> None:
        slot.facts["upstream_ready"] = True
        if self._announced == "listening" and self._all_upstreams_ready():
            self._announce()

    def _all_upstreams_ready(self) -> bool:
        # A worker of an older message format says nothing: ready.
        return all(s.facts.get("upstream_ready", True) for s in self.slots)

    def _announce(self) -> None:
        """
        Log the startup line once every worker listens: "framedclient
        ready" when every one has an upstream connection, else "framedclient
        listening; upstream not reachable yet", and "ready" later, once they
        all have.
        """
        config = self.options["config"]
        facts = self.slots[0].facts
        proxy = "off"
        if len(self.ports) > 1:
            proxy = address_of(self.ports[1], self.options["listen"])
        upstreams = (
            "embedded reference server (one per worker)"
            if not self.options["upstream"]
            else ",".join(facts.get("upstreams", []))
        )
        settings = (
            "http={http_url} workers={workers} proxy={proxy} "
            "upstream={upstreams} codec={codec} pool_size={pool_size} "
            "max_in_flight={max_in_flight} max_pending={max_pending} "
            "request_timeout={request_timeout}"
        )
        errors = [
            s.facts.get("upstream_error") or "no connection yet"
            for s in self.slots
            if not s.facts.get("upstream_ready", True)
        ]
        first = self._announced is None
        if errors:
            self._announced = "listening"
            emit = _log.warn
            line = (
                f"framedclient listening; upstream not reachable yet in "
                f"{len(errors)} of {self.count} workers: {{reason}} (retrying; "
                f"'framedclient ready' follows once every worker has a "
                f"connection): " + settings
            )
        else:
            self._announced = "ready"
            emit = _log.info
            line = "framedclient ready: " + settings
        emit(
            line,
            reason=errors[0] if errors else None,
            http_url=self.http_url,
            workers=self.count,
            pids=[s.pid for s in self.slots],
            proxy=proxy,
            upstreams=upstreams,
            codec=self.options["codec-spec"],
            pool_size=config.pool_size,
            max_in_flight=config.max_in_flight,
            max_pending=config.max_pending,
            request_timeout="off"
            if config.request_timeout is None
            else f"{config.request_timeout:g}s",
        )
        assert self.http_url is not None
        if first:
            self.ready.callback(self.http_url)

    # -- the figures -----------------------------------------------------------

    def collect(self) -> Deferred[None]:
        """
        Fresh reports from every worker (joining a collection under way).
        """
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        if self._collecting is None:
            collecting: Deferred[Any] = DeferredList(
                [slot.fetch() for slot in self.slots], consumeErrors=True
            )
            # Set before the callback: with no worker ready yet, every fetch
            # is done at once and the callback runs right here.
            self._collecting = collecting
            collecting.addCallback(self._collected)
        return d

    def _collected(self, _: object) -> None:
        self._collecting = None
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def _collect_quietly(self) -> Deferred[None]:
        return self.collect()

    def _entries(self, message: dict[str, Any]) -> Deferred[list[dict[str, Any]]]:
        def rows(_: object) -> list[dict[str, Any]]:
            return [slot.entry().as_json() for slot in self.slots]

        return self.collect().addCallback(rows)

    # -- deaths and restarts ---------------------------------------------------

    def _ended(self, slot: _Slot, reason: Failure) -> None:
        pid, slot.pid = slot.pid, None
        slot.retired = retire(slot.retired, slot.report)
        slot.report = None
        slot.ready = False
        slot.stale = False
        if slot.channel is not None:
            transport = slot.channel.transport
            slot.channel = None
            if transport is not None:
                transport.loseConnection()
        ended, slot.ended = slot.ended, None
        code = getattr(reason.value, "exitCode", None)
        signal_number = getattr(reason.value, "signal", None)
        how = (
            f"was killed by signal {signal_number}"
            if signal_number is not None
            else f"exited with status {code}"
        )
        if self.stopping:
            # Ctrl-C reaches the workers too (one process group): twist then
            # exits by the signal after a graceful stop, which is no failure.
            if code != 0 and signal_number not in _STOP_SIGNALS:
                self.failed_workers += 1
                _log.warn(
                    "framedclient worker {worker} (pid {pid}) {how} while stopping",
                    worker=slot.index,
                    pid=pid,
                    how=how,
                )
            if ended is not None:
                ended.callback(code)
            return
        lived = self.reactor.seconds() - slot.started_at
        slot.quick_deaths = 1 if lived >= HEALTHY_AFTER else slot.quick_deaths + 1
        delay = RESTART_BACKOFF.delay(slot.quick_deaths)
        slot.restarts += 1
        _log.warn(
            "framedclient worker {worker} (pid {pid}) {how}; restarting it in "
            "{delay:.2f} s (restart {restarts}); its counters so far are kept",
            worker=slot.index,
            pid=pid,
            how=how,
            delay=delay,
            restarts=slot.restarts,
        )
        slot.restart_call = self.reactor.callLater(delay, self._spawn, slot)
        if ended is not None:
            ended.callback(code)

    # -- stopping --------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)  # type: ignore[no-untyped-call]
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self.stopping = True
        if self._collector.running:
            self._collector.stop()
        for slot in self.slots:
            if slot.restart_call is not None and slot.restart_call.active():
                slot.restart_call.cancel()
            slot.restart_call = None
        running = [s for s in self.slots if s.running]
        _log.info(
            "framedclient stopping: draining {workers} workers (up to {timeout:g} s)",
            workers=len(running),
            timeout=self.drain_timeout,
        )
        # This process never accepts; closing its copy now means the socket
        # closes as soon as the last worker stops accepting.
        ports, self.ports = self.ports, []
        await DeferredList(
            [maybeDeferred(p.stopListening) for p in ports], consumeErrors=True
        )
        ended = [s.ended for s in running if s.ended is not None]
        for slot in running:
            _signal(slot, "TERM")

        limit = self.drain_timeout + HTTP_CLOSE_TIMEOUT + STOP_MARGIN
        all_ended = DeferredList(ended, consumeErrors=True)
        all_ended.addTimeout(limit, self.reactor)
        try:
            await all_ended
        except Exception:
            late = [s for s in self.slots if s.running]
            _log.error(
                "framedclient workers {workers} still running {limit:g} s after "
                "SIGTERM; killing them",
                workers=[s.index for s in late],
                limit=limit,
            )
            waits = [s.ended for s in late if s.ended is not None]
            for slot in late:
                _signal(slot, "KILL")
            await DeferredList(waits, consumeErrors=True)
        if self.failed_workers and self.standalone:
            from framedclient.runner.listening import exit_failed

            self.reactor.addSystemEventTrigger("after", "shutdown", exit_failed)
        _log.info("framedclient stopped")


def _signal(slot: _Slot, name: str) -> None:
    transport = slot.transport
    if transport is None or not slot.running:
        return
    try:
        transport.signalProcess(name)
    except Exception:  # already gone: processEnded will tell
        pass


def _family(port: IListeningPort) -> int:
    from twisted.internet.address import IPv6Address

    return (
        socket.AF_INET6 if isinstance(port.getHost(), IPv6Address) else socket.AF_INET
    )
