"""
The declarative header codec (codec contract v2): messages with header
fields in, messages (or RemoteErrors with a code) out; layouts it cannot
encode refused when it is built.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from framedclient.codecs import ERROR, REPLY, REQUEST, Matching, Message
from framedclient.codecs.header import BODY, Field, HeaderCodec
from framedclient.errors import CorruptFrame, InvalidRequest, RemoteError
from framedclient.framing import Delimited, LengthPrefixed
from framedclient.protocol import FramedProtocol, ProtocolConfig
from framedclient.testing import MemoryServer, memory_client

PROPERTY = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class NotFound(RemoteError):
    description = "no such thing"


def dns_like(**kwargs: Any) -> HeaderCodec:
    # DNS over TCP: u16 length, then a 12-byte header: ID, then QR (bit 7 of
    # byte 2) and RCODE (low 4 bits of byte 3).
    return HeaderCodec(
        lambda: LengthPrefixed(length_size=2),
        header_size=12,
        fields=[
            Field("id", 0, 2),
            Field("qr", 2, 1, mask=0x80, expect=1),
            Field("opcode", 2, 1, mask=0x78),
            Field("rd", 2, 1, mask=0x01, default=1),
            Field("rcode", 3, 1, mask=0x0F),
            Field("qdcount", 4, 2, default=1),
        ],
        id_field="id",
        status_field="rcode",
        **kwargs,
    )


def reply_to(codec: HeaderCodec, request: bytes, **patch: int) -> bytes:
    """The request's frame turned into a reply (QR set, fields patched)."""
    (frame,) = codec.new_framer().feed(request)
    header = bytearray(frame)
    header[2] |= 0x80
    for offset, value in patch.items():
        header[int(offset.lstrip("b"))] = value
    return codec._encoder.encode(bytes(header))


def test_request_fields_defaults_bits_and_id_are_written():
    codec = dns_like()
    wire = codec.encode(REQUEST, 0x1234, Message(fields={"opcode": 2}, body=b"q"))
    assert wire == b"\x00\x0d" + b"\x12\x34" + bytes([0x10 | 0x01, 0]) + (
        b"\x00\x01" + bytes(6) + b"q"
    )


def test_plain_bytes_request_gets_every_field_at_its_default():
    codec = dns_like()
    assert codec.encode(REQUEST, 1, b"q") == codec.encode(
        REQUEST, 1, Message(body=b"q")
    )


def test_reply_keeps_its_header_fields():
    codec = dns_like()
    wire = reply_to(codec, codec.encode(REQUEST, 77, b"answer"))
    kind, request_id, reply = codec.decode(codec.new_framer().feed(wire)[0])
    assert (kind, request_id) == (REPLY, 77)
    assert reply == Message(
        fields={"id": 77, "qr": 1, "opcode": 0, "rd": 1, "rcode": 0, "qdcount": 1},
        body=b"answer",
    )


def test_status_maps_to_remote_error_with_its_code():
    codec = dns_like(errors={3: "NXDOMAIN", 5: NotFound})
    framer = codec.new_framer()
    request = codec.encode(REQUEST, 9, b"q")
    nx = codec.decode(framer.feed(reply_to(codec, request, b3=3))[0])
    assert nx[:2] == (ERROR, 9)
    error = nx[2]
    assert type(error) is RemoteError
    assert (error.code, error.message) == (3, "NXDOMAIN")
    assert error.reply.fields["rcode"] == 3
    refused = codec.decode(framer.feed(reply_to(codec, request, b3=5))[0])[2]
    assert isinstance(refused, NotFound)
    assert (refused.code, refused.message) == (5, "no such thing")


def test_unmapped_status_is_a_remote_error_not_a_corrupt_frame():
    codec = dns_like()
    request = codec.encode(REQUEST, 9, b"q")
    kind, _, error = codec.decode(
        codec.new_framer().feed(reply_to(codec, request, b3=14))[0]
    )
    assert kind == ERROR
    assert isinstance(error, RemoteError)
    assert error.code == 14
    assert "14" in str(error)


