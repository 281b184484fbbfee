"""
RESP3 (``HELLO 3``) as a framedclient codec: ordinary replies and push
frames on one connection.

A RESP3 connection may carry, between the replies to its commands, push
frames (``>``) nobody asked for: published messages once it has
subscribed, and ``CLIENT TRACKING`` invalidations.  :class:`Resp3Codec`
classifies them as :data:`~framedclient.codecs.base.Kind.PUSH` frames (a
:class:`RedisPush`, routed by its channel) and everything else as the
in-order replies they are, so subscriptions can share a connection with
GETs and SETs.  One exception: the confirmations of (P|S)SUBSCRIBE and
(P|S)UNSUBSCRIBE are pushes on the wire but answer the command that was
sent, in order, so they are replies.

Replies come out in RESP2's shape by default (a map as a flat array, a set
as an array, a double or big number as a bulk string, a boolean as 1 or 0,
null as a nil bulk string, attributes dropped): what Redis itself sends a
RESP2 connection, so :func:`~framedclient.codecs.redis.parse_reply` and
every :class:`~framedclient.clients.redis.RedisClient` command read them
unchanged.  ``Resp3Codec(resp2_replies=False)`` keeps the RESP3 frames;
:func:`parse_resp3` reads them into Python values (dict, set, float, bool,
int, bytes, None).
"""

from __future__ import annotations

from typing import Any, SupportsIndex

from framedclient._mode import mypyc_attr
from framedclient.codecs.base import ERROR, PUSH, REPLY
from framedclient.codecs.redis import RedisCodec, RespError, ResumableFramer
from framedclient.codecs.resp3_push import RedisPush
from framedclient.errors import CorruptFrame, FrameTooLarge, ProtocolError
from framedclient.framing import Framer, check_max_frame_type

__all__ = [
    "INVALIDATE",
    "RedisPush",
    "Resp3Codec",
    "Resp3Framer",
    "Verbatim",
    "parse_resp3",
    "to_resp2",
]

#: The key of an invalidation push (``CLIENT TRACKING``): the channel
#: RESP2 connections receive them on.
INVALIDATE = b"__redis__:invalidate"

_MAX_LINE = 64 * 1024

# Type bytes.  Lines: simple string, simple error, integer, null, double,
# boolean, big number.  Blobs: bulk string, blob error, verbatim string.
_LINES = frozenset(b"+-:_,#(")
_BLOBS = frozenset(b"$!=")
# Aggregates and how many elements each announced entry stands for: a map
# holds pairs; an attribute holds pairs and then annotates the value that
# follows it, which completes the element it stands in for.
_AGGREGATES = {0x2A: 1, 0x7E: 1, 0x3E: 1, 0x25: 2, 0x7C: 2}
_ATTRIBUTE = 0x7C


