"""
The RESP3 framer and codec (framedclient.codecs.resp3): frames cut right
however the bytes are split or stuck together, pushes classified, every
RESP3 type read and given in RESP2's shape.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framedclient.codecs import ERROR, PUSH, REPLY
from framedclient.codecs.redis import RespError, parse_reply
from framedclient.codecs.resp3 import (
    INVALIDATE,
    Resp3Codec,
    Resp3Framer,
    Verbatim,
    parse_resp3,
    to_resp2,
)
from framedclient.errors import CorruptFrame, FrameTooLarge


def _text(data: bytes) -> str:
    return ("ERR " + data.decode("utf-8", "replace")) if data else "ERR "


def blob(marker: bytes, data: bytes) -> bytes:
    return b"%s%d\r\n%s\r\n" % (marker, len(data), data)


# Each value is (wire bytes, what parse_resp3 gives, what parse_reply gives
# for to_resp2 of it).
texts = st.binary(max_size=20)
lines = st.binary(max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b)
scalars = st.one_of(
    texts.map(lambda b: (blob(b"$", b), b, b)),
    lines.map(lambda b: (b"+%s\r\n" % b, b, b)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: (b":%d\r\n" % i, i, i)),
    st.integers().map(lambda i: (b"(%d\r\n" % i, i, b"%d" % i)),
    st.just((b"_\r\n", None, None)),
    st.booleans().map(lambda t: (b"#t\r\n" if t else b"#f\r\n", t, int(t))),
    st.floats(allow_nan=False).map(
        lambda f: (b",%s\r\n" % repr(f).encode(), f, repr(f).encode())
    ),
    texts.map(lambda b: (blob(b"=", b"txt:" + b), b, b)),
    lines.map(lambda b: (b"-ERR %s\r\n" % b,) + (RespError(_text(b)),) * 2),
)


def aggregates(children):
    def array(items):
        wire = b"*%d\r\n" % len(items) + b"".join(w for w, _, _ in items)
        return wire, [v for _, v, _ in items], [r for _, _, r in items]

    def as_set(items):
        wire = b"~%d\r\n" % len(items) + b"".join(w for w, _, _ in items)
        return wire, None, [r for _, _, r in items]

    def as_map(pairs):
        wire = b"%%%d\r\n" % len(pairs) + b"".join(k[0] + v[0] for k, v in pairs)
        return wire, None, [x for k, v in pairs for x in (k[2], v[2])]

    def attributed(pair):
        attrs, value = pair
        wire = b"|%d\r\n" % len(attrs) + b"".join(k[0] + v[0] for k, v in attrs)
        return wire + value[0], value[1], value[2]

    items = st.lists(children, max_size=4)
    pairs = st.lists(st.tuples(children, children), max_size=3)
    return st.one_of(
        items.map(array),
        items.map(as_set),
        pairs.map(as_map),
        st.tuples(pairs, children).map(attributed),
    )


values = st.recursive(scalars, aggregates, max_leaves=12)


def not_errors(value):
    # parse_reply reads a top-level simple error as an error reply frame.
    return not value[0].startswith(b"-")


@given(st.lists(values, min_size=1, max_size=6), st.data())
def test_the_framer_cuts_whole_frames_however_the_bytes_arrive(frames, data):
    wire = b"".join(w for w, _, _ in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    framer = Resp3Framer()
    got = []
    last = 0
    for cut in [*cuts, len(wire)]:
        got += framer.feed(wire[last:cut])
        last = cut
    assert got == [w for w, _, _ in frames]
    assert framer.buffered == 0


@given(values)
def test_a_frame_fed_a_byte_at_a_time_comes_out_once_whole(value):
    framer = Resp3Framer()
    got = []
    for i in range(len(value[0])):
        got += framer.feed(value[0][i : i + 1])
    assert got == [value[0]]


@given(values.filter(not_errors))
def test_replies_in_resp2_shape_read_as_redis_gives_them_to_resp2(value):
    wire, _, resp2 = value
    assert parse_reply(to_resp2(wire)) == resp2


def test_every_resp3_type_reads_as_its_python_value():
    assert parse_resp3(b"%2\r\n+a\r\n:1\r\n$1\r\nb\r\n#t\r\n") == {b"a": 1, b"b": True}
    assert parse_resp3(b"~2\r\n:1\r\n:2\r\n") == {1, 2}
    assert parse_resp3(b"_\r\n") is None
    assert parse_resp3(b",3.5\r\n") == 3.5
    assert parse_resp3(b",inf\r\n") == math.inf
    assert parse_resp3(b"(12345678901234567890123\r\n") == 12345678901234567890123
    verbatim = parse_resp3(b"=8\r\ntxt:hiya\r\n")
    assert isinstance(verbatim, Verbatim) and verbatim == b"hiya"
    assert verbatim.format == b"txt"
    assert parse_resp3(b"!9\r\nERR wrong\r\n") == RespError("ERR wrong")
    assert parse_resp3(b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n") == b"v"
    assert parse_resp3(b">2\r\n$1\r\na\r\n$1\r\nb\r\n") == [b"a", b"b"]
    with pytest.raises(CorruptFrame):
        parse_resp3(b"%1\r\n+a\r\n")
    with pytest.raises(CorruptFrame):
        parse_resp3(b"#x\r\n")


def test_the_codec_classifies_pushes_confirmations_replies_and_errors():
    codec = Resp3Codec()
    message = b">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
    kind, _, push = codec.decode(message)
    assert kind == PUSH and (push.kind, push.key, push.data) == (
        b"message",
        b"news",
        b"hi",
    )
    pmessage = b">4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
    kind, _, push = codec.decode(pmessage)
    assert (kind, push.key, push.data, push.pattern) == (PUSH, b"news", b"hi", b"n*")
    invalidate = b">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"
    kind, _, push = codec.decode(invalidate)
    assert (kind, push.key, push.data) == (PUSH, INVALIDATE, [b"a", b"b"])
    flush = b">2\r\n$10\r\ninvalidate\r\n_\r\n"
    assert codec.decode(flush)[2].data is None
    # A subscription's confirmation is a push on the wire but the in-order
    # reply to the command that asked for it.
    confirm = b">3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    assert codec.decode(confirm) == (
        REPLY,
        0,
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n",
    )
    assert codec.decode(b"_\r\n") == (REPLY, 0, b"$-1\r\n")
    assert codec.decode(b"$1\r\nv\r\n") == (REPLY, 0, b"$1\r\nv\r\n")
    assert codec.decode(b"-ERR no\r\n") == (ERROR, 0, b"ERR no")
    assert codec.decode(b"!6\r\nERR no\r\n") == (ERROR, 0, b"ERR no")
    assert codec.decode(b"|1\r\n+a\r\n+b\r\n-ERR x\r\n") == (ERROR, 0, b"ERR x")
    raw = Resp3Codec(resp2_replies=False)
    assert raw.decode(b"%1\r\n+a\r\n#t\r\n") == (REPLY, 0, b"%1\r\n+a\r\n#t\r\n")


def test_the_framer_refuses_what_is_not_resp3_and_frames_over_max_frame():
    with pytest.raises(CorruptFrame, match="unknown RESP3 type"):
        Resp3Framer().feed(b"@1\r\n")
    with pytest.raises(CorruptFrame, match="streamed"):
        Resp3Framer().feed(b"$?\r\n")
    with pytest.raises(FrameTooLarge):
        Resp3Framer(max_frame=100).feed(b"$200\r\n")
    framer = Resp3Framer(max_frame=100)
    with pytest.raises(FrameTooLarge):
        framer.feed(b"*50\r\n" + b":1\r\n" * 50)
    with pytest.raises(CorruptFrame, match="broke earlier"):
        framer.feed(b":1\r\n")
    with pytest.raises(TypeError, match="resp2_replies"):
        Resp3Codec(resp2_replies=1)


@given(st.binary(max_size=40), st.binary(max_size=200), st.integers(0, 3))
def test_a_published_message_decodes_to_its_channel_and_data(channel, data, cut):
    codec = Resp3Codec()
    frame = b">3\r\n" + blob(b"$", b"message") + blob(b"$", channel) + blob(b"$", data)
    framer = Resp3Framer()
    # After a reply of another kind, split anywhere.
    wire = b"%1\r\n+a\r\n:1\r\n" + frame
    split = len(wire) * cut // 3
    frames = framer.feed(wire[:split]) + framer.feed(wire[split:])
    assert frames[-1] == frame
    kind, _, push = codec.decode(frame)
    assert (kind, push.kind, push.key, push.data) == (PUSH, b"message", channel, data)


def test_empty_aggregates_are_whole_frames_of_their_own():
    framer = Resp3Framer()
    wire = b"*0\r\n$0\r\n\r\n>0\r\n%0\r\n~0\r\n"
    assert framer.feed(wire) == [
        b"*0\r\n",
        b"$0\r\n\r\n",
        b">0\r\n",
        b"%0\r\n",
        b"~0\r\n",
    ]
