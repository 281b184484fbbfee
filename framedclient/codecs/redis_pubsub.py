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
"""

from __future__ import annotations

from framedclient.codecs.base import PUSH, Push
from framedclient.codecs.redis import RedisCodec, parse_reply

__all__ = ["RedisPubSubCodec"]

_MESSAGE = b"message"
_SMESSAGE = b"smessage"
_PMESSAGE = b"pmessage"


class RedisPubSubCodec(RedisCodec):
    """
    :class:`~framedclient.codecs.redis.RedisCodec` plus pushes: a published
    message decodes as ``(PUSH, 0, Push(channel, data, pattern))``.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"RedisPubSubCodec(max_frame={self.max_frame})"

    def decode(self, frame: bytes) -> tuple[int, int, object]:
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
