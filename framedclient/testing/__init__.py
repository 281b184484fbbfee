"""
Tools for testing code that uses framedclient, and framedclient itself.

Like ``treq.testing``, this package is public API: use it in your own
trial or pytest suites.

- :mod:`framedclient.testing.faultproxy`:
  :class:`~framedclient.testing.faultproxy.FaultProxy`, a TCP proxy on
  loopback that cuts, delays, splits, merges, corrupts, silences,
  refuses and throttles traffic between a client and a real server, driven
  by a seeded, reproducible
  :class:`~framedclient.testing.faultproxy.FaultSchedule`.
- :mod:`framedclient.testing.memory`: an in-memory client/server pair on a
  ``task.Clock``: :func:`~framedclient.testing.memory.connected_pair` and
  :func:`~framedclient.testing.memory.memory_client`.

See ``docs/testing.md`` for a guide.
"""

from framedclient.testing.faultproxy import (
    FAULT_KINDS,
    TO_CLIENT,
    TO_SERVER,
    ChunkFaults,
    ConnectionPlan,
    Direction,
    FaultProxy,
    FaultSchedule,
    Flow,
    FlowFaults,
    ProxiedConnection,
)

# --- in-memory client/server pair (framedclient/testing/memory.py) ----------
from framedclient.testing.memory import (
    MemoryConnection,
    MemoryEndpoint,
    MemoryPair,
    MemoryPump,
    MemoryServer,
    connected_pair,
    memory_client,
)

# ------------------------------------------------------------------------------

__all__ = [
    "FAULT_KINDS",
    "TO_CLIENT",
    "TO_SERVER",
    "ChunkFaults",
    "ConnectionPlan",
    "Direction",
    "FaultProxy",
    "FaultSchedule",
    "Flow",
    "FlowFaults",
    "MemoryConnection",
    "MemoryEndpoint",
    "MemoryPair",
    "MemoryPump",
    "MemoryServer",
    "ProxiedConnection",
    "connected_pair",
    "memory_client",
]
