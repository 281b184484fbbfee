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

from tests.test_runner_gateway import free_port, running

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _require_browser() -> Any:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        missing = (
            "chromium and chromium-driver are not installed "
            "(apt-get install chromium chromium-driver; .ci/run does)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    # Part of the test extra: a missing selenium is a broken install.
    from selenium import webdriver

    return webdriver


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
            # Connections are grouped under a row naming their upstream.
            groups = await deferToThread(
                driver.execute_script,
                "return Array.from(document.querySelectorAll('#connections tbody tr'))"
                ".map(r => r.dataset.upstream != null ? 'U:' + r.dataset.upstream"
                " : r.dataset.conn);",
            )
            upstream = final["state"]["upstreams"][0]["upstream"]
            assert groups == ["U:" + upstream] + [
                u["name"] for u in final["state"]["upstreams"]
            ]
            # The upstream's row says its health state and its ejections.
            heading = await deferToThread(
                driver.execute_script,
                "const r = document.querySelector('#connections tr[data-upstream]');"
                "return [r.dataset.health, r.textContent];",
            )
            assert final["state"]["by_upstream"][upstream]["health"]["live"] == 1
            assert heading[0] == "live"
            assert heading[1].endswith(" · live · ejections 0"), heading[1]

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


# -- layout, health and history -------------------------------------------------

#: Every box the page must keep inside the viewport's width.
_BOXES_OUTSIDE_VIEWPORT = """
const width = window.innerWidth;
const out = [];
for (const el of document.querySelectorAll('header, .card, section, #banner')) {
  const r = el.getBoundingClientRect();
  if (getComputedStyle(el).display === 'none') continue;
  if (r.width <= 0 || r.height <= 0 || r.left < 0 || r.right > width + 0.5) {
    out.push((el.id || el.className || el.tagName) + ' ' + r.left + '..' + r.right);
  }
}
return {scrollWidth: document.documentElement.scrollWidth, innerWidth: width,
        outside: out, cards: document.querySelectorAll('.card').length};
"""


def _layout_at(driver: Any, width: int) -> dict[str, Any]:
    """
    Resize the window to ``width`` x 900 and report what sticks out.
    """
    driver.set_window_size(width, 900)
    _poll(
        lambda: driver.execute_script("return window.innerWidth;") <= width,
        5,
        f"the window did not shrink to {width} px",
    )
    layout: dict[str, Any] = driver.execute_script(_BOXES_OUTSIDE_VIEWPORT)
    return layout


def _assert_fits(layout: dict[str, Any]) -> None:
    assert layout["scrollWidth"] <= layout["innerWidth"], layout
    assert layout["outside"] == [], layout
    assert layout["cards"] == 15  # the stream and SSE cards too


async def _with_page(runner: Any, steps: Callable[[Any], Any]) -> Any:
    """
    Open the status page of ``runner`` in a fresh headless Chromium and run
    ``steps(driver)`` in a thread; always quit the browser.
    """
    webdriver = _require_browser()
    profile = tempfile.mkdtemp(prefix="framedclient-chromium-")
    driver = None
    try:
        driver = await deferToThread(_start_browser, webdriver, profile)
        await deferToThread(driver.get, runner.url + "/")
        return await deferToThread(steps, driver)
    finally:
        if driver is not None:
            await deferToThread(driver.quit)
        shutil.rmtree(profile, ignore_errors=True)
        await deferLater(reactor, 0.05, lambda: None)


def _updated(driver: Any) -> bool:
    updates: str = driver.execute_script("return document.body.dataset.updates;")
    return int(updates or 0) >= 1


@pytest_twisted.ensureDeferred
async def test_status_page_fits_1400_and_400_px_without_page_scroll():
    from framedclient import __version__

    async with running("--pool-size", "3") as runner:

        def steps(driver: Any) -> dict[str, Any]:
            _poll(lambda: _updated(driver), 10, "the page did not update")
            _poll(
                lambda: driver.execute_script(
                    "return document.querySelectorAll('#config dd').length;"
                ),
                10,
                "the configuration was not shown",
            )
            return {
                "wide": _layout_at(driver, 1400),
                "narrow": _layout_at(driver, 400),
                "dot": driver.find_element("id", "status").get_attribute("data-state"),
                "banner": driver.find_element("id", "banner").is_displayed(),
                "version": _value(driver, "sum-version"),
                "pool_size": driver.execute_script(
                    "return document.querySelector("
                    "'#config [data-setting=\"pool_size\"] dd').dataset.value;"
                ),
            }

        seen = await _with_page(runner, steps)
    _assert_fits(seen["wide"])
    _assert_fits(seen["narrow"])
    assert seen["dot"] == "ready"
    assert seen["banner"] is False
    assert seen["version"] == __version__
    assert seen["pool_size"] == "3"


@pytest_twisted.ensureDeferred
async def test_status_page_shows_a_banner_and_a_red_dot_with_the_upstream_down():
    port = free_port()  # nothing listens there
    async with running(
        "--upstream",
        f"tcp:127.0.0.1:{port}",
        "--backoff",
        "constant:0.2",
        wait_ready=False,
    ) as runner:

        def steps(driver: Any) -> dict[str, Any]:
            def banner() -> str | None:
                el = driver.find_element("id", "banner")
                if not el.is_displayed() or "refused" not in el.text.lower():
                    return None
                text: str = el.text
                return text

            text = _poll(banner, 10, "no upstream-down banner")
            # The long "last error" wraps inside its table at 1,400 px.
            wide = _layout_at(driver, 1400)
            # A long "last error" wraps inside the table's box at 1,400 px.
            # Set and measured in one synchronous script, before the next
            # poll rewrites the cell.
            error_fits = driver.execute_script(
                """
                const cell = document.querySelector('td[data-field="last_error"]');
                cell.textContent = 'connection refused by upstream: ' +
                  'x'.repeat(300) + ' ' + 'detail '.repeat(60);
                const box = cell.closest('.scroll');
                const r = cell.getBoundingClientRect();
                return box.scrollWidth <= box.clientWidth &&
                  r.right <= box.getBoundingClientRect().right + 0.5 &&
                  document.documentElement.scrollWidth <= window.innerWidth;
                """
            )
            return {
                "text": text,
                "kind": driver.find_element("id", "banner").get_attribute("data-kind"),
                "dot": driver.find_element("id", "status").get_attribute("data-state"),
                "wide": wide,
                "error_fits": error_fits,
                "narrow": _layout_at(driver, 400),
            }

        seen = await _with_page(runner, steps)
    assert seen["text"].startswith("upstream unavailable: ")
    assert seen["kind"] == "upstream"
    assert seen["dot"] == "down"
    assert seen["error_fits"] is True
    _assert_fits(seen["wide"])
    _assert_fits(seen["narrow"])


@pytest_twisted.ensureDeferred
async def test_fresh_status_page_draws_the_gateways_throughput_history():
    async with running() as runner:
        for _ in range(20):
            code, _, _ = await runner.post(b"hello")
            assert code == 200
        history_url = runner.url + "/v1/throughput"

        def served() -> dict[str, Any] | None:
            body: dict[str, Any] = _fetch_json(history_url)
            # Three samples at least: enough for a line, not just a point.
            if len(body["samples"]) < 3 or sum(s["ok"] for s in body["samples"]) < 20:
                return None
            return body

        history = await deferToThread(_poll, served, 10, "no throughput samples")
        assert history["interval"] == 1.0
        assert all(set(s) == {"time", "ok", "failed"} for s in history["samples"])

        def steps(driver: Any) -> dict[str, str]:
            def drawn() -> dict[str, str] | None:
                chart: dict[str, str] = driver.execute_script(
                    "const d = document.getElementById('rate-chart').dataset;"
                    "return {ok: d.serverOk, samples: d.serverSamples,"
                    " points: d.points,"
                    " lines: document.querySelectorAll('#rate-chart polyline').length};"
                )
                return chart if chart["ok"] is not None else None

            result: dict[str, str] = _poll(drawn, 10, "the chart was not drawn")
            return result

        chart = await _with_page(runner, steps)
    # The page's first render holds everything the gateway had already.
    assert int(chart["ok"]) == 20
    assert int(chart["samples"]) >= len(history["samples"])
    assert int(chart["points"]) >= len(history["samples"])
    assert chart["lines"] == 2


def test_throughput_history_keeps_the_last_window_and_leaves_no_timer():
    """
    The history the page loads: requests completed per interval, the
    newest ``window`` of them, sampled only while started.
    """
    from types import SimpleNamespace

    from twisted.internet.task import Clock

    from framedclient.runner.gateway import ThroughputHistory

    clock = Clock()
    outcomes = {"ok": 0, "remote_error": 0}
    client = SimpleNamespace(metrics=SimpleNamespace(outcomes=outcomes))
    history = ThroughputHistory(clock, lambda: client, interval=1.0, window=3)  # type: ignore[arg-type,return-value]
    history.start()
    for second in range(5):
        outcomes["ok"] += second
        outcomes["remote_error"] += 1
        clock.advance(1.0)
    history.stop()
    assert clock.getDelayedCalls() == []
    assert [(s["ok"], s["failed"]) for s in history.as_json()["samples"]] == [
        (2, 1),
        (3, 1),
        (4, 1),
    ]
    assert [s["time"] for s in history.as_json()["samples"]] == [3.0, 4.0, 5.0]


class _TwoWorkers:
    """
    Stands in for the supervisor of ``--workers 2``: both workers report
    this gateway's own figures, and worker 1 has been restarted once.
    """

    worker = 0

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def entries(self) -> Any:
        from twisted.internet.defer import succeed

        from framedclient.runner.cluster import WorkerEntry

        report = self.runner.service.gateway.report(self.runner.client)
        return succeed(
            [
                WorkerEntry(worker=0, pid=100, up=True, restarts=0, report=report),
                WorkerEntry(worker=1, pid=101, up=True, restarts=1, report=report),
            ]
        )


@pytest_twisted.ensureDeferred
async def test_status_page_shows_the_workers_and_their_sums_and_fits_400_px():
    async with running() as runner:
        for _ in range(5):
            code, _, _ = await runner.post(b"hello")
            assert code == 200
        runner.service.gateway.cluster = _TwoWorkers(runner)

        def steps(driver: Any) -> dict[str, Any]:
            def rows() -> dict[str, dict[str, str]] | None:
                found: dict[str, dict[str, str]] = driver.execute_script(
                    """
                    const out = {};
                    for (const row of document.querySelectorAll('#workers tr[data-worker]')) {
                      const fields = {};
                      for (const td of row.querySelectorAll('td[data-field]')) {
                        fields[td.dataset.field] = td.dataset.value;
                      }
                      out[row.dataset.worker] = fields;
                    }
                    return out;
                    """
                )
                return found if len(found) == 2 else None

            return {
                "rows": _poll(rows, 10, "the workers table was not shown"),
                "visible": driver.find_element("id", "workers-section").is_displayed(),
                "sum_ok": _value(driver, "sum-ok"),
                # Each worker judges host health itself: the upstream's row
                # counts the workers that see it live.
                "heading": _poll(
                    lambda: driver.execute_script(
                        "const r = document.querySelector("
                        "'#connections tr[data-upstream]');"
                        "return r && r.textContent.includes('ejections') "
                        "? r.textContent : null;"
                    ),
                    10,
                    "no upstream row with its health",
                ),
                "narrow": _layout_at(driver, 400),
            }

        seen = await _with_page(runner, steps)
    assert seen["heading"].endswith(" · live 2 · ejections 0"), seen["heading"]
    assert seen["visible"] is True
    assert seen["rows"]["0"]["ok"] == seen["rows"]["1"]["ok"] == "5"
    assert seen["rows"]["1"]["restarts"] == "1"
    assert seen["rows"]["0"]["pid"] == "100"
    assert seen["sum_ok"] == "10"
    _assert_fits(seen["narrow"])


# -- what the panels say (issue 21) ------------------------------------------------

#: Every text segment of the configuration panel's values that spans more
#: than one line (a number or word broken in two), and whether the
#: connections table needs its own scrollbar.
_WRAPPED = r"""
const wrapped = [];
// Every word (or value segment between <wbr>s) must sit on one line.
for (const el of document.querySelectorAll('#config dt, #config dd')) {
  for (const node of el.childNodes) {
    if (node.nodeType !== Node.TEXT_NODE) continue;
    const text = node.textContent;
    for (const match of text.matchAll(/\S+/g)) {
      const range = document.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      const lines = new Set(Array.from(range.getClientRects()).map((r) => Math.round(r.top)));
      if (lines.size > 1) wrapped.push(el.parentNode.dataset.setting + ': ' + match[0]);
    }
  }
}
const box = document.querySelector('#connections').closest('.scroll');
return {wrapped: wrapped, tableScrolls: box.scrollWidth > box.clientWidth,
        shown: Object.fromEntries(Array.from(document.querySelectorAll('#config [data-setting]'))
          .map((d) => [d.dataset.setting, d.querySelector('dd').textContent]))};
"""


@pytest_twisted.ensureDeferred
async def test_settings_show_units_and_no_number_wraps_at_1400_and_400_px():
    async with running("--pool-size", "3") as runner:
        for _ in range(20):
            await runner.post(b"hello")

        def steps(driver: Any) -> dict[str, Any]:
            _poll(lambda: _updated(driver), 10, "the page did not update")
            _poll(
                lambda: driver.execute_script(
                    "return document.querySelectorAll('#config dd').length;"
                ),
                10,
                "the configuration was not shown",
            )
            seen = {}
            for width in (1400, 400):
                layout = _layout_at(driver, width)
                seen[width] = {**layout, **driver.execute_script(_WRAPPED)}
            seen["p50"] = driver.execute_script(
                "const e = document.getElementById('sum-p50');"
                "return [e.textContent, e.dataset.value];"
            )
            return seen

        seen = await _with_page(runner, steps)
        stats = await deferToThread(_fetch_json, runner.url + "/v1/stats")
    for width in (1400, 400):
        _assert_fits(seen[width])
        assert seen[width]["wrapped"] == [], (width, seen[width]["wrapped"])
    assert seen[1400]["tableScrolls"] is False
    shown = seen[1400]["shown"]
    assert shown["request_timeout"] == "5 s"
    assert shown["max_write_buffer"] == "8 MiB"
    assert shown["max_queued_bytes"] == "64 MiB"
    assert shown["max_pending_per_connection"] == "100000"
    assert shown["acquire_timeout"] == "off"
    assert shown["max_in_flight_per_connection"] == "auto"
    assert shown["backoff"] == "grpc"  # the spec, not a repr
    assert shown["pool_size"] == "3"
    # The truth about tracing: what /v1/stats says.
    assert shown["tracing"].startswith("on" if stats["tracing"] else "off")
    # p50 is a bucket bound (or the slowest request), not an interpolation.
    text, value = seen["p50"]
    assert text.startswith("≤ ")
    latency = stats["latency"]
    bounds = [float(k) for k in latency["buckets"] if k != "+Inf"]
    assert any(
        abs(float(value) - b) <= 1e-12 * max(b, 1) for b in [*bounds, latency["max"]]
    ), (value, bounds, latency["max"])


#: Before the page's scripts run: every fetch hangs, as on a slow link.
_HANG_FETCH = "window.fetch = () => new Promise(() => {});"


@pytest_twisted.ensureDeferred
async def test_the_page_shows_figures_and_settings_before_its_first_poll_returns():
    from framedclient import __version__

    async with running("--pool-size", "3") as runner:

        def steps(driver: Any) -> dict[str, Any]:
            driver.execute_cdp_cmd(
                "Page.addScriptToEvaluateOnNewDocument", {"source": _HANG_FETCH}
            )
            driver.get(runner.url + "/")
            return driver.execute_script(
                "const b = document.body;"
                "return {updates: b.dataset.updates, initial: b.dataset.initial,"
                " version: document.getElementById('sum-version').textContent,"
                " ready: document.getElementById('sum-ready').dataset.value,"
                " dot: document.getElementById('status').dataset.state,"
                " settings: document.querySelectorAll('#config dd').length,"
                " rows: document.querySelectorAll('#connections tr[data-conn]').length};"
            )

        seen = await _with_page(runner, steps)
    assert seen["updates"] == "0"  # no poll returned
    assert seen["initial"] == "true"
    assert seen["version"] == __version__
    assert seen["ready"] == "3"
    assert seen["dot"] == "ready"
    assert seen["settings"] > 20
    assert seen["rows"] == 3
