"""
DNS over TCP with zone transfers (AXFR, RFC 5936) as streams.

One query gets one reply, except a zone transfer: the server answers an
AXFR query with many messages, all with the query's ID, whose answer
sections hold the zone's records from its SOA to the same SOA again.  This
codec says which is which, so a transfer arrives as a stream
(``FramedClient.stream``) on the connection that also carries ordinary
queries:

- the first message of a transfer is recognised by its question (RFC 5936
  says the first message carries it; later ones may not), and must start
  with the zone's SOA;
- every message of that ID after it is a ``PART`` (see
  :class:`~framedclient.codecs.base.Kind`), until the one whose last record
  is an SOA (the closing SOA): a ``REPLY``, which ends the stream;
- a message with an RCODE (REFUSED, NOTAUTH, ... at the start or
  mid-way), the TC bit (a message cut short), or a first message that does
  not start with an SOA ends the stream with a :class:`TransferError`, never
  as a short zone.  A connection lost mid-transfer fails it with
  ``ConnectionLost``.

Knowing where a transfer ends needs the messages of a connection in order,
so the classification is the framer's job (framers are per connection):
:class:`TransferFramer` puts a one-byte tag before each message, which
:meth:`DNSMessageCodec.decode` reads.  Walking a message's records costs
far less than parsing them; messages go up as bytes, and
:mod:`framedclient.clients.dns` parses them with ``twisted.names``.

Requests are whole DNS messages (``twisted.names.dns.Message().toStr()``,
dnspython's ``to_wire()``...); the codec writes the request ID over their
first two bytes.
"""

from __future__ import annotations

import struct

from framedclient.codecs.base import ERROR, PART, REPLY, REQUEST, Matching
from framedclient.errors import CorruptFrame, ProtocolError, RemoteError
from framedclient.framing import LengthPrefixed

__all__ = [
    "AXFR",
    "RCODE_NAMES",
    "SOA",
    "DNSMessageCodec",
    "TransferError",
    "TransferFramer",
]

#: The AXFR query type.
AXFR = 252
#: The SOA record type.
SOA = 6

#: Response codes by number (RFC 1035, RFC 2136).
RCODE_NAMES = {
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    6: "YXDOMAIN",
    7: "YXRRSET",
    8: "NXRRSET",
    9: "NOTAUTH",
    10: "NOTZONE",
}

_HEADER = struct.Struct(">HHHH")
_RR = struct.Struct(">HHIH")
_QR = 0x8000
_TC = 0x0200

# The tags TransferFramer puts before each message.
_ORDINARY = 0  # a reply to an ordinary query: REPLY, or ERROR by its RCODE
_PART = 1  # a message of a transfer, not the last
_LAST = 2  # the message with the closing SOA
_FAILED = 3  # a transfer's message with an RCODE
_TRUNCATED = 4  # a transfer's message with the TC bit
_NO_SOA = 5  # a transfer's first message that does not start with an SOA


class TransferError(RemoteError):
    """
    The server refused or broke off a zone transfer: the stream ends with
    this error, never with a part of the zone as if it were all of it.

    :ivar code: the RCODE (5 REFUSED when the zone's transfer is not
        allowed, 9 NOTAUTH when the server is not authoritative for it), or
        ``None`` for a message cut short (TC bit) or a transfer that does
        not start with the zone's SOA.
    :ivar reply: the DNS message (bytes) that ended it.
    """


def _skip_name(message: bytes, offset: int) -> int:
    """
    The offset after the (possibly compressed) name at ``offset``.
    """
    end = len(message)
    while offset < end:
        length = message[offset]
        if length == 0:
            return offset + 1
        if length >= 0xC0:
            return offset + 2
        if length >= 0x40:
            raise CorruptFrame(f"DNS name with a reserved label type ({length:#x})")
        offset += length + 1
    raise CorruptFrame("DNS name runs past the end of its message")


def _question_type(message: bytes) -> int:
    offset = _skip_name(message, 12)
    if offset + 4 > len(message):
        raise CorruptFrame("DNS question runs past the end of its message")
    qtype: int = (message[offset] << 8) | message[offset + 1]
    return qtype


def _record_types(message: bytes, questions: int, answers: int) -> tuple[int, int]:
    """
    The types of the first and the last answer record (``(0, 0)`` for
    none), walking the records without parsing them.
    """
    offset = 12
    for _ in range(questions):
        offset = _skip_name(message, offset) + 4
    first = last = 0
    end = len(message)
    unpack = _RR.unpack_from
    for _ in range(answers):
        offset = _skip_name(message, offset)
        if offset + 10 > end:
            raise CorruptFrame("DNS record runs past the end of its message")
        last, _class, _ttl, length = unpack(message, offset)
        if not first:
            first = last
        offset += 10 + length
    if offset > end:
        raise CorruptFrame("DNS record data runs past the end of its message")
    return first, last


