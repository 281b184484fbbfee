"""
Pick policies: which ready connection takes the next request.

The pool asks its policy once per request, with the connections that are
ready now, so a policy is the one place that decides how load spreads.
Policies are plain objects with a ``pick`` method (:class:`Balancer`): the
pool, the client and the tests need no change to try another one (power of
two choices, round robin, ketama by key, host health).

A policy must skip connections that are leased or not ``accepting`` (full,
draining) and return ``None`` when none can take a request: the client then
parks the request until capacity appears.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from framedclient.protocol import FramedProtocol

__all__ = ["Balancer", "LeastLoaded"]


class Balancer(Protocol):
    """
    Chooses a connection for a request.
    """

    def pick(
        self, ready: Sequence[FramedProtocol], leased: Container[FramedProtocol]
    ) -> FramedProtocol | None:
        """
        One of ``ready`` that is accepting and not in ``leased``, or
        ``None``.  Called once per request: keep it cheap.
        """


class LeastLoaded:
    """
    The connection with the fewest requests in its table (tombstones
    included, since they hold IDs and table space too).

    Ties rotate: the scan starts one further each time, so sequential
    callers and an idle pool use every connection instead of always the
    first one.
    """

    __slots__ = ("_rotation",)

    def __init__(self) -> None:
        self._rotation = 0

    def __repr__(self) -> str:
        return "LeastLoaded()"

    def pick(
        self, ready: Sequence[FramedProtocol], leased: Container[FramedProtocol]
    ) -> FramedProtocol | None:
        n = len(ready)
        if not n:
            return None
        best: FramedProtocol | None = None
        best_load = 0
        start = self._rotation = (self._rotation + 1) % n
        for i in range(n):
            proto = ready[(start + i) % n]
            if proto.accepting and proto not in leased:
                load = proto.table_size
                if best is None or load < best_load:
                    best, best_load = proto, load
        return best
