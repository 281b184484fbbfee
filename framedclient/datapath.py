"""
The data path of one connection: what runs for every read and every reply,
in one object that the Twisted adapter holds and forwards to.

:class:`DataPath` is the part of :class:`~framedclient.protocol.FramedProtocol`
that runs per reply: count the bytes, feed the framer, decode each frame,
match it in the :class:`~framedclient.engine.RequestEngine`, and deliver a
reply (counters, host health, the owner's slot, the latency histogram, the
caller's Deferred).  Everything rarer (pings, GOAWAY, stream parts, pushes,
failures, protocol errors) is handed back to the adapter, which owns the
connection's state.

Why a separate object: in compiled mode (docs/design.md, "Compiled mode")
this class is a native mypyc class whose attributes are C struct fields and
whose calls into the framer, codec and engine are direct C calls, while
``FramedProtocol`` must stay an interpreted class (its base is Twisted's
``Protocol``).  The adapter points Twisted's ``dataReceived`` straight at
:meth:`DataPath.data_received`, so a read crosses from interpreted to
compiled code once, and a reply crosses back once (the Deferred's
callbacks).  In pure mode it is a plain class with ``__slots__``; the same
code runs.

It imports nothing from Twisted: the adapter passes its collaborators in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol, final

from framedclient.batch import RequestBatch
from framedclient.codecs.base import ERROR, REPLY
from framedclient.engine import REPLY as REPLIED
from framedclient.engine import RequestEngine
from framedclient.errors import ProtocolError
from framedclient.framer_protocol import Framer
from framedclient.metrics.histogram import LatencyHistogram

__all__ = ["CLOSED", "DRAINING", "OPEN", "DataPath", "DataPathOwner"]

# The frame kinds read on every reply, as Finals: compiled code reads them
# from C statics, not from this module's dict.
_REPLY_KIND: Final[int] = REPLY
_ERROR_KIND: Final[int] = ERROR

# Connection states (the adapter's; kept here, where every read and every
# request checks them).
#: Taking requests.
OPEN: Final = 0
#: No new requests; close once the outstanding ones are done.
DRAINING: Final = 1
#: Ended: reads are ignored.
CLOSED: Final = 2


class DataPathOwner(Protocol):
    """
    What the data path hands back to the adapter that holds it: the rare
    frames and outcomes, whose handling needs the connection's state.
    """

    def other_frame(self, kind: int, request_id: int, body: Any, now: float) -> bool:
        """
        A frame that is neither a reply nor an error reply arrived.

        :return: whether to stop handling this read's frames (the
            connection closed).
        """

    def dropped_reply(self, found: int, request_id: int) -> None:
        """
        A reply was dropped (``found``: the engine's ``LATE`` or
        ``UNKNOWN``).
        """

    def protocol_error(self, error: ProtocolError) -> None:
        """
        The peer broke the protocol: close the connection.
        """

    def receive_done(self) -> None:
        """
        A read was handled and left bytes to write (requests sent from the
        replies' callbacks, pongs): flush them now.
        """

    def failed(self, r: Any, ending: int, value: Any, now: float) -> None:
        """
        The engine settled ``r`` with anything but a reply.
        """

    def send_unit(
        self, batch: RequestBatch, timeout: float | None, idempotent: bool, attempt: int
    ) -> Any:
        """
        Send a :class:`~framedclient.batch.RequestBatch` (see
        :meth:`DataPath.send`).
        """

    def refused(self) -> Any:
        """
        The connection cannot take a request now: the caller's failed
        Deferred, saying why.
        """

    def refused_body(self, error: Exception) -> Any:
        """
        The codec refused a request's body (``error``): the caller's failed
        Deferred.
        """

    def send_cancel(self, request_id: int) -> None:
        """See :class:`~framedclient.engine.EngineActions`."""

    def arm(self, deadline: float) -> None:
        """See :class:`~framedclient.engine.EngineActions`."""

    def idle(self) -> None:
        """See :class:`~framedclient.engine.EngineActions`."""


@final
class DataPath:
    """
    The per-read and per-reply work of one connection (see the module's
    docstring).  It is the engine's
    :class:`~framedclient.engine.EngineActions`: replies are delivered
    here, everything else is passed on to ``owner``.

    :param owner: the adapter (:class:`DataPathOwner`).
    :param framer: the connection's framer.
    :param decode: the codec's ``decode(frame) -> (kind, id, body)``.
    :param seconds: the clock.
    :param metrics: the connection's metrics recorder.
    :param ok_histogram: where a reply's latency goes, when that is all
        ``metrics.record_ok`` would do (a plain
        :class:`~framedclient.metrics.Metrics`: its
        ``ok_histogram``); ``None``: call
        ``metrics.record_ok``.
    :param liveness: the connection's liveness checks (their
        ``last_read`` and ``ping_sent_at`` are updated on every read).
    :param health: the host's health, or ``None``.
    :param settled: the request owner's ``request_settled``, or ``None``.
    :param call_later: the reactor's ``callLater``.
    :param flush: writes what is queued (the adapter's).
    :param request_timeout: the timeout of requests sent without one.
    :param max_write_buffer: bytes that may wait while the transport is
        paused.

    :ivar state: the connection's state (:data:`OPEN`, :data:`DRAINING`,
        :data:`CLOSED`), the adapter's to change.
    :ivar connected: whether the transport is connected.
    :ivar paused: whether the transport paused us as a producer (its
        buffer is full).
    :ivar flush_call: the pending ``callLater`` that writes what is queued,
        or ``None``.
    :ivar in_receive: whether a read is being handled (requests sent from
        reply callbacks are written once, at the end of the read).
    :ivar now: the time the current read was taken at.
    :ivar control: control frames (pongs, cancels, pings) waiting to be
        written, before the requests.
    """

    __slots__ = (
        "_call_later",
        "_decode",
        "_flush",
        "_framer",
        "_health",
        "_liveness",
        "_max_write_buffer",
        "_metrics",
        "_ok_histogram",
        "_owner",
        "_request_timeout",
        "_seconds",
        "_settled",
        "bytes_received",
        "connected",
        "control",
        "engine",
        "flush_call",
        "in_receive",
        "now",
        "ok_count",
        "paused",
        "state",
    )

    def __init__(
        self,
        owner: DataPathOwner,
        framer: Framer,
        decode: Callable[[Any], tuple[int, int, Any]],
        seconds: Callable[[], float],
        metrics: Any,
        ok_histogram: LatencyHistogram | None,
        liveness: Any,
        health: Any,
        settled: Callable[[], None] | None,
        call_later: Callable[..., Any],
        flush: Callable[[], None],
        request_timeout: float | None,
        max_write_buffer: int,
    ) -> None:
        self._owner = owner
        self._framer = framer
        self._decode = decode
        self._seconds = seconds
        self._metrics = metrics
        self._ok_histogram = ok_histogram
        self._liveness = liveness
        self._health = health
        self._settled = settled
        self._call_later = call_later
        self._flush = flush
        self._request_timeout = request_timeout
        self._max_write_buffer = max_write_buffer
        self.state = OPEN
        self.connected = False
        self.paused = False
        self.flush_call: Any = None
        self.in_receive = False
        self.now = 0.0
        self.control: list[bytes] = []
        self.ok_count = 0
        self.bytes_received = 0
        # Set once by attach(): the engine is built with this object as its
        # actions, so it cannot be passed here.
        self.engine: RequestEngine | None = None

    def attach(self, engine: RequestEngine) -> None:
        """
        The engine whose replies this path matches (built with this object
        as its ``actions``).
        """
        self.engine = engine

    # -- the read path ---------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """
        Twisted's ``dataReceived`` for the connection.
        """
        if self.state == CLOSED:
            return
        size = len(data)
        self.bytes_received += size
        self._metrics.add_bytes(size, 0)
        now = self._seconds()
        liveness = self._liveness
        liveness.last_read = now
        liveness.ping_sent_at = None
        self.now = now
        self.in_receive = True
        try:
            try:
                frames = self._framer.feed(data)
            except ProtocolError as e:
                self._handle(e.frames, now)
                self._owner.protocol_error(e)
                return
            self._handle(frames, now)
        finally:
            self.in_receive = False
        engine = self.engine
        assert engine is not None
        if engine.unwritten_bytes or self.control:
            self._owner.receive_done()

    def _handle(self, frames: list[Any], now: float) -> bool:
        # Each frame in turn; false once the connection closed (a callback
        # closed it, or the peer broke the protocol).  A frame is whatever
        # the framer makes and the codec decodes: bytes for most protocols,
        # an already parsed reply for some (RESP), so it is not checked.
        decode = self._decode
        engine = self.engine
        assert engine is not None
        owner = self._owner
        for frame in frames:
            try:
                kind, request_id, body = decode(frame)
            except ProtocolError as e:
                owner.protocol_error(e)
                return False
            if kind == _REPLY_KIND:
                found = engine.reply(request_id, True, body, now)
            elif kind == _ERROR_KIND:
                found = engine.reply(request_id, False, body, now)
            else:
                if owner.other_frame(kind, request_id, body, now):
                    return False
                continue
            if found:
                owner.dropped_reply(found, request_id)
            if self.state == CLOSED:
                # A callback closed the connection; it failed the rest.
                return False
        return True

    # -- the request path ------------------------------------------------------

    def send(
        self,
        body: Any,
        timeout: Any = None,
        idempotent: bool = False,
        attempt: int = 1,
    ) -> Any:
        """
        :meth:`FramedProtocol.send <framedclient.protocol.FramedProtocol.send>`,
        which the adapter points at this method: the request's record (the
        caller's Deferred), or what the owner makes of a refusal.
        """
        if body.__class__ is RequestBatch:
            return self._owner.send_unit(body, timeout, idempotent, attempt)
        try:
            r = self.open(body, timeout, idempotent, attempt)
        except Exception as e:
            # Raised by the codec for bodies it cannot carry (too large for
            # the frame, wrong type): the caller's mistake, nothing sent.
            return self._owner.refused_body(e)
        if r is None:
            return self._owner.refused()
        return r

    def open(self, body: Any, timeout: Any, idempotent: bool, attempt: int) -> Any:
        """
        Open a request when the connection can take it: its record, or
        ``None`` when it cannot (closed, draining, not connected, full, or
        the transport paused with ``max_write_buffer`` bytes waiting).

        :raises: what the codec raises for a body it cannot carry; nothing
            is held then.
        """
        if self.state != OPEN or not self.connected:
            return None
        engine = self.engine
        assert engine is not None
        if engine.live + engine.tombstones >= engine.max_pending:
            return None
        if timeout is None:
            timeout = self._request_timeout
        if self.paused and engine.unwritten_bytes >= self._max_write_buffer:
            return None
        # Requests sent from reply callbacks share the time the replies
        # were read: no clock call per request in a busy connection.
        in_receive = self.in_receive
        now = self.now if in_receive else self._seconds()
        if not engine.live:
            # The read deadline counts from when work starts, not from the
            # last bytes read before an idle period.
            self._liveness.last_read = now
        r = engine.open(body, timeout, now, idempotent, attempt)
        if self.flush_call is None and not in_receive:
            # Everything sent in this reactor turn goes out in one write.
            self.flush_call = self._call_later(0, self._flush)
        return r

    # -- EngineActions ---------------------------------------------------------

    def deliver(self, r: Any, ending: int, value: Any, now: float) -> None:
        """
        The engine settled ``r``: a reply is delivered here, anything else
        by the owner.
        """
        if ending != REPLIED:
            self._owner.failed(r, ending, value, now)
            return
        self.ok_count += 1
        latency = now - r.started
        health = self._health
        if health is not None:
            # The host's latency estimate and success rate (the pick and
            # outlier detection feed on them).
            engine = self.engine
            assert engine is not None
            health.settled(latency, True, now, engine.live)
            if health.failures:
                health.succeeded()
        settled = self._settled
        if settled is not None:
            settled()
        histogram = self._ok_histogram
        if histogram is not None:
            histogram.record(latency)
        else:
            self._metrics.record_ok(latency)
        r.callback(value)

    def send_cancel(self, request_id: int) -> None:
        self._owner.send_cancel(request_id)

    def arm(self, deadline: float) -> None:
        self._owner.arm(deadline)

    def idle(self) -> None:
        self._owner.idle()
