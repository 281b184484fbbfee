"""
Test helpers: a scripted fc1 peer on the far side of a StringTransport.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from framedclient.codecs import FC1Codec
from framedclient.protocol import FramedProtocol, ProtocolConfig

CODEC = FC1Codec()


class Peer:
    """
    Reads what the client wrote and answers with hand-made frames, so tests
    control exactly which bytes arrive, when, and how they are split.
    """

    def __init__(self, proto: FramedProtocol, transport: StringTransport) -> None:
        self.proto = proto
        self.transport = transport
        self._framer = CODEC.new_framer()

    def received(self) -> list[tuple[int, int, bytes]]:
        """
        Messages the client wrote since the last call: (kind, id, body).
        """
        data = self.transport.value()
        self.transport.clear()
        return [CODEC.decode(frame) for frame in self._framer.feed(data)]

    def send(self, kind: int, request_id: int, body: bytes = b"") -> None:
        self.proto.dataReceived(CODEC.encode(kind, request_id, body))


def connect(
    config: ProtocolConfig | None = None, clock: Clock | None = None
) -> tuple[FramedProtocol, Peer, Clock]:
    clock = clock or Clock()
    proto = FramedProtocol(config or ProtocolConfig(), clock)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, Peer(proto, transport), clock


def outcomes(deferreds: list) -> list:  # type: ignore[type-arg]
    """
    What each Deferred fired with (result or Failure), or a marker if it has
    not fired; also checks none fired twice (Deferred raises on that).
    """
    results: list = []  # type: ignore[type-arg]
    for d in deferreds:
        box: list = []  # type: ignore[type-arg]
        d.addBoth(lambda r, box=box: box.append(r))
        results.append(box[0] if box else "pending")
    return results
