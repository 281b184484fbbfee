"""
:class:`RedisPush`, the push frames of :mod:`framedclient.codecs.resp3`.

Apart from the codec because the codec is compiled (mypyc) and this is a
subclass of :class:`~framedclient.codecs.base.Push`, an interpreted class
with ``__slots__``, which a class mypyc compiles cannot subclass: it stays
interpreted here, as it was.  Import it from
:mod:`framedclient.codecs.resp3`.
"""

from __future__ import annotations

from typing import Any

from framedclient.codecs.base import Push

__all__ = ["RedisPush"]


class RedisPush(Push):
    """
    A RESP3 push frame as a :class:`~framedclient.codecs.base.Push`.

    :ivar kind: the push's first element (``b"message"``,
        ``b"pmessage"``, ``b"smessage"``, ``b"invalidate"``, ...).
    :ivar key: the channel (for messages),
        :data:`~framedclient.codecs.resp3.INVALIDATE` for
        invalidations, else the kind.
    :ivar data: the message's payload; for an invalidation the list of
        keys, or ``None`` when every key is invalid (``FLUSHALL``, or the
        server dropped keys from its tracking table); for other kinds the
        list of the remaining elements.
    """

    __slots__ = ("kind",)

    def __init__(
        self, kind: bytes, key: bytes, data: Any, pattern: bytes | None = None
    ) -> None:
        super().__init__(key, data, pattern)
        self.kind = kind

    def __repr__(self) -> str:
        return f"RedisPush(kind={self.kind!r}, key={self.key!r}, data={self.data!r})"
