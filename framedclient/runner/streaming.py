"""
Streamed replies and subscriptions over HTTP: what ``POST /v1/stream`` and
``GET /v1/subscribe`` write, and the rules that bound what a slow HTTP
client can make the gateway hold.

**``POST /v1/stream``** relays one :class:`~framedclient.streams.Stream`
as a chunked response of records, each ``u8 flag · u32 length (big-endian)
· payload``: flag :data:`PART_RECORD` for a part, then exactly one
:data:`END_RECORD` whose payload is JSON, ``{"status": "ok", ...}`` or
``{"status": "error", "error": KIND, ...}``.  HTTP trailers would say the
same, but most HTTP clients (browsers' ``fetch``, curl without
``--raw``, ``treq``) never show them, which is why gRPC-Web carries its
status in a final record too.  So the end, an upstream error after the
first part, and a cut (no end record: the gateway dropped the client or
died) are three different things to the HTTP client.  A stream that fails
before its first part is an ordinary JSON error with its HTTP status, as
``/v1/request`` answers.

**``GET /v1/subscribe``** relays a
:class:`~framedclient.streams.Subscription` as Server-Sent Events: one
``subscribed`` event once the server confirmed, one ``message`` event per
message (JSON data: the channel and the data, as UTF-8 or base64), a
``gap`` event after the upstream connection was replaced, a comment line
every :attr:`StreamLimits.keepalive` seconds so proxies and browsers keep
the connection, and an ``end`` event if the gateway ends it.

**Bounded memory.**  Both relays are ``IPushProducer``\\ s registered on the
request, so the HTTP connection's buffer pauses them:

- a paused *stream* stops pulling parts; the library's stream then buffers
  up to :attr:`StreamLimits.buffer_bytes` and stops its upstream
  connection's reading (TCP pushes back to the server), so a slow reader
  slows the server down instead of growing the gateway.  That hold delays
  the other requests on the same upstream connection, which is why the
  runner gives streams connections of their own
  (``--http-stream-pool-size``) and a client that stays paused for
  :attr:`StreamLimits.stall_timeout` is dropped (its connection aborted,
  its stream cancelled, its bytes freed);
- a paused *subscriber* keeps being fed (every subscriber of the gateway
  shares one upstream connection: one lagging browser must not stop the
  others' messages), into a queue of its own; a queue past
  :attr:`StreamLimits.buffer_bytes` drops the client at once, as Redis
  drops a pub/sub client past its output-buffer limit, and so does staying
  paused for :attr:`StreamLimits.stall_timeout`.

Either way one HTTP client holds at most ``buffer_bytes`` in the gateway,
plus Twisted's own transport buffer (64 KiB) and the one record that
filled it.
"""

from __future__ import annotations

import base64
import json
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from framedclient.streams import END, PushMessage, Stream, Subscription
from framedclient.validation import Count, Seconds, check_argument

__all__ = [
    "DEFAULT_KEEPALIVE",
    "DEFAULT_STALL_TIMEOUT",
    "DEFAULT_STREAM_BUFFER",
    "END_RECORD",
    "PART_RECORD",
    "SSE_CONTENT_TYPE",
    "STREAM_CONTENT_TYPE",
    "StreamCounters",
    "StreamLimits",
    "StreamRelay",
    "SubscriptionRelay",
    "read_records",
    "record",
    "sse_event",
]

_log = Logger()

#: Default bytes one HTTP stream or subscriber may have buffered in the
#: gateway for a client that does not read (the library's own default for
#: a stream's buffer).
DEFAULT_STREAM_BUFFER = 256 * 1024

#: Default seconds an HTTP stream or subscriber may stay paused (its client
#: reading nothing) before it is dropped.  Shorter than the replies'
#: ``--http-write-timeout``: a paused stream holds its upstream
#: connection's reading, which delays every other request on it.
DEFAULT_STALL_TIMEOUT = 10.0

#: Default seconds between two keep-alive comments of an SSE response: under
#: the 30 to 60 s idle timeouts of common proxies and load balancers.
DEFAULT_KEEPALIVE = 15.0

#: The flag of a record that carries one part of the stream.
PART_RECORD = 0x00
#: The flag of the one record that ends the stream (JSON payload).
END_RECORD = 0x80

STREAM_CONTENT_TYPE = b"application/x-framedclient-stream"
SSE_CONTENT_TYPE = b"text/event-stream; charset=utf-8"

_HEADER = struct.Struct(">BI")


def record(flag: int, payload: bytes) -> bytes:
    """
    One record of a ``POST /v1/stream`` response.
    """
    return _HEADER.pack(flag, len(payload)) + payload


