"""
:class:`FramedClient`: the public face of framedclient.

Create one per upstream service and share it across your application::

    client = FramedClient.from_endpoint(reactor, "tcp:127.0.0.1:9000",
                                        pool_size=4, max_in_flight=512,
                                        max_pending=2048, request_timeout=5.0)
    reply = await client.request(b"ping")
    await client.close()

A request takes one of two paths.  The fast path (a slot is free and a
connection can take it) hands the body straight to the connection the
pool's balancer picks and returns that connection's Deferred untouched:
nothing else is allocated, and the slot comes back when the connection
calls :meth:`FramedClient.request_settled` (the client is the connections'
:class:`~framedclient.protocol.RequestOwner`).  Everything else (waiting for
a slot, waiting for a connection, retrying) goes through a small
``_Call`` object that tracks where the request is, so cancelling it
always does the right thing, and that holds the request's overall deadline
across attempts.
"""

from __future__ import annotations

import importlib.util
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Unpack

import attrs
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    fail,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from framedclient._endpoints import endpoint_name
from framedclient.balance import Ketama, WeightedRoundRobin, make_balancer
from framedclient.codecs import Message
from framedclient.config import ClientConfig, ClientSettings, resolve_client_config
from framedclient.connection import Connection, PrepareHook
from framedclient.deadlines import DeadlineQueue
from framedclient.discovery import (
    Host,
    HostSource,
    RefreshPolicy,
    StaticHosts,
    sources_from,
)
from framedclient.engine import check_request
from framedclient.errors import (
    ClientClosed,
    ConnectionLost,
    Overloaded,
    RequestTimeout,
    Unavailable,
    outcome_of,
    unavailable,
)
from framedclient.health import STATES as HEALTH_STATES
from framedclient.health import HealthBoard, HostHealth
from framedclient.hedging import HEDGE_EVENTS, Hedger, default_hedge_budget
from framedclient.ketama import key_bytes
from framedclient.membership import Membership
from framedclient.metrics import (
    CounterSample,
    GaugeSample,
    HistogramSample,
    LatencyHistogram,
    Metrics,
    Sample,
)
from framedclient.pool import Limiter, Pool
from framedclient.protocol import (
    FramedClientFactory,
    FramedProtocol,
    PendingRequest,
)
from framedclient.retry import RetryBudget, retry_delay

__all__ = ["FramedClient", "Lease"]

_log = Logger()

#: How many times one request may be re-sent because it was never written;
#: a bound so that a pathological flapping pool cannot spin.
MAX_ATTEMPTS = 8

# _Call stages.
_ACQUIRING = 0  # waiting for a limiter slot
_WAITING = 1  # holds a slot, waiting for a ready connection
_DELAYED = 2  # holds a slot, waiting out a retry delay
_SENT = 3  # handed to a connection
_DONE = 4


class _Call:
    """
    A request on the slow path.  Also ``outer``'s canceller.
    """

    __slots__ = (
        "attempt",
        "avoid",
        "body",
        "client",
        "context",
        "current",
        "deadline",
        "has_slot",
        "idempotent",
        "key",
        "outer",
        "queued_bytes",
        "stage",
        "timeout",
        "timer",
        "wait",
    )

    def __init__(
        self,
        client: FramedClient,
        body: bytes | Message,
        deadline: float,
        timeout: float,
        idempotent: bool,
        wait: bool,
        attempt: int,
    ) -> None:
        self.client = client
        self.body = body
        self.deadline = deadline
        self.timeout = timeout
        self.idempotent = idempotent
        self.wait = wait
        self.attempt = attempt
        self.has_slot = False
        #: the host a retry should avoid (the one the request died with)
        self.avoid: HostHealth | None = None
        self.queued_bytes = 0
        self.stage = _ACQUIRING
        self.current: Deferred[Any] | None = None
        self.timer: IDelayedCall | None = None
        self.outer: Deferred[bytes] = Deferred(self)
        #: the routing key (``None``: none)
        self.key: bytes | None = None
        #: the caller's tracing context (``None`` when not tracing)
        self.context: object = None
        client._slow_live += 1

    def leave(self, stage: int) -> None:
        """
        Move on to ``stage``; the client counts the calls still on the slow
        path (waiting for a slot, a connection or a retry delay) here and
        only here.
        """
        if self.stage < _SENT:
            self.client._slow_live -= 1
        self.stage = stage

    def __call__(self, outer: Deferred[bytes]) -> None:
        stage = self.stage
        if stage == _ACQUIRING or stage == _SENT:
            if self.current is not None:
                # Fails with CancelledError, which we forward to outer.
                self.current.cancel()
        elif stage == _WAITING or stage == _DELAYED:
            self.finish(CancelledError())
            self.client._forget_call()

    def finish(self, result: bytes | Failure | BaseException) -> None:
        """
        The request's final outcome, reached before (or instead of) being
        handed to a connection.
        """
        if self.stage == _DONE:
            return
        self.leave(_DONE)
        self.unqueue()
        self.client._delayed.discard(self)
        if self.timer is not None:
            if self.timer.active():
                self.timer.cancel()
            self.timer = None
        if self.has_slot:
            self.has_slot = False
            self.client.request_settled()
        if isinstance(result, (Failure, BaseException)):
            # Ended before reaching a connection: its one outcome is
            # recorded here (a connection records those it took).
            error = result.value if isinstance(result, Failure) else result
            self.client._events.record_failure(outcome_of(error), None)
            self.outer.errback(result)
        else:
            self.outer.callback(result)

    def unqueue(self) -> None:
        """
        The body no longer waits in the client (sent, or given up).
        """
        if self.queued_bytes:
            self.client._queued_bytes -= self.queued_bytes
            self.queued_bytes = 0

    def forward(self, result: bytes | Failure) -> None:
        # The connection's Deferred (and any retries chained to it) ended;
        # its callbacks already released the slot.
        self.stage = _DONE
        self.current = None
        if isinstance(result, Failure):
            self.outer.errback(result)
        else:
            self.outer.callback(result)


