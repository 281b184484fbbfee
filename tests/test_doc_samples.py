"""
Every ```` ```python ```` block in README.md and docs/*.md runs as written
(docs/contributing.md, "Code samples in these pages", states the convention):

- each block runs alone, in a fresh Python process, from an empty temporary
  directory, with this checkout's ``framedclient`` importable;
- a sample that talks to a server addresses the reference server as
  ``tcp:127.0.0.1:9000``: a reference server runs on a free loopback port
  for this module, and that address is rewritten to it;
- an HTML comment on the line just before the fence says how else to run it:
  ``<!-- sample: pytest -->`` (a test module, run with pytest),
  ``<!-- sample: trial -->`` (run with trial),
  ``<!-- sample: twistd until "TEXT" -->`` (a ``.tac`` file, run with twistd
  until TEXT appears in its log, then stopped with SIGTERM: it must stop
  cleanly, ending by that signal as twistd does, without a traceback),
  ``<!-- sample: not run (REASON) -->`` (a fragment; the reason is required);
- ``against redis-server`` or ``against memcached`` at the end of a marker
  (``<!-- sample: against redis-server -->`` for a plain program) runs that
  real server on a free loopback port for the sample, and rewrites the
  server's usual address (``127.0.0.1:6379``, ``127.0.0.1:11211``) to it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from .servers import memcached_server, redis_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOC_ADDRESS = "127.0.0.1:9000"
#: Seconds one sample may take; they take about one.
SAMPLE_TIMEOUT = 120

_MARK = re.compile(r"^<!--\s*sample:\s*(?P<what>.*?)\s*-->$")
_NOT_RUN = re.compile(r"^not run \((?P<reason>.+)\)$")
_TWISTD = re.compile(r'^twistd until "(?P<until>[^"]+)"$')
_AGAINST = re.compile(r"^(?P<what>.*?)\s*\bagainst (?P<server>redis-server|memcached)$")
#: The address each real server has in the pages.
SERVER_ADDRESSES = {"redis-server": "127.0.0.1:6379", "memcached": "127.0.0.1:11211"}


@dataclass(frozen=True)
class Sample:
    page: Path
    line: int
    code: str
    mode: str  # "script", "pytest", "trial", "twistd" or "not run"
    until: str = ""
    server: str = ""  # "redis-server", "memcached" or ""

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _mode(marker: str | None, where: str) -> tuple[str, str, str]:
    if marker is None:
        return "script", "", ""
    match = _MARK.match(marker)
    if match is None:
        return "script", "", ""
    what = match.group("what")
    if _NOT_RUN.match(what):
        return "not run", "", ""
    server = ""
    against = _AGAINST.match(what)
    if against:
        what, server = against.group("what"), against.group("server")
    if what in ("pytest", "trial"):
        return what, "", server
    if what == "" and server:
        return "script", "", server
    twistd = _TWISTD.match(what)
    if twistd:
        return "twistd", twistd.group("until"), server
    raise ValueError(
        f"{where}: unknown sample marker {marker!r}; use pytest, trial, "
        f'twistd until "TEXT" or not run (REASON), optionally followed by '
        f"against redis-server or against memcached"
    )


def read_samples(page: Path) -> Iterator[Sample]:
    lines = page.read_text(encoding="utf-8").splitlines()
    previous: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == "```python":
            start = i + 1
            end = start
            while lines[end].strip() != "```":
                end += 1
            mode, until, server = _mode(previous, f"{page}:{start}")
            code = "\n".join(lines[start:end]) + "\n"
            yield Sample(page, start, code, mode, until, server)
            i = end + 1
            previous = None
            continue
        if line.strip():
            previous = line.strip()
        i += 1


SAMPLES = [s for page in PAGES for s in read_samples(page)]


@pytest.fixture(scope="module")
def reference_port() -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "framedclient.server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert match, f"the reference server did not start: {line!r}"
        yield int(match.group(1))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=SAMPLE_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def _run_twistd(tac: Path, until: str) -> tuple[int, str]:
    log = tac.with_suffix(".log")
    with log.open("w") as out:
        proc = subprocess.Popen(
            # The twistd script, with this interpreter.
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "--nodaemon",
                "--pidfile=",
                "-y",
                tac.name,
            ],
            cwd=tac.parent,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + SAMPLE_TIMEOUT
    try:
        while until not in log.read_text() and proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{until!r} not logged in time:\n{log.read_text()}"
                )
            time.sleep(0.05)
        assert until in log.read_text(), (
            f"twistd exited before logging {until!r}:\n{log.read_text()}"
        )
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=SAMPLE_TIMEOUT)
        return status, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_pages_have_samples_and_markers_are_valid() -> None:
    # read_samples raised at import for an unknown marker; an empty list
    # would make the test below vacuous.
    assert len([s for s in SAMPLES if s.mode != "not run"]) >= 15
    assert any(s.page.name == "README.md" for s in SAMPLES)


@pytest.mark.parametrize(
    "sample", [s for s in SAMPLES if s.mode != "not run"], ids=lambda s: s.name
)
def test_sample_runs_as_written(
    sample: Sample, reference_port: int, tmp_path: Path
) -> None:
    with ExitStack() as servers:
        code = sample.code.replace(DOC_ADDRESS, f"127.0.0.1:{reference_port}")
        if sample.server == "redis-server":
            port = servers.enter_context(redis_server(str(tmp_path))).port
        elif sample.server == "memcached":
            port = servers.enter_context(memcached_server()).port
        if sample.server:
            code = code.replace(SERVER_ADDRESSES[sample.server], f"127.0.0.1:{port}")
        _run_sample(sample, code, tmp_path)


def _run_sample(sample: Sample, code: str, tmp_path: Path) -> None:
    if sample.mode == "twistd":
        tac = tmp_path / "sample.tac"
        tac.write_text(code, encoding="utf-8")
        status, output = _run_twistd(tac, sample.until)
        # twistd re-raises the signal that stopped it.
        assert status in (0, -signal.SIGTERM), (
            f"{sample.name}: twistd exited {status}:\n{output}"
        )
        assert "Server Shut Down." in output, output
        assert "Traceback" not in output, output
        return
    if sample.mode in ("pytest", "trial"):
        (tmp_path / "test_sample.py").write_text(code, encoding="utf-8")
        args = (
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "test_sample.py",
            ]
            if sample.mode == "pytest"
            else [sys.executable, "-m", "twisted.trial", "test_sample"]
        )
    else:
        (tmp_path / "sample.py").write_text(code, encoding="utf-8")
        args = [sys.executable, "sample.py"]
    result = _run(args, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{sample.name} failed:\n{output}"
    # An error nobody consumed is logged, not raised: it still fails here.
    assert "Unhandled error" not in output, f"{sample.name}:\n{output}"
    assert "Traceback" not in output, f"{sample.name}:\n{output}"
    if sample.mode == "pytest":
        assert re.search(r"\b[1-9]\d* passed\b", output), output
    if sample.mode == "trial":
        assert re.search(r"PASSED \(successes=[1-9]", output), output


def test_the_twist_plugin_of_docs_twistd_runs_laid_out_as_the_page_says(
    tmp_path: Path,
) -> None:
    # The two blocks of "As a twist plugin", in the files the page names,
    # found by twist the way the page says: PYTHONPATH=. from that directory.
    page = ROOT / "docs" / "twistd.md"
    blocks = [s.code for s in read_samples(page)]
    (plugin,) = [code for code in blocks if "ServiceMaker(" in code]
    (service,) = [code for code in blocks if "def makeService" in code]
    text = page.read_text(encoding="utf-8")
    for path in (
        "pinger/__init__.py",
        "pinger/service.py",
        "twisted/plugins/pinger_plugin.py",
    ):
        assert path in text, f"docs/twistd.md does not name {path}"
    (tmp_path / "pinger").mkdir()
    (tmp_path / "pinger" / "__init__.py").write_text("")
    (tmp_path / "pinger" / "service.py").write_text(service, encoding="utf-8")
    (tmp_path / "twisted" / "plugins").mkdir(parents=True)
    (tmp_path / "twisted" / "plugins" / "pinger_plugin.py").write_text(
        plugin, encoding="utf-8"
    )
    assert "PYTHONPATH=. twist pinger" in " ".join(text.split())
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([".", env["PYTHONPATH"]])
    # The installed twist script, as typed: "python -c" would put the current
    # directory on sys.path, which hides what the page must tell.
    twist = [str(Path(sys.executable).parent / "twist")]
    listing = subprocess.run(
        [*twist, "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=SAMPLE_TIMEOUT,
    )
    assert "Ping an fc1 server every second." in listing.stdout, listing
    own = subprocess.run(
        [*twist, "pinger", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=SAMPLE_TIMEOUT,
    )
    assert own.returncode == 0, own
    assert "--upstream" in own.stdout, own
