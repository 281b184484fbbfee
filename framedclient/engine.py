"""
The request engine: the request table of one connection, without I/O.

One :class:`RequestEngine` per connection decides everything that happens to
a request between ``request()`` and its outcome: which ID it gets, when it
counts as written, which reply is its own, when it has timed out, and what
a lost connection means for it.  It reads no socket, arms no reactor timer
and imports nothing from Twisted (h11's shape: events in, actions out), so it
can be fuzzed against a model and driven by any event loop.

Events come in as method calls: :meth:`~RequestEngine.open` (a new
request), :meth:`~RequestEngine.take_unwritten` (its bytes go to the
transport), :meth:`~RequestEngine.reply` (a reply frame arrived),
:meth:`~RequestEngine.cancel`, :meth:`~RequestEngine.wake` (a deadline may
have passed), :meth:`~RequestEngine.withdraw_unwritten` (GOAWAY) and
:meth:`~RequestEngine.lose_all` (the connection ended).  Actions go out
through the :class:`EngineActions` the adapter passes at construction:
deliver an outcome, send a cancel frame, wake me at this time, I am idle.

Every way a request can end goes through one private method (``_settle``),
which changes its state, frees its slot and hands the outcome to
``deliver`` exactly once.  A written request that is abandoned (timed out
or cancelled) keeps its ID reserved as a *tombstone* until its late reply
arrives, the connection ends or ``abandoned_ttl`` passes, as Finagle does:
otherwise a new request could reuse the ID and receive the old reply.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol

from framedclient._mode import mypyc_attr
from framedclient.codecs import REQUEST, Matching, Message
from framedclient.deadlines import Deadlines
from framedclient.errors import (
    ConnectionLost,
    InvalidRequest,
    Overloaded,
    RemoteError,
    RequestTimeout,
    codec_refusal,
)

__all__ = [
    "CANCELLED",
    "ERROR_REPLY",
    "LOST",
    "REPLY",
    "TIMEOUT",
    "EngineActions",
    "Request",
    "RequestEngine",
    "check_flag",
    "check_request",
]

# The request frame's kind, bound here as a Final so that compiled code
# reads it from a C static, not from this module's dict.
_REQUEST: Final[int] = REQUEST

# Request states.  Plain ints: compared on every reply (Final: compiled
# code inlines them).
#: Request state: accepted, bytes not yet handed to the transport.
QUEUED: Final = 0
#: Request state: bytes written, waiting for the reply.
SENT: Final = 1
#: Request state: written, then cancelled or timed out; its ID stays
#: reserved (a tombstone) so a late reply cannot reach another request.
ABANDONED: Final = 2
#: Request state: settled and in no table.
DONE: Final = 3

# How a request ended: the ``ending`` given to EngineActions.deliver.
#: Exit: a reply; the value is its body.
REPLY: Final = 0
#: Exit: an error reply; the value is its body.
ERROR_REPLY: Final = 1
#: Exit: the deadline passed; the value is a ``RequestTimeout``.
TIMEOUT: Final = 2
#: Exit: cancelled; the value is ``None`` (the canceller's Deferred fails
#: by itself).
CANCELLED: Final = 3
#: Exit: the connection was lost; the value is a ``ConnectionLost``, whose
#: ``written`` says whether a retry is safe.
LOST: Final = 4

# What reply() found.
#: :meth:`RequestEngine.reply` found the request and settled it.
MATCHED: Final = 0
#: :meth:`RequestEngine.reply` found an abandoned request: the reply is
#: dropped.
LATE: Final = 1
#: :meth:`RequestEngine.reply` found no request: an ID never sent, already
#: answered, or not written yet.
UNKNOWN: Final = 2


class EngineActions(Protocol):
    """
    What the engine asks of the adapter that drives it.
    """

    def deliver(self, request: Request, ending: int, value: Any, now: float) -> None:
        """
        ``request`` ended (``ending`` is one of the module's exit codes:
        :data:`REPLY`, :data:`ERROR_REPLY`, :data:`TIMEOUT`,
        :data:`CANCELLED`, :data:`LOST`).
        Called exactly once per request, after the engine's own books are
        done, so the callee may send new requests at once.
        """

    def send_cancel(self, request_id: int) -> None:
        """
        Tell the peer a written request was abandoned (codecs with cancel
        frames only).
        """

    def arm(self, deadline: float) -> None:
        """
        Call :meth:`RequestEngine.wake` at ``deadline`` (absolute, in the
        engine's clock); replaces the previous wake-up.  ``inf``: no
        wake-up is needed (cancel the one armed).
        """

    def idle(self) -> None:
        """
        The last live request ended (a draining connection can close).
        """


@mypyc_attr(allow_interpreted_subclasses=True)
class Request:
    """
    One request on one connection.  The record points at its engine, not at
    whoever drives it; an adapter may use a subclass that is also what the
    caller holds (the Twisted adapter's is the caller's Deferred), so a
    request costs one object.

    ``body`` is kept only while the request may still be sent elsewhere
    (not yet written, or idempotent), so an owner can re-send it when the
    connection dies; ``redirect`` is set once it has been handed over, so
    cancelling the caller's Deferred cancels the re-sent request instead.
    ``route`` is the owner's to set (and read only when re-sending): what a
    re-send must keep besides the body, such as a routing key; unset on
    most requests, so that they pay nothing for it.
    """

    __slots__ = (
        "attempt",
        "body",
        "data",
        "deadline",
        "engine",
        "idempotent",
        "ids",
        "parts",
        "redirect",
        "replies",
        "request_id",
        "route",
        "started",
        "state",
        "timeout",
    )

    # Made by RequestEngine.open only, which sets every field; a subclass's
    # __init__ (if any) takes no argument.
    engine: RequestEngine
    request_id: int
    #: the encoded frame until it is written
    data: bytes | None
    #: kept while the request may still be sent elsewhere
    body: bytes | Message | None
    started: float
    #: seconds it may take (0.0: no timeout) and when that is up
    timeout: float
    deadline: float
    idempotent: bool
    attempt: int
    state: int
    redirect: Any
    route: Any
    #: reply frames still expected (in-order matching; 1 unless the codec
    #: made a unit of several commands, see :meth:`RequestEngine.open`)
    replies: int
    #: a unit's replies so far, as ``(ok, body)`` pairs; ``None`` for a
    #: request that takes one reply
    parts: list[tuple[bool, Any]] | None
    #: a unit of :meth:`RequestEngine.open_many`: its IDs not answered yet,
    #: each with its slot in ``parts`` (by-ID matching), or ``None`` (in
    #: order); unset on every other request
    ids: dict[int, int] | None

    def __repr__(self) -> str:
        state = ("queued", "sent", "abandoned", "done")[self.state]
        return f"<Request id={self.request_id} {state} attempt={self.attempt}>"

    @property
    def written(self) -> bool:
        """
        Whether its bytes reached the transport.
        """
        return self.state == SENT or self.state == ABANDONED


def check_request(
    body: object, timeout: object, idempotent: object = False
) -> bytes | Message:
    """
    The one rule for a request's arguments, at every layer: a wrong type or
    value raises ``TypeError``/``ValueError`` naming the argument at the
    call, whatever path the request would take; what only the codec or the
    connection can judge later (a body too large for the frame) fails the
    request's Deferred with a :class:`~framedclient.errors.FramedClientError`.

    :return: the body to send: a ``bytearray`` is copied to ``bytes`` here,
        so a request that waits (for a slot, a connection, a retry) is sent
        as it was at the call, whatever the caller does with its buffer.
    """
    if not isinstance(body, (bytes, bytearray, Message)):
        hint = " (encode text first: body.encode())" if isinstance(body, str) else ""
        raise TypeError(
            f"body must be bytes or a Message, got {type(body).__name__}{hint}"
        )
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(
                f"timeout must be a number of seconds or None, got {timeout!r}"
            )
        if not timeout > 0:
            raise ValueError(
                f"timeout must be a positive number of seconds (math.inf for "
                f"none), got {timeout!r}"
            )
    check_flag("idempotent", idempotent)
    if isinstance(body, bytearray):
        return bytes(body)
    return body


def check_flag(name: str, value: object, *, optional: bool = False) -> None:
    """
    A per-call flag must be a ``bool`` (or ``None`` where ``optional``):
    ``idempotent="no"`` read as true would run a request twice.
    """
    if value is True or value is False or (optional and value is None):
        return
    allowed = "True, False or None" if optional else "True or False"
    raise TypeError(
        f"{name} must be {allowed}, got {type(value).__name__} {value!r} "
        f"(truthy values such as strings are not taken as flags)"
    )


def _error_value(body: Any) -> RemoteError:
    # An error reply inside a unit, as the caller gets it: the codec's
    # RemoteError (with its code), or one made of the error text.
    if isinstance(body, RemoteError):
        return body
    if isinstance(body, (bytes, bytearray)):
        return RemoteError(bytes(body).decode("utf-8", "replace"))
    return RemoteError(str(body))


def _is_live(r: Request) -> bool:
    return r.state <= SENT


def _is_tombstone(r: Request) -> bool:
    return r.state == ABANDONED


def _deadline_of(r: Request) -> float:
    return r.deadline


class RequestEngine:
    """
    The request table of one connection.

    :param matching: how replies find their request (by ID, in order, or
        one request at a time).
    :param max_id: the largest ID the codec can carry; IDs run from 1 to it
        and wrap, skipping any still held.
    :param max_pending: requests (tombstones included) the table may hold.
    :param abandoned_ttl: seconds a tombstone's ID stays reserved (by-ID
        matching only; in order, a tombstone must wait for its reply to keep
        the order).  ``None``: until the reply or the end.
    :param supports_cancel: whether to ask for cancel frames.
    :param encode: the codec's ``encode(kind, request_id, body)``.
    :param seconds: the clock.
    :param actions: where outcomes, cancel frames and wake-ups go.
    :param record: the class of the records :meth:`open` makes: a subclass
        of :class:`Request` whose constructor takes no argument.
    :param stream_record: the class of the records :meth:`open_stream`
        makes; its instances get an ``on_part(body, now)`` attribute from
        their owner before the first part can arrive.
    :param usual_timeout: the timeout most requests will have (the
        connection's configured one); ``None``: the first request's.

    Requests that share the connection's usual timeout (``usual_timeout``,
    else the first one seen) expire in the order they were opened: the live
    ones are kept in an ordered dict of their own, so one wake-up at the
    oldest one's deadline is all they need and it reads only what is due.
    Requests with another timeout (or a deadline out of that order) go to a
    :class:`~framedclient.deadlines.Deadlines`.

    :ivar live: requests not settled yet.
    :ivar tombstones: abandoned requests whose ID is still reserved.
    :ivar unwritten_bytes: bytes of requests not yet taken by
        :meth:`take_unwritten`.
    :ivar late_replies: replies dropped because their request was abandoned.
    :ivar unknown_replies: replies to IDs not held (never sent, answered
        already, or released).
    """

    __slots__ = (
        "_abandoned_ttl",
        "_by_id",
        "_deadlines",
        "_deliver",
        "_encode",
        "_inflight",
        "_last_id",
        "_losing",
        "_max_id",
        "_pending",
        "_record",
        "_seconds",
        "_send_cancel",
        "_settled",
        "_stream_record",
        "_tombstone_deadlines",
        "_unwritten",
        "_usual",
        "_usual_armed",
        "_usual_last",
        "_usual_timeout",
        "_wake_at",
        "actions",
        "late_replies",
        "live",
        "matching",
        "max_pending",
        "supports_cancel",
        "tombstones",
        "unknown_replies",
        "unwritten_bytes",
    )

    def __init__(
        self,
        *,
        matching: Matching,
        max_id: int,
        max_pending: int,
        abandoned_ttl: float | None,
        supports_cancel: bool,
        encode: Callable[[int, int, Any], bytes],
        seconds: Callable[[], float],
        actions: EngineActions,
        record: type[Request] = Request,
        stream_record: type[Request] | None = None,
        usual_timeout: float | None = None,
    ) -> None:
        self.matching = matching
        self._record = record
        self._stream_record = stream_record or record
        self._by_id = matching is Matching.BY_ID
        self.max_pending = 1 if matching is Matching.EXCLUSIVE else max_pending
        if self.max_pending >= max_id:
            raise ValueError(
                f"max_pending ({self.max_pending}) must be below the codec's ID "
                f"space ({max_id}), or IDs could not stay unique"
            )
        self._max_id = max_id
        self._abandoned_ttl = abandoned_ttl if self._by_id else None
        self.supports_cancel = supports_cancel and self._by_id
        self._encode = encode
        self._seconds = seconds
        self.actions = actions
        self._deliver = actions.deliver
        self._send_cancel = actions.send_cancel
        # BY_ID: every request not yet DONE, by ID (tombstones included).
        self._pending: dict[int, Request] = {}
        # IN_ORDER / EXCLUSIVE: written requests in send order (tombstones
        # included); queued ones are only in _unwritten.
        self._inflight: deque[Request] = deque()
        # Requests whose bytes wait for take_unwritten(), in order; entries
        # settled meanwhile are skipped there.
        self._unwritten: list[Request] = []
        self.unwritten_bytes = 0
        self._last_id = 0
        self.live = 0
        self.tombstones = 0
        self.late_replies = 0
        self.unknown_replies = 0
        self._wake_at = math.inf
        self._losing = False
        self._settled = 0
        # The timeout most requests share, and whether a wake-up is due for
        # the oldest live request with it.
        # The configured one when the owner knows it: the first request seen
        # may have waited for the connection and carry what was left of it.
        self._usual_timeout = (
            usual_timeout
            if usual_timeout is not None and 0.0 < usual_timeout < math.inf
            else 0.0
        )
        self._usual_armed = False
        # The live requests with that timeout, in opening order, which is
        # their deadline order (a dict: ordered, O(1) removal).
        self._usual: dict[Request, None] = {}
        self._usual_last = -math.inf
        self._deadlines: Deadlines[Request] = Deadlines(
            _is_live, self._expire, self._live_count, _deadline_of, self._arm
        )
        self._tombstone_deadlines: Deadlines[Request] = Deadlines(
            _is_tombstone,
            self._forget_tombstone,
            self._tombstone_count,
            _deadline_of,
            self._arm,
        )

    def _live_count(self) -> int:
        return self.live

    def _tombstone_count(self) -> int:
        return self.tombstones

    # -- introspection -------------------------------------------------------

    @property
    def full(self) -> bool:
        """
        Whether the table holds ``max_pending`` entries (live + tombstones).
        """
        return self.live + self.tombstones >= self.max_pending

    @property
    def entries(self) -> int:
        """
        References the table really holds (a queued request held by ID and
        in the write queue counts twice): what a leak shows up in.  It is 0
        once everything has settled and been written.
        """
        return len(self._pending) + len(self._inflight) + len(self._unwritten)

    @property
    def deadline_entries(self) -> int:
        return len(self._deadlines) + len(self._tombstone_deadlines)

    def requests(self) -> list[Request]:
        """
        Every record held, live or tombstone.  O(n): for snapshots.
        """
        if self._by_id:
            return list(self._pending.values())
        return [*self._inflight, *(r for r in self._unwritten if r.state == QUEUED)]

    def oldest_started(self) -> float | None:
        """
        When the oldest live request started, or ``None``.  O(n).
        """
        starts = [r.started for r in self.requests() if r.state <= SENT]
        return min(starts) if starts else None

    @property
    def unwritten_count(self) -> int:
        return sum(1 for r in self._unwritten if r.state == QUEUED)

    # -- events --------------------------------------------------------------

    def open(
        self,
        body: bytes | Message,
        timeout: float | None,
        now: float,
        idempotent: bool = False,
        attempt: int = 1,
    ) -> Request:
        """
        A new request: allocate an ID no held request has, encode it, hold
        it until it is written.  The caller checks :attr:`full` first.

        :param timeout: seconds until :data:`TIMEOUT`; ``None`` or ``inf``
            for none.
        :param now: the time of this event (the adapter often knows it
            already: requests sent from reply callbacks share the time the
            replies were read).
        :raises: whatever the codec raises for a body it cannot carry;
            nothing is held then.

        A codec matching in order may return from ``encode`` a ``bytes``
        subclass with an ``expected_replies`` attribute (N): the request is
        then one *unit* that takes the next N reply frames, in order, and
        its reply is the list of them as ``(ok, body)`` pairs (an error
        reply inside a unit is data, not the unit's failure).  A unit that
        times out or is cancelled stays in the queue until all N replies
        have passed, so the next caller never receives one of them.
        """
        request_id = self._last_id
        pending = self._pending
        max_id = self._max_id
        while True:
            request_id = request_id + 1 if request_id < max_id else 1
            if request_id not in pending:
                break
        data = self._encode(_REQUEST, request_id, body)
        self._last_id = request_id
        if timeout is None or timeout == math.inf:
            timeout = 0.0
            deadline = math.inf
        else:
            deadline = now + timeout
        r = self._record()
        r.engine = self
        r.request_id = request_id
        r.data = data
        r.body = body
        r.started = now
        r.timeout = timeout
        r.deadline = deadline
        r.idempotent = idempotent
        r.attempt = attempt
        r.state = QUEUED
        r.redirect = None
        # Plain bytes (every codec's usual answer): one reply frame.
        if data.__class__ is bytes or self._by_id:
            r.replies = 1
            r.parts = None
        else:
            r.replies = getattr(data, "expected_replies", 1)
            r.parts = [] if r.replies > 1 else None
        if timeout:
            if timeout == self._usual_timeout and deadline >= self._usual_last:
                self._usual[r] = None
                self._usual_last = deadline
                if not self._usual_armed:
                    self._usual_armed = True
                    self._arm(deadline)
            elif not self._usual_timeout:
                self._usual_timeout = timeout
                self._usual[r] = None
                self._usual_last = deadline
                self._usual_armed = True
                self._arm(deadline)
            else:
                # Another timeout, or a clock that stepped back: out of the
                # usual order, so tracked on its own.
                self._deadlines.add(deadline, r)
        if self._by_id:
            pending[request_id] = r
        self._unwritten.append(r)
        self.unwritten_bytes += len(data)
        self.live += 1
        return r

    def open_stream(self, body: bytes | Message, now: float) -> Request:
        """
        A request whose reply may come in parts (see :meth:`part`): like
        :meth:`open`, with a record of ``record`` (whose ``on_part`` takes
        each part) and no deadline of its own: its owner times the gaps
        between parts, which only it can tell apart from a consumer that is
        slow to read.  It is never re-sent elsewhere (its body is dropped):
        parts already delivered could otherwise arrive twice.

        :raises: what :meth:`open` raises; nothing is held then.
        """
        if not self._by_id:
            raise ValueError(
                f"streams need a codec that matches replies by ID; this one "
                f"matches {self.matching.value}"
            )
        plain, self._record = self._record, self._stream_record
        try:
            r = self.open(body, None, now)
        finally:
            self._record = plain
        r.body = None
        return r

    def fits(self, count: int) -> bool:
        """
        Whether a unit of ``count`` requests (:meth:`open_many`) fits in the
        table: by ID, each of its IDs is an entry; in order, it is one.
        """
        size = count if self._by_id else 1
        return self.live + self.tombstones + size <= self.max_pending

    def open_many(
        self,
        bodies: tuple[bytes | Message, ...],
        body: Any,
        timeout: float | None,
        now: float,
        idempotent: bool = False,
        attempt: int = 1,
    ) -> Request:
        """
        Accept ``bodies`` as one unit (see :mod:`framedclient.batch`): one
        record, settled once with a list of one entry per body, in order
        (the reply's body, or the ``RemoteError`` of an error reply).  By
        ID, each body gets its own ID and the unit counts one live request
        per ID not answered yet; in order, it takes the next N replies and
        counts as one.  The caller checks :meth:`fits` first.

        :param body: what a re-send elsewhere sends again (the batch).
        :raises InvalidRequest: the codec refused ``bodies[i]`` (named);
            nothing is held then.
        :raises Overloaded: it does not fit (see :meth:`fits`).
        :raises ValueError: the codec allows one request at a time.
        """
        if self.matching is Matching.EXCLUSIVE:
            raise ValueError(
                "this codec allows one request at a time on a connection "
                "(exclusive), so a unit of several cannot be sent; send them "
                "one by one"
            )
        n = len(bodies)
        if not self.fits(n):
            # The caller's check, made again: by ID, allocating more IDs
            # than are free would never end.
            raise self.overloaded()
        pending = self._pending
        by_id = self._by_id
        ids: dict[int, int] = {}
        frames: list[bytes] = []
        request_id = self._last_id
        max_id = self._max_id
        for i, one in enumerate(bodies):
            if by_id:
                while True:
                    request_id = request_id + 1 if request_id < max_id else 1
                    if request_id not in pending and request_id not in ids:
                        break
            try:
                frame = self._encode(_REQUEST, request_id, one)
            except Exception as e:
                raise InvalidRequest(
                    f"bodies[{i}] of the batch cannot be sent "
                    f"({codec_refusal(e)}); nothing of the batch was sent"
                ) from e
            if not by_id and getattr(frame, "expected_replies", 1) != 1:
                # In order, each body takes one reply: a body that takes
                # several (a CommandBatch) would shift every later reply.
                raise InvalidRequest(
                    f"bodies[{i}] of the batch is itself a unit of several "
                    f"replies; put its commands in the batch one by one; "
                    f"nothing of the batch was sent"
                )
            frames.append(frame)
            ids[request_id] = i
        data = b"".join(frames)
        r = self._record()
        r.engine = self
        r.data = data
        r.body = body
        r.started = now
        r.idempotent = idempotent
        r.attempt = attempt
        r.state = QUEUED
        r.redirect = None
        r.replies = n
        if by_id:
            self._last_id = request_id
            r.request_id = next(iter(ids))
            r.ids = ids
            r.parts = [None] * n  # type: ignore[list-item]
            for request_id in ids:
                pending[request_id] = r
            self.live += n
        else:
            r.request_id = 0
            r.ids = None
            r.parts = []
            self.live += 1
        # The deadline, as open() keeps it.
        if timeout is None or timeout == math.inf:
            r.timeout = 0.0
            r.deadline = math.inf
        else:
            r.timeout = timeout
            r.deadline = deadline = now + timeout
            if timeout == self._usual_timeout and deadline >= self._usual_last:
                self._usual[r] = None
                self._usual_last = deadline
                if not self._usual_armed:
                    self._usual_armed = True
                    self._arm(deadline)
            else:
                self._deadlines.add(deadline, r)
        self._unwritten.append(r)
        self.unwritten_bytes += len(data)
        return r

    def take_unwritten(self, chunks: list[bytes]) -> None:
        """
        Append the bytes of every request waiting to be written to
        ``chunks``; those requests count as written from now on.  Once
        written, only an idempotent request may be re-sent, so only its body
        stays referenced.
        """
        unwritten = self._unwritten
        if not unwritten:
            return
        self._unwritten = []
        self.unwritten_bytes = 0
        append = chunks.append
        # In order, written requests wait in send order for their replies.
        in_order = None if self._by_id else self._inflight.append
        for r in unwritten:
            if r.state == QUEUED:
                append(r.data)  # type: ignore[arg-type]
                r.data = None
                r.state = SENT
                if not r.idempotent:
                    r.body = None
                if in_order is not None:
                    in_order(r)

    def reply(self, request_id: int, ok: bool, body: Any, now: float) -> int:
        """
        A reply (``ok``) or error reply arrived for ``request_id`` (ignored
        when matching in order).

        :return: :data:`MATCHED`, :data:`LATE` (its request was abandoned;
            dropped) or :data:`UNKNOWN` (dropped).
        """
        if self._by_id:
            r = self._pending.pop(request_id, None)
            if r is not None and r.parts is not None:
                return self._unit_id_reply(r, request_id, ok, body, now)
        elif self._inflight:
            r = self._inflight[0]
            if r.parts is not None:
                return self._unit_reply(r, ok, body, now)
            self._inflight.popleft()
        else:
            r = None
        if r is None:
            self.unknown_replies += 1
            return UNKNOWN
        state = r.state
        if state == SENT:
            self._settle(r, REPLY if ok else ERROR_REPLY, body, now)
            return MATCHED
        if state == ABANDONED:
            r.state = DONE
            self.tombstones -= 1
            self.late_replies += 1
            if not self.tombstones:
                self._rest()
            return LATE
        # A reply to a request not written yet: the peer answered an ID it
        # has not been sent.  Keep the request, drop the reply.
        if self._by_id:
            self._pending[request_id] = r
        self.unknown_replies += 1
        return UNKNOWN

    def part(self, request_id: int, body: Any, now: float) -> int:
        """
        A non-final part of the reply to ``request_id`` arrived: handed to
        the stream's ``on_part``; the request stays open.

        :return: :data:`MATCHED`, :data:`LATE` (the stream was abandoned:
            dropped, and its ID stays reserved until its final reply) or
            :data:`UNKNOWN` (no such request, or one not opened as a
            stream: dropped).
        """
        r = self._pending.get(request_id) if self._by_id else None
        if r is None:
            self.unknown_replies += 1
            return UNKNOWN
        if r.state == SENT:
            on_part = getattr(r, "on_part", None)
            if on_part is not None:
                on_part(body, now)
                return MATCHED
        elif r.state == ABANDONED:
            self.late_replies += 1
            return LATE
        self.unknown_replies += 1
        return UNKNOWN

    def stray_frame(self) -> int:
        """
        A frame that is no reply arrived (a request or cancel frame from
        the peer): not a client's business, counted with the unknown
        replies.

        :return: :data:`UNKNOWN`.
        """
        self.unknown_replies += 1
        return UNKNOWN

    def _unit_reply(self, r: Request, ok: bool, body: Any, now: float) -> int:
        # One of the N reply frames of a unit (in-order matching only).
        r.replies -= 1
        last = not r.replies
        if last:
            self._inflight.popleft()
        state = r.state
        if state == SENT:
            parts = r.parts
            parts.append((ok, body))  # type: ignore[union-attr]
            if last:
                result: list[Any] | None = parts
                if getattr(r, "ids", 0) is None:
                    # open_many's unit: values and errors, not pairs.
                    result = [b if o else _error_value(b) for o, b in parts]  # type: ignore[union-attr]
                self._settle(r, REPLY, result, now)
            return MATCHED
        if state == ABANDONED:
            if not last:
                return MATCHED  # counted once, with its last reply
            r.state = DONE
            self.tombstones -= 1
            self.late_replies += 1
            return LATE
        # Nothing of a unit not written yet can arrive (in order, only
        # written requests are in the queue).
        return UNKNOWN  # pragma: no cover

    def _unit_id_reply(
        self, r: Request, request_id: int, ok: bool, body: Any, now: float
    ) -> int:
        # One reply of an open_many unit matched by ID: into its slot; the
        # last one settles the unit.  Its ID is free from now on.
        state = r.state
        if state == QUEUED:
            # Answered before it was written: keep the ID, drop the reply.
            self._pending[request_id] = r
            self.unknown_replies += 1
            return UNKNOWN
        held: dict[int, int] = r.ids  # type: ignore[assignment]
        slot = held.pop(request_id)
        if state == SENT:
            parts: list[Any] = r.parts  # type: ignore[assignment]
            parts[slot] = body if ok else _error_value(body)
            if held:
                self.live -= 1
                return MATCHED
            self._settle(r, REPLY, parts, now)
            return MATCHED
        # Abandoned: a late reply frees its ID; the last one, the unit.
        self.tombstones -= 1
        self.late_replies += 1
        if not held:
            r.state = DONE
        return LATE

    def cancel(self, r: Request) -> None:
        """
        The caller gave up on ``r`` (its Deferred is being cancelled).
        """
        if r.state <= SENT:
            self._settle(r, CANCELLED, None, self._seconds())

    def wake(self, now: float) -> None:
        """
        The wake-up asked for through ``arm`` came: time out what is due,
        release tombstones past their TTL.
        """
        self._wake_at = math.inf
        due = self._usual_due(now) if self._usual_armed else []
        others = self._deadlines.take_due(now)
        if others:
            # Both lists are in deadline order: time out in deadline order.
            due = list(heapq.merge(due, others, key=_deadline_of))
        for r in due:
            # An earlier timeout's callbacks may have settled it meanwhile.
            if r.state <= SENT:
                self._settle(r, TIMEOUT, RequestTimeout(r.timeout), now)
        self._tombstone_deadlines.expire(now)

    def _usual_due(self, now: float) -> list[Request]:
        # The live requests with the usual timeout, in deadline order: the
        # due ones are at the front (the scan reads only those and one
        # more); wake up again for the first one that is not due.
        due: list[Request] = []
        next_deadline = math.inf
        due_by = now + 1e-9  # a timer can land a rounding error short
        for r in self._usual:
            if r.deadline > due_by:
                next_deadline = r.deadline
                break
            due.append(r)
        self._usual_armed = next_deadline != math.inf
        if self._usual_armed:
            self._arm(next_deadline)
        return due

    def withdraw_unwritten(self, reason: str) -> None:
        """
        Settle every request not written yet with ``ConnectionLost(written
        =False)`` (the peer sent GOAWAY: such requests are safe elsewhere).
        """
        unwritten, self._unwritten = self._unwritten, []
        now = self._seconds()
        for r in unwritten:
            if r.state == QUEUED:
                self._settle(r, LOST, ConnectionLost(False, reason), now)

    def lose_all(
        self, reason: str, reached_peer: bool, error: BaseException | None = None
    ) -> None:
        """
        The connection ended: every live request settles with
        ``ConnectionLost`` (``written`` only if its bytes could have reached
        the peer), every tombstone is dropped, and nothing is held after.

        :param reached_peer: whether written bytes could have reached the
            peer (false before a TLS handshake completed).
        """
        if self._by_id:
            victims = list(self._pending.values())
        else:
            victims = [*self._inflight, *self._unwritten]
        # Detach every table first: outcomes delivered below may call back
        # into the engine, and must find it empty.
        self._pending = {}
        self._inflight = deque()
        self._unwritten = []
        self.tombstones = 0
        self._deadlines.clear()
        self._tombstone_deadlines.clear()
        self._usual = {}
        self._usual_armed = False
        self._wake_at = math.inf
        now = self._seconds()
        for r in victims:
            if r.state > SENT:
                r.state = DONE  # a tombstone: its ID dies with the connection
        # A victim cancelled from another victim's callback settles as
        # cancelled, without becoming a tombstone of a table that is gone.
        self._losing = True
        try:
            for r in victims:
                state = r.state
                if state <= SENT:
                    written = state == SENT and reached_peer
                    lost = ConnectionLost(written, reason, error)
                    self._settle(r, LOST, lost, now)
        finally:
            self._losing = False

    def overloaded(self) -> Overloaded:
        """
        The error for a request refused because the table is full.
        """
        return Overloaded(
            f"connection has {self.live} requests pending and {self.tombstones} "
            f"abandoned ones awaiting late replies (max_pending="
            f"{self.max_pending}); nothing was sent"
        )

    # -- the one exit ----------------------------------------------------------

    def _settle(self, r: Request, ending: int, value: Any, now: float) -> None:
        """
        Every way out of the table for a live request: reply, error reply,
        timeout, cancel, connection lost (the adapter may then hand it to a
        retry).  A written request that is abandoned becomes a tombstone.
        Tables the caller already took ``r`` out of (a matched reply, a lost
        connection) are not touched again.
        """
        if self._by_id and r.parts is not None:
            self._settle_unit(r, ending, value, now)
            return
        if r.state == QUEUED:
            r.state = DONE
            self.unwritten_bytes -= len(r.data)  # type: ignore[arg-type]
            r.data = None
            if self._by_id:
                self._pending.pop(r.request_id, None)
        elif (ending == TIMEOUT or ending == CANCELLED) and not self._losing:
            r.state = ABANDONED
            r.body = None
            if r.parts is not None:
                r.parts = []  # the replies still due are dropped, not kept
            self.tombstones += 1
            ttl = self._abandoned_ttl
            if ttl is not None:
                r.deadline = now + ttl
                self._tombstone_deadlines.add(r.deadline, r)
            if ending == CANCELLED and self.supports_cancel:
                self._send_cancel(r.request_id)
        else:
            r.state = DONE
        if r.timeout == self._usual_timeout:
            self._usual.pop(r, None)
        self.live -= 1
        self._settled += 1
        settled = self._settled
        self._deliver(r, ending, value, now)
        # Idle once: a settle nested in this outcome's callbacks that emptied
        # the table said so already.
        if not self.live and self._settled == settled:
            self.actions.idle()

    def _settle_unit(self, r: Request, ending: int, value: Any, now: float) -> None:
        # _settle for a unit of open_many matched by ID: it holds the IDs
        # still unanswered (each a live request), not one.
        held: dict[int, int] = r.ids  # type: ignore[assignment]
        count = len(held) or 1  # a reply: the last ID, popped already
        if r.state == QUEUED:
            r.state = DONE
            self.unwritten_bytes -= len(r.data)  # type: ignore[arg-type]
            r.data = None
            for request_id in held:
                self._pending.pop(request_id, None)
            held.clear()
        elif (ending == TIMEOUT or ending == CANCELLED) and not self._losing:
            r.state = ABANDONED
            r.body = None
            r.parts = []  # the replies still due are dropped, not kept
            self.tombstones += len(held)
            ttl = self._abandoned_ttl
            if ttl is not None:
                r.deadline = now + ttl
                self._tombstone_deadlines.add(r.deadline, r)
            if ending == CANCELLED and self.supports_cancel:
                for request_id in held:
                    self._send_cancel(request_id)
        else:
            r.state = DONE
            held.clear()
        if r.timeout == self._usual_timeout:
            self._usual.pop(r, None)
        self.live -= count
        self._settled += 1
        settled = self._settled
        self._deliver(r, ending, value, now)
        if not self.live and self._settled == settled:
            self.actions.idle()

    def _expire(self, r: Request) -> None:
        self._settle(r, TIMEOUT, RequestTimeout(r.timeout), self._seconds())

    def _rest(self) -> None:
        # The last tombstone was answered (a cancelled stream's usual end):
        # its abandoned_ttl needs no wake-up any more.  Unless a deadline may
        # still be live, the wake-up is withdrawn (arm(inf)) instead of
        # firing once for nothing; rare, unlike a reply, whose wake-up stays
        # lazy.
        self._tombstone_deadlines.clear()
        if self._usual or len(self._deadlines) or self._wake_at == math.inf:
            return
        self._deadlines.clear()  # empty, but may still think it is armed
        self._usual_armed = False
        self._wake_at = math.inf
        self.actions.arm(math.inf)

    def _forget_tombstone(self, r: Request) -> None:
        # No late reply within abandoned_ttl: release the ID.  A reply that
        # still comes is counted as unknown.
        r.state = DONE
        if r.parts is not None:
            # A unit: every ID it still holds.
            held = r.ids or {}
            for request_id in held:
                self._pending.pop(request_id, None)
            self.tombstones -= len(held)
            held.clear()
            return
        self.tombstones -= 1
        self._pending.pop(r.request_id, None)

    def _arm(self, deadline: float) -> None:
        if deadline < self._wake_at:
            self._wake_at = deadline
            self.actions.arm(deadline)
