"""
:class:`DNSClient`: DNS queries and zone transfers (AXFR) over TCP, on
:class:`~framedclient.codecs.dns_transfer.DNSMessageCodec`.

A zone transfer is a stream (:meth:`FramedClient.stream
<framedclient.client.FramedClient.stream>`): its messages come up as the
server sends them, with the same flow control (a consumer that lags stops
the connection's reading once ``buffer_bytes`` of messages wait), and
:class:`ZoneTransfer` turns them into records with ``twisted.names.dns``.

Transfers run on connections of their own (``transfer_connections``), not
on the ones queries use: an authoritative server such as NSD answers the
queries of one TCP connection in order, so a query sent behind a transfer
would wait for its end, and a transfer whose consumer lags holds its
connection's reading.  Queries never wait behind a transfer this way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Unpack

from twisted.internet.defer import Deferred, FirstError, ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.names import dns
from twisted.python.failure import Failure

from framedclient.client import ClientKeywords, FramedClient
from framedclient.clients.base import ProtocolClient, check_keywords
from framedclient.codecs.dns_transfer import AXFR, SOA, DNSMessageCodec, TransferError
from framedclient.streams import DEFAULT_BUFFER_BYTES, END, Stream

__all__ = ["DNSClient", "ZoneTransfer", "check_name", "check_type"]

#: Seconds a transfer may wait for its next message by default (while its
#: consumer waits).
DEFAULT_TRANSFER_IDLE = 30.0


def check_name(name: object, argument: str = "name") -> bytes:
    """
    ``name`` as the bytes of a domain name, or the error that says why it is
    not one.

    :raises TypeError, ValueError: naming ``argument``.
    """
    if isinstance(name, str):
        try:
            name = name.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(
                f"{argument} must be an ASCII domain name (IDNA-encode it "
                f"first: name.encode('idna')), got {name!r}"
            ) from None
    if not isinstance(name, bytes):
        raise TypeError(
            f"{argument} must be a domain name as str or bytes, got "
            f"{type(name).__name__}"
        )
    labels = name.rstrip(b".").split(b".")
    if (
        not name.rstrip(b".")
        or len(name.rstrip(b".")) > 253
        or any(not 1 <= len(label) <= 63 for label in labels)
    ):
        raise ValueError(
            f"{argument} must be a domain name of labels of 1 to 63 bytes, 253 "
            f"bytes at most (like 'example.com'), got {name!r}"
        )
    return name.rstrip(b".")


def check_type(record_type: object) -> int:
    """
    A record type given as a number (``dns.AAAA``) or a name (``"AAAA"``),
    as its number.

    :raises TypeError, ValueError: naming ``type``.
    """
    if isinstance(record_type, str):
        number = dns.REV_TYPES.get(record_type.upper())
        if number is None:
            raise ValueError(
                f"type {record_type!r} is not a DNS record type name (like 'A', "
                f"'AAAA', 'MX', 'TXT')"
            )
        record_type = int(number)
    if isinstance(record_type, bool) or not isinstance(record_type, int):
        raise TypeError(
            f"type must be a record type name ('AAAA') or number (28), got "
            f"{record_type!r}"
        )
    if not 1 <= record_type <= 0xFFFF:
        raise ValueError(f"type must be 1 to 65535, got {record_type}")
    if record_type == AXFR:
        raise ValueError("type AXFR is a zone transfer: use zone_transfer(zone)")
    return record_type


def query_message(name: bytes, record_type: int, recursion: bool = False) -> bytes:
    """
    A query for ``name``'s records of ``record_type`` (class IN), as the
    bytes the codec sends (ID 0: the codec writes the request's).
    """
    message = dns.Message(id=0, recDes=int(recursion))
    message.queries = [dns.Query(name, record_type, dns.IN)]
    data: bytes = message.toStr()
    return data


def parse(data: bytes) -> dns.Message:
    """
    A DNS message's bytes as a ``twisted.names.dns.Message``.
    """
    message = dns.Message()
    message.fromStr(data)
    return message


def _none(*_: object) -> None:
    return None


def _first(failure: Failure) -> Failure:
    # Both clients' Deferreds gathered: the first failure as itself, not
    # wrapped in FirstError.
    failure.trap(FirstError)  # type: ignore[no-untyped-call]
    sub: Failure = failure.value.subFailure  # type: ignore[union-attr]
    return sub


def _serial(record: dns.RRHeader) -> int:
    payload: Any = record.payload
    serial: int = payload.serial
    return serial


class ZoneTransfer:
    """
    The records of one zone transfer, in the order the server sends them,
    for one consumer: ``async for record in transfer`` yields each record of
    the zone once (a ``twisted.names.dns.RRHeader``; the SOA first, the
    closing SOA, which repeats it, is not yielded), then stops at the end of
    the zone.  It raises instead if the transfer fails:
    :class:`~framedclient.codecs.dns_transfer.TransferError` for a refusal
    (``code`` 5, REFUSED), a server that is not authoritative (9, NOTAUTH),
    a message cut short or a zone that changed mid-transfer (the closing
    SOA's serial differs); ``ConnectionLost`` for a connection lost
    mid-transfer; ``RequestTimeout`` when no message came for
    ``idle_timeout`` seconds.  A transfer never ends early without an error.

    :ivar zone: the zone's name.
    :ivar stream: the :class:`~framedclient.streams.Stream` of its messages
        (bytes), for what is not passed through here.
    :ivar soa: the zone's SOA record, once the first message is in.
    :ivar messages: messages received so far.
    """

    def __init__(self, zone: bytes, stream: Stream, clock: IReactorTime) -> None:
        self.zone = zone
        self.stream = stream
        self._clock = clock
        self.soa: dns.RRHeader | None = None
        self.messages = 0
        self._records: deque[dns.RRHeader] = deque()

    def __repr__(self) -> str:
        zone = self.zone.decode()
        return f"<ZoneTransfer {zone} messages={self.messages} {self.stream!r}>"

    def _load(self, data: bytes) -> None:
        answers = parse(data).answers
        self.messages += 1
        if self.soa is None:
            # The codec checked that the transfer starts with the SOA.
            self.soa = answers[0]
        elif answers and answers[-1].type == SOA:
            closing = answers.pop()
            opened, closed = _serial(self.soa), _serial(closing)
            if opened != closed:
                raise TransferError(
                    f"zone {self.zone.decode()} changed during the transfer "
                    f"(SOA serial {opened}, then {closed}): transfer it again",
                    None,
                    data,
                )
        self._records.extend(answers)

    async def _next_message(self) -> bool:
        """
        Parse the next message into ``_records``; ``False`` at the end.
        """
        d = self.stream.next()
        if d.called:
            # Buffered: let the reactor run once first, so a consumer that
            # catches up parses one message per turn, not the whole buffer
            # while replies to queries wait.
            await deferLater(self._clock, 0, _none)
        data = await d
        if data is END:
            return False
        self._load(data)
        return True

    async def batches(self) -> AsyncIterator[list[dns.RRHeader]]:
        """
        The records message by message (a list per message), for a consumer
        that works in batches.
        """
        while True:
            if self._records:
                batch = list(self._records)
                self._records.clear()
                yield batch
            if not await self._next_message():
                return

    def __aiter__(self) -> ZoneTransfer:
        return self

    async def __anext__(self) -> dns.RRHeader:
        records = self._records
        while not records:
            if not await self._next_message():
                raise StopAsyncIteration
        return records.popleft()

    def collect(self) -> Deferred[list[dns.RRHeader]]:
        """
        Every record of the zone, once the transfer has ended (fails like
        ``async for``).
        """

        async def run() -> list[dns.RRHeader]:
            records: list[dns.RRHeader] = []
            async for batch in self.batches():
                records.extend(batch)
            return records

        return ensureDeferred(run())

    def cancel(self) -> None:
        """
        Stop the transfer: buffered messages and records are dropped and the consumer's
        next record fails with ``CancelledError``.  DNS has no way to tell
        the server: the rest of the transfer is read and dropped, and the
        request's ID is free again when its last message has come.
        """
        self._records.clear()
        self.stream.cancel()


class DNSClient(ProtocolClient):
    """
    Queries and zone transfers to a DNS server over TCP.

    Build it with :meth:`from_endpoint`; queries go over the client's
    connections (``pool_size``), transfers over ``transfer_connections`` of
    their own (see the module's docstring).

    :param client: the client queries go through (its codec a
        :class:`~framedclient.codecs.dns_transfer.DNSMessageCodec`).
    :param transfers: the client transfers go through (default: ``client``;
        then a query may wait behind a transfer on its connection).
    :param clock: the reactor (default: the global one): a consumer that
        catches up on buffered messages lets it run between two.

    :ivar transfers: the :class:`~framedclient.FramedClient` of the
        transfers' connections.
    """

    codec_type = DNSMessageCodec
    default_port = 53

    def __init__(
        self,
        client: FramedClient,
        transfers: FramedClient | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__(client)
        if clock is None:
            from twisted.internet import reactor

            clock = reactor  # type: ignore[assignment]
        assert clock is not None
        self._clock: IReactorTime = clock
        self.transfers = transfers if transfers is not None else client
        if not isinstance(self.transfers.codec, DNSMessageCodec):
            raise TypeError(
                f"transfers needs a client with a DNSMessageCodec, got "
                f"{self.transfers.codec!r}"
            )

    @classmethod
    def from_endpoint(  # type: ignore[misc]
        cls,
        reactor: Any,
        endpoint: str | Any,
        *,
        codec: DNSMessageCodec | None = None,
        transfer_connections: int = 1,
        **options: Unpack[ClientKeywords],
    ) -> DNSClient:
        """
        Connect to the DNS server at ``endpoint`` (``"tcp:127.0.0.1:53"``);
        the keywords are :meth:`FramedClient.from_endpoint`'s, for the
        queries' connections.

        :param codec: a :class:`~framedclient.codecs.dns_transfer.DNSMessageCodec`
            (default ``DNSMessageCodec()``).
        :param transfer_connections: connections for zone transfers (the
            other keywords apply to them too, ``pool_size`` aside).
        """
        check_keywords(
            "DNSClient.from_endpoint", options, ("codec", "transfer_connections")
        )
        if (
            isinstance(transfer_connections, bool)
            or not isinstance(transfer_connections, int)
            or transfer_connections < 1
        ):
            raise ValueError(
                f"transfer_connections must be an int of at least 1 (connections "
                f"for zone transfers), got {transfer_connections!r}"
            )
        options["codec"] = cls._codec(codec)
        queries = FramedClient.from_endpoint(reactor, endpoint, **options)
        transfer_options = dict(options)
        transfer_options["codec"] = DNSMessageCodec(options["codec"].max_frame)
        transfer_options["pool_size"] = transfer_connections
        transfers = FramedClient.from_endpoint(
            reactor,
            endpoint,
            **transfer_options,  # type: ignore[arg-type]
        )
        return cls(queries, transfers, reactor)

    # -- lifecycle: both clients ------------------------------------------------

    def start(self) -> None:
        self.client.start()
        self.transfers.start()

    def when_ready(self, fail_after: int | None = None) -> Deferred[None]:
        """
        Fires once a connection for queries and one for transfers are ready.
        """
        if self.transfers is self.client:
            return self.client.when_ready(fail_after)
        both = [
            self.client.when_ready(fail_after),
            self.transfers.when_ready(fail_after),
        ]
        return gatherResults(both, consumeErrors=True).addCallbacks(_none, _first)

    def close(self, timeout: float | None = None) -> Deferred[None]:
        closing = [self.client.close(timeout)]
        if self.transfers is not self.client:
            closing.append(self.transfers.close(timeout))
        return gatherResults(closing, consumeErrors=True).addCallbacks(_none, _first)

    def stats(self) -> dict[str, Any]:
        """
        The queries' client's snapshot, with the transfers' client's under
        ``"transfers"``.
        """
        stats = self.client.stats()
        if self.transfers is not self.client:
            stats["transfers"] = self.transfers.stats()
        return stats

    # -- commands ----------------------------------------------------------------

    def query(
        self, name: str | bytes, type: str | int = "A", timeout: float | None = None
    ) -> Deferred[dns.Message]:
        """
        Ask for ``name``'s records of ``type`` (class IN).

        :return: fires with the reply as a ``twisted.names.dns.Message``
            (its ``answers``, ``authority``, ``additional``...); fails with
            a :class:`~framedclient.errors.RemoteError` whose ``code`` is
            the RCODE (3 for NXDOMAIN) if the server answered with one.
        :raises TypeError, ValueError: for a bad name or type.
        """
        body = query_message(check_name(name), check_type(type))
        return self.client.request(body, timeout, idempotent=True).addCallback(parse)

    def zone_transfer(
        self,
        zone: str | bytes,
        *,
        idle_timeout: float | None = DEFAULT_TRANSFER_IDLE,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    ) -> ZoneTransfer:
        """
        Transfer ``zone`` (AXFR): a :class:`ZoneTransfer` to iterate with
        ``async for``.

        :param idle_timeout: seconds the transfer may wait for its next
            message while its consumer waits (``None``: no limit).
        :param buffer_bytes: bytes of messages buffered for a lagging
            consumer before the transfer's connection stops reading.
        :raises TypeError, ValueError: for a bad argument, naming it.
        """
        name = check_name(zone, "zone")
        message = dns.Message(id=0, recDes=0)
        message.queries = [dns.Query(name, AXFR, dns.IN)]
        stream = self.transfers.stream(
            message.toStr(), idle_timeout=idle_timeout, buffer_bytes=buffer_bytes
        )
        return ZoneTransfer(name, stream, self._clock)
