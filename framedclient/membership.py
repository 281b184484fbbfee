"""
Which hosts a client uses, and their connections, while the host set
changes.

:class:`Membership` takes the lists its host sources
(:mod:`framedclient.discovery`) hand over and keeps the pool in step:

- a host that **joins** gets its connections, made and started at once;
- a host that **leaves** is *retired*: its connections leave the pool (no
  new request goes to them), finish what they hold in flight, then close.
  Nothing in flight is failed by the removal itself; only a request still
  unfinished after ``retire_timeout`` is cut off (and then fails, or is
  retried on another host if it may be, like any lost connection);
- a host whose **weight** changed gets more or fewer connections
  (fewer: the extra ones are retired the same way);
- with SRV **priorities**, only the hosts of the lowest priority are used
  while any of them is reachable (a connection ready, or still on its first
  attempt); when none is, the next priority joins, and it is retired again
  once a lower one is back;
- with ``max_connection_age``, a connection that has been ready that long
  (±10 % jitter, so connections made together do not all reconnect
  together) is recycled: a new one replaces it at once while it drains,
  and its source is asked to look the hosts up again.

**Weights decide connection shares.**  A host of weight ``w`` among hosts
of mean weight ``m`` gets ``round(pool_size * w / m)`` connections (at
least one), so with any pick policy that spreads requests over connections
(least-loaded, round robin) a host's share of requests follows its weight.
The hosts of a ``dns:NAME:PORT:weight=N`` string all have weight ``N``, set
against the client's other hosts rather than against each other: each gets
``pool_size * N`` connections (a source with ``absolute_weights``).
Each connection also carries its host's ``weight``
(:attr:`~framedclient.connection.Connection.weight`) for policies that
weigh hosts themselves.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from framedclient.connection import Connection
from framedclient.discovery import Host, HostSource, StaticHosts
from framedclient.errors import ClientClosed
from framedclient.pool import Pool
from framedclient.protocol import FramedProtocol

__all__ = ["Membership", "connection_count"]

_log = Logger()

#: ``max_connection_age`` is jittered by this share either way.
AGE_JITTER = 0.1


def connection_count(weight: int, weights: Sequence[int], pool_size: int) -> int:
    """
    How many connections a host of ``weight`` gets among hosts of
    ``weights`` (its own included): ``pool_size`` at the mean weight, in
    proportion otherwise, and at least one.  All weights zero (allowed by
    SRV) count as equal.
    """
    total = sum(weights)
    if total <= 0:
        return pool_size
    return max(1, round(pool_size * weight * len(weights) / total))


class _Member:
    """
    One host in use and its connections.
    """

    __slots__ = ("connections", "group", "host")

    def __init__(self, group: str, host: Host) -> None:
        self.group = group
        self.host = host
        self.connections: list[Connection] = []

    def reachable(self) -> bool:
        # Ready, or not failed yet (on a first attempt): worth waiting for.
        return any(
            c.state == "ready"
            or (c.failed_attempts == 0 and c.state in ("idle", "connecting"))
            for c in self.connections
        )


class Membership:
    """
    The hosts of one client and their connections.

    :param pool: where the connections of hosts in use are picked from.
    :param clock: for ``retire_timeout`` and ``max_connection_age``.
    :param connect: makes the ``index``-th connection to a host (not
        started).
    :param joined: told of each new connection once it is in the pool.
    :param pool_size: connections per host of average weight.
    :param retire_timeout: seconds a retired connection (or one replaced
        by ``max_connection_age``) may take to finish what it holds; then
        it is closed without waiting.  ``None``: wait for the requests'
        own deadlines.
    :param max_connection_age: recycle a connection ready for this many
        seconds (±10 %); ``None``: never.
    :param random: ``() -> float`` in ``[0, 1)`` for the age jitter.
    """

    def __init__(
        self,
        pool: Pool,
        clock: IReactorTime,
        connect: Callable[[Host, int], Connection],
        joined: Callable[[Connection], None],
        *,
        pool_size: int,
        retire_timeout: float | None,
        max_connection_age: float | None,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._connect = connect
        self._joined = joined
        self.pool_size = pool_size
        self.retire_timeout = retire_timeout
        self.max_connection_age = max_connection_age
        self._random = random
        self._started = False
        self._stopped = False
        self._sources: dict[str, HostSource] = {}
        #: each group's last list of hosts (all priorities)
        self._hosts: dict[str, list[Host]] = {}
        #: groups of replaced sources, retired once a new one knows a host
        self._outgoing: set[str] = set()
        self._members: dict[tuple[str, str, str], _Member] = {}
        self._member_of: dict[Connection, _Member] = {}
        self._age_timers: dict[Connection, IDelayedCall] = {}
        #: connections on their way out, and the timer that cuts them off
        self.retiring: dict[Connection, IDelayedCall | None] = {}
        self._busy = False
        self._dirty: set[str] = set()
        #: hosts joined, left, connections recycled (for ``debug_state``)
        self.joins = 0
        self.leaves = 0
        self.recycled = 0
        self._first_hosts: list[Deferred[None]] = []

    # -- sources ------------------------------------------------------------------

    def set_sources(self, sources: Sequence[HostSource]) -> None:
        """
        Use these sources from now on; hosts only the old ones gave are
        retired once the new ones know some host (so a switch to a source
        still asking DNS never leaves the client without hosts).  A
        :class:`StaticHosts` gives its hosts at once; the others start
        asking once the client starts.
        """
        for source in self._sources.values():
            source.stop()
        groups: dict[str, HostSource] = {}
        for source in sources:
            key = source.description
            n = 2
            while key in groups:
                key = f"{source.description}#{n}"
                n += 1
            groups[key] = source
        self._sources = groups
        self._outgoing |= set(self._hosts) - groups.keys()
        for key, source in groups.items():
            if self._started or isinstance(source, StaticHosts):
                self._start_source(key, source)
        if any(self._hosts.get(key) for key in groups):
            self._retire_outgoing()

    def _retire_outgoing(self) -> None:
        outgoing, self._outgoing = self._outgoing, set()
        for group in outgoing:
            self._hosts.pop(group, None)
            self._reconcile(group)

    def _start_source(self, key: str, source: HostSource) -> None:
        def update(hosts: list[Host]) -> None:
            if self._sources.get(key) is source and not self._stopped:
                self.update(key, hosts)

        source.start(update)

    def update(self, group: str, hosts: Sequence[Host]) -> None:
        """
        ``group``'s hosts are now ``hosts``: join, retire, reweigh.
        """
        self._hosts[group] = list(hosts)
        self._reconcile(group)
        if self._outgoing and hosts:
            self._retire_outgoing()
        if self._first_hosts and self._pool.connections:
            waiters, self._first_hosts = self._first_hosts, []
            for d in waiters:
                d.callback(None)

    def when_hosts(self) -> Deferred[None]:
        """
        Fires once some host is known (at once if one is); fails with
        :class:`~framedclient.errors.ClientClosed` if the client closes
        first.
        """
        d: Deferred[None] = Deferred()
        if self._pool.connections:
            d.callback(None)
        else:
            self._first_hosts.append(d)
        return d

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """
        Start every connection and every source (idempotent).
        """
        if self._started or self._stopped:
            return
        self._started = True
        for conn in list(self._pool):
            conn.start()
        for key, source in self._sources.items():
            if not isinstance(source, StaticHosts):
                self._start_source(key, source)

    def stop(self) -> None:
        """
        The client is closing: no more updates, recycling or joining.
        """
        self._stopped = True
        for source in self._sources.values():
            source.stop()
        for timer in self._age_timers.values():
            if timer.active():
                timer.cancel()
        self._age_timers.clear()
        waiters, self._first_hosts = self._first_hosts, []
        for d in waiters:
            d.errback(ClientClosed("the client closed before any host was found"))

    def connections(self) -> Iterator[Connection]:
        """
        Every connection still open or closing: in use, and retiring.
        """
        yield from list(self._pool)
        yield from list(self.retiring)

    def errors(self) -> list[str]:
        """
        Why sources have no hosts yet or could not refresh them.
        """
        found = []
        for source in self._sources.values():
            error = source.debug_state().get("last_error")
            if error:
                found.append(f"{source.description}: {error}")
        return found

    # -- keeping the pool in step -------------------------------------------------

    def _reconcile(self, group: str) -> None:
        if self._busy:
            # A connection changed state while we were closing or starting
            # others: do it again once this round is over.
            self._dirty.add(group)
            return
        self._busy = True
        try:
            self._dirty.add(group)
            while self._dirty:
                self._apply(self._dirty.pop())
        finally:
            self._busy = False

    def _active(self, group: str) -> list[Host]:
        """
        The hosts of ``group`` to use: the lowest priority, and the next
        ones while every host of those before is unreachable.
        """
        hosts = self._hosts.get(group, [])
        active: list[Host] = []
        for priority in sorted({h.priority for h in hosts}):
            tier = [h for h in hosts if h.priority == priority]
            active += tier
            members = [self._members.get((group, *h.key)) for h in tier]
            # A host not tried yet counts as reachable until it fails.
            if any(m is None or m.reachable() for m in members):
                break
        return active

    def _apply(self, group: str) -> None:
        active = [] if self._stopped else self._active(group)
        wanted: dict[tuple[str, str], tuple[Host, int]] = {}
        # A dns:NAME:PORT:weight=N source weighs its hosts against the
        # client's other hosts (weight 1: pool_size connections), not
        # against each other: they all have its weight.
        absolute = getattr(self._sources.get(group), "absolute_weights", False)
        for priority in {h.priority for h in active}:
            tier = [h for h in active if h.priority == priority]
            weights = [h.weight for h in tier]
            for h in tier:
                count = (
                    max(1, self.pool_size * h.weight)
                    if absolute
                    else connection_count(h.weight, weights, self.pool_size)
                )
                wanted[h.key] = (h, count)
        for key, member in list(self._members.items()):
            if key[0] == group and key[1:] not in wanted:
                del self._members[key]
                self.leaves += 1
                _log.info(
                    "Host {host} left ({group}); its {n} connections drain",
                    host=member.host.name,
                    group=group,
                    n=len(member.connections),
                )
                self._retire(member.connections)
                member.connections = []
        for host_key, (host, count) in wanted.items():
            key = (group, *host_key)
            found = self._members.get(key)
            if found is None:
                member = self._members[key] = _Member(group, host)
                self.joins += 1
                _log.info("Host {host} joined ({group})", host=host.name, group=group)
            else:
                member = found
            member.host = host
            have = member.connections
            if len(have) > count:
                self._retire(have[count:])
                del have[count:]
            for conn in have:
                conn.weight = host.weight
            if len(have) < count:
                self._add(member, count - len(have))

    def _add(self, member: _Member, n: int) -> None:
        start = len(member.connections)
        new = [self._connect(member.host, i) for i in range(start, start + n)]
        member.connections += new
        self._pool.add(new)
        for conn in new:
            self._member_of[conn] = member
            self._joined(conn)
            conn.add_listener(self._changed)
        if self._started:
            for conn in new:
                conn.start()

    def _retire(self, conns: Sequence[Connection]) -> None:
        if not conns:
            return
        self._pool.remove(conns)
        for conn in conns:
            self._member_of.pop(conn, None)
            timer = self._age_timers.pop(conn, None)
            if timer is not None and timer.active():
                timer.cancel()
            closed = conn.close(drain=True)
            if closed.called:
                continue
            cut = None
            if self.retire_timeout is not None:
                cut = self._clock.callLater(self.retire_timeout, conn.close, False)
            self.retiring[conn] = cut
            closed.addCallback(self._retired, conn)

    def _retired(self, _: object, conn: Connection) -> None:
        cut = self.retiring.pop(conn, None)
        if cut is not None and cut.active():
            cut.cancel()

    def _changed(self, conn: Connection, old: str, new: str) -> None:
        member = self._member_of.get(conn)
        if member is None:
            return  # retired
        if new == "ready" and self.max_connection_age is not None and not self._stopped:
            age = self.max_connection_age * (
                1 - AGE_JITTER + 2 * AGE_JITTER * self._random()
            )
            timer = self._age_timers.pop(conn, None)
            if timer is not None and timer.active():
                timer.cancel()
            self._age_timers[conn] = self._clock.callLater(age, self._recycle, conn)
        elif old == "ready":
            timer = self._age_timers.pop(conn, None)
            if timer is not None and timer.active():
                timer.cancel()
        hosts = self._hosts.get(member.group, [])
        if len({h.priority for h in hosts}) > 1:
            # Reachability decides which priorities are in use.
            self._reconcile(member.group)

    def _recycle(self, conn: Connection) -> None:
        self._age_timers.pop(conn, None)
        member = self._member_of.get(conn)
        if member is None:
            return
        proto = conn.recycle()
        if proto is None:
            return
        self.recycled += 1
        self._bound_drain(proto)
        source = self._sources.get(member.group)
        if source is not None:
            source.refresh()

    def _bound_drain(self, proto: FramedProtocol) -> None:
        if self.retire_timeout is None or proto.is_closed:
            return
        cut = self._clock.callLater(self.retire_timeout, proto.close, False)

        def closed(reason: str) -> None:
            if cut.active():
                cut.cancel()

        proto.when_closed().addCallback(closed)

    # -- introspection --------------------------------------------------------------

    def debug_state(self) -> dict[str, Any]:
        """
        The sources, the hosts in use (weight, priority, connection states)
        and what is retiring.
        """
        hosts = []
        for (group, _, _), member in self._members.items():
            states: dict[str, int] = {}
            for conn in member.connections:
                states[conn.state] = states.get(conn.state, 0) + 1
            hosts.append(
                {
                    "name": member.host.name,
                    "address": member.host.address,
                    "source": group,
                    "weight": member.host.weight,
                    "priority": member.host.priority,
                    "connections": states,
                }
            )
        return {
            "sources": [s.debug_state() for s in self._sources.values()],
            "hosts": hosts,
            "retiring_connections": len(self.retiring),
            "joins": self.joins,
            "leaves": self.leaves,
            "recycled": self.recycled,
            "max_connection_age": self.max_connection_age,
        }
