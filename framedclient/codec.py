"""
Codecs: how a frame's bytes map to a message (kind, request ID, body).

A framer (:mod:`framedclient.framing`) only cuts the byte stream into frames.
A codec says what is inside a frame: where the request ID is, which frames
are replies, error replies or heartbeats, and how replies are matched to
requests.  Keeping the two apart lets one framer serve many protocols, and
keeps both free of Twisted so they can be fuzzed and reused from anywhere.

The reference codec is :class:`FC1Codec` ("fc1", see ``DESIGN.md``)::

    +----------------+------------------+---------+-----------------+
    | length: u32 BE | request id: u64 BE | kind: u8 | body ...        |
    +----------------+------------------+---------+-----------------+
      counts the bytes after itself (id + kind + body)

Users describe their own protocol either with :class:`HeaderCodec` (a fixed
header holding an ID field and optionally a kind field, behind any
:class:`~framedclient.framing.LengthPrefixed` layout), with
:class:`PipelinedCodec` (no IDs at all: replies come back in request order,
as in Redis or memcached's text protocol), or by writing a class that
satisfies the :class:`Codec` protocol.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Mapping
from typing import Protocol

from framedclient.errors import CorruptFrame, FrameTooLarge
from framedclient.framing import Framer, LengthPrefixed

__all__ = [
    "Codec",
    "FC1Codec",
    "HeaderCodec",
    "Kind",
    "Matching",
    "PipelinedCodec",
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


_FC1_HEADER = struct.Struct(">IQB")
_FC1_INNER = struct.Struct(">QB")
_FC1_INNER_SIZE = _FC1_INNER.size
_FC1_KINDS = frozenset(int(k) for k in Kind)


class FC1Codec:
    """
    The reference protocol: ``u32 length · u64 id · u8 kind · body``.

    Replies are matched by ID, so any number of requests share a connection
    and the server may answer in any order.

    :param max_frame: the largest frame accepted, counting the length field.
        A peer that announces more gets its connection closed with
        :class:`~framedclient.errors.FrameTooLarge` before anything is
        buffered.
    """

    __slots__ = ("max_frame",)

    matching = Matching.BY_ID
    supports_cancel = True
    supports_ping = True
    max_id = 2**64 - 1
    name = "fc1"

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < _FC1_HEADER.size:
            raise ValueError(
                f"max_frame must be at least {_FC1_HEADER.size} bytes "
                f"(the fc1 header), got {max_frame}"
            )
        self.max_frame = max_frame

    def __repr__(self) -> str:
        return f"FC1Codec(max_frame={self.max_frame})"

    def new_framer(self) -> Framer:
        return LengthPrefixed(length_size=4, max_frame=self.max_frame)

    def encode(self, kind: int, request_id: int, body: bytes) -> bytes:
        if len(body) + 13 > self.max_frame:
            # Sending it would make the peer close the connection, failing
            # every other request on it: refuse this one alone, up front.
            raise FrameTooLarge(len(body) + 13, self.max_frame)
        return _FC1_HEADER.pack(len(body) + 9, request_id, kind) + body

    def decode(self, frame: bytes) -> tuple[int, int, bytes]:
        if len(frame) < _FC1_INNER_SIZE:
            raise CorruptFrame(
                f"fc1 frame of {len(frame)} bytes is shorter than its "
                f"{_FC1_INNER_SIZE}-byte id+kind header"
            )
        request_id, kind = _FC1_INNER.unpack_from(frame)
        if kind not in _FC1_KINDS:
            raise CorruptFrame(f"fc1 frame has unknown kind {kind}")
        return kind, request_id, frame[_FC1_INNER_SIZE:]


class HeaderCodec:
    """
    A codec for protocols with a fixed header holding a request ID (and
    optionally a message-type field), behind a length prefix.

    The header is read from the start of each frame as the framer returns it
    (so choose the framer's ``strip`` to match).  ``kinds`` maps the values of
    the kind field to :class:`Kind`; frames whose kind value is not in the
    map are a protocol error.  Without a kind field every frame from the
    server is a reply.

    When encoding, the header is written with the ID at ``id_offset`` and the
    kind value (the first key mapping to the kind) at ``kind_offset``; other
    header bytes are zero.

    :param framer_factory: makes one framer per connection; its ``encode``
        adds the length prefix to header + body.
    :param header_size: bytes of header before the body in a frame.
    """

    __slots__ = (
        "_decode_kinds",
        "_encode_kinds",
        "_encoder",
        "_framer_factory",
        "_id",
        "_kind",
        "_template",
        "header_size",
        "id_offset",
        "kind_offset",
        "max_frame",
        "max_id",
        "supports_cancel",
        "supports_ping",
    )

    matching = Matching.BY_ID

    def __init__(
        self,
        framer_factory: Callable[[], Framer],
        *,
        header_size: int,
        id_offset: int = 0,
        id_size: int = 4,
        kind_offset: int | None = None,
        kind_size: int = 1,
        kinds: Mapping[int, Kind] | None = None,
        byteorder: str = "big",
    ) -> None:
        if byteorder not in ("big", "little"):
            raise ValueError(f"byteorder must be 'big' or 'little', got {byteorder!r}")
        order = ">" if byteorder == "big" else "<"
        sizes = {1: "B", 2: "H", 4: "I", 8: "Q"}
        if id_size not in sizes:
            raise ValueError(f"id_size must be one of 1, 2, 4, 8, got {id_size}")
        if id_offset < 0 or id_offset + id_size > header_size:
            raise ValueError(
                f"the id field ({id_size} bytes at offset {id_offset}) must lie "
                f"inside the {header_size}-byte header"
            )
        self._framer_factory = framer_factory
        self.header_size = header_size
        self.id_offset = id_offset
        self._id = struct.Struct(order + sizes[id_size])
        self.max_id = 2 ** (8 * id_size) - 1
        self.kind_offset = kind_offset
        self._kind: struct.Struct | None = None
        if kind_offset is not None:
            if kind_size not in sizes:
                raise ValueError(
                    f"kind_size must be one of 1, 2, 4, 8, got {kind_size}"
                )
            if kind_offset < 0 or kind_offset + kind_size > header_size:
                raise ValueError(
                    f"the kind field ({kind_size} bytes at offset {kind_offset}) "
                    f"must lie inside the {header_size}-byte header"
                )
            if not kinds:
                raise ValueError("kinds must map kind-field values to Kind")
            self._kind = struct.Struct(order + sizes[kind_size])
        self._decode_kinds: dict[int, int] = {
            value: int(kind) for value, kind in (kinds or {}).items()
        }
        self._encode_kinds: dict[int, int] = {}
        for value, kind in (kinds or {}).items():
            self._encode_kinds.setdefault(int(kind), value)
        self.supports_cancel = int(Kind.CANCEL) in self._encode_kinds
        self.supports_ping = (
            int(Kind.PING) in self._encode_kinds
            and int(Kind.PONG) in self._decode_kinds.values()
        )
        # Encoding is stateless, so one framer instance serves every connection.
        self._encoder = framer_factory()
        self.max_frame = self._encoder.max_frame
        self._template = bytes(header_size)

    def new_framer(self) -> Framer:
        return self._framer_factory()

    def encode(self, kind: int, request_id: int, body: bytes) -> bytes:
        header = bytearray(self._template)
        self._id.pack_into(header, self.id_offset, request_id)
        if self._kind is not None:
            try:
                value = self._encode_kinds[kind]
            except KeyError:
                raise ValueError(
                    f"this codec has no value for {Kind(kind).name} frames"
                ) from None
            self._kind.pack_into(header, self.kind_offset or 0, value)
        return self._encoder.encode(bytes(header) + body)

    def decode(self, frame: bytes) -> tuple[int, int, bytes]:
        if len(frame) < self.header_size:
            raise CorruptFrame(
                f"frame of {len(frame)} bytes is shorter than the "
                f"{self.header_size}-byte header"
            )
        (request_id,) = self._id.unpack_from(frame, self.id_offset)
        kind = REPLY
        if self._kind is not None:
            (value,) = self._kind.unpack_from(frame, self.kind_offset or 0)
            try:
                kind = self._decode_kinds[value]
            except KeyError:
                raise CorruptFrame(
                    f"unknown kind value {value} in frame header"
                ) from None
        return kind, request_id, frame[self.header_size :]


class PipelinedCodec:
    """
    A codec for protocols without request IDs: every frame from the server
    is the reply to the oldest outstanding request.

    :param framer_factory: makes one framer per connection; also used to
        frame requests.
    :param is_error: tells error replies apart (for example RESP's ``-ERR``
        lines); returns the error message, or ``None`` for a normal reply.
    :param exclusive: the server cannot pipeline either, so only one request
        may be outstanding on a connection at a time.
    """

    __slots__ = ("_encoder", "_framer_factory", "is_error", "matching", "max_frame")

    supports_cancel = False
    supports_ping = False
    max_id = 2**63 - 1

    def __init__(
        self,
        framer_factory: Callable[[], Framer],
        *,
        is_error: Callable[[bytes], str | None] | None = None,
        exclusive: bool = False,
    ) -> None:
        self._framer_factory = framer_factory
        self._encoder = framer_factory()
        self.is_error = is_error
        self.matching = Matching.EXCLUSIVE if exclusive else Matching.IN_ORDER
        self.max_frame = self._encoder.max_frame

    def new_framer(self) -> Framer:
        return self._framer_factory()

    def encode(self, kind: int, request_id: int, body: bytes) -> bytes:
        if kind != REQUEST:
            raise ValueError(
                f"a pipelined codec cannot encode {Kind(kind).name} frames"
            )
        return self._encoder.encode(body)

    def decode(self, frame: bytes) -> tuple[int, int, bytes]:
        if self.is_error is not None:
            message = self.is_error(frame)
            if message is not None:
                return ERROR, 0, message.encode("utf-8", "replace")
        return REPLY, 0, frame