@mypyc_attr(allow_interpreted_subclasses=True)
class Resp3Framer(ResumableFramer):
    """
    Cuts a RESP3 byte stream into whole top-level frames (an attribute
    travels with the value it annotates, as one frame).

    The parser keeps its place between feeds (the stack of elements still
    expected, the bytes a blob still needs), so a frame that arrives a byte
    at a time costs time linear in its size.  A frame longer than
    ``max_frame`` raises :class:`~framedclient.errors.FrameTooLarge`, and
    anything that is not RESP3 (or a streamed string, which Redis never
    sends) :class:`~framedclient.errors.CorruptFrame`: the connection is
    closed and nothing else is lost.
    """

    __slots__ = ("_blob", "_stack", "max_frame")
    stream_name = "RESP3"

    def __init__(self, max_frame: SupportsIndex = 16 * 1024 * 1024) -> None:
        # (A protocol, not int: see RespFramer.__init__.)
        self._init(max_frame)

    def _init(self, max_frame: Any) -> None:
        check_max_frame_type(max_frame)
        if max_frame < 3:
            raise ValueError(f"max_frame must be at least 3 bytes, got {max_frame}")
        self.max_frame: int = max_frame
        self._buf = bytearray()
        self._start = 0
        self._pos = 0
        self._stack: list[int] = []
        self._blob = 0
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._start

    def encode(self, payload: bytes) -> bytes:
        return payload

    def _parse(self, frames: list[bytes]) -> None:
        buf = self._buf
        stack = self._stack
        end = len(buf)
        max_frame = self.max_frame
        while True:
            pos = self._pos
            if not stack and not self._blob:
                # Whole top-level bulk strings (GETs' replies) and pushes of
                # bulk strings (published messages), cut at once; anything
                # else, or not all here yet, takes the general path below.
                pos = self._start = _cut_simple(buf, pos, end, max_frame, frames)
                self._pos = pos
            if self._blob:
                if end - pos < self._blob:
                    return
                pos += self._blob
                if buf[pos - 2 : pos] != b"\r\n":
                    raise CorruptFrame("a RESP3 blob is not followed by CRLF")
                self._blob = 0
            else:
                if pos >= end:
                    return
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > _MAX_LINE:
                        raise FrameTooLarge(end - self._start, max_frame)
                    return
                marker = buf[pos]
                pos = eol + 2
                if marker in _BLOBS:
                    n = _length(buf, self._pos, eol)
                    if n >= 0:
                        if pos - self._start + n > max_frame:
                            raise FrameTooLarge(pos - self._start + n + 2, max_frame)
                        self._pos = pos
                        self._blob = n + 2
                        continue
                elif marker in _AGGREGATES:
                    n = _length(buf, self._pos, eol)
                    if n > 0:
                        if n > max_frame:
                            raise FrameTooLarge(n, max_frame)
                        count = n * _AGGREGATES[marker]
                        stack.append(count + 1 if marker == _ATTRIBUTE else count)
                        self._pos = pos
                        continue
                    if marker == _ATTRIBUTE:
                        # An empty attribute still annotates the next value.
                        stack.append(1)
                        self._pos = pos
                        continue
                elif marker not in _LINES:
                    raise CorruptFrame(f"unknown RESP3 type byte {bytes([marker])!r}")
            # One element is complete: close the aggregates it completes.
            self._pos = pos
            while stack:
                stack[-1] -= 1
                if stack[-1]:
                    break
                stack.pop()
            if pos - self._start > max_frame:
                raise FrameTooLarge(pos - self._start, max_frame)
            if not stack:
                frames.append(bytes(buf[self._start : pos]))
                self._start = pos


def _cut_simple(
    buf: bytearray, pos: int, end: int, max_frame: int, frames: list[bytes]
) -> int:
    # Cut the whole frames at pos that are a bulk string or a push (or
    # array) of bulk strings; return where the first other one begins.
    find = buf.find
    while pos < end:
        marker = buf[pos]
        if marker == 0x24:  # "$"
            count = 1
            at = pos
        elif marker == 0x3E or marker == 0x2A:  # ">", "*"
            eol = find(b"\r\n", pos)
            if eol < 0:
                return pos
            digits = buf[pos + 1 : eol]
            if not digits.isdigit():
                return pos
            count = int(digits)
            at = eol + 2
        else:
            return pos
        for _ in range(count):
            if at >= end or buf[at] != 0x24:
                return pos
            eol = find(b"\r\n", at)
            if eol < 0:
                return pos
            digits = buf[at + 1 : eol]
            if not digits.isdigit():
                return pos
            at = eol + 4 + int(digits)
            if at > end or buf[at - 2 : at] != b"\r\n":
                return pos
        if at - pos > max_frame:
            return pos
        frames.append(bytes(buf[pos:at]))
        pos = at
    return pos


def _length(buf: bytes | bytearray, pos: int, eol: int) -> int:
    line = buf[pos + 1 : eol]
    if line == b"?":
        raise CorruptFrame(
            "a streamed RESP3 string or aggregate ('?' length): Redis never "
            "sends one, and this codec does not read them"
        )
    if line == b"-1":
        return -1
    if not line.isdigit():
        raise CorruptFrame(f"RESP3 length {bytes(line)!r} is not a number")
    return int(line)


