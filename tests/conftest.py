"""
Suite-wide test machinery: the fast default run (tests marked ``slow`` run
with ``--slow``), and a per-test timeout that works under the reactor.

Every test gets a timeout (``timeout`` in ``pyproject.toml``; a slow test
raises its own with ``@pytest.mark.timeout(SECONDS)``).  pytest-timeout
parses the setting and the marker; this file decides what happens when the
time is up.

Why not pytest-timeout's defaults: its ``signal`` method raises inside
whatever runs when SIGALRM arrives, which under pytest-twisted is the
reactor's loop: the reactor dies, every later test fails with "twisted
reactor has stopped" and the run can still hang at exit.  Only the
``thread`` method stops a test stuck under the reactor (spinning in Python
or waiting forever on a Deferred): a watchdog thread prints what it can
and ends the process.  That costs the rest of the run, so we make the one
report count: it names the test that hung (with ``-q`` nothing else would),
shows its captured output and the stacks of all threads, then exits with
status 1.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
from typing import Any

import pytest

try:
    import pytest_timeout  # noqa: F401  (the hooks below are its hooks)
except ImportError as e:  # pragma: no cover - an environment problem
    raise ImportError(
        "the test suite needs pytest-timeout, so that a hung test cannot "
        "stall the run: install the test extra (pip install -e '.[test]')"
    ) from e


def _report_timeout_and_exit(item: pytest.Item, timeout: float) -> None:
    """
    The watchdog fired: say which test hung and where every thread is, then
    end the process (the reactor thread cannot be interrupted safely).
    """
    try:
        capman = item.config.pluginmanager.getplugin("capturemanager")
        out = err = ""
        if capman is not None:
            capman.suspend_global_capture(in_=True)
            out, err = capman.read_global_capture()
        writer = item.config.get_terminal_writer()
        writer.line()
        writer.sep("+", f"Timeout: {item.nodeid} ran longer than {timeout:g} s")
        writer.line(
            "Stopping the whole run: a test stuck under the reactor cannot be "
            "interrupted. If this test is legitimately slow, give it "
            "@pytest.mark.timeout(SECONDS); otherwise the stacks below show "
            "where it is stuck."
        )
        if out:
            writer.sep("~", "Captured stdout")
            writer.write(out)
        if err:
            writer.sep("~", "Captured stderr")
            writer.write(err)
        writer.sep("~", "Stacks of all threads")
        writer.flush()
        sys.stdout.flush()
        # Same stream as the report, so the two stay in order.
        faulthandler.dump_traceback(file=sys.stdout, all_threads=True)
        writer.sep("+", f"Timeout: {item.nodeid}")
        writer.flush()
    finally:
        os._exit(1)


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """
    Arm the watchdog for one test (replaces pytest-timeout's ``thread``
    method only to name the test in the report).
    """
    if settings.method != "thread":
        return None  # pytest-timeout's own handling
    timeout = float(settings.timeout)
    timer = threading.Timer(timeout, _report_timeout_and_exit, (item, timeout))
    timer.name = f"test timeout watchdog for {item.nodeid}"
    timer.daemon = True

    def cancel() -> None:
        timer.cancel()
        timer.join()

    item.cancel_timeout = cancel  # type: ignore[attr-defined]
    timer.start()
    return True


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow",
        action="store_true",
        default=False,
        help="also run the tests marked slow (real processes, browsers); "
        "without it they are deselected, unless -m selects by marker",
    )


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """
    Deselect the slow tests for a quick inner loop; ``--slow`` keeps them,
    and an explicit ``-m`` (``-m slow``) decides on its own.

    The tests marked ``dev_extra`` check the documentation toolchain, which
    only the dev extra installs; the runs that install the test extra alone
    (``.ci/sdist-check``, ``.ci/lowest-deps``, ``.ci/other-pythons``) set
    ``FRAMEDCLIENT_TESTS_WITHOUT_DEV=1`` to leave them to the main run, which
    has it (deselected and counted, never skipped).
    """
    if os.environ.get("FRAMEDCLIENT_TESTS_WITHOUT_DEV") == "1":
        dev = [item for item in items if item.get_closest_marker("dev_extra")]
        if dev:
            config.hook.pytest_deselected(items=dev)
            items[:] = [i for i in items if not i.get_closest_marker("dev_extra")]
    if config.getoption("--slow") or config.getoption("-m"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
