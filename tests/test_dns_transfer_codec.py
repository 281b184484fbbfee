"""
DNSMessageCodec alone (no socket): how each message of a connection is
classified, so that a zone transfer ends exactly at its closing SOA, ends
with a distinct error when the server refuses or breaks it, and ordinary
replies on the same connection are untouched.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.names import dns

from framedclient import FramedClient
from framedclient.clients.dns import DNSClient, ZoneTransfer, check_name, check_type
from framedclient.codecs import ERROR, PART, REPLY, REQUEST
from framedclient.codecs.dns_transfer import DNSMessageCodec, TransferError
from framedclient.codecs.fc1 import FC1Codec
from framedclient.errors import CorruptFrame, ProtocolError, RemoteError
from framedclient.streams import Stream

ZONE = b"example.test"


def soa(serial: int = 7) -> dns.RRHeader:
    return dns.RRHeader(
        ZONE,
        dns.SOA,
        dns.IN,
        3600,
        dns.Record_SOA(b"ns1." + ZONE, b"hostmaster." + ZONE, serial=serial),
    )


def a(i: int) -> dns.RRHeader:
    return dns.RRHeader(
        b"h%d." % i + ZONE, dns.A, dns.IN, 60, dns.Record_A(f"10.0.0.{i}")
    )


def message(
    request_id: int,
    answers: list[dns.RRHeader],
    question: int | None = dns.AXFR,
    rcode: int = 0,
    truncated: bool = False,
) -> bytes:
    m = dns.Message(id=request_id, answer=1, auth=1, rCode=rcode, trunc=truncated)
    if question is not None:
        m.queries = [dns.Query(ZONE, question, dns.IN)]
    m.answers = answers
    data: bytes = m.toStr()
    return data


def wire(*messages: bytes) -> bytes:
    return b"".join(struct.pack(">H", len(m)) + m for m in messages)


def decoded(*messages: bytes, codec: DNSMessageCodec | None = None) -> list[Any]:
    codec = codec or DNSMessageCodec()
    framer = codec.new_framer()
    return [codec.decode(f) for f in framer.feed(wire(*messages))]


def kinds(results: list[Any]) -> list[int]:
    return [kind for kind, _, _ in results]


def test_a_transfer_is_parts_until_the_message_ending_with_the_soa():
    messages = [
        message(9, [soa(), a(1), a(2)]),
        message(9, [a(3), a(4)], question=None),
        message(9, [a(5), soa()], question=None),
    ]
    results = decoded(*messages)
    assert kinds(results) == [PART, PART, REPLY]
    assert [rid for _, rid, _ in results] == [9, 9, 9]
    # The bodies are the messages as sent.
    assert [body for _, _, body in results] == messages


def test_ordinary_replies_on_the_same_connection_are_not_parts():
    results = decoded(
        message(9, [soa(), a(1)]),
        message(10, [a(1)], question=dns.A),
        message(11, [soa()], question=dns.SOA),  # an SOA query: one reply
        message(12, [], question=dns.A, rcode=3),
        message(9, [a(2), soa()], question=None),
    )
    assert kinds(results) == [PART, REPLY, REPLY, ERROR, REPLY]
    error = results[3][2]
    assert type(error) is RemoteError and (error.code, error.message) == (3, "NXDOMAIN")


def test_a_zone_in_one_message_is_one_reply_and_a_lone_first_soa_is_not_the_end():
    assert kinds(decoded(message(1, [soa(), a(1), soa()]))) == [REPLY]
    lone = decoded(
        message(2, [soa()]),
        message(2, [a(1)], question=None),
        message(2, [soa()], question=None),
    )
    assert kinds(lone) == [PART, PART, REPLY]


@pytest.mark.parametrize(
    ("rcode", "name"), [(5, "REFUSED"), (9, "NOTAUTH"), (2, "SERVFAIL")]
)
def test_a_refused_transfer_is_a_transfer_error_with_its_rcode(rcode: int, name: str):
    ((kind, _, error),) = decoded(message(3, [], rcode=rcode))
    assert kind == ERROR
    assert isinstance(error, TransferError) and error.code == rcode
    assert name in str(error)


def test_an_error_mid_transfer_ends_it_and_frees_the_id_for_queries():
    results = decoded(
        message(4, [soa(), a(1)]),
        message(4, [], question=None, rcode=2),
        message(4, [a(1)], question=dns.A),
    )
    assert kinds(results) == [PART, ERROR, REPLY]
    assert results[1][2].code == 2


def test_a_truncated_message_or_a_transfer_without_soa_is_an_error_not_a_short_zone():
    ((kind, _, error),) = decoded(message(5, [soa(), a(1)], truncated=True))
    assert kind == ERROR and error.code is None and "truncated" in str(error)
    results = decoded(message(5, [soa(), a(1)]), message(5, [a(2)], truncated=True))
    assert kinds(results) == [PART, ERROR]
    ((kind, _, error),) = decoded(message(6, [a(1), soa()]))
    assert kind == ERROR and "SOA" in str(error)


def test_an_id_whose_transfer_was_given_up_serves_an_ordinary_query_again():
    # The transfer stopped mid-way (no closing SOA); the ID is reused.
    results = decoded(message(7, [soa(), a(1)]), message(7, [a(1)], question=dns.A))
    assert kinds(results) == [PART, REPLY]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x00" * 5, "shorter than its 12-byte header"),
        (message(1, [a(1)], question=dns.A)[:2] + b"\x00" + b"\x00" * 9, "query"),
        (message(1, [soa(), a(1)])[:-3], "past the end"),
        (
            bytes.fromhex("000181800001000000000000") + b"\x80abc",
            "reserved label",
        ),
    ],
)
def test_a_message_that_cannot_be_walked_is_a_corrupt_frame(data: bytes, why: str):
    with pytest.raises(CorruptFrame, match=why):
        decoded(data)


def test_frames_before_a_corrupt_one_are_kept_tagged():
    framer = DNSMessageCodec().new_framer()
    good = message(1, [a(1)], question=dns.A)
    with pytest.raises(CorruptFrame) as raised:
        framer.feed(wire(good, b"\x00" * 5))
    assert [DNSMessageCodec().decode(f)[0] for f in raised.value.frames] == [REPLY]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_any_split_of_the_bytes_gives_the_same_messages(cuts: list[int]):
    messages = [
        message(9, [soa(), *[a(i) for i in range(5)]]),
        message(10, [a(1)], question=dns.A),
        message(9, [a(7), a(8)], question=None),
        message(9, [a(9), soa()], question=None),
    ]
    data = wire(*messages)
    codec = DNSMessageCodec()
    framer = codec.new_framer()
    got = []
    start = 0
    for cut in cuts:
        got += framer.feed(data[start : start + cut])
        start += cut
    got += framer.feed(data[start:])
    assert [codec.decode(f) for f in got] == decoded(*messages)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_a_protocol_error_or_decode(data: bytes):
    codec = DNSMessageCodec()
    framer = codec.new_framer()
    try:
        for frame in framer.feed(data):
            codec.decode(frame)
    except ProtocolError:
        pass


def test_encode_writes_the_request_id_over_the_message():
    codec = DNSMessageCodec()
    query = message(0, [], question=dns.A)
    frame = codec.encode(REQUEST, 0xBEEF, query)
    assert frame == struct.pack(">HH", len(query), 0xBEEF) + query[2:]


@pytest.mark.parametrize(
    ("body", "error", "says"),
    [
        ("text", TypeError, "whole DNS message as bytes"),
        (b"short", ValueError, "12 to 65535 bytes"),
    ],
)
def test_a_request_that_is_not_a_message_is_refused(body: Any, error: type, says: str):
    with pytest.raises(error, match=says):
        DNSMessageCodec().encode(REQUEST, 1, body)


@pytest.mark.parametrize(
    ("value", "error"), [(True, TypeError), ("1", TypeError), (13, ValueError)]
)
def test_max_frame_is_checked(value: Any, error: type):
    with pytest.raises(error, match="max_frame"):
        DNSMessageCodec(value)


@pytest.mark.parametrize(
    ("name", "error", "says"),
    [
        (5, TypeError, "name must be a domain name as str or bytes"),
        ("", ValueError, "labels of 1 to 63"),
        ("a..b", ValueError, "labels of 1 to 63"),
        ("x" * 64 + ".test", ValueError, "labels of 1 to 63"),
        ("é.test", ValueError, "IDNA"),
    ],
)
def test_bad_names_are_refused_by_name(name: Any, error: type, says: str):
    with pytest.raises(error, match=says):
        check_name(name)


def test_record_types_by_name_or_number():
    assert check_type("aaaa") == dns.AAAA and check_type(15) == 15
    with pytest.raises(ValueError, match="not a DNS record type"):
        check_type("NOPE")
    with pytest.raises(ValueError, match="zone_transfer"):
        check_type("AXFR")
    with pytest.raises(TypeError, match="record type name"):
        check_type(1.0)


def stream_of(clock: Clock, *messages: bytes) -> Stream:
    stream = Stream(clock, None, 1 << 20)
    for m in messages[:-1]:
        stream._on_part(m, 0.0)
    stream._ended(messages[-1])
    return stream


def run(clock: Clock, transfer: ZoneTransfer) -> Any:
    """Every record, or the Failure; the clock turned as the reactor would."""
    d = ensureDeferred(_records(transfer))
    turns = 0
    while not d.called:
        clock.advance(0)
        turns += 1
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    return outcome[0], turns


async def _records(transfer: ZoneTransfer) -> list[dns.RRHeader]:
    return [r async for r in transfer]


def test_the_closing_soa_is_not_yielded_and_a_changed_serial_is_an_error():
    clock = Clock()
    messages = [message(1, [soa(), a(1)]), message(1, [a(2), soa()], question=None)]
    whole = ZoneTransfer(ZONE, stream_of(clock, *messages), clock)
    records, turns = run(clock, whole)
    assert [r.type for r in records] == [dns.SOA, dns.A, dns.A]
    assert whole.messages == 2 and whole.soa is not None
    # Buffered messages are parsed after the reactor had its turn.
    assert turns >= 1
    changed = ZoneTransfer(
        ZONE,
        stream_of(
            clock, message(1, [soa(7), a(1)]), message(1, [soa(8)], question=None)
        ),
        clock,
    )
    failure, _ = run(clock, changed)
    assert failure.check(TransferError)
    assert "changed during the transfer" in str(failure.value)


@pytest.mark.parametrize(
    ("options", "error", "says"),
    [
        ({"transfer_connections": 0}, ValueError, "transfer_connections must be"),
        ({"transfer_connections": True}, ValueError, "transfer_connections must be"),
        ({"pool_sise": 2}, TypeError, "did you mean 'pool_size'"),
        ({"codec": "dns"}, TypeError, "codec must be a DNSMessageCodec"),
    ],
)
def test_dns_client_arguments_are_checked_before_connecting(
    options: dict[str, Any], error: type, says: str
):
    with pytest.raises(error, match=says):
        DNSClient.from_endpoint(reactor, "tcp:127.0.0.1:1", start=False, **options)


def test_a_dns_client_needs_the_dns_message_codec():
    client = FramedClient.from_endpoint(
        reactor, "tcp:127.0.0.1:1", codec=FC1Codec(), start=False
    )
    with pytest.raises(
        TypeError, match="DNSClient needs a client with a DNSMessageCodec"
    ):
        DNSClient(client)