def test_wrong_constant_is_a_corrupt_frame():
    codec = dns_like()
    # QR clear: a query, not a response.
    (frame,) = codec.new_framer().feed(codec.encode(REQUEST, 1, b"q"))
    with pytest.raises(CorruptFrame, match="'qr' is 0x0, expected 0x1"):
        codec.decode(frame)


def test_id_width_sets_the_codecs_id_space():
    assert dns_like().max_id == 0xFFFF


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        (Message(fields={"id": 1}), "request ID"),
        (Message(fields={"nope": 1}), "unknown field 'nope'"),
        (Message(fields={"rcode": 16}), "does not fit"),
        (Message(fields={"opcode": -1}), "does not fit"),
        (Message(parts={"key": b"k"}), "unknown parts"),
        ("text", "must be bytes or a Message"),
    ],
)
def test_requests_the_codec_cannot_carry_are_refused(message, complaint):
    with pytest.raises((ValueError, TypeError), match=complaint):
        dns_like().encode(REQUEST, 1, message)


def with_parts() -> HeaderCodec:
    return HeaderCodec(
        lambda: LengthPrefixed(length_size=4, offset=4, adjustment=4, strip=0),
        header_size=12,
        fields=[
            Field("magic", 0, 1, default=0x80, expect=0x81),
            Field("key_length", 1, 2, length_of="key"),
            Field("body_length", 4, 4, length_of=BODY),
            Field("seq", 8, 4),
        ],
        id_field="seq",
        parts=("key", "value"),
    )


def test_parts_are_joined_in_order_and_their_lengths_computed():
    codec = with_parts()
    wire = codec.encode(REQUEST, 5, Message(parts={"value": b"vv", "key": b"kkk"}))
    assert wire == b"\x80\x00\x03\x00" + b"\x00\x00\x00\x05" + b"\x00\x00\x00\x05" + (
        b"kkkvv"
    )
    reply = bytearray(wire)
    reply[0] = 0x81
    _, _, message = codec.decode(bytes(reply))
    assert message.parts == {"key": b"kkk", "value": b"vv"}
    assert message.fields["body_length"] == 5
    # A plain body is the last part.
    assert codec.encode(REQUEST, 5, Message(body=b"vv")) == codec.encode(
        REQUEST, 5, Message(parts={"value": b"vv"})
    )


def test_part_lengths_running_past_the_body_are_a_corrupt_frame():
    codec = with_parts()
    frame = b"\x81\x00\x09\x00" + b"\x00\x00\x00\x02" + bytes(4) + b"kv"
    with pytest.raises(CorruptFrame, match="run past"):
        codec.decode(frame)


def test_body_length_field_that_disagrees_with_the_frame_is_corrupt():
    codec = HeaderCodec(
        lambda: LengthPrefixed(length_size=2),
        header_size=4,
        fields=[Field("id", 0, 2), Field("n", 2, 2, length_of=BODY)],
        id_field="id",
    )
    with pytest.raises(CorruptFrame, match="says 7 bytes of body"):
        codec.decode(b"\x00\x01\x00\x07abc")