def read_records(data: bytes) -> list[tuple[int, bytes]]:
    """
    The records of a whole ``POST /v1/stream`` response body, in order.

    :raises ValueError: for a body that ends inside a record.
    """
    records = []
    offset = 0
    while offset < len(data):
        if offset + _HEADER.size > len(data):
            raise ValueError(f"the body ends inside a record header at {offset}")
        flag, size = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        if offset + size > len(data):
            raise ValueError(f"the body ends inside a {size}-byte record")
        records.append((flag, data[offset : offset + size]))
        offset += size
    return records


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def sse_event(event: str, payload: dict[str, Any]) -> bytes:
    """
    One Server-Sent Event: its type and one ``data`` line of JSON (JSON
    escapes line breaks, so one line always suffices).
    """
    return b"event: " + event.encode("ascii") + b"\ndata: " + _json(payload) + b"\n\n"


def _text_or_base64(name: str, value: bytes) -> dict[str, str]:
    # UTF-8 text as itself, anything else losslessly as base64.
    try:
        return {name: value.decode("utf-8")}
    except UnicodeDecodeError:
        return {name + "_base64": base64.b64encode(value).decode("ascii")}


def message_event(message: PushMessage) -> bytes:
    """
    The SSE event of one subscription item: ``message``, or ``gap`` for the
    marker after a reconnect.
    """
    payload = _text_or_base64("channel", bytes(message.channel))
    if message.gap:
        return sse_event("gap", payload)
    data = message.data
    payload.update(_text_or_base64("data", bytes(data)))
    return sse_event("message", payload)


@attrs.frozen
class StreamLimits:
    """
    What one HTTP stream or subscriber may hold of the gateway.

    :ivar buffer_bytes: bytes buffered for a client that does not read
        (``--http-stream-buffer``).
    :ivar stall_timeout: seconds a client may read nothing before it is
        dropped (``--http-stream-stall-timeout``).
    :ivar keepalive: seconds between two keep-alive comments of an SSE
        response (``--http-sse-keepalive``).
    :raises TypeError, ValueError: for a value out of range, naming it.
    """

    buffer_bytes: int = DEFAULT_STREAM_BUFFER
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    keepalive: float = DEFAULT_KEEPALIVE

    def __attrs_post_init__(self) -> None:
        check_argument(
            Count(1, "BYTES"), "buffer_bytes", self.buffer_bytes, "StreamLimits"
        )
        check_argument(Seconds(), "stall_timeout", self.stall_timeout, "StreamLimits")
        check_argument(Seconds(), "keepalive", self.keepalive, "StreamLimits")


class StreamCounters:
    """
    The gateway's figures for its HTTP streams and subscribers (what
    ``/v1/stats`` and ``/metrics`` show).

    :ivar streams: ``POST /v1/stream`` responses open now.
    :ivar subscribers: ``GET /v1/subscribe`` responses open now.
    :ivar streams_total: streams ever opened.
    :ivar subscribers_total: subscribers ever connected.
    :ivar dropped: clients dropped for reading too slowly (paused past the
        stall timeout, or a subscriber's queue past its buffer).
    """

    def __init__(self) -> None:
        self.streams = 0
        self.subscribers = 0
        self.streams_total = 0
        self.subscribers_total = 0
        self.dropped = 0
        self._open: set[_Relay] = set()

    @property
    def held_bytes(self) -> int:
        """
        Bytes buffered in the gateway for stream and SSE clients now.
        """
        return sum(relay.held_bytes for relay in self._open)

    def as_json(self) -> dict[str, int]:
        return {
            "http_streams": self.streams,
            "http_subscribers": self.subscribers,
            "http_streams_total": self.streams_total,
            "http_subscribers_total": self.subscribers_total,
            "slow_stream_clients_dropped": self.dropped,
            "held_stream_bytes": self.held_bytes,
        }


