"""
A local multiplexing proxy: many downstream connections, one pool upstream.

Short-lived processes (a CLI, a cron job, a CGI script, a worker that forks
per task) cannot keep connections open to an upstream server, and a
thousand of them each opening their own connection would stampede it.  The
proxy listens locally, speaks the same codec as the upstream, and forwards
every request through one shared
:class:`~framedclient.client.FramedClient`, so those processes cost the
server a few long-lived connections instead of one each.

How a request travels:

- A downstream sends a request with an ID of *its* choosing.  The proxy
  remembers ``downstream ID -> upstream Deferred`` for that downstream only,
  and forwards the body with :meth:`FramedClient.request`; the connection
  that carries it allocates its own fresh ID.  That is the remapping: the
  downstream's ID never leaves the proxy, so any number of downstreams may
  use the same IDs at once.
- When the Deferred fires, the reply (or an error frame) goes back to that
  downstream under its original ID.  Replies reaching one downstream in one
  reactor turn are written with a single ``transport.write``.
- A downstream's CANCEL, or its disconnecting, cancels the upstream
  Deferred: the pool frees the slot at once and tells the server (a cancel
  frame), so work nobody waits for does not hold capacity.

Every downstream is held to its own bounds, so one slow or hostile
downstream cannot hurt the others: a cap on its requests in flight, a cap
on reply bytes buffered for it while it does not read, and a framer that
rejects oversized frames before buffering them.  Breaking the protocol or
the reply bound closes that downstream (and cancels its requests), nothing
else.

The codec must match replies by ID (:attr:`Matching.BY_ID`, as fc1 does):
replies to one downstream may come back in any order, and IDs are how the
downstream tells them apart.
"""

from __future__ import annotations

import math
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from framedclient.client import FramedClient
from framedclient.codecs import (
    CANCEL,
    ERROR,
    GOAWAY,
    PING,
    PONG,
    REPLY,
    REQUEST,
    Codec,
    Matching,
)
from framedclient.errors import (
    OK,
    OUTCOMES,
    FrameTooLarge,
    ProtocolError,
    RemoteError,
    outcome_of,
)

__all__ = ["DownstreamProtocol", "ProxyFactory"]

_log = Logger()

_MiB = 1024 * 1024

#: At most one abuse warning per this many seconds, per factory: a flood of
#: hostile connections must not become a flood of log lines.
_ABUSE_LOG_INTERVAL = 10.0

# Downstream states.  Plain ints: compared for every frame.
_OPEN = 0  # forwarding requests
_DRAINING = 1  # GOAWAY sent: finish in-flight requests, refuse new ones
_CLOSING = 2  # being closed; ignore everything the downstream sends
_CLOSED = 3  # connectionLost ran

#: Request outcome (:data:`~framedclient.errors.OUTCOMES`, read from the
#: error with :func:`~framedclient.errors.outcome_of`) -> the kind that
#: names it in the error frame sent downstream (``"<kind>: <message>"``)
#: and in ``errors_by_kind``.  A server's error reply (``remote_error``) is
#: passed through verbatim and counted as ``remote``.
_OUTCOME_KINDS: dict[str, str] = {
    **{outcome: outcome for outcome in OUTCOMES if outcome != OK},
    "remote_error": "remote",
    "invalid_request": "bad_request",
    "request_too_large": "bad_request",
}

#: Reasons a downstream was closed, as counted in :meth:`ProxyFactory.stats`.
_ABUSE_REASONS = ("protocol_error", "frame_too_large", "reply_buffer_full")


class _Forward:
    """
    One downstream request in flight upstream.

    ``live`` is the single source of truth for "the downstream still wants
    an answer": it is cleared by whoever settles the request first (reply,
    cancel, disconnect), so a callback arriving later does nothing.
    """

    __slots__ = ("deferred", "live", "request_id")

    def __init__(self, request_id: int) -> None:
        self.request_id = request_id
        self.live = True
        self.deferred: Deferred[bytes]