@pytest.mark.parametrize(
    ("build", "complaint"),
    [
        (
            # The old form with a framer that keeps its length field: the ID
            # would sit on bytes the framer writes.
            lambda: HeaderCodec(
                lambda: LengthPrefixed(length_size=2, strip=0),
                header_size=4,
                id_size=2,
            ),
            "overlaps the length field",
        ),
        (
            # The framer's length counts the header too: body_length would
            # disagree with it.
            lambda: HeaderCodec(
                lambda: LengthPrefixed(length_size=4, offset=4, adjustment=0, strip=0),
                header_size=12,
                fields=[Field("n", 4, 4, length_of=BODY), Field("id", 8, 4)],
                id_field="id",
            ),
            "counts something else|cannot carry",
        ),
        (
            lambda: HeaderCodec(
                lambda: LengthPrefixed(length_size=2),
                header_size=2,
                fields=[Field("id", 1, 2)],
                id_field="id",
            ),
            "inside the 2-byte header",
        ),
        (
            lambda: HeaderCodec(
                lambda: LengthPrefixed(length_size=2),
                header_size=2,
                fields=[Field("id", 0, 1), Field("f", 0, 1, mask=1)],
                id_field="id",
            ),
            "overlaps another field",
        ),
        (
            lambda: HeaderCodec(
                lambda: LengthPrefixed(length_size=2),
                header_size=2,
                fields=[Field("id", 0, 2)],
                id_field="seq",
            ),
            "id_field must name one of the fields",
        ),
        (
            lambda: HeaderCodec(
                lambda: LengthPrefixed(length_size=2),
                header_size=4,
                fields=[Field("id", 0, 2), Field("n", 2, 2)],
                id_field="id",
                parts=("key", "value"),
            ),
            "part 'key' needs a field",
        ),
        (
            lambda: HeaderCodec(
                lambda: LengthPrefixed(length_size=1),
                header_size=2,
                fields=[Field("id", 0, 2)],
                id_field="id",
                errors={1: ValueError},  # type: ignore[dict-item]
            ),
            "RemoteError subclass",
        ),
    ],
)
def test_declarations_that_cannot_work_fail_when_built(build, complaint):
    with pytest.raises(ValueError, match=complaint):
        build()


def test_bit_fields_sharing_a_byte_with_disjoint_masks_are_fine():
    assert dns_like().max_id == 0xFFFF


def test_shorthand_form_keeps_bytes_in_and_out():
    codec = HeaderCodec(
        lambda: LengthPrefixed(length_size=2), header_size=3, id_offset=1, id_size=2
    )
    wire = codec.encode(REQUEST, 0x0102, b"body")
    assert wire == b"\x00\x07\x00\x01\x02body"
    assert codec.decode(wire[2:]) == (REPLY, 0x0102, b"body")


def test_shorthand_form_works_behind_a_delimiter():
    codec = HeaderCodec(lambda: Delimited(b"\n"), header_size=1, id_size=1)
    assert codec.new_framer().feed(codec.encode(REQUEST, 7, b"x")) == [b"\x07x"]


# -- through a connection ---------------------------------------------------------


def connected(codec: HeaderCodec) -> tuple[FramedProtocol, StringTransport, Clock]:
    clock = Clock()
    proto = FramedProtocol(ProtocolConfig(codec=codec), clock)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport, clock


def sent(codec: HeaderCodec, transport: StringTransport) -> list[bytes]:
    frames = codec.new_framer().feed(transport.value())
    transport.clear()
    return frames


def test_error_status_fails_one_request_and_keeps_the_connection():
    codec = dns_like(errors={3: "NXDOMAIN"})
    proto, transport, clock = connected(codec)
    missing = proto.request(b"missing")
    present = proto.request(Message(fields={"opcode": 1}, body=b"present"))
    clock.advance(0)
    first, second = sent(codec, transport)
    nx = bytearray(first)
    nx[2] |= 0x80
    nx[3] = 3
    ok = bytearray(second)
    ok[2] |= 0x80
    proto.dataReceived(
        codec._encoder.encode(bytes(nx)) + codec._encoder.encode(bytes(ok))
    )
    failures: list[Any] = []
    missing.addErrback(failures.append)
    assert failures[0].check(RemoteError)
    assert failures[0].value.code == 3
    assert failures[0].value.message == "NXDOMAIN"
    replies: list[Message] = []
    present.addCallback(replies.append)
    assert replies[0].body == b"present"
    assert replies[0].fields["opcode"] == 1
    assert transport.connected and not transport.disconnecting


def test_request_the_codec_refuses_fails_alone_with_invalid_request():
    codec = dns_like()
    proto, transport, clock = connected(codec)
    refused = proto.request(Message(fields={"id": 5}))
    fine = proto.request(b"fine")
    failures: list[Any] = []
    refused.addErrback(failures.append)
    assert failures[0].check(InvalidRequest)
    assert "request ID" in str(failures[0].value)
    clock.advance(0)
    assert [f[12:] for f in sent(codec, transport)] == [b"fine"]
    assert not fine.called


