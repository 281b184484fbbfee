"""
The HTTP gateway: the pool, as HTTP.

=====================  ======================================================
``POST /v1/request``   the body goes upstream as one request; the reply body
                       comes back as ``application/octet-stream``
``POST /v1/stream``    the body goes upstream as a streamed request; its parts
                       come back as records of a chunked response
                       (:mod:`framedclient.runner.streaming`)
``GET /v1/subscribe``  ``?topic=T``: the topic's messages as Server-Sent
                       Events
``GET /v1/stats``      a small JSON summary (what the status page polls)
``GET /metrics``       Prometheus text format
``GET /livez``         liveness: 200 while the process (its reactor) runs,
                       whatever the upstreams do
``GET /readyz``        readiness: 200 when at least one upstream connection
                       is ready, else 503; JSON detail either way
``GET /healthz``       the same as ``/readyz`` (kept for older probes)
``GET /debug/state``   JSON of :meth:`FramedClient.debug_state`
``GET /``              the live status page (``status.html``)
=====================  ======================================================

Every error is a status a client can act on plus a short JSON body
``{"error": KIND, "message": TEXT}``; :data:`ERROR_STATUSES` is the table.
The message is written for the HTTP caller; where the library's own
exception text says more (which upstream refused, say) it comes along as
``"detail"``.  Every 503 carries ``Retry-After:`` :data:`RETRY_AFTER`.

Why the upstream's own error reply is 500 and not 502: 502 Bad Gateway
means the upstream's answer was invalid or missing (RFC 9110, 15.6.3), which
is what a lost connection or a protocol error is.  An error *reply* is a
valid answer: the upstream processed the request and reported failure,
which, seen from the HTTP caller, is the origin failing to fulfil it (500,
as a reverse proxy passes an application's 500 through).  The ``error``
field (``remote_error``) tells it apart from the gateway's own bugs
(``internal``), and the two-way split keeps 502 meaning "the upstream is
broken" on dashboards.

Why the request body is bounded here: ``twisted.web`` buffers a whole
request body before rendering, so without a bound one ``POST`` could make
the gateway store gigabytes.  :class:`GatewayRequest` stops storing once
the body exceeds what the codec can carry (it still reads and discards the
rest, so the connection stays usable) and the resource answers 400.

Why a disconnecting HTTP client cancels its upstream request: nobody would
read the reply, and the in-flight slot (and the server's work, since fc1
sends a cancel frame) would be wasted until the timeout.

Why replies go out through :class:`~framedclient.runner.replies.ReplyWriter`
and not one ``request.write``: the reply outlives its in-flight slot, so
only a budget of its own (:attr:`Gateway.replies`) bounds the memory that
clients who do not read can make the gateway hold; see
:mod:`framedclient.runner.replies`.

Why the connection limits (:class:`HTTPLimits`): ``twisted.web`` resets its
idle timeout on every byte, so a client trickling a header byte at a time
("slowloris") holds its connection, and its file descriptor, for as long as
it likes; enough of them exhaust ``RLIMIT_NOFILE`` and the gateway stops
accepting even its health probes.  :class:`GatewayChannel` gives the headers
and the body each an absolute deadline that incoming bytes do not extend,
answers malformed framing with a 400 at once instead of waiting for the idle
timeout, and the factory caps the open connections below the descriptor
limit; at the cap a new connection evicts the oldest one that has not sent
a complete request yet (idle or still trickling headers), so a probe that
sends its request promptly gets through while the trickling ones go.
"""

from __future__ import annotations

import io
import json
import math
import re
import resource
import socket
import struct
from collections import deque
from collections.abc import Callable
from importlib import resources
from typing import IO, Any, Literal, Protocol
from urllib.parse import parse_qs, urlsplit

import attrs
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from framedclient import __version__, compiled
from framedclient.client import FramedClient
from framedclient.codecs import Codec, Matching, Message
from framedclient.errors import (
    INTERNAL,
    OK,
    OUTCOMES,
    ClientClosed,
    RemoteError,
    outcome_of,
)
from framedclient.metrics import (
    PROMETHEUS_CONTENT_TYPE,
    CounterSample,
    GaugeSample,
    Metrics,
    prometheus_text,
)
from framedclient.runner.cluster import (
    Merged,
    WorkerEntry,
    merge_reports,
    samples_to_json,
)
from framedclient.runner.codecspec import codec_overhead
from framedclient.runner.listening import ListeningService
from framedclient.runner.replies import ReplyBudget, ReplyWriter
from framedclient.runner.settingtext import setting_texts
from framedclient.runner.streaming import (
    StreamCounters,
    StreamLimits,
    StreamRelay,
    SubscriptionRelay,
)

__all__ = [
    "ERROR_STATUSES",
    "HTTP_MESSAGES",
    "LINGER",
    "MAX_DECLARED_LENGTH",
    "MAX_TIMEOUT",
    "OUTCOME_KINDS",
    "RETRY_AFTER",
    "Cluster",
    "Gateway",
    "GatewayChannel",
    "GatewayRequest",
    "GatewayService",
    "GatewaySite",
    "HTTPLimits",
    "ThroughputHistory",
    "default_max_connections",
]

_log = Logger()

#: The largest per-request timeout a caller may ask for, in seconds: an
#: in-flight slot held by ``!hold`` for a day is a leak, not a request.
MAX_TIMEOUT = 3600.0

#: The ``Retry-After`` of every 503, in seconds.  A constant, not a figure
#: from the connections' backoff: a 503 has several causes (shed, no ready
#: connection, stopping), each over in about a second or handled by going
#: elsewhere, and a caller retrying a second later costs one cheap 503.
RETRY_AFTER = 1

#: Error kind -> (HTTP status, what the caller should do).  The kinds are
#: the ``"error"`` field of the JSON body.
ERROR_STATUSES: dict[str, tuple[int, str]] = {
    "overloaded": (503, "shed without being sent; retry after Retry-After seconds"),
    "unavailable": (503, "no upstream connection is ready; not sent; retry later"),
    "closed": (503, "the gateway is shutting down; not sent; retry elsewhere"),
    "timeout": (504, "no reply in time; the request may have been processed"),
    "remote_error": (
        500,
        "the upstream processed it and answered with an error",
    ),
    "connection_lost": (502, "the upstream connection broke; may have been processed"),
    "protocol_error": (502, "the upstream broke the protocol"),
    "bad_timeout": (400, "timeout must be a positive number of seconds"),
    "bad_idempotent": (400, "idempotent must be 1, true, 0 or false"),
    "too_large": (413, "the body is larger than the codec can carry"),
    "bad_body": (400, "the codec cannot carry this body"),
    "method_not_allowed": (405, "wrong HTTP method"),
    "not_found": (404, "no such endpoint"),
    "cancelled": (503, "cancelled upstream; the request may have been processed"),
    "reply_overloaded": (
        503,
        "processed, but the gateway holds too many unread replies; retry later",
    ),
    "internal": (500, "a bug in the gateway; see its log"),
    "workers_unavailable": (
        503,
        "the worker supervisor did not answer with the other workers' figures",
    ),
    "bad_topic": (400, "give topics the upstream can carry: ?topic=NAME"),
    "not_supported": (501, "the upstream codec has no streams or push messages"),
}

#: Error kind -> the message an HTTP caller gets instead of the library's
#: (whose text advises on the library's own parameters); the library's
#: text stays in the body's ``"detail"``.
HTTP_MESSAGES: dict[str, str] = {
    "overloaded": (
        "the gateway is at its in-flight limit and shed this request without "
        "sending it upstream; retry after Retry-After seconds"
    ),
    "unavailable": (
        "no upstream server is reachable right now, so the request was not "
        "sent; retry after Retry-After seconds"
    ),
    "closed": (
        "the gateway is shutting down and did not send the request; retry, "
        "preferably against another instance"
    ),
    "protocol_error": (
        "the upstream sent something this gateway cannot read (a protocol "
        "error) and its connection was closed; the request may have been "
        "processed"
    ),
    "cancelled": ("the upstream request was cancelled; it may have been processed"),
    "reply_overloaded": (
        "the upstream processed the request, but the gateway already holds "
        "its budget of reply bytes for clients that have not read them, so "
        "this reply was dropped; retry after Retry-After seconds if the "
        "request is safe to repeat"
    ),
}

