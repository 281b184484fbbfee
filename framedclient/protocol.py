"""
One connection as a concurrent request/reply channel.

:class:`FramedProtocol` turns a byte stream into requests and replies: any
number of callers may call :meth:`FramedProtocol.request` at once; each gets
a Deferred that fires exactly once, with the reply to *its* request or with
an error that says what happened.  The framer and codec decide what a frame
and a message are; this module decides what happens to requests.

How a request travels, and why:

- ``request()`` encodes the message at once, reserves an ID and puts it in
  the pending table, but only queues the bytes.  Everything queued in one
  reactor turn goes out in a single ``transport.write`` (at the end of the
  current ``dataReceived`` when requests are issued from reply callbacks,
  otherwise from a ``callLater(0)``), so many small requests cost few
  syscalls and little Python.
- A request is *written* once its bytes reach the transport.  Until then it
  can be withdrawn without a trace: cancelling it frees its ID at once, and
  a connection that dies fails it with ``ConnectionLost(written=False)``,
  which tells the caller (or :class:`~framedclient.client.FramedClient`) that
  sending it elsewhere is safe.
- A written request that is cancelled or times out keeps its ID reserved
  (a *tombstone*) until its late reply arrives or the connection ends, as
  Finagle does: otherwise a new request could reuse the ID and receive the
  old request's reply.  Tombstones count against ``max_pending``.
- Timeouts use one :class:`~framedclient.deadlines.DeadlineQueue` per
  connection instead of a ``DelayedCall`` per request.
- While the transport's buffer is full (it paused us as a producer),
  requests stay queued in memory, up to ``max_write_buffer`` bytes; past
  that, new requests fail with :class:`~framedclient.errors.Overloaded`.  If
  the buffer does not drain within ``write_timeout`` the connection is
  closed.
- A peer that stops answering is detected with ``read_timeout`` (nothing
  read for that long while requests are outstanding) and heartbeats (a ping
  after ``heartbeat_interval`` of silence, answered within
  ``heartbeat_timeout``).  Any bytes from the peer count as a sign of life.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from framedclient.codec import (
    CANCEL,
    ERROR,
    GOAWAY,
    PING,
    PONG,
    REPLY,
    REQUEST,
    Codec,
    FC1Codec,
    Matching,
)
from framedclient.deadlines import DeadlineQueue
from framedclient.errors import (
    ConnectionLost,
    Overloaded,
    ProtocolError,
    RemoteError,
    RequestTimeout,
)
from framedclient.metrics import Metrics, MetricsRecorder

__all__ = ["FramedClientFactory", "FramedProtocol", "ProtocolConfig"]

_log = Logger()

# Request states.  Plain ints: compared on every reply.
_QUEUED = 0  # accepted, bytes not yet handed to the transport
_SENT = 1  # bytes written, waiting for the reply
_ABANDONED = 2  # written, then cancelled or timed out: ID reserved (tombstone)
_DONE = 3  # Deferred fired and no longer in any table

# Connection states.
_OPEN = 0
_DRAINING = 1  # no new requests; close once the outstanding ones are done
_CLOSED = 2

_UNKNOWN_LOG_INTERVAL = 10.0
_MAX_CONTROL_FRAMES = 64


@dataclass(frozen=True, slots=True)
class ProtocolConfig:
    """
    Per-connection settings.  Every bound has a default, because nothing
    may be unbounded.

    :param codec: the wire format.
    :param request_timeout: default per-request timeout in seconds when
        ``request()`` is given none; ``None`` means no timeout.
    :param max_pending: requests (tombstones included) one connection may
        hold; more fail with :class:`~framedclient.errors.Overloaded`.
    :param max_write_buffer: bytes of encoded requests held while the
        transport is paused before new requests fail with ``Overloaded``.
    :param write_timeout: seconds the transport may stay paused (its buffer
        not draining) before the connection is declared stuck and closed;
        ``None`` disables.
    :param read_timeout: seconds without a byte from the peer, while
        requests are outstanding, before the peer is declared dead;
        ``None`` disables.
    :param heartbeat_interval: seconds of silence after which a ping is
        sent (codecs with ping support only); ``None`` disables heartbeats.
    :param heartbeat_timeout: seconds a ping may wait for any byte from the
        peer before the peer is declared dead.
    :param abandoned_ttl: seconds the ID of a written request that was
        cancelled or timed out stays reserved for its late reply (codecs
        matching by ID).  Servers that answer cancel frames release it
        sooner; this bound keeps a server that never answers from filling
        the table.  ``None`` keeps IDs until the reply or the connection
        ends.
    """

    codec: Codec = field(default_factory=FC1Codec)
    request_timeout: float | None = None
    max_pending: int = 100_000
    max_write_buffer: int = 8 * 1024 * 1024
    write_timeout: float | None = 30.0
    read_timeout: float | None = None
    heartbeat_interval: float | None = None
    heartbeat_timeout: float = 10.0
    abandoned_ttl: float | None = 60.0

    def __post_init__(self) -> None:
        _check_positive("request_timeout", self.request_timeout, allow_none=True)
        _check_positive("write_timeout", self.write_timeout, allow_none=True)
        _check_positive("read_timeout", self.read_timeout, allow_none=True)
        _check_positive("heartbeat_interval", self.heartbeat_interval, allow_none=True)
        _check_positive("heartbeat_timeout", self.heartbeat_timeout)
        _check_positive("abandoned_ttl", self.abandoned_ttl, allow_none=True)
        if not isinstance(self.max_pending, int) or self.max_pending < 1:
            raise ValueError(
                f"max_pending must be a positive integer, got {self.max_pending!r}"
            )
        if self.max_pending >= self.codec.max_id:
            raise ValueError(
                f"max_pending ({self.max_pending}) must be below the codec's "
                f"ID space ({self.codec.max_id}), or IDs could not stay unique"
            )
        if not isinstance(self.max_write_buffer, int) or self.max_write_buffer < 1:
            raise ValueError(
                f"max_write_buffer must be a positive number of bytes, "
                f"got {self.max_write_buffer!r}"
            )
        if self.heartbeat_interval is not None and not self.codec.supports_ping:
            raise ValueError(
                f"heartbeat_interval is set but {self.codec!r} has no ping frames"
            )


def _check_positive(name: str, value: float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if (
        value is None
        or isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
    ):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


class _Pending:
    """
    One request on one connection.  Also its Deferred's canceller, so no
    closure is allocated per request.

    ``body`` is kept only while the request may still be sent elsewhere
    (not yet written, or idempotent), so an owner (the client) can re-send
    it when this connection dies; ``redirect`` is set once it has been
    handed over, so cancelling the caller's Deferred cancels the re-sent
    request instead.
    """

    __slots__ = (
        "attempt",
        "body",
        "data",
        "deadline",
        "deferred",
        "idempotent",
        "proto",
        "redirect",
        "request_id",
        "started",
        "state",
        "timeout",
    )

    def __init__(
        self, proto: FramedProtocol, request_id: int, data: bytes, started: float
    ) -> None:
        self.proto = proto
        self.request_id = request_id
        self.data: bytes | None = data
        self.started = started
        self.state = _QUEUED
        self.timeout = 0.0
        self.deadline = math.inf
        self.body: bytes | None = None
        self.idempotent = False
        self.attempt = 1
        self.redirect: Deferred[bytes] | None = None
        self.deferred: Deferred[bytes]

    def __call__(self, deferred: Deferred[bytes]) -> None:
        # Deferred.cancel() calls us, then fails the Deferred with
        # CancelledError itself if we did not.
        if self.redirect is not None:
            self.redirect.cancel()
        else:
            self.proto._abandon(self, "cancelled")


def _pending_is_live(p: _Pending) -> bool:
    return p.state <= _SENT


def _pending_deadline(p: _Pending) -> float:
    return p.deadline


def _is_tombstone(p: _Pending) -> bool:
    return p.state == _ABANDONED


@implementer(IPushProducer, IHandshakeListener)
class FramedProtocol(Protocol):
    """
    A client connection carrying many concurrent requests.

    Build it with :class:`FramedClientFactory` (or directly, then connect it
    with ``twisted.internet.endpoints.connectProtocol``).

    :ivar close_reason: why the connection ended (``None`` while open).
    :ivar late_replies: replies that arrived after their request timed out
        or was cancelled (dropped).
    :ivar unknown_replies: replies to IDs never sent or already answered
        (dropped).
    """

    def __init__(
        self,
        config: ProtocolConfig | None = None,
        clock: IReactorTime | None = None,
        metrics: MetricsRecorder | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = reactor  # type: ignore[assignment]
        assert clock is not None
        self.config = config = config if config is not None else ProtocolConfig()
        self.codec = codec = config.codec
        self._clock: IReactorTime = clock
        self.metrics: MetricsRecorder = metrics if metrics is not None else Metrics()
        self._by_id = codec.matching is Matching.BY_ID
        self._max_pending = (
            1 if codec.matching is Matching.EXCLUSIVE else config.max_pending
        )
        self._framer = codec.new_framer()
        self._encode = codec.encode
        self._decode = codec.decode
        self._max_id = codec.max_id

        # BY_ID: every request not yet DONE, by ID (tombstones included).
        self._pending: dict[int, _Pending] = {}
        # IN_ORDER / EXCLUSIVE: written requests in send order (tombstones
        # included); queued ones are only in _unflushed.
        self._inflight: deque[_Pending] = deque()
        self._unflushed: list[_Pending] = []
        self._unflushed_bytes = 0
        self._control: list[bytes] = []
        self._last_id = 0
        self._live = 0  # requests whose Deferred has not fired
        self._tombstones = 0
        self._deadlines: DeadlineQueue[_Pending] = DeadlineQueue(
            clock, _pending_is_live, self._expire, self._live_count, _pending_deadline
        )
        self._tombstone_deadlines: DeadlineQueue[_Pending] = DeadlineQueue(
            clock,
            _is_tombstone,
            self._forget_tombstone,
            lambda: self._tombstones,
            _pending_deadline,
        )
        self._request_timeout = config.request_timeout
        self._max_write_buffer = config.max_write_buffer

        self._state = _OPEN
        self._connected = False
        self._producing = False
        self._paused = False
        self._flush_call: IDelayedCall | None = None
        self._in_receive = False
        self._write_timer: IDelayedCall | None = None
        self._liveness_timer: IDelayedCall | None = None
        self._last_read = 0.0
        self._ping_sent_at: float | None = None
        self._close_error: BaseException | None = None
        self._closed_waiters: list[Deferred[str]] = []
        # TLS: bytes handed to a TLS transport before the handshake finished
        # have not reached the server if the handshake then fails.
        self._tls = False
        self._handshake_done = False
        self._handshake_waiters: list[Deferred[None]] = []
        self._last_unknown_log = -math.inf

        self.close_reason: str | None = None
        self.connected_at: float | None = None
        #: Whether ``metrics`` is this connection's alone (so its latency
        #: can be reported per connection).
        self.own_metrics = False
        self.late_replies = 0
        self.unknown_replies = 0
        self.ok_count = 0
        self.failed_count = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        #: Called once when the server sends GOAWAY (the pool opens a
        #: replacement connection).
        self.on_goaway: Callable[[FramedProtocol], object] | None = None
        #: Called exactly once for every ``request()`` call, when its outcome
        #: on this connection is decided (just before its Deferred fires), or
        #: when it is handed over to ``on_orphan``'s owner.  The client's
        #: limiter releases the request's slot here, which costs far less
        #: than a callback on every Deferred.
        self.on_settled: Callable[[], object] | None = None
        #: Offered each request this connection can no longer serve and that
        #: is safe to send elsewhere (never written, or idempotent), with the
        #: ``ConnectionLost`` it would fail with.  Returning true takes it
        #: over: the owner fires its Deferred later (see ``_Pending``).
        self.on_orphan: Callable[[_Pending, ConnectionLost], bool] | None = None

    # -- introspection -------------------------------------------------------

    def __repr__(self) -> str:
        state = ("open", "draining", "closed")[self._state]
        return f"<FramedProtocol {state} pending={self._live} codec={self.codec!r}>"

    def _live_count(self) -> int:
        return self._live

    @property
    def pending(self) -> int:
        """
        Requests waiting for their reply (or still queued to be written).
        """
        return self._live

    @property
    def table_size(self) -> int:
        """
        Slots in use: live requests plus tombstones of abandoned ones.
        """
        return self._live + self._tombstones

    @property
    def accepting(self) -> bool:
        """
        Whether ``request()`` would be accepted now (open, not draining, not
        full).  The pool uses this to skip a connection.
        """
        return (
            self._state == _OPEN
            and self._connected
            and self._live + self._tombstones < self._max_pending
        )

    @property
    def is_closed(self) -> bool:
        return self._state == _CLOSED

    @property
    def is_draining(self) -> bool:
        return self._state == _DRAINING

    def oldest_pending_age(self) -> float | None:
        """
        Age in seconds of the oldest live request, or ``None``.  O(n): for
        debug snapshots, not the hot path.
        """
        now = self._clock.seconds()
        oldest: float | None = None
        table = (
            self._pending.values()
            if self._by_id
            else [
                *self._inflight,
                *self._unflushed,
            ]
        )
        for p in table:
            if p.state <= _SENT and (oldest is None or p.started < oldest):
                oldest = p.started
        return None if oldest is None else now - oldest

    def debug_state(self) -> dict[str, Any]:
        """
        A JSON-able picture of this connection, for leak hunting.
        """
        age = self.oldest_pending_age()
        return {
            "state": ("open", "draining", "closed")[self._state],
            "pending": self._live,
            "tombstones": self._tombstones,
            # What the request containers really hold, not what the counters
            # say: a leaked entry shows here even when pending and
            # table_size look right.
            "table_entries": (
                len(self._pending) + len(self._inflight) + len(self._unflushed)
            ),
            "queued_unwritten": sum(1 for p in self._unflushed if p.state == _QUEUED),
            "oldest_pending_age": age,
            "paused": self._paused,
            "deadline_entries": len(self._deadlines),
            "ok": self.ok_count,
            "failed": self.failed_count,
            "late_replies": self.late_replies,
            "unknown_replies": self.unknown_replies,
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "close_reason": self.close_reason,
            "latency": (
                self.metrics.latency.snapshot()
                if self.own_metrics and isinstance(self.metrics, Metrics)
                else None
            ),
        }

    # -- requests ------------------------------------------------------------

    def request(
        self,
        body: bytes,
        timeout: float | None = None,
        idempotent: bool = False,
        attempt: int = 1,
    ) -> Deferred[bytes]:
        """
        Send ``body`` as one request.

        :param timeout: seconds to wait for the reply; ``None`` uses the
            config's ``request_timeout``; ``math.inf`` means no timeout.
        :param idempotent: the request may be re-sent after this connection
            dies even if it was written (used by ``on_orphan`` owners).
        :param attempt: how many times it has been tried so far, this one
            included (kept across re-sends to bound them).
        :return: a Deferred that fires exactly once: with the reply body, or
            with :class:`~framedclient.errors.RemoteError`,
            :class:`~framedclient.errors.RequestTimeout`,
            :class:`~framedclient.errors.ConnectionLost` (``written`` tells
            whether a retry is safe),
            :class:`~framedclient.errors.Overloaded` (this connection is
            full; nothing was sent), or ``CancelledError`` after
            ``cancel()``.
        """
        if self._state != _OPEN or not self._connected:
            return self._refuse(self._refusal())
        if self._live + self._tombstones >= self._max_pending:
            return self._refuse(
                Overloaded(
                    f"connection has {self._live} requests pending and "
                    f"{self._tombstones} abandoned ones awaiting late replies "
                    f"(max_pending={self._max_pending}); nothing was sent"
                )
            )
        if timeout is None:
            timeout = self._request_timeout
        elif not timeout > 0:
            return self._refuse(
                ValueError(f"timeout must be positive, got {timeout!r}")
            )
        if self._paused and self._unflushed_bytes >= self._max_write_buffer:
            return self._refuse(
                Overloaded(
                    f"the server is not reading: {self._unflushed_bytes} bytes "
                    f"already wait to be written (max_write_buffer="
                    f"{self._max_write_buffer}); nothing was sent"
                )
            )
        # Allocate an ID that no pending request (or tombstone) holds.
        request_id = self._last_id
        pending = self._pending
        max_id = self._max_id
        while True:
            request_id = request_id + 1 if request_id < max_id else 1
            if request_id not in pending:
                break
        self._last_id = request_id
        try:
            data = self._encode(REQUEST, request_id, body)
        except Exception as e:
            # Raised by the codec for bodies it cannot carry (too large for
            # the frame, wrong type): the caller's mistake, nothing sent.
            return self._refuse(e)
        now = self._clock.seconds()
        p = _Pending(self, request_id, data, now)
        d: Deferred[bytes] = Deferred(p)
        p.deferred = d
        p.body = body
        if idempotent:
            p.idempotent = True
        if attempt != 1:
            p.attempt = attempt
        if self._by_id:
            pending[request_id] = p
        self._unflushed.append(p)
        self._unflushed_bytes += len(data)
        if not self._live:
            # The read deadline counts from when work starts, not from the
            # last bytes read before an idle period.
            self._last_read = now
        self._live += 1
        if timeout is not None and timeout != math.inf:
            p.timeout = timeout
            p.deadline = deadline = now + timeout
            self._deadlines.add(deadline, p, now)
        if self._flush_call is None and not self._in_receive:
            self._flush_call = self._clock.callLater(0, self._flush)
        return d

    def _refuse(self, error: Exception) -> Deferred[bytes]:
        if self.on_settled is not None:
            self.on_settled()
        return fail(error)

    def _refusal(self) -> Exception:
        if self._state == _OPEN:
            return ConnectionLost(False, "not connected yet")
        if self._state == _DRAINING:
            return ConnectionLost(
                False,
                "connection is draining (GOAWAY or close) and takes no new requests",
            )
        return ConnectionLost(False, self.close_reason or "connection closed")

    def _abandon(self, p: _Pending, outcome: str | None) -> None:
        """
        Take a live request out of play without firing its Deferred (the
        caller does that): free its slot, keep its ID reserved if it was
        written.
        """
        state = p.state
        if state == _QUEUED:
            p.state = _DONE
            self._unflushed_bytes -= len(p.data or b"")
            p.data = None
            if self._by_id:
                del self._pending[p.request_id]
        elif state == _SENT:
            p.state = _ABANDONED
            p.body = None
            self._tombstones += 1
            ttl = self.config.abandoned_ttl
            if ttl is not None and self._by_id:
                now = self._clock.seconds()
                p.deadline = now + ttl
                self._tombstone_deadlines.add(p.deadline, p, now)
            if outcome == "cancelled" and self.codec.supports_cancel and self._by_id:
                self._control.append(self._encode(CANCEL, p.request_id, b""))
                if self._flush_call is None and not self._in_receive:
                    self._flush_call = self._clock.callLater(0, self._flush)
        else:
            return
        self._live -= 1
        if self.on_settled is not None:
            self.on_settled()
        if outcome is not None:
            self.failed_count += 1
            latency = self._clock.seconds() - p.started if state == _SENT else None
            self.metrics.record_failure(outcome, latency)
        if self._state == _DRAINING and not self._live:
            self._finish_draining()

    def _forget_tombstone(self, p: _Pending) -> None:
        # No late reply within abandoned_ttl: release the ID.  A reply that
        # still comes is counted as unknown.
        p.state = _DONE
        self._tombstones -= 1
        self._pending.pop(p.request_id, None)

    def _expire(self, p: _Pending) -> None:
        self._abandon(p, "timeout")
        p.deferred.errback(RequestTimeout(p.timeout))

    # -- writing -------------------------------------------------------------

    def flush(self) -> None:
        """
        Write everything queued now, instead of at the end of this reactor
        turn.  Rarely needed: useful before a blocking operation.
        """
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        self._flush()

    def _flush(self) -> None:
        self._flush_call = None
        if self._paused or not self._connected or self.transport is None:
            return
        chunks = self._control
        self._control = []
        unflushed = self._unflushed
        if unflushed:
            self._unflushed = []
            self._unflushed_bytes = 0
            # Once written, only an idempotent request may be re-sent, so
            # only its body stays referenced.
            if self._by_id:
                for p in unflushed:
                    if p.state == _QUEUED:
                        chunks.append(p.data)  # type: ignore[arg-type]
                        p.data = None
                        p.state = _SENT
                        if not p.idempotent:
                            p.body = None
            else:
                inflight = self._inflight
                for p in unflushed:
                    if p.state == _QUEUED:
                        chunks.append(p.data)  # type: ignore[arg-type]
                        p.data = None
                        p.state = _SENT
                        if not p.idempotent:
                            p.body = None
                        inflight.append(p)
        if not chunks:
            return
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.bytes_sent += len(data)
        self.metrics.add_bytes(0, len(data))
        self.transport.write(data)

    # -- IPushProducer: the transport tells us when its buffer is full -------

    def pauseProducing(self) -> None:
        self._paused = True
        timeout = self.config.write_timeout
        if timeout is not None and self._write_timer is None and self._state != _CLOSED:
            self._write_timer = self._clock.callLater(timeout, self._write_stuck)

    def resumeProducing(self) -> None:
        self._paused = False
        if self._write_timer is not None:
            if self._write_timer.active():
                self._write_timer.cancel()
            self._write_timer = None
        if (self._unflushed or self._control) and self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self._flush)

    def stopProducing(self) -> None:
        """
        The transport is going away; ``connectionLost`` follows.
        """

    def _write_stuck(self) -> None:
        self._write_timer = None
        self.abort(
            f"write timeout: the transport buffer did not drain within "
            f"{self.config.write_timeout:g} s (the server stopped reading)"
        )

    # -- reading -------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._state == _CLOSED:
            return
        self.bytes_received += len(data)
        self.metrics.add_bytes(len(data), 0)
        now = self._clock.seconds()
        self._last_read = now
        self._ping_sent_at = None
        self._in_receive = True
        try:
            try:
                frames = self._framer.feed(data)
            except ProtocolError as e:
                self._handle_frames(e.frames, now)
                self._protocol_error(e)
                return
            self._handle_frames(frames, now)
        finally:
            self._in_receive = False
        if (self._unflushed or self._control) and self._flush_call is None:
            self._flush()

    def _handle_frames(self, frames: list[bytes], now: float) -> None:
        decode = self._decode
        metrics = self.metrics
        for frame in frames:
            try:
                kind, request_id, body = decode(frame)
            except ProtocolError as e:
                self._protocol_error(e)
                return
            if kind == REPLY or kind == ERROR:
                if self._by_id:
                    p = self._pending.pop(request_id, None)
                elif self._inflight:
                    p = self._inflight.popleft()
                else:
                    p = None
                if p is None:
                    self._unknown_reply(request_id)
                    continue
                state = p.state
                if state == _SENT:
                    p.state = _DONE
                    self._live -= 1
                    if self.on_settled is not None:
                        self.on_settled()
                    if kind == REPLY:
                        self.ok_count += 1
                        metrics.record_ok(now - p.started)
                        p.deferred.callback(body)
                    else:
                        self.failed_count += 1
                        metrics.record_failure("remote_error", now - p.started)
                        p.deferred.errback(RemoteError(body.decode("utf-8", "replace")))
                elif state == _ABANDONED:
                    p.state = _DONE
                    self._tombstones -= 1
                    self.late_replies += 1
                    metrics.record_dropped_reply(True)
                else:
                    # A reply to a request still queued: the server answered
                    # an ID we have not sent (yet).  Put it back, drop reply.
                    if self._by_id:
                        self._pending[request_id] = p
                    self._unknown_reply(request_id)
                if self._state == _CLOSED:
                    # A callback closed the connection; it failed the rest.
                    return
            elif kind == PING:
                # A peer that floods pings while not reading our pongs must
                # not grow our memory: beyond a few queued control frames,
                # pongs are dropped (any later byte is a sign of life anyway).
                if len(self._control) < _MAX_CONTROL_FRAMES:
                    self._control.append(self._encode(PONG, request_id, body))
            elif kind == PONG:
                pass  # any bytes already counted as a sign of life
            elif kind == GOAWAY:
                self._goaway()
                if self._state == _CLOSED:
                    return
            else:
                # A request or cancel frame from the server: not a client's
                # business; count it with the unknown replies.
                self._unknown_reply(request_id)
        if self._state == _DRAINING and not self._live:
            self._finish_draining()

    def _unknown_reply(self, request_id: int) -> None:
        self.unknown_replies += 1
        self.metrics.record_dropped_reply(False)
        now = self._clock.seconds()
        if now - self._last_unknown_log >= _UNKNOWN_LOG_INTERVAL:
            self._last_unknown_log = now
            _log.warn(
                "Dropped a reply for request id {request_id} that is not pending "
                "on this connection ({count} such replies so far): the server "
                "answered twice or answered an ID it was never sent",
                request_id=request_id,
                count=self.unknown_replies,
            )

    def _protocol_error(self, error: ProtocolError) -> None:
        _log.error(
            "Closing connection: the server broke the protocol: {error}",
            error=str(error),
        )
        self.metrics.record_failure("protocol_error", None)
        self._close_error = error
        self.abort(f"protocol error from the server: {error}")

    def _orphan_or_fail(self, p: _Pending, lost: ConnectionLost) -> bool:
        """
        A request this connection can no longer serve (already taken out of
        every table): offer it to the owner if it is safe to re-send, else
        fail it.  Returns whether the owner took it.
        """
        orphan = self.on_orphan
        if (
            orphan is not None
            and p.body is not None
            and (not lost.written or p.idempotent)
            and orphan(p, lost)
        ):
            return True
        self.failed_count += 1
        if self.on_settled is not None:
            self.on_settled()
        p.body = None
        p.deferred.errback(lost)
        return False

    def _goaway(self) -> None:
        if self._state != _OPEN:
            return
        self._state = _DRAINING
        _log.info(
            "Server sent GOAWAY; finishing {pending} in-flight requests on this "
            "connection and sending nothing new on it",
            pending=self._live,
        )
        # Withdraw what is not written yet: the server asked for nothing new,
        # and those requests are safe to send on another connection.
        withdrawn = [p for p in self._unflushed if p.state == _QUEUED]
        for p in withdrawn:
            p.state = _DONE
            self._unflushed_bytes -= len(p.data or b"")
            p.data = None
            if self._by_id:
                del self._pending[p.request_id]
            self._live -= 1
            self._orphan_or_fail(p, ConnectionLost(False, "server sent GOAWAY"))
        if self.on_goaway is not None:
            self.on_goaway(self)
        if self._state == _DRAINING and not self._live:
            self._finish_draining()

    # -- connection lifecycle ------------------------------------------------

    def connectionMade(self) -> None:
        self._connected = True
        now = self._clock.seconds()
        self.connected_at = now
        self._last_read = now
        self.metrics.record_connection_event("connected")
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self._producing = True
        self._tls = ISSLTransport.providedBy(self.transport)
        self._arm_liveness(now)
        if self._unflushed:
            self._flush()

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake succeeded (``IHandshakeListener``).
        """
        self._handshake_done = True
        waiters, self._handshake_waiters = self._handshake_waiters, []
        for d in waiters:
            d.callback(None)

    def when_secure(self) -> Deferred[None]:
        """
        Fires once the connection can carry requests safely: at once for
        plain TCP, after the TLS handshake for TLS.  Fails with
        ``ConnectionLost`` (whose reason names the TLS error: untrusted
        certificate, wrong hostname, ...) if the connection ends first.
        The pool does not use a connection before this fires.
        """
        d: Deferred[None] = Deferred()
        if self._state == _CLOSED:
            d.errback(ConnectionLost(False, self.close_reason or "connection closed"))
        elif not self._tls or self._handshake_done:
            d.callback(None)
        else:
            self._handshake_waiters.append(d)
        return d

    def close(self, drain: bool = True) -> Deferred[str]:
        """
        Stop taking requests and close the connection.

        :param drain: let outstanding requests finish first (they may still
            time out); otherwise fail them now with ``ConnectionLost``.
        :return: fires with the close reason once the connection is gone.
        """
        waiter = self.when_closed()
        if not drain:
            # Not waiting for anything, the send buffer included: a peer
            # that stopped reading must not hold the close up.
            self.abort("closed by the client without draining")
        elif self._state == _OPEN:
            self._state = _DRAINING
            if not self._live or not self._connected:
                self._finish_draining()
        return waiter

    def abort(self, reason: str) -> None:
        """
        Close the connection at once (without waiting for buffered writes):
        the peer is broken or dead.  Everything pending fails with
        ``ConnectionLost`` carrying ``reason``.
        """
        if self._state == _CLOSED:
            return
        if self.close_reason is None:
            self.close_reason = reason
        transport = self.transport
        if transport is not None and self._connected:
            abort = getattr(transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                self._release_transport(transport)
                transport.loseConnection()
        else:
            self._fail_everything(reason)

    def _release_transport(self, transport: Any) -> None:
        # A transport closes only once its registered producer is gone: with
        # a paused streaming producer, loseConnection() would resume us and
        # wait forever instead of closing.
        if self._producing:
            self._producing = False
            transport.unregisterProducer()

    def when_closed(self) -> Deferred[str]:
        """
        A Deferred that fires with the close reason when the connection ends
        (at once if it already has).
        """
        d: Deferred[str] = Deferred()
        if self._state == _CLOSED:
            d.callback(self.close_reason or "connection closed")
        else:
            self._closed_waiters.append(d)
        return d

    def _finish_draining(self) -> None:
        if self.close_reason is None:
            self.close_reason = "closed by the client"
        transport = self.transport
        if transport is not None and self._connected:
            # Hand over everything still queued: the transport writes it out
            # before closing (bounded by max_write_buffer; write_timeout and
            # the caller's close timeout cover a peer that never reads).
            self._paused = False
            self._flush()
            self._release_transport(transport)
            transport.loseConnection()
        else:
            self._fail_everything(self.close_reason)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.close_reason is None:
            self.close_reason = reason.getErrorMessage() or "connection closed"
        self.metrics.record_connection_event("lost")
        self._fail_everything(self.close_reason)

    def _fail_everything(self, reason: str) -> None:
        if self._state == _CLOSED and not self._closed_waiters:
            return
        self._state = _CLOSED
        self._connected = False
        self._deadlines.stop()
        self._tombstone_deadlines.stop()
        for timer in (self._flush_call, self._write_timer, self._liveness_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._flush_call = self._write_timer = self._liveness_timer = None
        # Detach every table first: callbacks fired below may call back into
        # this protocol, and must find it closed and empty.
        if self._by_id:
            victims = list(self._pending.values())
        else:
            victims = [*self._inflight, *self._unflushed]
        self._pending = {}
        self._inflight = deque()
        self._unflushed = []
        self._unflushed_bytes = 0
        self._control = []
        self._tombstones = 0
        error = self._close_error
        now = self._clock.seconds()
        metrics = self.metrics
        # Before a TLS handshake completes nothing reaches the server.
        reached_server = not self._tls or self._handshake_done
        for p in victims:
            state = p.state
            if state == _SENT or state == _QUEUED:
                p.state = _DONE
                p.data = None
                self._live -= 1
                written = state == _SENT and reached_server
                lost = ConnectionLost(written, reason, error)
                if self._orphan_or_fail(p, lost):
                    continue
                metrics.record_failure(
                    "connection_lost", now - p.started if written else None
                )
            else:
                p.state = _DONE
        shakers, self._handshake_waiters = self._handshake_waiters, []
        for h in shakers:
            h.errback(ConnectionLost(False, reason, error))
        waiters, self._closed_waiters = self._closed_waiters, []
        for d in waiters:
            d.callback(reason)

    # -- liveness ------------------------------------------------------------

    def _arm_liveness(self, now: float) -> None:
        config = self.config
        if config.heartbeat_interval is None and config.read_timeout is None:
            return
        due = math.inf
        if config.heartbeat_interval is not None:
            if self._ping_sent_at is None:
                due = self._last_read + config.heartbeat_interval
            else:
                due = self._ping_sent_at + config.heartbeat_timeout
        if config.read_timeout is not None and self._live:
            due = min(due, self._last_read + config.read_timeout)
        if due == math.inf:
            # Only a read timeout and nothing outstanding: check again after
            # one period, when work may have started.
            due = now + (config.read_timeout or 1.0)
        self._liveness_timer = self._clock.callLater(
            max(0.0, due - now), self._check_liveness
        )

    def _check_liveness(self) -> None:
        self._liveness_timer = None
        if self._state == _CLOSED:
            return
        now = self._clock.seconds()
        config = self.config
        if (
            config.read_timeout is not None
            and self._live
            and now - self._last_read >= config.read_timeout
        ):
            self._close_error = None
            self.abort(
                f"read timeout: nothing received for {config.read_timeout:g} s "
                f"with {self._live} requests outstanding; the peer is dead or stuck"
            )
            return
        if config.heartbeat_interval is not None:
            if self._ping_sent_at is not None:
                if now - self._ping_sent_at >= config.heartbeat_timeout:
                    self.abort(
                        f"heartbeat timeout: no answer to a ping within "
                        f"{config.heartbeat_timeout:g} s; the peer is dead or "
                        f"the connection is half-open"
                    )
                    return
            elif now - self._last_read >= config.heartbeat_interval:
                self._ping_sent_at = now
                self._control.append(self._encode(PING, 0, b""))
                self._flush()
        self._arm_liveness(now)


class FramedClientFactory(ClientFactory):
    """
    Builds :class:`FramedProtocol` instances for any Twisted client endpoint::

        factory = FramedClientFactory(FC1Codec(), request_timeout=5.0)
        proto = await endpoint.connect(factory)
        reply = await proto.request(b"hello")

    Keyword arguments are those of :class:`ProtocolConfig`.
    """

    protocol = FramedProtocol  # type: ignore[assignment]
    #: One connection attempt per backoff step would log "Starting factory"
    #: each time; the connection layer logs what matters.
    noisy = False

    def __init__(
        self,
        codec: Codec | None = None,
        *,
        clock: IReactorTime | None = None,
        metrics: MetricsRecorder | None = None,
        config: ProtocolConfig | None = None,
        **options: Any,
    ) -> None:
        if config is None:
            config = ProtocolConfig(codec=codec or FC1Codec(), **options)
        elif codec is not None or options:
            raise TypeError("pass either config or codec/options, not both")
        self.config = config
        self.clock = clock
        self.metrics = metrics if metrics is not None else Metrics()
        #: Hooks given to every protocol built (see FramedProtocol).
        self.on_settled: Callable[[], object] | None = None
        self.on_orphan: Callable[[_Pending, ConnectionLost], bool] | None = None
        #: Give each protocol a Metrics of its own (its requests, latency,
        #: bytes) instead of sharing ``metrics``; the owner adds them up.
        self.per_connection_metrics = False
        #: Called with each protocol built.
        self.on_built: Callable[[FramedProtocol], object] | None = None

    def buildProtocol(self, addr: object) -> FramedProtocol:
        own = self.per_connection_metrics
        proto: FramedProtocol = self.protocol(  # type: ignore[call-arg]
            self.config, self.clock, Metrics() if own else self.metrics
        )
        proto.factory = self
        proto.on_settled = self.on_settled
        proto.on_orphan = self.on_orphan
        proto.own_metrics = own
        if self.on_built is not None:
            self.on_built(proto)
        return proto
