"""
Backpressure over real loopback sockets: a server that stops reading.

The client's transport pauses FramedProtocol (it is the transport's push
producer) once the kernel's buffers and Twisted's 64 KiB write buffer are
full.  From then on requests wait in memory up to ``max_write_buffer``
bytes, later ones fail at once with Overloaded (nothing sent), and if the
buffer does not drain within ``write_timeout`` the connection is closed.
What the client holds for the connection stays under

    max_write_buffer + one request frame        (queued while paused)
  + Twisted's bufferSize (64 KiB) + one flush   (in the transport)

and the process's memory does not grow with the number of requests tried.
"""

from __future__ import annotations

import socket

import psutil
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import deferLater

from framedclient.client import FramedClient
from framedclient.errors import ConnectionLost, Overloaded
from framedclient.protocol import FramedProtocol
from framedclient.server import ReferenceServerFactory, listen

MAX_WRITE_BUFFER = 256 * 1024
BODY = b"b" * (16 * 1024 - 13)  # one request frame: 16 KiB
FRAME = len(BODY) + 13
PER_TURN = 4  # requests issued per reactor turn


def small_send_buffer(proto: FramedProtocol) -> None:
    # Small kernel buffers make the transport fill (and pause us) after
    # kilobytes rather than megabytes.
    proto.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)


def transport_buffered(proto: FramedProtocol) -> int:
    """
    Bytes Twisted's TCP transport holds for us (not yet in the kernel).
    """
    t = proto.transport
    return len(t.dataBuffer) - t.offset + t._tempDataLen


def held_by_client(proto: FramedProtocol) -> int:
    return proto.engine.unwritten_bytes + transport_buffered(proto)


async def turn() -> None:
    await deferLater(reactor, 0, lambda: None)


async def start(write_timeout: float | None):
    server = ReferenceServerFactory(clock=reactor)
    port = await listen(reactor, "tcp:0:interface=127.0.0.1", server)
    port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    client = FramedClient.from_endpoint(
        reactor,
        f"tcp:127.0.0.1:{port.getHost().port}",
        pool_size=1,
        max_in_flight=100_000,
        max_pending=0,
        request_timeout=30.0,
        max_write_buffer=MAX_WRITE_BUFFER,
        write_timeout=write_timeout,
        prepare=small_send_buffer,
    )
    await client.when_ready()
    while not server.connections:
        await turn()
    (server_proto,) = server.connections
    proto = client.pool.connections[0].protocol
    assert proto is not None
    return server, port, client, proto, server_proto


async def stop(server, port, client) -> None:
    # The server goes first, so its paused transport is not left behind.
    server.drop_all()
    await client.close(timeout=1.0)
    await maybeDeferred(port.stopListening)
    while server.connections:
        await turn()


def record(ds: list[Deferred[bytes]], outcomes: list) -> None:
    for d in ds:
        d.addBoth(outcomes.append)


async def fill_until_overloaded(client, proto, outcomes, limit=2000):
    """
    Issue requests a few per reactor turn until one is shed; returns the
    peak number of bytes the client held for the connection, and how many
    requests were issued.
    """
    peak = 0
    issued = 0
    for _ in range(limit):
        ds = [client.request(BODY) for _ in range(PER_TURN)]
        issued += len(ds)
        record(ds, outcomes)
        peak = max(peak, held_by_client(proto))
        if any(not isinstance(o, bytes) and o.check(Overloaded) for o in outcomes):
            return peak, issued
        await turn()
        peak = max(peak, held_by_client(proto))
    raise AssertionError("the client never shed a request")


async def wait_idle(client, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if client.in_flight == 0:
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"{client.in_flight} requests still in flight")


@pytest_twisted.ensureDeferred
async def test_server_that_stops_reading_pauses_the_client_and_sheds_beyond_the_bound():
    server, port, client, proto, server_proto = await start(write_timeout=None)
    try:
        server_proto.transport.pauseProducing()  # the server stops reading
        rss = psutil.Process().memory_info().rss
        outcomes: list = []
        peak, _ = await fill_until_overloaded(client, proto, outcomes)
        assert proto.debug_state()["paused"]
        bound = MAX_WRITE_BUFFER + FRAME + 64 * 1024 + PER_TURN * FRAME
        print(f"client held at most {peak} bytes (bound {bound})")
        assert peak <= bound, f"client held {peak} bytes, bound {bound}"
        shed = [o for o in outcomes if not isinstance(o, bytes)]
        assert all(f.check(Overloaded) for f in shed)
        assert "max_write_buffer" in shed[0].getErrorMessage()
        # Keep trying: every new request is shed, nothing more is buffered.
        tried = 0
        for _ in range(200):
            more: list = []
            record([client.request(BODY) for _ in range(PER_TURN)], more)
            tried += len(more)
            assert all(not isinstance(o, bytes) and o.check(Overloaded) for o in more)
            assert held_by_client(proto) <= bound
            await turn()
        assert tried == 200 * PER_TURN
        growth = psutil.Process().memory_info().rss - rss
        # 800 shed requests of 16 KiB would be 12.5 MiB if they were kept.
        assert growth < 8 * 1024 * 1024, f"RSS grew by {growth} bytes"
    finally:
        await stop(server, port, client)


@pytest_twisted.ensureDeferred
async def test_queued_requests_are_delivered_once_the_server_reads_again():
    server, port, client, proto, server_proto = await start(write_timeout=None)
    try:
        server_proto.transport.pauseProducing()
        outcomes: list = []
        _, issued = await fill_until_overloaded(client, proto, outcomes)
        shed = len(outcomes)  # only the shed request has fired so far
        assert client.in_flight == issued - shed > 0
        server_proto.transport.resumeProducing()
        await wait_idle(client)
        replies = [o for o in outcomes if isinstance(o, bytes)]
        assert len(replies) == issued - shed
        assert set(replies) == {BODY}
        assert not proto.debug_state()["paused"]
    finally:
        await stop(server, port, client)


@pytest_twisted.ensureDeferred
async def test_write_timeout_closes_a_connection_whose_buffer_does_not_drain():
    server, port, client, proto, server_proto = await start(write_timeout=0.3)
    try:
        server_proto.transport.pauseProducing()
        outcomes: list = []
        await fill_until_overloaded(client, proto, outcomes)
        closed = await proto.when_closed()
        assert "write timeout" in closed
        await wait_idle(client)
        # Requests already written may have been processed: they fail and
        # say why.  Those never written were retried on a new connection.
        failures = [o for o in outcomes if not isinstance(o, bytes)]
        lost = [f for f in failures if f.check(ConnectionLost)]
        assert lost and all(f.value.written for f in lost)
        assert all("write timeout" in f.getErrorMessage() for f in lost)
        assert all(f.check(ConnectionLost, Overloaded) for f in failures)
    finally:
        await stop(server, port, client)


@pytest_twisted.ensureDeferred
async def test_close_with_timeout_finishes_even_if_the_server_never_reads():
    server, port, client, proto, server_proto = await start(write_timeout=None)
    try:
        server_proto.transport.pauseProducing()
        outcomes: list = []
        await fill_until_overloaded(client, proto, outcomes)
        closed = client.close(timeout=0.2)
        done: list = []
        closed.addBoth(done.append)
        for _ in range(150):  # 1.5 s: the timeout plus a generous margin
            if done:
                break
            await deferLater(reactor, 0.01, lambda: None)
        assert done, "close(timeout=0.2) did not finish within 1.5 s"
        assert client.in_flight == 0
    finally:
        await stop(server, port, client)
