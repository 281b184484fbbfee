"""
The per-test timeout stops a test stuck under the reactor.

A bug that spins (or waits on a Deferred that never fires) must not stall
CI until its 90-minute limit: each test has a timeout (``pyproject.toml``,
overridable with ``@pytest.mark.timeout``), and ``tests/conftest.py`` makes
it work under pytest-twisted.  These tests run pytest in a subprocess, with
this project's configuration and conftest, on a small generated test file,
and check that a stuck test ends the run quickly, non-zero, and names the
test; and that a test finishing in time does not trip its timer later.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The generated tests time out after this many seconds.
STUCK_TIMEOUT = 2
#: A stuck run must be over within this many seconds (interpreter start and
#: imports included), far below what the outer subprocess timeout allows.
BOUND = 45

pytestmark = pytest.mark.slow


def run_pytest(tmp_path: Path, source: str) -> tuple[int, str, float]:
    """
    Run pytest with this project's settings and conftest on ``source``.

    :return: exit status, combined output, seconds taken.
    """
    test_file = tmp_path / "test_generated.py"
    test_file.write_text(textwrap.dedent(source))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:randomly",
        "-c",
        str(ROOT / "pyproject.toml"),
        "--rootdir",
        str(tmp_path),
        "-p",
        "tests.conftest",
        str(test_file),
    ]
    started = time.monotonic()
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BOUND * 2,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f"the generated run was still going after {BOUND * 2} s: the "
            f"per-test timeout did not stop it\n{e.stdout!r}\n{e.stderr!r}"
        )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


SPINNING = f"""
    import pytest
    import pytest_twisted
    from twisted.internet import reactor, task

    def test_passes_first():
        pass

    @pytest.mark.timeout({STUCK_TIMEOUT})
    @pytest_twisted.inlineCallbacks
    def test_spins_under_the_reactor():
        yield task.deferLater(reactor, 0, lambda: None)  # now in a reactor call
        while True:
            pass

    def test_never_reached():
        pass
"""

WAITING = f"""
    import pytest
    import pytest_twisted
    from twisted.internet.defer import Deferred

    @pytest.mark.timeout({STUCK_TIMEOUT})
    @pytest_twisted.ensureDeferred
    async def test_waits_forever_on_a_deferred():
        await Deferred()
"""

IN_TIME = f"""
    import pytest
    import pytest_twisted
    from twisted.internet import reactor, task

    @pytest.mark.timeout({STUCK_TIMEOUT} / 2)
    def test_quick():
        pass

    @pytest.mark.timeout({STUCK_TIMEOUT} * 5)
    @pytest_twisted.inlineCallbacks
    def test_outlives_the_previous_tests_timeout():
        yield task.deferLater(reactor, {STUCK_TIMEOUT}, lambda: None)
"""


def test_a_test_spinning_under_the_reactor_is_stopped_and_named(tmp_path):
    status, output, took = run_pytest(tmp_path, SPINNING)
    assert status != 0, output
    assert took < BOUND, f"took {took:.1f} s\n{output}"
    assert "Timeout: test_generated.py::test_spins_under_the_reactor" in output
    assert f"ran longer than {STUCK_TIMEOUT} s" in output
    assert "in test_spins_under_the_reactor\n" in output, "the stacks show where"


def test_a_test_waiting_forever_on_a_deferred_is_stopped_and_named(tmp_path):
    status, output, took = run_pytest(tmp_path, WAITING)
    assert status != 0, output
    assert took < BOUND, f"took {took:.1f} s\n{output}"
    assert "Timeout: test_generated.py::test_waits_forever_on_a_deferred" in output


def test_a_test_finishing_in_time_passes_and_its_timer_is_disarmed(tmp_path):
    status, output, took = run_pytest(tmp_path, IN_TIME)
    assert status == 0, output
    assert "2 passed" in output
    assert "Timeout" not in output


def test_every_test_has_a_default_timeout(pytestconfig):
    assert float(pytestconfig.getini("timeout")) > 0
    assert pytestconfig.getini("timeout_method") == "thread"
