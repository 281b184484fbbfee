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

Each request body must hold exactly one command: Redis answers every
command, and a body with two would hand its second reply to the next
caller.  :meth:`RedisCodec.encode` checks this before anything is sent.
Several commands go out as one request as a :class:`CommandBatch`: one
unit that takes exactly as many replies as it holds commands.

Most users want :class:`~framedclient.clients.redis.RedisClient` (everyday
commands, pipelines, transactions, AUTH/SELECT on connect; ``from
framedclient import RedisClient``)::

    redis = RedisClient.from_endpoint(reactor, "tcp:127.0.0.1:6379")
    await redis.set(b"k", b"v")
    await redis.get(b"k")                                   # b"v"

The codec alone serves :class:`~framedclient.FramedClient` with raw bodies::

    client = FramedClient.from_endpoint(reactor, "tcp:127.0.0.1:6379",
                                        codec=RedisCodec())
    await client.request(command(b"SET", b"k", b"v"))     # b"+OK\\r\\n"
    parse_reply(await client.request(command(b"GET", b"k")))  # b"v"
"""

from __future__ import annotations

import threading
from typing import Any, SupportsIndex, TypeAlias, cast

from framedclient._mode import mypyc_attr
from framedclient.codecs._moved_names import moved_names
from framedclient.codecs.arguments import argument_bytes, refusal
from framedclient.codecs.base import ERROR, REPLY, REQUEST, Kind, Matching
from framedclient.errors import (
    CorruptFrame,
    FrameTooLarge,
    InvalidRequest,
    ProtocolError,
    RemoteError,
)
from framedclient.framing import Framer, check_max_frame_type

__all__ = [
    "DEFAULT_MAX_ARRAY",
    "BadArgument",
    "CommandBatch",
    "RedisCodec",
    "ReplyDiscarded",
    "RespError",
    "RespFramer",
    "ResumableFramer",
    "command",
    "count_commands",
    "parse_replies",
    "parse_reply",
]

_MAX_LINE = 64 * 1024

#: The most elements one RESP array may announce (Redis's own limit for a
#: request's arguments is 1024 * 1024 by default).
DEFAULT_MAX_ARRAY = 1024 * 1024

# A reply the framer discarded for breaking a limit comes out as one frame
# starting with this byte (not a RESP2 type byte), so the codec can fail its
# request alone and keep the connection.
_DISCARDED = b"!"


class RespError(RemoteError):
    """
    Redis answered with an error reply (``-WRONGTYPE Operation against a
    key ...``).  :class:`~framedclient.clients.redis.RedisClient` raises it
    for a command's error reply and puts it in place of the reply inside
    arrays, pipelines and transactions, so one failed command does not hide
    the others' replies.

    :ivar message: Redis's error text.
    :ivar prefix: its first word, the kind of error (``ERR``,
        ``WRONGTYPE``, ``NOAUTH``, ``EXECABORT``...): the part meant for
        programs.  (``code`` stays ``None``: Redis has no status numbers.)
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.prefix = message.split(" ", 1)[0]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RespError) and other.message == self.message

    def __hash__(self) -> int:
        return hash(self.message)

    def __repr__(self) -> str:
        return f"RespError({self.message!r})"


class ReplyDiscarded(RespError):
    """
    The reply to this request broke one of the codec's limits
    (``max_frame``, ``max_bulk``, ``max_array``): it was read and dropped
    as it arrived, never buffered whole.  The command did run on the
    server; the connection and every other request on it carry on.
    """


#: A decoded RESP2 reply: bulk and simple strings as ``bytes``, integers,
#: arrays (nested), errors inside arrays, and ``None`` for nil.
RespValue: TypeAlias = "bytes | int | list[RespValue] | RespError | None"


