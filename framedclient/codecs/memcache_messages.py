"""
The message classes of memcached's binary codec
(:mod:`framedclient.codecs.memcache`): :class:`GetMany`, the request of
``get_many``, and the successful reply its short path makes.

They live apart from the codec because the codec is compiled (mypyc) and
these are subclasses of :class:`~framedclient.codecs.base.Message`, an
interpreted class with ``__slots__``: a class mypyc compiles can subclass
neither, so they stay interpreted here, as they were.  Import them from
:mod:`framedclient.codecs.memcache`.
"""

from __future__ import annotations

from collections.abc import Sequence

from framedclient.codecs.base import Message

__all__ = ["HEADER_SIZE", "GetMany"]

#: The binary protocol's header, in bytes (requests and replies).
HEADER_SIZE = 24
# The NOOP opcode (Opcode.NOOP): what ends a get_many.
_NOOP = 0x0A


class GetMany(Message):
    """
    One request for many keys: a quiet ``GETKQ`` per key, then a ``NOOP``,
    all with the request's opaque.  memcached answers only the hits, then
    the ``NOOP``; :class:`~framedclient.codecs.memcache.MemcacheCodec`'s
    framer holds the hits until the
    ``NOOP`` comes and hands them over as the one reply to this request: a
    list of reply messages (``parts["key"]``, ``parts["value"]``), misses
    absent.

    :ivar keys: the keys asked for, in order.
    """

    __slots__ = ("keys",)

    def __init__(self, keys: Sequence[bytes]) -> None:
        super().__init__(fields={"opcode": _NOOP})
        self.keys = list(keys)

    def __len__(self) -> int:
        return sum(len(k) for k in self.keys)

    def __repr__(self) -> str:
        return f"GetMany({self.keys!r})"


_FIELD_NAMES = (
    "magic",
    "opcode",
    "key_length",
    "extras_length",
    "data_type",
    "status",
    "total_body_length",
    "opaque",
    "cas",
)


class _Reply(Message):
    """
    A successful reply from
    :class:`~framedclient.codecs.memcache.MemcacheCodec`'s short path: a
    :class:`~framedclient.codecs.base.Message` whose header fields, body
    and parts are made from the frame when first read, since a GET reads
    only the value (making them all at once cost half the codec's time per
    reply).  Equal to the message the declared codec makes of the frame.
    """

    __slots__ = ("_body", "_fields", "_frame", "_header", "_parts")

    def __init__(self, frame: bytes, header: tuple[int, ...]) -> None:
        # (Message's own slots stay empty: the properties below replace them.)
        self._frame = frame
        self._header = header
        self._fields: dict[str, int] | None = None
        self._body: bytes | None = None
        self._parts: dict[str, bytes] | None = None

    @property
    def value(self) -> bytes:
        """``parts["value"]``, without making the other parts."""
        parts = self._parts
        if parts is not None:
            return parts["value"]
        header = self._header
        return self._frame[HEADER_SIZE + header[3] + header[2] :]

    @property
    def key(self) -> bytes:
        """``parts["key"]``, without making the other parts."""
        parts = self._parts
        if parts is not None:
            return parts["key"]
        header = self._header
        start = HEADER_SIZE + header[3]
        return self._frame[start : start + header[2]]

    @property  # type: ignore[override]
    def fields(self) -> dict[str, int]:
        fields = self._fields
        if fields is None:
            fields = self._fields = dict(zip(_FIELD_NAMES, self._header, strict=True))
        return fields

    @fields.setter
    def fields(self, value: dict[str, int]) -> None:
        self._fields = value

    @property  # type: ignore[override]
    def body(self) -> bytes:
        body = self._body
        if body is None:
            body = self._body = self._frame[HEADER_SIZE:]
        return body

    @body.setter
    def body(self, value: bytes) -> None:
        self._body = value

    @property  # type: ignore[override]
    def parts(self) -> dict[str, bytes]:
        parts = self._parts
        if parts is None:
            frame = self._frame
            key_at = HEADER_SIZE + self._header[3]
            value_at = key_at + self._header[2]
            parts = self._parts = {
                "extras": frame[HEADER_SIZE:key_at],
                "key": frame[key_at:value_at],
                "value": frame[value_at:],
            }
        return parts

    @parts.setter
    def parts(self, value: dict[str, bytes]) -> None:
        self._parts = value
