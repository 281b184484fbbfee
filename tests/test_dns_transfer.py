"""
Zone transfers (AXFR) from a real NSD over TCP, as streams: every record of
the zone file arrives once, queries are answered meanwhile, a refused zone
is an error (never an empty zone), cancelling leaves nothing held, and a
consumer that does not read keeps the client's memory bounded.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, ensureDeferred
from twisted.internet.task import deferLater
from twisted.names import dns
from twisted.protocols import portforward

from framedclient import FramedClient
from framedclient.bench.nsd import NsdServer, free_port_tcp_udp
from framedclient.clients.dns import DNSClient, ZoneTransfer, query_message
from framedclient.codecs.dns_transfer import DNSMessageCodec, TransferError
from framedclient.errors import ConnectionLost, RemoteError, RequestTimeout

from .nsd_servers import nsd_server

SMALL = 5_000


@pytest.fixture(scope="module")
def small_zone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NsdServer]:
    with nsd_server(tmp_path_factory.mktemp("nsd-small"), SMALL) as server:
        yield server


@pytest.fixture(scope="module")
def big_zone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NsdServer]:
    with nsd_server(tmp_path_factory.mktemp("nsd-big"), 50_000) as server:
        yield server


@asynccontextmanager
async def dns_client(server: NsdServer, **options: Any) -> AsyncIterator[DNSClient]:
    client = DNSClient.from_endpoint(
        reactor, f"tcp:127.0.0.1:{server.port}", pool_size=1, **options
    )
    try:
        await client.when_ready()
        yield client
    finally:
        await client.close(timeout=2.0)


def zone_file_records(path: Path) -> Counter[str]:
    """The zone file's records, one line each (every name absolute)."""
    return Counter(line for line in path.read_text().splitlines() if line)


def as_line(record: dns.RRHeader) -> str:
    """A received record in the zone file's notation."""
    payload: Any = record.payload
    kind = dns.QUERY_TYPES[record.type]
    if record.type == dns.A:
        rdata = payload.dottedQuad()
    elif record.type == dns.AAAA:
        rdata = str(ipaddress.IPv6Address(payload.address))
    elif record.type == dns.TXT:
        rdata = '"' + b"".join(payload.data).decode() + '"'
    elif record.type == dns.MX:
        rdata = f"{payload.preference} {payload.name}."
    elif record.type in (dns.CNAME, dns.NS):
        rdata = f"{payload.name}."
    elif record.type == dns.SOA:
        rdata = (
            f"{payload.mname}. {payload.rname}. {payload.serial} {payload.refresh} "
            f"{payload.retry} {payload.expire} {payload.minimum}"
        )
    else:  # pragma: no cover - the zone has no other type
        raise AssertionError(f"unexpected record {record}")
    return f"{record.name}. {record.ttl} IN {kind} {rdata}"


async def answered(client: DNSClient, i: int) -> bool:
    """Whether h<i>'s query gets the zone file's answer (h0 is an A)."""
    reply = await client.query(f"h{i}.example.test", "A")
    return [r.payload.dottedQuad() for r in reply.answers] == [  # type: ignore[attr-defined]
        str(ipaddress.IPv4Address(0x0A000000 + i))
    ]


def transfer_protocols(client: DNSClient) -> list[Any]:
    return [c.protocol for c in client.transfers.pool.connections if c.protocol]


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_every_record_of_a_50000_record_zone_arrives_while_queries_are_answered(
    big_zone: NsdServer,
):
    expected = zone_file_records(big_zone.zone_file)
    assert sum(expected.values()) == 50_000
    async with dns_client(big_zone) as client:
        transfer = client.zone_transfer("example.test")
        received: list[dns.RRHeader] = []
        during = 0
        async for batch in transfer.batches():
            received.extend(batch)
            # A query per message, answered before the transfer goes on.
            assert await answered(client, 5 * (transfer.messages % 1000))
            during += not transfer.stream.finished
        assert transfer.messages > 50 and during > 50
        assert received[0].type == dns.SOA and transfer.soa is received[0]
        assert Counter(as_line(r) for r in received) == expected
        assert len(received) == 50_000