def test_sixteen_bit_ids_work_with_default_settings():
    codec = dns_like()
    proto = FramedProtocol(ProtocolConfig(codec=codec), Clock())
    assert proto.engine.max_pending == 0xFFFF - 1


# -- properties ----------------------------------------------------------------------


@st.composite
def layouts(draw: st.DrawFn) -> dict[str, Any]:
    """
    A random header: whole fields and bytes of bit fields with gaps, one of
    them the ID, maybe a status, maybe a constant; the length either
    stripped before the header or kept inside it (memcached's layout).
    """
    order = st.sampled_from(["big", "little"])
    specs: list[dict[str, Any]] = []
    pos = 0
    length_in_header = draw(st.booleans())
    length_size = draw(st.sampled_from([1, 2, 4]))
    if length_in_header:
        pos = draw(st.integers(0, 3))
        specs.append(
            dict(
                name="len",
                offset=pos,
                size=length_size,
                byteorder=draw(order),
                length_of=BODY,
            )
        )
        length_offset = pos
        pos += length_size
    for i in range(draw(st.integers(1, 5))):
        pos += draw(st.integers(0, 2))
        if i and draw(st.booleans()):
            split = draw(st.integers(1, 7))
            specs.append(
                dict(name=f"h{i}", offset=pos, size=1, mask=(0xFF << split) & 0xFF)
            )
            specs.append(dict(name=f"l{i}", offset=pos, size=1, mask=(1 << split) - 1))
            pos += 1
        else:
            size = draw(st.sampled_from([1, 2, 4, 8]))
            specs.append(
                dict(name=f"f{i}", offset=pos, size=size, byteorder=draw(order))
            )
            pos += size
    header_size = pos + draw(st.integers(0, 3))
    whole = [s for s in specs if s["name"].startswith("f")]
    id_spec = whole[0]
    others = [s for s in specs if s is not id_spec and "length_of" not in s]
    status = draw(st.sampled_from([None, *others])) if others else None
    constants = [s for s in others if s is not status]
    if constants and draw(st.booleans()):
        constant = draw(st.sampled_from(constants))
        limit = (
            constant["mask"]
            >> ((constant["mask"] & -constant["mask"]).bit_length() - 1)
            if "mask" in constant
            else (1 << (8 * constant["size"])) - 1
        )
        constant["default"] = constant["expect"] = draw(st.integers(0, limit))
    if length_in_header:

        def framer() -> LengthPrefixed:
            return LengthPrefixed(
                length_size=length_size,
                byteorder=specs[0]["byteorder"],
                offset=length_offset,
                adjustment=header_size - length_offset - length_size,
                strip=0,
            )
    else:

        def framer() -> LengthPrefixed:
            return LengthPrefixed(length_size=length_size)

    codec = HeaderCodec(
        framer,
        header_size=header_size,
        fields=[Field(**s) for s in specs],
        id_field=id_spec["name"],
        status_field=None if status is None else status["name"],
    )
    return dict(codec=codec)


def field_values(codec: HeaderCodec, draw: st.DrawFn) -> dict[str, int]:
    return {
        f.name: draw(st.integers(0, f.max_value))
        for f in codec.fields
        if f.name != codec.id_field and f.length_of is None and f.expect is None
    }


@PROPERTY
@given(layout=layouts(), data=st.data(), body=st.binary(max_size=200))
def test_any_layout_round_trips_every_field(layout, data, body):
    codec: HeaderCodec = layout["codec"]
    values = field_values(codec, data.draw)
    request_id = data.draw(st.integers(0, codec.max_id))
    length_cap = (
        min(f.max_value for f in codec.fields if f.length_of)
        if any(f.length_of for f in codec.fields)
        else 1 << 16
    )
    body = body[:length_cap]
    try:
        wire = codec.encode(REQUEST, request_id, Message(fields=values, body=body))
    except ValueError as e:
        # Only a body whose frame the length field cannot express.
        assert "does not fit" in str(e)
        return
    (frame,) = codec.new_framer().feed(wire)
    kind, got_id, reply = codec.decode(frame)
    assert got_id == request_id
    expected = dict(values)
    expected[codec.id_field] = request_id
    for f in codec.fields:
        if f.length_of:
            expected[f.name] = len(body)
        if f.expect is not None:
            expected[f.name] = f.expect
    status = values.get(codec.status_field) if codec.status_field else None
    if status:
        assert kind == ERROR
        assert isinstance(reply, RemoteError)
        assert reply.code == status
        reply = reply.reply
    else:
        assert kind == REPLY
    assert reply == Message(fields=expected, body=body)


