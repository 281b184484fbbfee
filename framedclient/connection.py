"""
One self-healing connection: an Automat state machine in the style of
Twisted's ``ClientService`` (``twisted/application/_client_service.py``).

States and what moves between them::

    idle ──start──▶ connecting ──connected──▶ ready
                     ▲    │                    │ │
              retry  │    │ connect_failed     │ │ goaway: old protocol drains
                     │    ▼                    │ │ on its own; connect anew
                  backing_off ◀────lost────────┘ └──▶ connecting
                     ▲ (delay 0 after the loss of a healthy connection)
                     └────── early_goaway (GOAWAY young, before any answer)

    close/abort: idle, backing_off ──▶ closed
                 connecting, ready ──▶ closing ──(connect_failed, lost)──▶ closed

The machine owns its state.  Every input is defined in every state (the
table is in ``_build()``), so no :class:`automat.NoTransition` can escape:

- ``start``, ``connected``, ``connect_failed``, ``lost``, ``retry`` and
  ``goaway`` come from the connection's own attempts, timers and protocols.
  The core records why an attempt failed or a connection ended (and the
  next delay) just before ``connect_failed``/``lost``.
- ``when_ready(waiter)`` is answered by the state: ``ready`` fires the
  waiter with the protocol; ``closing``/``closed`` fail it with
  :class:`~framedclient.errors.ClientClosed`; ``idle``, ``connecting`` and
  ``backing_off`` park it until ``ready`` (fired), ``closing`` (failed) or,
  with ``fail_after``, enough ``connect_failed`` (failed with
  :class:`~framedclient.errors.ConnectFailed`).  Cancelling the waiter's
  Deferred removes it.
- ``close`` / ``abort``: drain or drop the current connection (``abort``
  also drops those retired by GOAWAY) and stop.  ``close()``'s Deferred
  fires in ``closed`` once no retired connection is left (``drained(proto)``
  reports each one that ends).
- ``state_name()`` and ``ready_protocol()`` are queries each state answers;
  nothing outside the machine keeps a copy of the state.

Transitions change only the ``_Core`` and schedule timers.  Everything
that can call back into user code or into the machine (listeners, waiters'
Deferreds, starting an attempt, closing a protocol) is queued as an *effect*
and performed by ``_Core.feed()`` once the machine has settled, in order.
So listeners and callbacks always find a machine at rest that they may
query and drive, and they hear of each change in the order it happened
(the connection may have moved on by then: ask ``state`` for the present).
Listeners hear of a change before the waiters it releases fire, so the pool
already knows a ready connection when a ``when_ready`` caller sends on it.

Each state but the initial one has a data factory, run on entry, that
announces the change to the listeners.  Automat replaces a machine's data
on entry to each such state, and ``closing`` and ``closed`` have none, so
a closed connection holds no protocol, attempt or timer (the core's
``protocol`` field, which ``closing`` still needs, is cleared when that
connection ends).

A connection counts as *healthy* once it has been ready for
``healthy_after`` seconds or the server has answered on it (a reply, an
error reply, a late reply); losing a healthy connection reconnects at once
and resets the backoff, while a connection that dies young before any
answer counts as one more failed attempt, so a server that accepts and
immediately closes is retried with backoff, not in a tight loop, and one
that drops a working connection now and then does not stall the pool.  The
same holds for GOAWAY: on a healthy connection it connects anew at once; on
a young one not answered on yet it is a failed attempt (``early_goaway``),
and the connection backs off.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from automat import TypeMachineBuilder, pep614
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
    maybeDeferred,
)
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from framedclient.backoff import BackoffLike, BackoffPolicy, as_backoff_policy
from framedclient.errors import ClientClosed, ConnectFailed, ConnectionLost
from framedclient.protocol import FramedClientFactory, FramedProtocol
from framedclient.validation import Seconds, check_argument

__all__ = ["STATES", "ConnectFailed", "Connection"]  # ConnectFailed: from errors

_log = Logger()

#: Every state a :class:`Connection` can be in, in lifecycle order.
STATES = ("idle", "connecting", "ready", "backing_off", "closing", "closed")

PrepareHook = Callable[[FramedProtocol], Any]

_FAILURE_LOG_INTERVAL = 30.0
StateListener = Callable[["Connection", str, str], object]


@dataclass(eq=False)
class _Waiter:
    """
    One ``when_ready()`` call: its Deferred and how many more failed
    attempts it tolerates (``None``: no limit).
    """

    deferred: Deferred[FramedProtocol]
    remaining: int | None


@dataclass(eq=False)
class _Attempt:
    """
    The data of ``connecting``: the attempt's Deferred once it has begun.
    """

    deferred: Deferred[None] | None = None

    def cancel(self) -> None:
        # Never before begin(): both are effects, and begin() is queued on
        # entry to connecting, before any input that could cancel.
        assert self.deferred is not None
        self.deferred.cancel()


class _Inputs(Protocol):
    def start(self) -> None:
        "Begin connecting (no-op unless idle)."

    def connected(self, proto: FramedProtocol) -> None:
        "An attempt produced a prepared, usable protocol."

    def connect_failed(self) -> None:
        "An attempt failed (refused, timed out, prepare hook failed, ...)."

    def lost(self) -> None:
        "The current protocol's connection ended."

    def retry(self) -> None:
        "The backoff timer fired."

    def goaway(self) -> None:
        "The server sent GOAWAY, or the owner recycles the current connection."

    def early_goaway(self) -> None:
        "Like goaway, but so soon after connecting that it is a failed attempt."

    def drained(self, proto: FramedProtocol) -> None:
        "A protocol retired by GOAWAY has closed."

    def when_ready(self, waiter: _Waiter) -> None:
        "Someone wants the ready protocol."

    def close(self) -> None:
        "Stop for good: drain the current connection, never reconnect."

    def abort(self) -> None:
        "Like close, but drop every connection without draining."

    def state_name(self) -> str:
        "Which of STATES this is."

    def ready_protocol(self) -> FramedProtocol | None:
        "The protocol while ready, else None."


@dataclass
class _Core:
    name: str
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
    #: The protocol of the live connection (ready, or closing from ready);
    #: cleared when it is lost, so protocol callbacks can tell it from
    #: stray and retired ones without asking the machine mid-transition.
    protocol: FramedProtocol | None = None
    last_error: str | None = None
    connects: int = 0
    connect_failures: int = 0
    last_failure_log: float = -math.inf
    waiters: list[_Waiter] = field(default_factory=list)
    closed_waiters: list[Deferred[None]] = field(default_factory=list)
    #: Protocols retired by GOAWAY, still finishing their requests.
    draining: set[FramedProtocol] = field(default_factory=set)
    listeners: list[StateListener] = field(default_factory=list)
    #: The owner handed to listeners (never called by the machine).
    owner: Any = None
    #: The last state the listeners were told about: the ``old`` of the
    #: next announcement.  Not the state (ask the machine for that).
    announced: str = "idle"
    effects: deque[Callable[[], object]] = field(default_factory=deque)
    busy: bool = False

    # -- running the machine --------------------------------------------------

    def feed(self, step: Callable[[], object]) -> None:
        """
        Give the machine one input, then perform the effects it queued.

        Called while the machine or the effects are already running (a
        callback fired by an effect), the input runs now and its effects
        join the queue the outer call is performing.
        """
        if self.busy:
            step()
            return
        self.busy = True
        try:
            step()
            while self.effects:
                effect = self.effects.popleft()
                try:
                    effect()
                except Exception:
                    _log.failure("connection {name}: effect failed", name=self.name)
        finally:
            self.busy = False

    def later(self, effect: Callable[..., object], *args: Any) -> None:
        self.effects.append(partial(effect, *args) if args else effect)

    # -- effects ----------------------------------------------------------------

    def enter(self, new: str) -> None:
        "Queue the announcement of entering ``new`` (from a data factory)."
        self.later(self._announce, new)

    def _announce(self, new: str) -> None:
        old, self.announced = self.announced, new
        for listener in list(self.listeners):
            try:
                listener(self.owner, old, new)
            except Exception:
                _log.failure("state listener {listener!r} failed", listener=listener)

    def begin(self, inputs: _Inputs, attempt: _Attempt) -> None:
        "Start the connection attempt of ``attempt`` (an effect)."
        timeout = self.connect_timeout
        if timeout is None:
            timeout = self.backoff.connect_timeout(self.failed_attempts)
        made: list[FramedProtocol] = []

        def prepare(proto: FramedProtocol) -> Deferred[FramedProtocol]:
            made.append(proto)
            proto.when_closed().addCallback(self.protocol_closed, inputs, proto)
            proto.when_goaway().addCallback(self.protocol_goaway, inputs, proto)
            # A TLS connection counts once its handshake succeeded: a bad
            # certificate is a failed attempt (backoff), not a lost one.
            secure = proto.when_secure()
            hook = self.prepare
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
                self.attempt_failed(result)
                self.feed(inputs.connect_failed)
            else:
                self.feed(partial(inputs.connected, result))

        d: Deferred[FramedProtocol] = self.endpoint.connect(  # type: ignore[assignment]
            self.factory
        )
        d.addCallback(prepare)
        d.addTimeout(timeout, self.clock)
        attempt.deferred = d.addBoth(settle)

    def protocol_closed(
        self, reason: str, inputs: _Inputs, proto: FramedProtocol
    ) -> None:
        if proto in self.draining:
            self.feed(partial(inputs.drained, proto))
        elif proto is self.protocol:
            self.connection_lost(reason, _served(proto))
            self.feed(inputs.lost)

    def protocol_goaway(
        self, _: object, inputs: _Inputs, proto: FramedProtocol
    ) -> None:
        if proto is not self.protocol:
            return
        age = self.clock.seconds() - self.ready_at
        if age < self.healthy_after and not _served(proto):
            # A server that sends GOAWAY to every new connection (shutting
            # down, overloaded, misconfigured) would otherwise be reconnected
            # to in a tight loop: a young connection told to go away before
            # it served anything is a failed attempt, retried with backoff.
            # (One that served requests first is a hand-over: each reconnect
            # is paid for by work done.)
            self.failed_attempts = self.attempts_before_ready + 1
            self.next_delay = self.backoff.delay(self.failed_attempts)
            self.last_error = f"server sent GOAWAY {age:.3f} s after connecting"
            self.feed(inputs.early_goaway)
        else:
            self.feed(inputs.goaway)

    def fire_waiters(self, proto: FramedProtocol) -> None:
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            self.later(w.deferred.callback, proto)

    def fail_waiters(self) -> None:
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            self.refuse(w)

    def refuse(self, waiter: _Waiter) -> None:
        self.later(
            waiter.deferred.errback,
            ClientClosed(f"connection {self.name} is closed"),
        )

    def forget(self, waiter: _Waiter) -> None:
        "A waiter's Deferred was cancelled: let it go."
        if waiter in self.waiters:
            self.waiters.remove(waiter)

    def abort_draining(self) -> None:
        for proto in list(self.draining):
            self.later(proto.close, False)

    def check_closed(self) -> None:
        "In ``closed``: fire ``close()``'s Deferreds once nothing drains."
        if not self.draining:
            waiters, self.closed_waiters = self.closed_waiters, []
            for d in waiters:
                self.later(d.callback, None)

    # -- bookkeeping --------------------------------------------------------------

    def attempt_failed(self, failure: Failure) -> None:
        """
        Record a failed attempt before ``connect_failed`` reaches the
        machine: ``backing_off`` reads ``next_delay`` on entry, and its
        listeners want to see why.
        """
        self.last_error = _describe(failure)
        self.failed_attempts += 1
        self.next_delay = self.backoff.delay(self.failed_attempts)

    def connection_lost(self, reason: str, served: bool) -> None:
        """
        Record the loss of the live protocol before ``lost`` reaches the
        machine.  A connection that served requests (``served``) or lived
        ``healthy_after`` is healthy: reconnect at once, backoff reset.
        Only one lost young and before it served anything is a failed
        attempt: a server that drops working connections now and then (a
        crash, one request in 500) must not keep the pool backing off.
        """
        healthy = served or self.clock.seconds() - self.ready_at >= self.healthy_after
        if healthy:
            self.failed_attempts = 0
            self.next_delay = 0.0
        else:
            self.failed_attempts = self.attempts_before_ready + 1
            self.next_delay = self.backoff.delay(self.failed_attempts)
        self.protocol = None
        self.last_error = reason

    def count_failure(self) -> None:
        "An attempt failed while connecting: count, log, give up waiters."
        self.connect_failures += 1
        self.factory.metrics.record_connection_event("connect_failed")
        # A server that stays down must not flood the log: the first failure
        # of a run, then at most one line per interval per connection.
        now = self.clock.seconds()
        if (
            self.failed_attempts == 1
            or now - self.last_failure_log >= _FAILURE_LOG_INTERVAL
        ):
            self.last_failure_log = now
            _log.info(
                "Connection {name} attempt {attempt} failed: {error}; retrying in "
                "{delay:.3f} s",
                name=self.name,
                attempt=self.failed_attempts,
                error=self.last_error,
                delay=self.next_delay,
            )
        keep: list[_Waiter] = []
        for w in self.waiters:
            if w.remaining is None or w.remaining > 1:
                if w.remaining is not None:
                    w.remaining -= 1
                keep.append(w)
            else:
                self.later(
                    w.deferred.errback,
                    ConnectFailed(
                        self.failed_attempts, self.last_error or "unknown error"
                    ),
                )
        self.waiters = keep

    def retire(self, proto: FramedProtocol) -> None:
        "GOAWAY: the protocol finishes its requests on its own, unused."
        self.protocol = None
        if not proto.is_closed:
            self.draining.add(proto)


def _build() -> Callable[[_Core], _Inputs]:
    machine = TypeMachineBuilder(_Inputs, _Core)

    # -- state data factories (run on entry; each announces its state) ------

    def attempt(c: _Inputs, s: _Core) -> _Attempt:
        s.enter("connecting")
        s.factory.metrics.record_connection_event("connect_attempt")
        data = _Attempt()
        s.later(s.begin, c, data)
        return data

    def remember(c: _Inputs, s: _Core, proto: FramedProtocol) -> FramedProtocol:
        s.enter("ready")
        s.connects += 1
        s.protocol = proto
        s.ready_at = s.clock.seconds()
        s.attempts_before_ready = s.failed_attempts
        s.failed_attempts = 0
        s.last_error = None
        # After the announcement: the pool knows the protocol before a
        # waiter sends on it.
        s.fire_waiters(proto)
        return proto

    def wait(c: _Inputs, s: _Core) -> IDelayedCall:
        s.enter("backing_off")
        return s.clock.callLater(s.next_delay, s.feed, c.retry)

    def closing(c: _Inputs, s: _Core) -> None:
        s.enter("closing")
        s.fail_waiters()

    def closed(c: _Inputs, s: _Core) -> None:
        # Replaces the data of the state left: a closed connection holds no
        # protocol, attempt or timer.
        s.enter("closed")
        s.protocol = None
        s.fail_waiters()
        s.check_closed()

    Idle = machine.state("Idle")
    Connecting = machine.state("Connecting", attempt)
    Ready = machine.state("Ready", remember)
    BackingOff = machine.state("BackingOff", wait)
    Closing = machine.state("Closing", closing)
    Closed = machine.state("Closed", closed)

    # -- queries ---------------------------------------------------------------
    Idle.upon(_Inputs.state_name).loop().returns("idle")
    Connecting.upon(_Inputs.state_name).loop().returns("connecting")
    Ready.upon(_Inputs.state_name).loop().returns("ready")
    BackingOff.upon(_Inputs.state_name).loop().returns("backing_off")
    Closing.upon(_Inputs.state_name).loop().returns("closing")
    Closed.upon(_Inputs.state_name).loop().returns("closed")

    for state in (Idle, Connecting, BackingOff, Closing, Closed):
        state.upon(_Inputs.ready_protocol).loop().returns(None)

    @pep614(Ready.upon(_Inputs.ready_protocol).loop())
    def usable(c: _Inputs, s: _Core, proto: FramedProtocol) -> FramedProtocol | None:
        return proto

    # -- when_ready --------------------------------------------------------------

    @pep614(Idle.upon(_Inputs.when_ready).loop())
    @pep614(Connecting.upon(_Inputs.when_ready, nodata=True).loop())
    @pep614(BackingOff.upon(_Inputs.when_ready, nodata=True).loop())
    def park(c: _Inputs, s: _Core, waiter: _Waiter) -> None:
        s.waiters.append(waiter)

    @pep614(Ready.upon(_Inputs.when_ready).loop())
    def now_ready(c: _Inputs, s: _Core, proto: FramedProtocol, waiter: _Waiter) -> None:
        s.later(waiter.deferred.callback, proto)

    @pep614(Closing.upon(_Inputs.when_ready, nodata=True).loop())
    @pep614(Closed.upon(_Inputs.when_ready, nodata=True).loop())
    def refuse(c: _Inputs, s: _Core, waiter: _Waiter) -> None:
        s.refuse(waiter)

    # -- drained: a GOAWAY-retired protocol closed -------------------------------

    @pep614(Idle.upon(_Inputs.drained).loop())
    @pep614(Connecting.upon(_Inputs.drained, nodata=True).loop())
    @pep614(Ready.upon(_Inputs.drained, nodata=True).loop())
    @pep614(BackingOff.upon(_Inputs.drained, nodata=True).loop())
    @pep614(Closing.upon(_Inputs.drained, nodata=True).loop())
    def forget_drained(c: _Inputs, s: _Core, proto: FramedProtocol) -> None:
        s.draining.discard(proto)

    @pep614(Closed.upon(_Inputs.drained, nodata=True).loop())
    def drained_closed(c: _Inputs, s: _Core, proto: FramedProtocol) -> None:
        s.draining.discard(proto)
        s.check_closed()

    # -- idle ----------------------------------------------------------------
    Idle.upon(_Inputs.start).to(Connecting).returns(None)
    Idle.upon(_Inputs.connect_failed).loop().returns(None)
    Idle.upon(_Inputs.lost).loop().returns(None)
    Idle.upon(_Inputs.retry).loop().returns(None)
    Idle.upon(_Inputs.goaway).loop().returns(None)
    Idle.upon(_Inputs.early_goaway).loop().returns(None)

    # close()'s Deferred is in closed_waiters before the input arrives;
    # entering Closed fires it unless retired connections still drain.
    Idle.upon(_Inputs.close).to(Closed).returns(None)

    @pep614(Idle.upon(_Inputs.abort).to(Closed))
    def abort_idle(c: _Inputs, s: _Core) -> None:
        # A connection retired by GOAWAY may drain while we reconnect.
        s.abort_draining()

    @pep614(Closed.upon(_Inputs.close, nodata=True).loop())
    def close_closed(c: _Inputs, s: _Core) -> None:
        s.check_closed()

    @pep614(Closed.upon(_Inputs.abort, nodata=True).loop())
    def abort_closed(c: _Inputs, s: _Core) -> None:
        s.abort_draining()

    @pep614(BackingOff.upon(_Inputs.close).to(Closed))
    def close_backing_off(c: _Inputs, s: _Core, timer: IDelayedCall) -> None:
        if timer.active():
            timer.cancel()

    @pep614(BackingOff.upon(_Inputs.abort).to(Closed))
    def abort_backing_off(c: _Inputs, s: _Core, timer: IDelayedCall) -> None:
        close_backing_off(c, s, timer)
        s.abort_draining()

    @pep614(Idle.upon(_Inputs.connected).loop())
    @pep614(BackingOff.upon(_Inputs.connected, nodata=True).loop())
    @pep614(Closing.upon(_Inputs.connected, nodata=True).loop())
    @pep614(Closed.upon(_Inputs.connected, nodata=True).loop())
    def stray_protocol(c: _Inputs, s: _Core, proto: FramedProtocol) -> None:
        # Only Connecting expects a protocol; one arriving anywhere else (an
        # attempt that finished while we were closing) is closed unused.
        s.later(proto.abort, "connection no longer wanted")

    @pep614(Ready.upon(_Inputs.connected).loop())
    def stray_protocol_ready(
        c: _Inputs, s: _Core, current: FramedProtocol, proto: FramedProtocol
    ) -> None:
        if proto is not current:
            s.later(proto.abort, "connection no longer wanted")

    # -- connecting ----------------------------------------------------------
    Connecting.upon(_Inputs.start).loop().returns(None)
    Connecting.upon(_Inputs.connected, nodata=True).to(Ready).returns(None)
    Connecting.upon(_Inputs.lost).loop().returns(None)
    Connecting.upon(_Inputs.retry).loop().returns(None)
    Connecting.upon(_Inputs.goaway).loop().returns(None)
    Connecting.upon(_Inputs.early_goaway).loop().returns(None)

    @pep614(Connecting.upon(_Inputs.connect_failed, nodata=True).to(BackingOff))
    def failed(c: _Inputs, s: _Core) -> None:
        s.count_failure()

    @pep614(Connecting.upon(_Inputs.close).to(Closing))
    def cancel_attempt(c: _Inputs, s: _Core, attempt: _Attempt) -> None:
        s.later(attempt.cancel)

    @pep614(Connecting.upon(_Inputs.abort).to(Closing))
    def abort_attempt(c: _Inputs, s: _Core, attempt: _Attempt) -> None:
        s.later(attempt.cancel)
        s.abort_draining()

    # -- ready ---------------------------------------------------------------
    Ready.upon(_Inputs.start).loop().returns(None)
    Ready.upon(_Inputs.connect_failed).loop().returns(None)
    Ready.upon(_Inputs.retry).loop().returns(None)

    @pep614(Ready.upon(_Inputs.lost).to(BackingOff))
    def reconnect(c: _Inputs, s: _Core, proto: FramedProtocol) -> None:
        # The core recorded why (last_error) and the delay before this input.
        s.factory.metrics.record_connection_event("reconnect")

    @pep614(Ready.upon(_Inputs.goaway).to(Connecting))
    def replace(c: _Inputs, s: _Core, proto: FramedProtocol) -> None:
        s.retire(proto)
        s.failed_attempts = 0

    @pep614(Ready.upon(_Inputs.early_goaway).to(BackingOff))
    def back_off_after_goaway(c: _Inputs, s: _Core, proto: FramedProtocol) -> None:
        # The core recorded the failed attempt and its delay before this
        # input.
        s.retire(proto)
        s.count_failure()

    @pep614(Ready.upon(_Inputs.close).to(Closing))
    def close_ready(c: _Inputs, s: _Core, proto: FramedProtocol) -> None:
        s.later(proto.close, True)

    @pep614(Ready.upon(_Inputs.abort).to(Closing))
    def abort_ready(c: _Inputs, s: _Core, proto: FramedProtocol) -> None:
        s.later(proto.close, False)
        s.abort_draining()

    # -- backing off ---------------------------------------------------------
    BackingOff.upon(_Inputs.start).loop().returns(None)
    BackingOff.upon(_Inputs.connect_failed).loop().returns(None)
    BackingOff.upon(_Inputs.lost).loop().returns(None)
    BackingOff.upon(_Inputs.retry, nodata=True).to(Connecting).returns(None)
    BackingOff.upon(_Inputs.goaway).loop().returns(None)
    BackingOff.upon(_Inputs.early_goaway).loop().returns(None)

    # -- closing -------------------------------------------------------------
    Closing.upon(_Inputs.start).loop().returns(None)
    Closing.upon(_Inputs.retry).loop().returns(None)
    Closing.upon(_Inputs.goaway).loop().returns(None)
    Closing.upon(_Inputs.early_goaway).loop().returns(None)

    Closing.upon(_Inputs.close).loop().returns(None)

    @pep614(Closing.upon(_Inputs.abort, nodata=True).loop())
    def abort_closing(c: _Inputs, s: _Core) -> None:
        if s.protocol is not None:
            s.later(s.protocol.close, False)
        s.abort_draining()

    Closing.upon(_Inputs.connect_failed, nodata=True).to(Closed).returns(None)
    Closing.upon(_Inputs.lost, nodata=True).to(Closed).returns(None)

    # -- closed --------------------------------------------------------------
    for name in ("start", "connect_failed", "lost", "retry", "goaway", "early_goaway"):
        Closed.upon(getattr(_Inputs, name), nodata=True).loop().returns(None)

    return machine.build()


_Machine = _build()


def _check_seconds(name: str, value: object) -> float:
    """
    ``value`` as a number of seconds, or an error naming ``name``.

    A zero or negative connect timeout would make every attempt fail at once
    (or trip an assertion in Twisted's ``addTimeout``) while still opening a
    socket per attempt, so it is refused here, where the mistake is made.
    """
    check_argument(Seconds(), name, value, "Connection")
    return float(value)  # type: ignore[arg-type]


class Connection:
    """
    One long-lived connection to ``endpoint`` that reconnects by itself.

    :param endpoint: where to connect (any ``IStreamClientEndpoint``).
    :param factory: builds the protocol; its config (codec, timeouts,
        heartbeats) and metrics apply to every connection made.
    :param clock: time source for backoff and connect timeouts.
    :param backoff: reconnect pacing: a
        :class:`~framedclient.backoff.BackoffPolicy`, or a plain
        ``Callable[[int], float]`` such as Twisted's ``backoffPolicy()``
        (called with the number of consecutive failed attempts, as
        ``ClientService`` does); gRPC's policy by default.
    :param connect_timeout: seconds one attempt (TCP connect, TLS handshake,
        ``prepare``) may take, ``> 0``; default: the backoff policy's
        ``connect_timeout`` (gRPC, and plain callables: 20 s).
    :param prepare: run on each new connection before it counts as ready
        (handshake, authentication, ``SELECT db``); may return a Deferred;
        if it fails, the attempt fails.
    :param healthy_after: seconds (``> 0``) a connection must stay up before
        its loss resets the backoff, unless the server answered on it
        first (then it resets the backoff however young).
    :param name: shown in logs and :meth:`debug_state`.
    :param weight: the weight of the host it connects to (an SRV weight;
        1 by default), for pick policies that weigh hosts; the client
        already gives a host connections in proportion to its weight.
    :raises TypeError: if ``connect_timeout`` or ``healthy_after`` is not a
        number, or ``backoff`` is neither a policy nor a callable.
    :raises ValueError: if ``connect_timeout`` or ``healthy_after`` is not
        a finite number above zero.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        factory: FramedClientFactory,
        clock: IReactorTime,
        *,
        backoff: BackoffLike | None = None,
        connect_timeout: float | None = None,
        prepare: PrepareHook | None = None,
        healthy_after: float = 1.0,
        name: str = "conn",
        weight: int = 1,
    ) -> None:
        self.name = name
        #: the weight of this connection's host (see :mod:`framedclient.discovery`)
        self.weight = weight
        self.endpoint = endpoint
        self.factory = factory
        self._core = _Core(
            name=name,
            endpoint=endpoint,
            factory=factory,
            clock=clock,
            backoff=as_backoff_policy(backoff),
            connect_timeout=None
            if connect_timeout is None
            else _check_seconds("connect_timeout", connect_timeout),
            prepare=prepare,
            healthy_after=_check_seconds("healthy_after", healthy_after),
            owner=self,
        )
        self._machine = _Machine(self._core)

    def __repr__(self) -> str:
        return f"<Connection {self.name} {self.state}>"

    # -- public --------------------------------------------------------------

    @property
    def state(self) -> str:
        """
        One of :data:`STATES`, as the machine says.
        """
        return self._machine.state_name()

    @property
    def protocol(self) -> FramedProtocol | None:
        """
        The protocol while ready, else ``None``.
        """
        return self._machine.ready_protocol()

    @property
    def last_error(self) -> str | None:
        """
        Why the last attempt failed or the last connection ended.
        """
        return self._core.last_error

    @property
    def failed_attempts(self) -> int:
        return self._core.failed_attempts

    @property
    def draining(self) -> set[FramedProtocol]:
        """
        Protocols retired by GOAWAY, still finishing their requests.
        """
        return self._core.draining

    @property
    def connects(self) -> int:
        """
        How many connections became ready.
        """
        return self._core.connects

    @property
    def connect_failures(self) -> int:
        """
        How many attempts failed while connecting.
        """
        return self._core.connect_failures

    def start(self) -> None:
        """
        Start connecting.  Idempotent.
        """
        self._core.feed(self._machine.start)

    def add_listener(self, listener: StateListener) -> None:
        """
        Call ``listener(connection, old_state, new_state)`` on each change,
        in order, once the machine is at rest (it may call any method of
        the connection, including :meth:`close`).
        """
        self._core.listeners.append(listener)

    def when_ready(self, fail_after: int | None = None) -> Deferred[FramedProtocol]:
        """
        The ready protocol, now or when there is one.

        :param fail_after: fail with
            :class:`~framedclient.errors.ConnectFailed` after this many
            consecutive failed attempts from now (``None``: wait until
            closed).  Fails with :class:`~framedclient.errors.ClientClosed`
            if the connection is closed first.  Cancelling the Deferred
            stops the wait (nothing is left behind).
        """
        core = self._core
        waiter = _Waiter(Deferred(lambda _: core.forget(waiter)), fail_after)
        core.feed(partial(self._machine.when_ready, waiter))
        return waiter.deferred

    def close(self, drain: bool = True) -> Deferred[None]:
        """
        Stop reconnecting and close.

        :param drain: let the current connection's requests finish first.
        :return: fires once every connection this object made is gone
            (including ones retired by GOAWAY that were still draining).
        """
        done: Deferred[None] = Deferred()
        # The machine decides when it fires (see check_closed).
        self._core.closed_waiters.append(done)
        self._core.feed(self._machine.close if drain else self._machine.abort)
        return done

    def recycle(self) -> FramedProtocol | None:
        """
        Replace the ready connection with a new one, as if the server had
        sent GOAWAY: the old one takes no new request, finishes those it
        has (bounded by their deadlines; :meth:`close` drops it too) and
        closes, while a new one connects at once (so a ``tcp:NAME:PORT``
        endpoint resolves ``NAME`` again).  Used for
        ``max_connection_age``.

        :return: the retired protocol (still draining), or ``None`` when no
            connection was ready (nothing to recycle).
        """
        proto = self.protocol
        if proto is None:
            return None
        self.factory.metrics.record_connection_event("recycled")
        self._core.feed(self._machine.goaway)
        proto.close(drain=True)
        return proto

    def debug_state(self) -> dict[str, Any]:
        """
        A JSON-able picture: state, pending requests, backoff, last error,
        and ``ready_waiters``, the number of :meth:`when_ready` calls
        waiting.
        """
        core = self._core
        state = self.state
        proto = core.protocol
        return {
            "name": self.name,
            "state": state,
            "weight": self.weight,
            "failed_attempts": core.failed_attempts,
            "next_backoff_delay": core.next_delay if state == "backing_off" else None,
            "last_error": core.last_error,
            "connects": core.connects,
            "connect_failures": core.connect_failures,
            "ready_waiters": len(core.waiters),
            "protocol": proto.debug_state() if proto is not None else None,
            "draining": [p.debug_state() for p in core.draining],
        }


def _served(proto: FramedProtocol) -> bool:
    """
    Whether the server answered anything on ``proto``: a reply, an error
    reply, or a late reply to a request that had timed out.  Each reconnect
    after such a connection ends is paid for by work done, so it is never
    a failed attempt (lost, or sent GOAWAY, however young).
    """
    return proto.answered or proto.late_replies > 0


def _describe(failure: Failure) -> str:
    error = failure.value
    if isinstance(error, (TimeoutError, CancelledError)):
        return "connect attempt timed out or was cancelled"
    if isinstance(error, ConnectionRefusedError):
        # Twisted's text ("Connection was refused by other side: 111:
        # Connection refused.") says it twice; this one is shown to users.
        return "connection refused"
    if isinstance(error, ConnectionLost):
        return error.reason
    return failure.getErrorMessage() or type(error).__name__