@mypyc_attr(allow_interpreted_subclasses=True)
class ResumableFramer:
    """
    The buffer handling of a framer whose parser resumes where the last feed
    stopped (``_parse`` appends whole frames and moves ``_start`` past
    them): shared by :class:`RespFramer` and
    :class:`~framedclient.codecs.resp3.Resp3Framer`, so both keep one rule
    for a broken stream and for compacting the buffer.
    """

    __slots__ = ("_buf", "_error", "_pos", "_start")
    #: the protocol's name in the message of a broken stream
    stream_name = "RESP"
    _buf: bytearray
    _start: int
    _pos: int
    _error: ProtocolError | None

    def _parse(self, frames: list[bytes]) -> None:
        raise NotImplementedError

    def feed(self, data: bytes) -> list[bytes]:
        if self._error is not None:
            raise CorruptFrame(
                f"the {self.stream_name} stream broke earlier ({self._error}); "
                "close the connection"
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


@mypyc_attr(allow_interpreted_subclasses=True)
class RespFramer(ResumableFramer):
    """
    Cuts a RESP2 byte stream into whole top-level replies (as raw bytes).

    The parser keeps its place between feeds (the stack of array counts
    still expected and the bytes a bulk string still needs), so nothing is
    parsed twice.

    Limits: a reply longer than ``max_frame`` bytes, a bulk string longer
    than ``max_bulk`` or an array announcing more than ``max_array``
    elements is *discarded*, not buffered: the parser keeps reading its
    structure and drops its bytes as they come, then emits one frame that
    :class:`RedisCodec` turns into an error for that request alone (the
    connection and every other request on it carry on).  Only a stream that
    cannot be resynchronised (garbage, a line with no end in sight) raises
    :class:`~framedclient.errors.ProtocolError`; after that the framer
    stays broken and the connection must be closed.
    """

    __slots__ = (
        "_bulk",
        "_discard",
        "_stack",
        "max_array",
        "max_bulk",
        "max_frame",
    )

    def __init__(
        self,
        max_frame: SupportsIndex = 16 * 1024 * 1024,
        *,
        max_bulk: SupportsIndex | None = None,
        max_array: SupportsIndex = DEFAULT_MAX_ARRAY,
    ) -> None:
        # Typed with a protocol, which mypyc does not check at the call, so
        # that a wrong type gets the message naming the argument, not
        # mypyc's "int object expected" (docs/design.md, "Compiled mode").
        self._init(max_frame, max_bulk, max_array)

    def _init(self, max_frame: Any, max_bulk: Any, max_array: Any) -> None:
        check_max_frame_type(max_frame)
        if max_frame < 3:
            raise ValueError(f"max_frame must be at least 3 bytes, got {max_frame}")
        if max_array < 1:
            raise ValueError(f"max_array must be at least 1, got {max_array}")
        self.max_frame: int = max_frame
        self.max_bulk: int = max_frame if max_bulk is None else max_bulk
        self.max_array: int = max_array
        self._buf = bytearray()
        self._start = 0  # where the reply being parsed begins
        self._pos = 0  # next byte to parse
        self._stack: list[int] = []  # elements still expected, per open array
        self._bulk = 0  # bytes (with CRLF) a bulk string still needs, or 0
        # Why the reply being parsed is being dropped, or None.
        self._discard: str | None = None
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

    def _drop_parsed(self) -> int:
        # Discarding: forget the bytes parsed so far of this reply.
        start = self._start
        del self._buf[start : self._pos]
        self._pos = start
        return start

    def _parse(self, frames: list[bytes]) -> None:
        buf = self._buf
        stack = self._stack
        while True:
            pos = self._pos
            end = len(buf)
            if not stack and not self._bulk:
                # New replies that are bulk strings (GETs'): each one that
                # is all here and within the limits is cut at once.
                # Anything else (nil, not all here yet, too large,
                # malformed) takes the general path below, which decides
                # the same way.
                while pos < end and buf[pos] == 0x24:
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        break
                    digits = buf[pos + 1 : eol]
                    if not digits.isdigit():
                        break
                    n = int(digits)
                    stop = eol + 4 + n
                    if (
                        stop > end
                        or n > self.max_bulk
                        or stop - pos > self.max_frame
                        or buf[stop - 2 : stop] != b"\r\n"
                    ):
                        break
                    frames.append(bytes(buf[pos:stop]))
                    pos = stop
                self._pos = self._start = pos
            if self._bulk:
                if self._discard is not None:
                    # Drop what has come of a discarded bulk string.
                    take = min(self._bulk, end - pos)
                    del buf[pos : pos + take]
                    self._bulk -= take
                    if self._bulk:
                        return
                else:
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
                        self._pos = pos
                        if self._discard is None:
                            if n > self.max_bulk:
                                self._discard = (
                                    f"a bulk string of {n} bytes exceeds "
                                    f"max_bulk={self.max_bulk}"
                                )
                            elif pos - self._start + n + 2 > self.max_frame:
                                self._discard = (
                                    f"a reply of at least {pos - self._start + n + 2}"
                                    f" bytes exceeds max_frame={self.max_frame}"
                                )
                        if self._discard is not None:
                            self._drop_parsed()
                        self._bulk = n + 2
                        continue
                    if marker == 0x2A and n > 0:
                        if n > self.max_array and self._discard is None:
                            self._discard = (
                                f"an array of {n} elements exceeds "
                                f"max_array={self.max_array}"
                            )
                        stack.append(n)
                        self._pos = pos
                        if self._discard is not None:
                            self._drop_parsed()
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
            if self._discard is None and pos - self._start > self.max_frame:
                self._discard = (
                    f"a reply of at least {pos - self._start} bytes exceeds "
                    f"max_frame={self.max_frame}"
                )
            if self._discard is not None:
                pos = self._drop_parsed()
                if not stack:
                    frames.append(
                        _DISCARDED + f"reply discarded: {self._discard}".encode()
                    )
                    self._discard = None
                continue
            if not stack:
                frames.append(bytes(buf[self._start : pos]))
                self._start = pos


@mypyc_attr(native_class=False)
class _Command(bytes):
    """
    One whole RESP command, made by :func:`command` (or by
    :class:`~framedclient.clients.redis.RedisClient` the same way): correct
    by construction, so :meth:`RedisCodec.encode` sends it without parsing
    it again.

    Trust goes with the exact class, and only :func:`command` makes one:
    anything derived from it (``+``, slices, ``bytes(...)``) is plain
    ``bytes`` again and is checked like any body a user wrote.
    """

    __slots__ = ()

    # What the engine reads off a body that is not plain bytes: one reply.
    expected_replies = 1


@mypyc_attr(native_class=False)
class CommandBatch(bytes):
    """
    Several RESP commands sent as **one request** that takes exactly as many
    replies as it holds commands, in order; its reply (through
    :class:`~framedclient.FramedClient`) is the list of those replies as
    ``(ok, body)`` pairs.  One request means one slot, one timeout and one
    connection: the commands are never split across connections, and a
    batch that times out or is cancelled still consumes all its replies,
    so none reaches the next caller.

    Make one with :meth:`of`;
    :meth:`~framedclient.clients.redis.RedisClient.pipeline` does it for
    you.

    :ivar expected_replies: how many commands (and so replies) it holds.
    """

    expected_replies: int

    def __new__(cls, data: bytes, commands: int) -> CommandBatch:
        if commands < 1:
            raise ValueError(f"a batch holds at least one command, got {commands}")
        self = bytes.__new__(cls, data)
        self.expected_replies = commands
        return self

    @classmethod
    def of(cls, commands: list[bytes]) -> CommandBatch:
        """
        A batch of ``commands`` (each made by :func:`command`).
        """
        data = b"".join(commands)
        if cls is CommandBatch and all(c.__class__ is _Command for c in commands):
            # Whole commands, one each: the codec need not count them again.
            return _CommandList(data, len(commands))
        return cls(data, len(commands))

    def __repr__(self) -> str:
        return f"<CommandBatch of {self.expected_replies} commands, {len(self)} bytes>"


@mypyc_attr(native_class=False)
class _CommandList(CommandBatch):
    """
    A :class:`CommandBatch` that :meth:`CommandBatch.of` joined from
    :func:`command`'s results alone: it holds exactly as many whole commands
    as it says, by construction, so :meth:`RedisCodec.encode` does not
    count them again.
    """


def _command_end(body: bytes, pos: int) -> int:
    # Where the RESP command (an array of bulk strings) at ``pos`` ends.
    # Digits are checked strictly: Python's int() accepts "+5", " 5" and
    # "5_0", which Redis rejects by closing the connection.
    if body[pos] != 0x2A:
        raise ValueError("does not start with '*'")
    eol = body.index(b"\r\n", pos)
    line = body[pos + 1 : eol]
    if not line.isdigit() or line == b"0":
        raise ValueError(f"bad argument count {line!r}")
    pos = eol + 2
    for _ in range(int(line)):
        if body[pos] != 0x24:
            raise ValueError("an argument is not a bulk string")
        eol = body.index(b"\r\n", pos)
        line = body[pos + 1 : eol]
        if not line.isdigit():
            raise ValueError(f"bad bulk length {line!r}")
        pos = eol + 4 + int(line)
        if body[pos - 2 : pos] != b"\r\n":
            raise ValueError("a bulk string is not followed by CRLF")
    return pos


def count_commands(body: bytes) -> int:
    """
    How many whole RESP commands ``body`` holds.

    :raises InvalidRequest: ``body`` is not a sequence of whole RESP
        commands (arrays of bulk strings; Redis's "inline" form is not
        accepted: it cannot carry binary data safely).
    """
    pos = 0
    end = len(body)
    n = 0
    try:
        while pos < end:
            pos = _command_end(body, pos)
            n += 1
    except (ValueError, IndexError) as e:
        raise InvalidRequest(
            f"the body is not a sequence of whole RESP commands (command "
            f"{n + 1}, byte {pos}: {e}); build commands with "
            f"framedclient.codecs.redis.command(); nothing was sent"
        ) from None
    if not n:
        raise InvalidRequest("the body holds no Redis command; nothing was sent")
    if pos != end:
        raise InvalidRequest(
            f"the body ends inside command {n} (a bulk length points past the "
            f"end); nothing was sent"
        )
    return n


@mypyc_attr(allow_interpreted_subclasses=True)
class RedisCodec:
    """
    RESP2 over :class:`RespFramer`; replies matched in order.

    Every request body is checked before it is sent: a plain ``bytes`` body
    must hold exactly one whole command (Redis answers each command, so a
    second one would hand its reply to the next caller); a
    :class:`CommandBatch` must hold as many as it says.  Anything else
    fails that request alone with
    :class:`~framedclient.errors.InvalidRequest`, nothing sent.  What
    :func:`command` returned (and :meth:`CommandBatch.of` joined from such
    results alone) is whole by construction and is not parsed again: the
    check costs about a microsecond per command, a tenth of a GET.

    A top-level error reply (``-ERR ...``) fails its request with
    :class:`~framedclient.errors.RemoteError` carrying Redis's message (an
    error inside a batch is one of its replies).  A reply over the framer's
    limits fails its request with ``RemoteError`` too (``reply
    discarded: ...``); the connection carries on.

    :param max_frame: the largest reply kept (and request sent), in bytes.
    :param max_bulk: the longest bulk string in a reply; ``max_frame`` by
        default.
    :param max_array: the most elements an array in a reply may announce.
    """

    __slots__ = ("max_array", "max_bulk", "max_frame")

    matching = Matching.IN_ORDER
    supports_cancel = False
    supports_ping = False
    max_id = 2**63 - 1

    def __init__(
        self,
        max_frame: SupportsIndex = 16 * 1024 * 1024,
        *,
        max_bulk: SupportsIndex | None = None,
        max_array: SupportsIndex = DEFAULT_MAX_ARRAY,
    ) -> None:
        # (Protocols, not int: see RespFramer.__init__.)
        RespFramer(max_frame, max_bulk=max_bulk, max_array=max_array)  # validates
        self.max_frame: int = max_frame  # type: ignore[assignment]
        self.max_bulk: int | None = max_bulk  # type: ignore[assignment]
        self.max_array: int = max_array  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RedisCodec(max_frame={self.max_frame})"

    def new_framer(self) -> Framer:
        return RespFramer(
            self.max_frame, max_bulk=self.max_bulk, max_array=self.max_array
        )

    def encode(self, kind: int, request_id: int, body: bytes) -> bytes:
        if kind != REQUEST:
            raise ValueError(f"RESP has no {Kind(kind).name} frames")
        if len(body) > self.max_frame:
            raise FrameTooLarge(len(body), self.max_frame)
        cls = body.__class__
        if cls is _Command or cls is _CommandList:
            # Made by command() / CommandBatch.of() from command()s: whole
            # commands, as many as it says, by construction.
            return body
        if cls is bytes:
            # A body from elsewhere, checked without counting past one
            # command.
            try:
                end = _command_end(body, 0)
            except (ValueError, IndexError):
                count_commands(body)  # raises with the details
                raise  # pragma: no cover
            if end != len(body):
                raise InvalidRequest(
                    f"a request body must hold exactly one Redis command, but "
                    f"this one holds {count_commands(body)} (a second command's "
                    f"reply would reach the next caller); send several "
                    f"commands as a CommandBatch (RedisClient.pipeline()); "
                    f"nothing was sent"
                )
            return body
        if isinstance(body, CommandBatch):
            n = count_commands(body)
            if n != body.expected_replies:
                raise InvalidRequest(
                    f"the batch says it holds {body.expected_replies} commands "
                    f"but holds {n}; nothing was sent"
                )
            return body
        return self.encode(kind, request_id, bytes(body))

    def decode(self, frame: bytes) -> tuple[int, int, object]:
        first = frame[:1]
        if first == b"-":
            return ERROR, 0, frame[1:-2]
        if first == _DISCARDED:
            return ERROR, 0, ReplyDiscarded(frame[1:].decode("utf-8", "replace"))
        return REPLY, 0, frame


def command(*args: object) -> bytes:
    """
    One Redis command as a RESP array of bulk strings.

    Each argument becomes exact ``bytes`` first, by the rule of
    :mod:`framedclient.codecs.arguments`: bytes as they are (a
    ``bytearray`` or ``memoryview`` copied, its length in bytes), text as
    UTF-8, integers in decimal, floats by ``repr``; a ``bool``, ``None``, a
    list or anything else raises :class:`TypeError` naming the argument,
    and nothing is sent.  So the lengths written are the lengths sent and
    the result is always exactly one command; the codec relies on that to
    skip re-checking it.  (The arguments are typed ``object``, not ``bytes |
    str | int | float``: compiled by mypyc, a declared type is checked at
    the call with a message that names neither the argument nor the fix.)
    """
    if not args:
        # No command at all: plain bytes, which the codec checks and refuses.
        return b"*0\r\n"
    return _Command(_command_bytes(args))


def _command_bytes(args: tuple[object, ...]) -> bytes:
    # command()'s work, as plain bytes: a whole command by construction,
    # for a pipeline that joins its commands anyway (wrapping each in
    # _Command, a bytes subclass, copied it once more: 0.2 us a command).
    n = len(args)  # at least 1: command() and Pipeline.add() see to it
    # The name's bulk string is made once per name (a program uses a few).
    name = args[0]
    cls = name.__class__
    exact = cls is str or cls is bytes
    segment = _NAMES.get(name) if exact else None
    if segment is None:
        if cls is bytes:
            raw = cast(bytes, name)
        elif isinstance(name, str):
            raw = str.encode(name)
        else:
            raw = _other_argument(name, args)
        segment = b"$%d\r\n%s\r\n" % (len(raw), raw)
        if exact and len(_NAMES) < _NAMES_MAX:
            _NAMES[name] = segment
    parts = [_HEADERS[n] if n < len(_HEADERS) else b"*%d\r\n" % n, segment]
    append = parts.append
    for i in range(1, n):
        arg = args[i]
        if arg.__class__ is bytes:
            data = arg
        elif isinstance(arg, str):
            data = str.encode(arg)
        else:
            data = _other_argument(arg, args)
        # A bulk string's header from the table (no formatting per
        # argument), its data, its CRLF: joined once below.
        size = len(data)
        append(_BULK_HEADERS[size] if size < _BULK_HEADERS_UP_TO else b"$%d\r\n" % size)
        append(data)  # type: ignore[arg-type]
        append(b"\r\n")
    return b"".join(parts)


def _whole_commands(commands: list[bytes]) -> CommandBatch:
    """
    The batch of ``commands``, each made by :func:`_command_bytes` (a
    pipeline's): whole commands, one each, so not counted again.
    """
    return _CommandList(b"".join(commands), len(commands))


# command()'s pieces made once: array headers, and the bulk string of each
# command name seen (bounded: names are the caller's to choose).
_HEADERS = tuple(b"*%d\r\n" % n for n in range(33))
_BULK_HEADERS_UP_TO = 512
_BULK_HEADERS = tuple(b"$%d\r\n" % n for n in range(_BULK_HEADERS_UP_TO))
_NAMES: dict[object, bytes] = {}  # exact str and bytes only
_NAMES_MAX = 1024


@mypyc_attr(native_class=False)
class BadArgument(TypeError):
    """
    An argument of :func:`command` of a type Redis cannot take; a
    :class:`TypeError` whose message names it by its place in the command.

    :ivar position: its index in the command (0: the command's name).
    :ivar value: the argument.
    """

    def __init__(self, message: str, position: int, value: object) -> None:
        super().__init__(message)
        self.position = position
        self.value = value


def _other_argument(arg: object, args: tuple[object, ...]) -> bytes:
    # Not bytes, not str: an int is usual (counters, expiries); the rest is
    # rare, and a wrong type is refused with its place in the command.
    if isinstance(arg, int) and not isinstance(arg, bool):
        return b"%d" % int(arg)
    if isinstance(arg, (float, bytes, bytearray, memoryview)):
        return argument_bytes(arg, "")
    position = next(i for i, a in enumerate(args) if a is arg)
    name = args[0]
    if position == 0:
        where = "the command name (argument 0)"
    elif isinstance(name, (bytes, str)):
        shown = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        where = f"argument {position} of {shown.upper()}"
    else:
        where = f"argument {position}"
    raise BadArgument(str(refusal(arg, where)), position, arg)


def parse_reply(frame: bytes) -> RespValue:
    """
    A whole RESP2 reply as Python values: simple and bulk strings as
    ``bytes``, integers as ``int``, arrays as lists, nil as ``None``, and
    nested error replies as :class:`RespError` instances.

    ``frame`` is one whole reply as :class:`RespFramer` cut it.  Arrays are
    parsed by hiredis when it is installed (``pip install
    'framedclient[hiredis]'``: 5x faster on a 3-element array, 30x on 100
    elements, measured); single values have short paths of their own, as
    fast as hiredis's.
    """
    try:
        first = frame[0]
        if first == 0x24:  # "$": the usual GET reply
            eol = frame.index(b"\r\n")
            n = int(frame[1:eol])
            if n < 0:
                return None
            if eol + 4 + n == len(frame):
                return frame[eol + 2 : eol + 2 + n]
        elif first == 0x3A:  # ":"
            return int(frame[1:-2])
        elif first == 0x2B:  # "+"
            return frame[1:-2]
        elif first == 0x2A and _hiredis is not None and len(frame) < _HIREDIS_UP_TO:
            return _parse_with_hiredis(frame)
        value, pos = _parse_value(frame, 0)
    except (ValueError, IndexError) as e:
        raise CorruptFrame(f"not a whole RESP reply: {e}") from None
    if pos != len(frame):
        raise CorruptFrame("trailing bytes after a RESP reply")
    return value


def parse_replies(parts: list[tuple[bool, Any]]) -> list[RespValue]:
    """
    The replies of a :class:`CommandBatch` (its ``(ok, body)`` pairs) as
    Python values, in one pass: each reply as :func:`parse_reply` reads it,
    an error reply as a :class:`RespError` value (so one failed command
    hides no other reply).

    With hiredis installed and every reply a success, the replies are
    joined and read by one hiredis reader in one go (about 2.5x faster per
    GET than one :func:`parse_reply` call each, measured on pipelines of
    50); otherwise each is read on its own, GETs' bulk strings inline.

    :raises CorruptFrame: a reply is not whole RESP (the framer cut it, so
        only a broken framer could cause it).
    """
    n = len(parts)
    if _hiredis is not None and n > 1:
        frames = []
        for ok, body in parts:
            if not ok:
                break
            frames.append(body)
        else:
            joined = b"".join(frames)
            if len(joined) < _HIREDIS_UP_TO:
                return _parse_joined(joined, n)
    values: list[RespValue] = []
    append = values.append
    for ok, body in parts:
        if ok:
            if body[0] == 0x24:  # "$": a GET's reply, read inline
                eol = body.find(b"\r\n")
                digits = body[1:eol]
                if digits.isdigit():
                    start = eol + 2
                    stop = start + int(digits)
                    if stop + 2 == len(body):
                        append(body[start:stop])
                        continue
            append(parse_reply(body))
        elif isinstance(body, RespError):
            append(body)  # a reply the codec discarded (ReplyDiscarded)
        else:
            append(RespError(body.decode("utf-8", "replace")))
    return values


def _parse_joined(joined: bytes, n: int) -> list[RespValue]:
    # n whole replies back to back, read by one hiredis reader.
    reader = getattr(_readers, "reader", None)
    if reader is None:
        reader = _readers.reader = _hiredis.Reader(replyError=RespError)
    reader.feed(joined)
    gets = reader.gets
    values: list[RespValue] = [gets() for _ in range(n)]
    if reader.has_data() or (values and values[-1] is False):
        _readers.reader = None
        raise CorruptFrame("the replies of a batch are not whole RESP replies")
    return values


# hiredis copies every bulk string it reads into its own buffer first: past
# this size the pure-Python parser (slices of the frame) is the faster one.
_HIREDIS_UP_TO = 64 * 1024

try:
    import hiredis as _hiredis
except ImportError:  # pragma: no cover - the optional extra
    _hiredis = None  # type: ignore[assignment]

_readers = threading.local()


def _parse_with_hiredis(frame: bytes) -> RespValue:
    # One reader per thread, reused (making one costs more than parsing a
    # small array); a frame is always whole, so it leaves the reader empty.
    reader = getattr(_readers, "reader", None)
    if reader is None:
        reader = _readers.reader = _hiredis.Reader(replyError=RespError)
    reader.feed(frame)
    value = reader.gets()
    if value is False or reader.has_data():
        _readers.reader = None
        raise CorruptFrame("a RESP reply is not whole, or has trailing bytes")
    return value  # type: ignore[no-any-return]


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


# RedisClient lived here until it moved above the core; an old import is
# told where it is now (the codec layer imports no client).
__getattr__ = moved_names(
    __name__,
    {
        name: f"from framedclient.clients.redis import {name}"
        for name in ("RedisClient", "RedisLease", "Pipeline")
    },
)
