"""
The sans-IO layers import nothing from Twisted (or any event loop), so they
can be fuzzed alone and driven from asyncio or threads.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import framedclient

PACKAGE = Path(framedclient.__file__).parent
SANS_IO = [
    "errors",
    "framing",
    "framer_protocol",
    "_mode",
    "codecs/__init__",
    "codecs/arguments",
    "codecs/base",
    "codecs/dns_transfer",
    "codecs/fc1",
    "codecs/header",
    "codecs/memcache",
    "codecs/memcache_messages",
    "codecs/_moved_names",
    "codecs/pipelined",
    "codecs/redis",
    "codecs/resp3",
    "codecs/resp3_push",
    "deadlines",
    "engine",
]
EVENT_LOOPS = ("twisted", "asyncio", "zope")


def runtime_imports(module: str) -> set[str]:
    """
    Top-level modules imported when ``module`` runs (imports guarded by
    ``if TYPE_CHECKING:`` are for type checkers only).
    """
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            for field in ("body", "orelse", "finalbody", "handlers"):
                visit(getattr(node, field, []) or [])

    visit(tree.body)
    return found


def as_path(module: str) -> str:
    """
    ``framedclient.codecs.base`` -> ``codecs/base``; a package is its
    ``__init__``.
    """
    path = module.split(".", 1)[1].replace(".", "/")
    return f"{path}/__init__" if (PACKAGE / path).is_dir() else path


@pytest.mark.parametrize("module", SANS_IO)
def test_sans_io_modules_import_no_event_loop(module):
    imported = runtime_imports(module)
    assert not {m for m in imported if m.split(".")[0] in EVENT_LOOPS}
    inside = {as_path(m) for m in imported if m.startswith("framedclient.")}
    assert inside <= set(SANS_IO), f"{module} imports {inside - set(SANS_IO)}"
