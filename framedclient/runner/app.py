"""
``twist framedclient``: the service graph and its lifecycle.

:func:`makeService` builds a :class:`RunnerService`, a ``MultiService``
whose children start in this order:

1. the embedded demo backend (only without ``--upstream``);
2. the client (:class:`~framedclient.service.FramedClientService`);
3. the HTTP gateway (:class:`~framedclient.runner.gateway.GatewayService`);
4. the multiplexing proxy (only with ``--listen``).

Stopping is *not* the reverse-order-all-at-once of ``MultiService``:
stopping the backend while requests are in flight would fail them, and
closing HTTP connections before their replies arrive would lose them.  So
:meth:`RunnerService.stopService` goes step by step: stop accepting (HTTP
and proxy ports), drain (client and proxy, up to ``--drain-timeout``), close
HTTP connections once their responses are written, stop the backend.

SIGTERM stops the reactor without the exit status saying "killed" when the
service was started before the reactor ran (as ``twist`` does): see
:mod:`framedclient.runner.stopping`.  An application that embeds the
service on a running reactor keeps its own signal handling.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any, cast

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from framedclient.client import FramedClient
from framedclient.clients.cluster_endpoints import cluster_seeds
from framedclient.clients.sentinel import parse_sentinel_string
from framedclient.codecs import Codec
from framedclient.config import ClientConfig
from framedclient.connection import Connection
from framedclient.runner.allocator import limit_heap_retention
from framedclient.runner.backend import EmbeddedBackendService
from framedclient.runner.gateway import (
    Gateway,
    GatewayService,
    HTTPLimits,
    default_max_connections,
)
from framedclient.runner.listening import (
    ListeningService,
    address_of,
    describe_listen_failure,
    fail_startup,
    url_of,
)
from framedclient.runner.options import CLUSTER_SCHEME, Options
from framedclient.runner.redis_upstream import (
    ClusterUpstream,
    RedisAuth,
    sentinel_client,
)
from framedclient.runner.replies import (
    DEFAULT_MAX_REPLY_BYTES,
    DEFAULT_WRITE_DEADLINE,
    ReplyBudget,
)
from framedclient.runner.stopping import HTTP_CLOSE_TIMEOUT, GracefulStop
from framedclient.runner.streaming import (
    DEFAULT_KEEPALIVE,
    DEFAULT_STALL_TIMEOUT,
    DEFAULT_STREAM_BUFFER,
    StreamLimits,
)
from framedclient.runner.workers import (
    ENVIRONMENT,
    WorkerLink,
    WorkerRole,
    WorkerSupervisor,
)
from framedclient.service import FramedClientService

__all__ = ["Options", "ProxyService", "RateLimitedLog", "RunnerService", "makeService"]

_log = Logger(namespace="framedclient.runner")

#: Seconds after the listeners are up that the startup line waits for an
#: upstream connection (or a failed attempt) before saying it has none.
STARTUP_GRACE = 3.0


class RateLimitedLog:
    """
    Logs at most ``burst`` events per ``period`` seconds, then one summary
    of how many were left out.

    A flapping upstream changes state several times per second per
    connection; logging each change would bury everything else (and cost
    I/O exactly when the system is in trouble).  The first changes of a
    storm are the informative ones, and the summary keeps the count honest.
    """

    def __init__(
        self,
        clock: IReactorTime,
        log: Logger,
        burst: int = 20,
        period: float = 10.0,
    ) -> None:
        self._clock = clock
        self._log = log
        self.burst = burst
        self.period = period
        self._window_start = -period
        self._count = 0
        self.suppressed = 0
        self._summary: IDelayedCall | None = None

    def emit(self, level: str, format: str, **fields: Any) -> None:
        """
        Log ``format`` with ``fields`` at ``level`` ("info", "warn", ...)
        unless this window's budget is spent.
        """
        now = self._clock.seconds()
        if now - self._window_start >= self.period:
            self._flush()
            self._window_start = now
            self._count = 0
        if self._count < self.burst:
            self._count += 1
            getattr(self._log, level)(format, **fields)
            return
        self.suppressed += 1
        if self._summary is None:
            delay = max(0.0, self._window_start + self.period - now)
            self._summary = self._clock.callLater(delay, self._flush)

    def _flush(self) -> None:
        if self._summary is not None:
            if self._summary.active():
                self._summary.cancel()
            self._summary = None
        if self.suppressed:
            self._log.warn(
                "{suppressed} more connection state changes in {period:g} s "
                "were not logged (rate limit: {burst} per {period:g} s)",
                suppressed=self.suppressed,
                period=self.period,
                burst=self.burst,
            )
            self.suppressed = 0

    def stop(self) -> None:
        """
        Log the pending summary now and cancel its timer.
        """
        self._flush()


class ProxyService(ListeningService):
    """
    The ``--listen`` multiplexing proxy: a
    :class:`~framedclient.runner.proxy.ProxyFactory` over the running client,
    listening on a server endpoint.

    Built on start because the factory needs the client, which exists only
    once the client service has started.
    """

    name = "proxy"

    def __init__(
        self,
        reactor: Any,
        description: str,
        get_client: Callable[[], FramedClient | None],
        codec: Codec,
        inherited: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(reactor, description, inherited)
        self._get_client = get_client
        self.codec = codec
        self.factory: Any = None

    def startService(self) -> None:
        from framedclient.runner.proxy import ProxyFactory

        super().startService()  # type: ignore[no-untyped-call]
        client = self._get_client()
        assert client is not None, "start the client service first"
        self.factory = ProxyFactory(client, self.codec)
        self._listen(self.factory)

    def drain(self, timeout: float | None) -> Deferred[None]:
        """
        GOAWAY to every downstream; fires when all are gone.
        """
        if self.factory is None:
            return succeed(None)
        result: Deferred[None] = self.factory.close(timeout)
        return result

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        d = self.stop_accepting()
        d.addCallback(lambda _: self.drain(None))
        return d


class RunnerService(MultiService):
    """
    Everything ``twist framedclient`` runs; see the module docstring for the
    start and stop order.

    :ivar ready: fires with the HTTP base URL once every listener is up
        (the upstream may not be: "framedclient ready" is logged once a
        connection is); fails if a listener could not start.
    """

    def __init__(
        self, reactor: Any, options: Options, worker: WorkerRole | None = None
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._reactor = reactor
        self.options = options
        #: set when this process is one of the ``--workers N``.
        self.worker = worker
        #: Every client setting, from the options generated from it.
        self.config: ClientConfig = options["config"]
        self.codec: Codec = self.config.codec
        self.drain_timeout: float = options["drain-timeout"]
        self.state_log = RateLimitedLog(reactor, _log)
        self.ready: Deferred[str] = Deferred()
        self.http_url: str | None = None
        self.proxy_address: str | None = None
        self.standalone = False
        #: The startup line's fields, once listening; which line was logged.
        self._startup: dict[str, Any] | None = None
        self._announced: str | None = None
        self._startup_timer: IDelayedCall | None = None
        self._graceful_stop = GracefulStop(
            reactor, " (drain ends within --drain-timeout)"
        )

        self.backend: EmbeddedBackendService | None = None
        if not options["upstream"]:
            self.backend = EmbeddedBackendService(reactor)
            self.backend.setServiceParent(self)  # type: ignore[no-untyped-call]

        #: the Redis passwords (--redis-password, --sentinel-password)
        self.auth = RedisAuth(
            options.get("redis-password"), options.get("sentinel-password")
        )
        self.client_service: FramedClientService[FramedClient | ClusterUpstream] = (
            FramedClientService(self._make_client, self.drain_timeout)
        )
        self.client_service.setServiceParent(self)  # type: ignore[no-untyped-call]
        #: the connections of POST /v1/stream, apart from the request pool
        #: (``--http-stream-pool-size``); ``None`` when streams share it.
        self.stream_client_service: (
            FramedClientService[FramedClient | ClusterUpstream] | None
        ) = None
        stream_pool = options.get("http-stream-pool-size", 2)
        if self._cluster_seeds() is not None:
            # RESP has no streamed replies (/v1/stream refuses it): a
            # second client of every node would hold connections for
            # nothing.
            stream_pool = None
        if stream_pool is not None:
            stream_config = attrs.evolve(self.config, pool_size=stream_pool)
            self.stream_client_service = FramedClientService(
                lambda: self._make_client(stream_config), self.drain_timeout
            )
            self.stream_client_service.setServiceParent(self)  # type: ignore[no-untyped-call]

        describe = {
            "codec": options["codec-spec"],
            "backoff": options.get("backoff-spec") or "grpc",
            "pool_size": self.config.pool_size,
            "worker_count": 1 if worker is None else options["workers"],
        }
        self.gateway = Gateway(
            self._gateway_client,
            reactor,
            self.codec,
            describe,
            get_stream_client=(
                None if self.stream_client_service is None else self._stream_client
            ),
            extra_stats=self._extra_stats,
            replies=ReplyBudget(
                reactor,
                max_bytes=options.get("http-reply-budget", DEFAULT_MAX_REPLY_BYTES),
                write_deadline=options.get(
                    "http-write-timeout", DEFAULT_WRITE_DEADLINE
                ),
            ),
            streams=StreamLimits(
                buffer_bytes=options.get("http-stream-buffer", DEFAULT_STREAM_BUFFER),
                stall_timeout=options.get(
                    "http-stream-stall-timeout", DEFAULT_STALL_TIMEOUT
                ),
                keepalive=options.get("http-sse-keepalive", DEFAULT_KEEPALIVE),
            ),
        )
        self.link: WorkerLink | None = None
        if worker is not None:
            self.link = WorkerLink(reactor, worker, self._report, self._orphaned)
            self.gateway.cluster = self.link
        self.http = GatewayService(
            reactor,
            options["http"],
            self.gateway,
            self._http_limits(),
            inherited=worker.http if worker is not None else None,
        )
        self.http.setServiceParent(self)  # type: ignore[no-untyped-call]

        self.proxy: ProxyService | None = None
        if options["listen"] is not None:
            self.proxy = ProxyService(
                reactor,
                options["listen"],
                self._gateway_client,
                self.codec,
                inherited=worker.listen if worker is not None else None,
            )
            self.proxy.setServiceParent(self)  # type: ignore[no-untyped-call]

    # -- building ------------------------------------------------------------

    def _http_limits(self) -> HTTPLimits:
        """
        The gateway's connection limits from the options; ``auto`` keeps
        descriptors free for every upstream connection (both ends of it
        with the embedded backend, which :func:`default_max_connections`
        assumes anyway).
        """
        options = self.options
        cap: int | None = options.get("http-max-connections")
        if cap is None:
            upstreams = max(1, len(options["upstream"]))
            cap = default_max_connections(upstreams * self.config.pool_size)
        return HTTPLimits(
            max_connections=cap,
            header_timeout=options.get("http-header-timeout", 10.0),
            body_timeout=options.get("http-body-timeout", 60.0),
        )

    def upstream_endpoints(self) -> list[str]:
        """
        The client endpoint strings the pool connects to.
        """
        if self.backend is not None:
            return [self.backend.endpoint]
        upstreams: list[str] = self.options["upstream"]
        return list(upstreams)

    def upstreams_description(self) -> list[str]:
        """
        What the pool connects to, for people: the embedded backend says so.
        """
        if self.backend is not None:
            if self.backend.port is None:
                return ["embedded reference server (stopped)"]
            return [f"{self.backend.endpoint} (embedded reference server)"]
        return self.upstream_endpoints()

    @property
    def client(self) -> FramedClient | ClusterUpstream | None:
        """
        The running client, or ``None`` while stopped.
        """
        return self.client_service.client

    def _gateway_client(self) -> FramedClient | None:
        # A ClusterUpstream offers the part of FramedClient that the
        # gateway and the proxy use (the proxy is refused for RESP).
        return cast("FramedClient | None", self.client_service.client)

    def _stream_client(self) -> FramedClient | None:
        assert self.stream_client_service is not None
        return cast("FramedClient | None", self.stream_client_service.client)

    def _cluster_seeds(self) -> list[str] | None:
        # The seeds of a redis-cluster: upstream (which stands alone).
        upstreams: list[str] = self.options["upstream"]
        if len(upstreams) == 1 and upstreams[0].startswith(CLUSTER_SCHEME):
            return cluster_seeds(upstreams[0])
        return None

    def _make_client(
        self, config: ClientConfig | None = None
    ) -> FramedClient | ClusterUpstream:
        stream_pool = config is not None
        config = config or self.config
        seeds = self._cluster_seeds()
        client: FramedClient | ClusterUpstream
        if seeds is not None:
            # Each node's client is made quiet as ClusterUpstream makes it.
            client = ClusterUpstream(self._reactor, seeds, config, self.auth)
        else:
            client = self._make_framed_client(config)
            # Twisted factories log "Starting factory" on every connection
            # attempt; a flapping upstream would flood the log past the
            # rate limit below.
            client.factory.noisy = False
        if not stream_pool:
            # The stream pool's connections follow the same upstreams: the
            # request pool's say whether they are reachable.
            client.add_connection_listener(self._state_changed)
        return client

    def _make_framed_client(self, config: ClientConfig) -> FramedClient:
        endpoints = self.upstream_endpoints()
        found = parse_sentinel_string(endpoints[0]) if len(endpoints) == 1 else None
        if found is not None:
            # The master its sentinels name, as a host source: the pool
            # follows it through failovers as it follows srv:.
            sentinels, service = found
            return sentinel_client(self._reactor, sentinels, service, config, self.auth)
        return FramedClient.from_endpoint(
            self._reactor,
            endpoints,
            config=config,
            prepare=self.auth.prepare(),
            start=False,
        )

    def _state_changed(self, connection: Connection, old: str, new: str) -> None:
        error = connection.last_error
        if new == "ready":
            self._announce(None)
        elif old == "connecting" and new == "backing_off":
            self._announce(str(error or "the connection attempt failed"))
        if old == "ready" and new not in ("closing", "closed"):
            self.state_log.emit(
                "warn",
                "Upstream connection {name} {old} -> {new}: {error}",
                name=connection.name,
                old=old,
                new=new,
                error=error or "closed",
            )
        else:
            self.state_log.emit(
                "info",
                "Upstream connection {name} {old} -> {new}",
                name=connection.name,
                old=old,
                new=new,
                error=error,
            )

    def _report(self) -> dict[str, Any] | None:
        client = self._gateway_client()
        return None if client is None else self.gateway.report(client)

    def _orphaned(self) -> None:
        # The supervisor died (killed with SIGKILL, say): stop rather than
        # serve on without anyone to restart or stop this worker.
        _log.warn("framedclient worker: the supervisor is gone; stopping")
        if self._reactor.running:
            self._reactor.stop()

    def _extra_stats(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"upstreams": self.upstreams_description()}
        if self.proxy is not None and self.proxy.factory is not None:
            extra["proxy"] = self.proxy.factory.stats()
        streams = self.stream_client_service
        if streams is not None and streams.client is not None:
            pool = streams.client.pool
            extra["stream_pool"] = {
                "connections": len(pool),
                "ready": pool.ready_count,
                "in_flight": streams.client.in_flight,
            }
        return extra

    # -- lifecycle -----------------------------------------------------------

    def startService(self) -> None:
        # twist starts the services before it runs the reactor; an embedding
        # application usually starts them on a running reactor.
        self.standalone = not self._reactor.running
        if self.standalone:
            # This process is ours: give freed reply buffers back to the
            # kernel (see framedclient.runner.allocator).
            limit_heap_retention()
        super().startService()  # type: ignore[no-untyped-call]
        waits: list[Deferred[Any]] = [self.http.listening]
        if self.proxy is not None:
            waits.append(self.proxy.listening)
        d = gatherResults(waits, consumeErrors=True)
        d.addCallbacks(self._listening, self._listen_failed)
        if self.standalone:
            # A worker is stopped by its supervisor, Ctrl-C or not.
            self._reactor.callWhenRunning(
                self._graceful_stop.install, self.link is not None
            )

    def _listening(self, ports: list[IListeningPort]) -> None:
        self.http_url = url_of(ports[0], self.options["http"])
        if self.proxy is not None:
            self.proxy_address = address_of(ports[1], self.proxy.description)
        config = self.config
        upstreams = ",".join(self.upstreams_description())
        self._startup = {
            "http_url": self.http_url,
            "proxy": self.proxy_address or "off",
            "upstreams": upstreams,
            "codec": self.options["codec-spec"],
            "pool_size": config.pool_size,
            "max_in_flight": config.max_in_flight,
            "max_pending": config.max_pending,
            "request_timeout": "off"
            if config.request_timeout is None
            else f"{config.request_timeout:g}s",
        }
        client = self.client
        if client is not None and client.pool.ready_count:
            self._announce(None)
        else:
            # "ready" waits for an upstream connection: the first one up,
            # or the first attempt that fails, or the grace period, says.
            self._startup_timer = self._reactor.callLater(
                STARTUP_GRACE, self._announce, "no connection yet, still connecting"
            )
        self.ready.callback(self.http_url)

    def _announce(self, not_reachable: str | None) -> None:
        """
        Log the startup line: "framedclient ready" once an upstream
        connection is ready (``not_reachable`` is ``None``), else
        "framedclient listening; upstream not reachable yet: <why>", to be
        followed by "framedclient ready" when a connection comes up.  An
        operator who reads "ready" can send requests.
        """
        if self._startup is None or self._announced == "ready":
            return
        if not_reachable is not None and self._announced == "listening":
            return
        if self._startup_timer is not None and self._startup_timer.active():
            self._startup_timer.cancel()
        self._startup_timer = None
        settings = (
            "http={http_url} proxy={proxy} upstream={upstreams} codec={codec} "
            "pool_size={pool_size} max_in_flight={max_in_flight} "
            "max_pending={max_pending} request_timeout={request_timeout}"
        )
        if self.link is not None:
            # The supervisor logs the startup line once every worker has
            # said whether its upstream is reachable.
            if self._announced is None:
                self.link.ready(
                    upstreams=self.upstreams_description(),
                    upstream_ready=not_reachable is None,
                    upstream_error=not_reachable,
                )
            else:
                self.link.upstream_ready()
            self._announced = "ready" if not_reachable is None else "listening"
            return
        if not_reachable is None:
            self._announced = "ready"
            _log.info("framedclient ready: " + settings, **self._startup)
        else:
            self._announced = "listening"
            _log.warn(
                "framedclient listening; upstream not reachable yet: {reason} "
                "(retrying; 'framedclient ready' follows once a connection is "
                "up): " + settings,
                reason=not_reachable,
                **self._startup,
            )

    def _listen_failed(self, failure: Failure) -> None:
        sub = getattr(failure.value, "subFailure", None)
        if self.standalone:
            # Nobody awaits `ready` under twist.
            self.ready.addErrback(lambda _: None)
            fail_startup(self._reactor, "framedclient", failure)
        else:
            _log.critical(
                "framedclient cannot start: {reason}",
                reason=describe_listen_failure(failure),
            )
        self.ready.errback(sub if sub is not None else failure)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)  # type: ignore[no-untyped-call]
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._startup_timer is not None and self._startup_timer.active():
            self._startup_timer.cancel()
        if self.link is not None:
            self.link.closing = True
        client = self.client
        _log.info(
            "framedclient stopping: draining {in_flight} in-flight and {queued} "
            "queued requests (up to {timeout:g} s)",
            in_flight=client.in_flight if client is not None else 0,
            queued=client.queued if client is not None else 0,
            timeout=self.drain_timeout,
        )
        # 1. No new connections.
        accepting = [self.http.stop_accepting()]
        if self.proxy is not None:
            accepting.append(self.proxy.stop_accepting())
        await DeferredList(accepting, consumeErrors=True)
        # 2. Drain: in-flight requests finish, new ones get 503 / error frames.
        draining = [self.client_service.stopService()]
        if self.stream_client_service is not None:
            draining.append(self.stream_client_service.stopService())
        if self.proxy is not None:
            draining.append(self.proxy.drain(self.drain_timeout))
            self.proxy.running = 0
        await DeferredList(draining, consumeErrors=True)
        # 3. HTTP responses are written by now; close those connections.
        await self.http.close_connections(HTTP_CLOSE_TIMEOUT)
        self.http.running = 0
        self.gateway.throughput.stop()
        # 4. Nobody uses the backend any more.
        if self.backend is not None:
            await DeferredList(
                [maybeDeferred(self.backend.stopService)], consumeErrors=True
            )
        self.state_log.stop()
        _log.info("framedclient stopped")


def makeService(options: Options) -> RunnerService | WorkerSupervisor:
    """
    The ``twist framedclient`` entry point: a :class:`RunnerService`, or
    with ``--workers N`` (N > 1) the
    :class:`~framedclient.runner.workers.WorkerSupervisor` of N of them.
    """
    from twisted.internet import reactor

    role = WorkerRole.from_environment()
    if role is not None:
        # Read once: nothing this worker starts is a worker.
        os.environ.pop(ENVIRONMENT, None)
        return RunnerService(reactor, options, role)
    note = log_format_note(sys.argv[1:], sys.stdout)
    if note is not None:
        sys.stderr.write(note + "\n")
        sys.stderr.flush()
    if options.get("workers", 1) > 1:
        return WorkerSupervisor(reactor, options)
    return RunnerService(reactor, options)


def log_format_note(argv: Sequence[str], stdout: IO[str]) -> str | None:
    """
    The line that says where the log goes and in which format when ``twist``
    chose JSON on its own (its log file is not a terminal and no
    ``--log-format`` was given), else ``None``: someone who pipes the output
    through ``less`` or ``tee`` otherwise sees JSON with no word why.

    :param argv: ``twist``'s arguments (``sys.argv[1:]``); its own options
        come before the plugin name.
    :param stdout: where ``twist`` logs by default.
    """
    if "framedclient" not in argv:
        return None  # not started by twist (an embedding, a test)
    twist_options = list(argv[: argv.index("framedclient")])
    log_file = "-"
    for i, arg in enumerate(twist_options):
        if arg.startswith("--log-format"):
            return None  # asked for by name: nothing to explain
        if arg.startswith("--log-file="):
            log_file = arg.split("=", 1)[1]
        elif arg == "--log-file" and i + 1 < len(twist_options):
            log_file = twist_options[i + 1]
    if log_file == "+":
        return None  # stderr: a terminal, or where this note would go too
    if log_file == "-":
        isatty = getattr(stdout, "isatty", None)
        if isatty is not None and isatty():
            return None
        where = "stdout (not a terminal)"
    else:
        where = f"{log_file} (a file)"
    return (
        f"framedclient: twist writes the log to {where} as JSON lines; "
        f"'twist --log-format text framedclient ...' writes text"
    )
