"""
:class:`RedisClusterClient`: the commands of
:class:`~framedclient.clients.redis.RedisClient` over a Redis Cluster, each
sent to the master that serves its key's hash slot.

One :class:`~framedclient.clients.redis.RedisClient` (so one pooled,
self-healing :class:`~framedclient.FramedClient`) per master, made on first
use; the slot map is read from ``CLUSTER SHARDS`` (or ``CLUSTER SLOTS``) and
kept current by the redirects the nodes answer.  The modules beside it:

- :mod:`~framedclient.clients.slots`: a key's hash slot;
- :mod:`~framedclient.clients.cluster_map`: the slot map, its parsers, and
  where each command's keys are;
- :mod:`~framedclient.clients.cluster_endpoints`: ``redis-cluster:``
  strings and the nodes' endpoints;
- :mod:`~framedclient.clients.cluster_redirects`: what happens to a command
  on ``MOVED``, ``ASK``, ``TRYAGAIN`` or a lost node (the contract of
  docs/redis-cluster.md);
- :mod:`~framedclient.clients.cluster_pipeline`: pipelines split per node,
  transactions on one slot.
"""

from __future__ import annotations

import math
from binascii import crc_hqx
from collections.abc import Callable, Sequence
from typing import Any, Self

from twisted.internet.defer import (
    Deferred,
    DeferredList,
    TimeoutError,
    ensureDeferred,
    gatherResults,
)
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from framedclient.clients.cluster_endpoints import (
    SCHEME,
    cluster_seeds,
    node_endpoint,
    seed_address,
)
from framedclient.clients.cluster_map import (
    READ_ONLY_COMMANDS,
    Address,
    CrossSlot,
    SlotMap,
    command_route,
    key_is_first_argument,
    parse_cluster_shards,
    parse_cluster_slots,
)
from framedclient.clients.cluster_pipeline import send_batch
from framedclient.clients.cluster_redirects import resend
from framedclient.clients.redis import (
    Arg,
    RedisClient,
    RedisCommands,
    _as_resp_error,
    _build,
    _first_error,
)
from framedclient.clients.slots import key_slot
from framedclient.codecs.arguments import argument_bytes
from framedclient.codecs.redis import (
    CommandBatch,
    RespError,
    _Command,
    command,
    parse_reply,
)
from framedclient.errors import (
    ClientClosed,
    ConnectionLost,
    Unavailable,
)
from framedclient.protocol import FramedProtocol

__all__ = ["CrossSlot", "RedisClusterClient", "cluster_seeds"]


# How a method's command name routes: True/False (its key is its first
# argument; whether it only reads), or _NOT_BY_FIRST_KEY (parsed whole,
# by command_route).  Filled on first use of each name.
_NOT_BY_FIRST_KEY = "by command_route"
_ROUTES: dict[Arg, bool | str] = {}


def _route_of(name: Arg) -> bool | str:
    word = str(name).upper().encode()
    route = (
        (word in READ_ONLY_COMMANDS)
        if key_is_first_argument(word)
        else _NOT_BY_FIRST_KEY
    )
    if isinstance(name, str) and len(_ROUTES) < 1024:
        _ROUTES[name] = route
    return route


# How long a node may take to answer for the slot map before the next one
# is asked (a dead master must not hold the refresh, nor every caller
# waiting on it, for a whole request timeout).
_MAP_TIMEOUT = 2.0


