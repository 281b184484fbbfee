"""
Names that moved out of a codec module, and the ``__getattr__`` that says
where they went.

The protocol clients (``RedisClient``, ``MemcacheClient``) once lived in
their codec modules; they moved above the core, since a codec imports no
client.  An old import gets an :class:`ImportError` with the new one
instead of a bare "cannot import name".

The function is made here and assigned to the codec module's
``__getattr__`` rather than defined there: those modules are compiled by
mypyc, which registers a module-level ``def __getattr__`` before the
module's globals exist, so the import itself crashed when Python asked the
half-made module for ``__file__``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["moved_names"]


def moved_names(module: str, moved: dict[str, str]) -> Callable[[str], Any]:
    """
    A module ``__getattr__`` for ``module``: each name of ``moved`` raises
    :class:`ImportError` with the import that works now (its value is the
    whole statement); any other name the usual :class:`AttributeError`.
    """

    def module_getattr(name: str) -> Any:
        where = moved.get(name)
        if where is not None:
            raise ImportError(f"{name} moved: {where}")
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return module_getattr