class ClientKeywords(ClientSettings, total=False):
    """
    Every keyword of :class:`FramedClient` (its settings and its
    collaborators), for :meth:`FramedClient.from_endpoint`'s type checkers.
    """

    config: ClientConfig | None
    prepare: PrepareHook | None
    retry_budget: RetryBudget | None
    metrics: Metrics | None
    hedge_budget: RetryBudget | None
    tracer_provider: Any
    start: bool
    names: Sequence[str] | None
    discovery: Sequence[HostSource]


#: What from_endpoint() and set_endpoints() take.
_Endpoints = (
    str
    | IStreamClientEndpoint
    | HostSource
    | Sequence[str | IStreamClientEndpoint | HostSource]
)


def _call_is_live(call: _Call) -> bool:
    return call.stage < _SENT


class FramedClient:
    """
    A pool of self-healing connections to one or more upstreams, with a cap
    on the work in flight.

    :param endpoints: where to connect; ``pool_size`` connections are made
        to each.
    :param clock: the reactor (or a ``task.Clock`` in tests).
    :param config: every setting at once; or give settings as keywords
        (``pool_size=2, request_timeout=1.0``), one per
        :class:`~framedclient.config.ClientConfig` field, which documents
        them all (limits, timeouts, codec, backoff, ``abandoned_ttl``, ...).
        Not both.  The settings in force are in ``config``.
    :param prepare: run on each new connection before it is used.
    :param retry_budget: limits retries of idempotent requests; 20 % of
        requests plus 10 per second by default.
    :param metrics: where to record, and what :attr:`metrics` returns: it
        shows every connection's figures live; a fresh :class:`Metrics` by
        default.
    :param hedge_budget: limits hedged copies (with ``hedge_after``): 10 %
        of hedgeable requests plus one per second by default.
    :param tracer_provider: the OpenTelemetry ``TracerProvider`` for request
        spans; by default the global one, if one was set before (see
        :mod:`framedclient.tracing`).
    :param start: start connecting at once.
    :param names: one label per endpoint: the ``upstream`` of metrics,
        ``debug_state()``, logs and the status page, and (scheme dropped)
        its ketama node name; each connection is named ``LABEL/N``.  By
        default the endpoint in endpoint-string form (``tcp:HOST:PORT``,
        ``tls:HOST:PORT``, ``unix:PATH``, or the ``str()`` of an endpoint
        that defines one).
    :param discovery: more sources of hosts, whose host sets may change
        while the client runs (see :mod:`framedclient.discovery`;
        :meth:`from_endpoint` makes them from ``srv:`` and ``dns:``
        strings).  With one, ``endpoints`` may be empty: requests wait
        (``wait_for_ready``) until the first hosts are known.
    :raises TypeError: for a keyword that is not a setting, or ``config``
        with setting keywords.
    :raises ~framedclient.config.InvalidSetting: for a value a setting
        cannot take (also a ``ValueError``; a ``TypeError`` too for a value
        of the wrong type), naming the setting.

    :ivar config: the :class:`~framedclient.config.ClientConfig` in force.
    :ivar health: the :class:`~framedclient.health.HealthBoard` of the
        endpoints (one host each): failure accrual, ejections, probes.
    """

    def __init__(
        self,
        endpoints: Sequence[IStreamClientEndpoint],
        clock: IReactorTime,
        *,
        config: ClientConfig | None = None,
        prepare: PrepareHook | None = None,
        retry_budget: RetryBudget | None = None,
        metrics: Metrics | None = None,
        hedge_budget: RetryBudget | None = None,
        tracer_provider: Any = None,
        start: bool = True,
        names: Sequence[str] | None = None,
        discovery: Sequence[HostSource] = (),
        **settings: Unpack[ClientSettings],
    ) -> None:
        if isinstance(endpoints, (str, bytes)):
            raise TypeError(
                f"endpoints must be a sequence of endpoint objects, got "
                f"{endpoints!r}; use FramedClient.from_endpoint(reactor, "
                f"{endpoints!r}) for endpoint strings"
            )
        endpoints = list(endpoints)
        discovery = list(discovery)
        if not endpoints and not discovery:
            raise ValueError("at least one endpoint is needed")
        for i, endpoint in enumerate(endpoints):
            if not callable(getattr(endpoint, "connect", None)):
                raise TypeError(
                    f"endpoints[{i}] must be a Twisted client endpoint (an "
                    f"IStreamClientEndpoint, with connect(factory)), got "
                    f"{endpoint!r}"
                )
        self.config = config = resolve_client_config(config, settings)
        self._clock = clock
        self.codec = config.codec
        # Client-level events (retries, requests shed or timed out before a
        # connection took them, connection attempts) go here; each
        # connection records its own requests in a Metrics of its own, so
        # the status page can show per-connection latency at no cost per
        # request, attached to this one so that reading it (the user's own
        # object, or a Prometheus scrape) adds them up live.
        self._events = metrics if metrics is not None else Metrics()
        self.request_timeout = config.request_timeout
        self.wait_for_ready = config.wait_for_ready
        self.health = HealthBoard(
            clock,
            failure_accrual=config.failure_accrual,
            ejection_time=config.ejection_time,
            max_ejected_share=config.max_ejected_share,
        )
        self._limiter = Limiter(
            clock, config.max_in_flight, config.max_pending, config.acquire_timeout
        )
        #: the template of the connection factories: each host gets one of
        #: its own with this configuration, which hands the host's health to
        #: the connections it builds
        self.factory = self._make_factory(None)
        self._factories: dict[tuple[str, str], FramedClientFactory] = {}
        if prepare is not None:
            prepare = self._owned_prepare(prepare)
        self._prepare = prepare
        self._connection_listeners: list[Callable[[Connection, str, str], object]] = []
        balancer = make_balancer(config.balancer)
        if endpoints and not discovery:
            # Mistakes in a policy's view of a fixed set of upstreams are
            # refused here, not per request: two upstreams with one ring
            # name, weights of hosts this client does not have (a typo
            # would silently weigh 1).
            labels = [
                _label(h) for h in _static_hosts(endpoints, names).hosts
            ]
            if isinstance(balancer, Ketama):
                balancer.ring(tuple(labels))
            elif isinstance(balancer, WeightedRoundRobin):
                unknown = sorted(set(balancer.weights) - set(labels))
                if unknown:
                    raise ValueError(
                        f"WeightedRoundRobin has weights for {unknown!r}, which "
                        f"are not upstreams of this client; its upstreams are "
                        f"{labels!r}"
                    )
        self.pool = Pool(
            [],
            balancer,
            self._limiter,
            self.health,
            in_flight_cap=config.in_flight_per_connection,
        )
        # Each connection's metrics are read through its upstream's (made
        # when the upstream's first connection is ready), so /metrics and
        # debug_state() can tell upstreams apart.
        self._upstream_metrics: dict[str, Metrics] = {}
        # Bound once: the fast path calls them for every request.
        self._take = self.pool.take
        self._release = self._limiter.release
        # The hosts (and their connections) come and go through it.
        self._membership = Membership(
            self.pool,
            clock,
            self._new_connection,
            self._joined,
            pool_size=config.pool_size,
            retire_timeout=config.retire_timeout,
            max_connection_age=config.max_connection_age,
        )
        # After the pool's listener: it knows the host's connections first.
        self.health.add_listener(self._host_changed)
        self._budget = retry_budget or RetryBudget(clock)
        self._tracer: Any = None
        if config.tracing and _otel_installed():
            # Imported only here: without OpenTelemetry, or with tracing
            # off, requests pay nothing for it.
            from framedclient.tracing import request_tracer

            self._tracer = request_tracer(tracer_provider)
        self._hedger: Hedger | None = None
        if config.hedge_after is not None:
            self._hedger = Hedger(
                clock,
                config.hedge_after,
                self.pool.take_for,
                self.pool.upstream_of,
                self._upstream_latency,
                self._limiter.release,
                hedge_budget or default_hedge_budget(clock),
                self._send_copy,
            )
        # Requests with no key, hedging and tracing take the shortest path.
        self._plain = self._hedger is None and self._tracer is None
        self._waiting: deque[_Call] = deque()
        self._delayed: set[_Call] = set()  # retries waiting out their delay
        self._lease_waiters: deque[Deferred[FramedProtocol]] = deque()
        self._deadlines: DeadlineQueue[_Call] = DeadlineQueue(
            clock, _call_is_live, self._expire, self._slow_count, _call_deadline
        )
        self._slow_live = 0
        self.max_queued_bytes = config.max_queued_bytes
        self._queued_bytes = 0
        self._closing = False
        self._closed: Deferred[Any] | None = None
        self._membership.set_sources(
            [_static_hosts(endpoints, names), *discovery] if endpoints else discovery
        )
        if start:
            self.start()

    def _make_factory(self, health: HostHealth | None) -> FramedClientFactory:
        return FramedClientFactory(
            config=self.config.protocol_config(),
            clock=self._clock,
            metrics=self._events,
            owner=self,
            per_connection_metrics=True,
            on_built=self._track,
            health=health,
        )

    def _new_connection(self, host: Host, index: int) -> Connection:
        config = self.config
        factory = self._factories.get(host.key)
        if factory is None:
            # One factory per host: it hands the host's health record to
            # each connection it builds.  Those of hosts that left go.
            in_use = set(self.health.hosts)
            self._factories = {
                k: f for k, f in self._factories.items() if f.health in in_use
            }
            factory = self._make_factory(self.health.host(_label(host)))
            self._factories[host.key] = factory
        return Connection(
            host.endpoint,
            factory,
            self._clock,
            backoff=config.backoff,
            connect_timeout=config.connect_timeout,
            prepare=self._prepare,
            name=f"{_label(host)}/{index}",
            weight=host.weight,
        )

    def _joined(self, conn: Connection) -> None:
        conn.add_listener(self._connection_changed)
        for listener in self._connection_listeners:
            conn.add_listener(listener)

    def add_connection_listener(
        self, listener: Callable[[Connection, str, str], object]
    ) -> None:
        """
        Call ``listener(connection, old_state, new_state)`` on each state
        change of every connection, present and future (hosts that join
        later included); see :meth:`Connection.add_listener`.
        """
        self._connection_listeners.append(listener)
        for conn in self._membership.connections():
            conn.add_listener(listener)

    def _owned_prepare(self, hook: PrepareHook) -> PrepareHook:
        """
        ``hook``, run so that the requests it sends (AUTH, SELECT, ...) do
        not touch the limiter: they took no slot, yet each one settled
        gives a slot back through :meth:`request_settled`.
        """

        def prepare(proto: FramedProtocol) -> Deferred[Any]:
            before = proto.ok_count + proto.failed_count

            def settled(result: object) -> object:
                self._limiter.in_flight += proto.ok_count + proto.failed_count - before
                return result

            return maybeDeferred(hook, proto).addBoth(settled)

        return prepare

    @classmethod
    def from_endpoint(
        cls,
        reactor: Any,
        endpoint: _Endpoints,
        **options: Unpack[ClientKeywords],
    ) -> FramedClient:
        """
        Build a client from Twisted endpoint strings (``"tcp:host:port"``,
        ``"tls:host:port"``, ...), discovery strings or endpoint objects;
        keyword arguments are those of :class:`FramedClient` (``names``
        defaults to the endpoint strings).

        Discovery strings find the hosts through DNS, and follow them as
        they change (see :mod:`framedclient.discovery`):
        ``"srv:_fc._tcp.example.com"`` (one host per SRV record, with its
        priority and weight) and ``"dns:db.example.com:9000"`` (one host
        per A/AAAA address); both take ``@NAMESERVER[:PORT]`` at the end
        to ask a given name server instead of the system's.

        :raises ImportError: a ``tls:`` string without the TLS extra
            installed (the message says what to install).
        :raises TypeError: something that is neither an endpoint string nor
            an endpoint.
        :raises ValueError: a malformed ``srv:``/``dns:`` string.
        """
        # The settings first: the discovery sources need the refresh ones.
        rest: dict[str, Any] = dict(options)
        names = rest.pop("names", None)
        settings = {
            name: rest.pop(name)
            for name in attrs.fields_dict(ClientConfig)
            if name in rest
        }
        config = resolve_client_config(rest.pop("config", None), settings)
        resolved, described, sources = sources_from(
            reactor, endpoint, names, _refresh_policy(config)
        )
        return cls(
            resolved,
            reactor,
            config=config,
            names=described,
            discovery=[*rest.pop("discovery", ()), *sources],
            **rest,
        )

    def set_endpoints(
        self,
        endpoints: _Endpoints,
        names: Sequence[str] | None = None,
    ) -> None:
        """
        Use these hosts from now on, as :meth:`from_endpoint` takes them
        (endpoint strings, ``srv:``/``dns:`` strings, endpoint objects, or
        :class:`~framedclient.discovery.HostSource` objects); they replace
        every host and source the client had.

        Hosts in both the old and the new set keep their connections (hosts
        are matched by name: the endpoint string, or ``names``).  New hosts
        get theirs at once.  Hosts no longer in the set drain: their
        connections take no new request, finish what they hold (for up to
        ``retire_timeout``), then close; nothing in flight fails because of
        the change.  When the new set comes from ``srv:``/``dns:`` strings,
        the old hosts stay until DNS has given some new ones.  Strings are
        read with the client's reactor (its ``clock``).

        :raises ValueError: for an empty set, or a malformed string.
        :raises TypeError: as :meth:`from_endpoint`.
        :raises ~framedclient.errors.ClientClosed: the client is closing.
        """
        if self._closing:
            raise ClientClosed("the client is closed; its hosts cannot change")
        resolved, described, sources = sources_from(
            self._clock, endpoints, names, _refresh_policy(self.config)
        )
        if not resolved and not sources:
            raise ValueError(
                "at least one endpoint is needed; close the client to stop using "
                "every host"
            )
        static = [_static_hosts(resolved, described)] if resolved else []
        self._membership.set_sources([*static, *sources])

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """
        Start connecting, and asking the discovery sources (idempotent;
        done by the constructor by default).
        """
        self._membership.start()

    def when_ready(self, fail_after: int | None = None) -> Deferred[None]:
        """
        Fires once at least one connection is ready.

        :param fail_after: fail after this many consecutive failed attempts
            on every connection (see :meth:`Connection.when_ready`).

        Like :func:`twisted.internet.defer.race`, cancelling the result
        cancels the wait on every connection, so nothing is left behind.
        """
        if self.pool.ready_count:
            return succeed(None)
        if not len(self.pool):
            # No host known yet (discovery is still asking): wait for some.
            hosts = self._membership.when_hosts()
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

    def close(self, timeout: float | None = None) -> Deferred[None]:
        """
        Stop accepting requests, let in-flight ones finish, stop
        reconnecting.

        Requests still waiting for a slot or a connection fail with
        :class:`~framedclient.errors.ClientClosed` (they were never sent).

        :param timeout: after this many seconds, drop the connections and
            fail what is still in flight with ``ConnectionLost``.
        :return: fires when every connection is gone.
        """
        if self._closed is not None:
            return _chain(self._closed)
        self._closing = True
        self._membership.stop()
        closed_error = ClientClosed("the client is closing; the request was not sent")
        self._limiter.fail_all(closed_error)
        waiting, self._waiting = self._waiting, deque()
        for call in waiting:
            call.finish(closed_error)
        delayed, self._delayed = self._delayed, set()
        for call in delayed:
            if call.stage == _DELAYED:
                call.finish(closed_error)
        leases, self._lease_waiters = self._lease_waiters, deque()
        for d in leases:
            d.errback(closed_error)
        timer: IDelayedCall | None = None
        if timeout is not None:
            timer = self._clock.callLater(timeout, self._abort_all)
        done = gatherResults(
            [conn.close(drain=True) for conn in self._membership.connections()]
        )

        def finished(_: object) -> None:
            if timer is not None and timer.active():
                timer.cancel()
            self._deadlines.stop()
            self.health.stop()

        done.addBoth(finished)
        self._closed = done
        return _chain(done)

    def _abort_all(self) -> None:
        for conn in self._membership.connections():
            conn.close(drain=False)

    async def __aenter__(self) -> FramedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- requests ------------------------------------------------------------

    def request(
        self,
        body: bytes | Message,
        timeout: float | None = None,
        *,
        idempotent: bool = False,
        wait_for_ready: bool | None = None,
        key: bytes | str | None = None,
    ) -> Deferred[Any]:
        """
        Send one request; fires exactly once with the reply or a
        :class:`~framedclient.errors.FramedClientError` (or
        ``CancelledError`` after ``cancel()``).

        :param body: the request: ``bytes`` for simple protocols, or a
            :class:`~framedclient.codecs.base.Message` (header fields and
            body) for codecs that declare header fields.  The reply is of
            the same shape: the body bytes, or a ``Message`` that keeps the
            reply's header fields.

        :param timeout: overall deadline in seconds (queueing and retries
            included); ``None`` uses ``request_timeout``; ``math.inf`` for
            none.
        :param idempotent: the request may be re-sent after a connection
            loss even if it was already written (within the retry budget).
            Requests that were never written are always re-sent, on
            another connection.
            With ``hedge_after`` set, an idempotent request may also be
            hedged: sent to a second upstream when the first is slow (see
            :mod:`framedclient.hedging`).
        :param wait_for_ready: override the client's ``wait_for_ready``.
        :param key: routes the request by key with a policy that does
            (``balancer="ketama"``: the key's upstream); ``str`` keys are
            UTF-8 encoded.  Other policies ignore it.
        :raises TypeError: ``body`` is neither bytes nor a Message,
            ``timeout`` not a number, ``key`` not bytes or str.
        :raises ValueError: ``timeout`` is not positive.
        """
        if timeout is not None or not isinstance(body, bytes):
            # (isinstance: a codec's own bytes subclass, e.g. a Redis
            # command made by command(), takes this fast path too.)
            check_request(body, timeout)
        if self._closing:
            self._events.record_failure(ClientClosed.outcome, None)
            return fail(ClientClosed("the client is closed; create a new one"))
        if timeout is None:
            timeout = self.request_timeout
            if timeout is None:
                timeout = math.inf
        self._budget.requests += 1
        routed: bytes | None = None
        context: object = None
        if key is None and self._plain:
            proto = self._take()
            if proto is not None:
                # The fast path: a slot and a connection, and the
                # connection's own Deferred, nothing added to it.  The slot
                # comes back through request_settled().
                return proto.request(body, timeout, idempotent)
        else:
            if key is not None:
                routed = key_bytes(key)
            if self._tracer is not None:
                context = self._tracer.context()
            proto = self.pool.take_for(routed)
            if proto is not None:
                if idempotent and self._hedger is not None:
                    return self._hedger.request(proto, body, timeout, routed, context)
                return self._send_copy(
                    proto, body, timeout, idempotent, 1, False, context
                )
        # No slot, or a slot but no connection that can take it now.
        has_slot = self._limiter.try_acquire()
        size = len(body)
        if self._queued_bytes + size > self.max_queued_bytes:
            if has_slot:
                self._limiter.release()
            self._events.record_failure(Overloaded.outcome, None)
            return fail(
                Overloaded(
                    f"{self._queued_bytes} bytes of requests already wait in the "
                    f"client (max_queued_bytes={self.max_queued_bytes}); this "
                    f"{size}-byte request was shed without being sent"
                )
            )
        deadline = self._clock.seconds() + timeout
        call = _Call(
            self,
            body,
            deadline,
            timeout,
            idempotent,
            self.wait_for_ready if wait_for_ready is None else wait_for_ready,
            1,
        )
        call.queued_bytes = size
        call.key = routed
        call.context = context
        self._queued_bytes += size
        if deadline != math.inf:
            self._deadlines.add(deadline, call)
        if has_slot:
            # A slot but no connection that can take it now.
            call.has_slot = True
            self._dispatch(call)
            return call.outer
        acquired = self._limiter.acquire()
        if not acquired.called:
            call.current = acquired
        # Fires at once when a slot is free (the fast path found no
        # connection), else when a slot is handed over.
        acquired.addCallbacks(
            self._acquired,
            self._acquire_failed,
            callbackArgs=(call,),
            errbackArgs=(call,),
        )
        return call.outer

    def _slow_count(self) -> int:
        return self._slow_live

    def _forget_call(self) -> None:
        # A parked call was cancelled: it stays in _waiting until _kick
        # passes it, so rebuild the deque when dead entries dominate (a
        # stream of cancellations while no connection is ready).
        waiting = self._waiting
        if len(waiting) > 64 and len(waiting) > 2 * self._slow_live + 64:
            self._waiting = deque(c for c in waiting if c.stage == _WAITING)

    def _acquired(self, _: None, call: _Call) -> None:
        call.current = None
        call.has_slot = True
        if call.stage != _ACQUIRING:
            # Cancelled or expired meanwhile: give the slot back.
            call.has_slot = False
            self.request_settled()
            return
        self._dispatch(call)

    def _acquire_failed(self, failure: Failure, call: _Call) -> None:
        call.current = None
        if call.stage == _ACQUIRING:
            call.finish(failure)

    def _pick_for(self, call: _Call) -> FramedProtocol | None:
        if call.avoid is None:
            if call.key is None:
                return self.pool.pick()
            return self.pool.pick_for(call.key)
        # A retry of a request that died with its host: another host first,
        # wherever its key would have sent it.
        return self.pool.pick_avoiding(call.avoid)

    def _dispatch(self, call: _Call, proto: FramedProtocol | None = None) -> None:
        """
        Hand a slot-holding call to a connection (``proto``, or the one the
        pool picks), or park it until one can take it.
        """
        if proto is None:
            proto = self._pick_for(call)
        if proto is None:
            if self._closing:
                call.finish(ClientClosed("the client is closing"))
                return
            if not call.wait and not self.pool.ready_count:
                call.finish(self._unavailable())
                return
            call.stage = _WAITING
            self._waiting.append(call)
            return
        remaining = call.deadline - self._clock.seconds()
        if remaining <= 0:
            call.finish(
                RequestTimeout(
                    call.timeout,
                    "the deadline passed before the request could be sent",
                )
            )
            return
        call.leave(_SENT)
        call.unqueue()
        call.has_slot = False  # the connection's request_settled() releases it
        d = self._send_copy(
            proto,
            call.body,
            remaining,
            call.idempotent,
            call.attempt,
            False,
            call.context,
        )
        call.current = d
        d.addBoth(call.forward)

    def _send_copy(
        self,
        proto: FramedProtocol,
        body: bytes | Message,
        timeout: float,
        idempotent: bool,
        attempt: int,
        hedge: bool,
        context: object,
    ) -> Deferred[Any]:
        """
        One copy of a request, on ``proto`` (which holds its slot), traced
        when tracing is on.
        """
        d = proto.request(body, timeout, idempotent, attempt)
        if self._tracer is not None:
            pool = self.pool
            self._tracer.traced(
                d,
                pool.upstream_of(proto),
                pool.connection_name(proto),
                attempt,
                hedge,
                context,
            )
        return d

    def _upstream_node(self, upstream: str) -> Metrics:
        """
        The metrics of ``upstream``, read through the client's: made when
        its first connection is ready, kept after it leaves (counters never
        go back).
        """
        own = self._upstream_metrics.get(upstream)
        if own is None:
            self._upstream_metrics[upstream] = own = Metrics()
            self._events.attach(own)
        return own

    def _upstream_latency(self, upstream: str) -> LatencyHistogram | None:
        own = self._upstream_metrics.get(upstream)
        return own.latency if own is not None else None

    def _unavailable(self, waited: float | None = None) -> Unavailable:
        # The text is built in errors.unavailable.
        pool = self.pool
        return unavailable(
            zip(pool.upstream_names, [c.last_error for c in pool], strict=True),
            self._membership.errors(),
            waited,
        )

    def _expire(self, call: _Call) -> None:
        stage = call.stage
        if stage == _ACQUIRING:
            acquiring, call.current = call.current, None
            # Mark done first, so _acquire_failed ignores the cancellation.
            call.leave(_DONE)
            call.unqueue()
            if acquiring is not None and not acquiring.called:
                acquiring.cancel()
            error = RequestTimeout(
                call.timeout,
                f"no in-flight slot freed up within {call.timeout:g} s "
                f"(max_in_flight={self._limiter.max_in_flight}); the "
                f"request was not sent",
            )
            self._events.record_failure(error.outcome, None)
            call.outer.errback(error)
        elif stage == _WAITING:
            try:
                self._waiting.remove(call)
            except ValueError:
                pass
            if self.pool.ready_count:
                # Connections were ready but none could take it: each was at
                # its in-flight cap (or its table was full) all along.
                call.finish(
                    Overloaded(
                        f"every ready connection stayed full for the request's "
                        f"{call.timeout:g} s deadline (max_in_flight_per_connection="
                        f"{self.pool.in_flight_cap}, max_pending_per_connection="
                        f"{self.config.max_pending_per_connection}); the request "
                        f"was not sent"
                    )
                )
                return
            call.finish(self._unavailable(call.timeout))
        elif stage == _DELAYED:
            call.finish(
                RequestTimeout(
                    call.timeout, "the deadline passed while waiting to retry"
                )
            )

    def _track(self, proto: FramedProtocol) -> None:
        own = proto.metrics
        if isinstance(own, Metrics) and own is not self._events:
            self._events.attach(own)
            proto.when_closed().addCallback(self._retire_metrics, own)

    def _retire_metrics(self, reason: str, own: Metrics) -> None:
        # Folded in, not dropped, when the connection ends: the totals only
        # grow (Prometheus counters must never go back).
        self._events.detach(own)
        for upstream in self._upstream_metrics.values():
            upstream.detach(own)

    @property
    def metrics(self) -> Metrics:
        """
        Everything recorded so far, all connections (past and present) and
        client-level events added up, live.

        Always the same object: the ``metrics=`` one given to the
        constructor, or one made then.  Reading it adds up the connections'
        current figures, so keep it (hand it to a
        :class:`~framedclient.metrics.PrometheusCollector`, poll it) rather
        than copying it.
        """
        return self._events

    # -- RequestOwner: what the connections tell us ------------------------------

    def request_settled(self) -> None:
        """
        A request's slot is free (see
        :meth:`~framedclient.protocol.RequestOwner.request_settled`).  Every
        request a connection accepted ends here exactly once, unless it was
        handed over to :meth:`request_orphaned`.
        """
        self._release()
        if self._waiting or self._lease_waiters:
            self._kick()

    def request_orphaned(
        self,
        p: PendingRequest,
        lost: ConnectionLost,
        host: HostHealth | None = None,
    ) -> bool:
        """
        A connection died (or went away) holding ``p``, which is safe to
        send again: never written, or idempotent.  Take it over if its
        deadline, the attempt bound and (for written ones) the retry budget
        allow; it keeps its in-flight slot, and goes to another host than
        ``host`` (the connection's) when another can take it.
        """
        if self._closing or p.attempt >= MAX_ATTEMPTS or p.body is None:
            return False
        now = self._clock.seconds()
        deadline = p.deadline
        if now >= deadline:
            return False
        delay = 0.0
        if lost.written:
            if not self._budget.try_withdraw():
                return False
            delay = retry_delay(p.attempt)
            if now + delay >= deadline:
                return False
        self._events.record_retry()
        call = _Call(
            self,
            p.body,
            deadline,
            p.timeout if p.timeout else math.inf,
            p.idempotent,
            True,
            p.attempt + 1,
        )
        call.has_slot = True
        call.avoid = host
        # A retry's body waits in the client too (never refused: it already
        # holds a slot).
        call.queued_bytes = len(p.body)
        self._queued_bytes += call.queued_bytes
        p.body = None
        # The caller holds p (it is the caller's Deferred): relay the
        # retry's outcome to it, and send a cancel of p to the retry.
        p.redirect = call.outer
        call.outer.addBoth(_relay, p)
        if deadline != math.inf:
            self._deadlines.add(deadline, call)
        if delay > 0:
            call.stage = _DELAYED
            call.timer = self._clock.callLater(delay, self._after_delay, call)
            self._delayed.add(call)
        else:
            call.stage = _ACQUIRING
            self._dispatch(call)
        return True

    def _after_delay(self, call: _Call) -> None:
        call.timer = None
        self._delayed.discard(call)
        if call.stage == _DELAYED:
            call.stage = _ACQUIRING
            self._dispatch(call)

    def _kick(self) -> None:
        """
        Capacity appeared (a connection became ready, a request finished):
        send parked requests, in order, while connections take them.
        """
        waiting = self._waiting
        while waiting:
            call = waiting[0]
            if call.stage != _WAITING:
                waiting.popleft()
                continue
            proto = self._pick_for(call)
            if proto is None:
                break
            waiting.popleft()
            call.stage = _ACQUIRING
            self._dispatch(call, proto)
        leases = self._lease_waiters
        while leases:
            if leases[0].called:
                leases.popleft()
                continue
            proto = self.pool.pick_idle()
            if proto is None:
                break
            self.pool.leased.add(proto)
            leases.popleft().callback(proto)

    def _host_changed(self, host: HostHealth) -> None:
        if host.eligible and self._waiting:
            # A host's window ended or it revived: capacity appeared.
            self._kick()

    def _connection_changed(self, conn: Connection, old: str, new: str) -> None:
        if new == "ready":
            proto = conn.protocol
            if proto is not None and isinstance(proto.metrics, Metrics):
                upstream = self.pool.upstream_of(proto)
                if upstream is not None:
                    self._events.move(proto.metrics, self._upstream_node(upstream))
            self._kick()
        elif old == "ready" and not self.pool.ready_count and self._waiting:
            # Nothing ready any more: callers who asked not to wait (a call
            # may have parked while the last connection was dying) learn now.
            waiting, self._waiting = self._waiting, deque()
            for call in waiting:
                if call.stage == _WAITING and not call.wait:
                    call.finish(self._unavailable())
                elif call.stage == _WAITING:
                    self._waiting.append(call)

    # -- exclusive use ---------------------------------------------------------

    def lease(self, timeout: float | None = None) -> Lease:
        """
        Borrow a whole connection: ``async with client.lease() as conn:``.

        While leased, no other request is written to that connection, so a
        multi-frame conversation (a transaction, a stream) is not
        interleaved with anything.  The lease waits for a ready connection
        with nothing in flight, up to ``timeout`` (default:
        ``request_timeout``).
        """
        return Lease(self, self.request_timeout if timeout is None else timeout)

    def _lease_connection(self, timeout: float | None) -> Deferred[FramedProtocol]:
        if self._closing:
            return fail(ClientClosed("the client is closed"))
        proto = self.pool.pick_idle()
        if proto is not None and not self._lease_waiters:
            self.pool.leased.add(proto)
            return succeed(proto)
        d: Deferred[FramedProtocol] = Deferred()
        self._lease_waiters.append(d)
        if timeout is not None:
            d.addTimeout(timeout, self._clock)
        return d

    def _return_lease(self, proto: FramedProtocol) -> None:
        self.pool.leased.discard(proto)
        self._kick()

    # -- introspection ---------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._limiter.in_flight

    @property
    def queued(self) -> int:
        """
        Requests waiting for a slot or for a connection.
        """
        return self._limiter.queued + sum(
            1 for c in self._waiting if c.stage == _WAITING
        )

    def stats(self) -> dict[str, Any]:
        """
        A JSON-able snapshot: in-flight, queued, shed, connections by
        state, and the metrics (outcomes, latency percentiles, ...).
        """
        return {
            "in_flight": self.in_flight,
            "queued": self.queued,
            "max_in_flight": self._limiter.max_in_flight,
            "max_pending": self._limiter.max_pending,
            "shed": self._limiter.shed,
            "queued_bytes": self._queued_bytes,
            "retry_budget": round(self._budget.balance, 3),
            "hedges": self.hedges(),
            "tracing": self._tracer is not None,
            "connections": self.pool.counts_by_state(),
            "closing": self._closing,
            "metrics": self.metrics.snapshot(),
        }

    def debug_state(self) -> dict[str, Any]:
        """
        Everything :meth:`stats` says, plus each connection in detail
        (state, pending and their age, backoff, last error) and the number
        of timers the reactor holds: where a leak shows up.
        """
        state = self.stats()
        # Calls waiting for a slot, a connection or a retry delay: 0 once
        # nothing is queued (a leak shows up here).
        state["slow_path_calls"] = self._slow_live
        state["upstreams"] = connections = self.pool.debug_state()
        # The same connections (by name), grouped by the host they go to:
        # the hosts of the pool, and those gone whose figures remain.
        by_upstream: dict[str, dict[str, Any]] = {}
        for label in [*self.pool.upstreams, *self._upstream_metrics]:
            own = self._upstream_metrics.get(label)
            by_upstream.setdefault(
                label,
                {
                    "connections": [],
                    "ready": 0,
                    "in_flight": 0,
                    "metrics": own.snapshot() if own is not None else None,
                },
            )
        for conn in connections:
            group = by_upstream[conn["upstream"]]
            group["connections"].append(conn["name"])
            group["ready"] += conn["state"] == "ready"
        for proto, upstream in self.pool.ready_upstreams().items():
            by_upstream[upstream]["in_flight"] += proto.table_size
        # Each group's health as counts by state (one host: a single 1), so
        # that the groups of several worker processes add up.
        for host in self.health.hosts:
            if host.name in by_upstream:
                by_upstream[host.name]["health"] = {
                    s: int(host.state == s) for s in HEALTH_STATES
                }
                by_upstream[host.name]["ejections"] = host.total_ejections
        state["by_upstream"] = by_upstream
        state["hosts"] = self.health.debug_state()
        state["discovery"] = self._membership.debug_state()
        get_calls: Callable[[], list[Any]] | None = getattr(
            self._clock, "getDelayedCalls", None
        )
        state["delayed_calls"] = len(get_calls()) if get_calls is not None else None
        return state

    def hedges(self) -> dict[str, int]:
        """
        Hedges by what became of them (see
        :data:`~framedclient.hedging.HEDGE_EVENTS`): ``sent``, ``won`` (the
        hedge answered first), ``no_budget``, ``no_host``; zeros when
        hedging is off.
        """
        if self._hedger is None:
            return dict.fromkeys(HEDGE_EVENTS, 0)
        return dict(self._hedger.counts)

    def gauges(self) -> list[Sample]:
        """
        Current gauge (and per-upstream counter) values for Prometheus
        exposition.
        """
        samples: list[Sample] = [
            GaugeSample(
                "framedclient_in_flight", "Requests in flight.", self.in_flight
            ),
            GaugeSample(
                "framedclient_queued",
                "Requests waiting for a slot or a connection.",
                self.queued,
            ),
        ]
        counts = self.pool.counts_by_state()
        from framedclient.connection import STATES

        for state in STATES:
            samples.append(
                GaugeSample(
                    "framedclient_connections",
                    "Connections by state.",
                    counts.get(state, 0),
                    {"state": state},
                )
            )
        return samples + self._upstream_samples()

    def _upstream_samples(self) -> list[Sample]:
        """
        The per-upstream series: connections by state, requests in flight,
        requests by outcome, latency, bytes; and hedges.
        """
        from framedclient.connection import STATES

        samples: list[Sample] = []
        by_state: dict[tuple[str, str], int] = {}
        for conn, upstream in zip(self.pool, self.pool.upstream_names, strict=True):
            by_state[upstream, conn.state] = by_state.get((upstream, conn.state), 0) + 1
        upstreams = [*self.pool.upstreams, *self._upstream_metrics]
        in_flight = dict.fromkeys(upstreams, 0)
        for proto, upstream in self.pool.ready_upstreams().items():
            in_flight[upstream] += proto.table_size
        for upstream in in_flight:
            own = self._upstream_node(upstream)
            labels = {"upstream": upstream}
            for state in STATES:
                samples.append(
                    GaugeSample(
                        "framedclient_upstream_connections",
                        "Connections by upstream and state.",
                        by_state.get((upstream, state), 0),
                        {**labels, "state": state},
                    )
                )
            samples.append(
                GaugeSample(
                    "framedclient_upstream_in_flight",
                    "Requests (and abandoned IDs) held by the upstream's "
                    "ready connections.",
                    in_flight[upstream],
                    labels,
                )
            )
            totals = own.totals()
            for outcome, histogram in (
                ("ok", totals.latency),
                ("error", totals.failure_latency),
            ):
                samples.append(
                    HistogramSample(
                        "framedclient_upstream_request_latency_seconds",
                        "Seconds from sending a request to its end, by upstream; "
                        "outcome=ok for replies, outcome=error for sent requests "
                        "that failed.",
                        histogram,
                        {**labels, "outcome": outcome},
                    )
                )
            for outcome, count in totals.outcomes.items():
                samples.append(
                    CounterSample(
                        "framedclient_upstream_requests_total",
                        "Requests that ended on a connection, by upstream and "
                        "outcome.",
                        count,
                        {**labels, "outcome": outcome},
                    )
                )
            samples.append(
                CounterSample(
                    "framedclient_upstream_received_bytes_total",
                    "Bytes read from the upstream.",
                    totals.bytes_received,
                    labels,
                )
            )
            samples.append(
                CounterSample(
                    "framedclient_upstream_sent_bytes_total",
                    "Bytes written to the upstream.",
                    totals.bytes_sent,
                    labels,
                )
            )
        samples.extend(self._health_samples())
        hedges = self.hedges()
        for event in HEDGE_EVENTS:
            samples.append(
                CounterSample(
                    "framedclient_hedges_total",
                    "Hedged requests: sent, won (answered first), or not sent "
                    "(no_budget, no_host).",
                    hedges[event],
                    {"result": event},
                )
            )
        return samples


    def _health_samples(self) -> list[Sample]:
        """
        Each host's health: its state as one gauge per state (1 for the
        state it is in, so that summed over ``--workers`` processes the
        value counts the workers that see the host in that state), and
        its ejections, probes and black-hole closes so far.
        """
        samples: list[Sample] = []
        for host in self.health.hosts:
            labels = {"upstream": host.name}
            for state in HEALTH_STATES:
                samples.append(
                    GaugeSample(
                        "framedclient_upstream_health",
                        "1 for the health state the upstream is in (live takes "
                        "requests; ejected, probing and probe_sent are out), "
                        "else 0.",
                        int(host.state == state),
                        {**labels, "state": state},
                    )
                )
            samples.append(
                CounterSample(
                    "framedclient_upstream_ejections_total",
                    "Times the upstream was ejected for consecutive failures.",
                    host.total_ejections,
                    labels,
                )
            )
            samples.append(
                CounterSample(
                    "framedclient_upstream_probes_total",
                    "Probe requests sent to the upstream when its ejection "
                    "window ended.",
                    host.total_probes,
                    labels,
                )
            )
            own = self._upstream_metrics.get(host.name)
            black_holes = (
                own.totals().connection_events.get("black_hole", 0)
                if own is not None
                else 0
            )
            samples.append(
                CounterSample(
                    "framedclient_upstream_black_holes_total",
                    "Connections to the upstream closed as black holes "
                    "(written requests timed out in a row, nothing read).",
                    black_holes,
                    labels,
                )
            )
        return samples


