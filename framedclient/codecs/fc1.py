"""
fc1, the reference protocol (see ``docs/design.md``)::

    +----------------+--------------------+----------+-----------------+
    | length: u32 BE | request id: u64 BE | kind: u8 | body ...        |
    +----------------+--------------------+----------+-----------------+
      counts the bytes after itself (id + kind + body)
"""

from __future__ import annotations

import struct

from framedclient.codecs.base import DEFAULT_MAX_FRAME, Kind, Matching
from framedclient.errors import CorruptFrame, FrameTooLarge
from framedclient.framing import Framer, LengthPrefixed, check_max_frame_type

__all__ = ["FC1Codec"]


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
        check_max_frame_type(max_frame)
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
