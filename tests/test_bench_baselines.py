"""
The bench's own parts, without running a benchmark: the baselines it
compares framedclient with answer correctly and fail what is pending when
their connection goes (the failure-time figures depend on it), every
subcommand still starts, and the bench's modules import one way.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, gatherResults
from twisted.internet.protocol import Factory
from twisted.protocols import amp

import framedclient.bench
from framedclient.bench.__main__ import main as bench_main
from framedclient.bench.baselines import AmpClient, EchoLocator, RawClient
from framedclient.bench.measure import (
    held_body,
    scale_requests,
    settle_seconds,
    warmup_count,
)
from framedclient.server import ReferenceServerFactory, listen

BENCH = Path(framedclient.bench.__file__).parent


@pytest_twisted.ensureDeferred
async def test_raw_baseline_echoes_over_each_connection_and_fails_pending_on_loss():
    port = await listen(
        reactor, "tcp:0:interface=127.0.0.1", ReferenceServerFactory(clock=reactor)
    )
    client = RawClient(reactor, "127.0.0.1", port.getHost().port, 2)
    try:
        await client.connect()
        requesters = client.requesters()
        assert len(requesters) == 2
        bodies = [b"echo-%d" % i for i in range(40)]
        replies = await gatherResults(
            [requesters[i % 2](body) for i, body in enumerate(bodies)]
        )
        assert replies == bodies
        # What the scale mode does: requests held by the server, then a
        # dropped connection must fail every one of them.
        held = [requesters[0](held_body(64)) for _ in range(5)]
        dropper = requesters[0](b"!drop")
        results = await DeferredList([*held, dropper], consumeErrors=True)
        assert [ok for ok, _ in results] == [False] * 6
    finally:
        await client.close()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_amp_baseline_echoes_through_its_echo_command():
    factory = Factory.forProtocol(lambda: amp.AMP(locator=EchoLocator()))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    client = AmpClient(reactor, "127.0.0.1", port.getHost().port, 1)
    try:
        await client.connect()
        (request,) = client.requesters()
        bodies = [b"amp-%d" % i for i in range(20)]
        assert await gatherResults([request(b) for b in bodies]) == bodies
    finally:
        await client.close()
        await port.stopListening()


def test_held_body_is_held_by_the_reference_server_and_sized_as_asked():
    assert held_body(64).startswith(b"!delay:600 ")
    assert len(held_body(64)) == 64
    # Too small for the prefix: just over, never without a body.
    assert held_body(1).startswith(b"!delay:600 x")


def test_scale_mode_sizes_are_bounded_by_what_is_in_flight():
    assert scale_requests(10_000, None, 500, 10.0) >= 30_000
    assert scale_requests(100, 50, 500, 0.1) == 100
    assert settle_seconds(1_000_000) > settle_seconds(10) >= 0.3
    assert warmup_count(1) == 500 and warmup_count(1024) == 4096


@pytest.mark.parametrize(
    "subcommand",
    [[], ["soak"], ["gateway"], ["hostile"], ["redis"], ["memcache"], ["fleet-sim"]],
    ids=lambda argv: " ".join(argv) or "compare",
)
def test_every_subcommand_still_starts(subcommand, capsys):
    with pytest.raises(SystemExit) as exited:
        bench_main([*subcommand, "--help"])
    assert exited.value.code == 0
    assert "usage:" in capsys.readouterr().out


def _imports(path: Path) -> set[str]:
    """
    The bench modules ``path`` imports when it runs, at any depth (an import
    inside a function is a run-time import too); ``if TYPE_CHECKING:``
    blocks are for type checkers only.
    """
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    visit([child])

    visit(ast.parse(path.read_text()).body)
    return {m.rsplit(".", 1)[-1] for m in found if m.startswith("framedclient.bench.")}


def test_the_bench_modules_import_in_one_direction():
    graph = {path.stem: _imports(path) for path in BENCH.glob("*.py")}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = sorted(m for m in graph if reaches(m, m, {m}))
    assert circles == []
    # The shared measurement code is at the bottom.
    assert graph["measure"] == set()


def test_no_bench_module_shares_the_name_of_a_runner_module():
    # Two modules named gateway.py (issue 17) made "the gateway" ambiguous.
    runner = Path(framedclient.bench.__file__).parent.parent / "runner"
    shared = {p.name for p in BENCH.glob("*.py")} & {p.name for p in runner.glob("*.py")}
    assert shared <= {"__init__.py"}