@implementer(IPushProducer)
class _Relay:
    """
    What both relays share: the producer registration, the stall deadline,
    pulling from upstream one item at a time, and one ending.
    """

    kind = "stream"
    #: Whether pulling goes on while the response is paused: a stream
    #: stops (its parts wait upstream); a subscription, whose connection
    #: is shared, takes what arrives and queues it.
    pull_while_paused = False

    def __init__(
        self,
        request: Any,
        clock: IReactorTime,
        limits: StreamLimits,
        counters: StreamCounters,
    ) -> None:
        self._request = request
        self._clock = clock
        self.limits = limits
        self._counters = counters
        self._paused = False
        self._done = False
        self._stall: IDelayedCall | None = None
        self._waiting = False
        self._pulling = False
        self._again = False

    @property
    def held_bytes(self) -> int:
        raise NotImplementedError

    def _open(self) -> None:
        self._counters._open.add(self)
        self._request.notifyFinish().addErrback(self._gone)
        self._request.registerProducer(self, True)

    # -- IPushProducer --------------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True
        if self._stall is None and not self._done:
            self._stall = self._clock.callLater(
                self.limits.stall_timeout, self._stalled
            )

    def resumeProducing(self) -> None:
        self._paused = False
        self._cancel_stall()
        if not self._done:
            self._resumed()

    def stopProducing(self) -> None:
        self._close(written=False)

    # -- pulling --------------------------------------------------------------

    def _next(self) -> Deferred[Any]:
        """The upstream's next item (``END`` at its end)."""
        raise NotImplementedError

    def _got(self, item: Any) -> None:
        """An item came while the relay is open."""
        raise NotImplementedError

    def _failed(self, failure: Failure) -> None:
        """The upstream failed while the relay is open."""
        raise NotImplementedError

    def _pull(self) -> None:
        # A trampoline: next() fires at once while items are buffered, and
        # taking each from inside the previous one's callback would recurse
        # once per buffered item.
        if self._pulling:
            self._again = True
            return
        self._pulling = True
        try:
            while not (
                self._done
                or self._waiting
                or (self._paused and not self.pull_while_paused)
            ):
                self._again = False
                self._waiting = True
                self._next().addCallbacks(self._arrived, self._broke)
                if not self._again:
                    break
        finally:
            self._pulling = False

    def _arrived(self, item: Any) -> None:
        self._waiting = False
        if not self._done:
            self._got(item)

    def _broke(self, failure: Failure) -> None:
        self._waiting = False
        if not self._done:
            self._failed(failure)

    # -- endings --------------------------------------------------------------

    def _resumed(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        """
        Give back what this relay holds upstream and in memory.
        """
        raise NotImplementedError

    def _stalled(self) -> None:
        self._stall = None
        self._drop(
            "read nothing for {seconds:g} s (--http-stream-stall-timeout)",
            seconds=self.limits.stall_timeout,
        )

    def _drop(self, why: str, **fields: Any) -> None:
        if self._done:
            return
        self._counters.dropped += 1
        _log.info(
            "Dropped a slow HTTP {kind} client that " + why,
            kind=self.kind,
            **fields,
        )
        transport = getattr(self._request, "transport", None)
        self._close(written=False)
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()

    def _gone(self, _: Failure) -> None:
        self._close(written=False)

    def _cancel_stall(self) -> None:
        stall, self._stall = self._stall, None
        if stall is not None and stall.active():
            stall.cancel()

    def _close(self, written: bool) -> None:
        """
        The one ending: counted once, everything given back; the response
        finished when ``written``.
        """
        if self._done:
            return
        self._done = True
        self._cancel_stall()
        self._counters._open.discard(self)
        self._release()
        request = self._request
        if getattr(request, "channel", None) is not None:
            request.unregisterProducer()
            if written:
                request.finish()


class StreamRelay(_Relay):
    """
    Writes one upstream stream to one HTTP response (see the module
    docstring), pulling a part only while the response is not paused.

    :param early_error: answers the HTTP request for a stream that failed
        before anything was written (the usual JSON error and status).
    :param error_payload: the end record's JSON for a stream that failed
        after its first part.
    """

    def __init__(
        self,
        request: Any,
        stream: Stream,
        clock: IReactorTime,
        limits: StreamLimits,
        counters: StreamCounters,
        early_error: Callable[[Failure], None],
        error_payload: Callable[[Failure], dict[str, Any]],
    ) -> None:
        super().__init__(request, clock, limits, counters)
        self._stream = stream
        self._early_error = early_error
        self._error_payload = error_payload
        self._started = False
        #: parts and bytes written to the client
        self.parts = 0
        self.bytes = 0

    @property
    def held_bytes(self) -> int:
        return self._stream.buffered_bytes

    def start(self) -> None:
        counters = self._counters
        counters.streams += 1
        counters.streams_total += 1
        self._open()
        self._pull()

    def _resumed(self) -> None:
        self._pull()

    def _next(self) -> Deferred[Any]:
        return self._stream.next()

    def _begin(self) -> None:
        if not self._started:
            self._started = True
            request = self._request
            request.setResponseCode(200)
            request.setHeader(b"content-type", STREAM_CONTENT_TYPE)
            request.setHeader(b"cache-control", b"no-store")
            request.setHeader(b"x-content-type-options", b"nosniff")

    def _got(self, item: Any) -> None:
        if item is END:
            self._end({"status": "ok", "parts": self.parts, "bytes": self.bytes})
            return
        part = bytes(item)
        self._begin()
        self.parts += 1
        self.bytes += len(part)
        self._request.write(record(PART_RECORD, part))
        self._pull()

    def _failed(self, failure: Failure) -> None:
        if not self._started:
            self._close(written=False)
            self._early_error(failure)
            return
        self._end(
            {"status": "error", "parts": self.parts, **self._error_payload(failure)}
        )

    def _end(self, payload: dict[str, Any]) -> None:
        self._begin()
        self._request.write(record(END_RECORD, _json(payload)))
        self._close(written=True)

    def _release(self) -> None:
        self._counters.streams -= 1
        # Cancels upstream (fc1's CANCEL) and drops what is buffered; does
        # nothing to a stream that has finished.
        self._stream.cancel()


class SubscriptionRelay(_Relay):
    """
    Writes one subscription to one HTTP response as Server-Sent Events (see
    the module docstring).  It always takes what arrives (the subscription
    connection is shared) and queues it while the response is paused.

    :param end_payload: the ``end`` event's JSON for a subscription that
        ended from the gateway's side (``ClientClosed`` while stopping, a
        refused subscribe).
    """

    kind = "subscriber"
    pull_while_paused = True

    def __init__(
        self,
        request: Any,
        subscription: Subscription,
        clock: IReactorTime,
        limits: StreamLimits,
        counters: StreamCounters,
        end_payload: Callable[[Failure], dict[str, Any]],
    ) -> None:
        super().__init__(request, clock, limits, counters)
        self._sub = subscription
        self._end_payload = end_payload
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._keepalive: IDelayedCall | None = None
        #: message events delivered to the response (written or queued)
        self.messages = 0

    @property
    def held_bytes(self) -> int:
        return self._queued + self._sub.buffered_bytes

    def start(self) -> None:
        counters = self._counters
        counters.subscribers += 1
        counters.subscribers_total += 1
        request = self._request
        request.setResponseCode(200)
        request.setHeader(b"content-type", SSE_CONTENT_TYPE)
        request.setHeader(b"cache-control", b"no-store")
        # Tell buffering reverse proxies (nginx) to pass events at once.
        request.setHeader(b"x-accel-buffering", b"no")
        self._open()
        # The headers go now: an EventSource reports the connection open.
        self._send(b": subscribing\n\n")
        self._sub.when_subscribed().addCallbacks(self._subscribed, lambda _: None)
        self._arm_keepalive()
        self._pull()

    def _subscribed(self, _: object) -> None:
        if not self._done:
            self._send(
                sse_event(
                    "subscribed",
                    {
                        "topics": [
                            t.decode("utf-8", "replace") for t in self._sub.topics
                        ]
                    },
                )
            )

    def _next(self) -> Deferred[Any]:
        return self._sub.next()

    def _got(self, item: Any) -> None:
        if item is END:
            self._finish_with(sse_event("end", {"reason": "unsubscribed"}))
            return
        if not item.gap:
            self.messages += 1
        self._send(message_event(item))
        self._pull()

    def _failed(self, failure: Failure) -> None:
        self._finish_with(sse_event("end", self._end_payload(failure)))

    def _finish_with(self, event: bytes) -> None:
        # The last event goes after what is queued, whether or not the
        # client reads (all of it within the buffer's bound), then the end.
        queue, self._queue = self._queue, deque()
        self._queued = 0
        for queued in queue:
            self._request.write(queued)
        self._request.write(event)
        self._close(written=True)

    def _send(self, event: bytes) -> None:
        if self._done:
            return
        if not self._paused and not self._queue:
            self._request.write(event)
            return
        self._queue.append(event)
        self._queued += len(event)
        if self._queued > self.limits.buffer_bytes:
            self._drop(
                "fell {queued} bytes behind (--http-stream-buffer {limit})",
                queued=self._queued,
                limit=self.limits.buffer_bytes,
            )

    def _resumed(self) -> None:
        queue = self._queue
        while queue and not self._paused and not self._done:
            event = queue.popleft()
            self._queued -= len(event)
            self._request.write(event)
        if self._done and self._queue:
            self._queue.clear()
            self._queued = 0

    def _arm_keepalive(self) -> None:
        self._keepalive = self._clock.callLater(self.limits.keepalive, self._ping)

    def _ping(self) -> None:
        self._keepalive = None
        if self._done:
            return
        if not self._paused:
            # A comment: EventSource ignores it, proxies see traffic.
            self._send(b": keep-alive\n\n")
        self._arm_keepalive()

    def _release(self) -> None:
        self._counters.subscribers -= 1
        keepalive, self._keepalive = self._keepalive, None
        if keepalive is not None and keepalive.active():
            keepalive.cancel()
        self._queue.clear()
        self._queued = 0
        if not self._sub.finished:
            self._sub.unsubscribe().addErrback(
                lambda f: _log.failure("Unsubscribing a gone SSE client", f)
            )