class RedisClusterClient(RedisCommands):
    """
    A Redis Cluster client with :class:`~framedclient.RedisClient`'s
    commands, pipelines and transactions; each command goes to the master
    of its key's slot.  Embedded like a ``RedisClient``: ``async with``,
    ``start()``/``close()``, ``when_ready()``, ``stats()``, and
    :class:`~framedclient.FramedClientService`.

    Multi-key commands need their keys in one slot (a ``{hash tag}``),
    else they raise :class:`CrossSlot` and send nothing; except
    :meth:`mget`, :meth:`delete` and :meth:`exists`, which are split per
    slot (each part atomic on its own, the whole not).  A
    :meth:`transaction` runs on one node, so all its keys must share a
    slot.  A :meth:`pipeline` may span nodes: it is split per node and its
    replies come back in the order the commands were added.

    Make one with :meth:`from_endpoint`.
    """

    def __init__(
        self,
        reactor: Any,
        seeds: Sequence[str],
        node_options: dict[str, Any],
        *,
        max_redirects: int = 5,
        retry_delay: float = 0.05,
        read_from_replicas: bool = False,
        start: bool = True,
    ) -> None:
        self._reactor = reactor
        self._read_from_replicas = read_from_replicas
        self._replicas: dict[Address, RedisClient] = {}
        self._turn = 0
        self._seeds = list(seeds)
        # Nodes learnt from the map are reached as the (first) TLS seed is.
        self._tls = next((s for s in self._seeds if s.startswith("tls:")), None)
        self._options = node_options
        self._max_redirects = max_redirects
        self._retry_delay = retry_delay
        self._started = False
        self._closed = False
        self._nodes: dict[Address, RedisClient] = {}
        self._map = SlotMap()
        # The map's slot -> master list, indexed on every command.
        self._owners = self._map.owners
        # The callers waiting for the refresh in flight; None: none is.
        self._refreshing: list[Deferred[None]] | None = None
        self._answered: Address | None = None
        self._loaded = False
        self._counts = {
            "moved": 0,
            "ask": 0,
            "retried": 0,
            "map_refreshes": 0,
        }
        self._routing = _Routing(self)
        self._node_listeners: list[Callable[[Address, RedisClient], object]] = []
        if start:
            self.start()

    @classmethod
    def from_endpoint(
        cls,
        reactor: Any,
        seeds: str | Sequence[str],
        *,
        max_redirects: int = 5,
        retry_delay: float = 0.05,
        read_from_replicas: bool = False,
        start: bool = True,
        **options: Any,
    ) -> RedisClusterClient:
        """
        Connect to the cluster that the node(s) at ``seeds`` belong to:
        one endpoint string (``"tcp:10.0.0.1:7000"``), a list of them, or
        a cluster string (``"redis-cluster:10.0.0.1:7000,10.0.0.2:7000"``,
        :func:`cluster_seeds`); any one that answers is enough.  The slot
        map is read at :meth:`start`.

        :param max_redirects: how many times one command is sent again
            (after ``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN`` or a
            connection lost before it was written) before its last error
            is raised.
        :param retry_delay: the first wait before re-sending after
            ``TRYAGAIN``/``CLUSTERDOWN`` or a lost node, doubled each time.
        :param read_from_replicas: send the read-only commands (``GET``,
            ``MGET``, ``HGETALL``...; not in pipelines or transactions) to
            the replicas of their slot's master in turn, after
            ``READONLY`` on each connection; they may return a value a
            little older than the master's (replication is asynchronous).
            Off by default: every command goes to the master.
        :param options: :meth:`RedisClient.from_endpoint
            <framedclient.RedisClient.from_endpoint>`'s keywords
            (``password``, ``pool_size``, ``request_timeout``...), used
            for every node; ``db`` must stay 0 (a cluster has one database).
        :raises TypeError: ``seeds`` is not a string or a list of them.
        :raises ValueError: no seed, or a ``db`` other than 0.
        """
        if isinstance(seeds, str):
            seeds = cluster_seeds(seeds) if seeds.startswith(SCHEME) else [seeds]
        elif not isinstance(seeds, (list, tuple)) or not all(
            isinstance(s, str) for s in seeds
        ):
            raise TypeError(
                f"seeds must be an endpoint string or a list of them "
                f"(['tcp:10.0.0.1:7000', 'tcp:10.0.0.2:7000']), got {seeds!r}"
            )
        if not seeds:
            raise ValueError("seeds is empty: give at least one node's endpoint")
        if options.get("db", 0) != 0:
            raise ValueError(
                f"db must be 0: a Redis Cluster has only database 0, got "
                f"{options['db']!r}"
            )
        if max_redirects < 0:
            raise ValueError(f"max_redirects must be 0 or more, got {max_redirects}")
        if retry_delay < 0:
            raise ValueError(f"retry_delay must be 0 or more, got {retry_delay}")
        return cls(
            reactor,
            seeds,
            options,
            max_redirects=max_redirects,
            retry_delay=retry_delay,
            read_from_replicas=read_from_replicas,
            start=start,
        )

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start connecting and read the slot map (idempotent)."""
        if self._started or self._closed:
            return
        self._started = True
        for client in [*self._nodes.values(), *self._replicas.values()]:
            client.start()
        self._refresh().addErrback(lambda _: None)  # retried on first use

    def when_ready(self, fail_after: int | None = None) -> Deferred[None]:
        """
        Fires once the slot map is read and every master has a ready
        connection; fails when no seed answers (or, with ``fail_after``,
        when a master cannot be reached in that many attempts).
        """

        async def ready() -> None:
            if not self._loaded:
                await self._refresh()
            masters = sorted(self._map.masters)
            waits = [self._node(m).when_ready(fail_after) for m in masters]
            await gatherResults(waits, consumeErrors=True).addErrback(_first_error)

        return ensureDeferred(ready())

    def close(self, timeout: float | None = None) -> Deferred[None]:
        """
        Stop taking commands, let those in flight finish (at most
        ``timeout`` seconds), close every node's connections.
        """
        self._closed = True
        nodes = [*self._nodes.values(), *self._replicas.values()]
        closing = [c.close(timeout) for c in nodes]
        return DeferredList(closing, consumeErrors=True).addCallback(lambda _: None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def stats(self) -> dict[str, Any]:
        """
        JSON-able: the slots mapped, redirect and retry counts, and each
        node's :meth:`~framedclient.FramedClient.stats` by address.
        """
        return {
            "slots_mapped": self._map.covered(),
            "masters": sorted(self._map.masters),
            **self._counts,
            "nodes": {a: c.stats() for a, c in sorted(self._nodes.items())},
            "replicas": {a: c.stats() for a, c in sorted(self._replicas.items())},
        }

    def route(self, body: bytes, timeout: float | None = None) -> Deferred[Any]:
        """
        Send one RESP command as its bytes (``command("GET", "k")``, or a
        body read from elsewhere: the gateway's) to the master of its key's
        slot, under the redirect rules of every command; fires with the
        reply's bytes, or fails with the error reply as
        :class:`~framedclient.errors.RemoteError`.  A command without keys
        goes to one master.

        :raises CrossSlot: its keys are in different slots (nothing sent).
        :raises ValueError: ``body`` is not one RESP command (an array of
            bulk strings).
        """
        return self._request(body, timeout)

    def node_clients(self) -> dict[Address, RedisClient]:
        """
        The client of each node in use now, by address: the masters, and
        the replicas with ``read_from_replicas``.
        """
        return {**self._nodes, **self._replicas}

    def add_node_listener(
        self, listener: Callable[[Address, RedisClient], object]
    ) -> None:
        """
        Call ``listener(address, client)`` for each node's client, those
        made already and those made later (a node learnt from a redirect
        or a new map), as soon as it is made.
        """
        self._node_listeners.append(listener)
        for where, client in self.node_clients().items():
            listener(where, client)

    def node_for(self, key: Arg) -> RedisClient:
        """
        The :class:`~framedclient.RedisClient` of the master serving
        ``key``'s slot now (for a :meth:`~framedclient.RedisClient.lease`
        and ``WATCH``, which must stay on one node).

        :raises Unavailable: the slot map is not known yet (await
            :meth:`when_ready` first).
        """
        owner = self._map.owner(key_slot(argument_bytes(key, "node_for(): key")))
        if owner is None:
            raise Unavailable("the slot map is not known yet; await when_ready() first")
        return self._node(owner)

    # -- nodes and the map ---------------------------------------------------

    def _node(self, where: Address) -> RedisClient:
        client = self._nodes.get(where)
        if client is None:
            if self._closed:
                raise ClientClosed("the client is closed; create a new one")
            endpoint = (
                where if where in self._seeds else node_endpoint(where, self._tls)
            )
            client = RedisClient.from_endpoint(
                self._reactor, endpoint, start=self._started, **self._options
            )
            self._nodes[where] = client
            for listener in self._node_listeners:
                listener(where, client)
        return client

    def _refresh(self) -> Deferred[None]:
        # At most one refresh in flight: later callers wait for that one.
        # Each caller gets its own Deferred, fired with the refresh's
        # outcome, so one caller's errback does not swallow the failure for
        # the others.
        waiter: Deferred[None] = Deferred()
        if self._refreshing is not None:
            self._refreshing.append(waiter)
            return waiter
        self._counts["map_refreshes"] += 1
        waiters = self._refreshing = [waiter]

        def done(result: Any) -> None:
            self._refreshing = None
            for each in waiters:
                if isinstance(result, Failure):
                    each.errback(result)
                else:
                    each.callback(None)

        ensureDeferred(self._load_map()).addBoth(done)
        return waiter

    async def _load_map(self) -> None:
        errors = []
        for where in self._candidates():
            client = self._node(where)
            try:
                try:
                    reply = await self._ask(client, "SHARDS")
                    table = parse_cluster_shards(reply, where)
                except RespError:
                    reply = await self._ask(client, "SLOTS")
                    table = parse_cluster_slots(reply, where)
            except TimeoutError:
                # Twisted's own text is "(2.0, 'Deferred')"; say what it
                # means, with the node's last connection error if any.
                seen = {c.last_error for c in client.client.pool if c.last_error}
                why = f" ({'; '.join(sorted(seen))})" if seen else ""
                errors.append(f"{where}: no answer within {_MAP_TIMEOUT:g} s{why}")
                continue
            except Exception as e:
                errors.append(f"{where}: {e}")
                continue
            if table.covered() == 0:
                errors.append(f"{where}: serves no slots (cluster not set up?)")
                continue
            self._answered = where
            self._use(table)
            return
        raise Unavailable(
            "no node answered CLUSTER SHARDS or CLUSTER SLOTS ("
            + "; ".join(errors)
            + "); check the seeds"
        )

    async def _ask(self, client: RedisClient, question: str) -> Any:
        # Sent once the node's connection is ready, with the node's own
        # request timeout, and waited for _MAP_TIMEOUT: a connection takes
        # the timeout of its first request (a parked one's is what is left
        # of it) as the usual one, and tracks every request with another
        # timeout in a deadline heap of its own, a cost on each command.
        ready = client.when_ready().addTimeout(_MAP_TIMEOUT, self._reactor)
        await ready
        d = client.execute("CLUSTER", question)
        return await d.addTimeout(_MAP_TIMEOUT, self._reactor)

    def _candidates(self) -> list[Address]:
        # The node that answered last time first, then the masters known
        # (their connections are open), the seeds, the replicas.  A node
        # that died costs at most _MAP_TIMEOUT once, not on every refresh.
        known = [] if self._answered is None else [self._answered]
        known += [m for m in sorted(self._map.masters) if m not in known]
        for seed in self._seeds:
            # A seed that is not plain TCP (unix:, tls:) is asked through
            # its own endpoint string.
            where = seed_address(seed) or seed
            if where not in known:
                known.append(where)
        for where in sorted(self._map.nodes()):
            if where not in known:
                known.append(where)
        return known

    def _use(self, table: SlotMap) -> None:
        self._map = table
        self._owners = table.owners
        self._loaded = True
        # A node that serves no slot any more drains and closes; one that
        # serves slots again later gets a new client.
        for where in list(self._nodes):
            if where not in table.masters:
                self._nodes.pop(where).close()
        replicas = table.nodes() - table.masters
        for where in list(self._replicas):
            if where not in replicas:
                self._replicas.pop(where).close()

    def _replica(self, master: Address) -> RedisClient | None:
        # The master's replicas in turn; None without any.
        replicas = self._map.replicas.get(master)
        if not replicas:
            return None
        self._turn += 1
        where = replicas[self._turn % len(replicas)]
        client = self._replicas.get(where)
        if client is None:
            if self._closed:
                raise ClientClosed("the client is closed; create a new one")
            options = dict(self._options)
            options["prepare"] = _read_only(options.get("prepare"))
            client = RedisClient.from_endpoint(
                self._reactor,
                node_endpoint(where, self._tls),
                start=self._started,
                **options,
            )
            self._replicas[where] = client
            for listener in self._node_listeners:
                listener(where, client)
        return client

    # -- sending -------------------------------------------------------------

    def _request(self, body: bytes, timeout: float | None) -> Deferred[Any]:
        if isinstance(body, CommandBatch):
            return send_batch(self._routing, body, timeout)
        name, slot = command_route(body)
        return self._send(body, slot, name in READ_ONLY_COMMANDS, timeout)

    def _target(self, slot: int | None, read_only: bool) -> RedisClient | None:
        # The node to send to now; None while the map does not say.
        owner = self._owners[slot] if slot is not None else self._owner(slot)
        if owner is None:
            return None
        if read_only and self._read_from_replicas and slot is not None:
            replica = self._replica(owner)
            if replica is not None:
                return replica
        return self._nodes.get(owner) or self._node(owner)

    def _send(
        self, body: bytes, slot: int | None, read_only: bool, timeout: float | None
    ) -> Deferred[Any]:
        node = self._target(slot, read_only)
        if node is None:
            return ensureDeferred(
                resend(self._routing, body, slot, read_only, timeout, 0)
            )
        d = node.client.request(body, timeout)
        return d.addErrback(self._single_failed, body, slot, read_only, timeout)

    def _send_parsed(self, body: bytes, slot: int, read_only: bool) -> Deferred[Any]:
        # A method's command, its reply parsed: one callback pair on the
        # node's Deferred; the redirects and retries only on the errback.
        node = self._target(slot, read_only)
        if node is None:
            d = ensureDeferred(resend(self._routing, body, slot, read_only, None, 0))
            return d.addCallbacks(parse_reply, _as_resp_error)
        return node.client.request(body, None).addCallbacks(
            parse_reply, self._parsed_failed, errbackArgs=(body, slot, read_only)
        )

    def _parsed_failed(
        self, failure: Failure, body: bytes, slot: int, read_only: bool
    ) -> Deferred[Any]:
        d = ensureDeferred(
            resend(self._routing, body, slot, read_only, None, 0, failure.value)
        )
        return d.addCallbacks(parse_reply, _as_resp_error)

    def _call(self, names: tuple[str, ...], *args: Arg) -> Deferred[Any]:
        # A method's command (set, incr, hget...): routed by its arguments,
        # without parsing the command it makes back.
        body = _build(names[0], names[1:], args)
        route = _ROUTES.get(args[0])  # type: ignore[call-overload]
        if route is None:
            route = _route_of(args[0])
        if route is not _NOT_BY_FIRST_KEY and len(args) > 1:
            key = args[1]
            if key.__class__ is not bytes:
                key = argument_bytes(key, f"{names[0]}(): key")
            if b"{" in key:  # type: ignore[operator]
                slot = key_slot(key)
            else:
                slot = crc_hqx(key, 0) & 0x3FFF  # type: ignore[arg-type]
            return self._send_parsed(body, slot, route is True)
        return self._request(body, None).addCallbacks(parse_reply, _as_resp_error)

    def _owner(self, slot: int | None) -> Address | None:
        if slot is None:
            masters = self._map.masters
            return min(masters) if masters else None
        return self._map.owner(slot)

    def _single_failed(
        self, failure: Any, body: bytes, slot: int | None, read_only: bool,
        timeout: float | None,
    ) -> Deferred[Any]:  # fmt: skip
        return ensureDeferred(
            resend(self._routing, body, slot, read_only, timeout, 0, failure.value)
        )

    def _unsent(self, error: BaseException) -> bool:
        """
        Whether ``error`` proves the command was not sent, so that sending
        it again cannot run it twice: no connection to the node, a
        connection lost before the write, or the node's client closed
        under it by a map refresh (not by our own :meth:`close`).
        """
        if isinstance(error, ConnectionLost):
            return not error.written
        if isinstance(error, ClientClosed):
            return not self._closed
        return isinstance(error, Unavailable)

    def _sleep(self, tries: int) -> Deferred[None]:
        delay = min(self._retry_delay * 2 ** (tries - 1), 1.0)
        return deferLater(self._reactor, delay, lambda: None)

    def get(self, key: Arg) -> Deferred[bytes | None]:
        if key.__class__ is bytes:
            # The everyday command, built at once and routed without
            # parsing it back (key_slot inlined for a key without a tag).
            if b"{" in key:  # type: ignore[operator]
                slot = key_slot(key)
            else:
                slot = crc_hqx(key, 0) & 0x3FFF  # type: ignore[arg-type]
            body = _Command(
                b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)  # type: ignore[arg-type]
            )
            return self._send_parsed(body, slot, True)
        return super().get(key)

    # -- multi-key commands split per slot -----------------------------------

    def mget(self, *keys: Arg) -> Deferred[list[bytes | None]]:
        """``MGET`` split per slot; the values in ``keys``' order."""
        groups = _by_slot(keys)
        if len(groups) <= 1:
            return super().mget(*keys)
        parts = [(idx, super(RedisClusterClient, self).mget(*[keys[i] for i in idx]))
                 for idx in groups.values()]  # fmt: skip

        def merge(values: list[list[bytes | None]]) -> list[bytes | None]:
            out: list[bytes | None] = [None] * len(keys)
            for (idx, _), got in zip(parts, values, strict=True):
                for i, v in zip(idx, got, strict=True):
                    out[i] = v
            return out

        return _gather([d for _, d in parts]).addCallback(merge)

    def delete(self, *keys: Arg) -> Deferred[int]:
        """``DEL`` split per slot: how many of ``keys`` existed."""
        return self._summed(super().delete, keys)

    def exists(self, *keys: Arg) -> Deferred[int]:
        """``EXISTS`` split per slot: how many of ``keys`` exist."""
        return self._summed(super().exists, keys)

    def _summed(self, call: Any, keys: tuple[Arg, ...]) -> Deferred[int]:
        groups = _by_slot(keys)
        if len(groups) <= 1:
            result: Deferred[int] = call(*keys)
            return result
        sent = [call(*[keys[i] for i in idx]) for idx in groups.values()]
        return _gather(sent).addCallback(sum)


