"""
Compiled or pure: which build of the hot path this process runs.

Importing this module decides it (``framedclient/__init__.py`` imports it
first): the decision must come before any hot module is imported.

The hot modules (:data:`COMPILED_MODULES`) are compiled by mypyc from the
same ``.py`` files when the package is built on a machine that can
(``setup.py``); the extension modules then sit beside their sources and
Python's import system prefers them.  This module, imported by
``framedclient/__init__.py`` before any of them, decides whether to let it:

- ``FRAMEDCLIENT_PURE=1`` (or ``true``/``yes``/``on``) installs a finder
  that loads the ``.py`` file of every compiled name, so the pure modules run
  although the extensions are installed (a debugger, a profiler that needs
  Python frames, or a suspected compiler bug);
- an extension whose source was edited since it was built (an in-place
  build in a checkout: the build records every source's hash in
  ``_compiled_sources.json``) is not imported either: all the pure modules
  run and a :class:`RuntimeWarning` says to rebuild.  The compiled modules
  call each other directly, so it is all of them or none.

:data:`framedclient.compiled` (a :class:`Mode`) says what was decided.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

__all__ = [
    "COMPILED_MODULES",
    "PURE_ENV",
    "Mode",
    "current_mode",
    "install",
    "mypyc_attr",
]

_T = TypeVar("_T")

try:
    # mypyc reads the decorator from here (tests and adapters subclass some
    # compiled classes, which mypyc allows only when told).
    from mypy_extensions import mypyc_attr
except ImportError:  # a pure install need not have mypy_extensions

    def mypyc_attr(*attrs: str, **kwattrs: object) -> Any:  # type: ignore[misc]
        def keep(cls: _T) -> _T:
            return cls

        return keep

#: The modules setup.py compiles (its COMPILED_MODULES, as module names).
COMPILED_MODULES: tuple[str, ...] = (
    "framedclient.deadlines",
    "framedclient.framing",
    "framedclient.metrics.histogram",
    "framedclient.codecs.fc1",
    "framedclient.engine",
    "framedclient.pool",
    "framedclient.codecs.redis",
    "framedclient.codecs.resp3",
    "framedclient.codecs.memcache",
    "framedclient.datapath",
)
#: The environment variable that forces pure mode.
PURE_ENV = "FRAMEDCLIENT_PURE"
#: The build's record of its sources' hashes (setup.py writes it).
SOURCES_RECORD = "_compiled_sources.json"

_PACKAGE_DIR = Path(__file__).resolve().parent
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Mode:
    """
    Which build runs: true in compiled mode.

    ``str(framedclient.compiled)`` is ``"compiled"`` or ``"pure"``;
    :attr:`reason` says why a pure run is pure.
    """

    #: ``"compiled"`` or ``"pure"``
    name: str
    #: the modules running as compiled extensions
    modules: tuple[str, ...]
    #: why the pure modules run ("" in compiled mode)
    reason: str = ""

    def __bool__(self) -> bool:
        return self.name == "compiled"

    def __str__(self) -> str:
        return self.name

    def describe(self) -> str:
        """
        One line for ``--version``, the bench and ``/v1/stats``.
        """
        if self:
            return f"compiled (mypyc, {len(self.modules)} modules)"
        return f"pure ({self.reason})" if self.reason else "pure"


class _PreferSource(importlib.abc.MetaPathFinder):
    """
    Loads the ``.py`` file of each compiled module, ahead of the path finder
    (which would pick the extension module beside it).
    """

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED_MODULES:
            return None
        source = _source_path(fullname)
        if not source.exists():
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def _source_path(name: str) -> Path:
    return _PACKAGE_DIR.joinpath(*name.split(".")[1:]).with_suffix(".py")


def _extension_path(name: str) -> Path | None:
    source = _source_path(name)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return None


def _stale_sources() -> list[str] | None:
    """
    The compiled modules whose source changed since the build (``None``
    when no extension is installed).
    """
    if not any(_extension_path(name) for name in COMPILED_MODULES):
        return None
    try:
        recorded = json.loads((_PACKAGE_DIR / SOURCES_RECORD).read_text("utf-8"))
    except (OSError, ValueError):
        recorded = {}
    stale = []
    for name in COMPILED_MODULES:
        try:
            digest = hashlib.sha256(_source_path(name).read_bytes()).hexdigest()
        except OSError:
            continue  # an installed extension without its source: nothing to compare
        if recorded.get(name) != digest:
            stale.append(name)
    return stale


_decided_reason = ""


def _truthy(value: str) -> bool:
    return value.strip().lower() in _TRUE


def install() -> None:
    """
    Decide the mode before the hot modules are imported (called once, by
    ``framedclient/__init__.py``).
    """
    global _decided_reason
    if any(isinstance(finder, _PreferSource) for finder in sys.meta_path):
        return
    if _truthy(os.environ.get(PURE_ENV, "")):
        _decided_reason = f"{PURE_ENV}=1"
    else:
        stale = _stale_sources()
        if stale is None:
            _decided_reason = "no compiled modules installed"
            return
        if not stale:
            return
        _decided_reason = "compiled modules older than their sources"
        warnings.warn(
            f"framedclient: {', '.join(stale)} changed since its compiled module "
            "was built; running the pure-Python modules (rebuild with "
            "`FRAMEDCLIENT_COMPILE=1 python setup.py build_ext --inplace`, or "
            "delete the framedclient/**/*.so files)",
            RuntimeWarning,
            stacklevel=3,
        )
    sys.meta_path.insert(0, _PreferSource())


def current_mode() -> Mode:
    """
    What runs: compiled when every compiled module was loaded from its
    extension.
    """
    compiled = []
    for name in COMPILED_MODULES:
        module = sys.modules.get(name)
        if module is not None:
            origin = getattr(module, "__file__", None) or ""
        else:
            spec = importlib.util.find_spec(name)
            origin = (spec.origin if spec is not None else None) or ""
        if origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            compiled.append(name)
    if compiled and len(compiled) == len(COMPILED_MODULES):
        return Mode("compiled", tuple(compiled))
    reason = _decided_reason or "some compiled modules missing"
    return Mode("pure", tuple(compiled), reason)


install()
