"""
fc1, the reference protocol (see ``docs/design.md``)::

    +----------------+--------------------+----------+-----------------+
    | length: u32 BE | request id: u64 BE | kind: u8 | body ...        |
    +----------------+--------------------+----------+-----------------+
      counts the bytes after itself (id + kind + body)

A PART (kind 7) frame carries one non-final part of a streamed reply; a PUSH
(kind 8) frame has ID 0 and the body ``u16 BE topic length · topic ·
payload`` (:meth:`FC1Codec.split_push` takes it apart).  A server sends
either only to a client that asked (a stream command, a subscription), so
clients that predate them never see one.
"""

from __future__ import annotations

import struct
from typing import Any, Final, SupportsIndex

from framedclient._mode import mypyc_attr
from framedclient.codecs.base import DEFAULT_MAX_FRAME, PUSH, Kind, Matching, Push
from framedclient.errors import CorruptFrame, FrameTooLarge
from framedclient.framing import Framer, LengthPrefixed, check_max_frame_type

__all__ = ["FC1Codec", "encode_push", "split_push"]


_FC1_HEADER: Final = struct.Struct(">IQB")
_FC1_INNER: Final = struct.Struct(">QB")
_FC1_INNER_SIZE: Final = _FC1_INNER.size
_FC1_KINDS: Final = frozenset(int(k) for k in Kind)
_TOPIC_LENGTH: Final = struct.Struct(">H")


def encode_push(codec: FC1Codec, topic: bytes, payload: bytes) -> bytes:
    """
    The PUSH frame that delivers ``payload`` to the subscribers of ``topic``
    (what a server sends; the client only decodes them).

    :raises ValueError: a topic longer than 65,535 bytes.
    """
    if len(topic) > 0xFFFF:
        raise ValueError(f"topic is {len(topic)} bytes; fc1 carries at most 65535")
    return codec.encode(PUSH, 0, _TOPIC_LENGTH.pack(len(topic)) + topic + payload)


def split_push(body: bytes) -> Push:
    """
    The topic and payload of a PUSH frame's body (see :meth:`FC1Codec.split_push`).
    """
    if len(body) < 2:
        raise CorruptFrame(f"fc1 PUSH body of {len(body)} bytes has no topic length")
    (size,) = _TOPIC_LENGTH.unpack_from(body)
    if len(body) < 2 + size:
        raise CorruptFrame(
            f"fc1 PUSH announces a {size}-byte topic in a {len(body)}-byte body"
        )
    return Push(body[2 : 2 + size], body[2 + size :])


# Users may subclass it (mypyc: slower calls from compiled code into it).
@mypyc_attr(allow_interpreted_subclasses=True)
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

    def __init__(self, max_frame: SupportsIndex = DEFAULT_MAX_FRAME) -> None:
        # The parameters are typed with protocols, which mypyc does not
        # check at the call, so that a wrong type gets the message below
        # naming the argument, not mypyc's "int object expected"
        # (docs/design.md, "Compiled mode"); _init checks and converts.
        self._init(max_frame)

    def _init(self, max_frame: Any) -> None:
        check_max_frame_type(max_frame)
        if max_frame < _FC1_HEADER.size:
            raise ValueError(
                f"max_frame must be at least {_FC1_HEADER.size} bytes "
                f"(the fc1 header), got {max_frame}"
            )
        self.max_frame: int = max_frame

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

    @staticmethod
    def split_push(body: bytes) -> Push:
        """
        The subscription key (topic) and payload of a PUSH frame's body:
        ``u16 BE topic length · topic · payload``.

        :raises CorruptFrame: a body too short for the topic it announces.
        """
        return split_push(body)

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