@mypyc_attr(native_class=False)
class Verbatim(bytes):
    """
    A verbatim string (``=``): its text as bytes, and its ``format``
    (``b"txt"`` or ``b"mkd"``).
    """

    format: bytes

    def __new__(cls, data: bytes, format: bytes) -> Verbatim:
        self = bytes.__new__(cls, data)
        self.format = format
        return self


_MESSAGE = b"message"

# The pushes that confirm (or undo) a subscription: the in-order reply to
# the command that asked for it.
_CONFIRMATIONS = frozenset(
    (
        b"subscribe",
        b"psubscribe",
        b"ssubscribe",
        b"unsubscribe",
        b"punsubscribe",
        b"sunsubscribe",
    )
)


@mypyc_attr(allow_interpreted_subclasses=True)
class Resp3Codec(RedisCodec):
    """
    RESP3 over :class:`Resp3Framer`: replies matched in order, push frames
    as :class:`RedisPush` pushes (see the module's notes).  Requests are
    checked as :class:`~framedclient.codecs.redis.RedisCodec` checks them.

    The connection must have said ``HELLO 3`` first: ``RedisClient``'s
    ``protocol=3`` does it on each new connection.

    :param max_frame: the largest frame read (and request sent), in bytes;
        a larger reply closes the connection.
    :param resp2_replies: give replies in RESP2's shape (the default), or
        as the RESP3 frames that came (read them with :func:`parse_resp3`).
    """

    __slots__ = ("resp2_replies",)

    def __init__(
        self,
        max_frame: SupportsIndex = 16 * 1024 * 1024,
        *,
        resp2_replies: object = True,
    ) -> None:
        # (resp2_replies is typed object, not bool, and max_frame a
        # protocol: compiled by mypyc, a declared type is checked at the
        # call with a message that names neither; checked below instead.)
        super().__init__(max_frame)
        if resp2_replies is not True and resp2_replies is not False:
            raise TypeError(
                f"resp2_replies must be True or False, got {resp2_replies!r}"
            )
        self.resp2_replies: bool = resp2_replies

    def __repr__(self) -> str:
        return f"Resp3Codec(max_frame={self.max_frame})"

    def new_framer(self) -> Framer:
        return Resp3Framer(self.max_frame)

    def decode(self, frame: bytes) -> tuple[int, int, object]:
        first = frame[0]
        if first == 0x24 or first == 0x3A or first == 0x2B:  # "$", ":", "+"
            return REPLY, 0, frame
        if first == 0x3E:  # ">"
            return self._push(frame)
        if first == 0x2D:  # "-"
            return ERROR, 0, frame[1:-2]
        if first == 0x21:  # "!"
            return ERROR, 0, _blob_error_text(frame)
        if not self.resp2_replies:
            return REPLY, 0, frame
        if first == 0x7C:  # "|": an attribute, then the reply it annotates
            try:
                rest = frame[_skip_attribute(frame) :]
            except (ValueError, IndexError) as e:
                raise CorruptFrame(f"not a whole RESP3 frame: {e}") from None
            return self.decode(rest)
        return REPLY, 0, to_resp2(frame)

    def _push(self, frame: bytes) -> tuple[int, int, object]:
        if frame.startswith(b">3\r\n$7\r\nmessage\r\n"):
            # A published message: its channel and payload, read in place.
            eol = frame.index(b"\r\n", 17)
            at = eol + 2 + int(frame[18:eol])
            eol2 = frame.index(b"\r\n", at + 2)
            start = eol2 + 2
            stop = start + int(frame[at + 3 : eol2])
            if frame[at : at + 3] == b"\r\n$" and stop + 2 == len(frame):
                return (
                    PUSH,
                    0,
                    RedisPush(_MESSAGE, frame[eol + 2 : at], frame[start:stop]),
                )
        value = parse_resp3(frame)
        if not isinstance(value, list) or not value or not isinstance(value[0], bytes):
            raise CorruptFrame(f"a RESP3 push frame without a kind: {frame[:60]!r}")
        kind = value[0]
        n = len(value)
        if kind == b"message" or kind == b"smessage":
            if n == 3 and isinstance(value[1], bytes):
                return PUSH, 0, RedisPush(kind, value[1], value[2])
        elif kind == b"pmessage":
            if n == 4 and isinstance(value[1], bytes) and isinstance(value[2], bytes):
                return PUSH, 0, RedisPush(kind, value[2], value[3], value[1])
        elif kind == b"invalidate":
            if n == 2:
                return PUSH, 0, RedisPush(kind, INVALIDATE, value[1])
        elif kind in _CONFIRMATIONS:
            return REPLY, 0, to_resp2(frame) if self.resp2_replies else frame
        return PUSH, 0, RedisPush(kind, kind, value[1:])


