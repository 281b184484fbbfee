"""
Streams and subscriptions: replies that come in many parts, and messages
that answer no request.

A :class:`Stream` is one request whose reply arrives as parts (``PART``
frames, then a final REPLY or ERROR); a :class:`Subscription` receives the
``PUSH`` frames of its topics.  Both sit between a connection and one consumer as a
bounded buffer (:class:`Feed`): the consumer takes items with ``async for``
(or :meth:`Feed.next` / :meth:`Feed.consume` with callbacks), and a
consumer that lags stops the connection's reading once its buffer holds
``buffer_bytes`` (:meth:`~framedclient.protocol.FramedProtocol.hold_reading`)
instead of letting memory grow.  The rules, and what they cost other
requests on the same connection, are in ``docs/streams.md``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from framedclient.codecs import Message, Push
from framedclient.errors import ClientClosed, ConnectionLost, RequestTimeout

if TYPE_CHECKING:
    from framedclient.dispatch import Dispatcher
    from framedclient.protocol import FramedProtocol

__all__ = [
    "DEFAULT_BUFFER_BYTES",
    "Feed",
    "PushMessage",
    "Stream",
    "Subscription",
    "Subscriptions",
    "open_stream",
]

#: Bytes a stream or subscription buffers for a lagging consumer before the
#: connection stops reading.
DEFAULT_BUFFER_BYTES = 256 * 1024

_END: Any = object()


class Feed:
    """
    A bounded buffer between one connection and one consumer.

    Items come out in the order they went in, each exactly once; then the
    end (``async for`` stops) or an error (raised), which are distinct.
    One consumer at a time: a second :meth:`next` while one waits fails.

    :ivar buffered_bytes: bytes of the items not taken yet.
    """

    def __init__(self, clock: IReactorTime, buffer_bytes: int) -> None:
        self._clock = clock
        self._limit = buffer_bytes
        self._items: deque[Any] = deque()
        self.buffered_bytes = 0
        self._waiter: Deferred[Any] | None = None
        # Whether the waiter is async for's (the end is StopAsyncIteration)
        # or next()'s (the end is END).
        self._iterating = False
        # None while open; _END or the Failure once finished.
        self._done: Any = None
        self._proto: FramedProtocol | None = None
        self._holding = False
        # consume(): the callback items go to directly, the Deferred it
        # returned, whether the callback's last Deferred is pending, and
        # whether buffered items are being handed to it now.
        self._consumer: Callable[[Any], object] | None = None
        self._consumed: Deferred[None] | None = None
        self._busy = False
        self._pumping = False

    @property
    def buffered(self) -> int:
        """
        Items received and not taken yet.
        """
        return len(self._items)

    @property
    def finished(self) -> bool:
        """
        Whether nothing more will be added (ended, failed or cancelled).
        """
        return self._done is not None

    @property
    def holding(self) -> bool:
        """
        Whether this feed keeps its connection from reading (its buffer is
        full).
        """
        return self._holding

    # -- the connection's side -------------------------------------------------

    def _put(self, item: Any, size: int) -> None:
        consumer = self._consumer
        if consumer is not None and not self._busy and not self._items:
            # A callback consumer that is ready: no buffer, no Deferred.
            self._deliver(consumer, item)
            return
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.callback(item)
            return
        self._items.append(item)
        self.buffered_bytes += size
        if self.buffered_bytes >= self._limit and not self._holding:
            proto = self._proto
            if proto is not None:
                self._holding = True
                proto.hold_reading()

    def _finish(self, result: Any) -> None:
        if self._done is not None:
            return
        self._done = result
        # Nothing more comes for this feed: holding its connection's reading
        # would only delay everyone else.
        self._release()
        waiter = self._waiter
        if waiter is not None and not self._items:
            self._waiter = None
            if result is not _END:
                waiter.errback(result)
            elif self._iterating:
                waiter.errback(StopAsyncIteration())
            else:
                waiter.callback(_END)
        if self._consumer is not None and not self._busy and not self._items:
            self._end_consuming()

    def _release(self) -> None:
        if self._holding:
            self._holding = False
            if self._proto is not None:
                self._proto.release_reading()

    def _move(self, proto: FramedProtocol | None) -> None:
        # The feed now reads from another connection (a subscription after a
        # reconnect): a hold belongs to the connection it was taken on.
        self._release()
        self._proto = proto

    def _drop(self) -> None:
        self._items.clear()
        self.buffered_bytes = 0
        self._release()

    # -- the consumer's side ---------------------------------------------------

    def next(self) -> Deferred[Any]:
        """
        The next item: a Deferred that fires with it, with the end marker
        :data:`END` once the feed has ended, or fails with the feed's error
        (``CancelledError`` after :meth:`Stream.cancel`).
        """
        return self._next(False)

    def __anext__(self) -> Deferred[Any]:
        # A Deferred is awaitable: ``async for`` awaits it directly, without
        # a coroutine per item; the end is the StopAsyncIteration it expects.
        return self._next(True)

    def _next(self, iterating: bool) -> Deferred[Any]:
        if self._consumer is not None:
            return fail(
                RuntimeError(
                    "this stream is being consumed with consume(); a stream or "
                    "subscription has one consumer"
                )
            )
        items = self._items
        if items:
            item = items.popleft()
            self.buffered_bytes -= self._size(item)
            if self._holding and self.buffered_bytes <= self._limit // 2:
                self._release()
            if not items:
                self._emptied()
            return succeed(item)
        done = self._done
        if done is not None:
            if done is not _END:
                return fail(done)
            return fail(StopAsyncIteration()) if iterating else succeed(_END)
        if self._waiter is not None:
            return fail(
                RuntimeError(
                    "this stream already has a consumer waiting; a stream or "
                    "subscription has one consumer: await each next() first"
                )
            )
        d: Deferred[Any] = Deferred(self._consumer_gave_up)
        self._waiter = d
        self._iterating = iterating
        return d

    def _consumer_gave_up(self, d: Deferred[Any]) -> None:
        if self._waiter is d:
            self._waiter = None

    def _size(self, item: Any) -> int:
        return len(item)

    def _emptied(self) -> None:
        """
        The consumer took the last buffered item.
        """

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    def consume(self, on_item: Callable[[Any], object]) -> Deferred[None]:
        """
        Call ``on_item(item)`` for every item, in order; if it returns a
        Deferred, wait for it before the next (so a slow callback slows the
        feed, with the same flow control as ``async for``).  Items go to a
        ready callback as they arrive, with no Deferred each: the cheapest
        way to read a busy subscription.

        :return: fires with ``None`` at the end, or fails with the error
            (the feed's, or the one ``on_item`` raised or failed with,
            which stops the consuming).  Cancelling it stops the consuming.
        """
        if self._consumer is not None or self._waiter is not None:
            return fail(
                RuntimeError(
                    "this stream already has a consumer; a stream or "
                    "subscription has one consumer"
                )
            )
        d: Deferred[None] = Deferred(self._consume_cancelled)
        self._consumer = on_item
        self._consumed = d
        self._pump()
        if not self._items and not self._busy and self._done is not None:
            self._end_consuming()
        return d

    def _deliver(self, consumer: Callable[[Any], object], item: Any) -> None:
        try:
            result = consumer(item)
        except BaseException:
            self._stop_consuming(Failure())  # type: ignore[no-untyped-call]
            return
        if isinstance(result, Deferred):
            self._busy = True
            result.addCallbacks(self._consumer_ready, self._stop_consuming)

    def _consumer_ready(self, _: object) -> None:
        self._busy = False
        if self._pumping or self._consumer is None:
            return
        self._pump()
        if not self._items and not self._busy and self._done is not None:
            self._end_consuming()

    def _pump(self) -> None:
        # Hand the buffered items to the callback until it is busy.
        self._pumping = True
        try:
            items = self._items
            while items and not self._busy:
                consumer = self._consumer
                if consumer is None:
                    return
                item = items.popleft()
                self.buffered_bytes -= self._size(item)
                if self._holding and self.buffered_bytes <= self._limit // 2:
                    self._release()
                if not items:
                    self._emptied()
                self._deliver(consumer, item)
        finally:
            self._pumping = False

    def _end_consuming(self) -> None:
        d, self._consumed = self._consumed, None
        self._consumer = None
        if d is not None:
            done = self._done
            d.callback(None) if done is _END else d.errback(done)

    def _stop_consuming(self, failure: Failure) -> None:
        self._busy = False
        self._consumer = None
        d, self._consumed = self._consumed, None
        if d is not None:
            d.errback(failure)

    def _consume_cancelled(self, d: Deferred[None]) -> None:
        if self._consumed is d:
            self._consumed = None
            self._consumer = None
            self._busy = False


#: What :meth:`Feed.next` fires with once the feed has ended.
END = _END


def _check_buffer_bytes(value: object, where: str) -> int:
    if value.__class__ is not int or not 1 <= value <= 2**40:  # type: ignore[operator]
        check_argument_int(value, where)
    return value  # type: ignore[return-value]


def check_argument_int(value: object, where: str) -> None:
    """
    Raise the error for a ``buffer_bytes`` that is not a positive int.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(
            f"{where}: buffer_bytes must be an int (bytes buffered for a lagging "
            f"consumer before reading stops), got {value!r}"
        )
    raise ValueError(
        f"{where}: buffer_bytes must be at least 1 (bytes buffered for a "
        f"lagging consumer before reading stops), got {value!r}"
    )


