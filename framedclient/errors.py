"""
The errors framedclient raises or fails Deferreds with.

Every error is a :class:`FramedClientError`, so one ``except`` (or one
``addErrback`` with ``failure.trap``) catches everything the library itself
produces.  Each message says what happened and what the caller can do about
it, because these strings end up in logs read by someone who did not write
the code.

One failure vocabulary
----------------------

Each error class names its *outcome* (:attr:`FramedClientError.outcome`),
the word under which metrics count it, the gateway picks an HTTP status for
it and the proxy names it to its downstreams.  :func:`outcome_of` is the one
place that maps any exception to an outcome, and :data:`OUTCOMES` (every
outcome, derived from the classes) is the one list every counter uses.

What the caller did wrong (:class:`InvalidRequest`, :class:`RequestTooLarge`:
a body the codec cannot carry) is kept apart from what the peer did wrong
(:class:`ProtocolError`, :class:`FrameTooLarge`, :class:`CorruptFrame`):
the first fails one request and nothing is sent, the second closes the
connection.

This module imports nothing from Twisted: the sans-IO framers and codecs
raise these errors too, and :mod:`framedclient.metrics` reads
:data:`OUTCOMES` from here.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import ClassVar

__all__ = [
    "CANCELLED",
    "INTERNAL",
    "OK",
    "OUTCOMES",
    "ClientClosed",
    "ConnectFailed",
    "ConnectionLost",
    "CorruptFrame",
    "FrameTooLarge",
    "FramedClientError",
    "InvalidRequest",
    "Overloaded",
    "ProtocolError",
    "RemoteError",
    "RequestTimeout",
    "RequestTooLarge",
    "Unavailable",
    "codec_refusal",
    "outcome_of",
    "unavailable",
    "unframed_timeout",
]

OK = "ok"
"""The outcome of a request that got its reply; the only success."""

CANCELLED = "cancelled"
"""The outcome of a request whose Deferred was cancelled (Twisted's or
asyncio's ``CancelledError``)."""

INTERNAL = "internal"
"""The outcome of any exception that is neither a :class:`FramedClientError`
nor a cancellation: a bug, in framedclient or in a hook it called."""


class FramedClientError(Exception):
    """
    Base of every error framedclient produces.

    :cvar outcome: the name under which this error is counted (see
        :func:`outcome_of`); every subclass names its own, and it is always
        one of :data:`OUTCOMES`.  A subclass you define inherits its
        parent's outcome: metrics accept no other names.
    """

    outcome: ClassVar[str] = INTERNAL


class ProtocolError(FramedClientError):
    """
    The peer sent bytes that do not follow the protocol.

    A protocol error is fatal for the connection it happened on (framing is
    lost, so nothing after it can be trusted), never for other connections.

    :ivar frames: whole frames that were decoded from the same ``feed`` call
        before the error was found; a caller that wants to keep them can.
    """

    outcome: ClassVar[str] = "protocol_error"

    def __init__(self, message: str, frames: list[bytes] | None = None) -> None:
        super().__init__(message)
        self.frames: list[bytes] = frames if frames is not None else []


class FrameTooLarge(ProtocolError):
    """
    A frame received from the peer is longer than the configured maximum.

    (A body too large to *send* is :class:`RequestTooLarge`, the caller's
    error, not the peer's.)

    Raised as soon as the length is known (from the header, or from the bytes
    seen without a delimiter), before the frame's bytes are buffered.

    :ivar length: the announced length, or the number of bytes seen so far.
    :ivar limit: the configured maximum.
    """

    def __init__(
        self, length: int, limit: int, frames: list[bytes] | None = None
    ) -> None:
        super().__init__(
            f"frame of {length} bytes exceeds the limit of {limit} bytes; "
            f"raise max_frame if the peer legitimately sends frames this large, "
            f"otherwise the peer speaks another protocol or is hostile",
            frames,
        )
        self.length = length
        self.limit = limit


class CorruptFrame(ProtocolError):
    """
    A frame header or frame body cannot be parsed.
    """


class RequestTimeout(FramedClientError):
    """
    No reply arrived within the request's timeout.

    The request may still have been processed by the server; retry only if
    the request is idempotent.

    :ivar timeout: the timeout that expired, in seconds.
    """

    outcome: ClassVar[str] = "timeout"

    def __init__(self, timeout: float, message: str | None = None) -> None:
        super().__init__(
            message
            or f"no reply within {timeout:g} s; the server is slow or the "
            f"connection is stuck; raise the timeout or check the server"
        )
        self.timeout = timeout


class ConnectionLost(FramedClientError):
    """
    The connection closed before the reply arrived.

    :ivar written: whether the request's bytes had been handed to the
        transport.  A request that was never written was certainly not
        processed and is safe to send again; one that was written may have
        been processed.
    :ivar reason: a short description of why the connection ended.
    :ivar error: the error that made framedclient close the connection, if
        it was framedclient that closed it.
    """

    outcome: ClassVar[str] = "connection_lost"

    def __init__(
        self,
        written: bool,
        reason: str = "connection closed",
        error: BaseException | None = None,
    ) -> None:
        if written:
            advice = (
                "the request was sent and may have been processed; "
                "retry only if it is idempotent"
            )
        else:
            advice = "the request was never sent, so it is safe to retry"
        super().__init__(f"connection lost before the reply ({reason}); {advice}")
        self.written = written
        self.reason = reason
        #: what ended the connection when framedclient itself closed it (a
        #: :class:`ProtocolError` from the peer, a heartbeat timeout, ...).
        self.error = error


class ConnectFailed(ConnectionLost):
    """
    ``when_ready(fail_after=N)`` gave up after N consecutive failed attempts.

    Nothing was sent, so its outcome is ``"unavailable"`` (no connection
    could be made), not ``"connection_lost"``.

    :ivar attempts: how many attempts failed in a row.
    :ivar cause: the last attempt's error message.
    """

    outcome: ClassVar[str] = "unavailable"

    def __init__(self, attempts: int, cause: str) -> None:
        super().__init__(False, f"{attempts} connection attempts failed; last: {cause}")
        self.attempts = attempts
        self.cause = cause


class Overloaded(FramedClientError):
    """
    The client is at capacity and shed this request without sending it.

    The request was never sent.  Back off and retry later, or raise the
    limits (``max_in_flight``, ``max_pending``) if the server can take more.
    """

    outcome: ClassVar[str] = "overloaded"


class Unavailable(FramedClientError):
    """
    No connection is ready to carry the request, and the caller asked not to
    wait for one (``wait_for_ready=False``), or the wait ran out.

    The request was never sent; it is safe to retry once the server is back.
    """

    outcome: ClassVar[str] = "unavailable"


class RemoteError(FramedClientError):
    """
    The server answered the request with an error reply.

    The request reached the server and was processed (and failed there);
    the message is the server's.

    Codecs whose replies carry a status number (memcached's status, DNS's
    RCODE) set :attr:`code`, so callers branch on a number rather than
    parse text; a codec may raise a subclass per code (see
    :class:`~framedclient.codecs.header.HeaderCodec`'s ``errors``), so a
    client library can offer ``except NotFound``.

    :ivar message: the server's error text (or the codec's name for the code).
    :ivar code: the status the server replied with, or ``None`` when the
        protocol has no status numbers (fc1's error replies).
    :ivar reply: the whole error reply as the codec decoded it (a
        :class:`~framedclient.codecs.base.Message` for structured codecs),
        or ``None``; for the fields an error reply still carries.
    """

    outcome: ClassVar[str] = "remote_error"

    def __init__(
        self, message: str, code: int | None = None, reply: object = None
    ) -> None:
        if code is None:
            text = f"server replied with an error: {message}"
        else:
            text = f"server replied with error {code}: {message}"
        super().__init__(text)
        self.message = message
        #: The status number the reply carried (memcached's status, DNS's
        #: RCODE), or ``None`` for codecs without one.
        self.code = code
        self.reply = reply


class ClientClosed(FramedClientError):
    """
    The client (or connection) is closed or closing and accepts no new
    requests.  Create a new client, or stop sending before ``close()``.
    """

    outcome: ClassVar[str] = "closed"


class InvalidRequest(FramedClientError, ValueError):
    """
    The request itself is invalid: the codec cannot carry its body (a
    delimiter inside a line-delimited body, a body of the wrong type, ...)
    or an argument is out of range (a timeout that is not positive).  The
    caller's mistake: nothing was sent, the connection is fine, and sending
    the same request again fails the same way.

    It is also a :class:`ValueError`, as codec refusals were before it
    existed, so ``except ValueError`` keeps working.
    """

    outcome: ClassVar[str] = "invalid_request"


class RequestTooLarge(InvalidRequest):
    """
    A request body is too large for the codec to frame.  Nothing was sent
    and the connection is fine; split the body, or raise the codec's
    ``max_frame`` if the server accepts larger frames.

    Not a :class:`ProtocolError`: the peer did nothing wrong (a frame too
    large *received* is :class:`FrameTooLarge`).

    :ivar length: the frame length the body would need, in bytes.
    :ivar limit: the codec's maximum frame length, in bytes.
    """

    outcome: ClassVar[str] = "request_too_large"

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(
            f"request body needs a frame of {length} bytes, over the codec's "
            f"limit of {limit} bytes; nothing was sent; send a smaller body, "
            f"or raise max_frame if the server accepts frames this large"
        )
        self.length = length
        self.limit = limit


#: Upstreams named one by one in an ``Unavailable`` message; beyond, "and N more".
_NAMED_UPSTREAMS = 4


def unavailable(
    connections: Iterable[tuple[str, str | None]],
    discovery_errors: Iterable[str] = (),
    waited: float | None = None,
) -> Unavailable:
    """
    The :class:`Unavailable` for a request no connection could take: it
    names the upstreams, the last connection error of each (``connection
    refused``, ``certificate verify failed``) and advice that fits the
    settings in use, because "no connection is ready" alone sends the
    reader to the source.

    :param connections: ``(upstream, last_error)`` for each connection of
        the pool (``last_error`` ``None`` while the first attempt runs).
    :param discovery_errors: why discovery found no host yet, if it did not.
    :param waited: the request's deadline, when it waited for a connection
        (``wait_for_ready``) and the deadline ran out; ``None`` when it
        asked not to wait.
    """
    errors: dict[str, list[str]] = {}
    for upstream, error in connections:
        seen = errors.setdefault(upstream, [])
        if error is not None and error not in seen:
            seen.append(error)
    upstreams = list(errors)
    if not upstreams:
        where = "any upstream"
        why = "; ".join(discovery_errors) or "no host found yet"
    else:
        where = ", ".join(upstreams[:_NAMED_UPSTREAMS])
        if len(upstreams) > _NAMED_UPSTREAMS:
            where += f" and {len(upstreams) - _NAMED_UPSTREAMS} more"
        described = [
            (upstream, " / ".join(errors[upstream]) or "still connecting")
            for upstream in upstreams
        ]
        if len(described) == 1:
            why = described[0][1]
            if errors[upstreams[0]]:
                why = f"last error: {why}"
        else:
            why = "; ".join(f"{u}: {e}" for u, e in described)
    connecting = not any(errors.values())
    if waited is None:
        return Unavailable(
            f"no connection to {where} is ready ({why}); the request was not "
            f"sent. Retry later, or pass wait_for_ready=True to let requests "
            f"wait for a connection until their deadline"
        )
    if connecting and upstreams:
        advice = (
            "The connection attempt has not finished (a firewall dropping "
            "packets, a slow handshake): check the address, or set "
            "connect_timeout to fail attempts sooner"
        )
    else:
        advice = (
            "Check that the server is up and reachable there (the client "
            "keeps reconnecting, with backoff), or give requests a longer "
            "timeout to wait through a restart"
        )
    return Unavailable(
        f"no connection to {where} became ready within the request's "
        f"{waited:g} s deadline ({why}); the request was not sent. {advice}"
    )


def unframed_timeout(
    timeout: float, protocol: str, peer: str, bytes_read: int
) -> RequestTimeout:
    """
    The :class:`RequestTimeout` of a written request on a connection that
    has not read one frame of ``protocol`` yet: the commonest cause is a
    client pointed at a server of another protocol (an fc1 client at a
    Redis port), which "the server is slow" would hide.

    :param peer: the server's address, as shown to the user.
    :param bytes_read: bytes read on the connection (none of them a frame).
    """
    if bytes_read:
        seen = (
            f"{peer} sent {bytes_read} bytes on this connection but not one "
            f"complete {protocol} frame"
        )
    else:
        seen = f"nothing at all has been read from {peer} since the connection opened"
    return RequestTimeout(
        timeout,
        f"no reply within {timeout:g} s, and {seen}: the server may not speak "
        f"{protocol} (check that this port serves the codec in use), or it is "
        f"slow or stuck",
    )


def codec_refusal(error: Exception) -> InvalidRequest:
    """
    The error a request fails with when the codec refused to encode its
    body: the caller's mistake, never the peer's.

    Codecs and framers raise :class:`FrameTooLarge` (the same check guards
    both directions) or a plain :class:`ValueError`/:class:`TypeError`
    from ``encode``; the layer that calls ``encode`` for a request turns
    that into :class:`RequestTooLarge` or :class:`InvalidRequest` here, so
    a body too large to send is never counted as the peer breaking the
    protocol.

    :param error: what ``encode`` raised.
    :returns: ``error`` itself if it already is an :class:`InvalidRequest`,
        else a new one whose ``__cause__`` is ``error``.
    """
    if isinstance(error, InvalidRequest):
        return error
    refusal: InvalidRequest
    if isinstance(error, FrameTooLarge):
        refusal = RequestTooLarge(error.length, error.limit)
    else:
        refusal = InvalidRequest(
            f"the codec cannot carry this request body ({error}); nothing was "
            f"sent; change the body or use a codec that can carry it"
        )
    refusal.__cause__ = error
    return refusal


# The classes whose outcomes make up OUTCOMES, in the order the outcomes are
# listed (and exposed): results from the server first, then what the client
# decided, then what the caller got wrong.
_OUTCOME_CLASSES: tuple[type[FramedClientError], ...] = (
    RemoteError,
    RequestTimeout,
    ConnectionLost,
    Overloaded,
    Unavailable,
    ProtocolError,
    ClientClosed,
    InvalidRequest,
    RequestTooLarge,
)

OUTCOMES: tuple[str, ...] = (
    OK,
    *dict.fromkeys(cls.outcome for cls in _OUTCOME_CLASSES),
    CANCELLED,
    INTERNAL,
)
"""Every way a request can end: ``"ok"`` first (the only success), then the
outcome of each error class, then ``"cancelled"`` and the catch-all
``"internal"``.  Metrics, the gateway, the proxy and the soak test all count
in these words."""


def outcome_of(error: BaseException | None) -> str:
    """
    The outcome under which ``error`` is counted: a
    :class:`FramedClientError`'s own :attr:`~FramedClientError.outcome`,
    ``"cancelled"`` for a cancellation, and ``"internal"`` for anything else
    (an exception framedclient does not produce on purpose: a bug).

    This is the one place that maps errors to outcomes; metrics, the
    gateway and the proxy all ask it.

    :param error: the exception (for a Twisted ``Failure``, pass
        ``failure.value``; ``None`` counts as ``"internal"``).
    :returns: one of :data:`OUTCOMES` other than ``"ok"``.
    """
    if isinstance(error, FramedClientError):
        return error.outcome
    # Looked up in sys.modules rather than imported: this module stays free
    # of Twisted, and an error cannot be an instance of a class whose module
    # was never imported.
    for module in ("twisted.internet.defer", "asyncio"):
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(error, loaded.CancelledError):
            return CANCELLED
    return INTERNAL
