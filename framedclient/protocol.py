"""
One connection as a concurrent request/reply channel: the Twisted adapter
around the request engine.

:class:`FramedProtocol` turns a byte stream into requests and replies: any
number of callers may call :meth:`FramedProtocol.request` at once; each gets
a Deferred that fires exactly once, with the reply to *its* request or with
an error that says what happened.  The framer and codec decide what a frame
and a message are; the sans-IO :class:`~framedclient.engine.RequestEngine`
decides what happens to requests (IDs, matching, deadlines, tombstones);
:class:`~framedclient.liveness.Liveness` watches for a dead peer.  This
module holds what needs Twisted:

- the transport: everything the engine has queued in one reactor turn goes
  out in a single ``transport.write`` (at the end of the current
  ``dataReceived`` when requests are issued from reply callbacks, otherwise
  from a ``callLater(0)``), so many small requests cost few syscalls;
- backpressure: while the transport's buffer is full (it paused us as a
  producer) requests stay queued, up to ``max_write_buffer`` bytes; past
  that, new requests fail with :class:`~framedclient.errors.Overloaded`.  If
  the buffer does not drain within ``write_timeout`` the connection is
  closed;
- one reactor timer for all the engine's deadlines;
- TLS gating: bytes handed to TLS before the handshake completed have not
  reached the server;
- the owner: an object given at construction (:class:`RequestOwner`, the
  client) learns when each request's slot is free and may take over
  requests that are safe to send elsewhere when the connection dies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from typing import Protocol as TypingProtocol

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

from framedclient.batch import RequestBatch
from framedclient.codecs import (
    CANCEL,
    GOAWAY,
    PART,
    PING,
    PONG,
    PUSH,
    Codec,
    FC1Codec,
    Message,
)
from framedclient.config import ProtocolConfig
from framedclient.datapath import CLOSED as _CLOSED
from framedclient.datapath import DRAINING as _DRAINING
from framedclient.datapath import OPEN as _OPEN
from framedclient.datapath import DataPath
from framedclient.deadlines import DeadlineTimer
from framedclient.engine import (
    ABANDONED,
    CANCELLED,
    ERROR_REPLY,
    LATE,
    LOST,
    SENT,
    TIMEOUT,
    Request,
    RequestEngine,
    check_request,
)
from framedclient.errors import (
    CANCELLED as OUTCOME_CANCELLED,
)
from framedclient.errors import (
    ConnectionLost,
    FramedClientError,
    Overloaded,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    codec_refusal,
    unframed_timeout,
)
from framedclient.liveness import BlackHoleCheck, Liveness
from framedclient.metrics import Metrics, MetricsRecorder

if TYPE_CHECKING:
    from framedclient.health import HostHealth

__all__ = ["FramedClientFactory", "FramedProtocol", "ProtocolConfig", "RequestOwner"]

_log = Logger()

_UNKNOWN_LOG_INTERVAL = 10.0
_MAX_CONTROL_FRAMES = 64


class PendingRequest(Deferred[bytes], Request):
    """
    What :meth:`FramedProtocol.request` returns: the caller's Deferred and
    the engine's record of the request in one object.  One allocation per
    request instead of two, and no reference cycle between a record and
    its Deferred, so a finished request is freed at once by reference
    counting instead of waiting for the cyclic garbage collector.
    """

    __slots__ = ()

    def cancel(self) -> None:
        if not self.called:
            redirect = self.redirect
            if redirect is not None:
                # Handed over to a retry: cancel that; its outcome is
                # relayed here.
                redirect.cancel()
            else:
                self.engine.cancel(self)
        # Fails with CancelledError if nothing fired us meanwhile.
        Deferred.cancel(self)


class StreamRequest(PendingRequest):
    """
    A request whose reply comes in parts (:meth:`FramedProtocol.open_stream`):
    ``on_part(body, now)`` takes each non-final part; the Deferred fires
    with the final reply's body, or fails, as a plain request's does.
    """

    __slots__ = ("on_part",)


class RequestOwner(TypingProtocol):
    """
    Who a connection reports its requests to (the client), given at
    construction.  Both methods run on the reactor thread and must be cheap.
    """

    def request_settled(self) -> None:
        """
        Called exactly once for every ``request()`` call, when its outcome
        on this connection is decided (just before its Deferred fires), or
        when it is refused, unless it was handed over through
        :meth:`request_orphaned`.  The client's limiter frees the request's
        slot here, which costs far less than a callback on every Deferred.
        """

    def request_orphaned(
        self,
        request: PendingRequest,
        lost: ConnectionLost,
        host: HostHealth | None = None,
    ) -> bool:
        """
        Offered each request this connection can no longer serve and that
        is safe to send elsewhere (never written, or idempotent), with the
        ``ConnectionLost`` it would fail with and the connection's host (its
        ``health``), which a retry should avoid.  Returning true takes it
        over: the owner fires ``request`` (the caller's Deferred) later and
        sets ``request.redirect`` to the Deferred a cancel must reach.
        """
        return False


@implementer(IPushProducer, IHandshakeListener)
class FramedProtocol(Protocol):
    """
    A client connection carrying many concurrent requests.

    Build it with :class:`FramedClientFactory` (or directly, then connect it
    with ``twisted.internet.endpoints.connectProtocol``).

    :param owner: told when each request's slot is free, offered requests
        to re-send when the connection dies (see :class:`RequestOwner`).
    :param own_metrics: whether ``metrics`` belongs to this connection alone
        (so its latency can be shown per connection).
    :param health: the health of the host this connection leads to (see
        :mod:`framedclient.health`): told of the failures the server is
        responsible for, and of answers while failures are on record.
    :ivar close_reason: why the connection ended (``None`` while open).
    :ivar health: the ``health`` given.
    """

    def __init__(
        self,
        config: ProtocolConfig | None = None,
        clock: IReactorTime | None = None,
        metrics: MetricsRecorder | None = None,
        owner: RequestOwner | None = None,
        own_metrics: bool = False,
        health: HostHealth | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = reactor  # type: ignore[assignment]
        assert clock is not None
        self.config = config = config if config is not None else ProtocolConfig()
        self.codec = codec = config.codec
        self._clock: IReactorTime = clock
        self.metrics: MetricsRecorder = metrics if metrics is not None else Metrics()
        self.own_metrics = own_metrics
        self._owner = owner
        self.health = health
        self._in_flight_cap = (
            config.max_in_flight if config.max_in_flight is not None else math.inf
        )
        self._closed_by_client = False
        self._framer = codec.new_framer()
        self._encode = codec.encode
        self._timer = DeadlineTimer(clock, self._wake)
        self._liveness = Liveness(
            clock,
            config.read_timeout,
            config.heartbeat_interval,
            config.heartbeat_timeout,
            self._outstanding,
            self._send_ping,
            self._peer_dead,
        )
        # The per-read and per-reply work (a native class in compiled mode,
        # see framedclient.datapath); it is the engine's actions.
        self._path = path = DataPath(
            self,
            self._framer,
            codec.decode,
            clock.seconds,
            self.metrics,
            # A plain Metrics records a reply's latency and nothing else.
            self.metrics.ok_histogram if type(self.metrics) is Metrics else None,
            self._liveness,
            health,
            owner.request_settled if owner is not None else None,
            clock.callLater,
            self._flush,
            config.request_timeout,
            config.max_write_buffer,
        )
        # Twisted calls the data path directly (one call per read), and so
        # do the client and the pool for each request, unless a subclass
        # overrides these methods.
        if type(self).dataReceived is FramedProtocol.dataReceived:
            self.dataReceived = path.data_received  # type: ignore[method-assign]
        if type(self).send is FramedProtocol.send:
            self.send = path.send  # type: ignore[method-assign]
        self.engine = engine = RequestEngine(
            matching=codec.matching,
            max_id=codec.max_id,
            max_pending=config.max_pending,
            abandoned_ttl=config.abandoned_ttl,
            supports_cancel=codec.supports_cancel,
            encode=codec.encode,
            seconds=clock.seconds,
            actions=path,
            record=PendingRequest,
            stream_record=StreamRequest,
            # The client holds its requests' deadlines (the connections'
            # request_timeout is unset) but knows the usual one.
            usual_timeout=(
                config.request_timeout
                if config.request_timeout is not None
                else getattr(owner, "usual_timeout", None)
            ),
        )
        path.attach(engine)
        self._request_timeout = config.request_timeout
        self._max_write_buffer = config.max_write_buffer
        self._black_hole = BlackHoleCheck(
            config.black_hole_after,
            self._liveness,
            clock,
            self._bytes_read,
            self._written_timeouts,
            self._black_hole_found,
        )
        self._producing = False
        self._write_timer: IDelayedCall | None = None
        self._close_error: BaseException | None = None
        self._closed_waiters: list[Deferred[str]] = []
        self._goaway_waiters: list[Deferred[None]] = []
        # TLS: bytes handed to a TLS transport before the handshake finished
        # have not reached the server if the handshake then fails.
        self._tls = False
        self._handshake_done = False
        self._handshake_waiters: list[Deferred[None]] = []
        self._last_unknown_log = -math.inf
        # Streams and subscriptions whose consumer lags: reading stops while
        # any holds it (see hold_reading).
        self._read_holds = 0
        # Whether a stream's part came: a whole frame of the protocol, even
        # before any final reply (see _framed).
        self._parts_seen = False
        #: where PUSH frames go: ``on_push(push)``; ``None`` drops them
        #: (counted with the unknown replies)
        self.on_push: Callable[[Any], object] | None = None
        self._split_push: Callable[[Any], Any] | None = getattr(
            codec, "split_push", None
        )

        self.close_reason: str | None = None
        self.connected_at: float | None = None
        self.failed_count = 0
        #: error replies received (counted in ``failed_count`` too)
        self.error_replies = 0
        self.bytes_sent = 0

    @property
    def ok_count(self) -> int:
        """
        Requests answered with a reply on this connection.
        """
        return self._path.ok_count

    # The connection's state, kept in the data path, where every read and
    # every request checks it.

    @property
    def _state(self) -> int:
        return self._path.state

    @_state.setter
    def _state(self, value: int) -> None:
        self._path.state = value

    @property
    def _connected(self) -> bool:
        return self._path.connected

    @_connected.setter
    def _connected(self, value: bool) -> None:
        self._path.connected = value

    @property
    def _paused(self) -> bool:
        return self._path.paused

    @_paused.setter
    def _paused(self, value: bool) -> None:
        self._path.paused = value

    @property
    def _flush_call(self) -> IDelayedCall | None:
        return self._path.flush_call  # type: ignore[no-any-return]

    @_flush_call.setter
    def _flush_call(self, value: IDelayedCall | None) -> None:
        self._path.flush_call = value

    @property
    def _control(self) -> list[bytes]:
        # The control frames waiting to be written (the data path's).
        return self._path.control

    @property
    def bytes_received(self) -> int:
        """
        Bytes read on this connection.
        """
        return self._path.bytes_received

    # -- introspection -------------------------------------------------------

    def __repr__(self) -> str:
        state = ("open", "draining", "closed")[self._state]
        return (
            f"<FramedProtocol {state} pending={self.engine.live} codec={self.codec!r}>"
        )

    def _outstanding(self) -> int:
        return self.engine.live

    @property
    def pending(self) -> int:
        """
        Requests waiting for their reply (or still queued to be written).
        """
        return self.engine.live

    @property
    def table_size(self) -> int:
        """
        Slots in use: live requests plus tombstones of abandoned ones.
        """
        engine = self.engine
        return engine.live + engine.tombstones

    def silent_since(self, when: float) -> bool:
        """
        Whether nothing at all has been read from the peer since ``when``
        (a clock reading): a request that went out then and lost to a
        hedge with nothing read meanwhile is a sign of a silent peer, as
        much as a timeout is.
        """
        return self._liveness.last_read <= when

    @property
    def last_read(self) -> float:
        """
        When bytes were last read from the peer (or work started after an
        idle spell): while requests are out, ``now - last_read`` is a floor
        for their latency, which a latency-aware pick uses.
        """
        return self._liveness.last_read

    @property
    def late_replies(self) -> int:
        """
        Replies that arrived after their request timed out or was cancelled
        (dropped).
        """
        return self.engine.late_replies

    @property
    def unknown_replies(self) -> int:
        """
        Replies to IDs never sent, already answered or released (dropped).
        """
        return self.engine.unknown_replies

    @property
    def accepting(self) -> bool:
        """
        Whether ``request()`` would be accepted now (open, not draining, not
        full).  The pool uses this to skip a connection.
        """
        engine = self.engine
        path = self._path
        return (
            path.state == _OPEN
            and path.connected
            and engine.live < self._in_flight_cap
            and engine.live + engine.tombstones < engine.max_pending
        )

    @property
    def is_closed(self) -> bool:
        return self._state == _CLOSED

    def set_in_flight_cap(self, cap: int | None) -> None:
        """
        Take at most ``cap`` requests in flight before :attr:`accepting`
        says no (``None``: no cap).  The pool sets it from the number of
        connections it has, which changes as hosts join and leave.
        """
        self._in_flight_cap = cap if cap is not None else math.inf

    @property
    def answered(self) -> bool:
        """
        Whether the server has answered any request on this connection (a
        reply or an error reply).
        """
        return bool(self.ok_count or self.error_replies)

    @property
    def is_draining(self) -> bool:
        return self._state == _DRAINING

    def oldest_pending_age(self) -> float | None:
        """
        Age in seconds of the oldest live request, or ``None``.  O(n): for
        debug snapshots, not the hot path.
        """
        oldest = self.engine.oldest_started()
        return None if oldest is None else self._clock.seconds() - oldest

    def debug_state(self) -> dict[str, Any]:
        """
        A JSON-able picture of this connection, for leak hunting.
        """
        engine = self.engine
        return {
            "state": ("open", "draining", "closed")[self._state],
            "pending": engine.live,
            "tombstones": engine.tombstones,
            "table_entries": engine.entries,
            "queued_unwritten": engine.unwritten_count,
            "oldest_pending_age": self.oldest_pending_age(),
            "paused": self._paused,
            "deadline_entries": engine.deadline_entries,
            "ok": self.ok_count,
            "failed": self.failed_count,
            "late_replies": engine.late_replies,
            "unknown_replies": engine.unknown_replies,
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
        body: bytes | Message,
        timeout: float | None = None,
        idempotent: bool = False,
        attempt: int = 1,
    ) -> Deferred[Any]:
        """
        Send ``body`` (bytes, or a :class:`~framedclient.codecs.base.Message`
        for codecs with header fields) as one request.

        :param timeout: seconds to wait for the reply; ``None`` uses the
            config's ``request_timeout``; ``math.inf`` means no timeout.
        :param idempotent: the request may be re-sent after this connection
            dies even if it was written (used by owners that re-send).
        :param attempt: how many times it has been tried so far, this one
            included (kept across re-sends to bound them).
        :return: a Deferred that fires exactly once: with the reply (body
            bytes, or a ``Message`` for codecs with header fields), or
            with :class:`~framedclient.errors.RemoteError`,
            :class:`~framedclient.errors.RequestTimeout`,
            :class:`~framedclient.errors.ConnectionLost` (``written`` tells
            whether a retry is safe),
            :class:`~framedclient.errors.Overloaded` (this connection is
            full; nothing was sent), or ``CancelledError`` after
            ``cancel()``.
        :raises TypeError: ``body`` is neither bytes nor a Message,
            ``timeout`` not a number, ``idempotent`` not a bool.
        :raises ValueError: ``timeout`` is not positive.
        """
        if (
            not isinstance(body, bytes)
            or (
                timeout is not None
                and (timeout.__class__ is not float or not timeout > 0.0)
            )
            or (idempotent is not False and idempotent is not True)
        ):
            # The common case (bytes, a positive float, a bool) passed the
            # lines above; everything else is checked properly here.
            try:
                body = check_request(body, timeout, idempotent)
            except Exception:
                # Raised at the call, but the owner counted the call.
                if self._owner is not None:
                    self._owner.request_settled()
                raise
        return self.send(body, timeout, idempotent, attempt)

    def send(
        self,
        body: bytes | Message,
        timeout: float | None = None,
        idempotent: bool = False,
        attempt: int = 1,
    ) -> Deferred[Any]:
        """
        :meth:`request`, for arguments :func:`~framedclient.engine.check_request`
        has passed already: the client checks each request once, at its
        call, and hands it to a connection through here.
        """
        # Replaced by the data path's own method in __init__ (unless a
        # subclass overrides this one, which may call it).
        return self._path.send(body, timeout, idempotent, attempt)  # type: ignore[no-any-return]

    def refused(self) -> Deferred[Any]:
        """
        Why the data path did not take a request, as the caller's failed
        Deferred (see :class:`~framedclient.datapath.DataPathOwner`).
        """
        engine = self.engine
        if self._state != _OPEN or not self._connected:
            return self._refuse(self._refusal())
        if engine.live + engine.tombstones >= engine.max_pending:
            return self._refuse(engine.overloaded())
        return self._refuse(
            Overloaded(
                f"the server is not reading: {engine.unwritten_bytes} bytes "
                f"already wait to be written (max_write_buffer="
                f"{self._max_write_buffer}); nothing was sent"
            )
        )

    def refused_body(self, error: Exception) -> Deferred[Any]:
        """
        The codec refused a request's body (see
        :class:`~framedclient.datapath.DataPathOwner`).
        """
        return self._refuse(codec_refusal(error))

    def send_unit(
        self,
        batch: RequestBatch,
        timeout: float | None,
        idempotent: bool,
        attempt: int,
    ) -> Deferred[Any]:
        # send() for a RequestBatch: its bodies as one unit (see
        # framedclient.batch), refused as a whole or accepted as a whole.
        if self._state != _OPEN or not self._connected:
            return self._refuse(self._refusal())
        engine = self.engine
        if not engine.fits(len(batch.bodies)):
            return self._refuse(
                Overloaded(
                    f"a batch of {len(batch.bodies)} requests does not fit: the "
                    f"connection has {engine.live} requests pending and "
                    f"{engine.tombstones} abandoned ones (max_pending="
                    f"{engine.max_pending}, each request of a batch counted); "
                    f"nothing was sent"
                )
            )
        if timeout is None:
            timeout = self._request_timeout
        if self._paused and engine.unwritten_bytes >= self._max_write_buffer:
            return self._refuse(
                Overloaded(
                    f"the server is not reading: {engine.unwritten_bytes} bytes "
                    f"already wait to be written (max_write_buffer="
                    f"{self._max_write_buffer}); nothing was sent"
                )
            )
        path = self._path
        now = path.now if path.in_receive else self._clock.seconds()
        if not engine.live:
            self._liveness.last_read = now
        try:
            r = engine.open_many(batch.bodies, batch, timeout, now, idempotent, attempt)
        except Exception as e:
            return self._refuse(codec_refusal(e))
        if self._flush_call is None and not self._path.in_receive:
            self._flush_call = self._clock.callLater(0, self._flush)
        return r  # type: ignore[return-value]

    def open_stream(
        self, body: bytes | Message, on_part: Callable[[Any, float], object]
    ) -> Deferred[Any]:
        """
        Send ``body`` as a request whose reply may come in parts: each
        non-final part goes to ``on_part(part, now)`` in arrival order; the
        Deferred (a :class:`StreamRequest` when accepted) fires with the
        final reply's body, or fails like :meth:`request`'s.  It has no
        timeout of its own and is never re-sent elsewhere.  Arguments are
        checked by the caller (:mod:`framedclient.streams`).
        """
        if self._state != _OPEN or not self._connected:
            return self._refuse(self._refusal())
        engine = self.engine
        if engine.live + engine.tombstones >= engine.max_pending:
            return self._refuse(engine.overloaded())
        path = self._path
        now = path.now if path.in_receive else self._clock.seconds()
        if not engine.live:
            self._liveness.last_read = now
        try:
            r = engine.open_stream(body, now)
        except Exception as e:
            return self._refuse(codec_refusal(e))
        r.on_part = on_part  # type: ignore[attr-defined]
        if self._flush_call is None and not self._path.in_receive:
            self._flush_call = self._clock.callLater(0, self._flush)
        return r  # type: ignore[return-value]

    def hold_reading(self) -> None:
        """
        A stream or subscription on this connection buffers as much as it
        may: stop reading from the socket until it has caught up (every
        :meth:`hold_reading` is matched by one :meth:`release_reading`).
        Replies to other requests on this connection wait meanwhile (the
        price of sharing a connection; see docs/streams.md), and liveness
        checks pause: a connection we do not read cannot prove the peer
        alive.
        """
        self._read_holds += 1
        if self._read_holds == 1 and self._state != _CLOSED and self._connected:
            self._liveness.stop()
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def release_reading(self) -> None:
        """
        Undo one :meth:`hold_reading`; reading resumes when none is left.
        """
        if not self._read_holds:
            return
        self._read_holds -= 1
        if not self._read_holds and self._state != _CLOSED and self._connected:
            self._liveness.start(self._clock.seconds())
            self.transport.resumeProducing()  # type: ignore[union-attr]

    @property
    def reading_held(self) -> bool:
        """
        Whether reading is stopped for a lagging stream or subscription.
        """
        return self._read_holds > 0

    def request_bound(
        self, body: bytes | Message, timeout: float | None = None
    ) -> Deferred[Any]:
        """
        :meth:`request`, for a request that may only ever run on this
        connection (a lease's: a WATCH or a transaction is state of this
        connection alone).  It is never offered to the owner to re-send
        elsewhere: if the connection dies or sends GOAWAY first, it fails
        with ``ConnectionLost`` (``written`` tells whether it may have run).
        """
        d = self.request(body, timeout)
        if isinstance(d, PendingRequest):
            # Without its body the request cannot be re-sent (see
            # Request.body), on any path: lost, GOAWAY, retry.
            d.body = None
        return d

    def _refuse(self, error: FramedClientError) -> Deferred[bytes]:
        # Refused before it was held: nothing was sent.
        if self._owner is not None:
            self._owner.request_settled()
        self.failed_count += 1
        self.metrics.record_failure(error.outcome, None)
        return fail(error)

    def _refusal(self) -> ConnectionLost:
        if self._state == _OPEN:
            return ConnectionLost(False, "not connected yet")
        if self._state == _DRAINING:
            return ConnectionLost(
                False,
                "connection is draining (GOAWAY or close) and takes no new requests",
            )
        return ConnectionLost(False, self.close_reason or "connection closed")

    # -- EngineActions: what the engine asks of us ---------------------------
    # (through the data path, which delivers replies itself)

    def failed(self, r: Any, ending: int, value: Any, now: float) -> None:
        """
        The engine settled ``r`` (a :class:`PendingRequest`, the records
        this engine makes) without a reply (see
        :class:`~framedclient.engine.EngineActions`).
        """
        owner = self._owner
        if ending == LOST:
            if (
                owner is not None
                and r.body is not None
                and (not value.written or r.idempotent)
                and owner.request_orphaned(r, value, self.health)
            ):
                return
            r.body = None
        self.failed_count += 1
        if ending == ERROR_REPLY:
            # The server answered: it is there, whatever it said.
            self.error_replies += 1
            health = self.health
            if health is not None and health.failures:
                health.succeeded()
        elif ending == TIMEOUT and r.state == ABANDONED:
            self._black_hole.timed_out(r.started)
            if not self._framed():
                value = self._unframed_timeout(value.timeout)
        if owner is not None:
            owner.request_settled()
        written = (
            r.state == ABANDONED
            or ending == ERROR_REPLY
            or (ending == LOST and value.written)
        )
        latency = now - r.started if written else None
        if latency is not None and self.health is not None:
            if ending == CANCELLED:
                # Given up (a hedge won): a floor for the host's latency.
                self.health.waited(latency, now)
            else:
                # A written request that failed: a failure for the host's
                # success rate (error replies too), its time a sample.
                self.health.settled(latency, False, now)
        if ending == CANCELLED:
            # Deferred.cancel() fails the Deferred with CancelledError.
            self.metrics.record_failure(OUTCOME_CANCELLED, latency)
            return
        if ending != ERROR_REPLY or isinstance(value, RemoteError):
            # A codec with status codes decodes its error replies into the
            # RemoteError (with its code) the caller gets.
            error = value
        else:
            error = RemoteError(value.decode("utf-8", "replace"))
        self.metrics.record_failure(error.outcome, latency)
        r.errback(error)

    def send_cancel(self, request_id: int) -> None:
        self._path.control.append(self._encode(CANCEL, request_id, b""))
        if self._flush_call is None and not self._path.in_receive:
            self._flush_call = self._clock.callLater(0, self._flush)

    def arm(self, deadline: float) -> None:
        self._timer.arm(deadline)

    def idle(self) -> None:
        if self._state == _DRAINING:
            self._finish_draining()

    def _wake(self, now: float) -> None:
        self.engine.wake(now)
        check = self._black_hole
        if not check.timeouts:
            return
        if self._state != _CLOSED and self.health is not None:
            # Timeouts of one wake-up count as one failure of the host: a
            # burst on one bad connection must not eject a host whose other
            # connections are fine.
            self.health.failed()
        check.wake_done(now)

    def _black_hole_found(self, reason: str) -> None:
        if self._state != _CLOSED:
            self.metrics.record_connection_event("black_hole")
            self._peer_dead(reason)

    def _bytes_read(self) -> int:
        return self.bytes_received

    def _framed(self) -> bool:
        # Whether the peer has sent one whole frame of our protocol (a
        # reply, an error reply, a stream's part, a late or unknown reply).
        engine = self.engine
        return bool(
            self.ok_count
            or self.error_replies
            or self._parts_seen
            or engine.late_replies
            or engine.unknown_replies
        )

    def _unframed_timeout(self, timeout: float) -> RequestTimeout:
        peer: Any = self.transport.getPeer() if self.transport is not None else None
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        where = f"{host}:{port}" if host is not None else "the server"
        name = getattr(self.codec, "name", None) or type(self.codec).__name__
        return unframed_timeout(timeout, name, where, self.bytes_received)

    def _written_timeouts(self) -> list[float]:
        # The timeouts of the written requests still waiting that have one.
        requests = self.engine.requests()
        return [r.timeout for r in requests if r.state == SENT and r.timeout]

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
        path = self._path
        chunks = path.control
        path.control = []
        self.engine.take_unwritten(chunks)
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
        if (
            self.engine.unwritten_bytes or self._path.control
        ) and self._flush_call is None:
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
        # Replaced by the data path's own method in __init__ (unless a
        # subclass overrides this one, which may call it).
        self._path.data_received(data)

    # -- DataPathOwner: the frames and outcomes the data path hands back ------

    def other_frame(self, kind: int, request_id: int, body: Any, now: float) -> bool:
        """
        A frame that is neither a reply nor an error reply (see
        :class:`~framedclient.datapath.DataPathOwner`).
        """
        if kind == PING:
            # A peer that floods pings while not reading our pongs must
            # not grow our memory: beyond a few queued control frames,
            # pongs are dropped (any later byte is a sign of life anyway).
            control = self._path.control
            if len(control) < _MAX_CONTROL_FRAMES:
                control.append(self._encode(PONG, request_id, body))
            return False
        if kind == PONG:
            return False  # any bytes already counted as a sign of life
        if kind == GOAWAY:
            self._goaway()
            return self._state == _CLOSED
        if kind == PART:
            self._parts_seen = True
            found = self.engine.part(request_id, body, now)
        elif kind == PUSH and self.on_push is not None:
            split = self._split_push
            try:
                push = split(body) if split is not None else body
            except ProtocolError as e:
                self._protocol_error(e)
                return True
            self.on_push(push)
            return self._state == _CLOSED
        else:
            # A request or cancel frame from the server: not a client's
            # business; count it with the unknown replies.
            found = self.engine.stray_frame()
        if found:
            self.dropped_reply(found, request_id)
        # A callback closed the connection; it failed the rest.
        return self._state == _CLOSED

    def dropped_reply(self, found: int, request_id: int) -> None:
        if found == LATE:
            self.metrics.record_dropped_reply(True)
        else:
            self._unknown_reply(request_id)

    def protocol_error(self, error: ProtocolError) -> None:
        self._protocol_error(error)

    def receive_done(self) -> None:
        if self._flush_call is None:
            self._flush()

    def _unknown_reply(self, request_id: int) -> None:
        self.metrics.record_dropped_reply(False)
        now = self._clock.seconds()
        if now - self._last_unknown_log >= _UNKNOWN_LOG_INTERVAL:
            self._last_unknown_log = now
            _log.warn(
                "Dropped a reply for request id {request_id} that is not pending "
                "on this connection ({count} such replies so far): the server "
                "answered twice or answered an ID it was never sent",
                request_id=request_id,
                count=self.engine.unknown_replies,
            )

    def _protocol_error(self, error: ProtocolError) -> None:
        _log.error(
            "Closing connection: the server broke the protocol: {error}",
            error=str(error),
        )
        # A connection event: the requests it fails count as connection_lost
        # (each request has exactly one outcome).
        self.metrics.record_connection_event("protocol_error")
        self._close_error = error
        self.abort(f"protocol error from the server: {error}")

    def _goaway(self) -> None:
        if self._state != _OPEN:
            return
        self._state = _DRAINING
        _log.info(
            "Server sent GOAWAY; finishing {pending} in-flight requests on this "
            "connection and sending nothing new on it",
            pending=self.engine.live,
        )
        # Withdraw what is not written yet: the server asked for nothing new,
        # and those requests are safe to send on another connection.
        self.engine.withdraw_unwritten("server sent GOAWAY")
        waiters, self._goaway_waiters = self._goaway_waiters, []
        for d in waiters:
            d.callback(None)
        if self._state == _DRAINING and not self.engine.live:
            self._finish_draining()

    def _send_ping(self) -> None:
        self._path.control.append(self._encode(PING, 0, b""))
        self._flush()

    def _peer_dead(self, reason: str) -> None:
        self._close_error = None
        self.abort(reason)

    # -- connection lifecycle ------------------------------------------------

    def connectionMade(self) -> None:
        self._connected = True
        now = self._clock.seconds()
        self.connected_at = now
        self.metrics.record_connection_event("connected")
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self._producing = True
        self._tls = ISSLTransport.providedBy(self.transport)
        self._liveness.start(now)
        if self.engine.unwritten_bytes:
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

    def when_goaway(self) -> Deferred[None]:
        """
        Fires when the server sends GOAWAY (never, if the connection ends
        without one).
        """
        d: Deferred[None] = Deferred()
        self._goaway_waiters.append(d)
        return d

    def close(self, drain: bool = True) -> Deferred[str]:
        """
        Stop taking requests and close the connection.

        :param drain: let outstanding requests finish first (they may still
            time out); otherwise fail them now with ``ConnectionLost``.
        :return: fires with the close reason once the connection is gone.
        """
        waiter = self.when_closed()
        self._closed_by_client = True
        if not drain:
            # Not waiting for anything, the send buffer included: a peer
            # that stopped reading must not hold the close up.
            self.abort("closed by the client without draining")
        elif self._state == _OPEN:
            self._state = _DRAINING
            if not self.engine.live or not self._connected:
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
        if (
            self._state == _OPEN
            and not self._closed_by_client
            and self.health is not None
        ):
            # Lost or found dead (heartbeat, read timeout, black hole,
            # protocol error) while in use, not closed by us or drained after
            # GOAWAY: a failure of the host.
            self.health.failed()
        self._fail_everything(self.close_reason)

    def _fail_everything(self, reason: str) -> None:
        if self._state == _CLOSED and not self._closed_waiters:
            return
        self._state = _CLOSED
        self._connected = False
        self._timer.cancel()
        self._liveness.stop()
        self._black_hole.stop()
        for timer in (self._flush_call, self._write_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._flush_call = self._write_timer = None
        self._path.control = []
        self._goaway_waiters = []
        # Before a TLS handshake completes nothing reaches the server.
        reached_server = not self._tls or self._handshake_done
        self.engine.lose_all(reason, reached_server, self._close_error)
        shakers, self._handshake_waiters = self._handshake_waiters, []
        for h in shakers:
            h.errback(ConnectionLost(False, reason, self._close_error))
        waiters, self._closed_waiters = self._closed_waiters, []
        for d in waiters:
            d.callback(reason)


class FramedClientFactory(ClientFactory):
    """
    Builds :class:`FramedProtocol` instances for any Twisted client endpoint::

        factory = FramedClientFactory(FC1Codec(), request_timeout=5.0)
        proto = await endpoint.connect(factory)
        reply = await proto.request(b"hello")

    Keyword arguments are those of :class:`~framedclient.config.ProtocolConfig`.

    :param owner: given to every protocol built (see :class:`RequestOwner`).
    :param per_connection_metrics: give each protocol a
        :class:`~framedclient.metrics.Metrics` of its own (its requests,
        latency, bytes) instead of sharing
        ``metrics``; ``on_built`` is how the owner finds them.
    :param on_built: called with each protocol built.
    :param health: the health of the host this factory's connections lead
        to, given to each protocol.
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
        owner: RequestOwner | None = None,
        per_connection_metrics: bool = False,
        on_built: Callable[[FramedProtocol], object] | None = None,
        health: HostHealth | None = None,
        **options: Any,
    ) -> None:
        if config is None:
            config = ProtocolConfig(codec=codec or FC1Codec(), **options)
        elif codec is not None or options:
            raise TypeError("pass either config or codec/options, not both")
        self.config = config
        self.clock = clock
        self.metrics = metrics if metrics is not None else Metrics()
        self.owner = owner
        self.per_connection_metrics = per_connection_metrics
        self.on_built = on_built
        self.health = health

    def buildProtocol(self, addr: object) -> FramedProtocol:
        own = self.per_connection_metrics
        proto: FramedProtocol = self.protocol(  # type: ignore[call-arg]
            self.config,
            self.clock,
            Metrics() if own else self.metrics,
            self.owner,
            own,
            self.health,
        )
        proto.factory = self
        if self.on_built is not None:
            self.on_built(proto)
        return proto
