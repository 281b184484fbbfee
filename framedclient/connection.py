"""
One self-healing connection: an Automat state machine in the style of
Twisted's ``ClientService`` (``twisted/application/_client_service.py``).

States and what moves between them::

    idle ──start──▶ connecting ──connected──▶ ready
                     ▲    │                    │ │
              retry  │    │ connect_failed     │ │ goaway: old protocol drains
                     │    ▼                    │ │ on its own; connect anew
                  backing_off ◀────lost────────┘ └──▶ connecting
                     (delay 0 after the loss of a healthy connection)

    close: idle/backing_off ──▶ closed;  connecting/ready ──▶ closing ──▶ closed

Every input is defined in every state (the table is in :func:`_build`), so
no :class:`automat.NoTransition` can escape, and every input returns
``None`` so Automat can postpone inputs that arrive reentrantly (a listener
calling ``close()`` while a transition runs).  The public
:class:`Connection` wraps the machine: it owns the Deferreds handed to users
and turns protocol events into machine inputs.

A connection counts as *healthy* once it has been ready for
``healthy_after`` seconds; losing a healthy connection reconnects at once
and resets the backoff, while a connection that dies young counts as one
more failed attempt, so a server that accepts and immediately closes is
retried with backoff, not in a tight loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from automat import TypeMachineBuilder, pep614
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
    fail,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from framedclient.backoff import BackoffPolicy, ExponentialBackoff
from framedclient.errors import ClientClosed, ConnectionLost
from framedclient.protocol import FramedClientFactory, FramedProtocol

__all__ = ["STATES", "ConnectFailed", "Connection"]

_log = Logger()

#: Every state a :class:`Connection` can be in, in lifecycle order.
STATES = ("idle", "connecting", "ready", "backing_off", "closing", "closed")

PrepareHook = Callable[[FramedProtocol], Any]

_FAILURE_LOG_INTERVAL = 30.0
StateListener = Callable[["Connection", str, str], object]


class ConnectFailed(ConnectionLost):
    """
    ``when_ready(fail_after=N)`` gave up after N consecutive failed attempts.

    :ivar attempts: how many attempts failed in a row.
    :ivar cause: the last attempt's error message.
    """

    def __init__(self, attempts: int, cause: str) -> None:
        super().__init__(False, f"{attempts} connection attempts failed; last: {cause}")
        self.attempts = attempts
        self.cause = cause


class _Inputs(Protocol):
    def start(self) -> None:
        "Begin connecting (no-op unless idle)."

    def connected(self, proto: FramedProtocol) -> None:
        "An attempt produced a prepared, usable protocol."

    def connect_failed(self, reason: Failure) -> None:
        "An attempt failed (refused, timed out, prepare hook failed, ...)."

    def lost(self, reason: Failure) -> None:
        "The current protocol's connection ended."

    def retry(self) -> None:
        "The backoff timer fired."

    def close(self) -> None:
        "Stop for good: drain the current connection, never reconnect."

    def abort(self) -> None:
        "Like close, but drop the current connection without draining."

    def goaway(self) -> None:
        "The server asked us to stop using the current connection."


@dataclass
class _Core:
    owner: Connection
    endpoint: IStreamClientEndpoint
    factory: FramedClientFactory
    clock: IReactorTime
    backoff: BackoffPolicy
    connect_timeout: float | None
    prepare: PrepareHook | None
    healthy_after: float
    failed_attempts: int = 0
    attempts_before_ready: int = 0
    ready_at: float = 0.0
    next_delay: float = 0.0
    protocol: FramedProtocol | None = None
    last_error: str | None = None
    state: str = "idle"
    stopping: list[Deferred[None]] = field(default_factory=list)

    def enter(self, state: str) -> None:
        old, self.state = self.state, state
        if old != state:
            self.owner._state_changed(old, state)


def _build() -> Callable[[_Core], _Inputs]:
    machine = TypeMachineBuilder(_Inputs, _Core)

    # -- state data factories (run on entry) --------------------------------

    def attempt(c: _Inputs, s: _Core) -> Deferred[FramedProtocol]:
        s.enter("connecting")
        s.factory.metrics.record_connection_event("connect_attempt")
        return s.owner._attempt(c, s)

    def remember(c: _Inputs, s: _Core, proto: FramedProtocol) -> FramedProtocol:
        s.owner.connects += 1
        s.protocol = proto
        s.ready_at = s.clock.seconds()
        s.attempts_before_ready = s.failed_attempts
        s.failed_attempts = 0
        s.last_error = None
        s.enter("ready")
        return proto

    def wait(c: _Inputs, s: _Core, reason: Failure) -> IDelayedCall:
        s.enter("backing_off")
        return s.clock.callLater(s.next_delay, c.retry)

    Idle = machine.state("Idle")
    Connecting = machine.state("Connecting", attempt)
    Ready = machine.state("Ready", remember)
    BackingOff = machine.state("BackingOff", wait)
    Closing = machine.state("Closing")
    Closed = machine.state("Closed")

    # -- idle ----------------------------------------------------------------
    Idle.upon(_Inputs.start).to(Connecting).returns(None)
    Idle.upon(_Inputs.connect_failed).loop().returns(None)
    Idle.upon(_Inputs.lost).loop().returns(None)
    Idle.upon(_Inputs.retry).loop().returns(None)
    Idle.upon(_Inputs.goaway).loop().returns(None)

    @pep614(Idle.upon(_Inputs.close).to(Closed))
    @pep614(Idle.upon(_Inputs.abort).to(Closed))
    def close_idle(c: _Inputs, s: _Core) -> None:
        s.enter("closed")

    @pep614(BackingOff.upon(_Inputs.close).to(Closed))
    @pep614(BackingOff.upon(_Inputs.abort).to(Closed))
    def close_backing_off(c: _Inputs, s: _Core, timer: IDelayedCall) -> None:
        if timer.active():
            timer.cancel()
        s.enter("closed")

    @pep614(Idle.upon(_Inputs.connected).loop())
    @pep614(BackingOff.upon(_Inputs.connected, nodata=True).loop())
    @pep614(Closing.upon(_Inputs.connected).loop())
    @pep614(Closed.upon(_Inputs.connected).loop())
    def stray_protocol(c: _Inputs, s: _Core, proto: FramedProtocol) -> None:
        # Only Connecting expects a protocol; one arriving anywhere else (an
        # attempt that finished while we were closing) is closed unused.
        proto.abort("connection no longer wanted")

    @pep614(Ready.upon(_Inputs.connected).loop())
    def stray_protocol_ready(
        c: _Inputs, s: _Core, current: FramedProtocol, proto: FramedProtocol
    ) -> None:
        if proto is not current:
            proto.abort("connection no longer wanted")

    # -- connecting ----------------------------------------------------------
    Connecting.upon(_Inputs.start).loop().returns(None)
    Connecting.upon(_Inputs.connected, nodata=True).to(Ready).returns(None)
    Connecting.upon(_Inputs.lost).loop().returns(None)
    Connecting.upon(_Inputs.retry).loop().returns(None)
    Connecting.upon(_Inputs.goaway).loop().returns(None)

    @pep614(Connecting.upon(_Inputs.connect_failed, nodata=True).to(BackingOff))
    def failed(c: _Inputs, s: _Core, reason: Failure) -> None:
        # Runs after BackingOff's factory; next_delay was set by the owner.
        s.owner._attempt_failed(s, reason)

    @pep614(Connecting.upon(_Inputs.close).to(Closing))
    @pep614(Connecting.upon(_Inputs.abort).to(Closing))
    def cancel_attempt(c: _Inputs, s: _Core, attempt: Deferred[FramedProtocol]) -> None:
        s.enter("closing")
        attempt.cancel()

    # -- ready ---------------------------------------------------------------
    Ready.upon(_Inputs.start).loop().returns(None)
    Ready.upon(_Inputs.connect_failed).loop().returns(None)
    Ready.upon(_Inputs.retry).loop().returns(None)

    # The owner recorded why (last_error) and the delay before this input.
    Ready.upon(_Inputs.lost, nodata=True).to(BackingOff).returns(None)

    @pep614(Ready.upon(_Inputs.goaway).to(Connecting))
    def replace(c: _Inputs, s: _Core, proto: FramedProtocol) -> None:
        s.owner._retire(proto)

    @pep614(Ready.upon(_Inputs.close).to(Closing))
    def close_ready(c: _Inputs, s: _Core, proto: FramedProtocol) -> None:
        s.enter("closing")
        proto.close(drain=True)

    @pep614(Ready.upon(_Inputs.abort).to(Closing))
    def abort_ready(c: _Inputs, s: _Core, proto: FramedProtocol) -> None:
        s.enter("closing")
        proto.close(drain=False)

    # -- backing off ---------------------------------------------------------
    BackingOff.upon(_Inputs.start).loop().returns(None)
    BackingOff.upon(_Inputs.connect_failed).loop().returns(None)
    BackingOff.upon(_Inputs.lost).loop().returns(None)
    BackingOff.upon(_Inputs.retry, nodata=True).to(Connecting).returns(None)
    BackingOff.upon(_Inputs.goaway).loop().returns(None)

    # -- closing -------------------------------------------------------------
    Closing.upon(_Inputs.start).loop().returns(None)
    Closing.upon(_Inputs.retry).loop().returns(None)
    Closing.upon(_Inputs.close).loop().returns(None)
    Closing.upon(_Inputs.goaway).loop().returns(None)

    @pep614(Closing.upon(_Inputs.abort).loop())
    def abort_closing(c: _Inputs, s: _Core) -> None:
        if s.protocol is not None:
            s.protocol.close(drain=False)

    @pep614(Closing.upon(_Inputs.connect_failed).to(Closed))
    @pep614(Closing.upon(_Inputs.lost).to(Closed))
    def finished_closing(c: _Inputs, s: _Core, reason: Failure) -> None:
        s.protocol = None
        s.enter("closed")

    # -- closed --------------------------------------------------------------
    for name in (
        "start",
        "connect_failed",
        "lost",
        "retry",
        "close",
        "abort",
        "goaway",
    ):
        Closed.upon(getattr(_Inputs, name)).loop().returns(None)

    return machine.build()


_Machine = _build()


class Connection:
    """
    One long-lived connection to ``endpoint`` that reconnects by itself.

    :param endpoint: where to connect (any ``IStreamClientEndpoint``).
    :param factory: builds the protocol; its config (codec, timeouts,
        heartbeats) and metrics apply to every connection made.
    :param clock: time source for backoff and connect timeouts.
    :param backoff: reconnect pacing; gRPC's policy by default.
    :param connect_timeout: seconds one attempt (TCP connect, TLS handshake,
        ``prepare``) may take; default: the backoff policy's
        ``connect_timeout`` (gRPC: at least 20 s).
    :param prepare: run on each new connection before it counts as ready
        (handshake, authentication, ``SELECT db``); may return a Deferred;
        if it fails, the attempt fails.
    :param healthy_after: seconds a connection must stay up before its loss
        resets the backoff.
    :param name: shown in logs and :meth:`debug_state`.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        factory: FramedClientFactory,
        clock: IReactorTime,
        *,
        backoff: BackoffPolicy | None = None,
        connect_timeout: float | None = None,
        prepare: PrepareHook | None = None,
        healthy_after: float = 1.0,
        name: str = "conn",
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.factory = factory
        self._core = _Core(
            owner=self,
            endpoint=endpoint,
            factory=factory,
            clock=clock,
            backoff=backoff or ExponentialBackoff(),
            connect_timeout=connect_timeout,
            prepare=prepare,
            healthy_after=healthy_after,
        )
        self._ready_waiters: list[tuple[Deferred[FramedProtocol], int | None]] = []
        self._closed_waiters: list[Deferred[None]] = []
        self._listeners: list[StateListener] = []
        #: Protocols retired by GOAWAY, still finishing their requests.
        self.draining: set[FramedProtocol] = set()
        self.connects = 0
        self.connect_failures = 0
        self._last_failure_log = -float("inf")
        self._machine = _Machine(self._core)

    def __repr__(self) -> str:
        return f"<Connection {self.name} {self.state}>"

    # -- public --------------------------------------------------------------

    @property
    def state(self) -> str:
        """
        One of :data:`STATES`.
        """
        return self._core.state

    @property
    def protocol(self) -> FramedProtocol | None:
        """
        The protocol while ready, else ``None``.
        """
        return self._core.protocol if self._core.state == "ready" else None

    @property
    def last_error(self) -> str | None:
        """
        Why the last attempt failed or the last connection ended.
        """
        return self._core.last_error

    @property
    def failed_attempts(self) -> int:
        return self._core.failed_attempts

    def start(self) -> None:
        """
        Start connecting.  Idempotent.
        """
        self._machine.start()

    def add_listener(self, listener: StateListener) -> None:
        """
        Call ``listener(connection, old_state, new_state)`` on each change.
        """
        self._listeners.append(listener)

    def when_ready(self, fail_after: int | None = None) -> Deferred[FramedProtocol]:
        """
        The ready protocol, now or when there is one.

        :param fail_after: fail with :class:`ConnectFailed` after this many
            consecutive failed attempts from now (``None``: wait until
            closed).  Fails with :class:`~framedclient.errors.ClientClosed`
            if the connection is closed first.
        """
        proto = self.protocol
        if proto is not None:
            return succeed(proto)
        if self.state in ("closing", "closed"):
            return fail(ClientClosed(f"connection {self.name} is closed"))
        d: Deferred[FramedProtocol] = Deferred(self._forget_ready_waiter)
        self._ready_waiters.append((d, fail_after))
        return d

    def close(self, drain: bool = True) -> Deferred[None]:
        """
        Stop reconnecting and close.

        :param drain: let the current connection's requests finish first.
        :return: fires once every connection this object made is gone
            (including ones retired by GOAWAY that were still draining).
        """
        d: Deferred[None] = Deferred()
        self._closed_waiters.append(d)
        if drain:
            self._machine.close()
        else:
            self._machine.abort()
            for proto in list(self.draining):
                proto.close(drain=False)
        self._maybe_closed()
        return d

    def debug_state(self) -> dict[str, Any]:
        """
        A JSON-able picture: state, pending requests, backoff, last error.
        """
        core = self._core
        proto = core.protocol
        return {
            "name": self.name,
            "state": core.state,
            "failed_attempts": core.failed_attempts,
            "next_backoff_delay": core.next_delay
            if core.state == "backing_off"
            else None,
            "last_error": core.last_error,
            "connects": self.connects,
            "connect_failures": self.connect_failures,
            "protocol": proto.debug_state() if proto is not None else None,
            "draining": [p.debug_state() for p in self.draining],
        }

    # -- machine callbacks -----------------------------------------------------

    def _state_changed(self, old: str, new: str) -> None:
        # Listeners first (the pool learns of the ready connection), then
        # when_ready() waiters, who may send at once and must find it.
        for listener in list(self._listeners):
            try:
                listener(self, old, new)
            except Exception:
                _log.failure("state listener {listener!r} failed", listener=listener)
        if new == "ready":
            self._fire_ready(self._core.protocol)
        elif new == "closed":
            self._fire_ready(None)
        if new == "closed":
            # Closed carries no state data, and Automat only replaces its
            # data when a state with data is entered: drop the last protocol
            # it still holds, so a closed connection keeps nothing alive.
            self._machine.__automat_data__ = None  # type: ignore[attr-defined]
            self._maybe_closed()

    def _attempt(self, c: _Inputs, s: _Core) -> Deferred[FramedProtocol]:
        timeout = s.connect_timeout
        if timeout is None:
            timeout = s.backoff.connect_timeout(s.failed_attempts)
        made: list[FramedProtocol] = []

        def prepare(proto: FramedProtocol) -> Deferred[FramedProtocol]:
            made.append(proto)
            proto.when_closed().addCallback(self._protocol_closed, proto)
            proto.on_goaway = self._protocol_goaway
            # A TLS connection counts once its handshake succeeded: a bad
            # certificate is a failed attempt (backoff), not a lost one.
            secure = proto.when_secure()
            hook = s.prepare
            if hook is not None:
                secure.addCallback(lambda _: maybeDeferred(hook, proto))
            return secure.addCallback(lambda _: proto)

        def settle(result: FramedProtocol | Failure) -> None:
            if not isinstance(result, Failure) and result.is_closed:
                result = Failure(  # type: ignore[no-untyped-call]
                    ConnectionLost(False, result.close_reason or "closed")
                )
            if isinstance(result, Failure):
                for proto in made:
                    proto.abort(f"connection attempt failed: {_describe(result)}")
                # The BackingOff state reads next_delay when it is entered,
                # and its listeners want to see why.
                s.last_error = _describe(result)
                s.failed_attempts += 1
                s.next_delay = s.backoff.delay(s.failed_attempts)
                c.connect_failed(result)
            else:
                c.connected(result)

        d: Deferred[FramedProtocol] = self.endpoint.connect(  # type: ignore[assignment]
            self.factory
        )
        d.addCallback(prepare)
        d.addTimeout(timeout, s.clock)
        d.addBoth(settle)
        return d

    def _attempt_failed(self, s: _Core, failure: Failure) -> None:
        self.connect_failures += 1
        s.factory.metrics.record_connection_event("connect_failed")
        # A server that stays down must not flood the log: the first failure
        # of a run, then at most one line per interval per connection.
        now = s.clock.seconds()
        if (
            s.failed_attempts == 1
            or now - self._last_failure_log >= _FAILURE_LOG_INTERVAL
        ):
            self._last_failure_log = now
            _log.info(
                "Connection {name} attempt {attempt} failed: {error}; retrying in "
                "{delay:.3f} s",
                name=self.name,
                attempt=s.failed_attempts,
                error=s.last_error,
                delay=s.next_delay,
            )
        keep: list[tuple[Deferred[FramedProtocol], int | None]] = []
        give_up: list[Deferred[FramedProtocol]] = []
        for d, remaining in self._ready_waiters:
            if remaining is None:
                keep.append((d, None))
            elif remaining <= 1:
                give_up.append(d)
            else:
                keep.append((d, remaining - 1))
        self._ready_waiters = keep
        for d in give_up:
            d.errback(ConnectFailed(s.failed_attempts, s.last_error or "unknown error"))

    def _protocol_closed(self, reason: str, proto: FramedProtocol) -> None:
        if proto in self.draining:
            self.draining.discard(proto)
            self._maybe_closed()
            return
        if proto is self._core.protocol:
            core = self._core
            healthy = core.clock.seconds() - core.ready_at >= core.healthy_after
            if healthy:
                core.failed_attempts = 0
                core.next_delay = 0.0
            else:
                core.failed_attempts = core.attempts_before_ready + 1
                core.next_delay = core.backoff.delay(core.failed_attempts)
            core.protocol = None
            core.last_error = reason
            if core.state == "ready":
                self.factory.metrics.record_connection_event("reconnect")
            self._machine.lost(Failure(ConnectionLost(True, reason)))  # type: ignore[no-untyped-call]

    def _protocol_goaway(self, proto: FramedProtocol) -> None:
        if proto is self._core.protocol:
            self._machine.goaway()

    def _retire(self, proto: FramedProtocol) -> None:
        core = self._core
        core.protocol = None
        if not proto.is_closed:
            self.draining.add(proto)
        core.failed_attempts = 0

    def _fire_ready(self, proto: FramedProtocol | None) -> None:
        waiters, self._ready_waiters = self._ready_waiters, []
        for d, _ in waiters:
            if proto is None:
                d.errback(ClientClosed(f"connection {self.name} was closed"))
            else:
                d.callback(proto)

    def _forget_ready_waiter(self, d: Deferred[FramedProtocol]) -> None:
        self._ready_waiters = [(w, n) for w, n in self._ready_waiters if w is not d]

    def _maybe_closed(self) -> None:
        if self._core.state == "closed" and not self.draining:
            waiters, self._closed_waiters = self._closed_waiters, []
            for d in waiters:
                d.callback(None)


def _describe(failure: Failure) -> str:
    error = failure.value
    if isinstance(error, (TimeoutError, CancelledError)):
        return "connect attempt timed out or was cancelled"
    if isinstance(error, ConnectionLost):
        return error.reason
    return failure.getErrorMessage() or type(error).__name__
