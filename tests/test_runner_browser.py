"""
The status page in a real headless browser (Debian's ``chromium`` and
``chromium-driver``, driven by selenium) while load runs: the page must show
what ``/debug/state`` reports.

The gateway runs in this process on the reactor; selenium blocks, so every
browser step runs in a thread (``deferToThread``) while the reactor keeps
serving the page's polls and the load.

Set ``FRAMEDCLIENT_SCREENSHOT=/path.png`` to keep a screenshot of the page.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from tests.test_runner_gateway import running

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _require_browser() -> Any:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(
            "chromium and chromium-driver are not installed "
            "(apt-get install chromium chromium-driver; .ci/run does)"
        )
    return pytest.importorskip("selenium.webdriver", reason="selenium not installed")


def _start_browser(webdriver: Any, profile: str) -> Any:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1360,1300",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(
        service=Service(executable_path=CHROMEDRIVER), options=options
    )


def _poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """
    Call ``check`` until it returns something true, in the calling thread.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s; last: {last!r}")


def _page_rows(driver: Any) -> dict[str, dict[str, str]]:
    """
    Every connection row of the page: ``{name: {field: data-value}}``.
    """
    rows: dict[str, dict[str, str]] = driver.execute_script(
        """
        const out = {};
        for (const row of document.querySelectorAll('#connections tr[data-conn]')) {
          const fields = {};
          for (const td of row.querySelectorAll('td[data-field]')) {
            fields[td.dataset.field] = td.dataset.value;
          }
          out[row.dataset.conn] = fields;
        }
        return out;
        """
    )
    return rows


def _value(driver: Any, element_id: str) -> str:
    value: str = driver.execute_script(
        "return document.getElementById(arguments[0]).dataset.value;", element_id
    )
    return value


def _fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@pytest_twisted.ensureDeferred
async def test_status_page_shows_what_debug_state_reports_while_load_runs():
    webdriver = _require_browser()
    profile = tempfile.mkdtemp(prefix="framedclient-chromium-")
    driver = None
    async with running("--pool-size", "3") as runner:
        try:
            driver = await deferToThread(_start_browser, webdriver, profile)
            await deferToThread(driver.get, runner.url + "/")

            # Load: 24 workers, echoes with a little delay plus some errors.
            stop = [False]
            sent = [0]

            async def worker(n: int) -> None:
                i = 0
                while not stop[0]:
                    body = b"!error:demo" if i % 10 == 9 else b"!delay:0.005 w%d" % n
                    await runner.post(body)
                    sent[0] += 1
                    i += 1

            workers = [runner.post(b"warm-up")]
            from twisted.internet.defer import Deferred

            workers += [Deferred.fromCoroutine(worker(n)) for n in range(24)]

            def while_loaded() -> dict[str, Any]:
                # The page updates itself and shows traffic on every connection.
                def busy() -> dict[str, Any] | None:
                    rows = _page_rows(driver)
                    if len(rows) != 3:
                        return None
                    if not all(r["state"] == "ready" for r in rows.values()):
                        return None
                    rate = _value(driver, "sum-rate")
                    if not rate or float(rate) <= 0:
                        return None
                    if not all(float(r["rate"] or 0) > 0 for r in rows.values()):
                        return None
                    return {"rows": rows, "rate": float(rate)}

                return _poll(busy, 10, "the page did not show live traffic")

            loaded = await deferToThread(while_loaded)
            assert loaded["rate"] > 0
            stop[0] = True
            await DeferredList(workers)
            assert sent[0] > 100

            state_url = runner.url + "/debug/state"
            stats_url = runner.url + "/v1/stats"

            def after_load() -> dict[str, Any]:
                # With the load stopped the numbers are still; the page must
                # converge to exactly what /debug/state and /v1/stats say.
                def matches() -> dict[str, Any] | None:
                    state = _fetch_json(state_url)
                    stats = _fetch_json(stats_url)
                    rows = _page_rows(driver)
                    for upstream in state["upstreams"]:
                        row = rows.get(upstream["name"])
                        proto = upstream["protocol"]
                        if row is None or row["state"] != upstream["state"]:
                            return None
                        if row["ok"] != str(proto["ok"]):
                            return None
                        if row["failed"] != str(proto["failed"]):
                            return None
                        if row["in_flight"] != str(proto["pending"]):
                            return None
                    if _value(driver, "sum-ok") != str(stats["requests"]["ok"]):
                        return None
                    if _value(driver, "sum-in-flight") != "0":
                        return None
                    chart_total = driver.execute_script(
                        "return document.getElementById('latency-chart').dataset.total;"
                    )
                    if chart_total != str(stats["latency"]["count"]):
                        return None
                    return {"state": state, "stats": stats, "rows": rows}

                result = _poll(matches, 10, "the page did not match /debug/state")
                screenshot = os.environ.get("FRAMEDCLIENT_SCREENSHOT")
                if screenshot:
                    driver.save_screenshot(screenshot)
                return result

            final = await deferToThread(after_load)
            ok_total = sum(u["protocol"]["ok"] for u in final["state"]["upstreams"])
            failed_total = sum(
                u["protocol"]["failed"] for u in final["state"]["upstreams"]
            )
            assert ok_total > 0 and failed_total > 0
            assert final["stats"]["requests"]["remote_error"] == failed_total
            # The bars of the chart add up to the successful requests.
            bars = await deferToThread(
                driver.execute_script,
                "return Array.from(document.querySelectorAll("
                "'#latency-chart rect.bar')).map(r => Number(r.dataset.count));",
            )
            assert sum(bars) == final["stats"]["latency"]["count"] == ok_total

            # One connection's histogram: its own successful requests.
            busiest = max(
                final["state"]["upstreams"], key=lambda u: u["protocol"]["ok"]
            )

            def one_connection() -> list[Any]:
                driver.execute_script(
                    "const s = document.getElementById('hist-source');"
                    "s.value = arguments[0];"
                    "s.dispatchEvent(new Event('change'));",
                    busiest["name"],
                )
                return [
                    driver.execute_script(
                        "return document.getElementById('latency-chart').dataset.total;"
                    ),
                    driver.find_element("id", "hist-note").text,
                ]

            total, note = await deferToThread(one_connection)
            assert total == str(busiest["protocol"]["latency"]["count"])
            assert total == str(busiest["protocol"]["ok"])
            assert busiest["name"] in note
        finally:
            if driver is not None:
                await deferToThread(driver.quit)
            shutil.rmtree(profile, ignore_errors=True)
            # Let the page's last polls finish before the service stops.
            await deferLater(reactor, 0.05, lambda: None)
