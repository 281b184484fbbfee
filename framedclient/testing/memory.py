"""
An in-memory client/server pair: test code that uses framedclient without
sockets, threads or sleeps.

Everything here runs on a :class:`twisted.internet.task.Clock`, and nothing
moves until the test says so: bytes travel between the two sides when the
test calls :meth:`MemoryServer.flush` (or :meth:`MemoryPair.flush`), and time
passes when it calls :meth:`MemoryServer.advance`.  The transports are
:mod:`twisted.test.iosim`'s ``FakeTransport`` (the ones ``treq.testing`` is
built on), so the protocols under test see ordinary Twisted transports.
``twisted.test`` is Twisted's own test package, but no public module has a
connected transport pair (``twisted.internet.testing`` has one-sided
``StringTransport`` only), and ``treq.testing`` depends on the same module,
so it is used rather than copied.

Two ways in:

- :func:`connected_pair` connects one :class:`~framedclient.protocol.FramedProtocol`
  to one server protocol (the reference server by default) and returns
  ``(client, server, pump)``, for tests of code that talks to one
  connection::

      client, server, pump = connected_pair()
      d = client.request(b"hello")
      pump.flush()
      assert successResultOf(d) == b"hello"

- :func:`memory_client` builds a whole
  :class:`~framedclient.client.FramedClient` whose endpoints lead to a
  :class:`MemoryServer`, for tests of application code that holds a client::

      client, server = memory_client(pool_size=2)
      d = client.request(b"hello")
      server.flush()                # connect, send, answer, deliver
      assert successResultOf(d) == b"hello"
      server.advance(5.0)           # time passes; timeouts fire

  :class:`MemoryServer` also plays an unreliable network on demand: refuse
  or hang connection attempts, drop every connection, stop reading (the
  client's producer is paused, so its write buffer limits apply), or send
  the client arbitrary bytes.

Loops are bounded: a flush that keeps moving bytes for ``max_rounds``
rounds raises :class:`RuntimeError` (a livelock in the code under test)
instead of hanging the test.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionLost as TCPConnectionLost
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.task import Clock
from twisted.test.iosim import FakeAddress, FakeTransport, IOPump
from zope.interface import implementer

from framedclient.client import FramedClient
from framedclient.codecs import Codec, FC1Codec
from framedclient.protocol import FramedClientFactory, FramedProtocol
from framedclient.server import ReferenceServerFactory

__all__ = [
    "MemoryConnection",
    "MemoryEndpoint",
    "MemoryPair",
    "MemoryPump",
    "MemoryServer",
    "connected_pair",
    "memory_client",
]

#: How many pump rounds one flush may take before it is declared a livelock.
DEFAULT_MAX_ROUNDS = 10_000


class MemoryPump(IOPump):  # type: ignore[misc]
    """
    An :class:`twisted.test.iosim.IOPump` that can also hold the client's
    bytes, as a server that stops reading would.

    While :attr:`server_reading` is false, what the client writes stays in
    the pump (counted in :attr:`held`) and the client's producer is paused
    once :attr:`held` reaches ``pause_at`` bytes, as a real TCP transport
    pauses its producer when the kernel's buffer is full.
    """

    def __init__(
        self,
        client: IProtocol,
        server: IProtocol,
        client_io: FakeTransport,
        server_io: FakeTransport,
        clock: Clock,
        pause_at: int = 64 * 1024,
    ) -> None:
        super().__init__(client, server, client_io, server_io, False, clock=clock)  # type: ignore[no-untyped-call]
        #: Whether the server reads what the client writes (see
        #: :meth:`MemoryConnection.stop_reading`).
        self.server_reading = True
        #: Held bytes at which the client's producer is paused.
        self.pause_at = pause_at
        self._held: list[bytes] = []
        #: bytes written by the client and not yet delivered to the server.
        self.held = 0
        self._client_paused = False

    def pump(self, debug: bool = False, advanceClock: bool = True) -> bool:  # noqa: N803
        """
        Move bytes both ways once (see ``IOPump.pump``); while the server is
        not reading, keep the client's bytes instead of delivering them.
        """
        if self.server_reading:
            if self._held:
                data, self._held, self.held = b"".join(self._held), [], 0
                self.serverIO.bufferReceived(data)
                self._set_client_paused(False)
                super().pump(debug, advanceClock)  # type: ignore[no-untyped-call]
                return True
            return bool(super().pump(debug, advanceClock))  # type: ignore[no-untyped-call]
        if advanceClock:
            self.clock.advance(0)
        moved = False
        c_data = self.clientIO.getOutBuffer()
        if c_data:
            self._held.append(c_data)
            self.held += len(c_data)
            if self.held >= self.pause_at:
                self._set_client_paused(True)
        s_data = self.serverIO.getOutBuffer()
        if s_data:
            self.clientIO.bufferReceived(s_data)
            moved = True
        if self.clientIO.disconnecting and not self.clientIO.disconnected:
            # The client gave up (abort, write timeout): the connection ends
            # even though the server never read what was held.
            self._held, self.held = [], 0
            self.clientIO.disconnected = True
            self.serverIO.disconnecting = True
            self.serverIO.reportDisconnect()
            moved = True
        elif self.serverIO.disconnecting and not self.serverIO.disconnected:
            self.serverIO.disconnected = True
            self.clientIO.disconnecting = True
            self.clientIO.reportDisconnect()
            moved = True
        return moved

    def _set_client_paused(self, paused: bool) -> None:
        if paused == self._client_paused:
            return
        self._client_paused = paused
        producer = self.clientIO.producer
        if producer is None or not self.clientIO.streamingProducer:
            return
        if paused:
            producer.pauseProducing()
        else:
            producer.resumeProducing()

    @property
    def closed(self) -> bool:
        """
        Whether both sides have been told the connection is gone.
        """
        return bool(self.clientIO.disconnected and self.serverIO.disconnected)


class MemoryPair(NamedTuple):
    """
    What :func:`connected_pair` returns: unpack it as ``client, server,
    pump`` or use the helpers.
    """

    client: FramedProtocol
    server: IProtocol
    pump: MemoryPump

    @property
    def clock(self) -> Clock:
        clock: Clock = self.pump.clock
        return clock

    def flush(self, max_rounds: int = DEFAULT_MAX_ROUNDS) -> bool:
        """
        Move bytes (and run ``callLater(0)`` calls) until nothing moves.

        :return: whether anything moved.
        :raises RuntimeError: still moving after ``max_rounds`` rounds.
        """
        return _flush_pumps([self.pump], self.clock, max_rounds)

    def advance(self, seconds: float) -> None:
        """
        Let ``seconds`` pass on the clock, then :meth:`flush`.
        """
        self.clock.advance(seconds)
        self.flush()

    def cut(self, reason: str = "connection cut by the test") -> None:
        """
        Drop the connection without a clean close, both sides at once.
        """
        _cut(self.pump, reason)


def _make_transports(
    client: IProtocol, server: IProtocol
) -> tuple[FakeTransport, FakeTransport]:
    client_addr = FakeAddress()
    server_addr = FakeAddress()
    client_io = FakeTransport(client, False, client_addr, server_addr)  # type: ignore[no-untyped-call]
    server_io = FakeTransport(server, True, server_addr, client_addr)  # type: ignore[no-untyped-call]
    return client_io, server_io


def _cut(pump: MemoryPump, reason: str) -> None:
    failure = TCPConnectionLost(reason)
    pump.clientIO.disconnectReason = failure
    pump.serverIO.disconnectReason = failure
    pump._held, pump.held = [], 0
    for side in (pump.clientIO, pump.serverIO):
        if not side.disconnected:
            side.disconnecting = True
            side.disconnected = True
            side.stream = []
            side.reportDisconnect()


def _flush_pumps(pumps: list[MemoryPump], clock: Clock, max_rounds: int) -> bool:
    moved_any = False
    for _ in range(max_rounds):
        clock.advance(0)
        moved = False
        for pump in pumps:
            if not pump.closed and pump.pump(advanceClock=False):
                moved = True
        now = clock.seconds()
        due = any(call.getTime() <= now for call in clock.getDelayedCalls())
        if not (moved or due):
            return moved_any
        moved_any = True
    raise RuntimeError(
        f"still moving bytes after {max_rounds} rounds: the code under test "
        f"keeps writing or rescheduling itself (a livelock)"
    )


def _default_server_factory(codec: Codec | None, clock: Clock) -> IProtocolFactory:
    if codec is not None and not isinstance(codec, FC1Codec):
        raise ValueError(
            f"the reference server speaks fc1 only; pass a server_factory for {codec!r}"
        )
    return ReferenceServerFactory(codec=codec, clock=clock)


def connected_pair(
    server_factory: IProtocolFactory | None = None,
    codec: Codec | None = None,
    clock: Clock | None = None,
    *,
    greet: bool = True,
    **config: Any,
) -> MemoryPair:
    """
    One client connection wired to one server protocol, in memory.

    :param server_factory: builds the server side; the fc1 reference server
        (:class:`~framedclient.server.ReferenceServerFactory`, echo plus its
        ``!commands``) on the same clock by default.
    :param codec: the client's codec; fc1 by default.
    :param clock: the clock both sides run on; a new ``Clock`` by default.
    :param greet: flush once before returning, so that whatever the server
        sends on connecting has arrived (as ``iosim`` does).
    :param config: more :class:`~framedclient.config.ProtocolConfig`
        fields for the client (``request_timeout``, ``max_write_buffer``,
        ``heartbeat_interval``, ...).
    :return: ``(client, server, pump)``, already connected (both
        ``connectionMade`` have run).  Call ``pump.flush()`` to move bytes.
    """
    clock = clock if clock is not None else Clock()
    if server_factory is None:
        server_factory = _default_server_factory(codec, clock)
    factory = FramedClientFactory(codec or FC1Codec(), clock=clock, **config)
    client = factory.buildProtocol(None)
    server = server_factory.buildProtocol(FakeAddress())
    if server is None:
        raise ValueError(f"{server_factory!r} refused to build a protocol")
    client_io, server_io = _make_transports(client, server)
    server.makeConnection(server_io)
    client.makeConnection(client_io)  # type: ignore[no-untyped-call]
    pump = MemoryPump(client, server, client_io, server_io, clock)
    if greet:
        _flush_pumps([pump], clock, DEFAULT_MAX_ROUNDS)
    return MemoryPair(client, server, pump)


class MemoryConnection:
    """
    One connection made through a :class:`MemoryServer`.

    :ivar client: the client-side protocol (what the endpoint's factory
        built).
    :ivar server: the server-side protocol.
    :ivar pump: moves the bytes.
    """

    def __init__(self, client: IProtocol, server: IProtocol, pump: MemoryPump) -> None:
        self.client = client
        self.server = server
        self.pump = pump

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<MemoryConnection {state} client={self.client!r}>"

    @property
    def closed(self) -> bool:
        return self.pump.closed

    def cut(self, reason: str = "connection cut by the test") -> None:
        """
        Drop the connection at once, without a clean close (a reset).
        """
        _cut(self.pump, reason)

    def close(self) -> None:
        """
        The server closes the connection cleanly (after what it wrote so far
        is delivered, on the next flush).
        """
        self.pump.serverIO.loseConnection()

    def stop_reading(self, pause_at: int = 64 * 1024) -> None:
        """
        The server stops reading: the client's bytes pile up in the pump and
        once ``pause_at`` bytes are held the client's producer is paused.
        """
        self.pump.pause_at = pause_at
        self.pump.server_reading = False

    def resume_reading(self) -> None:
        """
        The server reads again: held bytes are delivered on the next flush
        and the client's producer resumes.
        """
        self.pump.server_reading = True

    def send_to_client(self, data: bytes) -> None:
        """
        Queue raw bytes from the server to the client (hostile or broken
        servers), delivered on the next flush.
        """
        self.pump.serverIO.write(data)


class MemoryServer:
    """
    A server reachable only through in-memory endpoints.

    :param server_factory: builds one server protocol per connection; the
        fc1 reference server on ``clock`` by default.
    :param clock: the clock both sides run on; a new ``Clock`` by default.
        Give the same clock to the client.

    :ivar connections: every connection made, oldest first (closed ones
        included until :meth:`forget_closed`).
    :ivar attempts: connection attempts seen, refused ones included.
    :ivar mode: what happens to new connection attempts: ``"accept"``,
        ``"refuse"`` (fail with ``ConnectionRefusedError``) or ``"hang"``
        (never complete, until the client's connect timeout cancels them).
    """

    def __init__(
        self,
        server_factory: IProtocolFactory | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.clock = clock if clock is not None else Clock()
        self.factory: IProtocolFactory = (
            server_factory
            if server_factory is not None
            else _default_server_factory(None, self.clock)
        )
        #: Every connection accepted, open or closed, oldest first.
        self.connections: list[MemoryConnection] = []
        #: Connection attempts seen, whatever became of them.
        self.attempts = 0
        #: What the next connection attempts meet: ``"accept"``,
        #: ``"refuse"`` or ``"hang"`` (see :meth:`refuse`, :meth:`hang`,
        #: :meth:`accept`).
        self.mode = "accept"
        self._connecting: list[tuple[IProtocolFactory, Deferred[IProtocol]]] = []

    def __repr__(self) -> str:
        open_ = sum(1 for c in self.connections if not c.closed)
        return f"<MemoryServer {self.mode} open={open_} attempts={self.attempts}>"

    def endpoint(self) -> MemoryEndpoint:
        """
        A client endpoint whose connections lead to this server.
        """
        return MemoryEndpoint(self)

    @property
    def open_connections(self) -> list[MemoryConnection]:
        return [c for c in self.connections if not c.closed]

    @property
    def pending_attempts(self) -> int:
        """
        Connection attempts not settled yet (hanging, or waiting for the next
        flush).
        """
        return len(self._connecting)

    def refuse(self) -> None:
        """
        Refuse new connection attempts from the next flush on (a server that
        is down).  Open connections are not touched.
        """
        self.mode = "refuse"

    def hang(self) -> None:
        """
        Leave new connection attempts unanswered (a black-holed address).
        """
        self.mode = "hang"

    def accept(self) -> None:
        """
        Accept connection attempts again (hanging ones too, on next flush).
        """
        self.mode = "accept"

    def drop_all(self, reason: str = "server dropped every connection") -> int:
        """
        Cut every open connection (a server crash, as clients see it).

        :return: how many were cut.
        """
        victims = self.open_connections
        for conn in victims:
            conn.cut(reason)
        return len(victims)

    def forget_closed(self) -> None:
        """
        Drop closed connections from :attr:`connections` (long tests).
        """
        self.connections = self.open_connections

    def flush(self, max_rounds: int = DEFAULT_MAX_ROUNDS) -> bool:
        """
        Settle connection attempts, move bytes both ways and run the clock's
        ``callLater(0)`` calls, until nothing moves.

        :return: whether anything moved.
        :raises RuntimeError: still moving after ``max_rounds`` rounds.
        """
        moved_any = False
        for _ in range(max_rounds):
            moved = self._settle_attempts()
            pumps = [c.pump for c in self.connections if not c.closed]
            moved = _flush_pumps(pumps, self.clock, max_rounds) or moved
            # Running the clock may have started new attempts; settle them.
            if not moved and not (self._connecting and self.mode != "hang"):
                return moved_any
            moved_any = True
        raise RuntimeError(
            f"connections still being made after {max_rounds} rounds: the "
            f"client reconnects in a loop without waiting"
        )

    def advance(self, seconds: float, step: float | None = None) -> None:
        """
        Let ``seconds`` pass, flushing after each ``step`` (default: once,
        at the end; give a step to let timers and traffic interleave).
        """
        if step is None or step >= seconds:
            self.clock.advance(seconds)
            self.flush()
            return
        if not step > 0:
            raise ValueError(f"step must be positive, got {step!r}")
        remaining = seconds
        while remaining > 1e-12:
            now = min(step, remaining)
            self.clock.advance(now)
            self.flush()
            remaining -= now

    # -- endpoint side --------------------------------------------------------

    def _connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        self.attempts += 1
        entry: tuple[IProtocolFactory, Deferred[IProtocol]]

        def cancel(d: Deferred[IProtocol]) -> None:
            try:
                self._connecting.remove(entry)
            except ValueError:
                pass

        d: Deferred[IProtocol] = Deferred(cancel)
        entry = (factory, d)
        self._connecting.append(entry)
        return d

    def _settle_attempts(self) -> bool:
        if not self._connecting or self.mode == "hang":
            return False
        attempts, self._connecting = self._connecting, []
        for factory, d in attempts:
            if self.mode == "refuse":
                d.errback(ConnectionRefusedError("refused by the memory server"))  # type: ignore[no-untyped-call]
                continue
            client = factory.buildProtocol(FakeAddress())
            if client is None:
                d.errback(CancelledError("the client factory built no protocol"))
                continue
            server = self.factory.buildProtocol(FakeAddress())
            if server is None:
                d.errback(ConnectionRefusedError("the server factory built nothing"))  # type: ignore[no-untyped-call]
                continue
            client_io, server_io = _make_transports(client, server)
            server.makeConnection(server_io)
            client.makeConnection(client_io)
            pump = MemoryPump(client, server, client_io, server_io, self.clock)
            self.connections.append(MemoryConnection(client, server, pump))
            d.callback(client)
        return True


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """
    An ``IStreamClientEndpoint`` leading to a :class:`MemoryServer`.

    ``connect()`` returns a Deferred that the server settles on its next
    flush (accepted, refused or left hanging, see :attr:`MemoryServer.mode`),
    so a connect is asynchronous as it is on a real network.
    """

    def __init__(self, server: MemoryServer) -> None:
        self.server = server

    def __repr__(self) -> str:
        return f"<MemoryEndpoint {self.server!r}>"

    def __str__(self) -> str:
        # The connections' names: "memory/0", "memory/1", ...
        return "memory"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:  # noqa: N803
        return self.server._connect(protocolFactory)


def memory_client(
    server: MemoryServer | None = None,
    clock: Clock | None = None,
    *,
    endpoints: int = 1,
    **options: Any,
) -> tuple[FramedClient, MemoryServer]:
    """
    A :class:`~framedclient.client.FramedClient` connected to an in-memory
    server.

    :param server: where the client connects; a new :class:`MemoryServer`
        running the reference server by default.
    :param clock: the clock for both; the server's clock by default.
    :param endpoints: how many upstreams the client sees (all lead to the
        same server).
    :param options: more :class:`~framedclient.client.FramedClient` keyword
        arguments (``pool_size``, ``request_timeout``, ``backoff``, ...).
    :return: ``(client, server)``; call ``server.flush()`` to let the client
        connect and requests travel, ``server.advance(s)`` to let time pass.
    """
    if server is None:
        server = MemoryServer(clock=clock)
    elif clock is not None and clock is not server.clock:
        raise ValueError("the client and the memory server must share one clock")
    client = FramedClient(
        [server.endpoint() for _ in range(endpoints)], server.clock, **options
    )
    return client, server
