"""
FramedProtocol over real loopback sockets against the reference server.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint

from framedclient.codecs import FC1Codec
from framedclient.errors import ConnectionLost, RemoteError, RequestTimeout
from framedclient.protocol import FramedClientFactory, FramedProtocol
from framedclient.server import ReferenceServerFactory, listen


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_over_loopback_each_get_their_reply():
    server = ReferenceServerFactory(clock=reactor)
    port = await listen(reactor, "tcp:0:interface=127.0.0.1", server)
    try:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        proto: FramedProtocol = await endpoint.connect(
            FramedClientFactory(FC1Codec(), request_timeout=5.0)
        )
        # Mixed: plain echoes, delayed replies (which come back out of
        # order), and one error reply.
        bodies = [b"echo-%d" % i for i in range(500)] + [
            b"!delay:0.0%d later-%d" % (i % 5, i) for i in range(100)
        ]
        replies = await gatherResults([proto.request(b) for b in bodies])
        assert replies == bodies
        failure = None
        try:
            await proto.request(b"!error:nope")
        except RemoteError as e:
            failure = e
        assert failure is not None and failure.message == "nope"
        try:
            await proto.request(b"!hold", timeout=0.05)
        except RequestTimeout:
            pass
        else:
            raise AssertionError("held request did not time out")
        # A dropped connection fails what is pending, and says it was sent.
        pending = proto.request(b"!hold")
        dropper = proto.request(b"!drop")
        results = await DeferredList([pending, dropper], consumeErrors=True)
        for ok, failure in results:
            assert not ok and failure.check(ConnectionLost)
            assert failure.value.written
        await proto.when_closed()
    finally:
        await port.stopListening()
