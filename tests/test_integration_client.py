"""
FramedClient against the reference server over loopback, including killing
and restarting the server.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, gatherResults
from twisted.internet.task import deferLater

from framedclient import FramedClient
from framedclient.backoff import ExponentialBackoff
from framedclient.errors import ConnectionLost, RemoteError, Unavailable
from framedclient.server import ReferenceServerFactory, listen

FAST = ExponentialBackoff(initial=0.05, max_delay=0.2, min_connect_timeout=1.0)


@pytest_twisted.ensureDeferred
async def test_client_survives_a_server_restart():
    server = ReferenceServerFactory(clock=reactor)
    port = await listen(reactor, "tcp:0:interface=127.0.0.1", server)
    number = port.getHost().port
    client = FramedClient.from_endpoint(
        reactor,
        f"tcp:127.0.0.1:{number}",
        pool_size=2,
        max_in_flight=256,
        request_timeout=5.0,
        backoff=FAST,
    )
    try:
        await client.when_ready()
        bodies = [b"before-%d" % i for i in range(1000)]
        assert await gatherResults([client.request(b) for b in bodies]) == bodies
        assert len(server.connections) == 2
        with pytest.raises(RemoteError, match="no such key"):
            await client.request(b"!error:no such key")

        # Kill the server with requests in flight.
        held = [client.request(b"!delay:5 held-%d" % i) for i in range(50)]
        await deferLater(reactor, 0.05, lambda: None)
        await port.stopListening()
        server.drop_all()
        results = await DeferredList(held, consumeErrors=True)
        assert all(not ok and f.check(ConnectionLost) for ok, f in results)
        assert client.in_flight == 0

        # While it is down, a caller who will not wait learns at once.
        with pytest.raises(Unavailable, match="not sent"):
            await client.request(b"now?", wait_for_ready=False)
        # Callers who wait are served once it is back, on the same port.
        waiting = [client.request(b"during-%d" % i) for i in range(20)]
        await deferLater(reactor, 0.3, lambda: None)
        server2 = ReferenceServerFactory(clock=reactor)
        port = await listen(reactor, f"tcp:{number}:interface=127.0.0.1", server2)
        assert await gatherResults(waiting) == [b"during-%d" % i for i in range(20)]
        after = [b"after-%d" % i for i in range(200)]
        assert await gatherResults([client.request(b) for b in after]) == after
        for _ in range(100):  # both connections back within ~1 s (bounded)
            if client.pool.ready_count == 2:
                break
            await deferLater(reactor, 0.02, lambda: None)
        state = client.debug_state()
        assert state["connections"] == {"ready": 2}
        assert state["metrics"]["connections"]["connect_failed"] >= 1
    finally:
        await client.close(timeout=2)
        await port.stopListening()
    assert client.pool.counts_by_state() == {"closed": 2}
