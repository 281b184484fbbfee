"""
Fuzzing the codecs and the protocol layer (the framers have their own
properties in test_framing.py).

Codecs: any frame decodes to a well-formed message or raises CorruptFrame,
nothing else; what a codec encodes, its framer and decoder give back
however the bytes are split.

Protocol: FramedProtocol.dataReceived fed arbitrary bytes (garbage mixed
with valid replies, pings, goaways, errors) in arbitrary splits: no
exception escapes, every request fires exactly once, a broken stream closes
the connection and nothing else, and what the connection buffers stays
under the codec's max_frame.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from framedclient.codecs import (
    ERROR,
    GOAWAY,
    PING,
    PONG,
    REPLY,
    REQUEST,
    FC1Codec,
    HeaderCodec,
    Kind,
    PipelinedCodec,
)
from framedclient.errors import (
    ConnectionLost,
    CorruptFrame,
    FramedClientError,
    Overloaded,
    ProtocolError,
    RemoteError,
    RequestTimeout,
)
from framedclient.framing import Delimited, LengthPrefixed, Netstring
from framedclient.testing import connected_pair

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

KIND_VALUES = [int(k) for k in Kind]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


# -- codecs ---------------------------------------------------------------------


@PROPERTY
@given(st.binary(max_size=64))
def test_fc1_decode_of_any_frame_is_a_message_or_corrupt_frame(frame):
    codec = FC1Codec()
    try:
        kind, request_id, body = codec.decode(frame)
    except CorruptFrame:
        assert len(frame) < 9 or frame[8] not in KIND_VALUES
        return
    assert kind in KIND_VALUES
    assert 0 <= request_id < 2**64
    assert body == frame[9:]


@PROPERTY
@given(
    messages=st.lists(
        st.tuples(
            st.sampled_from(KIND_VALUES),
            st.integers(0, 2**64 - 1),
            st.binary(max_size=300),
        ),
        max_size=20,
    ),
    cuts=st.lists(st.integers(0, 10_000), max_size=30),
)
def test_fc1_round_trip_survives_any_split(messages, cuts):
    codec = FC1Codec()
    wire = b"".join(codec.encode(k, i, b) for k, i, b in messages)
    framer = codec.new_framer()
    frames = []
    for piece in split_at(wire, cuts):
        frames.extend(framer.feed(piece))
    assert [codec.decode(f) for f in frames] == messages
    assert framer.buffered == 0


HEADER_LAYOUTS = st.fixed_dictionaries(
    {
        "id_size": st.sampled_from([1, 2, 4, 8]),
        "with_kind": st.booleans(),
        "byteorder": st.sampled_from(["big", "little"]),
        "pad": st.integers(0, 3),
    }
)


def header_codec(layout) -> HeaderCodec:
    id_size = layout["id_size"]
    pad = layout["pad"]
    kinds = None
    kind_offset = None
    header_size = id_size + pad
    if layout["with_kind"]:
        kind_offset = header_size
        header_size += 1
        kinds = {10 + int(k): k for k in Kind}
    return HeaderCodec(
        lambda: LengthPrefixed(length_size=2, max_frame=4096, byteorder="little"),
        header_size=header_size,
        id_offset=pad,
        id_size=id_size,
        kind_offset=kind_offset,
        kinds=kinds,
        byteorder=layout["byteorder"],
    )


@PROPERTY
@given(HEADER_LAYOUTS, st.binary(max_size=40))
def test_header_codec_decode_of_any_frame_is_a_message_or_corrupt_frame(layout, frame):
    codec = header_codec(layout)
    try:
        kind, request_id, body = codec.decode(frame)
    except CorruptFrame:
        return
    assert kind in KIND_VALUES
    assert 0 <= request_id <= codec.max_id
    assert body == frame[codec.header_size :]
    if not layout["with_kind"]:
        assert kind == REPLY


@PROPERTY
@given(
    layout=HEADER_LAYOUTS,
    messages=st.lists(
        st.tuples(
            st.sampled_from([REQUEST, REPLY, ERROR, PING, PONG]),
            st.integers(0, 255),
            st.binary(max_size=100),
        ),
        max_size=10,
    ),
    cuts=st.lists(st.integers(0, 5000), max_size=20),
)
def test_header_codec_round_trip_survives_any_split(layout, messages, cuts):
    codec = header_codec(layout)
    wire = b"".join(codec.encode(k, i, b) for k, i, b in messages)
    framer = codec.new_framer()
    frames = []
    for piece in split_at(wire, cuts):
        frames.extend(framer.feed(piece))
    decoded = [codec.decode(f) for f in frames]
    if layout["with_kind"]:
        assert decoded == messages
    else:
        # Without a kind field every frame from the server is a reply.
        assert decoded == [(REPLY, i, b) for _, i, b in messages]


def resp_error(frame: bytes) -> str | None:
    return frame[1:].decode("utf-8", "replace") if frame[:1] == b"-" else None


@PROPERTY
@given(st.binary(max_size=100))
def test_pipelined_decode_never_raises_and_tells_errors_apart(frame):
    codec = PipelinedCodec(lambda: Delimited(b"\r\n"), is_error=resp_error)
    kind, request_id, body = codec.decode(frame)
    assert request_id == 0
    if frame[:1] == b"-":
        assert kind == ERROR and body == frame[1:].decode("utf-8", "replace").encode()
    else:
        assert (kind, body) == (REPLY, frame)


@PROPERTY
@given(
    payloads=st.lists(st.binary(max_size=200), max_size=15),
    cuts=st.lists(st.integers(0, 5000), max_size=20),
)
def test_pipelined_netstring_round_trip_survives_any_split(payloads, cuts):
    codec = PipelinedCodec(lambda: Netstring(max_frame=1000))
    wire = b"".join(codec.encode(REQUEST, 0, p) for p in payloads)
    framer = codec.new_framer()
    frames = []
    for piece in split_at(wire, cuts):
        frames.extend(framer.feed(piece))
    assert [codec.decode(f)[2] for f in frames] == payloads


# -- the protocol fed arbitrary bytes ----------------------------------------------


class Silent(Protocol):
    """
    A server that reads and never answers: the test writes the server's
    bytes itself.
    """


SILENT = Factory.forProtocol(Silent)
DOCUMENTED = (
    RemoteError,
    ConnectionLost,
    RequestTimeout,
    Overloaded,
    CancelledError,
)
MAX_FRAME = 2048


def fc1_chunks(ids: int):
    """
    Pieces of a server's stream: valid frames of every kind (replies to
    IDs that were sent, never sent, or answered twice), raw garbage, and
    hostile length headers.
    """
    codec = FC1Codec(max_frame=MAX_FRAME)
    frame = st.builds(
        codec.encode,
        st.sampled_from([REPLY, REPLY, REPLY, ERROR, PING, PONG, GOAWAY, REQUEST]),
        st.integers(0, ids + 3),
        st.binary(max_size=64),
    )
    huge = st.integers(MAX_FRAME, 2**32 - 1).map(lambda n: struct.pack(">I", n))
    return st.lists(
        st.one_of(frame, frame, frame, st.binary(min_size=1, max_size=32), huge),
        max_size=25,
    )


class Outcomes:
    """
    Records what each request's Deferred fired with, and how often.
    """

    def __init__(self, ds) -> None:
        self.results: list[list] = []
        for d in ds:
            box: list = []
            d.addBoth(box.append)  # consumes failures: no "unhandled error"
            self.results.append(box)

    def check(self, proto) -> None:
        """
        Every request fired at most once, with bytes or a documented error;
        a closed connection failed every request still pending.
        """
        for box in self.results:
            assert len(box) <= 1
            if not box:
                assert not proto.is_closed, "a closed connection left a request"
                continue
            result = box[0]
            if isinstance(result, Failure):
                assert result.check(*DOCUMENTED), result.getTraceback()
            else:
                assert isinstance(result, bytes)
        assert proto.pending == sum(1 for box in self.results if not box)

    def all_fired(self) -> bool:
        return all(len(box) == 1 for box in self.results)


@PROPERTY
@given(
    n_requests=st.integers(0, 8),
    chunks=fc1_chunks(8),
    cuts=st.lists(st.integers(0, 10_000), max_size=40),
    cancel=st.sets(st.integers(0, 7), max_size=3),
)
def test_fc1_protocol_survives_any_server_bytes_in_any_split(
    n_requests, chunks, cuts, cancel
):
    pair = connected_pair(SILENT, FC1Codec(max_frame=MAX_FRAME), request_timeout=5.0)
    proto = pair.client
    ds = [proto.request(b"req-%d" % i) for i in range(n_requests)]
    outcomes = Outcomes(ds)
    pair.flush()
    for i in cancel:
        if i < len(ds):
            ds[i].cancel()
    for piece in split_at(b"".join(chunks), cuts):
        pair.server.transport.write(piece)
        pair.flush()  # raises if anything escaped dataReceived
        assert proto._framer.buffered <= MAX_FRAME
        outcomes.check(proto)
        if proto.is_closed:
            break
    # Whatever happened, timeouts and the end of the connection settle the
    # rest, exactly once each.
    pair.advance(5.0)
    pair.cut()
    outcomes.check(proto)
    assert proto.pending == 0
    assert outcomes.all_fired()


@PROPERTY
@given(
    n_requests=st.integers(1, 6),
    data=st.binary(max_size=600),
    cuts=st.lists(st.integers(0, 1000), max_size=30),
)
def test_line_protocol_survives_any_bytes_and_matches_in_order(n_requests, data, cuts):
    codec = PipelinedCodec(lambda: Delimited(b"\n", max_frame=64), is_error=resp_error)
    pair = connected_pair(SILENT, codec)
    proto = pair.client
    ds = [proto.request(b"q%d" % i) for i in range(n_requests)]
    outcomes = Outcomes(ds)
    pair.flush()
    for piece in split_at(data, cuts):
        pair.server.transport.write(piece)
        pair.flush()
        assert proto._framer.buffered <= 64 + 1
        outcomes.check(proto)
        if proto.is_closed:
            break
    if not proto.is_closed:
        # Lines are replies in request order: the first n lines of the
        # stream answered the first n requests.
        lines = data.split(b"\n")[:-1]
        for box, line in zip(outcomes.results, lines, strict=False):
            if line[:1] == b"-":
                assert box[0].check(RemoteError)
            else:
                assert box[0] == line
    pair.cut()
    outcomes.check(proto)
    assert outcomes.all_fired()


@PROPERTY
@given(
    layout=HEADER_LAYOUTS,
    data=st.binary(max_size=400),
    cuts=st.lists(st.integers(0, 1000), max_size=20),
)
def test_header_codec_protocol_survives_any_bytes(layout, data, cuts):
    codec = header_codec(layout)
    pair = connected_pair(SILENT, codec, max_pending=100)
    proto = pair.client
    outcomes = Outcomes([proto.request(b"x%d" % i) for i in range(4)])
    pair.flush()
    for piece in split_at(data, cuts):
        pair.server.transport.write(piece)
        pair.flush()
        assert proto._framer.buffered <= 4096
        outcomes.check(proto)
        if proto.is_closed:
            break
    pair.cut()
    outcomes.check(proto)
    assert outcomes.all_fired()


def test_corrupt_frame_is_a_protocol_error_and_a_framedclient_error():
    # What callers catch: one except clause covers every decoding failure.
    assert issubclass(CorruptFrame, ProtocolError)
    assert issubclass(ProtocolError, FramedClientError)
