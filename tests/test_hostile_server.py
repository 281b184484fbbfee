"""
A hostile (or badly broken) server: huge length headers, endless bytes
without a delimiter, replies to IDs never sent, duplicate replies, floods of
pings.  Each attack is made on one connection of a two-connection client
(in memory, on a Clock); it must cost bounded memory, and the other
connection's requests, in flight during the attack, must finish untouched.
"""

from __future__ import annotations

import random
import struct
import tracemalloc
from contextlib import contextmanager

from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from framedclient.codecs import PING, REPLY, FC1Codec, PipelinedCodec
from framedclient.errors import ConnectionLost, FrameTooLarge
from framedclient.framing import Delimited
from framedclient.protocol import FramedProtocol
from framedclient.testing import MemoryServer, memory_client

CODEC = FC1Codec()
CHUNK = 64 * 1024
MiB = 1024 * 1024


class Results:
    def __init__(self, ds) -> None:
        self.boxes: list[list] = []
        for d in ds:
            box: list = []
            d.addBoth(box.append)
            self.boxes.append(box)

    def values(self) -> list:
        assert all(len(b) == 1 for b in self.boxes), "not every request fired once"
        return [b[0] for b in self.boxes]


@contextmanager
def peak_memory():
    """
    Measures the peak of Python allocations inside the block (bytes).
    """
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    box = {}
    try:
        yield box
    finally:
        box["peak"] = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()


def two_connections(**options):
    """
    A client with two connections to the reference server, both ready,
    each carrying slow requests: ``(client, server, victim, bystander,
    victim's requests, bystander's requests)``.
    """
    client, server = memory_client(pool_size=2, request_timeout=30.0, **options)
    server.flush()
    conns = server.open_connections
    assert len(conns) == 2
    victim, bystander = conns
    ds = []
    victim_indexes = set()
    for i in range(10):
        before = victim.client.pending
        ds.append(client.request(b"!delay:1 slow-%d" % i))
        if victim.client.pending > before:
            victim_indexes.add(i)
    results = Results(ds)
    server.flush()
    on_victim = [(i, box) for i, box in enumerate(results.boxes) if i in victim_indexes]
    assert victim.client.pending == 5 and bystander.client.pending == 5
    return client, server, victim, bystander, results, on_victim


def assert_bystander_unharmed(server, results, victim_indexes) -> None:
    server.advance(1.0)
    for i, box in enumerate(results.boxes):
        if i in victim_indexes:
            continue
        assert box == [b"!delay:1 slow-%d" % i], f"request {i} harmed: {box}"


def test_huge_length_header_closes_only_that_connection_without_allocating():
    client, server, victim, bystander, results, on_victim = two_connections()
    with peak_memory() as mem:
        victim.send_to_client(struct.pack(">I", 0xFFFF_FFFF) + b"\0" * 100)
        server.flush()
    assert mem["peak"] < 1 * MiB
    proto = victim.client
    assert proto.is_closed
    for _, box in on_victim:
        error = box[0].value
        assert isinstance(error, ConnectionLost) and error.written
        assert isinstance(error.error, FrameTooLarge)
        assert "4294967299 bytes exceeds the limit" in str(error.error)
    assert not bystander.client.is_closed
    assert_bystander_unharmed(server, results, {i for i, _ in on_victim})
    # The client as a whole keeps working.
    d = client.request(b"after")
    server.flush()
    assert Results([d]).values() == [b"after"]


