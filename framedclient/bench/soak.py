"""
``python -m framedclient.bench soak``: framedclient's promises, checked under
chaos.

The soak sends a bounded number of requests (200,000 by default) at high
concurrency from a :class:`~framedclient.client.FramedClient` through a
:class:`~framedclient.testing.FaultProxy` to the reference server (all on
127.0.0.1, in this process), while the proxy cuts connections mid-frame,
splits and merges writes, delays chunks, corrupts length headers, goes
silent and refuses connections, from a seeded schedule.

Every request has a unique body, and the reference server echoes, so each
outcome can be judged on its own:

- it must fire **exactly once** (never: *lost*; twice: *fired twice*);
- a success must carry **its own** body (else: *wrong reply*), and error
  replies (``!error:``) must carry their own message;
- a failure must be one of the errors the faults can cause (outcomes
  ``timeout``, ``connection_lost``, ``overloaded``, ``unavailable``,
  ``closed``, ``remote_error`` for error requests, ``cancelled`` for
  requests the soak cancelled); anything else is *unexpected*.

After every request has fired, the client is closed and the soak checks
that it let go of everything: no pending requests or slots, no timer left
on the client's clock (every ``callLater`` the client made goes through a
recording clock, so the check is exact), no live ``FramedProtocol`` or
per-request object (a ``gc`` scan), no client socket, every connection
closed; then, once the proxy and the server are stopped too, no timer left
in the reactor beyond those that existed before the soak started.

The report fits on one screen; the exit status is non-zero when any
invariant fails.  The same seed replays the same fault decisions and the
same request mix (timing on a real network still varies a little).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import resource
import sys
import time
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from twisted.internet.defer import (
    AlreadyCalledError,
    Deferred,
    ensureDeferred,
    maybeDeferred,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer, provider

from framedclient import errors
from framedclient.backoff import ExponentialBackoff
from framedclient.client import FramedClient
from framedclient.errors import (
    INTERNAL,
    ClientClosed,
    ConnectionLost,
    Overloaded,
    RemoteError,
    RequestTimeout,
    Unavailable,
    outcome_of,
)
from framedclient.protocol import FramedProtocol
from framedclient.server import ReferenceServerFactory, listen
from framedclient.testing.faultproxy import FAULT_KINDS, FaultProxy, FaultSchedule

__all__ = [
    "DEFAULT_FAULTS",
    "RecordingClock",
    "SoakConfig",
    "SoakReport",
    "main",
    "parse_faults",
    "run_soak",
]

#: The default fault mix: every kind of fault, often enough that a soak of
#: 200,000 requests sees hundreds of broken connections, rare enough that
#: most requests still succeed (so wrong replies would show).  Per
#: connection: cut (at a random byte of the first 256 KiB), silence (within
#: 0.5 s of connecting, for good), refuse (and refuse everything for 20-200
#: ms), throttle (4 MB/s each way); per chunk: split into 1-64 byte pieces,
#: merge, delay up to 2 ms; per frame: corrupt the length header.
DEFAULT_FAULTS = (
    "cut=0.5,cut_after=1:262144,"
    "split=0.01,split_max=64,"
    "merge=0.05,merge_window=0.003,"
    "delay=0:0.002,"
    "corrupt_length=0.0002,"
    "silence=0.1,silence_after=0:0.5,"
    "refuse=0.05,refuse_for=0.02:0.2,"
    "throttle=4000000"
)

# Request kinds of the mix (what the body asks the reference server to do).
ECHO = "echo"
IDEMPOTENT = "idempotent"
DELAY = "delay"
ERROR = "error"
CANCEL = "cancel"
HOLD = "hold"
GOAWAY = "goaway"
#: (kind, share of requests); shares add up to 1.
MIX: tuple[tuple[str, float], ...] = (
    (ECHO, 0.798),
    (IDEMPOTENT, 0.05),
    (DELAY, 0.08),
    (ERROR, 0.04),
    (CANCEL, 0.02),
    (HOLD, 0.01),
    (GOAWAY, 0.002),
)

# Outcomes (the report's rows): the library's own (framedclient.errors.
# OUTCOMES, so the soak counts in the words the metrics use), with
# connection_lost split by whether the request had been written, the
# catch-all "internal" read as "unexpected error", and the soak's own verdict
# on a reply that is not the one sent.
OK = errors.OK
REMOTE_ERROR = RemoteError.outcome
LOST_WRITTEN = f"{ConnectionLost.outcome} (written)"
LOST_UNWRITTEN = f"{ConnectionLost.outcome} (never written)"
TIMEOUT = RequestTimeout.outcome
OVERLOADED = Overloaded.outcome
UNAVAILABLE = Unavailable.outcome
CANCELLED = errors.CANCELLED
CLOSED = ClientClosed.outcome
WRONG = "wrong reply"
UNEXPECTED = "unexpected error"
_ROWS_OF = {
    ConnectionLost.outcome: (LOST_WRITTEN, LOST_UNWRITTEN),
    INTERNAL: (UNEXPECTED,),
}
OUTCOMES = (
    *(row for outcome in errors.OUTCOMES for row in _ROWS_OF.get(outcome, (outcome,))),
    WRONG,
)
# The failures the injected faults may cause (besides remote errors, losses
# and the soak's own cancels, judged apart); any other is unexpected.
_FAULT_OUTCOMES = frozenset({TIMEOUT, OVERLOADED, UNAVAILABLE, CLOSED})
# Rows printed even when zero: what the faults exercise.
_ALWAYS_SHOWN = (
    OK,
    REMOTE_ERROR,
    LOST_WRITTEN,
    LOST_UNWRITTEN,
    TIMEOUT,
    OVERLOADED,
    UNAVAILABLE,
    CANCELLED,
)

# Per-request objects of the library: after close none may be alive.
_PER_REQUEST_TYPES = (
    "framedclient.protocol.PendingRequest",
    "framedclient.engine.Request",
    "framedclient.dispatch.Call",
    "framedclient.pool._Waiter",
)


@dataclass
class SoakConfig:
    """
    What a soak does.  The command line maps onto these fields.
    """

    requests: int = 200_000
    concurrency: int = 512
    seed: int = 1
    faults: str = DEFAULT_FAULTS
    pool_size: int = 4
    request_timeout: float = 3.0
    hold_timeout: float = 0.3
    heartbeat_interval: float = 0.5
    heartbeat_timeout: float = 0.5
    read_timeout: float = 2.0
    connect_timeout: float = 1.0
    max_body: int = 16 * 1024
    #: seconds without a single request completing before the soak gives up
    #: waiting and counts the rest as lost.
    stall_timeout: float = 30.0
    #: seconds close() may take before the soak reports it as stuck.
    close_timeout: float = 15.0
    #: fail the soak when peak RSS exceeds this (MiB); 0 disables.
    max_rss_mb: float = 1024.0
    progress: bool = False

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise ValueError(f"requests must be >= 1, got {self.requests}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {self.pool_size}")
        if self.max_body < 64:
            raise ValueError(f"max_body must be >= 64, got {self.max_body}")


@implementer(IReactorTime)
class RecordingClock:
    """
    The reactor's time, with every ``callLater`` remembered (weakly), so
    the timers one component made can be told apart from everyone else's.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._calls: weakref.WeakSet[IDelayedCall] = weakref.WeakSet()
        self.created = 0

    def seconds(self) -> float:
        now: float = self._reactor.seconds()
        return now

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: object, **kw: object
    ) -> IDelayedCall:
        call: IDelayedCall = self._reactor.callLater(delay, callable, *args, **kw)
        self._calls.add(call)
        self.created += 1
        return call

    def getDelayedCalls(self) -> list[IDelayedCall]:
        """
        The timers made through this clock that have not run or been
        cancelled.
        """
        return [call for call in list(self._calls) if call.active()]


