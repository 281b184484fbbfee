"""
NSD, the authoritative DNS server, for the zone-transfer tests: started on
a free loopback port with a generated zone (see
:mod:`framedclient.bench.nsd`), stopped by PID.  Like :mod:`tests.servers`,
a missing ``nsd`` skips locally and fails under ``CI=true``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from framedclient.bench.nsd import NsdServer, nsd_program

from .servers import require_program

__all__ = ["nsd_server"]


@contextmanager
def nsd_server(workdir: Path, records: int) -> Iterator[NsdServer]:
    """
    NSD serving ``example.test.`` (``records`` records, transfer allowed)
    and ``closed.test.`` (transfer refused), from files in ``workdir``.
    """
    program = nsd_program() or require_program("nsd", "nsd")
    server = NsdServer(program, workdir, records)
    try:
        server.start()
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        yield server
    finally:
        server.stop()
