"""
The runner's modules: no import circle among them (issue 17), no module
named like one of the library's, and one SIGTERM handler for the single
process and the ``--workers`` supervisor.
"""

from __future__ import annotations

import ast
import signal
from pathlib import Path

import framedclient
from framedclient.runner.stopping import GracefulStop

PACKAGE = Path(framedclient.__file__).parent
RUNNER = PACKAGE / "runner"


def runner_imports(path: Path) -> set[str]:
    """
    The runner modules ``path`` imports, at module level or inside
    functions alike: a deferred import is still a circle, one that only
    hides from the import system.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["framedclient", "runner"] and len(parts) > 2:
                if (RUNNER / f"{parts[2]}.py").exists():
                    found.add(parts[2])
    found.discard(path.stem)
    return found


def test_the_runner_modules_import_each_other_without_a_circle():
    graph = {p.stem: runner_imports(p) for p in RUNNER.glob("*.py")}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            raise AssertionError("import circle: " + " -> ".join(cycle))
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_no_runner_module_is_named_like_a_library_module():
    library = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    runner = {p.stem for p in RUNNER.glob("*.py")} - {"__init__"}
    assert library & runner == set()


class _Reactor:
    def __init__(self) -> None:
        self.stops = 0

    def stop(self) -> None:
        self.stops += 1

    def callFromThread(self, f, *args):
        f(*args)


def test_a_second_sigterm_does_not_stop_twice_or_cut_the_drain_short():
    reactor = _Reactor()
    graceful = GracefulStop(reactor, " (within 10 s)")
    graceful.stop()
    graceful.stop()
    assert reactor.stops == 1
    assert graceful.received


def test_sigterm_stops_the_reactor_and_a_worker_ignores_ctrl_c():
    reactor = _Reactor()
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        GracefulStop(reactor).install(ignore_interrupt=True)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        handler(signal.SIGTERM, None)
        assert reactor.stops == 1
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])