@dataclass
class SoakReport:
    """
    What a soak found.  :attr:`failed_invariants` empty means it passed.
    """

    config: dict[str, Any]
    requests: int = 0
    seconds: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    connections_accepted: int = 0
    connections_refused: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    lost_after_protocol_error: int = 0
    lost: int = 0
    fired_twice: int = 0
    wrong_reply: int = 0
    unexpected: dict[str, int] = field(default_factory=dict)
    logged_failures: dict[str, int] = field(default_factory=dict)
    late_replies: int = 0
    unknown_replies: int = 0
    retries: int = 0
    client_connects: int = 0
    client_connect_failures: int = 0
    close_seconds: float | None = None
    leftover_pending: int = 0
    leftover_in_flight: int = 0
    leftover_queued: int = 0
    leftover_client_timers: list[str] = field(default_factory=list)
    leftover_reactor_timers: list[str] = field(default_factory=list)
    live_protocols: int = 0
    #: live protocols once the closed client itself is garbage (a leak if
    #: not 0); only measured when :attr:`live_protocols` is not 0.
    protocols_after_client_dropped: int = 0
    live_per_request: dict[str, int] = field(default_factory=dict)
    client_sockets: int = 0
    connections_not_closed: list[str] = field(default_factory=list)
    #: proxied connections still open once the client closed (informative:
    #: a silenced link does not read, so it cannot see the client go).
    proxy_links_left: int = 0
    proxy_links_silenced: int = 0
    server_connections_left: int = 0
    #: why written requests were lost: ConnectionLost reasons, normalised.
    loss_reasons: dict[str, int] = field(default_factory=dict)
    rss_start_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_end_mb: float = 0.0
    failed_invariants: list[str] = field(default_factory=list)

    @property
    def released(self) -> bool:
        """
        Whether everything was released after close.
        """
        return not (
            self.close_seconds is None
            or self.leftover_pending
            or self.leftover_in_flight
            or self.leftover_queued
            or self.leftover_client_timers
            or self.leftover_reactor_timers
            or self.live_protocols
            or any(self.live_per_request.values())
            or self.client_sockets
            or self.connections_not_closed
        )

    @property
    def passed(self) -> bool:
        return not self.failed_invariants

    def judge(self, max_rss_mb: float) -> None:
        """
        Fill :attr:`failed_invariants` from the numbers.
        """
        failed = self.failed_invariants
        failed.clear()
        if self.lost:
            failed.append(f"{self.lost} requests never fired")
        if self.fired_twice:
            failed.append(f"{self.fired_twice} requests fired more than once")
        if self.wrong_reply:
            failed.append(f"{self.wrong_reply} requests got a reply not theirs")
        if self.unexpected:
            failed.append(f"undocumented errors: {self.unexpected}")
        if self.logged_failures:
            failed.append(f"errors logged as failures: {self.logged_failures}")
        if not self.released:
            failed.append("not everything was released after close()")
        if max_rss_mb and self.rss_peak_mb > max_rss_mb:
            failed.append(
                f"peak RSS {self.rss_peak_mb:.1f} MiB exceeds {max_rss_mb:g} MiB"
            )

    def format(self) -> str:
        """
        The one-screen report.
        """
        cfg = self.config
        rate = self.requests / self.seconds if self.seconds else 0.0
        lines = [
            f"framedclient soak: {self.requests:,} requests, concurrency "
            f"{cfg['concurrency']}, pool {cfg['pool_size']}, seed {cfg['seed']}: "
            f"{self.seconds:.1f} s ({rate:,.0f} requests/s)",
            "faults injected: "
            + ", ".join(f"{k} {self.faults.get(k, 0):,}" for k in FAULT_KINDS),
            f"  proxy connections accepted {self.connections_accepted:,}, refused "
            f"{self.connections_refused:,}; client connects "
            f"{self.client_connects:,}, failed attempts "
            f"{self.client_connect_failures:,}",
            "outcomes:",
        ]
        for name in OUTCOMES:
            count = self.outcomes.get(name, 0)
            if not count and name not in _ALWAYS_SHOWN:
                continue
            note = ""
            if name == LOST_WRITTEN and self.lost_after_protocol_error:
                note = (
                    f"  ({self.lost_after_protocol_error:,} after a protocol "
                    f"error, e.g. a corrupt length header)"
                )
            lines.append(f"  {name:<32}{count:>10,}{note}")
        reasons = sorted(self.loss_reasons.items(), key=lambda kv: -kv[1])[:4]
        if reasons:
            lines.append(
                "  lost because: " + "; ".join(f"{r} {n:,}" for r, n in reasons)
            )
        lines.append(
            f"  retries {self.retries:,}; late replies dropped "
            f"{self.late_replies:,}; unknown replies dropped {self.unknown_replies:,}"
        )
        lines.append("invariants:")

        def row(label: str, value: int, good: bool) -> str:
            return f"  {label:<32}{value:>10,}   {'ok' if good else 'FAIL'}"

        lines.append(row("lost (never fired)", self.lost, not self.lost))
        lines.append(row("fired twice", self.fired_twice, not self.fired_twice))
        lines.append(row("wrong reply", self.wrong_reply, not self.wrong_reply))
        unexpected = sum(self.unexpected.values())
        lines.append(row("undocumented error types", unexpected, not unexpected))
        logged = sum(self.logged_failures.values())
        lines.append(row("failures logged", logged, not logged))
        close = (
            "did not complete"
            if self.close_seconds is None
            else f"{self.close_seconds * 1000:.0f} ms"
        )
        retained = (
            f" ({self.protocols_after_client_dropped} once the client is dropped)"
            if self.live_protocols
            else ""
        )
        lines.append(
            f"released after close: {'yes' if self.released else 'NO'} "
            f"(close {close}; pending {self.leftover_pending}, in flight "
            f"{self.leftover_in_flight}, queued {self.leftover_queued}, client "
            f"timers {len(self.leftover_client_timers)}, live FramedProtocol "
            f"{self.live_protocols}{retained}, live per-request objects "
            f"{sum(self.live_per_request.values())}, client sockets "
            f"{self.client_sockets}, connections not closed "
            f"{len(self.connections_not_closed)}, reactor timers "
            f"{len(self.leftover_reactor_timers)})"
        )
        lines.append(
            f"  after close the proxy held {self.proxy_links_left} links "
            f"({self.proxy_links_silenced} silenced: they cannot see the client "
            f"go) and the server {self.server_connections_left} connections "
            f"once the proxy stopped"
        )
        for what, items in (
            ("client timer", self.leftover_client_timers),
            ("reactor timer", self.leftover_reactor_timers),
            ("connection", self.connections_not_closed),
        ):
            for item in items[:3]:
                lines.append(f"    leftover {what}: {item}")
        lines.append(
            f"memory: peak RSS {self.rss_peak_mb:.1f} MiB (start "
            f"{self.rss_start_mb:.1f} MiB, end {self.rss_end_mb:.1f} MiB)"
        )
        for problem in self.failed_invariants:
            lines.append(f"FAILED: {problem}")
        lines.append(f"result: {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["released"] = self.released
        data["passed"] = self.passed
        return data


def parse_faults(spec: str, seed: int) -> FaultSchedule:
    """
    A :class:`FaultSchedule` from ``"cut=0.5,cut_after=1:4096,delay=0:0.002"``
    (ranges as ``low:high``; ``"none"`` for a transparent proxy).
    """
    kwargs: dict[str, Any] = {"seed": seed}
    spec = spec.strip()
    if spec and spec != "none":
        known = {f.name for f in fields(FaultSchedule)}
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or name not in known or name == "seed":
                raise ValueError(
                    f"bad fault {item!r}: expected NAME=VALUE with NAME one of "
                    f"{', '.join(sorted(known - {'seed'}))}"
                )
            kwargs[name] = _fault_value(name, value.strip())
    return FaultSchedule(**kwargs)


def _fault_value(name: str, value: str) -> Any:
    if value == "none":
        return None
    if name in ("cut_in",):
        return value
    as_int = name in ("cut_after", "split_max", "merge_bytes", "max_buffer")
    convert: Callable[[str], float | int] = int if as_int else float
    if name == "corrupt_value":
        return int(value, 0)
    if ":" in value:
        low, _, high = value.partition(":")
        return (convert(low), convert(high))
    return convert(value)


_DIGITS = re.compile(r"[0-9][0-9.]*")


def _normalise_reason(reason: str) -> str:
    # "read timeout: nothing received for 2 s with 17 requests outstanding"
    # and the same with 18 requests are one reason.
    short = reason.split(";")[0].split(":")[0].strip()
    return _DIGITS.sub("N", short)[:60]


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        # ru_maxrss is KiB on Linux: the peak, the best we have elsewhere.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _describe_call(call: IDelayedCall) -> str:
    func = getattr(call, "func", None)
    name = getattr(func, "__qualname__", None) or repr(func)
    module = getattr(func, "__module__", "?")
    return f"{module}.{name} in {call.getTime() - time.time():+.3f} s"


def _live_objects() -> tuple[int, dict[str, int]]:
    gc.collect()
    protocols = 0
    per_request: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        if isinstance(obj, FramedProtocol):
            protocols += 1
        else:
            name = f"{kind.__module__}.{kind.__qualname__}"
            if name in _PER_REQUEST_TYPES:
                per_request[name] += 1
    return protocols, {name: per_request.get(name, 0) for name in _PER_REQUEST_TYPES}


def _client_sockets(reactor: Any) -> int:
    from twisted.internet.tcp import Client

    selectables = [*reactor.getReaders(), *reactor.getWriters()]
    return len({s for s in selectables if isinstance(s, Client)})


@implementer(ILogObserver)
class _FailureCounter:
    """
    Counts log events that carry a failure (``Unhandled error in Deferred``,
    ``_log.failure(...)``): a library that fires a Deferred twice shows up
    here as ``AlreadyCalledError``, since the second ``callback`` raises.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.fired_twice = 0
        self.examples: list[str] = []

    def __call__(self, event: LogEvent) -> None:
        failure = event.get("log_failure")
        if failure is None:
            return
        if failure.check(AlreadyCalledError):
            self.fired_twice += 1
        name = type(failure.value).__name__
        self.counts[name] += 1
        if len(self.examples) < 5:
            self.examples.append(failure.getTraceback())


class _Driver:
    """
    Keeps ``concurrency`` requests outstanding until ``requests`` have been
    issued, and judges each outcome.
    """

    def __init__(self, reactor: Any, client: FramedClient, config: SoakConfig) -> None:
        self.reactor = reactor
        self.client: FramedClient | None = client
        self.config = config
        self.total = config.requests
        rng = random.Random(f"framedclient.soak/{config.seed}/requests")
        self.rng = rng
        # Request bodies are a unique tag plus a slice of one random blob,
        # so large bodies cost no per-request random generation.
        self.blob = rng.randbytes(config.max_body)
        kinds, weights = zip(*MIX, strict=True)
        self.kinds: list[str] = rng.choices(kinds, weights, k=self.total)
        self.fired = bytearray(self.total)
        self.outcome_of: list[str | None] = [None] * self.total
        self.outcomes: Counter[str] = Counter()
        self.by_kind: dict[str, Counter[str]] = {k: Counter() for k in kinds}
        self.unexpected: Counter[str] = Counter()
        self.unexpected_examples: list[str] = []
        self.lost_after_protocol_error = 0
        self.loss_reasons: Counter[str] = Counter()
        self.fired_twice = 0
        self.cancel_timers: dict[int, IDelayedCall] = {}
        self.cancelled_by_us: set[int] = set()
        self.next = 0
        self.outstanding = 0
        self.completed = 0
        self.last_progress = time.monotonic()
        self.done: Deferred[None] = Deferred()
        self._launching = False

    def start(self) -> Deferred[None]:
        self.launch()
        return self.done

    def launch(self) -> None:
        if self._launching:
            return
        self._launching = True
        try:
            while self.outstanding < self.config.concurrency and self.next < self.total:
                index = self.next
                self.next += 1
                self.outstanding += 1
                self._issue(index)
        finally:
            self._launching = False

    def _body(self, index: int, kind: str) -> bytes:
        rng = self.rng
        # Mostly small bodies, some large ones that span many TCP reads.
        size = (
            rng.randrange(self.config.max_body)
            if rng.random() < 0.02
            else (rng.randrange(8, 200))
        )
        start = rng.randrange(self.config.max_body - size + 1)
        pad = self.blob[start : start + size]
        tag = b"%d" % index
        if kind == DELAY:
            return b"!delay:0.00%d #%s " % (rng.randrange(10), tag) + pad
        if kind == ERROR:
            return b"!error:e%s" % tag
        if kind == CANCEL:
            return b"!delay:0.05 #%s " % tag + pad
        if kind == HOLD:
            return b"!hold #%s" % tag
        if kind == GOAWAY:
            return b"!goaway #%s" % tag
        return b"#%s " % tag + pad

    def _issue(self, index: int) -> None:
        kind = self.kinds[index]
        body = self._body(index, kind)
        client = self.client
        assert client is not None, "requests issued after detach()"
        if kind == HOLD:
            d = client.request(body, timeout=self.config.hold_timeout)
        else:
            d = client.request(body, idempotent=kind == IDEMPOTENT)
        if kind == CANCEL and not d.called:
            delay = self.rng.uniform(0.0, 0.08)
            self.cancel_timers[index] = self.reactor.callLater(
                delay, self._cancel, index, d
            )
        d.addBoth(self._fired, index, kind, body)

    def _cancel(self, index: int, d: Deferred[bytes]) -> None:
        self.cancel_timers.pop(index, None)
        if not d.called:
            self.cancelled_by_us.add(index)
            d.cancel()

    def _fired(
        self, result: bytes | Failure, index: int, kind: str, body: bytes
    ) -> None:
        count = self.fired[index]
        if count:
            # Impossible through Deferred's own rules, but counted if a
            # library bug ever routes one outcome to two callbacks.
            self.fired_twice += 1
            if count < 255:
                self.fired[index] = count + 1
            return
        self.fired[index] = 1
        timer = self.cancel_timers.pop(index, None)
        if timer is not None and timer.active():
            timer.cancel()
        outcome = self._judge(result, index, kind, body)
        self.outcome_of[index] = outcome
        self.outcomes[outcome] += 1
        self.by_kind[kind][outcome] += 1
        self.outstanding -= 1
        self.completed += 1
        self.last_progress = time.monotonic()
        if self.completed == self.total:
            if not self.done.called:
                self.done.callback(None)
            return
        self.launch()

    def _judge(
        self, result: bytes | Failure, index: int, kind: str, body: bytes
    ) -> str:
        if not isinstance(result, Failure):
            if kind in (ERROR, HOLD):
                return WRONG
            return OK if result == body else WRONG
        error = result.value
        outcome = outcome_of(error)
        if outcome == REMOTE_ERROR:
            assert isinstance(error, RemoteError)
            if kind == ERROR and error.message == f"e{index}":
                return REMOTE_ERROR
            return WRONG
        if outcome == ConnectionLost.outcome:
            assert isinstance(error, ConnectionLost)
            self.loss_reasons[_normalise_reason(error.reason)] += 1
            if error.written:
                if error.error is not None:
                    self.lost_after_protocol_error += 1
                return LOST_WRITTEN
            return LOST_UNWRITTEN
        if outcome in _FAULT_OUTCOMES:
            return outcome
        if outcome == CANCELLED and index in self.cancelled_by_us:
            return CANCELLED
        name = type(error).__name__
        self.unexpected[name] += 1
        if len(self.unexpected_examples) < 5:
            self.unexpected_examples.append(result.getTraceback())
        # A documented error out of place (a protocol error reaching a
        # request, a cancel the soak did not make) keeps its own row.
        return UNEXPECTED if outcome in (CANCELLED, INTERNAL) else outcome

    def detach(self) -> None:
        """
        Forget the client and every per-request record, so that only the
        library can be holding on to anything.
        """
        self.stop_timers()
        self.client = None
        self.outcome_of = []
        self.cancelled_by_us = set()

    def stop_timers(self) -> None:
        for timer in self.cancel_timers.values():
            if timer.active():
                timer.cancel()
        self.cancel_timers.clear()


async def run_soak(reactor: Any, config: SoakConfig) -> SoakReport:
    """
    Run one soak on a running ``reactor`` and return its report (judged:
    see :attr:`SoakReport.failed_invariants`).
    """
    schedule = parse_faults(config.faults, config.seed)
    report = SoakReport(config=asdict(config), requests=config.requests)
    failures = _FailureCounter()
    globalLogPublisher.addObserver(failures)
    baseline_timers = set(reactor.getDelayedCalls())
    gc.collect()
    report.rss_start_mb = _rss_mb()
    peak = [report.rss_start_mb]

    def sample() -> None:
        peak[0] = max(peak[0], _rss_mb())

    sampler = LoopingCall(sample)
    sampler.clock = reactor
    sampler.start(0.25, now=True)

    server = ReferenceServerFactory(clock=reactor)
    port = await listen(reactor, "tcp:0:interface=127.0.0.1", server)
    server_port: int = port.getHost().port  # type: ignore[attr-defined]
    proxy = FaultProxy(reactor, ("127.0.0.1", server_port), schedule)
    await proxy.listen()
    clock = RecordingClock(reactor)
    client = FramedClient(
        [proxy.client_endpoint()],
        clock,
        pool_size=config.pool_size,
        max_in_flight=max(1, config.concurrency // 2),
        max_pending=config.concurrency,
        request_timeout=config.request_timeout,
        connect_timeout=config.connect_timeout,
        heartbeat_interval=config.heartbeat_interval,
        heartbeat_timeout=config.heartbeat_timeout,
        read_timeout=config.read_timeout,
        backoff=ExponentialBackoff(
            initial=0.05,
            max_delay=1.0,
            min_connect_timeout=config.connect_timeout,
            random=random.Random(f"framedclient.soak/{config.seed}/backoff").random,
        ),
    )
    driver = _Driver(reactor, client, config)
    started = time.monotonic()
    progress: LoopingCall | None = None
    stalled = False
    try:
        done = driver.start()

        def watch() -> None:
            nonlocal stalled
            if config.progress:
                rate = driver.completed / max(1e-9, time.monotonic() - started)
                print(
                    f"  {driver.completed:,}/{driver.total:,} done, "
                    f"{driver.outstanding} outstanding, {rate:,.0f}/s, "
                    f"faults {dict(proxy.faults)}",
                    file=sys.stderr,
                    flush=True,
                )
            if time.monotonic() - driver.last_progress > config.stall_timeout:
                stalled = True
                if not done.called:
                    done.callback(None)

        progress = LoopingCall(watch)
        progress.clock = reactor
        progress.start(1.0 if config.progress else 0.5, now=False)
        await done
    finally:
        if progress is not None and progress.running:
            progress.stop()
    report.seconds = time.monotonic() - started
    driver.stop_timers()

    stats = client.stats()
    metrics = stats["metrics"]
    report.retries = metrics.get("retries", 0)
    dropped = metrics.get("dropped_replies", {})
    report.late_replies = dropped.get("late", 0)
    report.unknown_replies = dropped.get("unknown", 0)
    # Connection.connects is never incremented by the library (reported);
    # the metrics count every connection made.
    report.client_connects = metrics.get("connections", {}).get("connected", 0)
    report.client_connect_failures = sum(c.connect_failures for c in client.pool)

    # -- close, and check that everything was let go ---------------------------
    close_started = time.monotonic()
    closed = client.close(timeout=5.0)
    closed_in_time: list[bool] = []
    closed.addBoth(lambda _: closed_in_time.append(True))
    deadline = time.monotonic() + config.close_timeout
    while not closed_in_time and time.monotonic() < deadline:
        await deferLater(reactor, 0.01, lambda: None)
    if closed_in_time:
        report.close_seconds = time.monotonic() - close_started
    # Let the reactor finish tearing down transports (connectionLost runs
    # in a later turn than loseConnection).
    for _ in range(50):
        if not _client_sockets(reactor):
            break
        await deferLater(reactor, 0.01, lambda: None)

    state = client.debug_state()
    report.leftover_in_flight = state["in_flight"]
    report.leftover_queued = state["queued"]
    report.leftover_pending = sum(
        (u["protocol"] or {}).get("pending", 0)
        + sum(p.get("pending", 0) for p in u["draining"])
        for u in state["upstreams"]
    )
    report.connections_not_closed = [
        f"{c.name}: {c.state}" for c in client.pool if c.state != "closed" or c.draining
    ]
    report.leftover_client_timers = [_describe_call(c) for c in clock.getDelayedCalls()]
    report.client_sockets = _client_sockets(reactor)
    report.lost = sum(1 for n in driver.fired if n == 0)
    if stalled and not report.lost:
        report.lost = driver.total - driver.completed
    report.outcomes = {name: driver.outcomes.get(name, 0) for name in OUTCOMES}
    report.by_kind = {k: dict(v) for k, v in driver.by_kind.items()}
    report.lost_after_protocol_error = driver.lost_after_protocol_error
    report.loss_reasons = dict(driver.loss_reasons)
    report.wrong_reply = driver.outcomes.get(WRONG, 0)
    report.unexpected = dict(driver.unexpected)
    examples = driver.unexpected_examples
    fired_twice = driver.fired_twice
    # The per-request and protocol objects must be gone while the client
    # object itself is still alive: it must not hold them.
    driver.detach()
    report.live_protocols, report.live_per_request = _live_objects()
    if report.live_protocols:
        # Tell retention by the closed client apart from a real leak: drop
        # the client and look again.
        del client
        report.protocols_after_client_dropped, _ = _live_objects()

    # -- the proxy must see the client's connections go; then stop it all -----
    for _ in range(100):
        if not proxy.connections:
            break
        await deferLater(reactor, 0.02, lambda: None)
    report.proxy_links_left = len(proxy.connections)
    report.proxy_links_silenced = sum(
        1 for link in proxy.connections if getattr(link, "_silenced", False)
    )
    report.faults = {k: proxy.faults.get(k, 0) for k in FAULT_KINDS}
    report.connections_accepted = proxy.connections_accepted
    report.connections_refused = proxy.connections_refused
    await proxy.stop()
    await maybeDeferred(port.stopListening)
    for _ in range(100):
        if not server.connections:
            break
        await deferLater(reactor, 0.02, lambda: None)
    report.server_connections_left = len(server.connections)
    if sampler.running:
        sampler.stop()
    await deferLater(reactor, 0, lambda: None)
    report.leftover_reactor_timers = [
        _describe_call(c)
        for c in reactor.getDelayedCalls()
        if c not in baseline_timers and c.active()
    ]
    globalLogPublisher.removeObserver(failures)

    report.logged_failures = dict(failures.counts)
    report.fired_twice = fired_twice + failures.fired_twice
    report.rss_peak_mb = max(
        peak[0], _rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    report.rss_end_mb = _rss_mb()
    report.judge(config.max_rss_mb)
    if examples or failures.examples:
        report.config["examples"] = [*examples, *failures.examples][:5]
    return report


@provider(ILogObserver)
def _discard(event: LogEvent) -> None:
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m framedclient.bench soak",
        description="Send many requests through a fault-injecting proxy to the "
        "reference server and check that each fires exactly once with its own "
        "reply or a documented error, and that close() releases everything.",
    )
    defaults = SoakConfig()
    parser.add_argument("--requests", type=int, default=defaults.requests)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--faults",
        default=defaults.faults,
        help="fault schedule as NAME=VALUE,... (FaultSchedule fields; ranges "
        "as LOW:HIGH; 'none' for a transparent proxy); default: %(default)s",
    )
    parser.add_argument("--pool-size", type=int, default=defaults.pool_size)
    parser.add_argument(
        "--request-timeout", type=float, default=defaults.request_timeout
    )
    parser.add_argument(
        "--max-rss-mb",
        type=float,
        default=defaults.max_rss_mb,
        help="fail if peak RSS exceeds this many MiB (0: no limit)",
    )
    parser.add_argument("--json", help="also write the report as JSON to this file")
    parser.add_argument(
        "--progress", action="store_true", help="print progress to stderr"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run a soak from the command line; 0 when every invariant held, 1 when
    one failed, 2 for bad arguments.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = SoakConfig(
            requests=args.requests,
            concurrency=args.concurrency,
            seed=args.seed,
            faults=args.faults,
            pool_size=args.pool_size,
            request_timeout=args.request_timeout,
            max_rss_mb=args.max_rss_mb,
            progress=args.progress,
        )
        parse_faults(config.faults, config.seed)
    except (ValueError, TypeError) as e:
        parser.error(str(e))

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    # Library warnings (protocol errors, reconnects) are expected by the
    # thousand under chaos; keep them off the screen, but begin logging so
    # that events are not buffered for an observer that never comes.
    globalLogBeginner.beginLoggingTo([_discard], redirectStandardIO=False)

    outcome: list[SoakReport | Failure] = []

    def run() -> None:
        d = ensureDeferred(run_soak(reactor, config))
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]

    reactor.callWhenRunning(run)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    report = outcome[0] if outcome else None
    if not isinstance(report, SoakReport):
        detail = (
            report.getTraceback()
            if isinstance(report, Failure)
            else "the reactor stopped early"
        )
        print(f"soak crashed:\n{detail}", file=sys.stderr)
        return 1
    print(report.format())
    for example in report.config.get("examples", []):
        print(example, file=sys.stderr)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report.to_json(), f, indent=2, default=str)
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
