"""
Specification of the sans-IO framers in :mod:`framedclient.framing`.

The vectors follow Netty's ``LengthFieldBasedFrameDecoder`` documentation and
tokio-util's codec tests; the hypothesis properties check that decoding does
not depend on how the stream is split, and that arbitrary bytes only ever
produce protocol errors within bounded memory.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framedclient.errors import CorruptFrame, FrameTooLarge, ProtocolError
from framedclient.framing import Delimited, Framer, LengthPrefixed, Netstring

HELLO = b"HELLO, WORLD"  # the 12-byte payload of Netty's examples

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def feed_all(framer: Framer, chunks: Iterable[bytes]) -> list[bytes]:
    """Feed every chunk, returning all frames; errors propagate."""
    frames: list[bytes] = []
    for chunk in chunks:
        frames += framer.feed(chunk)
    return frames


def pieces(data: bytes, size: int = 1) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def u16(n: int) -> bytes:
    return struct.pack(">H", n)


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


# --------------------------------------------------------------------------
# The Framer protocol


@pytest.mark.parametrize(
    "framer", [LengthPrefixed(), Delimited(), Netstring()], ids=lambda f: repr(f)
)
def test_every_framer_satisfies_the_framer_protocol(framer: Framer) -> None:
    assert isinstance(framer, Framer)
    assert framer.buffered == 0
    assert framer.max_frame > 0


@pytest.mark.parametrize(
    "framer", [LengthPrefixed(), Delimited(), Netstring()], ids=lambda f: repr(f)
)
def test_frames_are_bytes_even_when_fed_bytearray_or_memoryview(
    framer: Framer,
) -> None:
    wire = framer.encode(b"one") + framer.encode(b"two")
    frames = framer.feed(bytearray(wire[:5])) + framer.feed(memoryview(wire[5:]))
    assert frames == [b"one", b"two"]
    assert all(type(frame) is bytes for frame in frames)


@pytest.mark.parametrize(
    "framer", [LengthPrefixed(), Delimited(), Netstring()], ids=lambda f: repr(f)
)
def test_feeding_nothing_yields_nothing(framer: Framer) -> None:
    assert framer.feed(b"") == []
    assert framer.buffered == 0


# --------------------------------------------------------------------------
# LengthPrefixed: the everyday layout


def test_length_prefixed_default_is_u32_big_endian_length_of_payload() -> None:
    assert LengthPrefixed().feed(u32(len(HELLO)) + HELLO) == [HELLO]


def test_length_prefixed_single_frame_in_many_packets_completes_once() -> None:
    framer = LengthPrefixed()
    wire = u32(len(HELLO)) + HELLO
    results = [framer.feed(piece) for piece in pieces(wire, 3)]
    assert results[:-1] == [[]] * (len(results) - 1)
    assert results[-1] == [HELLO]
    assert framer.buffered == 0


def test_length_prefixed_many_frames_in_one_packet_decode_in_order() -> None:
    payloads = [b"%d" % i * (i % 7) for i in range(100)]
    wire = b"".join(u32(len(p)) + p for p in payloads)
    assert LengthPrefixed().feed(wire) == payloads


def test_length_prefixed_ten_thousand_tiny_frames_in_one_feed() -> None:
    wire = (u32(1) + b"x") * 10_000
    framer = LengthPrefixed()
    assert framer.feed(wire) == [b"x"] * 10_000
    assert framer.buffered == 0


def test_length_prefixed_incomplete_header_is_buffered_until_complete() -> None:
    framer = LengthPrefixed()
    assert framer.feed(b"\x00\x00") == []
    assert framer.buffered == 2
    assert framer.feed(b"\x00\x02ab") == [b"ab"]
    assert framer.buffered == 0


def test_length_prefixed_incomplete_payload_is_buffered_until_complete() -> None:
    framer = LengthPrefixed()
    assert framer.feed(u32(5) + b"he") == []
    assert framer.buffered == 6
    assert framer.feed(b"ll") == []
    assert framer.feed(b"o" + u32(1)) == [b"hello"]
    assert framer.buffered == 4
    assert framer.feed(b"!") == [b"!"]


def test_length_prefixed_partial_frame_then_whole_frames_in_next_chunk() -> None:
    framer = LengthPrefixed(length_size=2)
    wire = b"".join(u16(len(p)) + p for p in [b"abc", b"de", b"f"])
    assert framer.feed(wire[:4]) == []
    assert framer.feed(wire[4:]) == [b"abc", b"de", b"f"]


def test_length_prefixed_zero_length_frame_is_an_empty_payload() -> None:
    assert LengthPrefixed().feed(u32(0) + u32(0)) == [b"", b""]


def test_length_prefixed_little_endian_length() -> None:
    framer = LengthPrefixed(length_size=2, byteorder="little")
    assert framer.feed(b"\x03\x00abc") == [b"abc"]
    assert framer.encode(b"abc") == b"\x03\x00abc"


def test_length_prefixed_three_byte_length() -> None:
    framer = LengthPrefixed(length_size=3)
    assert framer.feed(b"\x00\x01\x00" + b"z" * 256) == [b"z" * 256]
    assert LengthPrefixed(length_size=3, byteorder="little").encode(b"ab") == (
        b"\x02\x00\x00ab"
    )


def test_length_prefixed_eight_byte_length() -> None:
    framer = LengthPrefixed(length_size=8)
    assert framer.feed(struct.pack(">Q", 2) + b"hi") == [b"hi"]


# --------------------------------------------------------------------------
# LengthPrefixed: the layouts of Netty's LengthFieldBasedFrameDecoder docs


NETTY_EXAMPLES = [
    pytest.param(
        dict(length_size=2, strip=0),
        u16(12) + HELLO,
        u16(12) + HELLO,
        id="length-at-0-header-kept",
    ),
    pytest.param(
        dict(length_size=2, strip=2),
        u16(12) + HELLO,
        HELLO,
        id="length-at-0-header-stripped",
    ),
    pytest.param(
        dict(length_size=2, adjustment=-2, strip=0),
        u16(14) + HELLO,
        u16(14) + HELLO,
        id="length-includes-header",
    ),
    pytest.param(
        dict(length_size=3, offset=2, strip=0),
        b"\xca\xfe" + b"\x00\x00\x0c" + HELLO,
        b"\xca\xfe" + b"\x00\x00\x0c" + HELLO,
        id="length-after-fixed-header",
    ),
    pytest.param(
        dict(length_size=3, adjustment=2, strip=0),
        b"\x00\x00\x0c" + b"\xca\xfe" + HELLO,
        b"\x00\x00\x0c" + b"\xca\xfe" + HELLO,
        id="extra-header-after-length",
    ),
    pytest.param(
        dict(length_size=2, offset=1, adjustment=1, strip=3),
        b"\xca" + u16(12) + b"\xfe" + HELLO,
        b"\xfe" + HELLO,
        id="length-mid-header-strip-partial",
    ),
    pytest.param(
        dict(length_size=2, offset=1, adjustment=-3, strip=3),
        b"\xca" + u16(16) + b"\xfe" + HELLO,
        b"\xfe" + HELLO,
        id="length-mid-header-counts-whole-frame",
    ),
]


@pytest.mark.parametrize(("layout", "wire", "frame"), NETTY_EXAMPLES)
def test_length_prefixed_netty_documented_layouts_decode_as_documented(
    layout: dict[str, int], wire: bytes, frame: bytes
) -> None:
    assert LengthPrefixed(**layout).feed(wire) == [frame]  # type: ignore[arg-type]


@pytest.mark.parametrize(("layout", "wire", "frame"), NETTY_EXAMPLES)
def test_length_prefixed_netty_layouts_decode_byte_by_byte(
    layout: dict[str, int], wire: bytes, frame: bytes
) -> None:
    framer = LengthPrefixed(**layout)  # type: ignore[arg-type]
    assert feed_all(framer, pieces(wire * 3)) == [frame] * 3


# --------------------------------------------------------------------------
# LengthPrefixed: limits and errors


def test_length_prefixed_frame_of_exactly_max_frame_is_accepted() -> None:
    # max_frame counts the whole frame, header included, as Netty does.
    framer = LengthPrefixed(max_frame=4 + 10)
    assert framer.feed(u32(10) + b"x" * 10) == [b"x" * 10]


def test_length_prefixed_frame_one_over_max_frame_is_rejected() -> None:
    framer = LengthPrefixed(max_frame=4 + 10)
    with pytest.raises(FrameTooLarge) as info:
        framer.feed(u32(11) + b"x" * 11)
    assert (info.value.length, info.value.limit) == (15, 14)


def test_length_prefixed_oversized_header_raises_before_buffering() -> None:
    framer = LengthPrefixed(max_frame=1024)
    with pytest.raises(FrameTooLarge) as info:
        framer.feed(u32(1 << 30))
    assert info.value.length == 4 + (1 << 30)
    assert framer.buffered == 0
    # The announced bytes are counted while discarded, never stored.
    framer.feed(b"\x00" * 100_000)
    assert framer.buffered == 0


def test_length_prefixed_oversized_header_split_across_feeds_raises_at_once() -> None:
    framer = LengthPrefixed(max_frame=1024)
    assert framer.feed(b"\x7f\xff") == []
    with pytest.raises(FrameTooLarge):
        framer.feed(b"\xff\xff")
    assert framer.buffered == 0


def test_length_prefixed_error_carries_frames_decoded_earlier_in_the_feed() -> None:
    framer = LengthPrefixed(max_frame=16)
    with pytest.raises(FrameTooLarge) as info:
        framer.feed(u32(1) + b"a" + u32(2) + b"bc" + u32(100))
    assert info.value.frames == [b"a", b"bc"]


def test_length_prefixed_decoding_resumes_after_discarding_oversized_frame() -> None:
    framer = LengthPrefixed(max_frame=16)
    with pytest.raises(FrameTooLarge):
        framer.feed(u32(1) + b"a" + u32(30) + b"y" * 10)
    # 20 bytes of the oversized frame are still to come, then a good frame.
    assert framer.feed(b"y" * 15) == []
    assert framer.feed(b"y" * 5 + u32(2) + b"ok") == [b"ok"]


def test_length_prefixed_frames_after_oversized_frame_in_chunk_decode_next() -> None:
    framer = LengthPrefixed(max_frame=16)
    with pytest.raises(FrameTooLarge):
        framer.feed(u32(20) + b"y" * 20 + u32(2) + b"ok" + u32(1))
    assert framer.buffered == 6 + 4  # held, not yet decoded
    assert framer.feed(b"!") == [b"ok", b"!"]


def test_length_prefixed_oversized_frame_discard_spans_many_feeds() -> None:
    framer = LengthPrefixed(length_size=2, max_frame=100)
    with pytest.raises(FrameTooLarge):
        framer.feed(u16(5000))
    assert feed_all(framer, pieces(b"z" * 5000, 7)) == []
    assert framer.feed(u16(3) + b"end") == [b"end"]


def test_length_prefixed_adjusted_length_shorter_than_header_is_corrupt() -> None:
    # The value claims to count the 4-byte header but is only 2.
    framer = LengthPrefixed(adjustment=-4, strip=0)
    with pytest.raises(CorruptFrame):
        framer.feed(u32(2) + b"xx")


def test_length_prefixed_corrupt_length_skips_only_the_header_like_netty() -> None:
    framer = LengthPrefixed(length_size=2, adjustment=-2)
    with pytest.raises(CorruptFrame):
        framer.feed(u16(1) + u16(3) + b"a")
    assert framer.feed(b"") == [b"a"]


def test_length_prefixed_frame_shorter_than_strip_is_corrupt_and_skipped() -> None:
    # Strip 2 header bytes plus a 1-byte type field: a frame needs 3 bytes.
    framer = LengthPrefixed(length_size=2, strip=3)
    with pytest.raises(CorruptFrame):
        framer.feed(u16(0) + u16(2) + b"Tx")
    assert framer.feed(b"") == [b"x"]


def test_length_prefixed_eight_byte_length_with_high_bit_is_too_large() -> None:
    framer = LengthPrefixed(length_size=8)
    with pytest.raises(FrameTooLarge):
        framer.feed(b"\xff" * 8)


def test_length_prefixed_exposes_its_layout() -> None:
    framer = LengthPrefixed(
        length_size=2, byteorder="little", offset=1, adjustment=-3, strip=3
    )
    assert (framer.length_size, framer.byteorder, framer.offset) == (2, "little", 1)
    assert (framer.adjustment, framer.strip, framer.header_size) == (-3, 3, 3)
    assert LengthPrefixed(offset=2).strip == 6  # None strips the whole header


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(length_size=5),
        dict(byteorder="middle"),
        dict(offset=-1),
        dict(strip=-1),
        dict(max_frame=0),
        dict(length_size=4, offset=10, max_frame=12),
    ],
)
def test_length_prefixed_rejects_impossible_layouts(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LengthPrefixed(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# LengthPrefixed: encoding


def test_length_prefixed_encode_writes_length_then_payload() -> None:
    assert LengthPrefixed().encode(b"abc") == u32(3) + b"abc"


def test_length_prefixed_encode_with_length_including_header() -> None:
    framer = LengthPrefixed(length_size=2, adjustment=-2)
    wire = framer.encode(HELLO)
    assert wire == u16(14) + HELLO
    assert framer.feed(wire) == [HELLO]


def test_length_prefixed_encode_header_builds_length_for_unstripped_layout() -> None:
    framer = LengthPrefixed(length_size=2, adjustment=-2, strip=0)
    assert framer.encode_header(len(HELLO)) == u16(14)
    assert framer.feed(framer.encode_header(len(HELLO)) + HELLO) == [u16(14) + HELLO]


def test_length_prefixed_encode_with_bytes_before_the_length() -> None:
    # 2 bytes before the length field, stripped with it: they go out as zeros.
    framer = LengthPrefixed(offset=2)
    wire = framer.encode(b"abcdefgh")
    assert wire == b"\0\0" + u32(8) + b"abcdefgh"
    assert LengthPrefixed(offset=2).feed(wire) == [b"abcdefgh"]


def test_length_prefixed_encode_unstripped_fills_in_the_length_field() -> None:
    # strip=0: the payload is the whole frame; whatever the codec left in
    # the length field is overwritten (memcached's total-body-length).
    framer = LengthPrefixed(length_size=4, offset=8, adjustment=12, strip=0)
    payload = bytes(8) + b"????" + bytes(12) + b"body"
    wire = framer.encode(payload)
    assert wire == bytes(8) + u32(4) + bytes(12) + b"body"
    assert framer.feed(wire) == [wire]


def test_length_prefixed_encode_strip_into_the_body_sends_zeros() -> None:
    # The peer strips the length and a 4-byte type it ignores.
    framer = LengthPrefixed(length_size=2, strip=6)
    wire = framer.encode(b"abc")
    assert wire == u16(7) + bytes(4) + b"abc"
    assert LengthPrefixed(length_size=2, strip=6).feed(wire) == [b"abc"]


def test_length_prefixed_encode_refuses_payload_shorter_than_the_kept_header() -> None:
    # strip=2 of a 4-byte length field: the payload must start with the
    # field's last 2 bytes.
    with pytest.raises(ValueError, match="too short"):
        LengthPrefixed(strip=2).encode(b"a")


def test_length_prefixed_encode_header_refuses_bytes_before_the_length() -> None:
    # encode_header returns the field alone: it cannot place bytes before it.
    with pytest.raises(ValueError, match="codec"):
        LengthPrefixed(offset=2).encode_header(3)


def test_length_prefixed_encode_header_refuses_frame_shorter_than_strip() -> None:
    # The peer strips 2 length bytes and a 4-byte type: 3 bytes are too few.
    with pytest.raises(ValueError, match="strips"):
        LengthPrefixed(length_size=2, strip=6).encode_header(3)


def test_length_prefixed_encode_refuses_length_that_does_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        LengthPrefixed(length_size=1).encode(b"x" * 256)


def test_length_prefixed_encode_refuses_frame_over_max_frame() -> None:
    framer = LengthPrefixed(max_frame=4 + 8)
    assert framer.encode(b"x" * 8) == u32(8) + b"x" * 8
    with pytest.raises(FrameTooLarge):
        framer.encode(b"x" * 9)


# --------------------------------------------------------------------------
# Delimited


def test_delimited_splits_lines_on_crlf() -> None:
    assert Delimited().feed(b"one\r\ntwo\r\n") == [b"one", b"two"]


def test_delimited_consecutive_delimiters_are_empty_frames() -> None:
    assert Delimited().feed(b"\r\n\r\na\r\n") == [b"", b"", b"a"]


def test_delimited_single_frame_in_many_packets_completes_once() -> None:
    framer = Delimited()
    results = [framer.feed(piece) for piece in pieces(b"hello world\r\n", 2)]
    assert results[:-1] == [[]] * (len(results) - 1)
    assert results[-1] == [b"hello world"]


def test_delimited_incomplete_frame_is_buffered() -> None:
    framer = Delimited()
    assert framer.feed(b"a\r\npart") == [b"a"]
    assert framer.buffered == 4
    assert framer.feed(b"ial\r\n") == [b"partial"]
    assert framer.buffered == 0


def test_delimited_delimiter_split_across_two_feeds() -> None:
    framer = Delimited()
    assert framer.feed(b"abc\r") == []
    assert framer.feed(b"\ndef\r\n") == [b"abc", b"def"]


@pytest.mark.parametrize("cut", range(1, len(b"abc<END>def<END>")))
def test_delimited_multibyte_delimiter_split_at_any_point(cut: int) -> None:
    framer = Delimited(b"<END>")
    wire = b"abc<END>def<END>"
    assert feed_all(framer, [wire[:cut], wire[cut:]]) == [b"abc", b"def"]


def test_delimited_multibyte_delimiter_fed_byte_by_byte() -> None:
    framer = Delimited(b"<END>")
    assert feed_all(framer, pieces(b"abc<END>de<EN<END>")) == [b"abc", b"de<EN"]


def test_delimited_self_overlapping_delimiter_cuts_at_first_occurrence() -> None:
    wire = b"xababa"
    assert Delimited(b"aba").feed(wire) == [b"x"]
    assert feed_all(Delimited(b"aba"), pieces(wire)) == [b"x"]


def test_delimited_strip_false_keeps_the_delimiter() -> None:
    framer = Delimited(b"\n", strip=False)
    assert framer.feed(b"a\nb") == [b"a\n"]
    assert framer.feed(b"c\n") == [b"bc\n"]


def test_delimited_strip_false_keeps_a_delimiter_split_across_feeds() -> None:
    framer = Delimited(b"\r\n", strip=False)
    assert feed_all(framer, [b"ab\r", b"\n"]) == [b"ab\r\n"]


def test_delimited_frame_of_exactly_max_frame_is_accepted() -> None:
    framer = Delimited(max_frame=10)
    assert framer.feed(b"x" * 10 + b"\r\n") == [b"x" * 10]


def test_delimited_max_frame_bytes_then_split_delimiter_is_accepted() -> None:
    # With 10 bytes and a "\r" buffered the frame may still be exactly 10.
    framer = Delimited(max_frame=10)
    assert framer.feed(b"x" * 10 + b"\r") == []
    assert framer.feed(b"\n") == [b"x" * 10]


def test_delimited_complete_frame_over_max_frame_is_rejected_and_skipped() -> None:
    framer = Delimited(max_frame=10)
    with pytest.raises(FrameTooLarge) as info:
        framer.feed(b"ok\r\n" + b"x" * 11 + b"\r\nnext\r\n")
    assert info.value.frames == [b"ok"]
    assert info.value.length == 11
    assert framer.feed(b"") == [b"next"]


def test_delimited_frame_completed_over_max_frame_across_feeds_is_skipped() -> None:
    framer = Delimited(max_frame=10)
    assert framer.feed(b"x" * 10) == []
    with pytest.raises(FrameTooLarge) as info:
        framer.feed(b"y\r\nnext\r\n")
    assert info.value.length == 11
    assert framer.feed(b"") == [b"next"]


def test_delimited_unterminated_frame_over_max_frame_raises_once_known() -> None:
    framer = Delimited(max_frame=10)
    # 11 bytes could still be 10 bytes plus the "\r" of a delimiter.
    assert framer.feed(b"x" * 11) == []
    with pytest.raises(FrameTooLarge):
        framer.feed(b"x")
    assert framer.buffered <= 1


def test_delimited_unterminated_frame_in_one_chunk_is_not_buffered() -> None:
    framer = Delimited(max_frame=10)
    with pytest.raises(FrameTooLarge):
        framer.feed(b"x" * 100_000)
    assert framer.buffered <= 1


def test_delimited_discards_until_next_delimiter_then_resumes() -> None:
    framer = Delimited(b"<END>", max_frame=4)
    with pytest.raises(FrameTooLarge):
        framer.feed(b"toolongframe")
    assert feed_all(framer, [b"more junk<E", b"ND>fine<END>"]) == [b"fine"]


def test_delimited_discard_finds_delimiter_split_across_feeds() -> None:
    framer = Delimited(max_frame=4)
    with pytest.raises(FrameTooLarge):
        framer.feed(b"abcdefgh\r")
    assert framer.feed(b"\nok\r\n") == [b"ok"]


def test_delimited_growing_partial_frame_raises_in_the_feed_that_crosses() -> None:
    framer = Delimited(max_frame=10)
    assert feed_all(framer, pieces(b"x" * 11)) == []
    with pytest.raises(FrameTooLarge) as info:
        framer.feed(b"yy")
    assert info.value.length == 13


def test_delimited_encode_appends_the_delimiter() -> None:
    assert Delimited(b"\n").encode(b"hi") == b"hi\n"


def test_delimited_encode_refuses_payload_containing_the_delimiter() -> None:
    with pytest.raises(ValueError, match="delimiter"):
        Delimited().encode(b"a\r\nb")


def test_delimited_encode_refuses_payload_that_runs_into_the_delimiter() -> None:
    # b"xab" + b"aba" = b"xababa": the peer would cut after b"x".
    with pytest.raises(ValueError, match="delimiter"):
        Delimited(b"aba").encode(b"xab")


def test_delimited_encode_refuses_payload_over_max_frame() -> None:
    with pytest.raises(FrameTooLarge):
        Delimited(max_frame=3).encode(b"abcd")


def test_delimited_exposes_its_configuration() -> None:
    framer = Delimited(b"\n", strip=False)
    assert (framer.delimiter, framer.strip) == (b"\n", False)


def test_delimited_rejects_empty_delimiter() -> None:
    with pytest.raises(ValueError):
        Delimited(b"")


# --------------------------------------------------------------------------
# Netstring


def test_netstring_decodes_length_colon_payload_comma() -> None:
    assert Netstring().feed(b"5:hello,") == [b"hello"]


def test_netstring_zero_length_is_the_empty_string() -> None:
    assert Netstring().feed(b"0:,0:,") == [b"", b""]


def test_netstring_many_in_one_packet_decode_in_order() -> None:
    wire = b"".join(b"%d:%s," % (len(p), p) for p in [b"a", b"bb", b"", b"ccc"])
    assert Netstring().feed(wire) == [b"a", b"bb", b"", b"ccc"]


def test_netstring_single_netstring_in_many_packets_completes_once() -> None:
    framer = Netstring()
    results = [framer.feed(piece) for piece in pieces(b"12:hello world!,", 3)]
    assert results[:-1] == [[]] * (len(results) - 1)
    assert results[-1] == [b"hello world!"]


def test_netstring_incomplete_length_and_payload_are_buffered() -> None:
    framer = Netstring()
    assert framer.feed(b"1") == []
    assert framer.feed(b"1:hello") == []
    assert framer.feed(b" world") == []
    assert framer.feed(b",") == [b"hello world"]
    assert framer.buffered == 0


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"5x:hello,", id="non-digit-in-length"),
        pytest.param(b"-5:hello,", id="sign-in-length"),
        pytest.param(b" 5:hello,", id="space-in-length"),
        pytest.param(b"05:hello,", id="leading-zero"),
        pytest.param(b"00:,", id="zero-with-leading-zero"),
        pytest.param(b":hello,", id="empty-length"),
        pytest.param(b"5hello,", id="missing-colon"),
        pytest.param(b"5:hello;", id="missing-comma"),
        pytest.param(b"3:hello,", id="length-too-short"),
    ],
)
def test_netstring_malformed_input_is_corrupt(wire: bytes) -> None:
    with pytest.raises(CorruptFrame):
        Netstring().feed(wire)


@pytest.mark.parametrize(
    "wire",
    [b"5x", b"05", b"x", b"5:hello;"],
    ids=["non-digit", "leading-zero", "garbage", "missing-comma"],
)
def test_netstring_malformed_input_is_corrupt_byte_by_byte(wire: bytes) -> None:
    with pytest.raises(CorruptFrame):
        feed_all(Netstring(), pieces(wire))


def test_netstring_malformed_length_split_before_the_colon_is_corrupt() -> None:
    framer = Netstring()
    assert framer.feed(b"1") == []
    with pytest.raises(CorruptFrame):
        framer.feed(b"x:")


def test_netstring_length_over_max_frame_split_before_the_colon_is_rejected() -> None:
    framer = Netstring(max_frame=50)
    assert framer.feed(b"5") == []
    with pytest.raises(FrameTooLarge) as info:
        framer.feed(b"1:")
    assert info.value.length == 51


def test_netstring_length_over_max_frame_raises_before_buffering_payload() -> None:
    framer = Netstring(max_frame=100)
    with pytest.raises(FrameTooLarge) as info:
        framer.feed(b"101:" + b"x" * 50)
    assert (info.value.length, info.value.limit) == (101, 100)
    assert framer.buffered == 0


def test_netstring_length_of_exactly_max_frame_is_accepted() -> None:
    assert Netstring(max_frame=100).feed(b"100:" + b"x" * 100 + b",") == [b"x" * 100]


def test_netstring_length_with_too_many_digits_raises_before_the_colon() -> None:
    framer = Netstring(max_frame=100)
    assert framer.feed(b"99") == []
    with pytest.raises(FrameTooLarge):
        framer.feed(b"99")
    assert framer.buffered == 0


def test_netstring_endless_digits_are_never_buffered() -> None:
    framer = Netstring()
    with pytest.raises(FrameTooLarge):
        framer.feed(b"9" * 100_000)
    assert framer.buffered == 0


def test_netstring_error_carries_frames_decoded_earlier_in_the_feed() -> None:
    with pytest.raises(CorruptFrame) as info:
        Netstring().feed(b"1:a,2:bc,x")
    assert info.value.frames == [b"a", b"bc"]


def test_netstring_corrupt_stream_stays_poisoned() -> None:
    framer = Netstring()
    with pytest.raises(CorruptFrame):
        framer.feed(b"1:a;")
    for later in [b"1:a,", b""]:
        with pytest.raises(CorruptFrame) as info:
            framer.feed(later)
        assert info.value.frames == []


def test_netstring_oversized_stream_stays_poisoned() -> None:
    framer = Netstring(max_frame=10)
    with pytest.raises(FrameTooLarge):
        framer.feed(b"11:")
    with pytest.raises(FrameTooLarge) as info:
        framer.feed(b"1:a,")
    assert (info.value.length, info.value.limit) == (11, 10)


def test_netstring_encode_round_trips() -> None:
    framer = Netstring()
    assert framer.encode(b"hello") == b"5:hello,"
    assert framer.feed(framer.encode(b"") + framer.encode(b"x,:")) == [b"", b"x,:"]


def test_netstring_encode_refuses_payload_over_max_frame() -> None:
    with pytest.raises(FrameTooLarge):
        Netstring(max_frame=3).encode(b"abcd")


# --------------------------------------------------------------------------
# Linear decoding: a large frame in tiny pieces


MiB = 1024 * 1024


@pytest.mark.parametrize(
    "framer",
    [LengthPrefixed(), Delimited(max_frame=2 * MiB), Netstring()],
    ids=lambda f: type(f).__name__,
)
def test_one_mib_frame_in_one_byte_pieces_completes_holding_only_what_arrived(
    framer: Framer,
) -> None:
    payload = bytes(range(256)).replace(b"\r", b"") * (MiB // 255)
    payload = payload[:MiB]
    wire = framer.encode(payload)
    view = memoryview(wire)
    feed = framer.feed
    # A quadratic framer would copy ~5 * 10**11 bytes here and never finish;
    # holding no more than what arrived shows nothing is duplicated.
    for i in range(len(wire) - 1):
        assert feed(view[i : i + 1].tobytes()) == []
        assert framer.buffered <= i + 1
    assert feed(wire[-1:]) == [payload]
    assert framer.buffered == 0


# --------------------------------------------------------------------------
# Properties: any split of any stream decodes the same


def netty_wire(
    offset: int, length_size: int, adjustment: int, order: str, body: bytes
) -> bytes:
    """A frame of a Netty layout: filler, length field, then body."""
    value = len(body) - adjustment
    return (
        b"\xa5" * offset
        + value.to_bytes(length_size, order)  # type: ignore[arg-type]
        + body
    )


ENCODABLE_LAYOUTS = [
    dict(),
    dict(byteorder="little"),
    dict(length_size=1),
    dict(length_size=2, byteorder="little"),
    dict(length_size=3),
    dict(length_size=8, byteorder="little"),
    dict(length_size=2, adjustment=-2),
    dict(length_size=4, adjustment=3),
]

# (layout, smallest body) for layouts whose header the codec builds.
HAND_BUILT_LAYOUTS = [
    (dict(length_size=2, strip=0), 0),
    (dict(length_size=3, offset=2, strip=0), 0),
    (dict(length_size=2, offset=1, adjustment=1, strip=3), 1),
    (dict(length_size=2, offset=1, adjustment=-3, strip=3), 0),
    (dict(length_size=1, offset=3, adjustment=-4, strip=1, byteorder="little"), 0),
]

payload_lists = st.lists(st.binary(max_size=200), max_size=12)
cut_points = st.lists(st.integers(min_value=0), max_size=20)


@PROPERTY
@given(
    layout=st.sampled_from(ENCODABLE_LAYOUTS),
    payloads=payload_lists,
    cuts=cut_points,
)
def test_length_prefixed_any_split_of_encoded_payloads_decodes_to_them(
    layout: dict[str, object], payloads: list[bytes], cuts: list[int]
) -> None:
    encoder = LengthPrefixed(**layout)  # type: ignore[arg-type]
    # A positive adjustment means every payload is at least that long.
    payloads = [b"\x00" * max(0, encoder.adjustment) + p for p in payloads]
    wire = b"".join(encoder.encode(p) for p in payloads)
    framer = LengthPrefixed(**layout)  # type: ignore[arg-type]
    assert feed_all(framer, split_at(wire, cuts)) == payloads
    assert framer.buffered == 0


@PROPERTY
@given(
    case=st.sampled_from(HAND_BUILT_LAYOUTS),
    bodies=payload_lists,
    cuts=cut_points,
)
def test_length_prefixed_any_split_of_netty_layout_frames_decodes_them(
    case: tuple[dict[str, object], int], bodies: list[bytes], cuts: list[int]
) -> None:
    layout, min_body = case
    framer = LengthPrefixed(**layout)  # type: ignore[arg-type]
    bodies = [b"\x01" * min_body + b for b in bodies]
    frames = [
        netty_wire(
            framer.offset,
            framer.length_size,
            framer.adjustment,
            framer.byteorder,
            body,
        )
        for body in bodies
    ]
    expected = [frame[framer.strip :] for frame in frames]
    assert feed_all(framer, split_at(b"".join(frames), cuts)) == expected


@PROPERTY
@given(
    delimiter=st.sampled_from([b"\r\n", b"\n", b"\x00", b"<END>", b"aba"]),
    strip=st.booleans(),
    payloads=st.lists(
        st.binary(max_size=60) | st.lists(st.sampled_from(b"ab\r\n<END>")).map(bytes),
        max_size=12,
    ),
    cuts=cut_points,
)
def test_delimited_any_split_of_encoded_payloads_decodes_to_them(
    delimiter: bytes, strip: bool, payloads: list[bytes], cuts: list[int]
) -> None:
    framer = Delimited(delimiter, strip=strip)
    encodable = []
    for payload in payloads:
        try:
            framer.encode(payload)
        except ValueError:
            continue
        encodable.append(payload)
    wire = b"".join(framer.encode(p) for p in encodable)
    expected = encodable if strip else [p + delimiter for p in encodable]
    assert feed_all(framer, split_at(wire, cuts)) == expected
    assert framer.buffered == 0


@PROPERTY
@given(payloads=payload_lists, cuts=cut_points)
def test_netstring_any_split_of_encoded_payloads_decodes_to_them(
    payloads: list[bytes], cuts: list[int]
) -> None:
    framer = Netstring()
    wire = b"".join(framer.encode(p) for p in payloads)
    assert feed_all(framer, split_at(wire, cuts)) == payloads
    assert framer.buffered == 0


# --------------------------------------------------------------------------
# Fuzzing: arbitrary bytes, arbitrary splits


FUZZ_FRAMERS: list[tuple[Callable[[], Framer], int]] = [
    # (factory, most bytes a framer may hold between feeds that succeed)
    (lambda: LengthPrefixed(length_size=1, max_frame=20), 20),
    (
        lambda: LengthPrefixed(
            length_size=2, offset=1, adjustment=-3, strip=3, max_frame=40
        ),
        40,
    ),
    (lambda: LengthPrefixed(length_size=8, byteorder="little", max_frame=30), 30),
    (lambda: LengthPrefixed(length_size=2, strip=5, max_frame=30), 30),
    (lambda: Delimited(b"\r\n", max_frame=10), 10 + 1),
    (lambda: Delimited(b"aba", max_frame=5, strip=False), 5 + 2),
    (lambda: Netstring(max_frame=50), 50 + 1),
]
fuzz_bytes = st.binary(max_size=300) | st.lists(
    st.sampled_from(b"\x00\x01\x02\x05\x0a\x14\xff0123456789:,ab\r\n")
).map(bytes)


def run(framer: Framer, chunks: list[bytes], bound: int) -> list[object]:
    """
    Feed ``chunks`` and record every frame and error in order, checking the
    memory bound after each feed.  After an error the next feed carries on
    (bytes held after a rejected frame are decoded then); at the end,
    ``feed(b"")`` drains whatever is still held.
    """
    out: list[object] = []

    def feed(chunk: bytes) -> bool:
        """Feed one chunk; return whether it raised."""
        held = framer.buffered
        try:
            frames = framer.feed(chunk)
        except ProtocolError as e:
            out.extend(e.frames)
            out.append(type(e))
            assert all(len(f) <= framer.max_frame + 3 for f in e.frames)
            # Only bytes that already arrived may be held after an error.
            assert framer.buffered <= held + len(chunk)
            return True
        out.extend(frames)
        assert all(len(f) <= framer.max_frame + 3 for f in frames)
        assert framer.buffered <= bound
        return False

    for chunk in chunks:
        if feed(chunk) and isinstance(framer, Netstring):
            return out  # poisoned: nothing more to learn
    # Each error consumes at least one held byte, so draining terminates.
    while feed(b"") and not isinstance(framer, Netstring):
        pass
    assert framer.buffered <= bound
    return out


@settings(PROPERTY, max_examples=400)
@given(
    case=st.sampled_from(FUZZ_FRAMERS),
    data=fuzz_bytes,
    cuts=cut_points,
)
def test_arbitrary_bytes_raise_only_protocol_errors_within_bounded_memory(
    case: tuple[Callable[[], Framer], int], data: bytes, cuts: list[int]
) -> None:
    make, bound = case
    run(make(), split_at(data, cuts), bound)


@settings(PROPERTY, max_examples=400)
@given(
    case=st.sampled_from(FUZZ_FRAMERS),
    data=fuzz_bytes,
    cuts=cut_points,
)
def test_arbitrary_bytes_decode_the_same_however_they_are_split(
    case: tuple[Callable[[], Framer], int], data: bytes, cuts: list[int]
) -> None:
    make, bound = case
    assert run(make(), split_at(data, cuts), bound) == run(make(), [data], bound)


@st.composite
def any_layout(draw: st.DrawFn) -> dict[str, Any]:
    length_size = draw(st.sampled_from([1, 2, 3, 4, 8]))
    offset = draw(st.integers(0, 6))
    header_end = offset + length_size
    return dict(
        length_size=length_size,
        byteorder=draw(st.sampled_from(["big", "little"])),
        offset=offset,
        adjustment=draw(st.integers(-header_end - 4, 8)),
        strip=draw(st.integers(0, header_end + 4)),
    )


@PROPERTY
@given(layout=any_layout(), payload=st.binary(max_size=300))
def test_length_prefixed_encodes_every_layout_it_decodes(
    layout: dict[str, Any], payload: bytes
) -> None:
    # The frame is the stripped bytes (zeros) + payload with the length
    # written at offset; the peer's framer decodes it back to the payload
    # (with the length field filled in where the payload holds it).
    encoder = LengthPrefixed(**layout)
    strip, offset = layout["strip"], layout["offset"]
    header_end = offset + layout["length_size"]
    frame = bytearray(strip) + payload
    value = len(frame) - header_end - layout["adjustment"]
    if len(frame) < header_end or not 0 <= value < 1 << (8 * layout["length_size"]):
        with pytest.raises(ValueError):
            encoder.encode(payload)
        return
    frame[offset:header_end] = value.to_bytes(
        layout["length_size"], layout["byteorder"]
    )
    wire = encoder.encode(payload)
    assert wire == bytes(frame)
    decoded = LengthPrefixed(**layout).feed(wire)
    assert decoded == [bytes(frame[strip:])]
    if strip >= header_end:
        assert decoded == [payload]
