"""
A declarative codec for protocols with a fixed binary header: the header is
described as named fields (offset, size, byte order, optionally a bit mask),
and the codec builds and reads it, behind any framer.

Each field plays one role:

- the **request ID** (``id_field``): written by the codec, read back to
  match the reply; its width is the codec's ID space
  (:attr:`~framedclient.codecs.base.Codec.max_id`);
- the **status** (``status_field``): read from replies; a value in ``ok`` is
  a success, any other fails the request with a
  :class:`~framedclient.errors.RemoteError` carrying that ``code`` (a
  subclass or a name per code through ``errors``), never a protocol error;
  on requests it is an ordinary field (memcached's vbucket), so the same
  bytes may mean one thing sent and another received;
- a **constant** (``expect``): every reply must carry that value, else the
  frame is corrupt (a magic number); ``default`` is what requests carry;
- a **length** (``length_of``): computed by the codec from the body or one
  of its ``parts`` when encoding, and checked against the frame when
  decoding;
- the **kind** (``kind_field`` + ``kinds``), for protocols with message
  types (ping, cancel...);
- anything else: set by the caller through
  :class:`~framedclient.codecs.base.Message` ``fields`` (0 by default, or the
  field's ``default``) and returned in the reply's fields.

Everything the codec cannot encode is found when it is built, never at the
first request: it encodes a probe frame through its framer and decodes it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection, Mapping, Sequence
from itertools import pairwise
from typing import Literal

import attrs

from framedclient.codecs.base import ERROR, REPLY, REQUEST, Kind, Matching, Message
from framedclient.errors import CorruptFrame, RemoteError
from framedclient.framing import Framer, check_framer_factory

__all__ = ["BODY", "ErrorSpec", "Field", "HeaderCodec"]

#: ``length_of`` value for a length that counts the whole body after the
#: header.
BODY = "body"

#: How ``errors`` names a status code: a text, or the
#: :class:`~framedclient.errors.RemoteError` subclass to raise (its name is
#: the message).
ErrorSpec = str | type[RemoteError]

_STRUCT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _check_byteorder(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ("big", "little"):
        raise ValueError(f"byteorder must be 'big' or 'little', got {value!r}")


@attrs.frozen
class Field:
    """
    One field of a fixed header.

    :param name: how requests set it and replies show it (``Message.fields``).
    :param offset: its first byte, counted from the start of the frame as the
        framer returns it.
    :param size: its width in bytes: 1, 2, 4 or 8.
    :param byteorder: ``"big"`` (network order) or ``"little"``.
    :param mask: for a bit field, the bits it occupies within those bytes
        (DNS's RCODE: ``mask=0x0F`` on byte 3); its value is shifted down to
        start at bit 0.  ``None``: the whole bytes.
    :param default: the value requests carry when the caller does not set it.
    :param expect: the value every reply must carry (a magic number); any
        other is a :class:`~framedclient.errors.CorruptFrame`.
    :param length_of: makes this a computed length: :data:`BODY` (the bytes
        after the header) or the name of one of the codec's ``parts``.
    """

    name: str
    offset: int
    size: int
    byteorder: Literal["big", "little"] = attrs.field(
        default="big", validator=_check_byteorder
    )
    mask: int | None = None
    default: int = 0
    expect: int | None = None
    length_of: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.size not in _STRUCT_CODES:
            raise ValueError(
                f"field {self.name!r}: size must be 1, 2, 4 or 8, got {self.size}"
            )
        if self.offset < 0:
            raise ValueError(f"field {self.name!r}: offset must not be negative")
        full = (1 << (8 * self.size)) - 1
        if self.mask is not None and not 0 < self.mask <= full:
            raise ValueError(
                f"field {self.name!r}: mask {self.mask:#x} must be non-zero and "
                f"fit in {self.size} bytes"
            )
        for what in ("default", "expect"):
            value = getattr(self, what)
            if value is not None and not 0 <= value <= self.max_value:
                raise ValueError(
                    f"field {self.name!r}: {what} {value} does not fit "
                    f"(0..{self.max_value})"
                )

    @property
    def shift(self) -> int:
        """The position of the mask's lowest bit (0 for whole fields)."""
        mask = self.mask
        return 0 if mask is None else (mask & -mask).bit_length() - 1

    @property
    def max_value(self) -> int:
        """The largest value the field holds."""
        if self.mask is None:
            return (1 << (8 * self.size)) - 1
        return self.mask >> self.shift

    def bits(self, header_size: int) -> int:
        """The header bits the field occupies, as one big-endian integer."""
        mask = (1 << (8 * self.size)) - 1 if self.mask is None else self.mask
        in_order = int.from_bytes(mask.to_bytes(self.size, self.byteorder), "big")
        return in_order << (8 * (header_size - self.offset - self.size))


class _Slot:
    """A field compiled for the hot paths."""

    __slots__ = (
        "cell",
        "field",
        "mask",
        "max_value",
        "name",
        "offset",
        "shift",
        "struct",
    )

    def __init__(self, field: Field) -> None:
        self.field = field
        self.name = field.name
        self.offset = field.offset
        self.mask = field.mask or 0
        self.shift = field.shift
        self.max_value = field.max_value
        order = ">" if field.byteorder == "big" else "<"
        self.struct = struct.Struct(order + _STRUCT_CODES[field.size])
        #: the field's position among the values of a _Packed header.
        self.cell = -1

    def read(self, frame: bytes | bytearray) -> int:
        (value,) = self.struct.unpack_from(frame, self.offset)
        if self.mask:
            return int((value & self.mask) >> self.shift)
        return int(value)

    def write(self, header: bytearray, value: int) -> None:
        if self.mask:
            (current,) = self.struct.unpack_from(header, self.offset)
            value = (current & ~self.mask) | (value << self.shift)
        self.struct.pack_into(header, self.offset, value)


class _NotPackable(Exception):
    pass


class _Packed:
    """
    The whole header as one ``struct``: one call reads or writes every
    field, instead of one per field.  Possible when fields sharing bytes
    share them exactly (bit fields of one byte) and every multi-byte field
    has the same byte order, which is what real protocols look like; other
    layouts go field by field.
    """

    __slots__ = ("names", "readers", "simple", "struct", "template")

    def __init__(
        self, slots: Sequence[_Slot], header_size: int, template: bytes
    ) -> None:
        orders = {s.field.byteorder for s in slots if s.field.size > 1}
        if len(orders) > 1:
            raise _NotPackable
        cells = sorted({(s.offset, s.field.size) for s in slots})
        for (offset, size), (next_offset, _) in pairwise(cells):
            if offset + size > next_offset:
                raise _NotPackable
        fmt = ">" if orders != {"little"} else "<"
        end = 0
        for offset, size in cells:
            if offset > end:
                fmt += f"{offset - end}x"
            fmt += _STRUCT_CODES[size]
            end = offset + size
        if end < header_size:
            fmt += f"{header_size - end}x"
        self.struct = struct.Struct(fmt)
        index = {cell: i for i, cell in enumerate(cells)}
        for slot in slots:
            slot.cell = index[(slot.offset, slot.field.size)]
        in_order = sorted(slots, key=lambda s: s.cell)
        #: every field whole and in its own cell: the values are the fields.
        self.simple = len(cells) == len(slots) and not any(s.mask for s in slots)
        self.names = tuple(s.name for s in in_order)
        self.readers = tuple((s.name, s.cell, s.mask, s.shift) for s in slots)
        self.template = list(self.struct.unpack(template))

    def read(self, frame: bytes) -> dict[str, int]:
        raw = self.struct.unpack_from(frame)
        if self.simple:
            return dict(zip(self.names, raw, strict=True))
        return {
            name: (raw[cell] & mask) >> shift if mask else raw[cell]
            for name, cell, mask, shift in self.readers
        }

    def build(self, writes: Sequence[tuple[_Slot, int]]) -> bytes:
        cells = self.template[:]
        for slot, value in writes:
            mask = slot.mask
            if mask:
                cell = slot.cell
                cells[cell] = (cells[cell] & ~mask) | (value << slot.shift)
            else:
                cells[slot.cell] = value
        return self.struct.pack(*cells)


class HeaderCodec:
    """
    A codec for protocols with a fixed header, described field by field.

    Two ways to build one:

    - **declared** (``fields=``): requests may be a
      :class:`~framedclient.codecs.base.Message` (header fields and body) or
      plain ``bytes`` (the body; every field at its default), and replies
      are a ``Message`` with every declared field, the body and its parts.
      A status outside ``ok`` fails the request with a ``RemoteError``
      whose ``code`` is the status and whose ``reply`` is the ``Message``.
    - **shorthand** (``id_offset``/``id_size``/``kind_offset``/``kinds``, the
      original form): only an ID and an optional kind field; requests and
      replies are the body bytes alone.

    The header starts at the first byte of each frame as the framer returns
    it: with a framer that strips its length field (``LengthPrefixed()``)
    the header follows the length; with ``strip=0`` it includes the length
    field, which must then be declared ``length_of=BODY`` (or left out): the
    framer writes it.

    :param framer_factory: makes one framer per connection; its ``encode``
        frames header + body.
    :param header_size: bytes of header before the body in a frame.
    :param fields: the header's fields (declared form).
    :param id_field: the name of the request-ID field (declared form).
    :param status_field: the name of the status field, if replies carry one.
    :param ok: status values that mean success.
    :param errors: a name or a :class:`~framedclient.errors.RemoteError`
        subclass per status value (its ``description`` attribute, else its
        name, is the message); other failing statuses are a plain
        ``RemoteError`` with that code.
    :param parts: names of the body's pieces in wire order; each but the
        last needs a field with ``length_of`` naming it, the last takes the
        rest of the body.
    :param kind_field: the name of a message-type field, with ``kinds``
        mapping its values to :class:`~framedclient.codecs.base.Kind`; a
        value missing from ``kinds`` is a corrupt frame.
    :raises ValueError: the declaration is inconsistent or the framer cannot
        frame it (found here, never at the first request).
    """

    matching = Matching.BY_ID

    def __init__(
        self,
        framer_factory: Callable[[], Framer],
        *,
        header_size: int,
        id_offset: int | None = None,
        id_size: int | None = None,
        kind_offset: int | None = None,
        kind_size: int = 1,
        kinds: Mapping[int, Kind] | None = None,
        byteorder: Literal["big", "little"] = "big",
        fields: Sequence[Field] | None = None,
        id_field: str | None = None,
        status_field: str | None = None,
        ok: Collection[int] = (0,),
        errors: Mapping[int, ErrorSpec] | None = None,
        parts: Sequence[str] = (),
        bytes_part: str | None = None,
        kind_field: str | None = None,
    ) -> None:
        check_framer_factory("HeaderCodec", framer_factory)
        if isinstance(header_size, bool) or not isinstance(header_size, int):
            raise TypeError(
                f"header_size must be an int (the header's length in bytes), got "
                f"{type(header_size).__name__} {header_size!r}"
            )
        if header_size < 1:
            raise ValueError(f"header_size must be at least 1, got {header_size}")
        self.header_size = header_size
        self.declared = fields is not None
        if fields is None:
            fields, id_field, kind_field = _shorthand(
                id_offset, id_size, kind_offset, kind_size, byteorder
            )
            if status_field is not None or errors or parts:
                raise ValueError(
                    "status_field, errors and parts need declared fields (fields=)"
                )
        elif id_offset is not None or id_size is not None or kind_offset is not None:
            raise ValueError(
                "give either fields= (with id_field=) or the id_offset/id_size/"
                "kind_offset shorthand, not both"
            )
        self.fields: tuple[Field, ...] = tuple(fields)
        by_name = _check_fields(self.fields, header_size)
        if id_field is None or id_field not in by_name:
            raise ValueError(
                f"id_field must name one of the fields ({', '.join(by_name)}), "
                f"got {id_field!r}"
            )
        for role, name in (("status_field", status_field), ("kind_field", kind_field)):
            if name is not None and name not in by_name:
                raise ValueError(f"{role} {name!r} is not one of the fields")
        special = {id_field, status_field, kind_field} - {None}
        for f in self.fields:
            if f.name in special and (f.length_of or f.expect is not None):
                raise ValueError(
                    f"field {f.name!r} is the ID, status or kind: it cannot "
                    f"also be a length or a constant"
                )
        self.id_field = id_field
        self.status_field = status_field
        self.kind_field = kind_field
        self.parts = tuple(parts)
        if bytes_part is not None and bytes_part not in self.parts:
            raise ValueError(f"bytes_part {bytes_part!r} is not one of the parts")
        self._bytes_part = bytes_part
        self._part_names = frozenset(self.parts)
        self._body_lengths = [f.name for f in self.fields if f.length_of == BODY]
        self._check_lengths(by_name)
        self.max_id = by_name[id_field].max_value
        # One compiled slot per field, shared by every role below.
        slot_of = {f.name: _Slot(f) for f in self.fields}
        self._id = slot_of[id_field]
        self._readers = list(slot_of.values())
        self._expects = [
            (slot_of[f.name], f.expect) for f in self.fields if f.expect is not None
        ]
        self._lengths = [
            (slot_of[f.name], f.length_of)
            for f in self.fields
            if f.length_of is not None
        ]
        self._part_lengths = {f.length_of: f.name for f in self.fields if f.length_of}
        self._settable = {
            f.name: slot_of[f.name]
            for f in self.fields
            if f.name not in (id_field, kind_field) and f.length_of is None
        }
        self._status = slot_of[status_field] if status_field else None
        self.ok = frozenset(ok)
        self.errors: dict[int, ErrorSpec] = dict(errors or {})
        for code, spec in self.errors.items():
            if not isinstance(spec, str) and not (
                isinstance(spec, type) and issubclass(spec, RemoteError)
            ):
                raise ValueError(
                    f"errors[{code}] must be a name or a RemoteError subclass, "
                    f"got {spec!r}"
                )
        self._kind = slot_of[kind_field] if kind_field else None
        if self._kind is not None and not kinds:
            raise ValueError("kinds must map kind-field values to Kind")
        self._decode_kinds: dict[int, int] = {
            value: int(kind) for value, kind in (kinds or {}).items()
        }
        self._encode_kinds: dict[int, int] = {}
        for value, kind in (kinds or {}).items():
            self._encode_kinds.setdefault(int(kind), value)
        self.supports_cancel = int(Kind.CANCEL) in self._encode_kinds
        self.supports_ping = (
            int(Kind.PING) in self._encode_kinds
            and int(Kind.PONG) in self._decode_kinds.values()
        )
        template = bytearray(header_size)
        for f in self.fields:
            if f.default:
                slot_of[f.name].write(template, f.default)
        self._template = bytes(template)
        self._expect_values = [(sl.name, expected) for sl, expected in self._expects]
        self._packed: _Packed | None
        try:
            self._packed = _Packed(self._readers, header_size, self._template)
        except _NotPackable:
            self._packed = None
        self._framer_factory = framer_factory
        # Encoding is stateless, so one framer instance serves every connection.
        self._encoder = framer_factory()
        self.max_frame = self._encoder.max_frame
        self._probe(by_name)

    def __repr__(self) -> str:
        names = ", ".join(f.name for f in self.fields)
        return (
            f"HeaderCodec(header_size={self.header_size}, fields=[{names}], "
            f"id_field={self.id_field!r}, status_field={self.status_field!r})"
        )

    def _check_lengths(self, by_name: Mapping[str, Field]) -> None:
        if len(set(self.parts)) != len(self.parts) or BODY in self.parts:
            raise ValueError(f"parts must be distinct names other than {BODY!r}")
        measured = set()
        for f in self.fields:
            if f.length_of is None:
                continue
            if f.mask is not None:
                raise ValueError(f"length field {f.name!r} cannot be a bit field")
            if f.length_of != BODY and f.length_of not in self.parts:
                raise ValueError(
                    f"field {f.name!r}: length_of must be {BODY!r} or one of the "
                    f"parts {list(self.parts)}, got {f.length_of!r}"
                )
            if f.length_of in measured:
                raise ValueError(f"two fields give the length of {f.length_of!r}")
            measured.add(f.length_of)
        for part in self.parts[:-1]:
            if part not in measured:
                raise ValueError(
                    f"part {part!r} needs a field with length_of={part!r}: only "
                    f"the last part may take the rest of the body"
                )

    def _probe(self, by_name: Mapping[str, Field]) -> None:
        # The framer owns the bytes it rewrites (its length field); a field
        # there must be the body length, which the framer writes too.
        owned = 0
        for fill in (0x00, 0xFF):
            header = bytes([fill]) * self.header_size
            frame = self._round_trip(header, f"a {self.header_size}-byte header")
            for i, (sent, got) in enumerate(zip(header, frame, strict=True)):
                if sent != got:
                    owned |= 0xFF << (8 * (self.header_size - 1 - i))
        for f in self.fields:
            if f.bits(self.header_size) & owned and f.length_of != BODY:
                raise ValueError(
                    f"field {f.name!r} overlaps the length field the framer "
                    f"writes; declare it length_of={BODY!r} or leave it out"
                )
        # A whole request: the values written must be the values read back.
        body = (
            Message(parts=dict.fromkeys(self.parts, b"x"))
            if self.parts
            else (Message(body=b"xyz"))
        )
        try:
            wire = self._encode_frame(body, 1)
        except ValueError as e:
            raise ValueError(f"this codec cannot encode a request ({e})") from None
        frame = self._round_trip(wire, "a request", framed=True)
        for slot, of in self._lengths:
            want = len(frame) - self.header_size if of == BODY else 1
            if slot.read(frame) != want:
                raise ValueError(
                    f"field {slot.name!r} reads {slot.read(frame)} for a body of "
                    f"{len(frame) - self.header_size} bytes: the framer's length "
                    f"field counts something else (check its adjustment)"
                )
        if self._id.read(frame) != 1:
            raise ValueError(f"the ID field {self.id_field!r} does not survive framing")

    def _round_trip(self, data: bytes, what: str, framed: bool = False) -> bytes:
        try:
            wire = data if framed else self._encoder.encode(data)
            frames = self._framer_factory().feed(wire)
        except Exception as e:
            raise ValueError(
                f"the framer cannot carry {what} of this codec ({e})"
            ) from None
        if len(frames) != 1 or len(frames[0]) < self.header_size:
            raise ValueError(
                f"the framer does not give back {what} of this codec as one frame "
                f"of at least {self.header_size} bytes"
            )
        return frames[0]

    # -- the Codec contract ----------------------------------------------------

    def new_framer(self) -> Framer:
        return self._framer_factory()

    def encode(self, kind: int, request_id: int, body: object) -> bytes:
        # Without a kind field every frame looks the same: the kind is not
        # written (a test server encodes its replies with the same codec).
        return self._encode_frame(body, request_id, kind)

    def _encode_frame(
        self, body: object, request_id: int, kind: int = REQUEST
    ) -> bytes:
        writes: list[tuple[_Slot, int]] = [(self._id, request_id)]
        parts: Mapping[str, bytes] | None = None
        if body.__class__ is bytes or isinstance(body, (bytes, bytearray)):
            payload = bytes(body)  # type: ignore[arg-type]
            if self._bytes_part is not None:
                parts = {self._bytes_part: payload}
        elif isinstance(body, Message):
            settable = self._settable
            for name, value in body.fields.items():
                slot = settable.get(name)
                if slot is None:
                    raise ValueError(self._not_settable(name))
                if not 0 <= value <= slot.max_value:
                    raise ValueError(
                        f"field {name!r} = {value!r} does not fit (0..{slot.max_value})"
                    )
                writes.append((slot, value))
            if body.parts:
                if body.body:
                    raise ValueError("give a Message either body= or parts=, not both")
                parts = body.parts
                if not parts.keys() <= self._part_names:
                    unknown = sorted(set(parts) - self._part_names)
                    raise ValueError(
                        f"unknown parts {unknown}; this codec's parts: "
                        f"{list(self.parts)}"
                    )
            else:
                payload = body.body
        else:
            raise TypeError(
                f"body must be bytes or a Message, got {type(body).__name__}"
            )
        if parts is not None:
            payload = b"".join([parts.get(p, b"") for p in self.parts])
        for slot, of in self._lengths:
            if of == BODY:
                n = len(payload)
            elif parts is not None:
                n = len(parts.get(of, b""))
            else:
                # A plain body is the last part; the others are empty.
                n = len(payload) if of == self.parts[-1] else 0
            if n > slot.max_value:
                raise ValueError(
                    f"{of} of {n} bytes does not fit in field {slot.name!r} "
                    f"(at most {slot.max_value})"
                )
            writes.append((slot, n))
        if self._kind is not None:
            try:
                writes.append((self._kind, self._encode_kinds[kind]))
            except KeyError:
                raise ValueError(
                    f"this codec has no value for {Kind(kind).name} frames"
                ) from None
        packed = self._packed
        if packed is not None:
            return self._encoder.encode(packed.build(writes) + payload)
        header = bytearray(self._template)
        for slot, value in writes:
            slot.write(header, value)
        header += payload
        return self._encoder.encode(bytes(header))

    def _not_settable(self, name: str) -> str:
        if name == self.id_field:
            return f"field {name!r} is the request ID: the client allocates it"
        if any(f.name == name for f in self.fields):
            return f"field {name!r} is computed by the codec; do not set it"
        return (
            f"unknown field {name!r}; fields a request may set: "
            f"{', '.join(self._settable) or 'none'}"
        )

    def decode(self, frame: bytes) -> tuple[int, int, object]:
        header_size = self.header_size
        if len(frame) < header_size:
            raise CorruptFrame(
                f"frame of {len(frame)} bytes is shorter than the "
                f"{header_size}-byte header"
            )
        if not self.declared:
            return self._kind_of(frame), self._id.read(frame), frame[header_size:]
        packed = self._packed
        if packed is not None:
            values = packed.read(frame)
        else:
            values = {slot.name: slot.read(frame) for slot in self._readers}
        for name, expected in self._expect_values:
            if values[name] != expected:
                raise CorruptFrame(
                    f"field {name!r} is {values[name]:#x}, expected "
                    f"{expected:#x}: the peer does not speak this protocol"
                )
        request_id = values[self.id_field]  # type: ignore[index]
        kind = REPLY if self._kind is None else self._kind_of(frame)
        body = frame[header_size:]
        for name in self._body_lengths:
            if values[name] != len(body):
                raise CorruptFrame(
                    f"field {name!r} says {values[name]} bytes of body, "
                    f"the frame has {len(body)}"
                )
        reply = Message.__new__(Message)
        reply.fields = values
        reply.body = body
        reply.parts = self._cut(values, body) if self.parts else {}
        status = self._status
        if status is not None and kind == REPLY:
            code = values[status.name]
            if code not in self.ok:
                return ERROR, request_id, self._remote_error(code, reply)
        elif kind == ERROR:
            return (
                kind,
                request_id,
                RemoteError(body.decode("utf-8", "replace"), None, reply),
            )
        return kind, request_id, reply

    def _kind_of(self, frame: bytes) -> int:
        if self._kind is None:
            return REPLY
        value = self._kind.read(frame)
        try:
            return self._decode_kinds[value]
        except KeyError:
            raise CorruptFrame(f"unknown kind value {value} in frame header") from None

    def _cut(self, values: Mapping[str, int], body: bytes) -> dict[str, bytes]:
        parts = {}
        pos = 0
        last = self.parts[-1]
        for part in self.parts[:-1]:
            end = pos + values[self._part_lengths[part]]
            if end > len(body):
                raise CorruptFrame(
                    f"the header's lengths ({part!r} ends at byte {end}) run past "
                    f"the {len(body)}-byte body"
                )
            parts[part] = body[pos:end]
            pos = end
        parts[last] = body[pos:]
        length_field = self._part_lengths.get(last)
        if length_field is not None and values[length_field] != len(body) - pos:
            raise CorruptFrame(
                f"field {length_field!r} says {values[length_field]} bytes of "
                f"{last!r}, the frame has {len(body) - pos}"
            )
        return parts

    def _remote_error(self, code: int, reply: Message) -> RemoteError:
        spec = self.errors.get(code)
        if spec is None:
            return RemoteError(f"status {code}", code, reply)
        if isinstance(spec, str):
            return RemoteError(spec, code, reply)
        # A class may say in words what its code means (``description``).
        text = getattr(spec, "description", None) or spec.__name__
        return spec(str(text), code, reply)


def _shorthand(
    id_offset: int | None,
    id_size: int | None,
    kind_offset: int | None,
    kind_size: int,
    byteorder: Literal["big", "little"],
) -> tuple[list[Field], str, str | None]:
    # The original form: an ID (4 bytes at 0 by default) and maybe a kind.
    fields = [Field("id", id_offset or 0, 4 if id_size is None else id_size, byteorder)]
    if kind_offset is None:
        return fields, "id", None
    fields.append(Field("kind", kind_offset, kind_size, byteorder))
    return fields, "id", "kind"


def _check_fields(fields: Sequence[Field], header_size: int) -> dict[str, Field]:
    by_name: dict[str, Field] = {}
    taken = 0
    for f in fields:
        if f.name in by_name:
            raise ValueError(f"two fields are named {f.name!r}")
        if f.offset + f.size > header_size:
            raise ValueError(
                f"the {f.name} field ({f.size} bytes at offset {f.offset}) must "
                f"lie inside the {header_size}-byte header"
            )
        bits = f.bits(header_size)
        if bits & taken:
            raise ValueError(
                f"field {f.name!r} overlaps another field's bits (bit fields "
                f"sharing bytes need disjoint masks)"
            )
        taken |= bits
        by_name[f.name] = f
    return by_name
