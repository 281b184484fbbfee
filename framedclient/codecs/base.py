"""
The codec contract: what the protocol layer needs to know about a wire
format, and the message kinds every codec maps its own markers onto.

A framer (:mod:`framedclient.framing`) only cuts the byte stream into frames.
A codec says what is inside a frame: where the request ID is, which frames
are replies, error replies or heartbeats, and how replies are matched to
requests.  Keeping the two apart lets one framer serve many protocols, and
keeps both free of Twisted so they can be fuzzed and reused from anywhere.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Protocol

from framedclient.framing import Framer

__all__ = [
    "CANCEL",
    "DEFAULT_MAX_FRAME",
    "ERROR",
    "GOAWAY",
    "PART",
    "PING",
    "PONG",
    "PUSH",
    "REPLY",
    "REQUEST",
    "Codec",
    "Kind",
    "Matching",
    "Message",
    "Push",
]

DEFAULT_MAX_FRAME = 16 * 1024 * 1024


class Kind(enum.IntEnum):
    """
    What a message is.  The numbers are fc1's wire values; other codecs map
    their own markers onto these.
    """

    REQUEST = 0
    REPLY = 1
    ERROR = 2
    PING = 3
    PONG = 4
    CANCEL = 5
    GOAWAY = 6
    #: A non-final part of the reply to the request with this ID (a
    #: stream); the request stays open until its REPLY or ERROR.
    PART = 7
    #: A message that answers no request, routed by the subscription key
    #: the codec extracts (the body is a :class:`Push`).
    PUSH = 8


# Plain ints for the hot path: comparing an int against an IntEnum member goes
# through IntEnum.__eq__, which is measurably slower than int == int.
REQUEST = int(Kind.REQUEST)
REPLY = int(Kind.REPLY)
ERROR = int(Kind.ERROR)
PING = int(Kind.PING)
PONG = int(Kind.PONG)
CANCEL = int(Kind.CANCEL)
GOAWAY = int(Kind.GOAWAY)
PART = int(Kind.PART)
PUSH = int(Kind.PUSH)


class Matching(enum.Enum):
    """
    How replies find their requests on one connection.
    """

    #: Each reply carries the request's ID; replies may come in any order and
    #: any number of requests may be outstanding (multiplexing).
    BY_ID = "by_id"
    #: Replies carry no ID and come back in the order requests were sent;
    #: many requests may be outstanding (pipelining).
    IN_ORDER = "in_order"
    #: One outstanding request per connection: the protocol can neither
    #: multiplex nor pipeline, so the pool hands out whole connections.
    EXCLUSIVE = "exclusive"


class Message:
    """
    A message with header fields: what a structured codec (a
    :class:`~framedclient.codecs.header.HeaderCodec` declared with
    ``fields``) takes as a request and gives back as a reply.

    As a request, ``fields`` sets the header fields the caller chooses
    (opcode, flags...); the codec fills in the rest: the request ID, the
    constants and the lengths it computes.  ``parts`` names the pieces of
    the body for codecs that declare them (memcached's extras, key and
    value); the codec joins them in its order and writes their lengths.

    As a reply, ``fields`` holds every declared field as received (the ID
    and the status included), ``body`` everything after the header, and
    ``parts`` the body cut into its declared pieces.

    :ivar fields: header field values by name.
    :ivar body: the bytes after the header.
    :ivar parts: the body's named pieces (empty if the codec declares none).
    """

    __slots__ = ("body", "fields", "parts")

    def __init__(
        self,
        fields: Mapping[str, int] | None = None,
        body: bytes = b"",
        parts: Mapping[str, bytes] | None = None,
    ) -> None:
        self.fields: dict[str, int] = dict(fields) if fields else {}
        self.body = body
        self.parts: dict[str, bytes] = dict(parts) if parts else {}

    def __len__(self) -> int:
        """
        Bytes of payload, header aside: what the client counts against its
        byte limits (``max_queued_bytes``).
        """
        return len(self.body) + sum(len(p) for p in self.parts.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (
            self.fields == other.fields
            and self.body == other.body
            and self.parts == other.parts
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dict

    def __repr__(self) -> str:
        parts = f", parts={self.parts!r}" if self.parts else ""
        return f"Message(fields={self.fields!r}, body={self.body!r}{parts})"


class Push:
    """
    A frame that answers no request: what a :data:`Kind.PUSH` frame's body
    means (see :class:`Codec`).  The codec extracts the key, because only it
    knows where a protocol keeps it (fc1's topic field, a Redis pub/sub
    message's channel); subscriptions are routed by it alone.

    :ivar key: the subscription key (a topic, a channel).
    :ivar data: the payload.
    :ivar pattern: the pattern that matched, for protocols whose
        subscriptions are patterns (``None`` otherwise).
    """

    __slots__ = ("data", "key", "pattern")

    def __init__(self, key: bytes, data: Any, pattern: bytes | None = None) -> None:
        self.key = key
        self.data = data
        self.pattern = pattern

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Push):
            return NotImplemented
        return (self.key, self.data, self.pattern) == (
            other.key,
            other.data,
            other.pattern,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Push(key={self.key!r}, data={self.data!r})"


class Codec(Protocol):
    """
    What the protocol layer needs to know about a wire format.

    ``encode`` returns the whole frame as it goes on the wire (framing
    included), so a codec can build header and length in one step.
    ``decode`` receives one frame as the codec's framer produced it and
    returns ``(kind, request_id, body)``; it raises
    :class:`~framedclient.errors.ProtocolError` (usually
    :class:`~framedclient.errors.CorruptFrame`) for a frame it cannot parse,
    which closes that connection and nothing else.

    Messages, not only bytes (contract v2): the request ``body`` is whatever
    the caller passed to ``request()`` (``bytes``, or a :class:`Message` for
    codecs with header fields), and the reply body is whatever the caller
    should get back (``bytes``, or a :class:`Message` that keeps the reply's
    header fields).  For an :attr:`~Kind.ERROR` frame, ``decode`` may return a
    :class:`~framedclient.errors.RemoteError` (with its ``code``) as the
    body: the caller's Deferred fails with exactly that error.  Error bodies
    that are bytes become ``RemoteError(body.decode())``, as before.
    ``encode`` raises ``ValueError``/``TypeError`` for a request it cannot
    carry: that request fails alone with
    :class:`~framedclient.errors.InvalidRequest` and nothing is sent.

    Streams and pushes (contract v3): ``decode`` classifies each incoming
    frame.  :data:`Kind.REPLY`/:data:`Kind.ERROR` are final: they end the
    request with that ID.  :data:`Kind.PART` is a non-final part of the
    reply to that request (a stream: the request stays open, and only a
    request opened as a stream accepts parts).  :data:`Kind.PUSH` belongs
    to no request: the codec's optional ``split_push(body)`` turns its body
    into a :class:`Push` (or ``decode`` returns a :class:`Push` as the body
    and the codec has no ``split_push``), whose ``key`` routes it to the
    subscriptions of that key.  A codec that never returns the last
    two (every codec written before them) keeps working unchanged: all its
    replies are final.
    """

    #: How replies are matched to requests.
    matching: Matching
    #: Whether :data:`Kind.CANCEL` frames can be encoded (best effort hint to
    #: the server that a request was abandoned).
    supports_cancel: bool
    #: Whether :data:`Kind.PING` / :data:`Kind.PONG` frames exist, so
    #: heartbeats can be used.
    supports_ping: bool
    #: The largest request ID the format can carry; IDs wrap around after it.
    max_id: int
    #: The largest frame accepted from the peer.
    max_frame: int

    def new_framer(self) -> Framer:
        """
        A fresh framer for one connection (framers hold per-stream state).
        """
        ...

    def encode(self, kind: int, request_id: int, body: Any) -> bytes:
        """
        The bytes on the wire for one message.
        """
        ...

    def decode(self, frame: bytes) -> tuple[int, int, Any]:
        """
        ``(kind, request_id, body)`` for one frame.
        """
        ...