@PROPERTY
@given(layout=layouts(), frame=st.binary(max_size=64))
def test_any_frame_decodes_or_is_a_corrupt_frame(layout, frame):
    codec: HeaderCodec = layout["codec"]
    try:
        kind, request_id, reply = codec.decode(frame)
    except CorruptFrame:
        return
    assert 0 <= request_id <= codec.max_id
    assert kind in (REPLY, ERROR)
    if kind == ERROR:
        assert isinstance(reply, RemoteError) and reply.code
    else:
        assert isinstance(reply, Message)


@PROPERTY
@given(layout=layouts(), data=st.data(), body=st.binary(max_size=100))
def test_truncated_or_mangled_frames_decode_or_are_corrupt(layout, data, body):
    codec: HeaderCodec = layout["codec"]
    try:
        wire = codec.encode(
            REQUEST, 1, Message(fields=field_values(codec, data.draw), body=body)
        )
    except ValueError:
        return
    (frame,) = codec.new_framer().feed(wire)
    cut = data.draw(st.integers(0, len(frame)))
    flips = data.draw(
        st.lists(
            st.tuples(st.integers(0, max(0, len(frame) - 1)), st.integers(0, 255)),
            max_size=3,
        )
    )
    mangled = bytearray(frame[:cut])
    for at, value in flips:
        if at < len(mangled):
            mangled[at] = value
    try:
        codec.decode(bytes(mangled))
    except CorruptFrame:
        pass


# -- through a client ----------------------------------------------------------------


class _DnsLikeServer(Protocol):
    """Answers each query with QR set; a body of b"nx" gets RCODE 3."""

    def __init__(self, codec: HeaderCodec) -> None:
        self.codec = codec
        self.framer = codec.new_framer()

    def dataReceived(self, data: bytes) -> None:
        for frame in self.framer.feed(data):
            header = bytearray(frame)
            header[2] |= 0x80
            if frame[12:] == b"nx":
                header[3] = 3
            self.transport.write(self.codec._encoder.encode(bytes(header)))


def test_client_sends_messages_and_gets_messages_back():
    codec = dns_like(errors={3: "NXDOMAIN"})
    server = MemoryServer(Factory.forProtocol(lambda: _DnsLikeServer(codec)))
    # A 16-bit ID and the default settings: no max_pending_per_connection.
    client, _ = memory_client(server, codec=codec, max_in_flight=2)
    queued = [
        client.request(Message(fields={"opcode": i}, body=b"q%d" % i)) for i in range(4)
    ]
    missing = client.request(b"nx")
    server.flush()
    replies: list[Message] = []
    for d in queued:
        d.addCallback(replies.append)
    assert [(r.fields["opcode"], r.body) for r in replies] == [
        (i, b"q%d" % i) for i in range(4)
    ]
    failures: list[Any] = []
    missing.addErrback(failures.append)
    assert failures[0].value.code == 3
    assert client.stats()["metrics"]["requests"]["remote_error"] == 1