class Lease:
    """
    A connection borrowed for exclusive use; see :meth:`FramedClient.lease`.
    """

    def __init__(self, client: FramedClient, timeout: float | None) -> None:
        self._client = client
        self._timeout = timeout
        self.protocol: FramedProtocol | None = None

    async def __aenter__(self) -> Lease:
        self.protocol = await self._client._lease_connection(self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.protocol is not None:
            proto, self.protocol = self.protocol, None
            self._client._return_lease(proto)

    def request(
        self, body: bytes | Message, timeout: float | None = None
    ) -> Deferred[Any]:
        """
        A request on the leased connection (same contract as
        :meth:`FramedProtocol.request`; no retries: the conversation is
        bound to this connection).
        """
        proto = self.protocol
        if proto is None:
            return fail(ClientClosed("the lease is not held (use async with)"))
        if timeout is None:
            timeout = self._client.request_timeout
        # Lease requests count against max_in_flight like any other; the
        # connection's request_settled() gives the slot back.
        limiter = self._client._limiter
        if limiter.try_acquire():
            return proto.request(body, timeout)
        d: Deferred[bytes] = limiter.acquire().addCallback(
            lambda _: proto.request(body, timeout)
        )
        return d


def _static_hosts(
    endpoints: Sequence[IStreamClientEndpoint], names: Sequence[str] | None
) -> StaticHosts:
    hosts = []
    seen: dict[str, int] = {}
    for e, endpoint in enumerate(endpoints):
        name = names[e] if names else endpoint_name(endpoint)
        # The same endpoint twice is two hosts (twice the connections), as
        # it always was.
        seen[name] = n = seen.get(name, 0) + 1
        hosts.append(Host(name, name if n == 1 else f"{name}#{n}", endpoint))
    return StaticHosts(hosts)


def _label(host: Host) -> str:
    """
    The upstream a host's connections belong to: its name, with its address
    when that differs (one ``dns:`` name, several addresses).
    """
    if host.address == host.name or host.address.startswith(f"{host.name}#"):
        # One endpoint, or the same one given again (NAME#2, NAME#3, ...).
        return host.address
    return f"{host.name}@{host.address}"


def _refresh_policy(config: ClientConfig) -> RefreshPolicy:
    return RefreshPolicy(config.dns_refresh_min, config.dns_refresh_max)


def _relay(result: bytes | Failure, target: Deferred[bytes]) -> None:
    if isinstance(result, Failure):
        target.errback(result)
    else:
        target.callback(result)


def _call_deadline(call: _Call) -> float:
    return call.deadline


def _chain(d: Deferred[Any]) -> Deferred[None]:
    """
    A new Deferred that fires (with None) when ``d`` does, so several
    callers can wait on one close.
    """
    out: Deferred[None] = Deferred()

    def done(result: object) -> object:
        out.callback(None)
        return result

    d.addBoth(done)
    return out


def _unique(names: Iterable[str]) -> list[str]:
    """
    ``names`` with ``#2``, ``#3``, ... after repeats: two endpoints to one
    address must still be told apart (metrics labels, the ketama ring).
    """
    unique: list[str] = []
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = count = seen.get(name, 0) + 1
        unique.append(name if count == 1 else f"{name}#{count}")
    return unique


def _otel_installed() -> bool:
    # find_spec of a top-level name imports nothing.
    try:
        return importlib.util.find_spec("opentelemetry") is not None
    except (ImportError, ValueError):
        return False