@pytest_twisted.ensureDeferred
async def test_a_transfer_yields_the_zone_file_record_by_record(small_zone: NsdServer):
    async with dns_client(small_zone) as client:
        records = [r async for r in client.zone_transfer("example.test.")]
        assert Counter(as_line(r) for r in records) == zone_file_records(
            small_zone.zone_file
        )
        # Collected at once, the same.
        again = await client.zone_transfer(b"example.test").collect()
        assert [as_line(r) for r in again] == [as_line(r) for r in records]


@pytest_twisted.ensureDeferred
async def test_queries_are_answered_while_a_transfer_waits_for_its_consumer(
    small_zone: NsdServer,
):
    async with dns_client(small_zone) as client:
        transfer = client.zone_transfer("example.test", buffer_bytes=4096)
        first = await transfer.__anext__()
        assert first.type == dns.SOA
        # The transfer's connection stopped reading; queries go on.
        for i in range(0, 500, 5):
            assert await answered(client, i)
        assert not transfer.stream.finished
        rest = [r async for r in transfer]
        assert len(rest) == SMALL - 1


@pytest_twisted.ensureDeferred
async def test_a_refused_zone_fails_the_transfer_and_the_client_goes_on(
    small_zone: NsdServer,
):
    async with dns_client(small_zone) as client:
        with pytest.raises(TransferError) as refused:
            async for _ in client.zone_transfer("closed.test"):
                raise AssertionError("a refused transfer yielded a record")
        assert refused.value.code == 5 and "REFUSED" in str(refused.value)
        with pytest.raises(TransferError) as not_ours:
            await client.zone_transfer("elsewhere.test").collect()
        assert not_ours.value.code == 9 and "NOTAUTH" in str(not_ours.value)
        with pytest.raises(RemoteError) as missing:
            await client.query("nothing-here.example.test", "A")
        assert missing.value.code == 3
        assert await answered(client, 10)
        assert len(await client.zone_transfer("example.test").collect()) == SMALL


@pytest_twisted.ensureDeferred
async def test_cancelling_mid_transfer_leaves_no_id_timer_or_part_held(
    small_zone: NsdServer,
):
    async with dns_client(small_zone) as client:
        transfer = client.zone_transfer("example.test", buffer_bytes=4096)
        for _ in range(100):
            await transfer.__anext__()
        assert transfer.stream.timer_active
        transfer.cancel()
        with pytest.raises(CancelledError):
            await transfer.__anext__()
        stream = transfer.stream
        assert stream.buffered == 0 and stream.buffered_bytes == 0
        assert not stream.timer_active
        # DNS cannot tell NSD to stop: the rest is read and dropped.  NSD
        # answers a connection's queries in order, so once this one is
        # answered the transfer's last message has come and freed its ID.
        reply = await client.transfers.request(query_message(b"h0.example.test", 1))
        assert reply  # the bytes of the reply
        (proto,) = transfer_protocols(client)
        assert proto.table_size == 0 and proto.engine.tombstones == 0
        assert not proto.reading_held
        assert client.transfers.in_flight == 0
        assert proto.engine.late_replies >= 1  # the dropped rest
        assert len(await client.zone_transfer("example.test").collect()) == SMALL


@pytest_twisted.ensureDeferred
async def test_a_consumer_that_does_not_read_keeps_memory_bounded(
    small_zone: NsdServer,
):
    async with dns_client(small_zone) as client:
        limit = 16 * 1024
        transfer: ZoneTransfer = client.zone_transfer(
            "example.test", buffer_bytes=limit, idle_timeout=None
        )
        await deferLater(reactor, 0.5, lambda: None)
        # The zone is about 200 kB; the client holds its limit plus at most
        # one socket read, and stops reading.
        held = transfer.stream.buffered_bytes
        assert limit <= held <= limit + 256 * 1024
        (proto,) = transfer_protocols(client)
        assert proto.reading_held and transfer.stream.holding
        count = transfer.stream.buffered
        await deferLater(reactor, 0.2, lambda: None)
        assert transfer.stream.buffered == count  # nothing more was read
        records = await ensureDeferred(_all(transfer))
        assert len(records) == SMALL
        assert not proto.reading_held


async def _all(transfer: ZoneTransfer) -> list[dns.RRHeader]:
    return [r async for r in transfer]


