"""
Fakes for connection and pool tests: an endpoint whose attempts the test
settles by hand, and a server side that answers through a StringTransport.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost as TwistedConnectionLost
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from framedclient.codecs import REPLY, FC1Codec
from framedclient.protocol import FramedProtocol

CODEC = FC1Codec()


class ScriptedEndpoint:
    """
    An ``IStreamClientEndpoint`` whose connection attempts stay pending until
    the test calls :meth:`accept` or :meth:`refuse`, or that settles them at
    once when ``auto`` is set ("up" or "down").
    """

    def __init__(self, auto: str | None = None) -> None:
        self.attempts: list[tuple[Any, Deferred[Any]]] = []
        self.auto = auto
        self.protocols: list[FramedProtocol] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.attempts.append((factory, d))
        if self.auto == "up":
            self.accept()
        elif self.auto == "down":
            self.refuse()
        return d

    @property
    def pending(self) -> list[Deferred[Any]]:
        return [d for _, d in self.attempts if not d.called]

    def accept(self) -> FramedProtocol:
        factory, d = next((f, d) for f, d in self.attempts if not d.called)
        proto = factory.buildProtocol(None)
        proto.makeConnection(StringTransport())
        self.protocols.append(proto)
        d.callback(proto)
        return proto

    def refuse(self) -> None:
        _, d = next((f, d) for f, d in self.attempts if not d.called)
        d.errback(ConnectionRefusedError("refused by test"))


def answer_all(proto: FramedProtocol, prefix: bytes = b"") -> int:
    """
    Reply to every request the protocol has written so far (echo).
    """
    transport = proto.transport
    assert isinstance(transport, StringTransport)
    data = transport.value()
    transport.clear()
    framer = getattr(proto, "_test_framer", None)
    if framer is None:
        framer = CODEC.new_framer()
        proto._test_framer = framer  # type: ignore[attr-defined]
    out = []
    for frame in framer.feed(data):
        kind, rid, body = CODEC.decode(frame)
        if kind == 0:
            out.append(CODEC.encode(REPLY, rid, prefix + body))
    if out:
        proto.dataReceived(b"".join(out))
    return len(out)


def drop(proto: FramedProtocol, why: str = "server went away") -> None:
    """
    The server side closes the connection.
    """
    proto.connectionLost(Failure(TwistedConnectionLost(why)))