def test_bit_fields_spanning_different_bytes_round_trip():
    # A 12-bit field across bytes 2-3 and a 4-bit one in byte 3's low
    # nibble, plus a little-endian field next to big-endian ones.
    codec = HeaderCodec(
        lambda: LengthPrefixed(length_size=2),
        header_size=8,
        fields=[
            Field("id", 0, 2),
            Field("wide", 2, 2, mask=0xFFF0),
            Field("low", 3, 1, mask=0x0F),
            Field("le", 4, 4, byteorder="little"),
        ],
        id_field="id",
    )
    message = Message(fields={"wide": 0xABC, "low": 0xD, "le": 0x01020304}, body=b"z")
    wire = codec.encode(REQUEST, 0x0102, message)
    assert wire == b"\x00\x09\x01\x02\xab\xcd\x04\x03\x02\x01z"
    _, _, reply = codec.decode(codec.new_framer().feed(wire)[0])
    assert reply.fields == {"id": 0x0102, "wide": 0xABC, "low": 0xD, "le": 0x01020304}


class _HandWritten:
    """
    A codec written by hand, no base class: u8 length, u8 ID, u8 status,
    body.  Its decode hands back the RemoteError (with the code) itself.
    """

    matching = Matching.BY_ID
    supports_cancel = False
    supports_ping = False
    max_id = 255
    max_frame = 256

    def new_framer(self) -> LengthPrefixed:
        return LengthPrefixed(length_size=1, max_frame=256)

    def encode(self, kind: int, request_id: int, body: bytes) -> bytes:
        return bytes([len(body) + 2, request_id, 0]) + body

    def decode(self, frame: bytes) -> tuple[int, int, object]:
        if len(frame) < 2:
            raise CorruptFrame("short")
        if frame[1]:
            return ERROR, frame[0], RemoteError("refused", frame[1])
        return REPLY, frame[0], frame[2:]


def test_a_hand_written_codec_still_works_and_may_return_coded_errors():
    codec = _HandWritten()
    proto, transport, clock = connected(codec)  # type: ignore[arg-type]
    assert proto.engine.max_pending == 254  # default cap fits its 8-bit IDs
    fine = proto.request(b"a")
    refused = proto.request(b"b")
    clock.advance(0)
    assert transport.value() == b"\x03\x01\x00a\x03\x02\x00b"
    proto.dataReceived(b"\x03\x01\x00A\x02\x02\x09")
    assert fine.result == b"A"
    failures: list[Any] = []
    refused.addErrback(failures.append)
    assert (failures[0].value.code, failures[0].value.message) == (9, "refused")


def zero_constants() -> HeaderCodec:
    # A version byte that must be 0, and a reserved bit that must be clear.
    return HeaderCodec(
        lambda: LengthPrefixed(length_size=2),
        header_size=6,
        fields=[
            Field("id", 0, 4),
            Field("version", 4, 1, expect=0),
            Field("flags", 5, 1, mask=0x7F),
            Field("reserved", 5, 1, mask=0x80, expect=0),
        ],
        id_field="id",
    )


@pytest.mark.parametrize(
    ("offset", "value", "field"),
    [(4, 1, "version"), (4, 0xFF, "version"), (5, 0x80, "reserved"), (5, 0xFF, "reserved")],
)
def test_a_field_declared_expect_0_refuses_any_other_value(offset, value, field):
    # 0 is a constant like any other (a version byte, a reserved bit): it
    # must not be mistaken for "no constant declared".
    codec = zero_constants()
    (frame,) = codec.new_framer().feed(codec.encode(REQUEST, 7, b"body"))
    assert frame[4] == 0 and frame[5] & 0x80 == 0  # written as declared
    assert codec.decode(frame)[:2] == (REPLY, 7)
    mangled = bytearray(frame)
    mangled[offset] = value
    with pytest.raises(CorruptFrame, match=f"'{field}' is 0x.*, expected 0x0"):
        codec.decode(bytes(mangled))


def test_a_field_declared_expect_0_keeps_the_fields_beside_it():
    codec = zero_constants()
    (frame,) = codec.new_framer().feed(
        codec.encode(REQUEST, 9, Message(fields={"flags": 0x7F}, body=b"x"))
    )
    kind, request_id, reply = codec.decode(frame)
    assert (kind, request_id) == (REPLY, 9)
    assert reply == Message(
        fields={"id": 9, "version": 0, "flags": 0x7F, "reserved": 0}, body=b"x"
    )
