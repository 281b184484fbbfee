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
from typing import Any, Protocol, final

from framedclient.codecs.base import ERROR, REPLY
from framedclient.engine import REPLY as REPLIED
from framedclient.engine import RequestEngine
from framedclient.errors import ProtocolError
from framedclient.framer_protocol import Framer

__all__ = ["DataPath", "DataPathOwner"]


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
    :param liveness: the connection's liveness checks (their
        ``last_read`` and ``ping_sent_at`` are updated on every read).
    :param health: the host's health, or ``None``.
    :param settled: the request owner's ``request_settled``, or ``None``.

    :ivar closed: set by the adapter when the connection ends: reads are
        ignored from then on.
    :ivar in_receive: whether a read is being handled (requests sent from
        reply callbacks are written once, at the end of the read).
    :ivar now: the time the current read was taken at.
    :ivar control: control frames (pongs, cancels, pings) waiting to be
        written, before the requests.
    """

    __slots__ = (
        "_decode",
        "_framer",
        "_health",
        "_liveness",
        "_metrics",
        "_owner",
        "_seconds",
        "_settled",
        "bytes_received",
        "closed",
        "control",
        "engine",
        "in_receive",
        "now",
        "ok_count",
    )

    def __init__(
        self,
        owner: DataPathOwner,
        framer: Framer,
        decode: Callable[[bytes], tuple[int, int, Any]],
        seconds: Callable[[], float],
        metrics: Any,
        liveness: Any,
        health: Any,
        settled: Callable[[], None] | None,
    ) -> None:
        self._owner = owner
        self._framer = framer
        self._decode = decode
        self._seconds = seconds
        self._metrics = metrics
        self._liveness = liveness
        self._health = health
        self._settled = settled
        self.closed = False
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
        if self.closed:
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

    def _handle(self, frames: list[bytes], now: float) -> bool:
        # Each frame in turn; false once the connection closed (a callback
        # closed it, or the peer broke the protocol).
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
            if kind == REPLY:
                found = engine.reply(request_id, True, body, now)
            elif kind == ERROR:
                found = engine.reply(request_id, False, body, now)
            else:
                if owner.other_frame(kind, request_id, body, now):
                    return False
                continue
            if found:
                owner.dropped_reply(found, request_id)
            if self.closed:
                # A callback closed the connection; it failed the rest.
                return False
        return True

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
        self._metrics.record_ok(latency)
        r.callback(value)

    def send_cancel(self, request_id: int) -> None:
        self._owner.send_cancel(request_id)

    def arm(self, deadline: float) -> None:
        self._owner.arm(deadline)

    def idle(self) -> None:
        self._owner.idle()

