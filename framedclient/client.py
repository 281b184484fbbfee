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
tells its owner.  Everything else (waiting for a slot or a connection,
retries, routed, traced and hedged requests, leases) belongs to the
:class:`~framedclient.dispatch.Dispatcher`, the connections'
:class:`~framedclient.protocol.RequestOwner`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Unpack

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint

from framedclient.asyncio_reactor_check import warn_if_asyncio_without_its_reactor
from framedclient.balance import make_balancer
from framedclient.codecs import Message
from framedclient.config import (
    ClientConfig,
    ClientSettings,
    documents_settings,
    resolve_client_config,
)
from framedclient.connection import Connection, PrepareHook
from framedclient.discovery import HostSource
from framedclient.dispatch import Dispatcher, Lease, make_tracer
from framedclient.engine import check_flag, check_request
from framedclient.errors import ClientClosed, Unavailable
from framedclient.health import HealthBoard
from framedclient.hedging import default_hedge_budget
from framedclient.ketama import key_bytes
from framedclient.metrics import Metrics, Sample
from framedclient.metrics.telemetry import ClientTelemetry
from framedclient.pool import Limiter, Pool
from framedclient.protocol import FramedClientFactory
from framedclient.retry import RetryBudget
from framedclient.streams import Subscriptions
from framedclient.upstreams import (
    Endpoints,
    Upstreams,
    check_balancer,
    check_endpoints,
    client_arguments,
    static_hosts,
)
from framedclient.validation import Switch, check_argument