#: Request outcome (:data:`~framedclient.errors.OUTCOMES`, what the client's
#: metrics count) -> error kind in :data:`ERROR_STATUSES`, which gives the
#: HTTP status.  Every outcome but ``"ok"`` is here; most keep their name,
#: the caller's own mistakes keep the gateway's older, shorter kinds.
OUTCOME_KINDS: dict[str, str] = {
    **{outcome: outcome for outcome in OUTCOMES if outcome != OK},
    "invalid_request": "bad_body",
    "request_too_large": "too_large",
}


class Cluster(Protocol):
    """
    Where a worker of ``twist framedclient --workers N`` gets the figures of
    every worker (see :mod:`framedclient.runner.workers`).

    :ivar worker: this worker's index.
    """

    worker: int

    def entries(self) -> Deferred[list[WorkerEntry]]:
        """Every worker slot with a fresh report; fails if unreachable."""
        ...


class HTTPRequest(Protocol):
    """
    What the resources use of a ``twisted.web`` request, typed (Twisted's
    own methods are not annotated).
    """

    method: bytes
    uri: bytes
    path: bytes
    content: IO[bytes] | None

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def setResponseCode(self, code: int) -> None: ...

    def getHeader(self, key: bytes) -> bytes | None: ...

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...

    def notifyFinish(self) -> Deferred[None]: ...