class Stream(Feed):
    """
    The parts of one request's reply, for one consumer: what
    :meth:`FramedClient.stream() <framedclient.client.FramedClient.stream>`
    returns.

    Iterate it with ``async for part in stream`` inside a coroutine driven
    by ``ensureDeferred``, or consume it with callbacks (:meth:`consume`).
    Each part arrives in order, exactly once.  The stream ends after the
    final reply (whose body, when not empty, is the last part); an error
    reply, a lost connection or the idle timeout raise instead.  The
    request's ID stays held until then, and :meth:`cancel` stops it (fc1
    sends CANCEL; the server's answer frees the ID).

    :ivar request_id: the ID on the connection, once sent.
    :ivar idle_timeout: seconds the stream may wait for its next part with
        nothing buffered (``None``: forever).
    """

    def __init__(
        self, clock: IReactorTime, idle_timeout: float | None, buffer_bytes: int
    ) -> None:
        super().__init__(clock, buffer_bytes)
        self.idle_timeout = idle_timeout
        self.request_id: int | None = None
        self._request: Deferred[Any] | None = None
        self._acquiring: Deferred[Any] | None = None
        # A limiter slot taken for it and not yet handed to a connection.
        self._slot = False
        self._timer: IDelayedCall | None = None
        self._idle_from = 0.0
        self._cancelled = False
        # The open streams of its client (for debug_state), left at the end.
        self._registry: set[Stream] | None = None

    def __repr__(self) -> str:
        state = "finished" if self._done is not None else "open"
        return (
            f"<Stream id={self.request_id} {state} buffered={len(self._items)} "
            f"({self.buffered_bytes} bytes)>"
        )

    @property
    def timer_active(self) -> bool:
        """
        Whether an idle timer is armed for this stream.
        """
        return self._timer is not None

    def _attach(self, proto: FramedProtocol, body: bytes | Message) -> None:
        # The slot goes with the request: the connection gives it back.
        self._acquiring = None
        self._slot = False
        self._proto = proto
        d = proto.open_stream(body, self._on_part)
        request_id = getattr(d, "request_id", None)
        if request_id is not None:
            self.request_id = request_id
            self._request = d
            self._idle_from = self._clock.seconds()
            if self.idle_timeout is not None:
                self._timer = self._clock.callLater(self.idle_timeout, self._idle_check)
        d.addCallbacks(self._ended, self._failed)

    def _finish(self, result: Any) -> None:
        # Off the books before the consumer hears of the end: its code may
        # look at them at once.
        registry, self._registry = self._registry, None
        if registry is not None:
            registry.discard(self)
        super()._finish(result)

    def _on_part(self, part: Any, now: float) -> None:
        self._idle_from = now
        self._put(part, len(part))

    def _ended(self, final: Any) -> None:
        self._request = None
        self._stop_timer()
        if len(final):
            self._put(final, len(final))
        self._finish(_END)

    def _failed(self, failure: Failure) -> None:
        self._request = None
        self._stop_timer()
        if self._cancelled and failure.check(CancelledError):  # type: ignore[no-untyped-call]
            return
        self._finish(failure)

    def _emptied(self) -> None:
        # The idle time counts from when the consumer is ready for more.
        self._idle_from = self._clock.seconds()

    def _idle_check(self) -> None:
        self._timer = None
        if self._done is not None:
            return
        timeout = self.idle_timeout
        assert timeout is not None
        now = self._clock.seconds()
        if self._items:
            # The consumer lags: the server is not the one to blame.
            self._timer = self._clock.callLater(timeout, self._idle_check)
            return
        left = self._idle_from + timeout - now
        if left > 1e-9:
            self._timer = self._clock.callLater(left, self._idle_check)
            return
        error = RequestTimeout(
            timeout,
            f"no part of the stream within {timeout:g} s (idle_timeout) while "
            f"its consumer waited; the server is slow or stuck",
        )
        self._abandon(Failure(error))  # type: ignore[no-untyped-call]

    def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def cancel(self) -> None:
        """
        Stop the stream: the buffered parts are dropped, the consumer's
        next item fails with ``CancelledError``, and the server is told
        (fc1's CANCEL) so it stops sending.  Nothing happens once the
        stream has finished.
        """
        if self._done is None:
            self._abandon(Failure(CancelledError()))  # type: ignore[no-untyped-call]

    def _abandon(self, failure: Failure) -> None:
        self._cancelled = True
        self._stop_timer()
        self._drop()
        self._finish(failure)
        acquiring, self._acquiring = self._acquiring, None
        if acquiring is not None:
            acquiring.cancel()
        request, self._request = self._request, None
        if request is not None:
            request.cancel()


