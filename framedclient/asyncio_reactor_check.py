"""
A warning, once per process, for the most silent asyncio mistake: a client
started from a running asyncio loop while the installed Twisted reactor is
not the asyncio reactor running that loop.

Why: then Twisted's reactor never runs, no connection is ever made, and
every request hangs without an error (docs/asyncio.md).  The check runs when
a client starts, never per request: it costs one ``get_running_loop()``
call, which fails at once outside asyncio.
"""

from __future__ import annotations

import asyncio
import os
import sys
import warnings
from typing import Any

__all__ = ["ReactorNotRunningWarning", "warn_if_asyncio_without_its_reactor"]

_warned = False


class ReactorNotRunningWarning(RuntimeWarning):
    """
    A client was started from asyncio code while the Twisted reactor it
    uses does not run on that asyncio loop: its requests would hang.
    """


def warn_if_asyncio_without_its_reactor(reactor: Any) -> None:
    """
    Warn (once per process) when called from a running asyncio loop and
    ``reactor`` is not Twisted's asyncio reactor running on that very loop.

    :param reactor: the client's reactor (or clock).
    """
    global _warned
    if _warned:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not inside asyncio: the usual Twisted program
        return
    runs_on = getattr(reactor, "_asyncioEventloop", None)
    if runs_on is loop:
        return
    _warned = True
    if runs_on is None:
        problem = (
            f"the installed Twisted reactor is {type(reactor).__name__}, not the "
            "asyncio reactor, so it never runs"
        )
    else:
        problem = (
            "Twisted's asyncio reactor was installed on another loop than the one "
            "running (asyncio.run() always makes a new loop)"
        )
    warnings.warn(
        f"a framedclient client was started inside a running asyncio loop, but "
        f"{problem}: its requests will hang with no error. Call "
        f"twisted.internet.asyncioreactor.install(loop) before anything imports "
        f"twisted.internet.reactor, and run that loop "
        f"(loop.run_until_complete(main()), not asyncio.run()); see docs/asyncio.md",
        ReactorNotRunningWarning,
        stacklevel=_first_caller_outside_framedclient(),
    )


def _first_caller_outside_framedclient() -> int:
    """
    The ``stacklevel`` of the first frame outside this package, so that the
    warning points at the user's line (``from_endpoint(...)``), not at ours.
    """
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame = sys._getframe(1)  # warn_if_asyncio_without_its_reactor
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(package):
        frame = frame.f_back
        level += 1
    return level