def _finite(value: Any) -> Any:
    """
    ``value`` with every non-finite float replaced by ``None``: JSON has no
    infinity, and browsers reject ``Infinity`` in ``JSON.parse``.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_body(request: HTTPRequest, status: int, payload: Any) -> bytes:
    body = json.dumps(_finite(payload), separators=(",", ":")).encode("utf-8")
    request.setResponseCode(status)
    if status == 503:
        # Every 503 says when to come back, whichever resource sends it.
        request.setHeader(b"retry-after", b"%d" % RETRY_AFTER)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def error_body(
    request: HTTPRequest, kind: str, message: str, detail: str | None = None
) -> bytes:
    """
    Set the status for ``kind`` (see :data:`ERROR_STATUSES`) and return the
    JSON error body, with ``"detail"`` when given.
    """
    status = ERROR_STATUSES[kind][0]
    payload = {"error": kind, "message": message}
    if detail is not None:
        payload["detail"] = detail
    return _json_body(request, status, payload)


def for_http(kind: str, message: str) -> tuple[str, str | None]:
    """
    The message and detail an HTTP caller gets for ``kind`` and the
    library's ``message``: :data:`HTTP_MESSAGES` with the library's text as
    detail where there is one, else the library's text alone.
    """
    http_message = HTTP_MESSAGES.get(kind)
    if http_message is None:
        return message, None
    return http_message, message


def unavailable_for_http(message: str, fail_fast: bool) -> tuple[str, str]:
    """
    The message and detail of a 503 ``unavailable``: worded with the
    gateway's own option (``--fail-fast``), where the library's text
    advises on its keyword (``wait_for_ready``), which an HTTP caller or
    operator cannot pass.  The detail keeps the library's diagnosis (the
    connect errors), without its advice.
    """
    if fail_fast:
        http_message = (
            "no upstream connection is ready, so the request was not sent; "
            "the gateway runs with --fail-fast, which answers at once instead "
            "of waiting for a connection (without it a request waits up to "
            "its timeout); retry after Retry-After seconds"
        )
    else:
        http_message = (
            "no upstream connection became ready within the request's "
            "timeout, so the request was not sent; retry after Retry-After "
            "seconds"
        )
    sentences = re.split(r"(?<=[.;])\s+", message)
    detail = " ".join(s for s in sentences if "wait_for_ready" not in s).strip()
    return http_message, detail or message


def classify(failure: Failure) -> tuple[str, str]:
    """
    The error kind (a key of :data:`ERROR_STATUSES`, hence the HTTP status)
    and message for a failed upstream request, from the error's outcome
    (:func:`~framedclient.errors.outcome_of`) through :data:`OUTCOME_KINDS`.
    """
    error = failure.value
    outcome = outcome_of(error)
    kind = OUTCOME_KINDS[outcome]
    if isinstance(error, RemoteError):
        return kind, error.message
    if outcome == INTERNAL:
        return kind, f"{type(error).__name__}: {error}"
    return kind, str(error)


#: After answering a request it will not read (400, 408), how long the
#: gateway keeps discarding what the client still sends before it drops
#: the connection, in seconds.  Closing at once, with the client's bytes
#: unread, would make the kernel send a reset that can destroy the answer
#: before the client reads it (RFC 9112, 9.6 "lingering close").
LINGER = 2.0

#: The largest ``Content-Length`` or chunk size the gateway parses: larger
#: ones (``2**80``) are not a body anybody sends but an attempt to hold the
#: connection, and get a 400 at once.  Bodies above the codec's limit but
#: below this get the JSON ``too_large`` answer, 413, as soon as the headers
#: are in (:meth:`GatewayChannel.allHeadersReceived`).
MAX_DECLARED_LENGTH = (1 << 63) - 1

#: Descriptors kept free below ``RLIMIT_NOFILE`` besides two per upstream
#: connection (the embedded backend's end of it too): the listening
#: sockets, log files, the ``--listen`` proxy's clients, and connections
#: being evicted while new ones are accepted.
FD_MARGIN = 64


def default_max_connections(
    upstream_connections: int, soft_limit: int | None = None
) -> int:
    """
    The default cap on open HTTP connections: the soft ``RLIMIT_NOFILE``
    (or ``soft_limit``) minus two descriptors per upstream connection and
    :data:`FD_MARGIN`, and at least 16.

    A gateway that accepted until ``accept()`` failed with ``EMFILE`` could
    no longer open upstream connections or answer its health probes.
    """
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY or soft_limit > 1 << 20:
        soft_limit = 1 << 20
    return max(16, soft_limit - 2 * upstream_connections - FD_MARGIN)


@attrs.frozen
class HTTPLimits:
    """
    What one HTTP client may hold of the gateway.

    :ivar max_connections: open HTTP connections at most; ``None``: no cap.
    :ivar header_timeout: seconds from a connection's opening (or from the
        first byte of a later request on it) to the end of the request's
        headers; ``None``: only the idle timeout applies.
    :ivar body_timeout: seconds from the end of the headers to the end of
        the body; ``None``: no deadline.
    """

    max_connections: int | None = None
    header_timeout: float | None = 10.0
    body_timeout: float | None = 60.0


#: Where a connection is in its current request.
_Phase = Literal["idle", "headers", "body", "handling", "rejected"]


class GatewayChannel(HTTPChannel):
    """
    An ``HTTPChannel`` with deadlines that trickling cannot extend and a
    fast 400 for malformed framing.

    ``twisted.web`` itself waits for the idle timeout on a request line that
    ends in a bare LF (it looks for CRLF) or on a chunk of ``2**80`` bytes,
    and closes without an answer on a line longer than its limit.
    """

    #: The site sets this; a bare channel (in tests) has no deadlines.
    limits: HTTPLimits = HTTPLimits(header_timeout=None, body_timeout=None)
    phase: _Phase = "headers"
    _deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.limits = getattr(getattr(self, "site", None), "limits", self.limits)
        super().connectionMade()  # type: ignore[no-untyped-call]
        self._arm("headers", self.limits.header_timeout)

    def _arm(self, phase: _Phase, seconds: float | None) -> None:
        self._disarm()
        self.phase = phase
        if seconds is not None:
            self._deadline = self._later(seconds, self._expired, phase)

    def _later(
        self, seconds: float, f: Callable[..., None], *args: Any
    ) -> IDelayedCall:
        # The site's reactor's callLater (HTTPFactory.buildProtocol sets it).
        later: Any = self.callLater
        call: IDelayedCall = later(seconds, f, *args)
        return call

    def _disarm(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _expired(self, phase: _Phase) -> None:
        self._deadline = None
        _log.info(
            "HTTP client {peer} did not send the request {what} in time; closing",
            peer=str(self._transport.getPeer()),
            what=phase,
        )
        self.reject(b"408 Request Timeout")

    def dataReceived(self, data: bytes) -> None:
        if self.phase == "idle":
            # A new request on a kept-alive connection: its headers are due.
            self._arm("headers", self.limits.header_timeout)
        super().dataReceived(data)  # type: ignore[no-untyped-call]
        if self.phase == "headers" and self.line_mode and b"\n" in self._buffer:
            # What is left in line mode holds no CRLF: a bare LF ends a line.
            self.reject(b"400 Bad Request")

    def lineReceived(self, line: bytes) -> None:
        if line[:1] in (b" ", b"\t") and not self._HTTPChannel__first_line:  # type: ignore[attr-defined]
            # An obs-folded header line (RFC 9112, 5.2): twisted.web joins
            # it to the previous header, so a folded Transfer-Encoding
            # would be read differently by a proxy in front that does not.
            # Refused, as the RFC allows, rather than guessed at.
            self.reject(b"400 Bad Request")
            return
        super().lineReceived(line)  # type: ignore[no-untyped-call]

    def allHeadersReceived(self) -> None:
        limit: int | None = getattr(getattr(self, "site", None), "max_body", None)
        length: int | None = self.length
        if limit is not None and length is not None and length > limit:
            # Answered now, before any body byte is read and before
            # twisted.web would send "100 Continue": the client learns at
            # once, and a 1 GiB body costs neither bandwidth nor the body
            # deadline's wait.  The connection closes, its framing unread.
            self._refuse_body(length, limit)
            return
        super().allHeadersReceived()  # type: ignore[no-untyped-call]
        if self.phase == "headers":
            self._arm("body", self.limits.body_timeout)

    def refuse_chunked_body(self, limit: int) -> None:
        """
        Answer 413 for a chunked body that grew past ``limit``, at once.
        """
        self._refuse_body(None, limit)

    def _refuse_body(self, length: int | None, limit: int) -> None:
        size = "request body" if length is None else f"request body of {length} bytes"
        payload = {
            "error": "too_large",
            "message": (
                f"{size} exceeds {limit} bytes, the most the codec can carry "
                f"in one frame; nothing was sent"
            ),
        }
        count = getattr(getattr(self, "site", None), "count", None)
        if count is not None:
            count(413)
        self.reject(
            b"413 Content Too Large",
            json.dumps(payload, separators=(",", ":")).encode("utf-8"),
        )

    def allContentReceived(self) -> None:
        if self.phase == "rejected":
            # Answered already (413 before the body): nothing to serve.
            return
        self._disarm()
        self.phase = "handling"
        super().allContentReceived()  # type: ignore[no-untyped-call]

    def requestDone(self, request: Request) -> None:
        if self.persistent and self.phase == "handling":
            # Before super(): it replays pipelined bytes into dataReceived.
            self.phase = "idle"
        super().requestDone(request)  # type: ignore[no-untyped-call]

    def _maybeChooseTransferDecoder(self, header: bytes, data: bytes) -> bool:
        if header == b"Content-Length" and data.isdigit():
            # int() refuses over 4300 digits with a ValueError twisted.web
            # does not catch; and an absurd length only holds the connection.
            if len(data) > 19 or int(data) > MAX_DECLARED_LENGTH:
                self._respondToBadRequestAndDisconnect()
                self.length = None
                return False
        return bool(super()._maybeChooseTransferDecoder(header, data))  # type: ignore[no-untyped-call]

    def rawDataReceived(self, data: bytes) -> None:
        super().rawDataReceived(data)
        decoder = self._transferDecoder
        length = getattr(decoder, "length", None)
        if (
            self.phase == "body"
            and getattr(decoder, "state", None) == "BODY"
            and isinstance(length, int)
            and length > MAX_DECLARED_LENGTH
        ):
            self._respondToBadRequestAndDisconnect()

    def lineLengthExceeded(self, line: bytes) -> None:
        # A request line or header over MAX_LENGTH (16 KiB): twisted.web
        # would close without a word.
        self.reject(b"400 Bad Request")

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.reject(b"400 Bad Request")

    @property
    def evictable(self) -> bool:
        """
        Whether closing this connection loses no request: it is idle or
        still receiving its request's headers.
        """
        return self.phase in ("idle", "headers")

    def reject(self, status: bytes, body: bytes = b"") -> None:
        """
        Answer ``status`` (with a JSON ``body`` if given, else an empty one),
        stop reading requests, and close once the client has read the answer
        (or after :data:`LINGER` seconds).
        """
        if self.phase == "rejected" or self.transport is None:
            return
        self._disarm()
        self.phase = "rejected"
        self.persistent = False
        content_type = b"Content-Type: application/json\r\n" if body else b""
        self.transport.write(
            b"HTTP/1.1 "
            + status
            + b"\r\nConnection: close\r\n"
            + content_type
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        # Stop LineReceiver's loop over what is buffered, and read nothing
        # more: the framing is lost.
        self._buffer = b""
        self.paused = True
        self.dataReceived = self._discard  # type: ignore[method-assign]
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if half_close is None:
            self._transport.loseConnection()
        else:
            half_close()
        self._deadline = self._later(LINGER, self._abort)

    def _discard(self, data: bytes) -> None:
        pass

    def _abort(self) -> None:
        self._deadline = None
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            self._transport.loseConnection()

    @property
    def _transport(self) -> Any:
        return self.transport

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._disarm()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


class GatewayRequest(Request):
    """
    A request whose body is stored only up to the site's ``max_body``.

    A chunked body that grows beyond it is answered 413 by the channel at
    once, and the connection closes (a ``Content-Length`` above it never
    gets here: the channel answers 413 before reading the body).
    """

    body_too_large = False

    def _max_body(self) -> int:
        site = getattr(self.channel, "site", None)
        limit: int | None = getattr(site, "max_body", None)
        return limit if limit is not None else 1 << 62

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._max_body():
            self.body_too_large = True
            self.content = io.BytesIO()
            return
        super().gotLength(length)  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_too_large:
            return
        assert self.content is not None
        if self.content.tell() + len(data) > self._max_body():
            # Chunked body that grew too large: drop what we kept too, and
            # answer 413 now rather than read the rest (it may never end).
            self.body_too_large = True
            self.content.close()
            self.content = io.BytesIO()
            refuse = getattr(self.channel, "refuse_chunked_body", None)
            if refuse is not None:
                refuse(self._max_body())
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]


class GatewaySite(Site):
    """
    A :class:`~twisted.web.server.Site` that bounds request bodies, serves
    over :class:`GatewayChannel` (deadlines from ``limits``) and keeps no
    access log (a gateway at thousands of requests per second would spend
    more on the log than on the requests; ``/metrics`` counts them).
    """

    noisy = False
    protocol = GatewayChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: IResource,
        max_body: int,
        limits: HTTPLimits | None = None,
        count: Callable[[int], None] | None = None,
    ) -> None:
        """
        :param count: counts a response status the channel answers itself
            (413 before the body), as the resources count theirs.
        """
        super().__init__(resource, requestFactory=GatewayRequest)  # type: ignore[no-untyped-call]
        self.max_body = max_body
        self.limits = limits if limits is not None else HTTPLimits()
        self.count = count

    def log(self, request: object) -> None:
        pass


class Gateway:
    """
    The state the HTTP resources share: where the client is, what the
    gateway has answered, and the resource tree.

    :param get_client: returns the running client, or ``None`` while the
        service is stopped (the endpoints then answer 503).
    :param clock: for uptime and the stats timestamp.
    :param codec: the upstream codec, to bound request bodies.
    :param describe: JSON-able facts for ``/v1/stats`` (upstreams, codec).
    :param extra_stats: more of ``/v1/stats``, computed per call (the
        proxy's counters).
    :param replies: the budget replies are written under (see
        :mod:`framedclient.runner.replies`); its defaults if not given.
    :param streams: what one ``/v1/stream`` or ``/v1/subscribe`` client may
        hold (see :mod:`framedclient.runner.streaming`); its defaults if not
        given.
    :param get_stream_client: returns the client ``/v1/stream`` opens its
        streams on (its own connections, so that a stream held by a slow
        HTTP client delays no ``/v1/request``); ``get_client`` if not given.
    """

    def __init__(
        self,
        get_client: Callable[[], FramedClient | None],
        clock: IReactorTime,
        codec: Codec,
        describe: dict[str, Any] | None = None,
        extra_stats: Callable[[], dict[str, Any]] | None = None,
        replies: ReplyBudget | None = None,
        streams: StreamLimits | None = None,
        get_stream_client: Callable[[], FramedClient | None] | None = None,
    ) -> None:
        self.get_client = get_client
        self.get_stream_client = get_stream_client or get_client
        #: the bounds of each HTTP stream and SSE subscriber
        self.streams = streams if streams is not None else StreamLimits()
        #: open HTTP streams and subscribers, and the slow ones dropped
        self.stream_counters = StreamCounters()
        #: the reply bytes held for HTTP clients, bounded.
        self.replies = replies if replies is not None else ReplyBudget(clock)
        #: the HTTP connection factory while a GatewayService serves this
        #: gateway: its open, evicted and refused connections are reported
        self.connections: _TrackingFactory | None = None
        self.clock = clock
        self.started_at = clock.seconds()
        self.describe = describe or {}
        self.extra_stats = extra_stats
        self.max_body = max(0, codec.max_frame - codec_overhead(codec))
        #: HTTP requests waiting for their upstream reply.
        self.in_flight = 0
        #: responses to /v1/request by status code.
        self.responses: dict[int, int] = {}
        #: waiters for in_flight to reach zero (graceful stop).
        self._idle_waiters: list[Deferred[None]] = []
        #: completed requests per second, for the status page's chart;
        #: sampling runs while the :class:`GatewayService` does.
        self.throughput = ThroughputHistory(
            clock, get_client, metrics_of=self.request_metrics
        )
        #: in a worker of ``--workers N``: the figures of all workers, which
        #: /metrics, /v1/stats, /debug/state and /v1/throughput then serve.
        self.cluster: Cluster | None = None

    def resource(self) -> IResource:
        """
        The resource tree rooted at ``/``.
        """
        root = _Root()
        root.putChild(b"", StatusPage(self))
        v1 = _Root()
        v1.putChild(b"request", RequestResource(self))
        v1.putChild(b"stream", StreamResource(self))
        v1.putChild(b"subscribe", SubscribeResource(self))
        v1.putChild(b"stats", StatsResource(self))
        v1.putChild(b"throughput", ThroughputResource(self))
        v1.putChild(b"config", ConfigResource(self))
        root.putChild(b"v1", v1)
        root.putChild(b"metrics", MetricsResource(self))
        root.putChild(b"livez", LiveResource(self))
        root.putChild(b"readyz", HealthResource(self, "/readyz"))
        root.putChild(b"healthz", HealthResource(self, "/healthz"))
        debug = _Root()
        debug.putChild(b"state", DebugStateResource(self))
        root.putChild(b"debug", debug)
        return root

    def site(self, limits: HTTPLimits | None = None) -> GatewaySite:
        return GatewaySite(self.resource(), self.max_body, limits, self.count)

    def count(self, status: int) -> None:
        self.responses[status] = self.responses.get(status, 0) + 1

    def when_idle(self) -> Deferred[None]:
        """
        Fires once no HTTP request waits for an upstream reply.
        """
        if not self.in_flight:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        return d

    def _request_done(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                if not d.called:  # a waiter may have timed out
                    d.callback(None)

    def request_metrics(self, client: FramedClient) -> Metrics:
        """
        The request figures of everything this gateway sent upstream:
        ``client``'s, plus those of the ``/v1/stream`` pool when streams
        have a client of their own, so that ``framedclient_requests_total``
        and ``/v1/stats`` count a stream whichever pool carried it.
        """
        stream_client = self.get_stream_client()
        if stream_client is None or stream_client is client:
            return client.metrics
        totals = client.metrics.totals()
        totals.merge(stream_client.metrics)
        return totals

    def stats(self, client: FramedClient) -> dict[str, Any]:
        """
        What ``/v1/stats`` serves: the client's stats without per-connection
        detail, plus time, uptime and the gateway's own counters.
        """
        stats = client.stats()
        del stats["metrics"]
        metrics = self.request_metrics(client).snapshot()
        now = self.clock.seconds()
        stats.update(
            {
                "time": now,
                "uptime": now - self.started_at,
                # "compiled" or "pure" (framedclient.compiled)
                "mode": str(compiled),
                "ready": client.pool.ready_count,
                "requests": metrics["requests"],
                "latency": metrics["latency"],
                "failure_latency": metrics["failure_latency"],
                "dropped_replies": metrics["dropped_replies"],
                "retries": metrics["retries"],
                "gateway": {
                    "in_flight": self.in_flight,
                    "responses": {str(k): v for k, v in sorted(self.responses.items())},
                    "max_body": self.max_body,
                    "held_reply_bytes": self.replies.held,
                    "max_reply_bytes": self.replies.max_bytes,
                    "peak_reply_bytes": self.replies.peak,
                    "replies_refused": self.replies.refused,
                    "stalled_clients_aborted": self.replies.stalled,
                    **self.stream_counters.as_json(),
                    **self._connection_stats(),
                },
                **self.describe,
            }
        )
        if self.extra_stats is not None:
            stats.update(self.extra_stats())
        return stats

    def report(self, client: FramedClient) -> dict[str, Any]:
        """
        This process's figures for the other workers of ``--workers N``
        (:mod:`framedclient.runner.cluster` adds them up): metrics
        losslessly, the /metrics samples, /v1/stats, /debug/state and the
        throughput history, all JSON-able.
        """
        state = client.debug_state()
        state.pop("metrics", None)
        return {
            "metrics": self.request_metrics(client).export(),
            "samples": samples_to_json([*client.gauges(), *self.gauges()]),
            "stats": self.stats(client),
            "state": state,
            "throughput": self.throughput.as_json(),
            # Facts every worker shares (codec, pool size): not summed.
            "facts": sorted(self.describe),
        }

    def _connection_stats(self) -> dict[str, int]:
        factory = self.connections
        if factory is None:
            return {}
        return {
            "http_connections": factory.open_connections,
            "http_connections_evicted": factory.evicted,
            "http_connections_refused": factory.refused,
        }

    def _connection_samples(self) -> list[GaugeSample | CounterSample]:
        factory = self.connections
        if factory is None:
            return []
        return [
            GaugeSample(
                "framedclient_gateway_http_connections",
                "Open HTTP connections.",
                factory.open_connections,
            ),
            CounterSample(
                "framedclient_gateway_http_connections_evicted_total",
                "HTTP connections without a complete request closed to make "
                "room at the connection limit.",
                factory.evicted,
            ),
            CounterSample(
                "framedclient_gateway_http_connections_refused_total",
                "HTTP connections closed at once at the connection limit.",
                factory.refused,
            ),
        ]

    def _stream_samples(self) -> list[GaugeSample | CounterSample]:
        counters = self.stream_counters
        pool: list[GaugeSample | CounterSample] = []
        stream_client = self.get_stream_client()
        if self.get_stream_client is not self.get_client and stream_client:
            pool = [
                GaugeSample(
                    "framedclient_gateway_stream_pool_ready_connections",
                    "Ready upstream connections of the /v1/stream pool.",
                    stream_client.pool.ready_count,
                ),
                GaugeSample(
                    "framedclient_gateway_stream_pool_in_flight",
                    "Streams open on the /v1/stream pool's upstream connections.",
                    stream_client.in_flight,
                ),
                *(
                    CounterSample(
                        "framedclient_gateway_stream_pool_requests_total",
                        "Streams of the /v1/stream pool by outcome (counted in "
                        "framedclient_requests_total too).",
                        count,
                        {"outcome": outcome},
                    )
                    for outcome, count in stream_client.metrics.outcomes.items()
                ),
            ]
        return [
            *pool,
            GaugeSample(
                "framedclient_gateway_http_streams",
                "POST /v1/stream responses open.",
                counters.streams,
            ),
            GaugeSample(
                "framedclient_gateway_http_subscribers",
                "GET /v1/subscribe (Server-Sent Events) responses open.",
                counters.subscribers,
            ),
            CounterSample(
                "framedclient_gateway_http_streams_total",
                "POST /v1/stream responses opened.",
                counters.streams_total,
            ),
            CounterSample(
                "framedclient_gateway_http_subscribers_total",
                "GET /v1/subscribe (Server-Sent Events) responses opened.",
                counters.subscribers_total,
            ),
            CounterSample(
                "framedclient_gateway_slow_stream_clients_dropped_total",
                "HTTP stream and SSE clients dropped for reading too slowly.",
                counters.dropped,
            ),
            GaugeSample(
                "framedclient_gateway_held_stream_bytes",
                "Bytes buffered for HTTP stream and SSE clients.",
                counters.held_bytes,
            ),
        ]

    def gauges(self) -> list[GaugeSample | CounterSample]:
        """
        The gateway's own samples for ``/metrics``: HTTP requests in flight,
        ``framedclient_build_info`` and
        ``framedclient_http_responses_total{code}`` (``POST /v1/request``
        responses by status code, the counts ``/v1/stats`` shows).
        """
        samples: list[GaugeSample | CounterSample] = [
            GaugeSample(
                "framedclient_gateway_http_in_flight",
                "HTTP requests waiting for their upstream reply.",
                self.in_flight,
            ),
            GaugeSample(
                "framedclient_gateway_held_reply_bytes",
                "Bytes of replies being written to HTTP clients (bounded by "
                "the reply budget).",
                self.replies.held,
            ),
            CounterSample(
                "framedclient_gateway_replies_refused_total",
                "Replies dropped with 503 because the reply budget was full.",
                self.replies.refused,
            ),
            CounterSample(
                "framedclient_gateway_stalled_clients_aborted_total",
                "HTTP connections aborted for not reading their reply within "
                "the write deadline.",
                self.replies.stalled,
            ),
            *self._stream_samples(),
            *self._connection_samples(),
            GaugeSample(
                "framedclient_build_info",
                "Always 1; the version label is the running framedclient.",
                1,
                {"version": __version__},
            ),
        ]
        samples.extend(
            CounterSample(
                "framedclient_http_responses_total",
                "Responses to POST /v1/request, by HTTP status code.",
                count,
                {"code": str(code)},
            )
            for code, count in sorted(self.responses.items())
        )
        return samples


class _Root(Resource):
    """
    A directory whose unknown children are a JSON 404, not Twisted's HTML.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def getChild(self, path: bytes, request: HTTPRequest) -> IResource:
        return _NotFound()


class _NotFound(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def render(self, request: HTTPRequest) -> bytes:
        return error_body(
            request, "not_found", f"no endpoint at {request.path.decode('latin-1')}"
        )


def _not_get(request: HTTPRequest, path: str) -> bytes | None:
    """
    The 405 for a read-only endpoint asked with another method, else
    ``None``.
    """
    if request.method in (b"GET", b"HEAD"):
        return None
    request.setHeader(b"allow", b"GET, HEAD")
    return error_body(request, "method_not_allowed", f"{path} accepts GET only")


def _wrong_method(request: HTTPRequest, method: bytes, path: str) -> bytes | None:
    """
    The 405 for an endpoint that takes ``method`` alone, asked with
    another, else ``None``.
    """
    if request.method == method:
        return None
    request.setHeader(b"allow", method)
    return error_body(
        request,
        "method_not_allowed",
        f"{path} accepts {method.decode('ascii')} only",
    )


def _body_too_large(request: HTTPRequest, gateway: Gateway) -> bytes | None:
    """
    The 400 for a body the channel cut off at the codec's largest frame
    (it cannot go upstream in one frame), else ``None``.
    """
    if not getattr(request, "body_too_large", False):
        return None
    return error_body(
        request,
        "too_large",
        f"request body exceeds {gateway.max_body} bytes, the most the "
        f"codec can carry in one frame",
    )


class _GatewayResource(Resource):
    """
    An endpoint of ``gateway`` that answers at its own path (no children).
    """

    isLeaf = True

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gateway = gateway


class _JSONResource(_GatewayResource):
    """
    A read-only JSON endpoint: GET (and HEAD) only, 503 while stopped.
    """

    #: Whether a worker of ``--workers N`` answers with the sum of every
    #: worker's figures (:meth:`render_merged`) rather than its own.
    merged_view = False

    def render(self, request: HTTPRequest) -> bytes | int:
        refused = _not_get(request, self.path())
        if refused is not None:
            return refused
        client = self.gateway.get_client()
        if client is None:
            return error_body(
                request, "closed", HTTP_MESSAGES["closed"], "the gateway is stopped"
            )
        cluster = self.gateway.cluster
        if cluster is not None and self.merged_view:
            return self._render_cluster(request, cluster)
        return self.render_client(request, client)

    def _render_cluster(self, request: HTTPRequest, cluster: Cluster) -> int:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(entries: list[WorkerEntry]) -> None:
            if not gone:
                request.write(
                    self.render_merged(request, merge_reports(entries, cluster.worker))
                )
                request.finish()

        def failed(failure: Failure) -> None:
            if not gone:
                request.write(
                    error_body(
                        request,
                        "workers_unavailable",
                        "the worker supervisor did not answer with the other "
                        "workers' figures; retry after Retry-After seconds",
                        str(failure.value) or type(failure.value).__name__,
                    )
                )
                request.finish()

        cluster.entries().addCallbacks(answer, failed).addErrback(_log_bug)
        return NOT_DONE_YET

    def path(self) -> str:
        raise NotImplementedError

    def render_client(self, request: HTTPRequest, client: FramedClient) -> bytes:
        raise NotImplementedError

    def render_merged(self, request: HTTPRequest, merged: Merged) -> bytes:
        raise NotImplementedError


class StatsResource(_JSONResource):
    """``GET /v1/stats``"""

    def path(self) -> str:
        return "/v1/stats"

    merged_view = True

    def render_client(self, request: HTTPRequest, client: FramedClient) -> bytes:
        return _json_body(request, 200, self.gateway.stats(client))

    def render_merged(self, request: HTTPRequest, merged: Merged) -> bytes:
        return _json_body(request, 200, merged.stats())


class DebugStateResource(_JSONResource):
    """``GET /debug/state``: exactly :meth:`FramedClient.debug_state`."""

    def path(self) -> str:
        return "/debug/state"

    merged_view = True

    def render_client(self, request: HTTPRequest, client: FramedClient) -> bytes:
        return _json_body(request, 200, client.debug_state())

    def render_merged(self, request: HTTPRequest, merged: Merged) -> bytes:
        return _json_body(request, 200, merged.debug_state())


class LiveResource(_GatewayResource):
    """
    ``GET /livez``: 200 whenever the reactor runs to answer it.

    No upstream check, and 200 while stopping too: a liveness probe that
    failed with the upstream would have an orchestrator restart a healthy
    gateway for a database outage, and one that failed while draining would
    kill the drain.
    """

    def render(self, request: HTTPRequest) -> bytes:
        refused = _not_get(request, "/livez")
        if refused is not None:
            return refused
        uptime = self.gateway.clock.seconds() - self.gateway.started_at
        return _json_body(request, 200, {"status": "ok", "uptime": uptime})


class HealthResource(_JSONResource):
    """
    ``GET /readyz`` (and its older name ``/healthz``): 200 with a ready
    connection, else 503.
    """

    def __init__(self, gateway: Gateway, path: str = "/readyz") -> None:
        super().__init__(gateway)
        self._path = path

    def path(self) -> str:
        return self._path

    def render_client(self, request: HTTPRequest, client: FramedClient) -> bytes:
        ready = client.pool.ready_count
        detail = {
            "status": "ok" if ready else "unavailable",
            "ready": ready,
            "connections": len(client.pool),
            "states": client.pool.counts_by_state(),
            "upstreams": [
                {"name": c.name, "state": c.state, "last_error": c.last_error}
                for c in client.pool
            ],
        }
        return _json_body(request, 200 if ready else 503, detail)


class MetricsResource(_JSONResource):
    """``GET /metrics``: Prometheus text format."""

    def path(self) -> str:
        return "/metrics"

    merged_view = True

    def render_client(self, request: HTTPRequest, client: FramedClient) -> bytes:
        body = prometheus_text(
            self.gateway.request_metrics(client),
            [*client.gauges(), *self.gateway.gauges()],
        )
        request.setHeader(b"content-type", PROMETHEUS_CONTENT_TYPE.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return body

    def render_merged(self, request: HTTPRequest, merged: Merged) -> bytes:
        body = prometheus_text(merged.metrics, merged.samples())
        request.setHeader(b"content-type", PROMETHEUS_CONTENT_TYPE.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return body


class ThroughputHistory:
    """
    Completed requests per interval over the last few minutes, kept by the
    gateway so a freshly loaded status page shows them at once (the page
    alone only knows what it saw since it was loaded).

    Bounded: ``window`` samples of three numbers each.  Sampling reads the
    client's outcome counters once per ``interval`` on a
    :class:`~twisted.internet.task.LoopingCall` between :meth:`start` and
    :meth:`stop`; a new client (the service restarted) counts from zero.
    """

    def __init__(
        self,
        clock: IReactorTime,
        get_client: Callable[[], FramedClient | None],
        interval: float = 1.0,
        window: int = 300,
        metrics_of: Callable[[FramedClient], Metrics] | None = None,
    ) -> None:
        """
        :param metrics_of: the figures to read for ``client`` (the gateway's
            include its ``/v1/stream`` pool's); ``client.metrics`` if not
            given.
        """
        self.clock = clock
        self.get_client = get_client
        self._metrics_of = metrics_of or (lambda client: client.metrics)
        self.interval = interval
        #: ``(time, ok, failed)``: requests completed in the interval ending
        #: at ``time``.
        self.samples: deque[tuple[float, int, int]] = deque(maxlen=window)
        self._client: FramedClient | None = None
        self._last = (0, 0)
        self._loop: LoopingCall | None = None

    def start(self) -> None:
        """Sample every ``interval`` seconds until :meth:`stop`."""
        if self._loop is not None:
            return
        self._loop = LoopingCall(self.sample)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        """Stop sampling (no timer stays behind); the samples are kept."""
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    def sample(self) -> None:
        """Record the requests completed since the previous sample."""
        client = self.get_client()
        if client is None:
            return
        outcomes = self._metrics_of(client).outcomes
        ok = outcomes[OK]
        failed = sum(outcomes.values()) - ok
        if client is not self._client:
            self._client, self._last = client, (0, 0)
        last_ok, last_failed = self._last
        self._last = (ok, failed)
        self.samples.append(
            (self.clock.seconds(), max(0, ok - last_ok), max(0, failed - last_failed))
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "interval": self.interval,
            "window": self.samples.maxlen,
            "samples": [
                {"time": t, "ok": ok, "failed": failed}
                for t, ok, failed in self.samples
            ],
        }


class ThroughputResource(_JSONResource):
    """``GET /v1/throughput``: :class:`ThroughputHistory` as JSON."""

    def path(self) -> str:
        return "/v1/throughput"

    merged_view = True

    def render_client(self, request: HTTPRequest, client: FramedClient) -> bytes:
        return _json_body(request, 200, self.gateway.throughput.as_json())

    def render_merged(self, request: HTTPRequest, merged: Merged) -> bytes:
        return _json_body(request, 200, merged.throughput())


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return _finite(value)
    return repr(value)


class ConfigResource(_JSONResource):
    """
    ``GET /v1/config``: the running version and the client's effective
    settings (every :class:`~framedclient.config.ClientConfig` field;
    objects such as the codec and backoff policy as their ``repr``), and
    under ``"shown"`` each as the status page shows it (units, specs, the
    tracing actually done; :mod:`framedclient.runner.settingtext`).
    """

    def path(self) -> str:
        return "/v1/config"

    def render_client(self, request: HTTPRequest, client: FramedClient) -> bytes:
        return _json_body(request, 200, config_payload(self.gateway, client))


def config_payload(gateway: Gateway, client: FramedClient) -> dict[str, Any]:
    """
    The body of ``GET /v1/config`` (also embedded in the status page).
    """
    config = client.config
    settings = {
        field.name: _json_safe(getattr(config, field.name))
        for field in attrs.fields(type(config))
    }
    describe = gateway.describe
    shown = setting_texts(
        config,
        codec=str(describe.get("codec", type(config.codec).__name__)),
        backoff=describe.get("backoff"),
        tracing_active=bool(client.stats().get("tracing")),
    )
    return {"version": __version__, **describe, "config": settings, "shown": shown}


class StatusPage(Resource):
    """
    ``GET /``: the self-contained live status page.

    The Content-Security-Policy forbids every external fetch, so the page
    provably works offline and cannot leak anything to a third party.
    """

    isLeaf = True
    _html: bytes | None = None

    #: Where :meth:`render` puts the first snapshot, in ``status.html``.
    MARKER = b"<!--initial-->"

    def __init__(self, gateway: Gateway | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gateway = gateway

    def initial(self) -> dict[str, Any]:
        """
        What the page shows before its first poll returns (a slow link, a
        screenshot): the settings, and in a single process the figures
        too.  With ``--workers N`` the figures are every worker's sum,
        which takes a round trip to the supervisor: the page polls them.
        """
        gateway = self.gateway
        client = gateway.get_client() if gateway is not None else None
        if gateway is None or client is None:
            return {}
        snapshot: dict[str, Any] = {"config": config_payload(gateway, client)}
        if gateway.cluster is None:
            snapshot["stats"] = gateway.stats(client)
            snapshot["state"] = client.debug_state()
        return snapshot

    @classmethod
    def html(cls) -> bytes:
        if cls._html is None:
            cls._html = (
                resources.files("framedclient.runner")
                .joinpath("status.html")
                .read_bytes()
            )
        return cls._html

    def render(self, request: HTTPRequest) -> bytes:
        refused = _not_get(request, "/")
        if refused is not None:
            return refused
        body = self.html()
        snapshot = self.initial()
        if snapshot:
            data = json.dumps(_finite(snapshot), separators=(",", ":"), default=repr)
            # Inside <script>, "</" could end the element early.
            data = data.replace("</", "<\\/")
            body = body.replace(
                self.MARKER,
                b'<script type="application/json" id="initial">'
                + data.encode("utf-8")
                + b"</script>",
                1,
            )
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(
            b"content-security-policy",
            b"default-src 'none'; script-src 'unsafe-inline'; "
            b"style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
        )
        return body


class RequestResource(_GatewayResource):
    """
    ``POST /v1/request``: one upstream request per HTTP request.

    The timeout is the query parameter ``timeout`` or else the header
    ``X-Timeout``, in seconds; the client's ``--request-timeout`` otherwise.
    ``key`` / ``X-Key`` routes the request by key (``--balancer ketama``);
    ``idempotent`` / ``X-Idempotent`` (``1`` or ``true``) lets it be retried
    after a connection loss and hedged (``--hedge-after``).
    """

    def render(self, request: HTTPRequest) -> bytes | int:
        gateway = self.gateway
        refused = _wrong_method(request, b"POST", "/v1/request")
        if refused is not None:
            gateway.count(405)
            return refused
        refused = _body_too_large(request, gateway)
        if refused is not None:
            gateway.count(400)
            return refused
        try:
            timeout = _requested_timeout(request)
        except ValueError as error:
            gateway.count(400)
            return error_body(request, "bad_timeout", str(error))
        try:
            key, idempotent = _requested_routing(request)
        except ValueError as error:
            gateway.count(400)
            return error_body(request, "bad_idempotent", str(error))
        client = gateway.get_client()
        if client is None:
            gateway.count(503)
            return error_body(
                request, "closed", HTTP_MESSAGES["closed"], "the gateway is stopped"
            )
        assert request.content is not None
        body = request.content.read()
        gateway.in_flight += 1
        upstream = client.request(body, timeout, idempotent=idempotent, key=key)
        gone: list[bool] = []

        def disconnected(_: Failure) -> None:
            # The HTTP client went away: nobody will read the reply.
            gone.append(True)
            if not upstream.called:
                upstream.cancel()

        def replied(reply: bytes | Message) -> None:
            if gone:
                return
            if isinstance(reply, Message):
                # A codec with header fields: HTTP carries the body.
                reply = reply.body
            if not gateway.replies.reserve(len(reply)):
                # Refused, not queued: the reply is already in memory, and
                # waiting would hold it outside the budget.
                gateway.count(503)
                request.write(
                    error_body(
                        request,
                        "reply_overloaded",
                        HTTP_MESSAGES["reply_overloaded"],
                        f"{gateway.replies.held} reply bytes held, "
                        f"budget {gateway.replies.max_bytes}; this reply "
                        f"has {len(reply)}",
                    )
                )
                request.finish()
                return
            gateway.count(200)
            request.setHeader(b"content-type", b"application/octet-stream")
            request.setHeader(b"content-length", b"%d" % len(reply))
            ReplyWriter(request, reply, gateway.replies).start()

        def failed(failure: Failure) -> None:
            if gone:
                if outcome_of(failure.value) == INTERNAL:
                    _log.failure("Unexpected error for a gone HTTP client", failure)
                return
            kind, message = classify(failure)
            if kind == "internal":
                _log.failure("Unexpected error for an HTTP request", failure)
            gateway.count(ERROR_STATUSES[kind][0])
            detail: str | None
            if kind == "unavailable":
                fail_fast = not getattr(client, "wait_for_ready", True)
                text, detail = unavailable_for_http(message, fail_fast)
            else:
                text, detail = for_http(kind, message)
            request.write(error_body(request, kind, text, detail))
            request.finish()

        request.notifyFinish().addErrback(disconnected)
        upstream.addCallbacks(replied, failed)
        upstream.addBoth(lambda _: gateway._request_done())
        upstream.addErrback(_log_bug)
        return NOT_DONE_YET


def _log_bug(failure: Failure) -> None:
    _log.failure("Bug while answering an HTTP request", failure)


def _failure_fields(
    failure: Failure, client: FramedClient
) -> tuple[str, str, str | None]:
    """
    The error kind, message and detail an HTTP caller gets for a failed
    upstream request, stream or subscription (as ``/v1/request`` words it).
    """
    kind, message = classify(failure)
    if kind == "internal":
        _log.failure("Unexpected error for an HTTP request", failure)
    if kind == "unavailable":
        fail_fast = not getattr(client, "wait_for_ready", True)
        text, detail = unavailable_for_http(message, fail_fast)
        return kind, text, detail
    text, http_detail = for_http(kind, message)
    return kind, text, http_detail


def _failure_payload(failure: Failure, client: FramedClient) -> dict[str, Any]:
    kind, text, detail = _failure_fields(failure, client)
    payload = {"error": kind, "message": text}
    if detail is not None:
        payload["detail"] = detail
    return payload


class StreamResource(_GatewayResource):
    """
    ``POST /v1/stream``: the body goes upstream as a streamed request
    (:meth:`FramedClient.stream`), each part comes back as a record of a
    chunked response (:class:`~framedclient.runner.streaming.StreamRelay`).

    ``timeout`` / ``X-Timeout`` is the stream's idle timeout: how long it
    may wait for its next part while the HTTP client waits for one
    (``--request-timeout`` otherwise).  An HTTP client that disconnects
    cancels the stream upstream.
    """

    def render(self, request: HTTPRequest) -> bytes | int:
        gateway = self.gateway
        refused = _wrong_method(request, b"POST", "/v1/stream")
        if refused is None:
            refused = _body_too_large(request, gateway)
        if refused is not None:
            return refused
        try:
            timeout = _requested_timeout(request)
        except ValueError as error:
            return error_body(request, "bad_timeout", str(error))
        client = gateway.get_stream_client()
        if client is None:
            return error_body(
                request, "closed", HTTP_MESSAGES["closed"], "the gateway is stopped"
            )
        if client.config.codec.matching is not Matching.BY_ID:
            return error_body(
                request,
                "not_supported",
                "the upstream codec matches replies in order, so it has no "
                "streamed replies; use /v1/request",
            )
        if timeout is None:
            timeout = client.config.request_timeout
        assert request.content is not None
        try:
            stream = client.stream(
                request.content.read(),
                idle_timeout=timeout,
                buffer_bytes=gateway.streams.buffer_bytes,
            )
        except ClientClosed as error:
            return error_body(request, "closed", HTTP_MESSAGES["closed"], str(error))

        def early_error(failure: Failure) -> None:
            kind, text, detail = _failure_fields(failure, client)
            request.write(error_body(request, kind, text, detail))
            request.finish()

        StreamRelay(
            request,
            stream,
            gateway.clock,
            gateway.streams,
            gateway.stream_counters,
            early_error,
            lambda failure: _failure_payload(failure, client),
        ).start()
        return NOT_DONE_YET


class SubscribeResource(_GatewayResource):
    """
    ``GET /v1/subscribe?topic=T`` (the parameter repeated for several
    topics): the topics' messages as Server-Sent Events
    (:class:`~framedclient.runner.streaming.SubscriptionRelay`).  The
    subscription ends (unsubscribed upstream when no other subscriber of
    the gateway wants its topics) when the HTTP client goes.
    """

    def render(self, request: HTTPRequest) -> bytes | int:
        gateway = self.gateway
        refused = _wrong_method(request, b"GET", "/v1/subscribe")
        if refused is not None:
            return refused
        # Latin-1 both ways: the topic's bytes as sent, percent-escapes too.
        query = parse_qs(
            urlsplit(request.uri).query.decode("latin-1"),
            keep_blank_values=True,
            encoding="latin-1",
        )
        raw = query.get("topic", [])
        if not raw:
            return error_body(
                request,
                "bad_topic",
                "give at least one topic: /v1/subscribe?topic=NAME (repeat "
                "topic= for several)",
            )
        client = gateway.get_client()
        if client is None:
            return error_body(
                request, "closed", HTTP_MESSAGES["closed"], "the gateway is stopped"
            )
        if getattr(client.config.codec, "split_push", None) is None:
            return error_body(
                request,
                "not_supported",
                "the upstream codec has no push messages, so it has no "
                "subscriptions (fc1 has)",
            )
        topics = tuple(t.encode("latin-1") for t in raw)
        try:
            subscription = client.subscriptions.subscribe_all(
                topics, gateway.streams.buffer_bytes
            )
        except ClientClosed as error:
            return error_body(request, "closed", HTTP_MESSAGES["closed"], str(error))
        except (TypeError, ValueError) as error:
            return error_body(request, "bad_topic", str(error))

        def end_payload(failure: Failure) -> dict[str, Any]:
            if failure.check(ClientClosed):  # type: ignore[no-untyped-call]
                return {
                    "reason": "closed",
                    "message": "the gateway is shutting down; reconnect, "
                    "preferably to another instance",
                }
            return {"reason": "error", **_failure_payload(failure, client)}

        SubscriptionRelay(
            request,
            subscription,
            gateway.clock,
            gateway.streams,
            gateway.stream_counters,
            end_payload,
        ).start()
        return NOT_DONE_YET


def _requested_routing(request: HTTPRequest) -> tuple[bytes | None, bool]:
    """
    The routing key (query ``key`` first, as UTF-8, then header ``X-Key``,
    as its bytes) and whether the request is idempotent (query
    ``idempotent``, then header ``X-Idempotent``: ``1``/``true`` or
    ``0``/``false``).

    :raises ValueError: for an idempotent flag that is neither.
    """
    query = parse_qs(urlsplit(request.uri).query.decode("latin-1"))
    key: bytes | None = None
    if "key" in query:
        key = query["key"][-1].encode("utf-8")
    else:
        header = request.getHeader(b"x-key")
        if header is not None:
            key = header
    raw = query["idempotent"][-1] if "idempotent" in query else None
    if raw is None:
        header = request.getHeader(b"x-idempotent")
        raw = header.decode("latin-1") if header is not None else "false"
    flag = raw.strip().lower()
    if flag not in ("1", "true", "0", "false"):
        raise ValueError(f"idempotent must be 1, true, 0 or false, got {raw!r}")
    return key, flag in ("1", "true")


def _requested_timeout(request: HTTPRequest) -> float | None:
    """
    The timeout a request asks for (query ``timeout`` first, then header
    ``X-Timeout``), or ``None`` for the default.

    Only the query string is read, never form fields of the body:
    twisted.web also parses ``application/x-www-form-urlencoded`` bodies
    into ``request.args``, and a body is opaque data here.

    :raises ValueError: for a value that is not a positive number of seconds
        up to :data:`MAX_TIMEOUT`.
    """
    query = parse_qs(
        urlsplit(request.uri).query.decode("latin-1"), keep_blank_values=True
    )
    raw: str | None = None
    source = "timeout"
    if "timeout" in query:
        raw = query["timeout"][-1]
    else:
        header = request.getHeader(b"x-timeout")
        if header is not None:
            raw = header.decode("latin-1")
            source = "X-Timeout"
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (0 < value <= MAX_TIMEOUT):
        raise ValueError(
            f"{source} {raw!r} is not a number of seconds in (0, {MAX_TIMEOUT:g}]"
        )
    return value


class _TrackingFactory(WrappingFactory):
    """
    Wraps the site to know its open connections, so a graceful stop can
    close them after their responses are written, and wait until they are.
    """

    noisy = False
    protocols: dict[ProtocolWrapper, int]

    def logPrefix(self) -> str:
        # Twisted logs "<prefix> starting on PORT" (by default the class
        # names, "GatewaySite (_TrackingFactory)").
        return "framedclient HTTP"

    def __init__(self, site: Site, max_connections: int | None = None) -> None:
        super().__init__(site)  # type: ignore[no-untyped-call]
        self.max_connections = max_connections
        self._gone_waiters: list[Deferred[None]] = []
        #: connections closed to make room, until their connectionLost.
        self._evicting: set[ProtocolWrapper] = set()
        #: connections evicted / refused at the cap, for the log and tests.
        self.evicted = 0
        self.refused = 0

    @property
    def open_connections(self) -> int:
        """
        Connections open and not being closed to make room.
        """
        return len(self.protocols) - len(self._evicting)

    def buildProtocol(self, addr: IAddress | None) -> ProtocolWrapper | None:  # type: ignore[override]
        cap = self.max_connections
        if cap is not None and self.open_connections >= cap:
            if not self._evict_one():
                # Every connection is busy with a request: refuse this one
                # (the port closes it at once) rather than exhaust the
                # descriptors the upstream connections need.
                self.refused += 1
                return None
        wrapper: ProtocolWrapper | None = super().buildProtocol(addr)  # type: ignore[no-untyped-call]
        return wrapper

    def _evict_one(self) -> bool:
        """
        Close the oldest connection that has sent no complete request yet
        (idle, or trickling its headers); ``False`` if there is none.
        """
        for wrapper in self.protocols:  # in the order they connected
            if wrapper in self._evicting:
                continue
            channel = wrapper.wrappedProtocol
            if getattr(channel, "evictable", False) and wrapper.transport is not None:
                self._evicting.add(wrapper)
                self.evicted += 1
                if self.evicted == 1 or not self.evicted % 1000:
                    _log.warn(
                        "HTTP connection limit ({cap}) reached: closing the "
                        "oldest connections that have not sent a request "
                        "({evicted} so far); raise --http-max-connections "
                        "(and LimitNOFILE) if these are real clients",
                        cap=self.max_connections,
                        evicted=self.evicted,
                    )
                transport: Any = wrapper.transport
                transport.abortConnection()
                _release_descriptor(transport)
                return True
        return False

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        self._evicting.discard(p)
        super().unregisterProtocol(p)  # type: ignore[no-untyped-call]
        if not self.protocols:
            waiters, self._gone_waiters = self._gone_waiters, []
            for d in waiters:
                d.callback(None)

    def when_empty(self) -> Deferred[None]:
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._gone_waiters.append(d)
        return d


def _release_descriptor(transport: Any) -> None:
    """
    Close an aborted connection's socket now, with the reset
    ``abortConnection`` would send.

    ``abortConnection`` closes the socket on the next reactor turn, but one
    turn of Twisted's accept loop may accept a hundred connections, each
    evicting one at the cap: the descriptors of the evicted would pile up
    above the cap, and at ``RLIMIT_NOFILE`` Twisted's EMFILE recovery
    accepts and resets everything waiting in the backlog, the health probes
    included.  Twisted's own close later finds the socket closed and
    ignores it.
    """
    sock = getattr(transport, "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class GatewayService(ListeningService):
    """
    Listens for HTTP on a server endpoint while running.

    Stopping is two steps, so the runner can drain the client in between:
    :meth:`stop_accepting` closes the listening port (no new connections),
    :meth:`close_connections` waits for requests in progress, then closes
    each connection once its response is written.

    :ivar listening: fires with the port once listening (or fails).
    """

    def __init__(
        self,
        reactor: Any,
        description: str,
        gateway: Gateway,
        limits: HTTPLimits | None = None,
        inherited: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(reactor, description, inherited)
        self.gateway = gateway
        self.limits = limits if limits is not None else HTTPLimits()
        site = gateway.site(self.limits)
        # The HTTP deadlines (header, body, linger) run on this service's
        # clock, like everything else it schedules: a test that gives it a
        # task.Clock leaves no timer on the real reactor.
        site.reactor = reactor
        self.factory = _TrackingFactory(site, self.limits.max_connections)
        gateway.connections = self.factory

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.gateway.throughput.start()
        self._listen(self.factory)

    def close_connections(self, timeout: float) -> Deferred[None]:
        """
        Wait (up to ``timeout`` seconds) for requests in progress, then
        close every HTTP connection after its pending bytes are written,
        aborting what is still open ``timeout`` seconds later.
        """
        clock = self._reactor
        factory = self.factory

        def close_all(_: object) -> Deferred[None]:
            for wrapper in list(factory.protocols):
                if wrapper.transport is not None:
                    # loseConnection flushes the write buffer first.
                    wrapper.transport.loseConnection()
            gone = factory.when_empty()
            timer = clock.callLater(timeout, _abort_all, factory)

            def cancel_timer(result: None) -> None:
                if timer.active():
                    timer.cancel()

            return gone.addCallback(cancel_timer)

        idle = self.gateway.when_idle()
        # Past the timeout, close anyway: the requests still waiting will
        # see their connection go, which cancels their upstream requests.
        idle.addTimeout(timeout, clock)
        idle.addErrback(lambda failure: None)
        idle.addCallback(close_all)
        return idle

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        self.gateway.throughput.stop()
        d = DeferredList([self.stop_accepting()], consumeErrors=True)
        d.addCallback(lambda _: self.close_connections(5.0))
        return d.addCallback(lambda _: None)


def _abort_all(factory: _TrackingFactory) -> None:
    for wrapper in list(factory.protocols):
        abort = getattr(wrapper.transport, "abortConnection", None)
        if abort is not None:
            abort()