def open_stream(
    dispatcher: Dispatcher,
    clock: IReactorTime,
    when_ready: Callable[[], Deferred[None]],
    body: bytes | Message,
    idle_timeout: float | None = None,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    registry: set[Stream] | None = None,
) -> Stream:
    """
    Send ``body`` as a streamed request on a connection of the pool; it
    takes a slot of the limiter (``max_in_flight``) until it ends, waiting
    for one like any request, and waits for a ready connection (``when_ready``)
    for at most ``idle_timeout`` (then ``Unavailable``).

    :param idle_timeout: seconds the stream may wait for its next part
        while nothing is buffered (``None``: no limit); then it fails with
        ``RequestTimeout`` and is cancelled.
    :param buffer_bytes: bytes buffered for a lagging consumer before the
        connection stops reading.
    :param registry: holds the stream until it has finished (what a
        client's ``debug_state()`` counts).
    :raises TypeError, ValueError: for a bad argument, naming it.
    """
    if not isinstance(body, bytes | Message):
        raise TypeError(
            f"stream(): body must be bytes (or a Message for codecs with header "
            f"fields), got {type(body).__name__}"
        )
    if idle_timeout is not None:
        check_argument_seconds(idle_timeout)
    _check_buffer_bytes(buffer_bytes, "stream()")
    stream = Stream(clock, idle_timeout, buffer_bytes)
    if registry is not None:
        registry.add(stream)
        stream._registry = registry
    proto = dispatcher.pool.take()
    if proto is not None:
        stream._attach(proto, body)
        return stream

    def acquired(_: object) -> Deferred[None] | None:
        picked = dispatcher.pool.pick()
        if picked is not None:
            stream._attach(picked, body)
            return None
        # No connection is ready yet (the client is starting, or every host
        # is down): wait for one, for at most the idle timeout.
        ready = when_ready()
        stream._acquiring = ready
        if idle_timeout is not None:
            ready.addTimeout(idle_timeout, clock)
        return ready.addCallback(acquired)

    def failed(failure: Failure) -> None:
        stream._acquiring = None
        if stream._slot:
            stream._slot = False
            dispatcher.limiter.release()
        if failure.check(CancelledError, defer.TimeoutError):  # type: ignore[no-untyped-call]
            if stream._done is None:
                failure = Failure(dispatcher.unavailable(idle_timeout))  # type: ignore[no-untyped-call]
            else:
                return
        stream._finish(failure)

    def slot(_: object) -> Deferred[None] | None:
        stream._slot = True
        return acquired(None)

    d = dispatcher.limiter.acquire()
    stream._acquiring = d
    d.addCallback(slot).addErrback(failed)
    return stream


