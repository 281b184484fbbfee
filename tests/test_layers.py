"""
Imports point down only (issue 17, item 5): every module under
``framedclient/`` sits in one layer of :data:`LAYERS`, and at run time it
imports only modules of its own layer or of layers below, with no import
circle anywhere.  docs/design.md ("Layers") shows the same table.

What counts as an import: every ``import`` and ``from ... import`` in the
module, function-local ones included (an import inside a function still
runs, and still ties the modules together), except those under ``if
TYPE_CHECKING:``, which only type checkers run.  Parent packages that
Python loads implicitly are not edges: ``import framedclient.errors``
loads ``framedclient/__init__.py`` first, whatever the layers say.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import framedclient

PACKAGE = Path(framedclient.__file__).parent

#: The layers, bottom first.  A module may import its own layer and those
#: before it.  A key ending in ``.*`` places a package and every module in
#: it, unless a module is listed on its own.  A new module must be added
#: here (the test says so), which is the moment to decide where it belongs.
LAYERS: list[tuple[str, list[str]]] = [
    (
        "basics",
        [
            "framedclient.errors",
            "framedclient.validation",
            "framedclient._version",
            "framedclient._mode",
            "framedclient._endpoints",
            "framedclient.backoff",
            "framedclient.deadlines",
            "framedclient.liveness",
            "framedclient.ketama",
            "framedclient.retry",
            "framedclient.gctune",
            "framedclient.asyncio_reactor_check",
        ],
    ),
    (
        "framing, recorders and host records",
        [
            "framedclient.framing",
            "framedclient.framer_protocol",
            "framedclient.tracing",
            "framedclient.metrics",
            "framedclient.metrics.*",
            "framedclient.health",
            "framedclient.discovery",
        ],
    ),
    ("codecs", ["framedclient.codecs.*"]),
    (
        "engine and settings",
        ["framedclient.engine", "framedclient.config", "framedclient.batch"],
    ),
    ("protocol", ["framedclient.datapath", "framedclient.protocol"]),
    (
        "connection",
        ["framedclient.connection", "framedclient.balance", "framedclient.hedging"],
    ),
    (
        "pool",
        [
            "framedclient.pool",
            "framedclient.membership",
            "framedclient.metrics.telemetry",
        ],
    ),
    (
        "dispatch",
        ["framedclient.dispatch", "framedclient.upstreams", "framedclient.streams"],
    ),
    ("client", ["framedclient.client"]),
    (
        "above the core",
        [
            "framedclient.clients.*",
            "framedclient.service",
            "framedclient.testing.*",
            "framedclient.server",
        ],
    ),
    ("public names", ["framedclient"]),
    ("programs", ["framedclient.runner.*", "framedclient.bench.*"]),
]

#: Breaks of the rule tolerated while work in progress removes them, as
#: (importer, imported) run-time edges mapped to who removes them.  Each is
#: exempt from both checks, and a listed edge that no longer exists fails
#: the test, so the list only shrinks.  Empty: imports point down only.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("framedclient", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


MODULES = module_names()


def layer_of(module: str) -> int | None:
    """The index of ``module``'s layer in :data:`LAYERS`, or ``None``."""
    exact = {m: i for i, (_, ms) in enumerate(LAYERS) for m in ms}
    if module in exact:
        return exact[module]
    # The longest package wildcard that holds it.
    best: tuple[int, int] | None = None
    for pattern, index in exact.items():
        if pattern.endswith(".*"):
            package = pattern[:-2]
            if module == package or module.startswith(package + "."):
                if best is None or len(package) > best[0]:
                    best = (len(package), index)
    return None if best is None else best[1]


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def runtime_imports(module: str, path: Path) -> set[str]:
    """The modules of the package that ``module`` imports at run time."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def walk(node: ast.AST) -> Iterator[ast.AST]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                # Only its else branch runs.
                for other in child.orelse:
                    yield other
                    yield from walk(other)
                continue
            yield child
            yield from walk(child)

    for node in walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.add(source)
            # "from framedclient.clients import redis" imports a module.
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return {name for name in found if name in MODULES and name != module}


def import_graph() -> dict[str, set[str]]:
    return {m: runtime_imports(m, path) for m, path in MODULES.items()}


GRAPH = import_graph()


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if layer_of(m) is None)
    assert not missing, (
        f"{missing}: not in the layer table of tests/test_layers.py. Add each "
        f"to LAYERS, in the layer of what it holds (and to docs/design.md's "
        f"Layers table), so the test can check that its imports point down."
    )


def test_imports_point_down_only():
    upward = []
    for importer, imported in sorted(
        (m, i) for m, targets in GRAPH.items() for i in targets
    ):
        if (importer, imported) in KNOWN_VIOLATIONS:
            continue
        low, high = layer_of(importer), layer_of(imported)
        if low is not None and high is not None and high > low:
            upward.append(
                f"{importer} ({LAYERS[low][0]}) imports {imported} ({LAYERS[high][0]})"
            )
    assert not upward, (
        "imports from a lower layer to a higher one (pass what the lower "
        "layer needs down to it as an interface instead, or move the code "
        "to its layer):\n" + "\n".join(upward)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components (Tarjan) of more
    than one module, or of one module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    graph = {
        m: {i for i in targets if (m, i) not in KNOWN_VIOLATIONS}
        for m, targets in GRAPH.items()
    }
    found = cycles(graph)
    assert not found, (
        "import circles (run-time imports, function-local included):\n"
        + ("\n".join(" <-> ".join(c) for c in found))
    )


def test_known_violations_still_exist():
    # Once a listed import is gone, its entry must go too, or it would
    # exempt the next module that breaks the rule the same way.
    gone = [edge for edge in KNOWN_VIOLATIONS if edge[1] not in GRAPH.get(edge[0], ())]
    assert not gone, f"no longer imported: remove from KNOWN_VIOLATIONS: {gone}"


# -- the checker itself: it sees what it must, and nothing else ----------------


def _imports_of(source: str, tmp_path: Path) -> set[str]:
    path = tmp_path / "probe.py"
    path.write_text(source, encoding="utf-8")
    return runtime_imports("framedclient.engine", path)


def test_function_local_and_relative_imports_count_type_checking_ones_do_not(
    tmp_path,
):
    found = _imports_of(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from framedclient.client import FramedClient\n"
        "else:\n"
        "    import framedclient.pool\n"
        "def f():\n"
        "    from framedclient.protocol import FramedProtocol\n"
        "from .codecs import redis\n",
        tmp_path,
    )
    assert found == {
        "framedclient.pool",
        "framedclient.protocol",
        "framedclient.codecs",
        "framedclient.codecs.redis",
    }


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("framedclient.codecs.redis", "codecs"),
        ("framedclient.codecs", "codecs"),
        ("framedclient.clients.redis", "above the core"),
        ("framedclient.runner.service", "programs"),
        ("framedclient", "public names"),
    ],
)
def test_a_module_takes_its_layer_or_its_package_s(module, layer):
    index = layer_of(module)
    assert index is not None and LAYERS[index][0] == layer
    assert layer_of("framedclient.not_yet_placed") is None


def test_a_circle_is_found_whatever_its_length():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"], ["e"]]


def test_framed_client_stays_a_facade() -> None:
    # FramedClient is the façade (issue 17): construction, request, stream,
    # lease, close, stats.  What grows goes to its collaborators (dispatch,
    # upstreams, telemetry, streams), not into the class.
    tree = ast.parse((PACKAGE / "client.py").read_text(encoding="utf-8"))
    (cls,) = [
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef) and node.name == "FramedClient"
    ]
    assert cls.end_lineno is not None
    lines = cls.end_lineno - cls.lineno + 1
    assert lines < 500, (
        f"FramedClient is {lines} lines: move the new logic to the module that "
        f"owns it (docs/design.md, 'where do I add X')"
    )
