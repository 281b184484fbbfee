"""
Redis (RESP2) as a framedclient codec: the example of a protocol without
request IDs, matched **in order** (pipelining).

Redis answers the commands of one connection in the order they were sent,
so many commands can be outstanding on one connection with no ID in the
frames: :class:`RedisCodec` declares ``Matching.IN_ORDER`` and the protocol
layer pairs each reply with the oldest outstanding request.  A cancelled or
timed-out command keeps its place in that queue, so its late reply is
consumed and dropped instead of being handed to the next caller.

RESP frames are not length-prefixed: a reply is a tree (arrays of bulk
strings, integers, ...).  :class:`RespFramer` cuts the stream into whole
top-level replies with a resumable parser, so a reply that arrives a byte
at a time, or an array of a million elements, costs time linear in its size.

Usage::

    client = FramedClient.from_endpoint(reactor, "tcp:127.0.0.1:6379",
                                        codec=RedisCodec())
    await client.request(command(b"SET", b"k", b"v"))     # b"+OK\\r\\n"
    parse_reply(await client.request(command(b"GET", b"k")))  # b"v"
"""

from __future__ import annotations

from typing import TypeAlias

from framedclient.codecs.base import ERROR, REPLY, REQUEST, Kind, Matching
from framedclient.errors import CorruptFrame, FrameTooLarge, ProtocolError
from framedclient.framing import Framer

__all__ = ["RedisCodec", "RespError", "RespFramer", "command", "parse_reply"]

_MAX_LINE = 64 * 1024


class RespError(Exception):
    """
    An error reply nested inside an array (a top-level error reply fails the
    request with :class:`~framedclient.errors.RemoteError` instead).
    """


#: A decoded RESP2 reply: bulk and simple strings as ``bytes``, integers,
#: arrays (nested), errors inside arrays, and ``None`` for nil.
RespValue: TypeAlias = "bytes | int | list[RespValue] | RespError | None"


class RespFramer:
    """
    Cuts a RESP2 byte stream into whole top-level replies (as raw bytes).

    The parser keeps its place between feeds (the stack of array counts
    still expected and the bytes a bulk string still needs), so nothing is
    parsed twice.  A reply longer than ``max_frame`` raises
    :class:`~framedclient.errors.FrameTooLarge` as soon as its size is
    known; RESP has no way to skip a malformed reply, so after any error
    the framer stays broken and the connection must be closed.
    """

    __slots__ = ("_buf", "_bulk", "_error", "_pos", "_stack", "_start", "max_frame")

    def __init__(self, max_frame: int = 16 * 1024 * 1024) -> None:
        if max_frame < 3:
            raise ValueError(f"max_frame must be at least 3 bytes, got {max_frame}")
        self.max_frame = max_frame
        self._buf = bytearray()
        self._start = 0  # where the reply being parsed begins
        self._pos = 0  # next byte to parse
        self._stack: list[int] = []  # elements still expected, per open array
        self._bulk = 0  # bytes (with CRLF) a bulk string still needs, or 0
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._start

    def encode(self, payload: bytes) -> bytes:
        """
        Requests go out as given: RESP commands frame themselves (see
        :func:`command`).
        """
        return payload

    def feed(self, data: bytes) -> list[bytes]:
        if self._error is not None:
            raise CorruptFrame(
                f"the RESP stream broke earlier ({self._error}); close the connection"
            )
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        try:
            self._parse(frames)
        except ProtocolError as e:
            self._error = e
            e.frames = frames
            raise
        start = self._start
        if start == len(buf):
            buf.clear()
            self._pos = self._start = 0
        elif start > 65536:
            del buf[:start]
            self._pos -= start
            self._start = 0
        return frames

    def _parse(self, frames: list[bytes]) -> None:
        buf = self._buf
        end = len(buf)
        stack = self._stack
        while True:
            pos = self._pos
            if self._bulk:
                if end - pos < self._bulk:
                    return
                pos += self._bulk
                if buf[pos - 2 : pos] != b"\r\n":
                    raise CorruptFrame("RESP bulk string is not followed by CRLF")
                self._bulk = 0
            else:
                if pos >= end:
                    return
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > _MAX_LINE:
                        raise FrameTooLarge(end - self._start, self.max_frame)
                    return
                marker = buf[pos]
                line = bytes(buf[pos + 1 : eol])
                pos = eol + 2
                if marker == 0x24 or marker == 0x2A:  # "$" bulk, "*" array
                    try:
                        n = int(line)
                    except ValueError:
                        raise CorruptFrame(
                            f"RESP length {line!r} is not a number"
                        ) from None
                    if n < -1:
                        raise CorruptFrame(f"RESP length {n} is negative")
                    if marker == 0x24 and n >= 0:
                        if pos - self._start + n + 2 > self.max_frame:
                            raise FrameTooLarge(
                                pos - self._start + n + 2, self.max_frame
                            )
                        self._pos = pos
                        self._bulk = n + 2
                        continue
                    if marker == 0x2A and n > 0:
                        stack.append(n)
                        self._pos = pos
                        continue
                elif marker not in (0x2B, 0x2D, 0x3A):  # "+", "-", ":"
                    raise CorruptFrame(f"unknown RESP type byte {bytes([marker])!r}")
            # One element is complete: close the arrays it completes.
            self._pos = pos
            while stack:
                stack[-1] -= 1
                if stack[-1]:
                    break
                stack.pop()
            if pos - self._start > self.max_frame:
                raise FrameTooLarge(pos - self._start, self.max_frame)
            if not stack:
                frames.append(bytes(buf[self._start : pos]))
                self._start = pos


