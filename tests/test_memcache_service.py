"""
:class:`MemcacheClient` embedded as a Twisted citizen, against a real
memcached: under :class:`FramedClientService`, in ``async with``, and under
``twistd`` as docs/twistd.md shows it.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from framedclient import FramedClient, FramedClientService, MemcacheClient
from framedclient.errors import ClientClosed

from .servers import memcached_server
from .test_doc_samples import _run_twistd

TWISTD_DOC = Path(__file__).resolve().parents[1] / "docs" / "twistd.md"


@pytest.fixture
def server():
    with memcached_server() as server:
        yield server


def endpoint(server) -> str:
    return f"tcp:127.0.0.1:{server.port}"


@pytest_twisted.ensureDeferred
async def test_memcache_client_runs_under_framed_client_service(server):
    service = FramedClientService(
        lambda: MemcacheClient.from_endpoint(reactor, endpoint(server), start=False),
        drain_timeout=2.0,
    )
    service.startService()
    mc = service.client
    assert isinstance(mc, MemcacheClient)
    await mc.when_ready()
    await mc.set(b"k", b"v")
    assert await mc.get(b"k") == b"v"
    await service.stopService()
    assert service.client is None
    with pytest.raises(ClientClosed):
        await mc.get(b"k")


@pytest_twisted.ensureDeferred
async def test_memcache_client_is_closed_on_leaving_async_with(server):
    async with MemcacheClient.from_endpoint(reactor, endpoint(server)) as mc:
        assert isinstance(mc, MemcacheClient)
        assert await mc.incr(b"n", initial=7) == 7
    with pytest.raises(ClientClosed):
        await mc.incr(b"n")


@pytest_twisted.ensureDeferred
async def test_memcache_stats_and_metrics_are_reachable_without_dot_client(server):
    async with MemcacheClient.from_endpoint(reactor, endpoint(server)) as mc:
        await mc.set(b"k", b"v")
        assert await mc.get(b"nope") is None
        assert mc.metrics is mc.client.metrics
        stats = mc.stats()
        # The miss is a memcached status, not an ok reply of the client.
        assert sum(stats["metrics"]["requests"].values()) == 2
        assert stats["in_flight"] == 0
        assert mc.debug_state()["upstreams"]


def test_the_service_refuses_a_client_instead_of_a_function_that_builds_one():
    client = FramedClient.from_endpoint(reactor, "tcp:127.0.0.1:1", start=False)
    with pytest.raises(TypeError, match="make_client must be a function"):
        FramedClientService(client)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [FramedClient, MemcacheClient])
def test_the_service_refuses_a_client_class(cls: type) -> None:
    # A class is callable, but calling it with no endpoint fails only later,
    # at start, with a message about a missing argument of its constructor.
    with pytest.raises(TypeError) as caught:
        FramedClientService(cls)
    message = str(caught.value)
    assert f"the class {cls.__name__}" in message
    assert f"lambda: {cls.__name__}.from_endpoint(" in message


def test_the_service_says_when_make_client_builds_no_client():
    service = FramedClientService(lambda: "tcp:127.0.0.1:1")  # type: ignore[arg-type, type-var]
    with pytest.raises(TypeError, match="has no start"):
        service.startService()
    assert not service.running and service.client is None


def _doc_tac(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", TWISTD_DOC.read_text(), re.S)
    (block,) = [b for b in blocks if marker in b]
    return block


@pytest.mark.slow
def test_memcache_client_runs_under_twistd_as_documented(server, tmp_path):
    tac = tmp_path / "hits.tac"
    code = _doc_tac("MemcacheClient.from_endpoint")
    tac.write_text(code.replace("127.0.0.1:11211", f"127.0.0.1:{server.port}"))
    # Twice: the client serves the timer's calls, not just the first.
    status, log = _run_twistd(tac, "hits: 2")
    assert status in (0, -signal.SIGTERM), log
    assert "Server Shut Down." in log and "Traceback" not in log, log
