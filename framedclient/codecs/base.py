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
from typing import Protocol

from framedclient.framing import Framer

__all__ = [
    "CANCEL",
    "DEFAULT_MAX_FRAME",
    "ERROR",
    "GOAWAY",
    "PING",
    "PONG",
    "REPLY",
    "REQUEST",
    "Codec",
    "Kind",
    "Matching",
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


# Plain ints for the hot path: comparing an int against an IntEnum member goes
# through IntEnum.__eq__, which is measurably slower than int == int.
REQUEST = int(Kind.REQUEST)
REPLY = int(Kind.REPLY)
ERROR = int(Kind.ERROR)
PING = int(Kind.PING)
PONG = int(Kind.PONG)
CANCEL = int(Kind.CANCEL)
GOAWAY = int(Kind.GOAWAY)


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

    def encode(self, kind: int, request_id: int, body: bytes) -> bytes:
        """
        The bytes on the wire for one message.
        """
        ...

    def decode(self, frame: bytes) -> tuple[int, int, bytes]:
        """
        ``(kind, request_id, body)`` for one frame.
        """
        ...
