"""
A client's upstreams: from hosts to connections, and back when they leave.

:class:`Upstreams` makes each host's connections (with a factory per host,
which hands the host's health record to every connection it builds), runs the
user's ``prepare`` hook on each new one, follows the host set through
:class:`~framedclient.membership.Membership` (static endpoints, ``srv:`` and
``dns:`` discovery, :meth:`Upstreams.set_sources`), tells listeners of every state
change, and closes them all.  It owns no request: the factories hand each
connection to the request owner given (the
:class:`~framedclient.dispatch.Dispatcher`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure

from framedclient._endpoints import endpoint_name
from framedclient.balance import Balancer, Ketama, UpstreamBalancer, WeightedRoundRobin
from framedclient.config import ClientConfig, resolve_client_config
from framedclient.connection import Connection, PrepareHook
from framedclient.discovery import (
    Host,
    HostSource,
    RefreshPolicy,
    StaticHosts,
    sources_from,
)
from framedclient.errors import Unavailable, unavailable
from framedclient.membership import Membership
from framedclient.protocol import FramedClientFactory, FramedProtocol, RequestOwner

if TYPE_CHECKING:
    from framedclient.health import HealthBoard
    from framedclient.metrics.telemetry import ClientTelemetry
    from framedclient.pool import Limiter, Pool

__all__ = [
    "Endpoints",
    "Upstreams",
    "check_balancer",
    "check_endpoints",
    "host_label",
    "refresh_policy",
    "static_hosts",
]

#: Called with ``(connection, old_state, new_state)``.
ConnectionListener = Callable[[Connection, str, str], object]

#: What ``FramedClient.from_endpoint()`` and ``set_endpoints()`` take.
Endpoints = (
    str
    | IStreamClientEndpoint
    | HostSource
    | Sequence[str | IStreamClientEndpoint | HostSource]
)


class Upstreams:
    """
    The connections of one client, host by host.

    :param owner: the request owner every connection reports to.
    :param limiter: the client's slots: the requests a ``prepare`` hook
        sends took none, yet each gives one back when it settles, so they
        are counted as taken (:meth:`~framedclient.pool.Limiter.take`) once
        the hook is done.
    :param on_change: told of every connection's state change first, in
        order (the client's own listeners).
    """

    def __init__(
        self,
        config: ClientConfig,
        clock: IReactorTime,
        pool: Pool,
        health: HealthBoard,
        limiter: Limiter,
        owner: RequestOwner,
        telemetry: ClientTelemetry,
        prepare: Callable[[FramedProtocol], Any] | None,
        on_change: Sequence[ConnectionListener],
    ) -> None:
        self._config = config
        self._clock = clock
        self.pool = pool
        self._health = health
        self._limiter = limiter
        self._owner = owner
        self._telemetry = telemetry
        self._prepare = self._owned_prepare(prepare) if prepare is not None else None
        self._listeners: list[ConnectionListener] = list(on_change)
        self._factories: dict[tuple[str, str], FramedClientFactory] = {}
        #: the template of the connection factories: each host gets one of
        #: its own with this configuration
        self.factory = self.make_factory(None)
        #: the hosts (and their connections) come and go through it
        self.membership = Membership(
            pool,
            clock,
            self._new_connection,
            self._joined,
            pool_size=config.pool_size,
            retire_timeout=config.retire_timeout,
            max_connection_age=config.max_connection_age,
        )

    def make_factory(self, health: Any) -> FramedClientFactory:
        return FramedClientFactory(
            config=self._config.protocol_config(),
            clock=self._clock,
            metrics=self._telemetry.metrics,
            owner=self._owner,
            per_connection_metrics=True,
            on_built=self._telemetry.track,
            health=health,
        )

    def _new_connection(self, host: Host, index: int) -> Connection:
        config = self._config
        factory = self._factories.get(host.key)
        if factory is None:
            # One factory per host: it hands the host's health record to
            # each connection it builds.  Those of hosts that left go.
            in_use = set(self._health.hosts)
            self._factories = {
                k: f for k, f in self._factories.items() if f.health in in_use
            }
            factory = self.make_factory(self._health.host(host_label(host)))
            self._factories[host.key] = factory
        return Connection(
            host.endpoint,
            factory,
            self._clock,
            backoff=config.backoff,
            connect_timeout=config.connect_timeout,
            prepare=self._prepare,
            name=f"{host_label(host)}/{index}",
            weight=host.weight,
        )

    def _joined(self, conn: Connection) -> None:
        for listener in self._listeners:
            conn.add_listener(listener)

    def add_listener(self, listener: ConnectionListener) -> None:
        """
        Call ``listener`` on each state change of every connection, present
        and future.
        """
        self._listeners.append(listener)
        for conn in self.membership.connections():
            conn.add_listener(listener)

    def _owned_prepare(self, hook: PrepareHook) -> PrepareHook:
        limiter = self._limiter

        def prepare(proto: FramedProtocol) -> Deferred[Any]:
            before = proto.ok_count + proto.failed_count

            def settled(result: object) -> object:
                limiter.take(proto.ok_count + proto.failed_count - before)
                return result

            return maybeDeferred(hook, proto).addBoth(settled)

        return prepare

    def set_sources(self, sources: Sequence[HostSource]) -> None:
        self.membership.set_sources(sources)

    def replace(self, endpoints: Endpoints, names: Sequence[str] | None) -> None:
        """
        Use these hosts from now on (see
        :meth:`~framedclient.client.FramedClient.set_endpoints`), strings
        read with the client's clock.

        :raises ValueError: for an empty set, or a malformed string.
        """
        resolved, described, sources = sources_from(
            self._clock, endpoints, names, refresh_policy(self._config)
        )
        if not resolved and not sources:
            raise ValueError(
                "at least one endpoint is needed; close the client to stop using "
                "every host"
            )
        static = [static_hosts(resolved, described)] if resolved else []
        self.set_sources([*static, *sources])

    def debug_state(self) -> dict[str, Any]:
        """
        Each connection in detail (state, pending and their age, backoff,
        last error), grouped by upstream; the hosts' health; discovery; and
        the number of timers the reactor holds (where a leak shows up).
        """
        connections = self.pool.debug_state()
        get_calls: Callable[[], list[Any]] | None = getattr(
            self._clock, "getDelayedCalls", None
        )
        return {
            "upstreams": connections,
            "by_upstream": self._telemetry.by_upstream(connections),
            "hosts": self._health.debug_state(),
            "discovery": self.membership.debug_state(),
            "delayed_calls": len(get_calls()) if get_calls is not None else None,
        }

    def unavailable(self, waited: float | None = None) -> Unavailable:
        """
        The error for a request no connection could take: each upstream and
        its last connection error, discovery's errors, and advice that fits
        (see :func:`framedclient.errors.unavailable`).

        :param waited: the deadline the request waited for a connection,
            ``None`` when it asked not to wait.
        """
        pool = self.pool
        return unavailable(
            zip(pool.upstream_names, [c.last_error for c in pool], strict=True),
            self.membership.errors(),
            waited,
        )

    def when_ready(self, fail_after: int | None = None) -> Deferred[None]:
        """
        Fires once at least one connection is ready; fails once every
        connection failed ``fail_after`` attempts in a row.  Cancelling it
        cancels the wait on every connection.
        """
        if self.pool.ready_count:
            return succeed(None)
        if not len(self.pool):
            # No host known yet (discovery is still asking): wait for some.
            hosts = self.membership.when_hosts()
            hosts.addCallback(lambda _: self.when_ready(fail_after))
            return hosts

        def cancel_all(_: object) -> None:
            for w in waits:
                if not w.called:
                    w.cancel()

        result: Deferred[None] = Deferred(cancel_all)
        waits = [conn.when_ready(fail_after) for conn in self.pool]
        failures: list[Failure] = []

        def won(_: object) -> None:
            if not result.called:
                result.callback(None)
                cancel_all(None)

        def lost(f: Failure) -> None:
            failures.append(f)
            if len(failures) == len(waits) and not result.called:
                result.errback(failures[-1])

        for w in waits:
            w.addCallbacks(won, lost)
        return result

    def close(self, timeout: float | None) -> Deferred[Any]:
        """
        Stop following the hosts and close every connection, draining;
        after ``timeout`` seconds, drop what is left.
        """
        self.membership.stop()
        timer: IDelayedCall | None = None
        if timeout is not None:
            timer = self._clock.callLater(timeout, self._abort_all)
        done = gatherResults(
            [conn.close(drain=True) for conn in self.membership.connections()]
        )

        def finished(result: object) -> object:
            if timer is not None and timer.active():
                timer.cancel()
            return result

        return done.addBoth(finished)

    def _abort_all(self) -> None:
        for conn in self.membership.connections():
            conn.close(drain=False)


def check_endpoints(
    endpoints: Sequence[IStreamClientEndpoint], discovery: Sequence[HostSource]
) -> tuple[list[IStreamClientEndpoint], list[HostSource]]:
    """
    A client's endpoints and discovery sources, refused at construction when
    they cannot be: a string (from_endpoint's business), nothing at all, or
    something that is not a Twisted client endpoint.
    """
    if callable(getattr(endpoints, "callLater", None)):
        raise TypeError(
            f"endpoints must be a sequence of endpoint objects, got the reactor "
            f"{endpoints!r}: the endpoints come first, FramedClient(endpoints, "
            f"reactor)"
        )
    if isinstance(endpoints, (str, bytes)):
        raise TypeError(
            f"endpoints must be a sequence of endpoint objects, got "
            f"{endpoints!r}; use FramedClient.from_endpoint(reactor, "
            f"{endpoints!r}) for endpoint strings"
        )
    endpoints = list(endpoints)
    discovery = list(discovery)
    if not endpoints and not discovery:
        raise ValueError(
            "at least one endpoint is needed: pass one, such as "
            "FramedClient.from_endpoint(reactor, 'tcp:HOST:PORT')"
        )
    for i, endpoint in enumerate(endpoints):
        if not callable(getattr(endpoint, "connect", None)):
            raise TypeError(
                f"endpoints[{i}] must be a Twisted client endpoint (an "
                f"IStreamClientEndpoint, with connect(factory)), got "
                f"{endpoint!r}"
            )
    return endpoints, discovery


def static_hosts(
    endpoints: Sequence[IStreamClientEndpoint], names: Sequence[str] | None
) -> StaticHosts:
    """
    The hosts of fixed endpoints, named by ``names`` or the endpoints'
    string form.
    """
    hosts = []
    seen: dict[str, int] = {}
    for e, endpoint in enumerate(endpoints):
        name = names[e] if names else endpoint_name(endpoint)
        # The same endpoint twice is two hosts (twice the connections), as
        # it always was.
        seen[name] = n = seen.get(name, 0) + 1
        hosts.append(Host(name, name if n == 1 else f"{name}#{n}", endpoint))
    return StaticHosts(hosts)


def host_label(host: Host) -> str:
    """
    The upstream a host's connections belong to: its name, with its address
    when that differs (one ``dns:`` name, several addresses).
    """
    if host.address == host.name or host.address.startswith(f"{host.name}#"):
        # One endpoint, or the same one given again (NAME#2, NAME#3, ...).
        return host.address
    return f"{host.name}@{host.address}"


def client_arguments(
    reactor: Any, endpoint: Endpoints, options: dict[str, Any]
) -> tuple[list[IStreamClientEndpoint], dict[str, Any]]:
    """
    What :meth:`~framedclient.client.FramedClient.from_endpoint` gives the
    constructor: the endpoints its strings stand for, and the keywords,
    with the settings resolved into one ``config`` first (the discovery
    sources need its refresh settings) and the ``srv:``/``dns:`` sources
    added to ``discovery``.
    """
    names = options.pop("names", None)
    settings = {
        name: options.pop(name)
        for name in attrs.fields_dict(ClientConfig)
        if name in options
    }
    config = resolve_client_config(options.pop("config", None), settings)
    resolved, described, sources = sources_from(
        reactor, endpoint, names, refresh_policy(config)
    )
    options["discovery"] = [*options.pop("discovery", ()), *sources]
    return resolved, {**options, "config": config, "names": described}


def refresh_policy(config: ClientConfig) -> RefreshPolicy:
    return RefreshPolicy(config.dns_refresh_min, config.dns_refresh_max)


def check_balancer(
    balancer: Balancer | UpstreamBalancer,
    endpoints: Sequence[IStreamClientEndpoint],
    names: Sequence[str] | None,
) -> None:
    """
    Refuse, when the client is made, the mistakes in a policy's view of a
    fixed set of upstreams rather than per request: two upstreams with one
    ring name, weights of hosts the client does not have (a typo would
    silently weigh 1).
    """
    labels = [host_label(h) for h in static_hosts(endpoints, names).hosts]
    if isinstance(balancer, Ketama):
        balancer.ring(tuple(labels))
    elif isinstance(balancer, WeightedRoundRobin):
        unknown = sorted(set(balancer.weights) - set(labels))
        if unknown:
            raise ValueError(
                f"WeightedRoundRobin has weights for {unknown!r}, which are not "
                f"upstreams of this client; its upstreams are {labels!r}"
            )
