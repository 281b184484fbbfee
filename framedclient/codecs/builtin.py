"""
The built-in codecs' ``--codec NAME[:options]`` factories: each takes the
text after ``NAME:`` and returns a codec, or raises ``ValueError`` saying
what is wrong.  They are registered as plugins in
``twisted/plugins/framedclient_codecs.py`` and imported only when a codec is
built.

``length:`` builds a :class:`~framedclient.codecs.HeaderCodec` over a
:class:`~framedclient.framing.LengthPrefixed` framer.  A frame on the wire
is::

    +----------------+---------------------------------+----------+
    | length (size)  | header (header bytes)           | body ... |
    +----------------+---------------------------------+----------+
                     ^ id at id-offset, kind at kind-offset (both
                       counted from the end of the length field)

and the length field's value plus ``adjust`` is the number of bytes after it
(``adjust=-2`` when a 2-byte length counts itself).  Keys, all optional:

===============  ==========================================================
``size``         bytes of the length field: 1, 2, 3, 4 or 8 (default 4)
``order``        ``big`` or ``little``, for every field (default ``big``)
``adjust``       added to the length value to get the bytes after the
                 field (default 0)
``header``       bytes of header after the length field (default: just
                 enough for the id and kind fields)
``id-offset``    where the request ID starts in the header (default 0)
``id-size``      bytes of the ID: 1, 2, 4 or 8 (default 4)
``kind-offset``  where a message-kind field starts; absent: every frame
                 from the server is a reply (no error replies, no pings)
``kind-size``    bytes of the kind field: 1, 2, 4 or 8 (default 1)
``kinds``        kind values, ``name:value`` pairs joined by ``;``
                 (default fc1's: request:0;reply:1;error:2;ping:3;pong:4;
                 cancel:5;goaway:6); request and reply are required
``max-frame``    largest whole frame accepted, in bytes (default 16 MiB,
                 or what the length field can express if less)
===============  ==========================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from framedclient.codecs.base import DEFAULT_MAX_FRAME, Codec, Kind
from framedclient.codecs.fc1 import FC1Codec
from framedclient.codecs.header import HeaderCodec
from framedclient.codecs.pipelined import PipelinedCodec
from framedclient.codecs.plugin import int_option, option_keys
from framedclient.framing import Delimited, LengthPrefixed, Netstring

__all__ = ["dns", "fc1", "length", "lines", "memcache_binary", "netstring", "redis"]

_DELIMITERS = {"crlf": b"\r\n", "lf": b"\n", "nul": b"\0"}
_FIELD_SIZES = (1, 2, 4, 8)
_FC1_KIND_VALUES = {kind.name.lower(): int(kind) for kind in Kind}
_LENGTH_KEYS = frozenset(
    {
        "size",
        "order",
        "adjust",
        "header",
        "id-offset",
        "id-size",
        "kind-offset",
        "kind-size",
        "kinds",
        "max-frame",
    }
)


def fc1(options: str) -> Codec:
    keys = option_keys(options, {"max-frame"})
    return FC1Codec(int_option(keys, "max-frame", DEFAULT_MAX_FRAME, minimum=13))


def lines(options: str) -> Codec:
    keys = option_keys(options, {"delimiter", "max-frame"})
    delimiter_name = keys.get("delimiter", "crlf").lower()
    if delimiter_name not in _DELIMITERS:
        raise ValueError(
            f"delimiter must be one of {', '.join(_DELIMITERS)}, got {delimiter_name!r}"
        )
    delimiter = _DELIMITERS[delimiter_name]
    max_frame = int_option(keys, "max-frame", 64 * 1024, minimum=1)
    return PipelinedCodec(lambda: Delimited(delimiter, max_frame=max_frame))


def netstring(options: str) -> Codec:
    keys = option_keys(options, {"max-frame"})
    max_frame = int_option(keys, "max-frame", DEFAULT_MAX_FRAME, minimum=1)
    return PipelinedCodec(lambda: Netstring(max_frame=max_frame))


def redis(options: str) -> Codec:
    from framedclient.codecs.redis import RedisCodec

    keys = option_keys(options, {"max-frame"})
    return RedisCodec(int_option(keys, "max-frame", DEFAULT_MAX_FRAME, minimum=3))


def memcache_binary(options: str) -> Codec:
    from framedclient.codecs.memcache import HEADER_SIZE, memcache_binary_codec

    keys = option_keys(options, {"max-frame"})
    return memcache_binary_codec(
        int_option(keys, "max-frame", DEFAULT_MAX_FRAME, minimum=HEADER_SIZE)
    )


def dns(options: str) -> Codec:
    from framedclient.codecs.dns import dns_tcp_codec

    keys = option_keys(options, {"max-frame"})
    return dns_tcp_codec(int_option(keys, "max-frame", 2 + 0xFFFF, minimum=14))


def length(options: str) -> Codec:
    keys = option_keys(options, _LENGTH_KEYS)
    size = int_option(keys, "size", 4, choices=(1, 2, 3, 4, 8))
    order = keys.get("order", "big").lower()
    if order not in ("big", "little"):
        raise ValueError(f"order must be big or little, got {order!r}")
    adjust = int_option(keys, "adjust", 0)
    id_offset = int_option(keys, "id-offset", 0, minimum=0)
    id_size = int_option(keys, "id-size", 4, choices=_FIELD_SIZES)
    kind_offset: int | None = None
    kind_size = int_option(keys, "kind-size", 1, choices=_FIELD_SIZES)
    fields_end = id_offset + id_size
    kinds: dict[int, Kind] | None = None
    if "kind-offset" in keys:
        kind_offset = int_option(keys, "kind-offset", 0, minimum=0)
        fields_end = max(fields_end, kind_offset + kind_size)
        kinds = _parse_kinds(keys.get("kinds", "")) if "kinds" in keys else None
        if kinds is None:
            kinds = {int(kind): kind for kind in Kind}
    elif "kinds" in keys or "kind-size" in keys:
        raise ValueError("kinds and kind-size need kind-offset")
    header = int_option(keys, "header", fields_end, minimum=1)
    if fields_end > header:
        raise ValueError(
            f"the id and kind fields end at byte {fields_end} of the header, "
            f"but header={header}"
        )
    if kind_offset is not None and not (
        kind_offset + kind_size <= id_offset or id_offset + id_size <= kind_offset
    ):
        raise ValueError("the id and kind fields overlap")
    # What the length field can express bounds the frame; never promise more.
    expressible = (1 << (8 * size)) - 1 + size + adjust
    max_frame = int_option(
        keys, "max-frame", min(DEFAULT_MAX_FRAME, expressible), minimum=size + header
    )
    if size + header > max_frame:
        raise ValueError(
            f"a {size}-byte length field and a {header}-byte header do not fit "
            f"in max-frame={max_frame} bytes (what the length field can express)"
        )
    byteorder: Literal["big", "little"] = "big" if order == "big" else "little"
    make_framer: Callable[[], LengthPrefixed] = lambda: LengthPrefixed(  # noqa: E731
        length_size=size,
        byteorder=byteorder,
        adjustment=adjust,
        max_frame=max_frame,
    )
    # Fail now, not on the first connection, if the framer rejects the layout.
    make_framer()
    return HeaderCodec(
        make_framer,
        header_size=header,
        id_offset=id_offset,
        id_size=id_size,
        kind_offset=kind_offset,
        kind_size=kind_size,
        kinds=kinds,
        byteorder=byteorder,
    )


def _parse_kinds(raw: str) -> dict[int, Kind]:
    kinds: dict[int, Kind] = {}
    names: set[str] = set()
    for pair in raw.split(";"):
        if not pair.strip():
            continue
        name, sep, value = pair.partition(":")
        name = name.strip().lower()
        if not sep or name not in _FC1_KIND_VALUES:
            raise ValueError(
                f"kinds entry {pair.strip()!r} is not NAME:VALUE with NAME one of "
                f"{', '.join(_FC1_KIND_VALUES)}"
            )
        try:
            number = int(value.strip(), 0)
        except ValueError:
            raise ValueError(
                f"kinds entry {pair.strip()!r}: value must be an integer"
            ) from None
        if number in kinds:
            raise ValueError(f"kind value {number} given twice")
        kinds[number] = Kind(_FC1_KIND_VALUES[name])
        names.add(name)
    missing = {"request", "reply"} - names
    if missing:
        raise ValueError(f"kinds must include {' and '.join(sorted(missing))}")
    return kinds