class RedisCodec:
    """
    RESP2 over :class:`RespFramer`; replies matched in order.  A top-level
    error reply (``-ERR ...``) fails its request with
    :class:`~framedclient.errors.RemoteError` carrying Redis's message.
    """

    __slots__ = ("max_frame",)

    matching = Matching.IN_ORDER
    supports_cancel = False
    supports_ping = False
    max_id = 2**63 - 1

    def __init__(self, max_frame: int = 16 * 1024 * 1024) -> None:
        self.max_frame = max_frame

    def __repr__(self) -> str:
        return f"RedisCodec(max_frame={self.max_frame})"

    def new_framer(self) -> Framer:
        return RespFramer(self.max_frame)

    def encode(self, kind: int, request_id: int, body: bytes) -> bytes:
        if kind != REQUEST:
            raise ValueError(f"RESP has no {Kind(kind).name} frames")
        if len(body) > self.max_frame:
            raise FrameTooLarge(len(body), self.max_frame)
        return body

    def decode(self, frame: bytes) -> tuple[int, int, bytes]:
        if frame[:1] == b"-":
            return ERROR, 0, frame[1:-2]
        return REPLY, 0, frame


def command(*args: bytes | str | int) -> bytes:
    """
    One Redis command as a RESP array of bulk strings.
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def parse_reply(frame: bytes) -> RespValue:
    """
    A whole RESP2 reply as Python values: simple and bulk strings as
    ``bytes``, integers as ``int``, arrays as lists, nil as ``None``, and
    nested error replies as :class:`RespError` instances.
    """
    value, pos = _parse_value(frame, 0)
    if pos != len(frame):
        raise CorruptFrame("trailing bytes after a RESP reply")
    return value


def _parse_value(frame: bytes, pos: int) -> tuple[RespValue, int]:
    eol = frame.find(b"\r\n", pos)
    if eol < 0:
        raise CorruptFrame("truncated RESP reply")
    marker, line, pos = frame[pos : pos + 1], frame[pos + 1 : eol], eol + 2
    if marker == b"+":
        return line, pos
    if marker == b"-":
        return RespError(line.decode("utf-8", "replace")), pos
    if marker == b":":
        return int(line), pos
    if marker == b"$":
        n = int(line)
        if n == -1:
            return None, pos
        return frame[pos : pos + n], pos + n + 2
    if marker == b"*":
        n = int(line)
        if n == -1:
            return None, pos
        items: list[RespValue] = []
        for _ in range(n):
            item, pos = _parse_value(frame, pos)
            items.append(item)
        return items, pos
    raise CorruptFrame(f"unknown RESP type byte {marker!r}")
