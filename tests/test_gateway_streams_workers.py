"""
``/v1/stream`` and ``/v1/subscribe`` with ``--workers 2`` (real processes
sharing the HTTP socket, against one reference server of the test's own so
that every worker's subscriptions see every publish), and on the status
page in headless Chromium.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from framedclient.runner.streaming import END_RECORD, read_records
from framedclient.server import ReferenceServerFactory
from tests.test_gateway_streams import EventReader
from tests.test_runner_browser import _poll, _value, _with_page
from tests.test_runner_gateway import running, wait_until
from tests.test_runner_process import http_client
from tests.test_runner_workers import stats, two_workers

pytestmark = pytest.mark.slow

SUBSCRIBERS = 6


@pytest_twisted.ensureDeferred
async def test_streams_and_subscribers_work_across_workers_and_add_up_in_stats():
    factory = ReferenceServerFactory(clock=reactor)
    factory.noisy = False
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    readers: list[EventReader] = []
    try:
        upstream = f"tcp:127.0.0.1:{port.getHost().port}"
        async with two_workers("--upstream", upstream) as (_, url):
            http = http_client()
            for _ in range(SUBSCRIBERS):
                readers.append(await EventReader().open_at(http, url, "?topic=news"))
            for reader in readers:
                await wait_until(lambda r=reader: bool(r.of("subscribed")), 10)
            # Every connection of the test went to one worker or the other;
            # the sums say all of them, whichever worker answers.
            for _ in range(4):
                gateway = (await stats(url))["gateway"]
                assert gateway["http_subscribers"] == SUBSCRIBERS
            workers = {w["worker"] for w in (await stats(url))["workers"] if w["up"]}
            assert workers == {0, 1}
            for i in range(10):
                response = await http.post(
                    url + "/v1/request", data=b"!publish:news %d" % i
                )
                assert response.code == 200
                await response.content()
            for reader in readers:
                await wait_until(lambda r=reader: len(r.of("message")) == 10, 10)
                assert [m["data"] for m in reader.of("message")] == [
                    str(i) for i in range(10)
                ]
            response = await http.post(url + "/v1/stream", data=b"!stream:100:10")
            records = read_records(await response.content())
            assert records[-1][0] == END_RECORD
            assert json.loads(records[-1][1])["parts"] == 100
            for reader in readers:
                reader.close()

            async def none_left() -> bool:
                return (await stats(url))["gateway"]["http_subscribers"] == 0

            for _ in range(200):
                if await none_left():
                    break
            else:
                raise AssertionError("subscribers still counted")
            gateway = (await stats(url))["gateway"]
            assert gateway["http_subscribers_total"] == SUBSCRIBERS
            assert gateway["http_streams_total"] == 1
        # Each subscription was unsubscribed upstream when its client went.
        await wait_until(lambda: not factory.subscribers.get(b"news"), 10)
    finally:
        for reader in readers:
            if reader.done is not None and not reader.done.called:
                reader.close()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_status_page_shows_the_open_subscribers():
    async with running() as runner:
        reader = await EventReader().open(runner, "?topic=t")
        await wait_until(lambda: reader.of("subscribed"))

        def steps(driver: Any) -> str:
            return _poll(  # type: ignore[no-any-return]
                lambda: _value(driver, "sum-subscribers") == "1" and "1",
                10,
                "the page did not show the subscriber",
            )

        assert await _with_page(runner, steps) == "1"
        reader.close()