class LineEcho(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


def test_endless_bytes_without_a_delimiter_are_bounded_by_max_frame():
    server = MemoryServer(Factory.forProtocol(LineEcho))
    codec = PipelinedCodec(lambda: Delimited(b"\n", max_frame=4096))
    client, _ = memory_client(server, codec=codec, pool_size=2, request_timeout=30)
    server.flush()
    victim, bystander = server.open_connections
    victim.stop_reading()  # the victim's server sends instead of echoing
    bystander.stop_reading()
    ds = []
    on_bystander = []
    for i in range(4):
        before = bystander.client.pending
        ds.append(client.request(b"line-%d" % i))
        if bystander.client.pending > before:
            on_bystander.append(b"line-%d" % i)
    results = Results(ds)
    server.flush()
    proto = victim.client
    framer = proto._framer
    garbage = b"a" * CHUNK
    peak_buffered = 0
    with peak_memory() as mem:
        for _ in range(256):  # 16 MiB without a newline
            victim.send_to_client(garbage)
            server.flush()
            peak_buffered = max(peak_buffered, framer.buffered)
            if proto.is_closed:
                break
    assert proto.is_closed
    assert peak_buffered <= 4096 + 1
    assert mem["peak"] < 2 * MiB
    bystander.resume_reading()
    server.flush()
    values = results.values()
    # The bystander's requests come back, in order; the victim's failed.
    assert len(on_bystander) == 2
    assert [v for v in values if isinstance(v, bytes)] == on_bystander
    assert all(
        isinstance(v, Failure) and v.check(ConnectionLost)
        for v in values
        if not isinstance(v, bytes)
    )


def test_replies_to_ids_never_sent_are_counted_and_dropped():
    client, server, victim, bystander, results, on_victim = two_connections()
    proto = victim.client
    table = proto.table_size
    rng = random.Random(1)
    flood = b"".join(
        CODEC.encode(REPLY, rng.randrange(1000, 2**64), b"forged")
        for _ in range(20_000)
    )
    with peak_memory() as mem:
        for start in range(0, len(flood), CHUNK):
            victim.send_to_client(flood[start : start + CHUNK])
            server.flush()
    assert proto.unknown_replies == 20_000
    assert proto.table_size == table  # nothing was added to the table
    assert not proto.is_closed
    assert mem["peak"] < 2 * MiB
    # Every request, the victim's included, still gets its own reply.
    server.advance(1.0)
    assert results.values() == [b"!delay:1 slow-%d" % i for i in range(10)]


def test_duplicate_reply_fires_nothing_twice():
    client, server = memory_client(pool_size=1)
    server.flush()
    conn = server.open_connections[0]
    d = client.request(b"once")
    results = Results([d])
    server.flush()
    assert results.values() == [b"once"]
    # The server answers the same request again (and again).
    for _ in range(3):
        conn.send_to_client(CODEC.encode(REPLY, 1, b"twice"))
    server.flush()
    assert results.values() == [b"once"]
    assert conn.client.unknown_replies == 3
    assert not conn.client.is_closed


def test_a_flood_of_pings_is_answered_with_bounded_memory():
    client, server, victim, bystander, results, on_victim = two_connections()
    pings = CODEC.encode(PING, 0, b"") * (CHUNK // 13)
    with peak_memory() as mem:
        for _ in range(30):  # about 150,000 pings
            victim.send_to_client(pings)
            server.flush()
    assert mem["peak"] < 2 * MiB
    assert not victim.client.is_closed
    assert_bystander_unharmed(server, results, {i for i, _ in on_victim})


def test_ping_flood_from_a_peer_that_does_not_read_is_bounded():
    client, server, victim, bystander, results, on_victim = two_connections(
        max_write_buffer=64 * 1024
    )
    victim.stop_reading(pause_at=1024)
    pings = CODEC.encode(PING, 0, b"") * (CHUNK // 13)
    for _ in range(8):  # fill the pump until the client's producer pauses
        victim.send_to_client(pings)
        server.flush()
    proto = victim.client
    assert isinstance(proto, FramedProtocol)
    assert proto.debug_state()["paused"]
    with peak_memory() as mem:
        for _ in range(40):  # about 200,000 more pings: 2.6 MB of pongs
            victim.send_to_client(pings)
            server.flush()
    queued = sum(len(b) for b in proto._control)
    # Bounded means: no more than max_write_buffer waiting (or the peer is
    # cut off), not one pong per ping forever.
    assert queued <= 64 * 1024 or proto.is_closed, f"{queued} bytes of pongs queued"
    assert mem["peak"] < 2 * MiB
