"""
RESP2 for a subscriber connection: the codec of the dedicated connection
:meth:`RedisClient.subscribe() <framedclient.clients.redis.RedisClient.subscribe>`
uses.

Once a RESP2 connection has subscribed, Redis sends ``message``,
``pmessage`` and ``smessage`` arrays whenever something is published,
interleaved with the replies to the subscriber's own (P|S)SUBSCRIBE and
(P|S)UNSUBSCRIBE commands.  This codec classifies the former as
:data:`~framedclient.codecs.base.Kind.PUSH` frames (with their channel as
the key, and the pattern for ``pmessage``) and leaves the latter as the
in-order replies they are, so one framer and one request table serve both.

With hiredis installed (``pip install 'framedclient[hiredis]'``), the
connection's framer is :class:`HiredisPubSubFramer`: hiredis parses the
stream in C and the codec reads each message's parts from the list it
gives, instead of cutting RESP in Python and parsing each frame again
(3 to 4 times less CPU per message, measured by ``python -m
framedclient.bench pubsub``).
"""

from __future__ import annotations

from typing import Any

from framedclient.codecs.base import ERROR, PUSH, REPLY, Push
from framedclient.codecs.redis import RedisCodec, RespError, parse_reply
from framedclient.errors import CorruptFrame, FrameTooLarge, ProtocolError
from framedclient.framing import Framer

try:
    import hiredis as _hiredis
except ImportError:  # pragma: no cover - the optional extra
    _hiredis = None  # type: ignore[assignment]

__all__ = ["HiredisPubSubFramer", "RedisPubSubCodec"]

_MESSAGE = b"message"
_SMESSAGE = b"smessage"
_PMESSAGE = b"pmessage"


class _Parsed:
    """
    A reply hiredis parsed that is not an array: marked, so the codec never
    takes a bulk string's bytes for a RESP frame.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class HiredisPubSubFramer:
    """
    A subscriber connection's framer on hiredis: each frame it gives is the
    reply hiredis parsed (an array as a ``list``, anything else wrapped),
    which only :class:`RedisPubSubCodec` reads.

    hiredis has no frame limit of its own: a reply still incomplete after
    more than ``max_frame`` bytes raises
    :class:`~framedclient.errors.FrameTooLarge` (the connection closes).
    """

    __slots__ = ("_broken", "_gets", "_reader", "_since", "max_frame")

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._reader = _hiredis.Reader(replyError=RespError)
        self._gets = self._reader.gets
        # Bytes fed since a reply last completed: what a partial reply can
        # hold at most.
        self._since = 0
        self._broken = False

    @property
    def buffered(self) -> int:
        return self._since

    def encode(self, payload: bytes) -> bytes:
        return payload

    def feed(self, data: bytes) -> list[Any]:
        if self._broken:
            raise CorruptFrame("the RESP stream broke earlier; close the connection")
        self._reader.feed(data)
        gets = self._gets
        frames: list[Any] = []
        try:
            while True:
                value = gets()
                if value is False:
                    break
                frames.append(value if value.__class__ is list else _Parsed(value))
        except _hiredis.ProtocolError as e:
            self._broken = True
            error: ProtocolError = CorruptFrame(f"not RESP: {e}")
            error.frames = frames
            raise error from None
        if frames:
            self._since = len(data)
        else:
            self._since += len(data)
        if self._since > self.max_frame and self._reader.has_data():
            self._broken = True
            too_large = FrameTooLarge(self._since, self.max_frame)
            too_large.frames = frames
            raise too_large
        return frames


class RedisPubSubCodec(RedisCodec):
    """
    :class:`~framedclient.codecs.redis.RedisCodec` plus pushes: a published
    message decodes as ``(PUSH, 0, Push(channel, data, pattern))``.

    :param hiredis: parse with :class:`HiredisPubSubFramer` (the default
        when hiredis is installed); ``False`` cuts frames with
        :class:`~framedclient.codecs.redis.RespFramer`.
    """

    __slots__ = ("hiredis",)

    def __init__(
        self, max_frame: int = 16 * 1024 * 1024, *, hiredis: bool | None = None
    ) -> None:
        super().__init__(max_frame)
        if hiredis is None:
            hiredis = _hiredis is not None
        elif hiredis and _hiredis is None:
            raise ValueError(
                "hiredis=True needs hiredis: pip install 'framedclient[hiredis]'"
            )
        self.hiredis = hiredis

    def __repr__(self) -> str:
        return f"RedisPubSubCodec(max_frame={self.max_frame})"

    def new_framer(self) -> Framer:
        if self.hiredis:
            return HiredisPubSubFramer(self.max_frame)
        return RedisCodec.new_framer(self)

    def decode(self, frame: Any) -> tuple[int, int, object]:
        cls = frame.__class__
        if cls is list:
            # From HiredisPubSubFramer: a message, or a (un)subscribe
            # confirmation (the reply to that command).
            n = len(frame)
            if n == 3:
                what = frame[0]
                if what == _MESSAGE or what == _SMESSAGE:
                    return PUSH, 0, Push(frame[1], frame[2])
            elif n == 4 and frame[0] == _PMESSAGE:
                return PUSH, 0, Push(frame[2], frame[3], frame[1])
            return REPLY, 0, frame
        if cls is _Parsed:
            value = frame.value
            if isinstance(value, RespError):
                return ERROR, 0, value.message.encode()
            return REPLY, 0, value
        return self._decode_bytes(frame)

    def _decode_bytes(self, frame: bytes) -> tuple[int, int, object]:
        # A message is an array of 3 (message, smessage) or 4 (pmessage)
        # bulk strings; a subscribe confirmation is an array of 3 too, but
        # its first element is the command's name.
        if frame[:2] in (b"*3", b"*4"):
            value = parse_reply(frame)
            if isinstance(value, list) and isinstance(value[0], bytes):
                what = value[0]
                if len(value) == 3 and (what == _MESSAGE or what == _SMESSAGE):
                    channel, data = value[1], value[2]
                    if isinstance(channel, bytes) and isinstance(data, bytes):
                        return PUSH, 0, Push(channel, data)
                elif len(value) == 4 and what == _PMESSAGE:
                    pattern, channel, data = value[1], value[2], value[3]
                    if (
                        isinstance(pattern, bytes)
                        and isinstance(channel, bytes)
                        and isinstance(data, bytes)
                    ):
                        return PUSH, 0, Push(channel, data, pattern)
        return RedisCodec.decode(self, frame)