def _blob_error_text(frame: bytes) -> bytes:
    eol = frame.index(b"\r\n")
    return frame[eol + 2 : -2]


def _skip_attribute(frame: bytes) -> int:
    # Where the value an attribute at 0 annotates begins.
    eol = frame.index(b"\r\n")
    n = int(frame[1:eol])
    pos = eol + 2
    for _ in range(2 * n):
        _, pos = _parse(frame, pos)
    return pos


def parse_resp3(frame: bytes) -> Any:
    """
    One whole RESP3 frame as Python values: strings as ``bytes`` (a
    verbatim string as :class:`Verbatim`), integers and big numbers as
    ``int``, doubles as ``float``, booleans as ``bool``, null as ``None``,
    arrays and pushes as lists, maps as dicts, sets as sets (a map key or
    set member that is an aggregate becomes a tuple), errors as
    :class:`~framedclient.codecs.redis.RespError` values; attributes are
    dropped.

    :raises CorruptFrame: ``frame`` is not one whole RESP3 frame.
    """
    try:
        value, pos = _parse(frame, 0)
    except (ValueError, IndexError) as e:
        raise CorruptFrame(f"not a whole RESP3 frame: {e}") from None
    if pos != len(frame):
        raise CorruptFrame("trailing bytes after a RESP3 frame")
    return value


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _hashable(v)) for k, v in value.items())
    if isinstance(value, set):
        return frozenset(value)
    return value


def _parse(frame: bytes, pos: int) -> tuple[Any, int]:
    eol = frame.index(b"\r\n", pos)
    marker = frame[pos]
    line = frame[pos + 1 : eol]
    pos = eol + 2
    if marker == 0x24 or marker == 0x21 or marker == 0x3D:  # "$", "!", "="
        n = int(line)
        if n < 0:
            return None, pos
        data = frame[pos : pos + n]
        if len(data) != n or frame[pos + n : pos + n + 2] != b"\r\n":
            raise ValueError("truncated blob")
        pos += n + 2
        if marker == 0x24:
            return data, pos
        if marker == 0x21:
            return RespError(data.decode("utf-8", "replace")), pos
        return Verbatim(data[4:], data[:3]), pos
    if marker == 0x2B:  # "+"
        return line, pos
    if marker == 0x3A or marker == 0x28:  # ":", "("
        return int(line), pos
    if marker == 0x2D:  # "-"
        return RespError(line.decode("utf-8", "replace")), pos
    if marker == 0x5F:  # "_"
        if line:
            raise ValueError("null with a payload")
        return None, pos
    if marker == 0x2C:  # ","
        return float(line), pos
    if marker == 0x23:  # "#"
        if line == b"t":
            return True, pos
        if line == b"f":
            return False, pos
        raise ValueError(f"boolean {line!r}")
    if marker == 0x2A or marker == 0x3E or marker == 0x7E:  # "*", ">", "~"
        n = int(line)
        if n < 0:
            return None, pos
        items = []
        for _ in range(n):
            item, pos = _parse(frame, pos)
            items.append(item)
        if marker == 0x7E:
            try:
                return set(items), pos
            except TypeError:
                return {_hashable(i) for i in items}, pos
        return items, pos
    if marker == 0x25:  # "%"
        n = int(line)
        result = {}
        for _ in range(n):
            key, pos = _parse(frame, pos)
            value, pos = _parse(frame, pos)
            result[_hashable(key)] = value
        return result, pos
    if marker == 0x7C:  # "|": skip the attribute, give the value
        n = int(line)
        for _ in range(2 * n):
            _, pos = _parse(frame, pos)
        return _parse(frame, pos)
    raise ValueError(f"unknown RESP3 type byte {bytes([marker])!r}")


