"""
``--codec``: a wire format spelt on the command line.

A gateway is only useful if it speaks the upstream's protocol, and most
binary protocols differ only in where their length and request ID live.  So
besides the named codecs, a length-prefixed layout with an ID field (and
optionally a message-kind field) can be described in one argument, without
writing Python::

    fc1                                  the reference protocol (default)
    fc1:max-frame=1048576
    lines                                CRLF-terminated lines, in order
    lines:delimiter=lf,max-frame=4096
    netstring                            netstrings, in order
    redis                                Redis RESP2, in order (RESP command bodies)
    length:size=2,order=little,header=8,id-offset=0,id-size=4,kind-offset=4

``length:`` builds a :class:`~framedclient.codecs.HeaderCodec` over a
:class:`~framedclient.framing.LengthPrefixed` framer.  A frame on the wire is::

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

Every mistake is a :exc:`ValueError` with a one-line message that quotes the
spec, says what is wrong and lists the accepted forms, so the option parser
can show it as is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from framedclient.codecs import (
    DEFAULT_MAX_FRAME,
    Codec,
    FC1Codec,
    HeaderCodec,
    Kind,
    PipelinedCodec,
)
from framedclient.framing import Delimited, LengthPrefixed, Netstring

__all__ = ["ACCEPTED_CODEC_FORMS", "codec_overhead", "describe_codec", "parse_codec"]

ACCEPTED_CODEC_FORMS = (
    "accepted forms: 'fc1[:max-frame=BYTES]', "
    "'lines[:delimiter=crlf|lf|nul,max-frame=BYTES]', "
    "'netstring[:max-frame=BYTES]', "
    "'redis[:max-frame=BYTES]', "
    "'length:size=1|2|3|4|8,order=big|little,adjust=N,header=BYTES,"
    "id-offset=N,id-size=1|2|4|8,kind-offset=N,kind-size=N,"
    "kinds=NAME:VALUE;...,max-frame=BYTES' (every key optional)"
)

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


def parse_codec(spec: str) -> Codec:
    """
    Build the codec a ``--codec`` value names.

    :param spec: see the module docstring.
    :raises ValueError: with a one-line message naming the mistake and the
        accepted forms.
    """
    name, _, params = spec.strip().partition(":")
    name = name.strip().lower()
    try:
        if name == "fc1":
            keys = _parse_keys(params, {"max-frame"})
            return FC1Codec(_int(keys, "max-frame", DEFAULT_MAX_FRAME, minimum=13))
        if name == "lines":
            keys = _parse_keys(params, {"delimiter", "max-frame"})
            delimiter_name = keys.get("delimiter", "crlf").lower()
            if delimiter_name not in _DELIMITERS:
                raise ValueError(
                    f"delimiter must be one of {', '.join(_DELIMITERS)}, "
                    f"got {delimiter_name!r}"
                )
            delimiter = _DELIMITERS[delimiter_name]
            max_frame = _int(keys, "max-frame", 64 * 1024, minimum=1)
            return PipelinedCodec(lambda: Delimited(delimiter, max_frame=max_frame))
        if name == "netstring":
            keys = _parse_keys(params, {"max-frame"})
            max_frame = _int(keys, "max-frame", DEFAULT_MAX_FRAME, minimum=1)
            return PipelinedCodec(lambda: Netstring(max_frame=max_frame))
        if name == "redis":
            from framedclient.codecs.redis import RedisCodec

            keys = _parse_keys(params, {"max-frame"})
            return RedisCodec(_int(keys, "max-frame", DEFAULT_MAX_FRAME, minimum=3))
        if name == "length":
            return _length_codec(_parse_keys(params, _LENGTH_KEYS))
        raise ValueError(f"unknown codec {name!r}")
    except ValueError as error:
        raise ValueError(
            f"invalid codec {spec!r}: {error}; {ACCEPTED_CODEC_FORMS}"
        ) from None


def describe_codec(spec: str) -> str:
    """
    The spec normalised for logs: lower-case name, no spaces.
    """
    return "".join(spec.split()) or "fc1"


def codec_overhead(codec: Codec) -> int:
    """
    Bytes a codec adds around a request body (framing and header).

    The gateway subtracts it from ``codec.max_frame`` to know the largest
    body it can forward, so an oversized body is refused with a 400 before
    it is sent, instead of making the server close the connection and fail
    every other request on it.
    """
    from framedclient.codecs import REQUEST

    return len(codec.encode(REQUEST, 1, b""))


def _parse_keys(params: str, known: set[str] | frozenset[str]) -> dict[str, str]:
    keys: dict[str, str] = {}
    if not params.strip():
        return keys
    for item in params.split(","):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise ValueError(f"{item.strip()!r} is not key=value")
        if key not in known:
            raise ValueError(f"unknown key {key!r} (known: {', '.join(sorted(known))})")
        if key in keys:
            raise ValueError(f"key {key!r} given twice")
        keys[key] = value.strip()
    return keys


def _int(
    keys: dict[str, str],
    key: str,
    default: int,
    *,
    minimum: int | None = None,
    choices: tuple[int, ...] | None = None,
) -> int:
    raw = keys.get(key)
    if raw is None:
        return default
    try:
        value = int(raw, 0)
    except ValueError:
        raise ValueError(f"{key} must be an integer, got {raw!r}") from None
    if choices is not None and value not in choices:
        raise ValueError(
            f"{key} must be one of {', '.join(map(str, choices))}, got {value}"
        )
    if minimum is not None and value < minimum:
        raise ValueError(f"{key} must be at least {minimum}, got {value}")
    return value


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


def _length_codec(keys: dict[str, str]) -> HeaderCodec:
    size = _int(keys, "size", 4, choices=(1, 2, 3, 4, 8))
    order = keys.get("order", "big").lower()
    if order not in ("big", "little"):
        raise ValueError(f"order must be big or little, got {order!r}")
    adjust = _int(keys, "adjust", 0)
    id_offset = _int(keys, "id-offset", 0, minimum=0)
    id_size = _int(keys, "id-size", 4, choices=_FIELD_SIZES)
    kind_offset: int | None = None
    kind_size = _int(keys, "kind-size", 1, choices=_FIELD_SIZES)
    fields_end = id_offset + id_size
    kinds: dict[int, Kind] | None = None
    if "kind-offset" in keys:
        kind_offset = _int(keys, "kind-offset", 0, minimum=0)
        fields_end = max(fields_end, kind_offset + kind_size)
        kinds = _parse_kinds(keys.get("kinds", "")) if "kinds" in keys else None
        if kinds is None:
            kinds = {int(kind): kind for kind in Kind}
    elif "kinds" in keys or "kind-size" in keys:
        raise ValueError("kinds and kind-size need kind-offset")
    header = _int(keys, "header", fields_end, minimum=1)
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
    max_frame = _int(
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
