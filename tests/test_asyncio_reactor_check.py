"""
A client started from a running asyncio loop warns, once, when the Twisted
reactor it uses does not run on that loop: otherwise every request hangs
with no error at all (docs/asyncio.md).  Ordinary Twisted programs and
correctly set-up asyncio programs see nothing.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator

import pytest
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.task import Clock

from framedclient import FramedClient, asyncio_reactor_check
from framedclient.asyncio_reactor_check import (
    ReactorNotRunningWarning,
    warn_if_asyncio_without_its_reactor,
)
from framedclient.testing import memory_client


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # "Once per process": each test is a new process here.
    monkeypatch.setattr(asyncio_reactor_check, "_warned", False)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def started_inside(loop: asyncio.AbstractEventLoop, clients: int = 1) -> list[str]:
    """Start ``clients`` clients from a coroutine on ``loop``; the warnings."""

    async def main() -> None:
        for _ in range(clients):
            client, server = memory_client()  # its reactor: a Clock
            server.flush()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop.run_until_complete(main())
    return [
        str(w.message)
        for w in caught
        if issubclass(w.category, ReactorNotRunningWarning)
    ]


def test_starting_inside_asyncio_without_the_asyncio_reactor_warns_once(
    loop: asyncio.AbstractEventLoop,
) -> None:
    messages = started_inside(loop, clients=3)
    assert len(messages) == 1, messages
    message = messages[0]
    assert "Clock" in message and "not the asyncio reactor" in message
    assert "will hang" in message
    assert "asyncioreactor.install(loop) before anything imports" in message
    assert "docs/asyncio.md" in message


def test_the_warning_points_at_the_line_that_made_the_client(
    loop: asyncio.AbstractEventLoop,
) -> None:
    async def main() -> None:
        FramedClient.from_endpoint(Clock(), "tcp:127.0.0.1:9000", start=True)

    with pytest.warns(ReactorNotRunningWarning) as caught:
        loop.run_until_complete(main())
    (warning,) = caught
    assert warning.filename == __file__


def test_an_ordinary_twisted_program_sees_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client, server = memory_client()
        server.flush()
        assert client.stats()["connections"]


def test_the_asyncio_reactor_on_the_running_loop_sees_no_warning(
    loop: asyncio.AbstractEventLoop,
) -> None:
    reactor = AsyncioSelectorReactor(loop)

    async def main() -> None:
        warn_if_asyncio_without_its_reactor(reactor)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loop.run_until_complete(main())


def test_the_asyncio_reactor_on_another_loop_warns(
    loop: asyncio.AbstractEventLoop,
) -> None:
    other = asyncio.new_event_loop()
    try:
        reactor = AsyncioSelectorReactor(other)

        async def main() -> None:
            warn_if_asyncio_without_its_reactor(reactor)

        with pytest.warns(ReactorNotRunningWarning, match="another loop"):
            loop.run_until_complete(main())
    finally:
        other.close()
