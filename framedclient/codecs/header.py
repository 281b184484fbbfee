"""
A codec for protocols with a fixed binary header that holds a request ID
(and optionally a message-type field), behind any
:class:`~framedclient.framing.LengthPrefixed` layout.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping

from framedclient.codecs.base import REPLY, Kind, Matching
from framedclient.errors import CorruptFrame
from framedclient.framing import Framer

__all__ = ["HeaderCodec"]


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