def to_resp2(frame: bytes) -> bytes:
    """
    One whole RESP3 frame in the shape Redis gives a RESP2 connection: a
    map as a flat array of keys and values, a set or push as an array, a
    double or big number as a bulk string of its text, a boolean as the
    integer 1 or 0, null as a nil bulk string, a verbatim string as a bulk
    string of its text, a blob error as a simple error; attributes dropped.

    :raises CorruptFrame: ``frame`` is not one whole RESP3 frame.
    """
    out: list[bytes] = []
    try:
        pos = _downgrade(frame, 0, out)
    except (ValueError, IndexError) as e:
        raise CorruptFrame(f"not a whole RESP3 frame: {e}") from None
    if pos != len(frame):
        raise CorruptFrame("trailing bytes after a RESP3 frame")
    return b"".join(out)


def _downgrade(frame: bytes, pos: int, out: list[bytes]) -> int:
    eol = frame.index(b"\r\n", pos)
    marker = frame[pos]
    line = frame[pos + 1 : eol]
    start, pos = pos, eol + 2
    if marker == 0x24 or marker == 0x21 or marker == 0x3D:  # "$", "!", "="
        n = int(line)
        if n < 0:
            out.append(b"$-1\r\n")
            return pos
        if frame[pos + n : pos + n + 2] != b"\r\n" or pos + n + 2 > len(frame):
            raise ValueError("truncated blob")
        if marker == 0x24:
            out.append(frame[start : pos + n + 2])
        elif marker == 0x3D:
            out.append(b"$%d\r\n%s\r\n" % (n - 4, frame[pos + 4 : pos + n]))
        else:
            text = frame[pos : pos + n].replace(b"\r", b" ").replace(b"\n", b" ")
            out.append(b"-%s\r\n" % text)
        return pos + n + 2
    if marker == 0x2B or marker == 0x2D or marker == 0x3A:  # "+", "-", ":"
        out.append(frame[start:pos])
        return pos
    if marker == 0x5F:  # "_"
        if line:
            raise ValueError("null with a payload")
        out.append(b"$-1\r\n")
        return pos
    if marker == 0x2C or marker == 0x28:  # ",", "("
        float(line) if marker == 0x2C else int(line)
        out.append(b"$%d\r\n%s\r\n" % (len(line), line))
        return pos
    if marker == 0x23:  # "#"
        if line not in (b"t", b"f"):
            raise ValueError(f"boolean {line!r}")
        out.append(b":1\r\n" if line == b"t" else b":0\r\n")
        return pos
    if marker in (0x2A, 0x3E, 0x7E, 0x25):  # "*", ">", "~", "%"
        n = int(line)
        if n < 0:
            out.append(b"*-1\r\n")
            return pos
        count = 2 * n if marker == 0x25 else n
        out.append(b"*%d\r\n" % count)
        for _ in range(count):
            pos = _downgrade(frame, pos, out)
        return pos
    if marker == 0x7C:  # "|"
        n = int(line)
        for _ in range(2 * n):
            _, pos = _parse(frame, pos)
        return _downgrade(frame, pos, out)
    raise ValueError(f"unknown RESP3 type byte {bytes([marker])!r}")
