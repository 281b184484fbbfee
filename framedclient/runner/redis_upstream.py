"""
Redis upstreams of ``twist framedclient --codec redis``: what a
``redis-cluster:`` or ``redis-sentinel:`` ``--upstream`` becomes, and how
``--redis-password`` and ``--sentinel-password`` reach the servers.

- :class:`ClusterUpstream`: the gateway's client over a Redis Cluster.  It
  is a :class:`~framedclient.clients.cluster.RedisClusterClient` (one pool
  per master, the slot map, the redirect rules of docs/redis-cluster.md)
  seen through the part of :class:`~framedclient.FramedClient` the gateway
  uses: ``request(body)`` routes a raw RESP body by its key's slot
  (:meth:`RedisClusterClient.route
  <framedclient.clients.cluster.RedisClusterClient.route>`), and the
  figures (``stats``, ``debug_state``, ``gauges``, ``pool``) are the
  nodes', node by node, so the status page and ``/metrics`` show each
  master as an upstream.  ``metrics`` counts what the HTTP callers got:
  one outcome per request, after redirects.
- :class:`SentinelClient`: a :class:`~framedclient.FramedClient` whose host
  is the master the sentinels name
  (:class:`~framedclient.clients.sentinel.SentinelHosts`), and which asks
  them again when a request fails with ``READONLY`` (the master was
  demoted) or a lost connection, as
  :class:`~framedclient.clients.redis.SentinelRedisClient` does.
- :class:`RedisAuth`: the passwords, which no ``repr``, log line, status
  field or error message shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import attrs
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.python.failure import Failure

from framedclient.client import FramedClient
from framedclient.clients.cluster import CrossSlot, RedisClusterClient
from framedclient.clients.redis import RedisClient
from framedclient.clients.sentinel import SentinelHosts
from framedclient.clients.slots import SLOTS
from framedclient.codecs.redis import command
from framedclient.config import ClientConfig
from framedclient.connection import Connection
from framedclient.deadlines import DeadlineQueue
from framedclient.errors import (
    ClientClosed,
    ConnectionLost,
    InvalidRequest,
    RemoteError,
    RequestTimeout,
    Unavailable,
    outcome_of,
)
from framedclient.metrics import CounterSample, GaugeSample, Metrics, Sample
from framedclient.protocol import FramedProtocol
from framedclient.runner.cluster import merge_samples, sum_figures

__all__ = ["ClusterUpstream", "RedisAuth", "SentinelClient"]


def _hidden(value: str | None) -> str:
    return "None" if value is None else "'<hidden>'"


@attrs.frozen(repr=False)
class RedisAuth:
    """
    The passwords of a Redis upstream.

    :ivar password: the Redis servers' (``requirepass``): the one server,
        the master the sentinels name, or every cluster node; sent as
        ``AUTH`` on each new connection before it carries requests.
    :ivar sentinel_password: the sentinels' own (their ``requirepass``),
        sent as ``AUTH`` before each question to a sentinel.
    """

    password: str | None = None
    sentinel_password: str | None = None

    def __repr__(self) -> str:
        return (
            f"RedisAuth(password={_hidden(self.password)}, "
            f"sentinel_password={_hidden(self.sentinel_password)})"
        )

    def prepare(self) -> Callable[[FramedProtocol], Deferred[Any]] | None:
        """
        The connection hook that sends ``AUTH`` (``None`` without a
        password): a refusal fails the connection attempt, which is
        retried with backoff and shown as the connection's last error
        (Redis's ``WRONGPASS`` text, which does not quote the password).
        """
        if self.password is None:
            return None
        auth = command("AUTH", self.password)

        def prepare(proto: FramedProtocol) -> Deferred[Any]:
            return proto.request(auth, math.inf)

        return prepare


def node_settings(config: ClientConfig) -> dict[str, Any]:
    """
    ``config`` as the keywords of :meth:`RedisClient.from_endpoint
    <framedclient.RedisClient.from_endpoint>` (its codec apart), so every
    cluster node's client has the gateway's settings.
    """
    settings = {
        field.name: getattr(config, field.name)
        for field in attrs.fields(ClientConfig)
        if field.name != "codec"
    }
    settings["codec"] = config.codec
    return settings


def _failover_sign(error: BaseException) -> bool:
    if isinstance(error, ConnectionLost):
        return True
    return isinstance(error, RemoteError) and error.message.startswith("READONLY")


class SentinelClient(FramedClient):
    """
    A :class:`~framedclient.FramedClient` over the master the sentinels of
    :attr:`sentinel` name: a request that fails with ``READONLY`` or a lost
    connection makes it ask them again at once (one question at a time).
    The request's failure still goes to its caller: nothing is sent again
    that may have been written.

    :ivar sentinel: the host source, also given as ``discovery``.
    """

    sentinel: SentinelHosts

    def request(
        self,
        body: Any,
        timeout: float | None = None,
        *,
        idempotent: bool = False,
        wait_for_ready: bool | None = None,
        key: bytes | str | None = None,
    ) -> Deferred[Any]:
        d = super().request(
            body,
            timeout,
            idempotent=idempotent,
            wait_for_ready=wait_for_ready,
            key=key,
        )
        return d.addErrback(self._failed)

    def _failed(self, failure: Failure) -> Failure:
        if failure.value is not None and _failover_sign(failure.value):
            self.sentinel.refresh()
        return failure


def sentinel_client(
    reactor: Any,
    sentinels: list[str],
    service: str,
    config: ClientConfig,
    auth: RedisAuth,
) -> SentinelClient:
    """The gateway's client of the master ``service`` of ``sentinels``."""
    source = SentinelHosts(
        reactor,
        sentinels,
        service,
        auth=() if auth.password is None else (auth.password,),
        sentinel_auth=()
        if auth.sentinel_password is None
        else (auth.sentinel_password,),
    )
    client = SentinelClient(
        [],
        reactor,
        config=config,
        prepare=auth.prepare(),
        discovery=[source],
        start=False,
    )
    client.sentinel = source
    return client


class NodePools:
    """
    The connections of every cluster node as one pool, for the figures the
    gateway reads of a pool (ready, how many, by state, each connection).
    """

    def __init__(self, nodes: Callable[[], dict[str, RedisClient]]) -> None:
        self._nodes = nodes

    def _pools(self) -> list[Any]:
        return [node.client.pool for _, node in sorted(self._nodes().items())]

    @property
    def ready_count(self) -> int:
        return sum(pool.ready_count for pool in self._pools())

    def __len__(self) -> int:
        return sum(len(pool) for pool in self._pools())

    def __iter__(self) -> Iterator[Connection]:
        for pool in self._pools():
            yield from pool

    def counts_by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for pool in self._pools():
            for state, count in pool.counts_by_state().items():
                counts[state] = counts.get(state, 0) + count
        return counts


class _Routed:
    """
    A request on its way through the cluster, with its whole deadline:
    the redirect loop gives each send the whole timeout and waits for map
    reads without one, so the HTTP caller's timeout is kept here.
    """

    __slots__ = ("deadline", "deferred", "expired", "timeout")

    def __init__(self, deferred: Deferred[Any], deadline: float, timeout: float):
        self.deferred = deferred
        self.deadline = deadline
        self.timeout = timeout
        self.expired = False


class ClusterUpstream:
    """
    The gateway's client over a Redis Cluster (see the module docstring).

    :param seeds: endpoint strings of one node or more.
    :param config: the gateway's settings, given to every node's client
        (so ``--pool-size``, ``--max-in-flight`` and ``--max-pending`` are
        per master).
    :ivar cluster: the :class:`RedisClusterClient` that routes.
    :ivar metrics: what the HTTP callers got, one outcome per request.
    :ivar pool: every node's connections (:class:`NodePools`).
    """

    def __init__(
        self,
        reactor: Any,
        seeds: list[str],
        config: ClientConfig,
        auth: RedisAuth = RedisAuth(),
    ) -> None:
        self._clock = reactor
        self.config = config
        self.metrics = Metrics()
        self.pool = NodePools(self._node_clients)
        self._in_flight = 0
        self._closing = False
        self._listeners: list[Callable[[Connection, str, str], object]] = []
        # One timer for every request's whole deadline.
        self._deadlines: DeadlineQueue[_Routed] = DeadlineQueue(
            reactor,
            lambda routed: not routed.deferred.called,
            self._expired,
            lambda: self._in_flight,
            lambda routed: routed.deadline,
        )
        self.cluster = RedisClusterClient.from_endpoint(
            reactor,
            seeds,
            start=False,
            password=auth.password,
            **node_settings(config),
        )
        self.cluster.add_node_listener(self._node_made)

    # -- what the runner and FramedClientService use --------------------------

    @property
    def wait_for_ready(self) -> bool:
        return self.config.wait_for_ready

    @property
    def in_flight(self) -> int:
        """HTTP requests sent and not answered yet (redirects included)."""
        return self._in_flight

    @property
    def queued(self) -> int:
        return sum(n.client.queued for n in self._node_clients().values())

    def start(self) -> None:
        self.cluster.start()

    def when_ready(self, fail_after: int | None = None) -> Deferred[None]:
        return self.cluster.when_ready(fail_after)

    def close(self, timeout: float | None = None) -> Deferred[None]:
        self._closing = True
        closed = self.cluster.close(timeout)

        def stop(result: Any) -> Any:
            self._deadlines.stop()
            return result

        return closed.addBoth(stop)

    def add_connection_listener(
        self, listener: Callable[[Connection, str, str], object]
    ) -> None:
        """
        Call ``listener(connection, old, new)`` on each state change of
        every node's connections, the nodes learnt later included.
        """
        self._listeners.append(listener)
        for node in self._node_clients().values():
            node.client.add_connection_listener(listener)

    def _node_made(self, where: str, node: RedisClient) -> None:
        # Twisted factories log "Starting factory" on every attempt.
        node.client.factory.noisy = False
        for listener in self._listeners:
            node.client.add_connection_listener(listener)

    def _node_clients(self) -> dict[str, RedisClient]:
        return self.cluster.node_clients()

    # -- requests ------------------------------------------------------------

    def request(
        self,
        body: bytes,
        timeout: float | None = None,
        *,
        idempotent: bool = False,
        wait_for_ready: bool | None = None,
        key: bytes | str | None = None,
    ) -> Deferred[Any]:
        """
        Send the RESP command ``body`` to the master of its key's slot
        (:meth:`RedisClusterClient.route
        <framedclient.clients.cluster.RedisClusterClient.route>`).  A
        command is sent again after a lost connection only if it only
        reads, whatever ``idempotent`` says; ``key`` and ``wait_for_ready``
        are not used (the command's own key routes it).  ``timeout``
        (``request_timeout`` by default) bounds the whole, redirects,
        retries and slot-map reads included; then the request fails with
        :class:`~framedclient.errors.RequestTimeout`, or with
        :class:`~framedclient.errors.Unavailable` when the slot map was
        never read (so nothing was sent).
        """
        started = self._clock.seconds()
        if self._closing:
            error: Exception = ClientClosed("the client is closed; create a new one")
            self.metrics.record_failure(ClientClosed.outcome, None)
            return fail(error)
        try:
            d = self.cluster.route(body, timeout)
        except CrossSlot as e:
            self.metrics.record_failure(e.outcome, None)
            return fail(e)
        except (ValueError, IndexError) as e:
            refused = InvalidRequest(
                f"the body is not one Redis command in RESP (an array of bulk "
                f"strings, e.g. *2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n): {e}"
            )
            self.metrics.record_failure(refused.outcome, None)
            return fail(refused)
        self._in_flight += 1
        if timeout is None:
            timeout = self.config.request_timeout
        routed = None
        if timeout is not None and timeout != math.inf and not d.called:
            routed = _Routed(d, started + timeout, timeout)
            self._deadlines.add(routed.deadline, routed)
        # A bound method and its arguments: no closure made per request.
        return d.addBoth(self._settled, started, routed)

    def _expired(self, routed: _Routed) -> None:
        routed.expired = True
        routed.deferred.cancel()

    def _settled(self, result: Any, started: float, routed: _Routed | None) -> Any:
        self._in_flight -= 1
        if (
            routed is not None
            and routed.expired
            and isinstance(result, Failure)
            and isinstance(result.value, CancelledError)
        ):
            result = Failure(self._timed_out(routed.timeout))  # type: ignore[no-untyped-call]
        latency = self._clock.seconds() - started
        if isinstance(result, Failure):
            self.metrics.record_failure(outcome_of(result.value), latency)
        else:
            self.metrics.record_ok(latency)
        return result

    def _timed_out(self, timeout: float) -> Exception:
        if self.cluster.stats()["slots_mapped"] == 0:
            # No owner was ever known: the command was not sent.
            return Unavailable(
                f"the cluster's slot map could not be read within {timeout:g} s "
                f"(no node answered CLUSTER SHARDS or CLUSTER SLOTS), so the "
                f"command was not sent; check the seeds and that the cluster "
                f"is up"
            )
        return RequestTimeout(
            timeout,
            f"no reply within {timeout:g} s, redirects and retries included; "
            f"the command may have run",
        )

    # -- figures ---------------------------------------------------------------

    def _cluster_figures(self) -> dict[str, Any]:
        stats = self.cluster.stats()
        return {
            # Unmapped rather than mapped: it adds up over --workers (the
            # slots some worker cannot route), and 0 is healthy.
            "unmapped_slots": SLOTS - stats["slots_mapped"],
            "masters": stats["masters"],
            "moved": stats["moved"],
            "ask": stats["ask"],
            "retried": stats["retried"],
            "map_refreshes": stats["map_refreshes"],
        }

    def stats(self) -> dict[str, Any]:
        """
        :meth:`FramedClient.stats <framedclient.FramedClient.stats>`'s
        figures added up over the nodes; ``metrics`` are the HTTP
        callers'; ``cluster``: the map, the redirects, and each node's
        requests and connections.
        """
        nodes = self._node_clients()
        per_node = {}
        figures = []
        for where, node in sorted(nodes.items()):
            stats = node.client.stats()
            metrics = stats.pop("metrics")
            figures.append(stats)
            per_node[where] = {
                "ready": node.client.pool.ready_count,
                "connections": stats["connections"],
                "in_flight": stats["in_flight"],
                "requests": metrics["requests"],
            }
        summed: dict[str, Any] = sum_figures(figures) if figures else {}
        summed.setdefault("queued", 0)
        summed.setdefault("shed", 0)
        summed.setdefault("connections", {})
        summed.setdefault("tracing", self.config.tracing)
        summed.update(
            in_flight=self._in_flight,
            closing=self._closing,
            metrics=self.metrics.snapshot(),
            cluster={**self._cluster_figures(), "nodes": per_node},
        )
        return summed

    def debug_state(self) -> dict[str, Any]:
        """
        :meth:`stats` with every node's connections in detail (one list,
        as a client of several hosts shows them) and their books added up.
        """
        stats = self.stats()
        states = []
        for _, node in sorted(self._node_clients().items()):
            state = node.client.debug_state()
            # What stats() says already, summed; the reactor's timers once.
            for key in ("metrics", "delayed_calls", *stats):
                state.pop(key, None)
            states.append(state)
        merged: dict[str, Any] = sum_figures(states) if states else {}
        merged["upstreams"] = [u for s in states for u in s.get("upstreams", [])]
        get_calls = getattr(self._clock, "getDelayedCalls", None)
        merged["delayed_calls"] = len(get_calls()) if get_calls is not None else None
        return {**stats, **merged}

    def gauges(self) -> list[Sample]:
        """
        Every node's samples, the same series added up (each node's
        ``upstream`` series kept apart), and the cluster's own.
        """
        nodes = [n.client.gauges() for _, n in sorted(self._node_clients().items())]
        samples: list[Sample] = merge_samples(nodes)
        figures = self._cluster_figures()
        samples += [
            GaugeSample(
                "framedclient_cluster_unmapped_slots",
                "Hash slots the gateway's Redis Cluster map assigns no master "
                "(0 once the map is read; requests to them wait for a refresh).",
                figures["unmapped_slots"],
            ),
            GaugeSample(
                "framedclient_cluster_masters",
                "Masters in the gateway's Redis Cluster map.",
                len(figures["masters"]),
            ),
            *(
                CounterSample(
                    "framedclient_cluster_redirects_total",
                    "Commands sent again on a MOVED or ASK redirect.",
                    figures[kind],
                    {"kind": kind},
                )
                for kind in ("moved", "ask")
            ),
            CounterSample(
                "framedclient_cluster_retries_total",
                "Commands sent again after TRYAGAIN, CLUSTERDOWN or a node "
                "unreachable.",
                figures["retried"],
            ),
            CounterSample(
                "framedclient_cluster_map_refreshes_total",
                "Slot map reads (CLUSTER SHARDS or CLUSTER SLOTS).",
                figures["map_refreshes"],
            ),
        ]
        return samples
