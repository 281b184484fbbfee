"""
Why is it unavailable?  ``Unavailable`` names the upstreams, the last
connection error of each, and advice that fits the settings in use (issue
21, item 3).
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from framedclient.backoff import ConstantBackoff
from framedclient.client import FramedClient
from framedclient.errors import Unavailable

from .fakes import ScriptedEndpoint
from .servers import free_port
from .wire import outcomes


def make(*endpoints: ScriptedEndpoint, **kw):
    clock = Clock()
    kw.setdefault("backoff", ConstantBackoff(1.0))
    kw.setdefault("pool_size", 1)
    names = [f"tcp:10.0.0.{i + 1}:9000" for i in range(len(endpoints))]
    client = FramedClient(list(endpoints), clock, names=names, **kw)
    return client, clock


def message_of(d) -> str:
    (result,) = outcomes([d])
    assert isinstance(result, Failure) and result.check(Unavailable), result
    return str(result.value)


def test_the_deadline_message_names_the_upstream_and_its_last_error():
    endpoint = ScriptedEndpoint(auto="down")
    client, clock = make(endpoint, request_timeout=3.0)
    d = client.request(b"x")
    clock.advance(3.0)
    text = message_of(d)
    assert "tcp:10.0.0.1:9000" in text
    assert "connection refused" in text
    assert "3 s" in text
    assert "not sent" in text
    # wait_for_ready is on (the default): the advice fits that.
    assert "wait_for_ready" not in text
    assert "longer timeout" in text


def test_the_fail_fast_message_advises_waiting_for_ready():
    endpoint = ScriptedEndpoint(auto="down")
    client, clock = make(endpoint, wait_for_ready=False)
    clock.advance(0)
    text = message_of(client.request(b"x"))
    assert "tcp:10.0.0.1:9000" in text
    assert "connection refused" in text
    assert "wait_for_ready=True" in text


def test_each_upstream_is_named_with_its_own_error():
    refusing = ScriptedEndpoint(auto="down")
    hanging = ScriptedEndpoint()
    client, clock = make(refusing, hanging, wait_for_ready=False)
    clock.advance(0)
    text = message_of(client.request(b"x"))
    assert "tcp:10.0.0.1:9000: connection refused" in text
    assert "tcp:10.0.0.2:9000: still connecting" in text


def test_a_connect_that_never_finishes_is_called_so():
    hanging = ScriptedEndpoint()
    client, clock = make(hanging, request_timeout=2.0)
    d = client.request(b"x")
    clock.advance(2.0)
    text = message_of(d)
    assert "tcp:10.0.0.1:9000" in text
    assert "still connecting" in text
    assert "connect_timeout" in text


@pytest_twisted.ensureDeferred
async def test_nothing_listening_says_connection_refused_and_where():
    port = free_port()
    client = FramedClient.from_endpoint(
        reactor, f"tcp:127.0.0.1:{port}", request_timeout=0.5
    )
    try:
        with pytest.raises(Unavailable) as caught:
            await client.request(b"x")
        text = str(caught.value)
        assert f"tcp:127.0.0.1:{port}" in text
        assert "connection refused" in text
        assert "wait_for_ready" not in text
    finally:
        await client.close()