@implementer(IPushProducer)
class DownstreamProtocol(Protocol):
    """
    One local client connection of a :class:`ProxyFactory`.

    It is a push producer registered on its own transport: the transport
    pauses it when the downstream stops reading, and while paused the proxy
    stops reading from the downstream too (so it cannot queue more work
    whose replies would pile up) and buffers replies up to the factory's
    ``max_buffered_replies_bytes``.

    :ivar close_reason: why the proxy closed this downstream, or ``None``
        if the downstream went away by itself (or is still connected).
    """

    factory: ProxyFactory

    def __init__(self, factory: ProxyFactory, peer: str) -> None:
        self.factory = factory
        self.peer = peer
        codec = factory.codec
        self._framer = codec.new_framer()
        self._encode = codec.encode
        self._decode = codec.decode
        self._request = factory.client.request
        self._clock = factory.clock
        self._inflight: dict[int, _Forward] = {}
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._state = _OPEN
        self._paused = False
        self._reading_paused = False
        self._in_receive = False
        self._dirty = False
        self._idle_timer: IDelayedCall | None = None
        self._last_active = 0.0
        self.close_reason: str | None = None

    def __repr__(self) -> str:
        state = ("open", "draining", "closing", "closed")[self._state]
        return (
            f"<DownstreamProtocol {self.peer} {state} "
            f"in_flight={len(self._inflight)} buffered={self._out_bytes}>"
        )

    # -- introspection -------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """
        Requests of this downstream forwarded upstream and not yet answered.
        """
        return len(self._inflight)

    @property
    def buffered_bytes(self) -> int:
        """
        Reply bytes held for this downstream, not yet given to the transport.
        """
        return self._out_bytes

    @property
    def paused(self) -> bool:
        """
        Whether the transport has paused us (the downstream is not reading
        fast enough).
        """
        return self._paused

    # -- connection lifecycle ------------------------------------------------

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self.factory._connected(self)
        timeout = self.factory.idle_timeout
        if timeout is not None:
            self._last_active = self._clock.seconds()
            self._idle_timer = self._clock.callLater(timeout, self._check_idle)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # A FIN counts as "gone": fc1 has no half-close, and a process that
        # exits looks exactly like one that only shut down its write side.
        self._state = _CLOSED
        if self._idle_timer is not None:
            if self._idle_timer.active():
                self._idle_timer.cancel()
            self._idle_timer = None
        self._out = []
        self._out_bytes = 0
        self._abandon_all()
        self.factory._disconnected(self)

    def _abandon_all(self) -> None:
        """
        Cancel every upstream request of this downstream: nobody will read
        the replies, and each one holds a slot in the pool.
        """
        if not self._inflight:
            return
        victims, self._inflight = self._inflight, {}
        factory = self.factory
        for fwd in victims.values():
            if fwd.live:
                fwd.live = False
                factory.abandoned += 1
                factory.in_flight -= 1
                fwd.deferred.cancel()

    def goaway(self) -> None:
        """
        Ask the downstream to go away: send GOAWAY (when the codec has it),
        answer its in-flight requests, refuse new ones, then close.
        """
        if self._state != _OPEN:
            return
        self._state = _DRAINING
        try:
            frame = self._encode(GOAWAY, 0, b"")
        except ValueError:
            pass  # the codec has no GOAWAY; closing after the drain says it
        else:
            self._send(frame)
        self._maybe_finish_draining()

    def _maybe_finish_draining(self) -> None:
        if self._state != _DRAINING or self._inflight or self._in_receive:
            return
        self._flush()
        if self._out:
            return  # paused: resumeProducing comes back here
        self._state = _CLOSING
        # loseConnection waits for buffered writes; a downstream that never
        # reads is aborted by the factory's close timeout.
        self.transport.loseConnection()  # type: ignore[union-attr]

    def abort(self, reason: str) -> None:
        """
        Drop the connection now, without writing what is buffered, after
        cancelling its requests upstream.
        """
        if self._state >= _CLOSING:
            return
        self._state = _CLOSING
        self.close_reason = reason
        self._out = []
        self._out_bytes = 0
        self._abandon_all()
        self.transport.abortConnection()  # type: ignore[union-attr]

    def _close_for_abuse(self, kind: str, detail: str) -> None:
        if self._state >= _CLOSING:
            return
        self.factory._abuse(self, kind, detail)
        self.abort(f"{kind}: {detail}")

    # -- idle timeout --------------------------------------------------------

    def _check_idle(self) -> None:
        self._idle_timer = None
        timeout = self.factory.idle_timeout
        if self._state >= _CLOSING or timeout is None:
            return
        now = self._clock.seconds()
        if self._inflight:
            # Waiting for replies is not idleness; look again one period
            # after they are all answered (each settlement sets the time).
            self._idle_timer = self._clock.callLater(timeout, self._check_idle)
            return
        remaining = self._last_active + timeout - now
        if remaining > 0:
            self._idle_timer = self._clock.callLater(remaining, self._check_idle)
            return
        self.factory.closed_idle += 1
        if self._paused or self._out:
            # It does not read either: a graceful close would never finish.
            self.abort(f"idle for {timeout:g} s with unread replies")
        else:
            self._state = _CLOSING
            self.close_reason = f"idle for {timeout:g} s"
            self.transport.loseConnection()  # type: ignore[union-attr]

    # -- reading -------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._state >= _CLOSING:
            return
        if self._idle_timer is not None:
            self._last_active = self._clock.seconds()
        self._in_receive = True
        try:
            try:
                frames = self._framer.feed(data)
            except FrameTooLarge as e:
                # Frames decoded before the bad one are dropped with the
                # connection: nobody would be there to read their replies.
                self._close_for_abuse("frame_too_large", str(e))
                return
            except ProtocolError as e:
                self._close_for_abuse("protocol_error", str(e))
                return
            self._handle_frames(frames)
        finally:
            self._in_receive = False
        if self._state >= _CLOSING:
            return
        if self._out and not self._paused:
            self._flush()
        if self._state == _DRAINING:
            self._maybe_finish_draining()

    def _handle_frames(self, frames: list[bytes]) -> None:
        decode = self._decode
        encode = self._encode
        inflight = self._inflight
        factory = self.factory
        cap = factory.max_in_flight_per_downstream
        for frame in frames:
            try:
                kind, request_id, body = decode(frame)
            except ProtocolError as e:
                self._close_for_abuse("protocol_error", str(e))
                return
            if kind == REQUEST:
                if self._state != _OPEN:
                    self._refuse(
                        request_id,
                        "unavailable",
                        "the proxy is shutting down and takes no new requests "
                        "on this connection; the request was not sent, "
                        "reconnect and retry",
                    )
                elif request_id in inflight:
                    self._refuse(
                        request_id,
                        "duplicate",
                        f"request id {request_id} is already in flight on this "
                        f"connection; the duplicate was not sent (IDs must be "
                        f"unique among a connection's pending requests)",
                    )
                elif len(inflight) >= cap:
                    self._refuse(
                        request_id,
                        "overloaded",
                        f"this connection has {len(inflight)} requests in "
                        f"flight (max_in_flight_per_downstream={cap}); the "
                        f"request was not sent, wait for replies and retry",
                    )
                else:
                    fwd = _Forward(request_id)
                    # In the table before request(): its Deferred may fire
                    # at once (shed, client closed), and must find it there.
                    inflight[request_id] = fwd
                    factory.forwarded += 1
                    factory.in_flight += 1
                    try:
                        d = self._request(body)
                    except Exception:
                        # A bug below us must cost this request, not the
                        # connection (or a Deferred-less table entry).
                        d = fail()
                    fwd.deferred = d
                    d.addCallbacks(
                        self._replied,
                        self._failed,
                        callbackArgs=(fwd,),
                        errbackArgs=(fwd,),
                    )
            elif kind == PING:
                factory.pings += 1
                self._send(encode(PONG, request_id, body))
            elif kind == CANCEL:
                fwd_or_none = inflight.pop(request_id, None)
                if fwd_or_none is not None and fwd_or_none.live:
                    # Cleared first, so the CancelledError below is ours to
                    # swallow: the downstream abandoned it and expects
                    # nothing back.
                    fwd_or_none.live = False
                    factory.cancels += 1
                    factory.in_flight -= 1
                    fwd_or_none.deferred.cancel()
            elif kind == PONG:
                pass  # harmless; the proxy never pings downstreams
            else:
                # REPLY, ERROR or GOAWAY from a client: it speaks another
                # protocol or has the roles backwards.
                self._close_for_abuse(
                    "protocol_error",
                    f"a client sent a frame of kind {kind}, which only a "
                    f"server may send",
                )
                return
            if self._state >= _CLOSING:
                return

    def _refuse(self, request_id: int, kind: str, detail: str) -> None:
        self.factory._count_error(kind)
        self._send(self._encode(ERROR, request_id, f"{kind}: {detail}".encode()))

    # -- replies -------------------------------------------------------------

    def _replied(self, body: bytes, fwd: _Forward) -> None:
        if not fwd.live:
            return
        fwd.live = False
        del self._inflight[fwd.request_id]
        factory = self.factory
        factory.replies += 1
        factory.in_flight -= 1
        self._settled()
        self._send(self._encode(REPLY, fwd.request_id, body))
        if self._state == _DRAINING:
            self._maybe_finish_draining()

    def _failed(self, failure: Failure, fwd: _Forward) -> None:
        if not fwd.live:
            # Cancelled by us (downstream CANCEL or disconnect): consumed.
            return None
        fwd.live = False
        del self._inflight[fwd.request_id]
        factory = self.factory
        factory.in_flight -= 1
        self._settled()
        error = failure.value
        kind = _OUTCOME_KINDS[outcome_of(error)]
        if isinstance(error, RemoteError):
            # The server's own words, verbatim: the downstream would have
            # seen exactly this had it been connected directly.
            factory._count_error(kind)
            message = error.message
        else:
            if kind == "internal":
                _log.failure(
                    "Unexpected failure forwarding a request for {peer}",
                    failure=failure,
                    peer=self.peer,
                )
            factory._count_error(kind)
            message = f"{kind}: {error}"
        self._send(
            self._encode(ERROR, fwd.request_id, message.encode("utf-8", "replace"))
        )
        if self._state == _DRAINING:
            self._maybe_finish_draining()
        return None

    def _settled(self) -> None:
        if self._idle_timer is not None and not self._inflight:
            self._last_active = self._clock.seconds()

    # -- writing -------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        """
        Queue one frame for the downstream; it is written with everything
        else queued this reactor turn.
        """
        if self._state >= _CLOSING:
            return
        self._out.append(data)
        self._out_bytes += len(data)
        limit = self.factory.max_buffered_replies_bytes
        if self._paused:
            # One reply larger than the bound still gets through on its
            # own; memory stays below the bound plus one frame.
            if self._out_bytes > limit and len(self._out) > 1:
                self._close_for_abuse(
                    "reply_buffer_full",
                    f"{self._out_bytes} bytes of replies wait for a downstream "
                    f"that does not read (max_buffered_replies_bytes={limit})",
                )
            return
        if self._in_receive:
            return  # dataReceived flushes when it is done
        if self._out_bytes >= limit:
            # Hand a large batch over now rather than hold it all turn;
            # if the transport then pauses us, the bound applies from here.
            self._flush()
        elif not self._dirty:
            self._dirty = True
            self.factory._mark_dirty(self)

    def _flush(self) -> None:
        self._dirty = False
        if self._paused or self._state >= _CLOSING or not self._out:
            return
        out = self._out
        data = out[0] if len(out) == 1 else b"".join(out)
        self._out = []
        self._out_bytes = 0
        self.transport.write(data)  # type: ignore[union-attr]

    # -- IPushProducer: the transport's buffer toward the downstream ---------

    def pauseProducing(self) -> None:
        self._paused = True
        if not self._reading_paused and self._state < _CLOSING:
            # Stop taking work from a downstream that does not take its
            # replies: it cannot grow what we hold for it any further than
            # the requests already in flight.
            self._reading_paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        self._paused = False
        if self._state >= _CLOSING:
            return
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]
        self._flush()
        if self._state == _DRAINING:
            self._maybe_finish_draining()

    def stopProducing(self) -> None:
        """
        The transport is going away; ``connectionLost`` follows.
        """


class ProxyFactory(ServerFactory):
    """
    Accepts local downstream connections and forwards their requests
    through ``client``.

    Listen with any server endpoint::

        proxy = ProxyFactory(client)
        port = await serverFromString(reactor, "unix:/run/fc.sock").listen(proxy)
        ...
        await port.stopListening()
        await proxy.close(timeout=5.0)

    Replies go back under the downstream's own request ID.  Failures become
    error frames: a server's error reply passes through verbatim; anything
    else is ``"<kind>: <message>"`` where kind is one of ``overloaded``,
    ``timeout``, ``unavailable``, ``closed``, ``connection_lost``,
    ``cancelled``, ``protocol_error``, ``bad_request``, ``duplicate`` or
    ``internal``, so a downstream can tell "retry later" from "the server
    said no".

    :param client: carries every request upstream; the proxy never touches
        its connections, and does not close it.
    :param codec: the downstream wire format; default: the client's codec.
        It must match replies by ID.
    :param max_in_flight_per_downstream: requests one downstream may have in
        flight; more are answered at once with an ``overloaded`` error
        frame, so one downstream cannot take the whole pool.
    :param max_buffered_replies_bytes: reply bytes held for a downstream
        whose transport is paused (it does not read); past it (with more
        than one reply held) the downstream is aborted and its requests
        cancelled.  A single reply larger than this is still delivered.
    :param idle_timeout: close a downstream that has had nothing in flight
        and sent nothing for this many seconds; ``None`` keeps idle
        downstreams open.
    :param max_downstreams: connections accepted at once; more are closed
        as soon as they are accepted.
    :param clock: time source for write coalescing and idle timeouts; the
        global reactor by default.
    :raises ValueError: for a codec without request IDs, or a bound that
        is not positive.
    """

    noisy = False

    def logPrefix(self) -> str:
        # Twisted logs "<prefix> starting on PORT".
        return "framedclient proxy"

    def __init__(
        self,
        client: FramedClient,
        codec: Codec | None = None,
        *,
        max_in_flight_per_downstream: int = 1024,
        max_buffered_replies_bytes: int = 4 * _MiB,
        idle_timeout: float | None = None,
        max_downstreams: int = 10_000,
        clock: IReactorTime | None = None,
    ) -> None:
        codec = codec if codec is not None else client.codec
        if codec.matching is not Matching.BY_ID:
            raise ValueError(
                f"the proxy needs a codec that matches replies by ID, and "
                f"{codec!r} matches them {codec.matching.value}: replies to "
                f"a downstream could not be told apart"
            )
        _check_positive_int(
            "max_in_flight_per_downstream", max_in_flight_per_downstream
        )
        _check_positive_int("max_buffered_replies_bytes", max_buffered_replies_bytes)
        _check_positive_int("max_downstreams", max_downstreams)
        if idle_timeout is not None and (
            isinstance(idle_timeout, bool)
            or not isinstance(idle_timeout, (int, float))
            or not 0 < idle_timeout < math.inf
        ):
            raise ValueError(
                f"idle_timeout must be a positive number of seconds or None, "
                f"got {idle_timeout!r}"
            )
        if clock is None:
            from twisted.internet import reactor

            clock = reactor  # type: ignore[assignment]
        assert clock is not None
        self.client = client
        self.codec = codec
        self.clock: IReactorTime = clock
        self.max_in_flight_per_downstream = max_in_flight_per_downstream
        self.max_buffered_replies_bytes = max_buffered_replies_bytes
        self.idle_timeout = idle_timeout
        self.max_downstreams = max_downstreams

        #: The connected downstreams (the registry; empty once all are gone).
        self.downstreams: set[DownstreamProtocol] = set()
        self._dirty: list[DownstreamProtocol] = []
        self._flush_call: IDelayedCall | None = None
        self._closing = False
        self._close_waiters: list[Deferred[None]] = []
        self._close_timer: IDelayedCall | None = None
        self._last_abuse_log = -math.inf

        self.accepted = 0
        self.refused = 0
        self.forwarded = 0
        self.in_flight = 0
        self.replies = 0
        self.errors = 0
        self.errors_by_kind: dict[str, int] = {}
        self.cancels = 0
        self.abandoned = 0
        self.pings = 0
        self.closed_for_abuse = 0
        self.closed_by_reason: dict[str, int] = dict.fromkeys(_ABUSE_REASONS, 0)
        self.closed_idle = 0

    def __repr__(self) -> str:
        return (
            f"<ProxyFactory downstreams={len(self.downstreams)} "
            f"in_flight={self.in_flight} codec={self.codec!r}>"
        )

    # Unparameterized base (and this ignore), as in framedclient.server:
    # Factory is only generic in recent Twisted releases.
    def buildProtocol(  # type: ignore[override]
        self, addr: IAddress | None
    ) -> DownstreamProtocol | None:
        if self._closing or len(self.downstreams) >= self.max_downstreams:
            # Returning None makes the port close the connection at once.
            self.refused += 1
            return None
        return DownstreamProtocol(self, _describe(addr))

    # -- introspection -------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """
        A JSON-able snapshot of the proxy.

        ``downstreams`` are connected now; ``in_flight`` are requests
        forwarded and not yet answered.  ``forwarded``, ``replies`` and
        ``errors`` count frames over the proxy's life (errors by kind in
        ``errors_by_kind``: ``remote`` for the server's error replies, the
        others as in the error frames).  ``cancels`` are upstream requests
        cancelled because their downstream sent CANCEL, ``abandoned`` those
        cancelled because their downstream went away.  ``closed_for_abuse``
        counts downstreams the proxy closed for breaking the protocol or
        the reply buffer bound (by reason in ``closed_by_reason``).
        """
        downstreams = self.downstreams
        return {
            "downstreams": len(downstreams),
            "accepted": self.accepted,
            "refused": self.refused,
            "in_flight": self.in_flight,
            "forwarded": self.forwarded,
            "replies": self.replies,
            "errors": self.errors,
            "errors_by_kind": dict(self.errors_by_kind),
            "cancels": self.cancels,
            "abandoned": self.abandoned,
            "pings": self.pings,
            "closed_for_abuse": self.closed_for_abuse,
            "closed_by_reason": dict(self.closed_by_reason),
            "closed_idle": self.closed_idle,
            "paused_downstreams": sum(1 for d in downstreams if d.paused),
            "buffered_bytes": sum(d.buffered_bytes for d in downstreams),
            "closing": self._closing,
        }

    # -- shutdown ------------------------------------------------------------

    def close(self, timeout: float | None = None) -> Deferred[None]:
        """
        Drain and close every downstream: each gets GOAWAY, its in-flight
        requests are answered, new requests get an ``unavailable`` error,
        then it is closed.  From then on, new connections are closed as soon
        as they are accepted (a closed proxy stays closed): stop the
        listening port first.

        :param timeout: after this many seconds, abort the downstreams still
            open and cancel their requests.
        :return: fires once every downstream is gone.  The client is not
            closed: it belongs to the caller.
        """
        self._closing = True
        if not self.downstreams:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._close_waiters.append(d)
        if timeout is not None and self._close_timer is None:
            self._close_timer = self.clock.callLater(timeout, self._close_expired)
        for downstream in list(self.downstreams):
            downstream.goaway()
        return d

    def _close_expired(self) -> None:
        self._close_timer = None
        for downstream in list(self.downstreams):
            downstream.abort("the proxy's close timeout passed")

    # -- called by DownstreamProtocol ----------------------------------------

    def _connected(self, downstream: DownstreamProtocol) -> None:
        self.accepted += 1
        self.downstreams.add(downstream)

    def _disconnected(self, downstream: DownstreamProtocol) -> None:
        self.downstreams.discard(downstream)
        if self._closing and not self.downstreams:
            if self._close_timer is not None:
                if self._close_timer.active():
                    self._close_timer.cancel()
                self._close_timer = None
            waiters, self._close_waiters = self._close_waiters, []
            for d in waiters:
                d.callback(None)

    def _count_error(self, kind: str) -> None:
        self.errors += 1
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1

    def _abuse(self, downstream: DownstreamProtocol, kind: str, detail: str) -> None:
        self.closed_for_abuse += 1
        self.closed_by_reason[kind] = self.closed_by_reason.get(kind, 0) + 1
        now = self.clock.seconds()
        if now - self._last_abuse_log >= _ABUSE_LOG_INTERVAL:
            self._last_abuse_log = now
            _log.warn(
                "Closing downstream {peer} ({kind}): {detail}; its {in_flight} "
                "in-flight requests are cancelled ({count} downstreams closed "
                "for abuse so far)",
                peer=downstream.peer,
                kind=kind,
                detail=detail,
                in_flight=downstream.in_flight,
                count=self.closed_for_abuse,
            )

    def _mark_dirty(self, downstream: DownstreamProtocol) -> None:
        self._dirty.append(downstream)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush_dirty)

    def _flush_dirty(self) -> None:
        # One timer per reactor turn for all downstreams: replies decoded
        # from one upstream read reach each downstream in one write.
        self._flush_call = None
        dirty, self._dirty = self._dirty, []
        for downstream in dirty:
            downstream._flush()


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _describe(addr: IAddress | None) -> str:
    host = getattr(addr, "host", None)
    port = getattr(addr, "port", None)
    if host is not None and port is not None:
        return f"{host}:{port}"
    name = getattr(addr, "name", None)
    if name:
        return str(name)
    return repr(addr)
