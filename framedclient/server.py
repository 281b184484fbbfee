"""
The reference server for the fc1 protocol.

It echoes every request body back as the reply, unless the body starts with
a command that asks for something else.  Tests, demos and benchmarks use the
commands to exercise every path a client must handle:

====================  =========================================================
body starts with      the server ...
====================  =========================================================
``!delay:S``          replies (echoing the whole body) after ``S`` seconds; a
                      cancel frame for the request withdraws the reply
``!error:MSG``        sends an error reply whose message is ``MSG``
``!drop``             closes the connection at once, without replying
``!hold``             never replies (the client's timeout must fire)
``!goaway``           replies, then sends GOAWAY (drain and reconnect)
``!size:N``           replies with ``N`` bytes (``b"x" * N``)
``!mute``             ignores everything from now on, pings included, but keeps
                      the connection open (a half-open peer)
``!reverse:N``        holds the reply until ``N`` such requests are held on the
                      connection, then answers them all in reverse order
``!stream:N:SIZE``    streams ``N`` PART frames of ``SIZE`` bytes (part ``i``
                      starts with ``i`` in decimal and a colon), as fast as
                      the client reads, then an empty REPLY; CANCEL stops it;
                      ``!stream:N:SIZE:TAG`` starts each part with ``TAG:i:``
                      (a stream's identity, so a test can tell whose it got)
``!subscribe:T``      this connection receives the PUSH frames of topic ``T``
``!unsubscribe:T``    stops those PUSH frames on this connection
``!publish:T DATA``   sends ``DATA`` in a PUSH to every subscriber of ``T``;
                      replies with their number (decimal)
====================  =========================================================

``--delay S`` (``ReferenceServerFactory(delay=S)``) makes every plain echo
wait ``S`` seconds: a slow host, to try hedging on.

Run it with ``python -m framedclient.server --port 9000`` or
``twist framedserver``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from framedclient.codecs import (
    CANCEL,
    ERROR,
    GOAWAY,
    PING,
    PONG,
    REPLY,
    REQUEST,
    FC1Codec,
)
from framedclient.codecs.base import PART
from framedclient.codecs.fc1 import encode_push
from framedclient.errors import ProtocolError

__all__ = ["ReferenceServerFactory", "ReferenceServerProtocol", "listen", "main"]

_log = Logger()


@implementer(IPushProducer)
class ReferenceServerProtocol(Protocol):
    """
    One client connection to the reference server.
    """

    factory: ReferenceServerFactory

    def __init__(self, codec: FC1Codec, clock: IReactorTime) -> None:
        self._codec = codec
        self._framer = codec.new_framer()
        self._clock = clock
        self._delayed: dict[int, IDelayedCall] = {}
        self._held: set[int] = set()
        self._reversed: list[tuple[int, bytes]] = []
        self._out: list[bytes] = []
        self._muted = False
        self._closed = False
        # Streams being sent: request ID -> [next part, parts, size].
        self._streams: dict[int, list[int]] = {}
        # The TAG of the streams that asked for one (!stream:N:SIZE:TAG).
        self._tags: dict[int, bytes] = {}
        self._pump_call: IDelayedCall | None = None
        self._paused = False
        self._producing = False
        self.topics: set[bytes] = set()

    def connectionMade(self) -> None:
        self.factory.connections.add(self)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._schedule_pump()

    def stopProducing(self) -> None:
        self._streams.clear()
        self._tags.clear()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed = True
        self.factory.connections.discard(self)
        for topic in self.topics:
            self.factory.subscribers.get(topic, set()).discard(self)
        self.topics.clear()
        self._streams.clear()
        self._tags.clear()
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self._pump_call = None
        for call in self._delayed.values():
            if call.active():
                call.cancel()
        self._delayed.clear()

    def dataReceived(self, data: bytes) -> None:
        if self._muted or self._closed:
            return
        try:
            frames = self._framer.feed(data)
        except ProtocolError as e:
            frames = e.frames
            self._handle(frames)
            _log.warn("Closing a client connection: {error}", error=str(e))
            self._write()
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self._handle(frames)
        self._write()

    def _handle(self, frames: list[bytes]) -> None:
        decode = self._codec.decode
        encode = self._codec.encode
        out = self._out
        factory = self.factory
        for frame in frames:
            if self._muted or self._closed:
                return
            try:
                kind, request_id, body = decode(frame)
            except ProtocolError as e:
                _log.warn("Closing a client connection: {error}", error=str(e))
                self._closed = True
                self.transport.loseConnection()  # type: ignore[union-attr]
                return
            if kind == REQUEST:
                factory.requests += 1
                if body[:1] == b"!":
                    self._command(request_id, body)
                elif factory.delay:
                    self._delayed[request_id] = self._clock.callLater(
                        factory.delay, self._send_delayed, request_id, body
                    )
                else:
                    out.append(encode(REPLY, request_id, body))
            elif kind == PING:
                out.append(encode(PONG, request_id, body))
            elif kind == CANCEL:
                factory.cancels += 1
                self._cancel(request_id)

    def _command(self, request_id: int, body: bytes) -> None:
        encode = self._codec.encode
        word, _, rest = body[1:].partition(b" ")
        name, _, arg = word.partition(b":")
        try:
            if name == b"delay":
                delay = float(arg)
                self._delayed[request_id] = self._clock.callLater(
                    delay, self._send_delayed, request_id, body
                )
            elif name == b"error":
                message = arg + (b" " + rest if rest else b"")
                self._out.append(encode(ERROR, request_id, message))
            elif name == b"drop":
                self._write()
                self._closed = True
                self.transport.abortConnection()  # type: ignore[union-attr]
            elif name == b"hold":
                self._held.add(request_id)
            elif name == b"goaway":
                self._out.append(encode(REPLY, request_id, body))
                self._out.append(encode(GOAWAY, 0, b""))
            elif name == b"size":
                self._out.append(encode(REPLY, request_id, b"x" * int(arg)))
            elif name == b"stream":
                count, _, size = arg.partition(b":")
                size, _, tag = size.partition(b":")
                parts, part_size = int(count), int(size or b"0")
                if parts < 0 or part_size < 0:
                    raise ValueError(word)
                self._streams[request_id] = [0, parts, part_size]
                if tag:
                    self._tags[request_id] = tag + b":"
                self._schedule_pump()
            elif name == b"subscribe":
                self.topics.add(arg)
                self.factory.subscribers.setdefault(arg, set()).add(self)
                self._out.append(encode(REPLY, request_id, b"subscribed"))
            elif name == b"unsubscribe":
                self.topics.discard(arg)
                self.factory.subscribers.get(arg, set()).discard(self)
                self._out.append(encode(REPLY, request_id, b"unsubscribed"))
            elif name == b"publish":
                receivers = self.factory.publish(arg, rest)
                self._out.append(encode(REPLY, request_id, b"%d" % receivers))
            elif name == b"mute":
                self._muted = True
            elif name == b"reverse":
                self._reversed.append((request_id, body))
                if len(self._reversed) >= int(arg):
                    held, self._reversed = self._reversed, []
                    for rid, held_body in reversed(held):
                        self._out.append(encode(REPLY, rid, held_body))
            else:
                self._out.append(encode(REPLY, request_id, body))
        except ValueError:
            self._out.append(
                encode(ERROR, request_id, b"bad command argument: " + word)
            )

    def _schedule_pump(self) -> None:
        if self._closed:
            return
        if not self._streams:
            if self._producing:
                # Registered only while streaming: a transport with a
                # producer waits for it before closing.
                self._producing = self._paused = False
                self.transport.unregisterProducer()  # type: ignore[union-attr]
            return
        if not self._producing:
            # Streams are written only as fast as the client reads them.
            self._producing = True
            self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        if self._pump_call is None:
            self._pump_call = self._clock.callLater(0, self._pump)

    def _pump(self) -> None:
        # A batch of parts of every stream per reactor turn, while the
        # transport takes them: a client that stops reading stops the
        # stream here instead of filling the server's memory.
        self._pump_call = None
        if self._closed or self._paused:
            return
        encode = self._codec.encode
        out = self._out
        tags = self._tags
        for request_id, state in list(self._streams.items()):
            sent, parts, size = state
            end = min(parts, sent + 64)
            tag = tags.get(request_id, b"")
            padding = b"x" * size
            for i in range(sent, end):
                label = b"%s%d:" % (tag, i)
                body = (label + padding)[: max(size, len(label))]
                out.append(encode(PART, request_id, body))
            state[0] = end
            if end >= parts:
                del self._streams[request_id]
                tags.pop(request_id, None)
                out.append(encode(REPLY, request_id, b""))
        self._write()
        self._schedule_pump()

    def push(self, frame: bytes) -> None:
        """
        Write a PUSH frame (a publish to a topic this connection follows).
        """
        if not self._closed and not self._muted:
            self.transport.write(frame)  # type: ignore[union-attr]

    def _cancel(self, request_id: int) -> None:
        # fc1: a cancelled request that has not been answered yet is answered
        # with an error reply, so the client can release its ID at once.
        withdrawn = self._streams.pop(request_id, None) is not None
        if withdrawn:
            self._tags.pop(request_id, None)
            self._schedule_pump()
        call = self._delayed.pop(request_id, None)
        if call is not None and call.active():
            call.cancel()
            withdrawn = True
        if request_id in self._held:
            self._held.discard(request_id)
            withdrawn = True
        held_before = len(self._reversed)
        self._reversed = [(r, b) for r, b in self._reversed if r != request_id]
        withdrawn = withdrawn or len(self._reversed) != held_before
        if withdrawn:
            self._out.append(self._codec.encode(ERROR, request_id, b"cancelled"))

    def _send_delayed(self, request_id: int, body: bytes) -> None:
        self._delayed.pop(request_id, None)
        if self._closed or self._muted:
            return
        self._out.append(self._codec.encode(REPLY, request_id, body))
        self._write()

    def _write(self) -> None:
        if self._out and not self._closed:
            out, self._out = self._out, []
            self.transport.write(b"".join(out))  # type: ignore[union-attr]


class ReferenceServerFactory(Factory):
    """
    Builds :class:`ReferenceServerProtocol` connections and counts what they
    see, so tests can assert on the server side too.

    :ivar connections: the open connections.
    :ivar requests: request frames received, over all connections.
    :ivar cancels: cancel frames received.
    :ivar delay: seconds every plain echo waits (0: none), as ``!delay:S``
        does for one request: a slow host.
    """

    def __init__(
        self,
        codec: FC1Codec | None = None,
        clock: IReactorTime | None = None,
        delay: float = 0.0,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = reactor  # type: ignore[assignment]
        assert clock is not None
        self.codec = codec or FC1Codec()
        self.clock = clock
        self.connections: set[ReferenceServerProtocol] = set()
        #: the connections subscribed to each topic
        self.subscribers: dict[bytes, set[ReferenceServerProtocol]] = {}
        self.requests = 0
        self.cancels = 0
        if not (delay >= 0 and delay < float("inf")):
            raise ValueError(f"delay must be a finite number >= 0, got {delay!r}")
        self.delay = delay

    def buildProtocol(self, addr: Any) -> ReferenceServerProtocol:  # type: ignore[override]
        proto = ReferenceServerProtocol(self.codec, self.clock)
        proto.factory = self
        return proto

    def publish(self, topic: bytes, data: bytes) -> int:
        """
        Send ``data`` to every connection subscribed to ``topic``.

        :return: how many received it.
        """
        subscribers = self.subscribers.get(topic)
        if not subscribers:
            return 0
        frame = encode_push(self.codec, topic, data)
        for proto in list(subscribers):
            proto.push(frame)
        return len(subscribers)

    def drop_all(self) -> None:
        """
        Abort every open connection (a server crash, as clients see it).
        """
        for proto in list(self.connections):
            proto.transport.abortConnection()  # type: ignore[union-attr]


def listen(
    reactor: Any, description: str, factory: ReferenceServerFactory | None = None
) -> Deferred[IListeningPort]:
    """
    Listen on a server endpoint description (``"tcp:9000:interface=127.0.0.1"``).
    """
    from twisted.internet.endpoints import serverFromString

    endpoint = serverFromString(reactor, description)  # type: ignore[no-untyped-call]
    result: Deferred[IListeningPort] = endpoint.listen(
        factory or ReferenceServerFactory(clock=reactor)
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """
    ``python -m framedclient.server``: run the reference server until
    interrupted.
    """
    parser = argparse.ArgumentParser(
        prog="python -m framedclient.server",
        description="The fc1 reference server: echoes requests; see the "
        "framedclient.server docs for the commands a body may carry.",
    )
    parser.add_argument(
        "--port", type=int, default=9000, help="TCP port (default 9000)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)"
    )
    parser.add_argument(
        "--endpoint",
        help="a full Twisted server endpoint string instead of --port/--host "
        "(e.g. ssl:9443:privateKey=key.pem:certKey=cert.pem)",
    )
    parser.add_argument(
        "--max-frame",
        type=int,
        default=16 * 1024 * 1024,
        help="largest frame accepted, in bytes (default 16 MiB)",
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=0.0,
        help="seconds every plain echo waits: a slow host (default 0)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0..65535, got {args.port}")
    if not 0 <= args.delay < float("inf"):
        parser.error(f"--delay must be a finite number >= 0, got {args.delay}")

    from twisted.internet import reactor

    description = args.endpoint or f"tcp:{args.port}:interface={args.host}"
    factory = ReferenceServerFactory(
        FC1Codec(args.max_frame),
        reactor,  # type: ignore[arg-type]
        delay=args.delay,
    )

    def started(port: IListeningPort) -> None:
        address = port.getHost()
        host = getattr(address, "host", args.host)
        print(
            # Named as started (python -m framedclient.server), not as the
            # twist plugin: an operator greps for what they ran.
            f"framedclient.server (fc1 reference server) listening on "
            f"{host}:{getattr(address, 'port', '?')}",
            flush=True,
        )

    failures: list[Failure] = []

    def failed(failure: Failure) -> None:
        # One line, no traceback: the usual cause is the port being taken.
        from framedclient._endpoints import describe_listen_failure

        print(
            f"framedserver: cannot start: {describe_listen_failure(failure)}",
            file=sys.stderr,
            flush=True,
        )
        failures.append(failure)
        if reactor.running:  # type: ignore[attr-defined]
            reactor.stop()  # type: ignore[attr-defined]

    d = listen(reactor, description, factory)
    d.addCallbacks(started, failed)
    if failures:
        # A TCP port that is taken fails at once, before the reactor runs:
        # there is nothing to run (and stopping a reactor that does not run
        # yet would raise, then leave it running forever).
        return 1
    reactor.run()  # type: ignore[attr-defined]
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