__all__ = ["FramedClient", "Lease"]


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

    @documents_settings
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
        endpoints, discovery = check_endpoints(endpoints, discovery)
        self.config = config = resolve_client_config(config, settings)
        check_argument(Switch(), "start", start, "FramedClient")
        self._clock = clock
        self.codec = config.codec
        self.request_timeout = config.request_timeout
        self.health = HealthBoard(
            clock,
            failure_accrual=config.failure_accrual,
            ejection_time=config.ejection_time,
            max_ejected_share=config.max_ejected_share,
            decay_time=config.latency_decay_time,
            success_rate_factor=config.success_rate_factor,
            success_rate_window=config.success_rate_window,
            success_rate_min_volume=config.success_rate_min_volume,
            success_rate_min_hosts=config.success_rate_min_hosts,
        )
        self._limiter = Limiter(
            clock, config.max_in_flight, config.max_pending, config.acquire_timeout
        )
        balancer = make_balancer(config.balancer)
        if endpoints and not discovery:
            check_balancer(balancer, endpoints, names)
        self.pool = Pool(
            [],
            balancer,
            self._limiter,
            self.health,
            in_flight_cap=config.in_flight_per_connection,
        )
        #: every metric of the client, its upstreams and connections, and
        #: the Prometheus samples made of them
        self.telemetry = ClientTelemetry(
            metrics if metrics is not None else Metrics(),
            self.pool,
            self.health,
            lambda: self._dispatcher.hedges(),
        )
        # Bound once: the fast path calls it for every request.
        self._take = self.pool.take
        self._budget = budget = retry_budget or RetryBudget(clock)
        self._deposit = budget.deposit

        #: owns every request off the fast path, and the connections'
        #: reports (see :mod:`framedclient.dispatch`)
        def unavailable(waited: float | None) -> Unavailable:
            return self.upstreams.unavailable(waited)

        self._dispatcher = Dispatcher(
            clock,
            self.pool,
            self._limiter,
            events=self.telemetry.metrics,
            budget=budget,
            tracer=make_tracer(config.tracing, tracer_provider),
            hedge_after=config.hedge_after,
            hedge_budget=hedge_budget or default_hedge_budget(clock),
            latency_of=self.telemetry.latency_of,
            wait_for_ready=config.wait_for_ready,
            max_queued_bytes=config.max_queued_bytes,
            max_pending_per_connection=config.max_pending_per_connection,
            unavailable=unavailable,
            usual_timeout=config.request_timeout,
        )
        # Requests with no key, hedging and tracing take the shortest path.
        self._plain = self._dispatcher.plain
        #: the connections, host by host (see :mod:`framedclient.upstreams`)
        self.upstreams = Upstreams(
            config,
            clock,
            self.pool,
            self.health,
            self._limiter,
            self._dispatcher,
            self.telemetry,
            prepare,
            (self.telemetry.connection_changed, self._dispatcher.connection_changed),
        )
        self._closing = False
        self._closed: Deferred[Any] | None = None
        #: streams and subscriptions (:mod:`framedclient.streams`)
        self.subscriptions = Subscriptions(self._dispatcher, clock, self.when_ready)
        #: a request whose reply comes in parts (``Subscriptions.stream``)
        self.stream = self.subscriptions.stream
        #: a topic's pushes, across reconnects (``Subscriptions.subscribe``)
        self.subscribe = self.subscriptions.subscribe
        self.upstreams.set_sources(
            [static_hosts(endpoints, names), *discovery] if endpoints else discovery
        )
        if start:
            self.start()

    @property
    def wait_for_ready(self) -> bool:
        """
        Whether requests wait for a connection by default (the
        ``wait_for_ready`` setting; ``request(wait_for_ready=)`` overrides).
        """
        return self._dispatcher.wait_for_ready

    @property
    def max_queued_bytes(self) -> float:
        """
        Bytes of request bodies that may wait in the client (for a slot, a
        connection or a retry) before new requests are shed.
        """
        return self._dispatcher.max_queued_bytes

    @property
    def factory(self) -> FramedClientFactory:
        """
        The template of the connection factories (each host gets one of its
        own with this configuration).
        """
        return self.upstreams.factory

    def add_connection_listener(
        self, listener: Callable[[Connection, str, str], object]
    ) -> None:
        """
        Call ``listener(connection, old_state, new_state)`` on each state
        change of every connection, present and future (hosts that join
        later included); see :meth:`Connection.add_listener`.
        """
        self.upstreams.add_listener(listener)

    @classmethod
    @documents_settings
    def from_endpoint(
        cls,
        reactor: Any,
        endpoint: Endpoints,
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
        :raises ValueError: a malformed endpoint string (no host, no port,
            a port out of 1-65535, a malformed ``srv:``/``dns:`` string...),
            quoted in the message.
        """
        endpoints, arguments = client_arguments(reactor, endpoint, dict(options))
        return cls(endpoints, reactor, **arguments)

    def set_endpoints(
        self,
        endpoints: Endpoints,
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
        self.upstreams.replace(endpoints, names)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """
        Start connecting, and asking the discovery sources (idempotent;
        done by the constructor by default).

        Started inside a running asyncio loop whose reactor is not Twisted's
        asyncio reactor, it warns once per process (a
        :class:`~framedclient.asyncio_reactor_check.ReactorNotRunningWarning`):
        requests would hang.
        """
        warn_if_asyncio_without_its_reactor(self._clock)
        self.upstreams.membership.start()

    def when_ready(self, fail_after: int | None = None) -> Deferred[None]:
        """
        Fires once at least one connection is ready.

        :param fail_after: fail after this many consecutive failed attempts
            on every connection (see :meth:`Connection.when_ready`).

        Like :func:`twisted.internet.defer.race`, cancelling the result
        cancels the wait on every connection, so nothing is left behind.
        """
        return self.upstreams.when_ready(fail_after)

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
        self.subscriptions.close()
        self._dispatcher.close(
            ClientClosed("the client is closing; the request was not sent")
        )
        done = self.upstreams.close(timeout)

        def finished(_: object) -> None:
            self._dispatcher.stop()
            self.health.stop()

        done.addBoth(finished)
        self._closed = done
        return _chain(done)

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
            ``timeout`` not a number, ``key`` not bytes or str,
            ``idempotent`` not a bool, ``wait_for_ready`` not a bool or
            ``None`` (a truthy string such as ``"no"`` is refused, not read
            as true).  A ``bytearray`` body is copied at the call: changing
            it afterwards does not change what is sent.
        :raises ValueError: ``timeout`` is not positive.
        """
        if (
            timeout is not None
            or not isinstance(body, bytes)
            or (idempotent is not False and idempotent is not True)
            or wait_for_ready is not None
        ):
            # (isinstance: a codec's own bytes subclass, e.g. a Redis
            # command made by command(), takes this fast path too.)
            body = check_request(body, timeout, idempotent)
            check_flag("wait_for_ready", wait_for_ready, optional=True)
        if self._closing:
            self.telemetry.metrics.record_failure(ClientClosed.outcome, None)
            return fail(ClientClosed("the client is closed; create a new one"))
        if timeout is None:
            timeout = self.request_timeout
            if timeout is None:
                timeout = math.inf
        # Each counter changes only through its owner (issue 17): the
        # budget's and the limiter's (Pool.take) through their methods.
        self._deposit()
        if key is None and self._plain:
            proto = self._take()
            if proto is not None:
                # The fast path: a slot and a connection, and the
                # connection's own Deferred, nothing added to it.  The slot
                # comes back through the dispatcher's request_settled().
                return proto.send(body, timeout, idempotent)
            return self._dispatcher.submit(
                body,
                timeout,
                idempotent=idempotent,
                wait_for_ready=wait_for_ready,
                key=None,
                routed=False,
            )
        return self._dispatcher.submit(
            body,
            timeout,
            idempotent=idempotent,
            wait_for_ready=wait_for_ready,
            key=None if key is None else key_bytes(key),
            routed=True,
        )

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
        return self.telemetry.metrics

    # -- exclusive use ---------------------------------------------------------

    def lease(self, timeout: float | None = None) -> Lease:
        """
        Borrow a whole connection: ``async with client.lease() as conn:``.

        While leased, no other request is written to that connection, so a
        multi-frame conversation (a transaction, a stream) is not
        interleaved with anything.  The lease waits for a ready connection
        with nothing in flight, up to ``timeout`` (default:
        ``request_timeout``).

        :raises TypeError: ``timeout`` is not a number of seconds (or None).
        :raises ValueError: ``timeout`` is not positive.
        """
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(
                    f"lease(): timeout must be a number of seconds or None (the "
                    f"client's request_timeout), got {timeout!r}"
                )
            if not timeout > 0:
                raise ValueError(
                    f"lease(): timeout must be a positive number of seconds, got "
                    f"{timeout!r}"
                )
        return Lease(
            self._dispatcher,
            self.request_timeout if timeout is None else timeout,
            self.request_timeout,
        )

    # -- introspection ---------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._limiter.in_flight

    @property
    def queued(self) -> int:
        """
        Requests waiting for a slot or for a connection.
        """
        return self._dispatcher.queued

    def stats(self) -> dict[str, Any]:
        """
        A JSON-able snapshot: in-flight, queued, shed, hedges, connections
        by state, and the metrics (outcomes, latency percentiles, ...).
        """
        return {
            **self._dispatcher.stats(),
            "connections": self.pool.counts_by_state(),
            "closing": self._closing,
            "metrics": self.metrics.snapshot(),
        }

    def debug_state(self) -> dict[str, Any]:
        """
        Everything :meth:`stats` says, plus each connection in detail
        (state, pending and their age, backoff, last error), the number
        of timers the reactor holds, and the books of streams and
        subscriptions: where a leak shows up.
        """
        state = self.stats()
        # Calls waiting for a slot, a connection or a retry delay: 0 once
        # nothing is queued (a leak shows up here).
        state.update(self._dispatcher.debug_state())
        state.update(self.upstreams.debug_state())
        state.update(self.subscriptions.debug_state())
        return state

    def hedges(self) -> dict[str, int]:
        """
        Hedges by what became of them: see
        :meth:`~framedclient.dispatch.Dispatcher.hedges`.
        """
        return self._dispatcher.hedges()

    def gauges(self) -> list[Sample]:
        """
        Current gauge (and per-upstream counter) values for Prometheus
        exposition (see :class:`~framedclient.metrics.telemetry.ClientTelemetry`).
        """
        return self.telemetry.gauges(self.in_flight, self.queued)


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
