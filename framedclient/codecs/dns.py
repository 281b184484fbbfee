"""
DNS over TCP (RFC 1035 section 4.2.2, RFC 7766), declared with
:class:`~framedclient.codecs.header.HeaderCodec`: a 2-byte length, then the
12-byte DNS header, whose 16-bit ID matches replies to queries (so one
connection carries many queries at once, answered in any order)::

    +--------+--------+-------------------------+---------+--------------+
    | length | ID     | QR|Opcode|AA|TC|RD      | RA|Z|   | QD/AN/NS/AR  |
    | u16    | u16    |  byte 2                 | RCODE   | counts, u16  |
    +--------+--------+-------------------------+---------+--------------+

A reply with an RCODE other than 0 fails its request with a
:class:`~framedclient.errors.RemoteError` whose ``code`` is the RCODE
(``NXDOMAIN`` is 3).  Requests are the message after the header (question
section...): bytes, or a :class:`~framedclient.codecs.base.Message` to set
header fields (``rd``, ``qdcount``...); replies are ``Message`` objects.
docs/codec-tutorial.md builds the same codec step by step.
"""

from __future__ import annotations

from framedclient.codecs.header import Field, HeaderCodec
from framedclient.framing import LengthPrefixed

__all__ = ["DNS_FIELDS", "RCODES", "dns_tcp_codec"]

#: The header's fields; ``qr`` must be 1 in a reply, ``rd`` (recursion
#: desired) and ``qdcount`` default to 1.
DNS_FIELDS = (
    Field("id", 0, 2),
    Field("qr", 2, 1, mask=0x80, expect=1),
    Field("opcode", 2, 1, mask=0x78),
    Field("aa", 2, 1, mask=0x04),
    Field("tc", 2, 1, mask=0x02),
    Field("rd", 2, 1, mask=0x01, default=1),
    Field("ra", 3, 1, mask=0x80),
    Field("z", 3, 1, mask=0x70),
    Field("rcode", 3, 1, mask=0x0F),
    Field("qdcount", 4, 2, default=1),
    Field("ancount", 6, 2),
    Field("nscount", 8, 2),
    Field("arcount", 10, 2),
)

#: RFC 1035's response codes by number.
RCODES = {
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
}


def dns_tcp_codec(max_frame: int = 2 + 0xFFFF) -> HeaderCodec:
    """
    DNS over TCP: queries and replies behind a 2-byte length.

    :param max_frame: the largest reply accepted, length field included
        (the most a 2-byte length can announce by default).
    """
    return HeaderCodec(
        lambda: LengthPrefixed(length_size=2, max_frame=max_frame),
        header_size=12,
        fields=DNS_FIELDS,
        id_field="id",
        status_field="rcode",
        errors=RCODES,
    )