def check_argument_seconds(value: object) -> None:
    """
    Raise the error for an ``idle_timeout`` that is not a positive number.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"stream(): idle_timeout must be a number of seconds or None, got {value!r}"
        )
    if not 0 < value < math.inf:
        raise ValueError(
            f"stream(): idle_timeout must be a positive, finite number of "
            f"seconds (or None for no limit), got {value!r}"
        )


class PushMessage:
    """
    One item of a subscription.

    :ivar channel: the topic (channel) it was published to.
    :ivar data: the payload (``b""`` for a gap marker).
    :ivar gap: true for the marker a subscription yields after a
        reconnect: messages published meanwhile may have been missed.
    """

    __slots__ = ("channel", "data", "gap")

    def __init__(self, channel: bytes, data: Any, gap: bool = False) -> None:
        self.channel = channel
        self.data = data
        self.gap = gap

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        if self.gap:
            return f"PushMessage(channel={self.channel!r}, gap=True)"
        return f"PushMessage(channel={self.channel!r}, data={self.data!r})"


class Subscription(Feed):
    """
    The messages of one or more topics, for one consumer: what
    :meth:`FramedClient.subscribe() <framedclient.client.FramedClient.subscribe>`
    returns.  Iterate it with ``async for message in sub``; each item is a
    :class:`PushMessage`.  After the connection carrying it is lost, it is
    subscribed again on a new one and yields one marker with ``gap`` true
    first.  :meth:`unsubscribe` ends it.

    :ivar topics: what it is subscribed to (channels, or patterns).
    """

    def __init__(
        self,
        owner: Subscriptions,
        topics: tuple[bytes, ...],
        clock: IReactorTime,
        limit: int,
    ) -> None:
        super().__init__(clock, limit)
        self.topics = topics
        self._owner = owner
        self._unconfirmed = set(topics)
        self._subscribed: Deferred[None] = Deferred()
        self._gap = False

    @property
    def topic(self) -> bytes:
        """
        The first of ``topics``.
        """
        return self.topics[0]

    def __repr__(self) -> str:
        return f"<Subscription {list(self.topics)!r} buffered={len(self._items)}>"

    def when_subscribed(self) -> Deferred[None]:
        """
        Fires once the server has confirmed every topic (the first time);
        messages published after that reach it.  Fails if the server
        refused one.
        """
        d: Deferred[None] = Deferred()
        self._subscribed.addBoth(_relay, d)
        return d

    def _confirm(self, topic: bytes) -> None:
        if self._gap:
            # Once per reconnect, before anything from the new connection.
            self._gap = False
            self._put(PushMessage(topic, b"", True), 0)
        self._unconfirmed.discard(topic)
        if not self._unconfirmed and not self._subscribed.called:
            self._subscribed.callback(None)

    def _refused(self, failure: Failure) -> None:
        self._finish(failure)
        if not self._subscribed.called:
            self._subscribed.errback(failure)

    def unsubscribe(self) -> Deferred[None]:
        """
        Stop delivery: iteration ends (what was buffered is dropped) and,
        for each topic no other subscription of the client wants, the
        server is told.  Fires once done.
        """
        return self._owner._remove(self)


def _relay(result: object, d: Deferred[None]) -> object:
    if isinstance(result, Failure):
        d.errback(result)
    else:
        d.callback(None)
    return result


def _fc1_subscribe(topic: bytes) -> bytes:
    return b"!subscribe:" + topic


def _fc1_unsubscribe(topic: bytes) -> bytes:
    return b"!unsubscribe:" + topic


class Subscriptions:
    """
    The subscriptions of one client, and the door to its streams
    (``FramedClient.stream`` and ``.subscribe`` are this object's
    methods).  Subscriptions share one connection of the pool (the first
    one picked), where the subscribe commands went; when it is lost, every
    topic is subscribed again on a new connection and each subscription
    gets a gap marker.

    :param commands: ``(subscribe, unsubscribe)``: the request body for
        each, given a topic (fc1's reference server by default).
    :param check: raises for a topic the commands cannot carry, and returns
        it as bytes.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        clock: IReactorTime,
        when_ready: Callable[[], Deferred[None]],
        commands: tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]] = (
            _fc1_subscribe,
            _fc1_unsubscribe,
        ),
        timeout: float = 10.0,
        check: Callable[[object], bytes] | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._clock = clock
        self._when_ready = when_ready
        #: ``(subscribe, unsubscribe)``: the request body of each, for a topic
        self.commands = commands
        self._timeout = timeout
        #: returns a topic as bytes, or raises for one ``commands`` cannot carry
        self.check = check or check_topic
        self._by_topic: dict[bytes, list[Subscription]] = {}
        self.proto: FramedProtocol | None = None
        self._connecting = False
        self._closed = False
        #: times the subscriptions moved to a new connection
        self.reconnects = 0
        # The streams not finished yet (debug_state's books).
        self._streams: set[Stream] = set()

    def stream(
        self,
        body: bytes | Message,
        idle_timeout: float | None = None,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    ) -> Stream:
        """
        :func:`open_stream` on this client's connections.
        """
        return open_stream(
            self._dispatcher,
            self._clock,
            self._when_ready,
            body,
            idle_timeout,
            buffer_bytes,
            self._streams,
        )

    def debug_state(self) -> dict[str, int]:
        """
        The books of the client's streams and subscriptions, where a leak
        shows up: streams not finished yet, their idle timers, the parts
        and bytes they buffer for consumers that lag (a finished stream's
        unread parts are its consumer's, and not counted), the
        subscriptions, their topics and what they buffer, and how many of
        these hold their connection's reading.
        """
        streams = self._streams
        subs = {id(s): s for subs in self._by_topic.values() for s in subs}
        feeds = [*streams, *subs.values()]
        return {
            "streams_open": len(streams),
            "stream_timers": sum(s.timer_active for s in streams),
            "stream_buffered_parts": sum(s.buffered for s in streams),
            "stream_buffered_bytes": sum(s.buffered_bytes for s in streams),
            "subscriptions": len(subs),
            "subscription_topics": len(self._by_topic),
            "subscription_buffered_messages": sum(s.buffered for s in subs.values()),
            "subscription_buffered_bytes": sum(s.buffered_bytes for s in subs.values()),
            "feeds_holding_reading": sum(f.holding for f in feeds),
        }

    def subscribe(
        self, topic: bytes, buffer_bytes: int = DEFAULT_BUFFER_BYTES
    ) -> Subscription:
        """
        A subscription to ``topic`` (see :class:`Subscription`).

        :param buffer_bytes: bytes buffered for a lagging consumer before the
            connection stops reading.
        :raises TypeError, ValueError: for a bad topic or ``buffer_bytes``.
        :raises ClientClosed: the client is closed.
        """
        return self.subscribe_all((topic,), buffer_bytes)

    def subscribe_all(
        self, topics: tuple[object, ...], buffer_bytes: int = DEFAULT_BUFFER_BYTES
    ) -> Subscription:
        """
        One subscription to several topics (their messages in one feed).
        """
        if not topics:
            raise ValueError("subscribe(): give at least one topic")
        checked = tuple(dict.fromkeys(self.check(t) for t in topics))
        _check_buffer_bytes(buffer_bytes, "subscribe()")
        if self._closed:
            raise ClientClosed("the client is closed")
        sub = Subscription(self, checked, self._clock, buffer_bytes)
        proto = self.proto
        sub._proto = proto
        for topic in checked:
            subs = self._by_topic.setdefault(topic, [])
            subs.append(sub)
            if proto is None:
                continue
            if len(subs) == 1:
                self._send_subscribe(proto, topic)
            elif not subs[0]._unconfirmed or topic not in subs[0]._unconfirmed:
                # Subscribed on this connection already.
                sub._confirm(topic)
            else:
                self._send_subscribe(proto, topic)
        if proto is None:
            self._connect()
        return sub

    def _connect(self) -> None:
        if self._connecting or self._closed:
            return
        proto = self._dispatcher.pool.pick()
        if proto is not None:
            self._attach(proto)
            return
        self._connecting = True

        def retry(_: object) -> None:
            self._connecting = False
            if self._closed:
                return
            if self._dispatcher.pool.pick() is None:
                # Ready, but not for us yet (a connection still coming up).
                self._connecting = True
                self._clock.callLater(0.1, retry, None)
            else:
                self._connect()

        self._when_ready().addBoth(retry)

    def _attach(self, proto: FramedProtocol) -> None:
        self.proto = proto
        proto.on_push = self._on_push
        proto.when_closed().addCallback(self._lost, proto)
        for subs in self._by_topic.values():
            for sub in subs:
                if sub._proto is not proto:
                    sub._move(proto)
        for topic in self._by_topic:
            self._send_subscribe(proto, topic)

    def _send_subscribe(self, proto: FramedProtocol, topic: bytes) -> None:
        d = self._dispatcher.lease_request(
            proto, self.commands[0](topic), self._timeout
        )

        def confirmed(_: object) -> None:
            if self.proto is proto:
                for sub in list(self._by_topic.get(topic, ())):
                    sub._confirm(topic)

        def refused(failure: Failure) -> None:
            if self.proto is not proto or failure.check(ConnectionLost):  # type: ignore[no-untyped-call]
                # Lost meanwhile (or about to be: a connection of the pool
                # picked as the one before it was lost, whose own loss is
                # not yet known): subscribed again on the next one.
                return
            for sub in list(self._by_topic.get(topic, ())):
                self._forget(sub)
                sub._refused(failure)

        d.addCallbacks(confirmed, refused)

    def _on_push(self, push: Push) -> None:
        key = push.key if push.pattern is None else push.pattern
        subs = self._by_topic.get(key)
        if not subs:
            return
        size = len(push.data)
        for sub in subs:
            sub._put(PushMessage(push.key, push.data), size)

    def _lost(self, reason: str, proto: FramedProtocol) -> None:
        if self.proto is not proto:
            return
        self.proto = None
        proto.on_push = None
        for subs in self._by_topic.values():
            for sub in subs:
                sub._gap = True
                sub._unconfirmed.clear()
                if sub._proto is not None:
                    sub._move(None)
        self.reconnects += 1
        if self._by_topic:
            self._connect()

    def _forget(self, sub: Subscription) -> list[bytes]:
        # Take sub out of every topic; the topics nobody wants any more.
        unwanted = []
        for topic in sub.topics:
            subs = self._by_topic.get(topic)
            if subs and sub in subs:
                subs.remove(sub)
                if not subs:
                    del self._by_topic[topic]
                    unwanted.append(topic)
        return unwanted

    def _remove(self, sub: Subscription) -> Deferred[None]:
        sub._drop()
        sub._finish(_END)
        unwanted = self._forget(sub)
        proto = self.proto
        if proto is None or not unwanted:
            return succeed(None)
        told = [
            self._dispatcher.lease_request(
                proto, self.commands[1](topic), self._timeout
            )
            for topic in unwanted
        ]
        return gatherResults(told, consumeErrors=True).addBoth(lambda _: None)

    def close(self) -> None:
        """
        End every subscription (the client is closing).
        """
        self._closed = True
        error = Failure(ClientClosed("the client is closed"))  # type: ignore[no-untyped-call]
        by_topic, self._by_topic = self._by_topic, {}
        ended = {id(sub): sub for subs in by_topic.values() for sub in subs}
        for sub in ended.values():
            sub._drop()
            sub._finish(error)


def check_topic(topic: object) -> bytes:
    """
    ``topic``, or the error for a topic fc1's reference commands cannot
    carry.
    """
    if not isinstance(topic, bytes):
        raise TypeError(f"subscribe(): topic must be bytes, got {type(topic).__name__}")
    if not topic or b" " in topic or len(topic) > 0xFFFF:
        raise ValueError(
            f"subscribe(): topic must be 1 to 65535 bytes without spaces, got {topic!r}"
        )
    return topic
