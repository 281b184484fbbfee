"""
The errors framedclient raises or fails Deferreds with.

Every error is a :class:`FramedClientError`, so one ``except`` (or one
``addErrback`` with ``failure.trap``) catches everything the library itself
produces.  Each message says what happened and what the caller can do about
it, because these strings end up in logs read by someone who did not write
the code.

This module imports nothing from Twisted: the sans-IO framers and codecs
raise these errors too.
"""

from __future__ import annotations

__all__ = [
    "ClientClosed",
    "ConnectionLost",
    "CorruptFrame",
    "FrameTooLarge",
    "FramedClientError",
    "Overloaded",
    "ProtocolError",
    "RemoteError",
    "RequestTimeout",
    "Unavailable",
]


class FramedClientError(Exception):
    """
    Base of every error framedclient produces.
    """


class ProtocolError(FramedClientError):
    """
    The peer sent bytes that do not follow the protocol.

    A protocol error is fatal for the connection it happened on (framing is
    lost, so nothing after it can be trusted), never for other connections.

    :ivar frames: whole frames that were decoded from the same ``feed`` call
        before the error was found; a caller that wants to keep them can.
    """

    def __init__(self, message: str, frames: list[bytes] | None = None) -> None:
        super().__init__(message)
        self.frames: list[bytes] = frames if frames is not None else []


class FrameTooLarge(ProtocolError):
    """
    A frame is longer than the configured maximum.

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


class Overloaded(FramedClientError):
    """
    The client is at capacity and shed this request without sending it.

    The request was never sent.  Back off and retry later, or raise the
    limits (``max_in_flight``, ``max_pending``) if the server can take more.
    """


class Unavailable(FramedClientError):
    """
    No connection is ready to carry the request, and the caller asked not to
    wait for one (``wait_for_ready=False``), or the wait ran out.

    The request was never sent; it is safe to retry once the server is back.
    """


class RemoteError(FramedClientError):
    """
    The server answered the request with an error reply.

    The request reached the server and was processed (and failed there);
    the message is the server's.

    :ivar message: the server's error text.
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"server replied with an error: {message}")
        self.message = message


class ClientClosed(FramedClientError):
    """
    The client (or connection) is closed or closing and accepts no new
    requests.  Create a new client, or stop sending before ``close()``.
    """