class TransferFramer:
    """
    Cuts DNS over TCP into messages (a 2-byte length before each) and tags
    each with what it is in the connection's order (see the module's
    docstring): the state of the transfers in progress on one connection,
    by ID.
    """

    def __init__(self, max_frame: int) -> None:
        self._framer = LengthPrefixed(length_size=2, max_frame=max_frame)
        #: the IDs of the transfers in progress on this connection
        self.transfers: set[int] = set()

    @property
    def max_frame(self) -> int:
        return self._framer.max_frame

    @property
    def buffered(self) -> int:
        return self._framer.buffered

    def encode(self, payload: bytes) -> bytes:
        return self._framer.encode(payload)

    def feed(self, data: bytes) -> list[bytes]:
        try:
            frames = self._framer.feed(data)
        except ProtocolError as e:
            e.frames = self._tag_all(e.frames)
            raise
        return self._tag_all(frames)

    def _tag_all(self, frames: list[bytes]) -> list[bytes]:
        tagged: list[bytes] = []
        for frame in frames:
            try:
                tagged.append(bytes((self._tag(frame),)) + frame)
            except CorruptFrame as e:
                e.frames = tagged
                raise
        return tagged

    def _tag(self, message: bytes) -> int:
        if len(message) < 12:
            raise CorruptFrame(
                f"DNS message of {len(message)} bytes, shorter than its 12-byte header"
            )
        request_id, flags, questions, answers = _HEADER.unpack_from(message)
        if not flags & _QR:
            raise CorruptFrame("DNS message from the server is a query (QR bit clear)")
        transfers = self.transfers
        if request_id in transfers:
            if questions and _question_type(message) != AXFR:
                # The transfer was given up and its ID reused for a query
                # (a transfer that stopped mid-way leaves no closing SOA).
                transfers.discard(request_id)
                return _ORDINARY
            first = False
        elif questions and _question_type(message) == AXFR:
            first = True
        else:
            return _ORDINARY
        if flags & 0x0F:
            transfers.discard(request_id)
            return _FAILED
        if flags & _TC:
            transfers.discard(request_id)
            return _TRUNCATED
        opening, closing = _record_types(message, questions, answers)
        if first:
            if opening != SOA:
                return _NO_SOA
            if answers >= 2 and closing == SOA:
                return _LAST  # the whole zone in one message
            transfers.add(request_id)
            return _PART
        if closing == SOA:
            transfers.discard(request_id)
            return _LAST
        return _PART


def _error(tag: int, message: bytes) -> RemoteError:
    if tag == _ORDINARY or tag == _FAILED:
        code = message[3] & 0x0F
        name = RCODE_NAMES.get(code, f"RCODE {code}")
        if tag == _ORDINARY:
            return RemoteError(name, code, message)
        return TransferError(f"zone transfer failed: {name}", code, message)
    if tag == _TRUNCATED:
        return TransferError(
            "zone transfer message truncated (TC bit set over TCP): the zone "
            "would be incomplete",
            None,
            message,
        )
    return TransferError(
        "zone transfer does not start with the zone's SOA record", None, message
    )


class DNSMessageCodec:
    """
    DNS over TCP, whole messages as bytes both ways; zone transfers (AXFR)
    as streams.  Replies with an RCODE other than 0 fail their request with
    a :class:`~framedclient.errors.RemoteError` whose ``code`` is the RCODE
    (a :class:`TransferError` for a transfer).

    :param max_frame: the largest message accepted, length field included
        (the most a 2-byte length can announce by default).
    """

    matching = Matching.BY_ID
    supports_cancel = False
    supports_ping = False
    max_id = 0xFFFF

    def __init__(self, max_frame: int = 2 + 0xFFFF) -> None:
        if isinstance(max_frame, bool) or not isinstance(max_frame, int):
            raise TypeError(f"max_frame must be an int, got {max_frame!r}")
        if not 14 <= max_frame <= 2 + 0xFFFF:
            raise ValueError(
                f"max_frame must be 14 to 65537 bytes (a 2-byte length and a "
                f"DNS message), got {max_frame}"
            )
        self.max_frame = max_frame

    def __repr__(self) -> str:
        return f"DNSMessageCodec(max_frame={self.max_frame})"

    def new_framer(self) -> TransferFramer:
        return TransferFramer(self.max_frame)

    def encode(self, kind: int, request_id: int, body: object) -> bytes:
        if kind != REQUEST:
            raise ValueError("DNS over TCP sends queries only")
        if not isinstance(body, bytes):
            raise TypeError(
                f"a DNS request must be a whole DNS message as bytes "
                f"(twisted.names.dns.Message().toStr()), got {type(body).__name__}"
            )
        if not 12 <= len(body) <= self.max_frame - 2:
            raise ValueError(
                f"a DNS message is 12 to {self.max_frame - 2} bytes (its header, "
                f"then the question), got {len(body)}"
            )
        return struct.pack(">HH", len(body), request_id) + body[2:]

    def decode(self, frame: bytes) -> tuple[int, int, object]:
        tag = frame[0]
        message = frame[1:]
        request_id = (frame[1] << 8) | frame[2]
        if tag == _PART:
            return PART, request_id, message
        if tag == _LAST or (tag == _ORDINARY and not frame[4] & 0x0F):
            return REPLY, request_id, message
        return ERROR, request_id, _error(tag, message)