class _CuttingClient(portforward.ProxyClient):
    """NSD's side of the proxy: forwards ``CUT`` bytes, then closes both sides."""

    sent = 0

    def dataReceived(self, data: bytes) -> None:
        left = CUT - self.sent
        self.sent += len(data)
        self.peer.transport.write(data[:left])
        if self.sent >= CUT:
            self.transport.unregisterProducer()
            self.peer.transport.unregisterProducer()
            self.peer.transport.loseConnection()
            self.transport.abortConnection()


class _CuttingClientFactory(portforward.ProxyClientFactory):
    protocol = _CuttingClient


class _CuttingServer(portforward.ProxyServer):
    clientProtocolFactory = _CuttingClientFactory


CUT = 100_000


@pytest_twisted.ensureDeferred
async def test_a_connection_lost_mid_transfer_fails_it_after_the_records_received(
    small_zone: NsdServer,
):
    factory = portforward.ProxyFactory("127.0.0.1", small_zone.port)
    factory.protocol = _CuttingServer
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    client = DNSClient.from_endpoint(
        reactor, f"tcp:127.0.0.1:{port.getHost().port}", pool_size=1
    )
    try:
        await client.when_ready()
        transfer = client.zone_transfer("example.test")
        records = []
        with pytest.raises(ConnectionLost):
            async for record in transfer:
                records.append(record)
        # What came before the cut was delivered, and it is not the zone.
        assert 0 < len(records) < SMALL
    finally:
        await client.close(timeout=2.0)
        await port.stopListening()


HOW_TO = Path(__file__).resolve().parent.parent / "docs" / "dns.md"


def how_to_block(after: str, language: str) -> str:
    """The first ``language`` block of docs/dns.md after ``after``."""
    text = HOW_TO.read_text()
    match = re.search(rf"```{language}\n(.*?)```", text[text.index(after) :], re.S)
    assert match, f"docs/dns.md has no {language} block after {after!r}"
    return match.group(1)


@pytest.mark.slow
def test_the_how_to_program_prints_what_the_page_says(
    big_zone: NsdServer, tmp_path: Path
):
    script = tmp_path / "transfer.py"
    script.write_text(how_to_block("## The program", "python"))
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, str(script), "127.0.0.1", str(big_zone.port), "example.test"],
        env=dict(os.environ, PYTHONPATH=str(root)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == how_to_block("prints:", "text")


@pytest_twisted.ensureDeferred
async def test_a_query_behind_a_transfer_on_a_shared_connection_times_out_as_such(
    small_zone: NsdServer,
):
    # Sharing the transfer's connection (DNSClient built on one client): NSD
    # answers the query after the transfer, whose consumer does not read.
    # The timeout must not claim the server sent no frame of the protocol.
    shared = FramedClient.from_endpoint(
        reactor,
        f"tcp:127.0.0.1:{small_zone.port}",
        codec=DNSMessageCodec(),
        pool_size=1,
        request_timeout=0.3,
    )
    client = DNSClient(shared)
    try:
        await client.when_ready()
        transfer = client.zone_transfer("example.test", buffer_bytes=4096)
        assert (await transfer.__anext__()).type == dns.SOA
        with pytest.raises(RequestTimeout) as timed_out:
            await client.query("h0.example.test", "A")
        assert "not one complete" not in str(timed_out.value)
        transfer.cancel()
    finally:
        await client.close(timeout=2.0)


@pytest_twisted.ensureDeferred
async def test_when_ready_fails_with_the_clients_own_error_when_nothing_listens():
    port = free_port_tcp_udp()  # nothing listens there
    client = DNSClient.from_endpoint(reactor, f"tcp:127.0.0.1:{port}", pool_size=1)
    try:
        with pytest.raises(Exception) as failed:
            await client.when_ready(fail_after=1)
        direct = FramedClient.from_endpoint(
            reactor, f"tcp:127.0.0.1:{port}", codec=DNSMessageCodec(), pool_size=1
        )
        try:
            with pytest.raises(Exception) as expected:
                await direct.when_ready(fail_after=1)
        finally:
            await direct.close(timeout=1.0)
        assert type(failed.value) is type(expected.value)
    finally:
        await client.close(timeout=1.0)