def _by_slot(keys: tuple[Arg, ...]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        try:
            word = argument_bytes(key, "key")
        except TypeError:
            # Refused by the command itself, naming the argument.
            return {}
        groups.setdefault(key_slot(word), []).append(i)
    return groups


def _gather(ds: list[Deferred[Any]]) -> Deferred[list[Any]]:
    return gatherResults(ds, consumeErrors=True).addErrback(_first_error)


def _read_only(
    user_prepare: Callable[[FramedProtocol], Any] | None,
) -> Callable[[FramedProtocol], Deferred[Any]]:
    # A replica answers reads only on a connection that sent READONLY
    # (else it redirects them to its master with MOVED).
    def prepare(proto: FramedProtocol) -> Deferred[Any]:
        d: Deferred[Any] = proto.request(command("READONLY"), math.inf)
        if user_prepare is not None:
            d.addCallback(lambda _: user_prepare(proto))
        return d

    return prepare


class _Routing:
    """
    The client's state as :class:`~framedclient.clients.cluster_redirects.Router`
    gives it to the re-send loops and the pipelines, so they reach none of
    its private names.
    """

    def __init__(self, client: RedisClusterClient) -> None:
        self._client = client
        self.counts = client._counts
        self.max_redirects = client._max_redirects

    @property
    def loaded(self) -> bool:
        return self._client._loaded

    @property
    def map(self) -> SlotMap:
        return self._client._map

    def owner(self, slot: int | None) -> Address | None:
        return self._client._owner(slot)

    def node(self, where: Address) -> RedisClient:
        return self._client._node(where)

    def refresh(self) -> Deferred[None]:
        return self._client._refresh()

    def sleep(self, tries: int) -> Deferred[None]:
        return self._client._sleep(tries)

    def unsent(self, error: BaseException) -> bool:
        return self._client._unsent(error)
