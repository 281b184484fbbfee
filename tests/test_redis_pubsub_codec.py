"""
The subscriber connection's codec (RedisPubSubCodec) and its framers,
with and without hiredis, on streams split anywhere.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framedclient.codecs import ERROR, PUSH, REPLY, Push
from framedclient.codecs.redis_pubsub import RedisPubSubCodec
from framedclient.errors import FrameTooLarge

_PUBSUB_STREAM = [
    (b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n", REPLY, None),
    (b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n", PUSH, Push(b"news", b"hi")),
    (
        b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$0\r\n\r\n",
        PUSH,
        Push(b"news", b"", b"n*"),
    ),
    (b"*3\r\n$8\r\nsmessage\r\n$1\r\ns\r\n$3\r\n-x-\r\n", PUSH, Push(b"s", b"-x-")),
    (b"-ERR refused\r\n", ERROR, b"ERR refused"),
]


@given(st.booleans(), st.lists(st.sampled_from(_PUBSUB_STREAM), max_size=12), st.data())
def test_both_subscriber_framers_classify_the_same_split_stream(hiredis, frames, data):
    # hiredis=True: HiredisPubSubFramer; False: RespFramer.
    codec = RedisPubSubCodec(hiredis=hiredis)
    framer = codec.new_framer()
    wire = b"".join(w for w, _, _ in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    got = []
    last = 0
    for cut in [*cuts, len(wire)]:
        got += [codec.decode(f) for f in framer.feed(wire[last:cut])]
        last = cut
    assert [k for k, _, _ in got] == [k for _, k, _ in frames]
    for (kind, _, body), (_, _, want) in zip(got, frames, strict=True):
        if kind != REPLY:
            assert body == want


def test_the_hiredis_framer_refuses_a_reply_over_max_frame():
    framer = RedisPubSubCodec(max_frame=1000, hiredis=True).new_framer()
    framer.feed(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$5000\r\n")
    with pytest.raises(FrameTooLarge):
        framer.feed(b"x" * 1200)
