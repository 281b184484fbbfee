"""
Sans-IO framers: bytes in, whole frames out; payload in, framed bytes out.

TCP delivers a byte stream, not messages: two writes can arrive as one read
and one write as many reads.  A framer turns whatever the transport hands
over into whole frames, in order, and turns a payload into bytes the peer's
framer will cut at the same place.

Framers never touch a socket, a reactor or a clock, so the same objects work
under Twisted, asyncio or threads, and they can be fuzzed directly.  This
module deliberately imports nothing from Twisted.

Three framers cover most real protocols:

- :class:`LengthPrefixed`: a binary length field somewhere in a header, with
  exactly the parameters of Netty's ``LengthFieldBasedFrameDecoder``;
- :class:`Delimited`: frames end with a delimiter (``\\r\\n``, ``\\0``, ...);
- :class:`Netstring`: D. J. Bernstein's ``<length>:<payload>,``.

Each one bounds what it buffers (``max_frame``) and raises an error from
:mod:`framedclient.errors` *before* it buffers an oversized frame, so a
hostile or confused peer can never make the client allocate what it
announces.  Errors carry the frames decoded earlier in the same
:meth:`~Framer.feed` call in their ``frames`` attribute.

Decoding is linear in the bytes fed, however the stream is split: a frame
arriving in one-byte pieces is appended to one buffer, never re-concatenated
or re-scanned, and many frames in one chunk are sliced out of the chunk by
offset, never by repeatedly slicing the remainder.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final, Literal, NoReturn, SupportsBytes, SupportsIndex

from framedclient._mode import mypyc_attr
from framedclient.errors import CorruptFrame, FrameTooLarge, ProtocolError

# The protocol lives in an interpreted module: a class compiled by mypyc is
# not a typing.Protocol at run time, and isinstance(x, Framer) must work in
# both modes.  It is framedclient.framing.Framer to its users.
from framedclient.framer_protocol import Framer

__all__ = ["Delimited", "Framer", "LengthPrefixed", "Netstring"]

_MiB = 1024 * 1024


# Precompiled unpackers for the widths struct knows; ``unpack_from`` reads the
# header in place, without slicing the chunk.
_STRUCT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}

# LengthPrefixed._flen sentinels (a real frame length is always >= 1).
_HEADER: Final = -1  # _buf holds the start of a frame whose header is incomplete
_UNSCANNED: Final = -2  # _buf holds bytes that followed a rejected frame, undecoded

# Delimited._mode and Netstring._state values.  0 is the state of a framer
# with nothing pending, so ``if self._mode or self._buf`` is the whole test
# for "take the slow path".
_FRAME: Final = 0
_DISCARD: Final = 1
_PAYLOAD: Final = 1
_FAILED: Final = 2
_RESCAN: Final = 3


def _u24_unpacker(
    byteorder: Literal["big", "little"],
) -> Callable[[bytes | bytearray, int], tuple[int]]:
    """
    Build an ``unpack_from`` for 3-byte length fields, which struct lacks.
    """

    def unpack_from(buffer: bytes | bytearray, offset: int) -> tuple[int]:
        return (int.from_bytes(buffer[offset : offset + 3], byteorder),)

    return unpack_from


def _u24_packer(byteorder: Literal["big", "little"]) -> Callable[[int], bytes]:
    """
    Build a ``pack`` for 3-byte length fields, which struct lacks.
    """

    def pack(value: int) -> bytes:
        return value.to_bytes(3, byteorder)

    return pack


def check_max_frame_type(max_frame: object) -> None:
    """
    Refuse a ``max_frame`` that is not a number of bytes, naming it: a
    comparison would fail with Python's "'<' not supported", which names
    neither the argument nor the fix.
    """
    if isinstance(max_frame, bool) or not isinstance(max_frame, int):
        raise TypeError(
            f"max_frame must be a whole number of bytes, got "
            f"{type(max_frame).__name__} {max_frame!r} (write 16 * 1024 * 1024, "
            f"not '16M')"
        )


def check_framer_factory(owner: str, framer_factory: object) -> None:
    """
    Refuse a framer where a framer factory belongs, saying what to pass:
    a codec needs a fresh framer per connection (framers hold the bytes of
    a partial frame), so it takes the class or a function, not an instance.
    """
    if not callable(framer_factory):
        name = type(framer_factory).__name__
        raise TypeError(
            f"{owner}: framer_factory must make a new framer per connection, got "
            f"a {name} instance: pass the class ({name}) or a function "
            f"(lambda: {name}(...))"
        )


def _check_max_frame(max_frame: Any) -> None:
    check_max_frame_type(max_frame)
    if max_frame < 1:
        raise ValueError(f"max_frame must be at least 1, not {max_frame}")


# Users may subclass it (mypyc: slower calls from compiled code into it).
@mypyc_attr(allow_interpreted_subclasses=True)
class LengthPrefixed:
    """
    Frames announced by a binary length field, with the semantics of Netty's
    ``LengthFieldBasedFrameDecoder``.

    A frame is ``offset`` bytes of anything, the ``length_size``-byte length
    field, then the rest.  The field's value plus ``adjustment`` is the
    number of bytes after the field, so the whole frame on the wire is::

        offset + length_size + value + adjustment

    and :meth:`feed` returns each frame without its first ``strip`` bytes.
    The defaults (4-byte big-endian length of the payload, header stripped)
    are the common ``u32 length · payload`` layout; ``docs/framing.md`` shows
    the other layouts with byte diagrams.

    Errors, all raised as soon as the header is complete and before any of
    the frame's body is buffered:

    - :class:`~framedclient.errors.FrameTooLarge` when the whole frame would
      be longer than ``max_frame``.  Like Netty's discard mode, the framer
      then skips that frame's bytes as they arrive (counting them, never
      storing them) and a later :meth:`feed` resumes with the next frame.
    - :class:`~framedclient.errors.CorruptFrame` when ``adjustment`` makes
      the frame shorter than its own header (the framer skips the header, as
      Netty does), or when the frame is shorter than ``strip`` (the framer
      skips the frame).

    Bytes that followed a rejected frame in the same chunk are kept and
    decoded by the next :meth:`feed` (``feed(b"")`` is enough).  Resuming is
    a courtesy for peers known to be sane; after a protocol error the usual
    response is to close the connection.

    Unlike Netty (whose Java ``long`` is signed), an 8-byte field is read as
    unsigned, so a value of 2**63 or more is a ``FrameTooLarge``, not a
    ``CorruptFrame``.

    :param length_size: width of the length field in bytes: 1, 2, 3, 4 or 8
        (Netty's ``lengthFieldLength``).
    :param byteorder: ``"big"`` (network order) or ``"little"``.
    :param offset: bytes before the length field (``lengthFieldOffset``).
    :param adjustment: added to the field's value to get the number of bytes
        after the field (``lengthAdjustment``); negative when the value
        counts the header too.
    :param strip: bytes removed from the front of each decoded frame
        (``initialBytesToStrip``); ``None`` strips the whole header up to the
        end of the length field, ``0`` keeps it.
    :param max_frame: the longest whole frame accepted, header included
        (``maxFrameLength``).
    :raises ValueError: for parameters that cannot describe a frame layout.
    """

    __slots__ = (
        "_adjustment",
        "_buf",
        "_byteorder",
        "_discard",
        "_extra",
        "_flen",
        "_header_end",
        "_length_size",
        "_min_frame",
        "_offset",
        "_pack",
        "_strip",
        "_unpack_from",
        "max_frame",
    )

    max_frame: int

    def __init__(
        self,
        length_size: SupportsIndex = 4,
        byteorder: Literal["big", "little"] = "big",
        offset: SupportsIndex = 0,
        adjustment: SupportsIndex = 0,
        strip: SupportsIndex | None = None,
        max_frame: SupportsIndex = 16 * _MiB,
    ) -> None:
        # The parameters are typed with protocols, which mypyc does not
        # check at the call, so that a wrong type gets the message below
        # naming the argument, not mypyc's "int object expected"
        # (docs/design.md, "Compiled mode"); _init checks and converts.
        self._init(length_size, byteorder, offset, adjustment, strip, max_frame)

    def _init(
        self,
        length_size: Any,
        byteorder: Any,
        offset: Any,
        adjustment: Any,
        strip: Any,
        max_frame: Any,
    ) -> None:
        if length_size not in (1, 2, 3, 4, 8):
            raise ValueError(
                f"length_size must be 1, 2, 3, 4 or 8 (an int, the bytes of the "
                f"length field), not {length_size!r}"
            )
        if byteorder not in ("big", "little"):
            raise ValueError(f'byteorder must be "big" or "little", not {byteorder!r}')
        if offset < 0:
            raise ValueError(f"offset must not be negative, not {offset}")
        if strip is not None and strip < 0:
            raise ValueError(f"strip must not be negative, not {strip}")
        _check_max_frame(max_frame)
        header_end = offset + length_size
        if header_end > max_frame:
            raise ValueError(
                f"max_frame ({max_frame}) is smaller than the header "
                f"(offset {offset} + length_size {length_size}); no frame could fit"
            )
        self._length_size: int = length_size
        self._byteorder: Literal["big", "little"] = byteorder
        self._offset: int = offset
        self._adjustment: int = adjustment
        self._header_end: int = header_end
        self._strip: int = header_end if strip is None else strip
        # A frame shorter than either bound is corrupt; checking one chained
        # comparison per frame keeps the hot loop short.
        self._min_frame: int = max(header_end, self._strip)
        # frame length = value + _extra
        self._extra: int = header_end + adjustment
        self.max_frame = max_frame
        self._unpack_from: Callable[[bytes | bytearray, int], tuple[int]]
        self._pack: Callable[[int], bytes]
        code = _STRUCT_CODES.get(length_size)
        if code is None:
            self._unpack_from = _u24_unpacker(byteorder)
            self._pack = _u24_packer(byteorder)
        else:
            header = struct.Struct((">" if byteorder == "big" else "<") + code)
            self._unpack_from = header.unpack_from
            self._pack = header.pack
        self._buf = bytearray()
        self._flen = _HEADER
        self._discard = 0

    def __repr__(self) -> str:
        return (
            f"LengthPrefixed(length_size={self._length_size}, "
            f"byteorder={self._byteorder!r}, offset={self._offset}, "
            f"adjustment={self._adjustment}, strip={self._strip}, "
            f"max_frame={self.max_frame})"
        )

    @property
    def length_size(self) -> int:
        """Width of the length field in bytes."""
        return self._length_size

    @property
    def byteorder(self) -> Literal["big", "little"]:
        """Byte order of the length field."""
        return self._byteorder

    @property
    def offset(self) -> int:
        """Bytes before the length field."""
        return self._offset

    @property
    def adjustment(self) -> int:
        """Added to the length field's value to get the bytes after it."""
        return self._adjustment

    @property
    def strip(self) -> int:
        """Bytes removed from the front of each decoded frame."""
        return self._strip

    @property
    def header_size(self) -> int:
        """Bytes up to the end of the length field (``offset + length_size``)."""
        return self._header_end

    @property
    def buffered(self) -> int:
        """
        Bytes held: the start of a partial frame (never more than
        ``max_frame``), or bytes that followed a rejected frame.  Bytes being
        discarded after a :class:`~framedclient.errors.FrameTooLarge` are
        not held and not counted.
        """
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """
        Decode the frames completed by ``data``.

        :param data: the next bytes of the stream.
        :return: the completed frames, each without its first ``strip``
            bytes, in order.
        :raises FrameTooLarge: a header announces a frame longer than
            ``max_frame``; its bytes are skipped as they arrive.
        :raises CorruptFrame: a header announces a frame shorter than its
            own header, or shorter than ``strip``.
        """
        if not isinstance(data, bytes):
            # Slices of a bytearray or memoryview are not bytes; frames are.
            data = bytes(data)
        frames: list[bytes] = []
        pos = 0
        if self._buf or self._discard:
            data, pos = self._resume(data, frames)
        end = len(data)
        header_end = self._header_end
        offset = self._offset
        extra = self._extra
        strip = self._strip
        min_frame = self._min_frame
        max_frame = self.max_frame
        unpack_from = self._unpack_from
        while end - pos >= header_end:
            flen = unpack_from(data, pos + offset)[0] + extra
            if not min_frame <= flen <= max_frame:
                self._reject(flen, data, pos, frames)
            frame_end = pos + flen
            if frame_end > end:
                # Only a frame already known to fit in max_frame gets here,
                # so the buffer is bounded.
                self._flen = flen
                break
            frames.append(data[pos + strip : frame_end])
            pos = frame_end
        if pos < end:
            self._buf += data[pos:] if pos else data
        return frames

    def _resume(self, data: bytes, frames: list[bytes]) -> tuple[bytes, int]:
        """
        Finish what earlier feeds left pending: bytes to discard, a partial
        frame, or bytes held after a rejected frame.

        :return: the bytes to decode whole frames from, and the position in
            them to start at (``len(data)`` if ``data`` was used up).
        """
        if self._discard:
            if len(data) < self._discard:
                self._discard -= len(data)
                return data, len(data)
            pos = self._discard
            self._discard = 0
            return data, pos
        buf = self._buf
        flen = self._flen
        if flen == _UNSCANNED:
            # Only happens after an error; one copy is cheap next to it.
            self._buf = bytearray()
            self._flen = _HEADER
            return bytes(buf) + data, 0
        pos = 0
        if flen == _HEADER:
            header_end = self._header_end
            pos = header_end - len(buf)
            buf += data[:pos]
            if len(buf) < header_end:
                return data, len(data)
            flen = self._unpack_from(buf, self._offset)[0] + self._extra
            if not self._min_frame <= flen <= self.max_frame:
                # The frame started len(header) bytes before data[pos].
                self._reject(flen, data, pos - header_end, frames)
            self._flen = flen
        need = flen - len(buf)
        if len(data) - pos < need:
            buf += memoryview(data)[pos:]
            return data, len(data)
        buf += memoryview(data)[pos : pos + need]
        # Deleting a bytearray's prefix only moves its start pointer.
        del buf[: self._strip]
        frames.append(bytes(buf))
        # A fresh buffer rather than clear(): do not keep a large frame's
        # allocation alive for the rest of the connection.
        self._buf = bytearray()
        self._flen = _HEADER
        return data, pos + need

    def _reject(
        self, flen: int, data: bytes, start: int, frames: list[bytes]
    ) -> NoReturn:
        """
        Raise the error for a header announcing ``flen`` bytes, and set up
        skipping the bytes Netty would skip.

        :param start: where the frame starts in ``data``; negative when its
            first bytes came in earlier feeds (they are already consumed).
        """
        header_end = self._header_end
        exc: ProtocolError
        if flen < header_end:
            exc = CorruptFrame(
                f"length field gives a frame of {flen} bytes (value "
                f"{flen - self._extra} + adjustment {self._adjustment} + header "
                f"{header_end}), shorter than the {header_end}-byte header itself; "
                f"the stream is not in this layout or framing is lost: "
                f"close the connection",
                frames,
            )
            # Netty skips just the header: the length says nothing usable.
            skip = header_end
        elif flen > self.max_frame:
            exc = FrameTooLarge(flen, self.max_frame, frames)
            skip = flen
        else:
            exc = CorruptFrame(
                f"frame of {flen} bytes is shorter than the {self._strip} bytes "
                f"to strip from it; the stream is not in this layout",
                frames,
            )
            skip = flen
        self._buf = bytearray()
        self._flen = _HEADER
        skip_end = start + skip
        if skip_end > len(data):
            self._discard = skip_end - len(data)
        elif skip_end < len(data):
            self._buf = bytearray(memoryview(data)[skip_end:])
            self._flen = _UNSCANNED
        raise exc

    def encode_header(self, payload_len: int) -> bytes:
        """
        Build the length field for a frame whose bytes after the field are
        ``payload_len`` long.

        This is for codecs whose frames carry more header than the length
        field (``strip`` 0, say, so the decoded frame keeps the length): they
        write ``encode_header(len(rest)) + rest``.

        :raises ValueError: the layout has bytes before the length field
            (``offset`` > 0), which only the codec knows how to fill; or
            the value does not fit in ``length_size`` bytes; or the frame
            would be shorter than ``strip``.
        :raises FrameTooLarge: the frame would exceed ``max_frame``.
        """
        if self._offset:
            raise ValueError(
                f"encode_header cannot build a header with {self._offset} bytes "
                f"before the length field; the codec must build this layout's "
                f"header (the length field value is the frame length minus "
                f"{self._extra})"
            )
        frame_len = self._header_end + payload_len
        if frame_len > self.max_frame:
            raise FrameTooLarge(frame_len, self.max_frame)
        if frame_len < self._min_frame:
            raise ValueError(
                f"a frame of {frame_len} bytes is shorter than the {self._strip} "
                f"bytes the peer strips from it"
            )
        value = payload_len - self._adjustment
        if not 0 <= value < 1 << (8 * self._length_size):
            raise ValueError(
                f"length field value {value} (payload {payload_len} - adjustment "
                f"{self._adjustment}) does not fit in {self._length_size} "
                f"unsigned bytes"
            )
        return self._pack(value)

    def encode(self, payload: bytes) -> bytes:
        """
        Frame ``payload`` so that :meth:`feed` on the other side returns it:
        every layout this framer decodes, it encodes.

        The frame is the ``strip`` bytes :meth:`feed` removes followed by
        ``payload``, with the length field written at ``offset``:

        - the usual layout (``offset=0``, ``strip=length_size``): the length
          field then the payload;
        - ``strip`` 0 (the decoded frame keeps its header): ``payload`` is
          the whole frame, header included, and its length-field bytes are
          overwritten with the right value (what a codec leaves there does
          not matter);
        - stripped bytes other than the length field (bytes before it, or
          after it up to ``strip``) are zeros: the peer's framer discards
          them; a codec that must set them keeps them (``strip`` 0) and
          writes them itself.

        So ``feed(encode(p)) == [p]`` whenever ``p`` already holds the right
        length value where the field overlaps it (always, for layouts that
        strip the whole header).

        :raises ValueError: the payload is too short to hold the part of
            the header :meth:`feed` does not strip, or the length does not
            fit in ``length_size`` bytes.
        :raises FrameTooLarge: the frame would exceed ``max_frame``.
        """
        strip = self._strip
        header_end = self._header_end
        if strip == header_end and not self._offset:
            # The usual layout, on every request's path: no copy to patch.
            return self.encode_header(len(payload)) + payload
        frame = bytearray(strip)
        frame += payload
        frame_len = len(frame)
        if frame_len < header_end:
            raise ValueError(
                f"a payload of {len(payload)} bytes is too short for this layout: "
                f"the decoded frame keeps {header_end - strip} bytes of the "
                f"header (offset={self._offset}, length_size={self._length_size}, "
                f"strip={strip}), so the payload must start with them"
            )
        if frame_len > self.max_frame:
            raise FrameTooLarge(frame_len, self.max_frame)
        value = frame_len - self._extra
        if not 0 <= value < 1 << (8 * self._length_size):
            raise ValueError(
                f"length field value {value} (frame {frame_len} bytes - "
                f"{self._extra}) does not fit in {self._length_size} unsigned bytes"
            )
        frame[self._offset : header_end] = self._pack(value)
        return bytes(frame)


# Users may subclass it (mypyc: slower calls from compiled code into it).
@mypyc_attr(allow_interpreted_subclasses=True)
class Delimited:
    """
    Frames that end with a delimiter, such as text lines.

    Frames are cut at the first occurrence of the delimiter, which may be
    several bytes long and may arrive split across feeds.

    :class:`~framedclient.errors.FrameTooLarge` is raised as soon as more
    than ``max_frame`` bytes have arrived without a delimiter (the delimiter
    itself does not count), without buffering them.  The framer then
    discards everything up to the next delimiter and resumes after it.  A
    complete frame that is too long is rejected the same way.  Bytes that
    followed it in the same chunk are kept and decoded by the next
    :meth:`feed`.

    :param delimiter: the bytes that end a frame; must not be empty.
    :param max_frame: the longest frame accepted, delimiter excluded.
    :param strip: whether decoded frames lose their delimiter.
    :raises ValueError: for an empty delimiter or a max_frame below 1.
    """

    __slots__ = ("_buf", "_delimiter", "_keep", "_mode", "_overlap", "max_frame")

    max_frame: int

    def __init__(
        self,
        delimiter: SupportsBytes = b"\r\n",
        max_frame: SupportsIndex = 64 * 1024,
        strip: bool = True,
    ) -> None:
        # The parameters are typed with protocols, which mypyc does not
        # check at the call, so that a wrong type gets the message below
        # naming the argument, not mypyc's "int object expected"
        # (docs/design.md, "Compiled mode"); _init checks and converts.
        self._init(delimiter, max_frame, strip)

    def _init(self, delimiter: Any, max_frame: Any, strip: Any) -> None:
        if not isinstance(delimiter, (bytes, bytearray)):
            raise TypeError(
                f"delimiter must be bytes, got {type(delimiter).__name__} "
                f"{delimiter!r}: write it as bytes (b'\\n', or text.encode())"
            )
        if not delimiter:
            raise ValueError("delimiter must not be empty")
        _check_max_frame(max_frame)
        self._delimiter = bytes(delimiter)
        self.max_frame = max_frame
        # Bytes of the delimiter a frame keeps.
        self._keep: int = 0 if strip else len(delimiter)
        # A delimiter may start in the last len-1 bytes already searched.
        self._overlap: int = len(delimiter) - 1
        # _FRAME: _buf is the searched start of the next frame.
        # _DISCARD: skipping to the next delimiter; _buf is the last bytes
        # seen, kept only to catch a delimiter split across feeds.
        # _RESCAN: _buf holds bytes that followed a rejected frame.
        self._buf = bytearray()
        self._mode = _FRAME

    def __repr__(self) -> str:
        return (
            f"Delimited(delimiter={self._delimiter!r}, max_frame={self.max_frame}, "
            f"strip={not self._keep})"
        )

    @property
    def delimiter(self) -> bytes:
        """The bytes that end a frame."""
        return self._delimiter

    @property
    def strip(self) -> bool:
        """Whether decoded frames lose their delimiter."""
        return not self._keep

    @property
    def buffered(self) -> int:
        """
        Bytes held: the start of a partial frame (at most ``max_frame`` plus
        ``len(delimiter) - 1``), a partial delimiter while discarding, or
        bytes that followed a rejected frame.
        """
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """
        Decode the frames completed by ``data``.

        :return: the completed frames in order, with or without their
            delimiter according to ``strip``.
        :raises FrameTooLarge: a frame is, or is known to become, longer
            than ``max_frame``; it is discarded up to its delimiter.
        """
        if not isinstance(data, bytes):
            data = bytes(data)
        frames: list[bytes] = []
        pos = 0
        if self._mode or self._buf:
            data, pos = self._resume(data, frames)
        delimiter = self._delimiter
        dlen = len(delimiter)
        keep = self._keep
        max_frame = self.max_frame
        find = data.find
        while (i := find(delimiter, pos)) >= 0:
            if i - pos > max_frame:
                self._reject_whole(i - pos, data, i + dlen, frames)
            frames.append(data[pos : i + keep])
            pos = i + dlen
        rest = len(data) - pos
        if rest:
            if rest - self._overlap > max_frame:
                self._reject_partial(rest, b"", data, frames)
            self._buf += data[pos:] if pos else data
        return frames

    def _find_across(self, buf: bytearray, data: bytes) -> int:
        """
        Find the first delimiter that ends in ``data``, given that ``buf``
        (already searched) precedes it.

        Only the last ``len(delimiter) - 1`` bytes of ``buf`` are looked at
        again, so feeding a frame byte by byte stays linear.

        :return: the index in ``data`` just past the delimiter, or -1.
        """
        delimiter = self._delimiter
        overlap = self._overlap
        if overlap and buf:
            head = bytes(buf[-overlap:])
            j = (head + data[:overlap]).find(delimiter)
            if j >= 0:
                return j + len(delimiter) - len(head)
        i = data.find(delimiter)
        return i if i < 0 else i + len(delimiter)

    def _resume(self, data: bytes, frames: list[bytes]) -> tuple[bytes, int]:
        """
        Finish what earlier feeds left pending: a partial frame, a discard,
        or bytes held after a rejected frame.

        :return: the bytes to decode whole frames from, and the position in
            them to start at (``len(data)`` if ``data`` was used up).
        """
        buf = self._buf
        mode = self._mode
        if mode == _RESCAN:
            self._buf = bytearray()
            self._mode = _FRAME
            return bytes(buf) + data, 0
        end = self._find_across(buf, data)
        if mode == _DISCARD:
            if end < 0:
                self._buf = bytearray(self._last_bytes(buf, data))
                return data, len(data)
            self._buf = bytearray()
            self._mode = _FRAME
            return data, end
        if end < 0:
            seen = len(buf) + len(data)
            if seen - self._overlap > self.max_frame:
                self._reject_partial(seen, buf, data, frames)
            buf += data
            return data, len(data)
        length = len(buf) + end - len(self._delimiter)
        if length > self.max_frame:
            self._reject_whole(length, data, end, frames)
        cut = end - len(self._delimiter) + self._keep
        if cut >= 0:
            buf += memoryview(data)[:cut]
        else:
            # The delimiter started in buf.
            del buf[cut:]
        frames.append(bytes(buf))
        self._buf = bytearray()
        return data, end

    def _last_bytes(self, buf: bytes | bytearray, data: bytes) -> bytes:
        """
        The last ``len(delimiter) - 1`` bytes of ``buf + data``: all a
        discard needs to keep to see a delimiter split across feeds.
        """
        overlap = self._overlap
        if len(data) >= overlap:
            return data[len(data) - overlap :]
        return bytes(buf[max(0, len(buf) - overlap + len(data)) :]) + data

    def _reject_whole(
        self, length: int, data: bytes, resume: int, frames: list[bytes]
    ) -> NoReturn:
        """
        Reject a complete frame of ``length`` bytes; decoding resumes at
        ``data[resume:]`` on the next feed.
        """
        self._buf = bytearray()
        self._mode = _FRAME
        if resume < len(data):
            self._buf = bytearray(memoryview(data)[resume:])
            self._mode = _RESCAN
        raise FrameTooLarge(length, self.max_frame, frames)

    def _reject_partial(
        self, seen: int, buf: bytes | bytearray, data: bytes, frames: list[bytes]
    ) -> NoReturn:
        """
        Reject a frame that already has ``seen`` bytes and no delimiter, and
        discard up to the next delimiter.
        """
        self._buf = bytearray(self._last_bytes(buf, data))
        self._mode = _DISCARD
        raise FrameTooLarge(seen, self.max_frame, frames)

    def encode(self, payload: bytes) -> bytes:
        """
        Append the delimiter to ``payload``.

        :raises ValueError: the payload contains the delimiter, or ends with
            bytes that, followed by the delimiter, contain an earlier one
            (``b"xab"`` with delimiter ``b"aba"``): either way the peer
            would cut the frame short.
        :raises FrameTooLarge: the payload is longer than ``max_frame``.
        """
        if len(payload) > self.max_frame:
            raise FrameTooLarge(len(payload), self.max_frame)
        framed = payload + self._delimiter
        if framed.find(self._delimiter) != len(payload):
            raise ValueError(
                f"payload contains the delimiter {self._delimiter!r} (or runs "
                f"into it), so the peer would split it; escape it in the codec "
                f"or use a length-prefixed framer"
            )
        return framed


# Users may subclass it (mypyc: slower calls from compiled code into it).
@mypyc_attr(allow_interpreted_subclasses=True)
class Netstring:
    """
    Netstrings: ``<decimal length>:<payload>,`` (``b"5:hello,"``).

    The length is ASCII digits without leading zeros (``0`` alone is the
    empty string).  A non-digit, a leading zero, or a missing ``:`` or ``,``
    raises :class:`~framedclient.errors.CorruptFrame`; a length longer than
    ``max_frame`` (or with more digits than ``max_frame`` has) raises
    :class:`~framedclient.errors.FrameTooLarge` as soon as it is read,
    before the payload is buffered.

    Errors are not recoverable: a netstring stream has no marker to
    resynchronise on.  After one, the framer is poisoned and every later
    :meth:`feed` raises the same kind of error again; close the connection.

    :param max_frame: the longest payload accepted.
    """

    __slots__ = ("_buf", "_digits", "_error", "_need", "_state", "max_frame")

    max_frame: int

    def __init__(self, max_frame: SupportsIndex = 16 * _MiB) -> None:
        # The parameters are typed with protocols, which mypyc does not
        # check at the call, so that a wrong type gets the message below
        # naming the argument, not mypyc's "int object expected"
        # (docs/design.md, "Compiled mode"); _init checks and converts.
        self._init(max_frame)

    def _init(self, max_frame: Any) -> None:
        _check_max_frame(max_frame)
        self.max_frame = max_frame
        # Most digits a valid length can have: more is too large at once.
        self._digits: int = len(str(max_frame))
        # _FRAME: _buf holds the digits read so far (validated).
        # _PAYLOAD: _buf holds the payload read so far; _need is payload + 1.
        # _FAILED: _error is the error that poisoned the stream.
        self._buf = bytearray()
        self._state = _FRAME
        self._need = 0
        self._error: ProtocolError | None = None

    def __repr__(self) -> str:
        return f"Netstring(max_frame={self.max_frame})"

    @property
    def buffered(self) -> int:
        """
        Bytes held: the digits of a partial length, or a partial payload
        (at most ``max_frame`` plus the trailing comma).
        """
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """
        Decode the netstrings completed by ``data``.

        :return: the completed payloads in order.
        :raises CorruptFrame: the bytes are not a netstring; the framer is
            poisoned.
        :raises FrameTooLarge: a length exceeds ``max_frame``; the framer is
            poisoned.
        """
        if not isinstance(data, bytes):
            data = bytes(data)
        frames: list[bytes] = []
        pos = 0
        if self._state or self._buf:
            data, pos = self._resume(data, frames)
        end = len(data)
        find = data.find
        max_digits = self._digits
        max_frame = self.max_frame
        while pos < end:
            colon = find(b":", pos, pos + max_digits + 1)
            if colon < 0:
                self._check_partial_length(data[pos : pos + max_digits + 1], frames)
                self._buf += data[pos:]
                break
            digits = data[pos:colon]
            if not digits.isdigit() or (digits[0] == 48 and colon - pos > 1):
                self._fail(self._bad_length(digits, frames))
            length = int(digits)
            if length > max_frame:
                self._fail(FrameTooLarge(length, max_frame, frames))
            comma = colon + 1 + length
            if comma >= end:
                self._state = _PAYLOAD
                self._need = length + 1
                self._buf += memoryview(data)[colon + 1 :]
                break
            if data[comma] != 44:  # ord(",")
                self._fail(self._missing_comma(length, frames))
            frames.append(data[colon + 1 : comma])
            pos = comma + 1
        return frames

    def _resume(self, data: bytes, frames: list[bytes]) -> tuple[bytes, int]:
        """
        Finish the netstring earlier feeds left partial.

        :return: the bytes to decode whole netstrings from, and the position
            in them to start at (``len(data)`` if ``data`` was used up).
        """
        if self._error is not None:
            self._fail(self._repeat(self._error))
        buf = self._buf
        pos = 0
        if self._state == _FRAME:
            # buf holds at most max_digits validated digits: this is small.
            start = len(buf)
            head = bytes(buf) + data[: self._digits + 1 - start]
            colon = head.find(b":")
            if colon < 0:
                self._check_partial_length(head, frames)
                buf += data
                return data, len(data)
            digits = head[:colon]
            if not digits.isdigit() or (digits[0] == 48 and colon > 1):
                self._fail(self._bad_length(digits, frames))
            length = int(digits)
            if length > self.max_frame:
                self._fail(FrameTooLarge(length, self.max_frame, frames))
            pos = colon + 1 - start
            buf = self._buf = bytearray()
            self._state = _PAYLOAD
            self._need = length + 1
        need = self._need - len(buf)
        if len(data) - pos < need:
            buf += memoryview(data)[pos:]
            return data, len(data)
        buf += memoryview(data)[pos : pos + need]
        if buf[-1] != 44:  # ord(",")
            self._fail(self._missing_comma(self._need - 1, frames))
        del buf[-1]
        frames.append(bytes(buf))
        self._buf = bytearray()
        self._state = _FRAME
        return data, pos + need

    def _check_partial_length(self, head: bytes, frames: list[bytes]) -> None:
        """
        Reject a length that has no ``:`` yet as soon as it cannot become
        valid, so garbage is never buffered.

        :param head: the bytes from the start of the length on, at most
            ``max_digits + 1`` of them.
        """
        valid = head.isdigit() and not (head[0] == 48 and len(head) > 1)
        if len(head) > self._digits:
            if valid:
                # More digits than max_frame has: too large whatever follows.
                self._fail(FrameTooLarge(int(head), self.max_frame, frames))
            self._fail(self._bad_length(head, frames))
        if not valid:
            self._fail(self._bad_length(head, frames))

    def _bad_length(self, digits: bytes, frames: list[bytes]) -> CorruptFrame:
        return CorruptFrame(
            f"netstring length {digits[:32]!r} is not a decimal number without "
            f"leading zeros followed by ':'; the peer does not speak netstrings",
            frames,
        )

    def _missing_comma(self, length: int, frames: list[bytes]) -> CorruptFrame:
        return CorruptFrame(
            f"netstring of length {length} is not followed by ','; the length is "
            f"wrong or the peer does not speak netstrings",
            frames,
        )

    def _repeat(self, error: ProtocolError) -> ProtocolError:
        """
        A fresh error of the same kind as the one that poisoned the stream,
        without the frames that error already delivered.
        """
        if isinstance(error, FrameTooLarge):
            return FrameTooLarge(error.length, error.limit)
        return CorruptFrame(
            f"the netstring stream already failed and cannot resume: {error}"
        )

    def _fail(self, error: ProtocolError) -> NoReturn:
        self._state = _FAILED
        self._buf = bytearray()
        self._error = error
        raise error

    def encode(self, payload: bytes) -> bytes:
        """
        Frame ``payload`` as ``<len>:<payload>,``.

        :raises FrameTooLarge: the payload is longer than ``max_frame``.
        """
        if len(payload) > self.max_frame:
            raise FrameTooLarge(len(payload), self.max_frame)
        return b"%d:%b," % (len(payload), payload)
