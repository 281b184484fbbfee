"""
Pick policies: which ready connection takes the next request.

The pool asks its policy once per request, with the connections that are
ready now, so a policy is the one place that decides how load spreads.
Policies are plain objects with a ``pick`` method (:class:`Balancer`): the
pool, the client and the tests need no change to try another one.

Built in, by the names ``FramedClient(balancer=...)``, ``ClientConfig`` and
``--balancer`` accept:

- ``"p2c"`` (the default), :class:`PowerOfTwoChoices`: two connections at
  random, the one whose host's peak-EWMA latency x (in flight + 1) is lower
  wins (Finagle's and Linkerd's default; the latency is divided by the
  queue it already holds, see
  :meth:`~framedclient.health.HostHealth.settled`).  Cheap, sees a slow
  host as well as a busy one, without every client herding onto the one
  connection that looks best;
  ``PowerOfTwoChoices(latency=False)`` compares in-flight counts only (the
  default before latency was weighed);
- ``"least_loaded"``, :class:`LeastLoaded`: a scan for the emptiest
  connection, ties rotating;
- ``"round_robin"``, :class:`RoundRobin`: each ready connection in turn;
- ``"ketama"``, :class:`Ketama`: consistent hashing of the request's
  ``key`` onto upstreams, placed like libketama and twemproxy
  (:mod:`framedclient.ketama`), least-loaded among that upstream's
  connections;
- :class:`WeightedRoundRobin` (an object, since it needs its weights):
  upstreams in proportion to their weights (nginx's smooth weighted round
  robin), least-loaded within each.

A policy must skip connections that are leased or not ``accepting`` (full,
draining) and return ``None`` when none can take a request: the client then
parks the request until capacity appears.

Two interfaces, so that the common case stays cheap: a :class:`Balancer`
gets the ready connections as a plain list (indexing a list is the fastest
thing Python does, and the default policy runs once per request); an
:class:`UpstreamBalancer` (weights, ketama) gets them grouped by upstream,
with the request's key, as :class:`ReadyConnections`.  A request's key is
ignored by a :class:`Balancer`.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from framedclient.health import COLD
from framedclient.ketama import KetamaRing

if TYPE_CHECKING:
    from framedclient.health import HostHealth
    from framedclient.protocol import FramedProtocol

__all__ = [
    "BALANCERS",
    "Balancer",
    "Ketama",
    "LeastLoaded",
    "PowerOfTwoChoices",
    "ReadyConnections",
    "RoundRobin",
    "UpstreamBalancer",
    "WeightedRoundRobin",
    "make_balancer",
    "ring_node_name",
]


class ReadyConnections:
    """
    The connections that are ready now, in the pool's order, and which
    upstream each belongs to.  The pool rebuilds it when a connection
    changes state, never per request.

    :ivar connections: the ready connections (what a :class:`Balancer` gets).
    :ivar upstreams: every upstream of the pool, ready or not, in order (a
        ring must not move keys because a host is down for a moment).
    :ivar by_upstream: the ready connections of each upstream that has any.
    :ivar upstream_of: the upstream of each ready connection.
    """

    __slots__ = ("by_upstream", "connections", "upstream_of", "upstreams")

    def __init__(
        self,
        upstreams: tuple[str, ...] = (),
        connections: Iterable[tuple[str, FramedProtocol]] = (),
    ) -> None:
        self.upstreams = upstreams
        self.connections: list[FramedProtocol] = []
        self.by_upstream: dict[str, list[FramedProtocol]] = {}
        self.upstream_of: dict[FramedProtocol, str] = {}
        for upstream, proto in connections:
            self.connections.append(proto)
            self.by_upstream.setdefault(upstream, []).append(proto)
            self.upstream_of[proto] = upstream

    def __repr__(self) -> str:
        return f"<ReadyConnections {self.by_upstream!r}>"

    def without(self, upstream: str) -> ReadyConnections:
        """
        The same, less ``upstream``'s connections (a hedge goes to another
        host).
        """
        return ReadyConnections(
            self.upstreams,
            ((u, p) for p, u in self.upstream_of.items() if u != upstream),
        )


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


@runtime_checkable
class UpstreamBalancer(Protocol):
    """
    Chooses a connection for a request knowing which upstream (host) each
    connection goes to, and the request's key.
    """

    def pick_upstream(
        self,
        ready: ReadyConnections,
        leased: Container[FramedProtocol],
        key: bytes | None,
    ) -> FramedProtocol | None:
        """
        One of ``ready.connections`` that is accepting and not in
        ``leased``, or ``None``.  ``key``: the request's (``str`` keys are
        UTF-8 encoded by the client), or ``None``.
        """


def _least_loaded(
    candidates: Iterable[FramedProtocol], leased: Container[FramedProtocol]
) -> FramedProtocol | None:
    best: FramedProtocol | None = None
    best_load = 0
    for proto in candidates:
        if proto.accepting and proto not in leased:
            load = proto.table_size
            if best is None or load < best_load:
                best, best_load = proto, load
    return best


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


#: The score of a cold host (no latency sample yet) with requests out: it
#: loses to every host with a sample, so a new host gets one request per
#: connection at a time until its first reply (Finagle's penalty).
_PENALTY = 1e300

_log1p = math.log1p


def _score(proto: FramedProtocol, host: HostHealth, rank: float) -> float:
    # ln(latency x (in flight + 1)), up to a common additive term.
    load = proto.table_size
    if not load:
        return rank
    if rank == COLD:
        return _PENALTY + load
    # Requests out and nothing read for a while: they have waited at least
    # that long, whatever the decayed estimate says.  (Written without
    # max() and with log1p bound: this runs twice in most picks between
    # hosts.)
    waiting = host.waiting_rank(proto.last_read)
    if waiting > rank:
        rank = waiting
    return rank + _log1p(load)


def _cheaper(a: FramedProtocol, b: FramedProtocol) -> bool:
    """
    Whether ``a`` costs less than ``b``: peak-EWMA latency / (queued + 1) x
    (in flight + 1), compared in log space (the host's rank holds the
    first two, see :mod:`framedclient.health`).  Without hosts
    (connections made outside a client), the one with fewer requests.
    """
    ha = a.health
    hb = b.health
    if ha is None or hb is None:
        return a.table_size < b.table_size
    ra = ha.rank
    rb = hb.rank
    if ha is hb or ra == rb:
        # One host (or two alike): its connections differ by load only.
        return a.table_size < b.table_size
    return _score(a, ha, ra) < _score(b, hb, rb)


class PowerOfTwoChoices:
    """
    Two candidate connections; the cheaper one wins (the random one on a
    tie).  The cost of a connection is its host's peak-EWMA latency
    multiplied by the requests it has in flight plus one (Finagle's and
    Linkerd's ``PeakEwma``; see :mod:`framedclient.health` and
    ``docs/scaling.md``), so a slow host loses nearly every comparison
    until its estimate has decayed, then gets one trial; a host with no
    sample yet wins while it has nothing in flight.  With
    ``latency=False``, the one with fewer requests in its table wins.

    By default one candidate is drawn at random and the other is the last
    winner ("load balancing with memory": Shah and Prabhakar; Mitzenmacher,
    Prabhakar and Shah); with ``memory=False`` both are drawn at random
    (Finagle's and tower's p2c).

    Why not always the least loaded: many clients (or one client's bursts
    between two reactor turns) that all pick "the emptiest" pile onto the
    same connection; two choices keep most of least-loaded's benefit while
    spreading such herds.  Why the memory: it balances at least as well as
    two random draws, costs one random number instead of two, and keeps the
    requests of one burst (the replies of one read that each send a new
    request) on one connection while it is no busier than a random other,
    so they leave in fewer writes: on loopback with four connections (a
    loaded machine), two random draws cost 7 to 14 % more CPU per request
    than a least-loaded scan; with the memory, within 5 % of it either way
    (64 and 1,024 requests in flight).

    When a candidate cannot take a request the other is used; when neither
    can, a full scan finds one if any can.

    :param random: a ``random()`` function; pass a seeded
        ``random.Random(seed).random`` for reproducible picks.
    :param memory: keep the last winner as one of the two candidates.
    :param latency: compare peak-EWMA latency x (in flight + 1) rather
        than in-flight counts alone.
    """

    __slots__ = ("_last", "_random", "latency", "memory")

    def __init__(
        self,
        random: Callable[[], float] | None = None,
        memory: bool = True,
        latency: bool = True,
    ) -> None:
        self._random = random if random is not None else _random.random
        self.memory = memory
        self.latency = latency
        # The last winner's index in ``ready`` (-1: none), not the
        # connection itself, so a closed connection is never kept alive
        # here; after the pool changes it may name another connection,
        # which is then just as good a candidate.
        self._last = -1

    def __repr__(self) -> str:
        return f"PowerOfTwoChoices(memory={self.memory}, latency={self.latency})"

    def pick(
        self, ready: Sequence[FramedProtocol], leased: Container[FramedProtocol]
    ) -> FramedProtocol | None:
        n = len(ready)
        if n < 2:
            return _least_loaded(ready, leased)
        rand = self._random
        i = int(rand() * n)
        j = self._last
        if not 0 <= j < n:
            j = int(rand() * (n - 1))
            if j >= i:
                j += 1
        elif j == i:
            # The draw is the remembered one: draw the other candidate.
            i = int(rand() * (n - 1))
            if i >= j:
                i += 1
        a = ready[j]
        b = ready[i]
        a_ok = a.accepting and a not in leased
        # On a tie the random one wins, so an idle pool (sequential callers,
        # a quiet client over several hosts) uses every connection.
        if b.accepting and b not in leased and not (
            a_ok
            and (
                _cheaper(a, b)
                if self.latency
                else a.table_size < b.table_size
            )
        ):
            winner, index = b, i
        elif a_ok:
            winner, index = a, j
        else:
            return _least_loaded(ready, leased)
        if self.memory:
            self._last = index
        return winner


class RoundRobin:
    """
    Each ready connection in turn, skipping those that cannot take a
    request.

    For servers whose cost per request is even and known: it ignores load,
    so a slow connection keeps getting its share (prefer ``p2c`` when
    replies vary).
    """

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def __repr__(self) -> str:
        return "RoundRobin()"

    def pick(
        self, ready: Sequence[FramedProtocol], leased: Container[FramedProtocol]
    ) -> FramedProtocol | None:
        n = len(ready)
        start = self._next
        for i in range(n):
            proto = ready[(start + i) % n]
            if proto.accepting and proto not in leased:
                self._next = (start + i + 1) % n
                return proto
        return None


class WeightedRoundRobin:
    """
    Upstreams in proportion to their weights, least-loaded among each
    upstream's connections.

    nginx's smooth weighted round robin: weights 5, 1, 1 give
    ``a a b a c a a`` rather than five ``a`` in a row, so a heavy upstream
    never takes a burst alone.  Upstreams with no connection that can take
    the request sit the round out.

    :param weights: upstream name (as the client names its endpoints:
        ``names=``, or the endpoint string) to a positive weight; upstreams
        not listed weigh ``default``.
    :raises ValueError: a weight that is not a positive finite number.
    """

    __slots__ = ("_current", "default", "weights")

    def __init__(self, weights: Mapping[str, float], default: float = 1.0) -> None:
        for name, weight in {**weights, "default": default}.items():
            if (
                isinstance(weight, bool)
                or not isinstance(weight, (int, float))
                or not 0 < weight < float("inf")
            ):
                raise ValueError(
                    f"weight of {name!r} must be a positive number, got {weight!r}"
                )
        self.weights = dict(weights)
        self.default = default
        self._current: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"WeightedRoundRobin({self.weights!r})"

    def pick_upstream(
        self,
        ready: ReadyConnections,
        leased: Container[FramedProtocol],
        key: bytes | None,
    ) -> FramedProtocol | None:
        current = self._current
        weights = self.weights
        total = 0.0
        best: str | None = None
        best_proto: FramedProtocol | None = None
        for upstream, protos in ready.by_upstream.items():
            proto = _least_loaded(protos, leased)
            if proto is None:
                continue
            weight = weights.get(upstream, self.default)
            total += weight
            value = current[upstream] = current.get(upstream, 0.0) + weight
            if best is None or value > current[best]:
                best, best_proto = upstream, proto
        if best is not None:
            current[best] -= total
        return best_proto


def ring_node_name(upstream: str) -> str:
    """
    The ketama node name of an upstream: ``host:port``.

    Upstreams are named by their endpoint strings (``tcp:10.0.0.1:11211``,
    ``tcp:host=h:port=p``, ``tls:h:p:...``) unless the client was given
    ``names=``; other ketama clients name nodes ``host:port``, so the
    scheme and options are dropped.  A host found by ``srv:`` or ``dns:``
    (``NAME@ADDRESS``) is named by the address it connects to.  A name that
    is no endpoint string (``names=["cache-a", ...]``) is used as it is,
    like a twemproxy server with a name of its own.
    """
    name, at, address = upstream.rpartition("@")
    if at and name:
        # A discovered host (NAME@ADDRESS, srv: and dns: hosts): the address
        # it connects to, host:port, which is distinct even when several
        # addresses share one DNS name.
        return address
    scheme, sep, rest = upstream.partition(":")
    if not sep or scheme not in ("tcp", "tls", "ssl", "tcp6", "tcp4"):
        return upstream
    if rest.startswith("["):
        # An IPv6 literal in brackets (how endpoint names write them).
        host, bracket, after = rest.partition("]")
        if bracket and after.startswith(":"):
            return f"{host}]:{after[1:].split(':')[0]}"
        return upstream
    positional: list[str] = []
    keywords: dict[str, str] = {}
    # Endpoint strings escape colons inside values (IPv6 hosts) as "\:".
    for escaped in rest.replace("\\:", "\0").split(":"):
        part = escaped.replace("\0", ":")
        key, eq, value = part.partition("=")
        if eq:
            keywords[key] = value
        else:
            positional.append(part)
    host = keywords.get("host", positional[0] if positional else "")
    port = keywords.get("port", positional[1] if len(positional) > 1 else "")
    if not (host and port):
        return upstream
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Ketama:
    """
    Requests with a key go to the upstream that ketama places the key on,
    to its least-loaded connection that can take the request.

    - The ring holds every upstream of the pool, ready or not, named by
      :func:`ring_node_name` (``host:port``): a key's home does not move
      while its host reconnects, and other ketama clients (libketama,
      twemproxy with ``hash: md5``, uhashring) agree on it.
    - When the key's upstream has no connection that can take the request
      (down, or full), the request goes to the next upstream on the ring
      that can, as twemproxy does with ``auto_eject_hosts: true``: the key
      is served rather than parked, at the cost of a cache miss there.
    - A request without a key has no home: it goes where
      :class:`PowerOfTwoChoices` (or ``fallback``) sends it.

    :param fallback: the policy for requests without a key.
    """

    __slots__ = ("_nodes", "_ring", "_upstreams", "fallback")

    def __init__(self, fallback: Balancer | None = None) -> None:
        self.fallback: Balancer = (
            fallback if fallback is not None else PowerOfTwoChoices()
        )
        self._upstreams: tuple[str, ...] = ()
        self._ring: KetamaRing | None = None
        self._nodes: dict[str, str] = {}

    def __repr__(self) -> str:
        return "Ketama()"

    def ring(self, upstreams: tuple[str, ...]) -> KetamaRing:
        """
        The ring of ``upstreams`` (built once per set of upstreams).
        """
        if self._ring is None or upstreams != self._upstreams:
            nodes = {ring_node_name(u): u for u in upstreams}
            if len(nodes) != len(upstreams):
                raise ValueError(
                    f"two upstreams have the same ketama node name in "
                    f"{list(upstreams)!r}; name them apart with names="
                )
            self._ring = KetamaRing(nodes)
            self._nodes = nodes
            self._upstreams = upstreams
        return self._ring

    def pick_upstream(
        self,
        ready: ReadyConnections,
        leased: Container[FramedProtocol],
        key: bytes | None,
    ) -> FramedProtocol | None:
        upstreams = ready.upstreams
        if key is None or not upstreams:
            return self.fallback.pick(ready.connections, leased)
        ring = self.ring(upstreams)
        by_upstream = ready.by_upstream
        nodes = self._nodes
        home = by_upstream.get(nodes[ring.node_for(key)])
        if home is not None:
            proto = _least_loaded(home, leased)
            if proto is not None:
                return proto
        for node in ring.nodes_for(key):
            protos = by_upstream.get(nodes[node])
            if protos is not None:
                proto = _least_loaded(protos, leased)
                if proto is not None:
                    return proto
        return None


#: The policies known by name (``balancer="p2c"``, ``--balancer p2c``).
BALANCERS: dict[str, Callable[[], Balancer | UpstreamBalancer]] = {
    "p2c": PowerOfTwoChoices,
    "least_loaded": LeastLoaded,
    "round_robin": RoundRobin,
    "ketama": Ketama,
}


def make_balancer(
    spec: str | Balancer | UpstreamBalancer,
) -> Balancer | UpstreamBalancer:
    """
    The policy ``spec`` names, made fresh (policies keep state, so two
    clients never share one made from a name); a policy object is returned
    as it is.

    :raises ValueError: an unknown name (the message lists the known ones).
    """
    if isinstance(spec, str):
        try:
            factory = BALANCERS[spec.strip().lower().replace("-", "_")]
        except KeyError:
            raise ValueError(
                f"unknown balancer {spec!r}; expected one of "
                f"{', '.join(BALANCERS)} or a policy object"
            ) from None
        return factory()
    return spec
