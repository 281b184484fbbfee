"""
The load generator that runs inside one client process.

The runner (:mod:`framedclient.bench.runner`) starts a fresh
``python -m framedclient.bench.loadgen`` process for every measured run, so
each client's CPU time and RSS are its own and no run inherits another's
heap.  This process connects to an already running server, measures, and
prints exactly one JSON object on its last line of standard output.

Two modes:

``closed``
    A closed loop: ``concurrency`` independent loops, each sending its next
    request the moment its previous reply arrives, until ``requests``
    requests were sent (after an unmeasured warm-up).  The loops are plain
    callbacks, not coroutines, so the harness costs the same for every
    Twisted client and as little as possible: what is measured is the
    client library.

``scale``
    How cost grows with work outstanding, for one in-flight count ``M``:

    1. ``M`` requests carrying the server's ``!delay:600`` prefix (so they
       stay pending), then the RSS they took; then the server drops the
       connection (a ``!drop`` request) and we time, in CPU and wall
       seconds, until every one of the ``M`` Deferreds has failed.
    2. The same burst on a new connection under :mod:`tracemalloc`: the bytes
       Python allocated per pending request (RSS is too coarse for small
       ``M``).
    3. A closed loop with concurrency ``M``: throughput with ``M`` requests
       outstanding all the time.

Client kinds: ``framedclient`` (:class:`~framedclient.client.FramedClient`,
everything on; it falls back to ``proto`` while ``framedclient.client`` does
not exist yet, and says so in the result), ``proto``
(:class:`~framedclient.protocol.FramedProtocol` via
:class:`~framedclient.protocol.FramedClientFactory`), and the baselines of
:mod:`framedclient.bench.baselines`: ``raw``, ``amp``, ``asyncio``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from framedclient.bench.measure import (
    ProcessSample,
    auto_request_count,
    current_rss,
    fail_all_fields,
    held_body,
    scale_requests,
    settle_seconds,
    tally_result,
    warmup_count,
)

if TYPE_CHECKING:
    from framedclient.protocol import FramedProtocol

__all__ = [
    "CLIENT_KINDS",
    "SCALE_KINDS",
    "main",
]

#: Every client kind the load generator can drive.
CLIENT_KINDS: tuple[str, ...] = ("framedclient", "proto", "raw", "amp", "asyncio")
#: Kinds that can run the scale mode (the AMP echo server has no delay
#: command, so AMP cannot hold requests pending).
SCALE_KINDS: tuple[str, ...] = ("framedclient", "proto", "raw", "asyncio")

#: Per-request timeout for framedclient and proto: on, as in production, and
#: far above any latency a healthy run sees.
REQUEST_TIMEOUT = 5.0
#: Seconds the scale mode waits for every pending request to fail after the
#: connection is dropped before it reports the client as stuck.
FAIL_ALL_TIMEOUT = 60.0
#: Timeout during the scale bursts, which hold requests for seconds on purpose.
SCALE_REQUEST_TIMEOUT = 600.0

_Requester = Callable[[bytes], Any]  # bytes -> Deferred[bytes]


# -- Twisted clients -----------------------------------------------------------


class _Client(Protocol):
    """
    What the load generator needs from a Twisted client kind.
    """

    #: Set when the kind ran as another (framedclient before client.py).
    fallback: str | None

    async def connect(self) -> None: ...

    def requesters(self) -> list[_Requester]:
        """
        One request function per connection; loops use them round-robin.
        """
        ...

    async def close(self) -> None: ...


class _ProtoClient:
    """
    ``K`` :class:`~framedclient.protocol.FramedProtocol` connections with
    timeouts and metrics on (the protocol's defaults plus a request timeout).
    """

    fallback: str | None = None

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        connections: int,
        inflight: int,
        request_timeout: float,
    ) -> None:
        from framedclient.codecs import FC1Codec
        from framedclient.protocol import FramedClientFactory

        self._reactor = reactor
        self._host = host
        self._port = port
        self._connections = connections
        self._factory = FramedClientFactory(
            FC1Codec(),
            request_timeout=request_timeout,
            max_pending=max(100_000, 2 * inflight + 16),
        )
        self.protos: list[FramedProtocol] = []

    async def connect(self) -> None:
        from twisted.internet.endpoints import TCP4ClientEndpoint

        endpoint = TCP4ClientEndpoint(self._reactor, self._host, self._port)
        for _ in range(self._connections):
            proto = await endpoint.connect(self._factory)
            self.protos.append(cast("FramedProtocol", proto))

    def requesters(self) -> list[_Requester]:
        return [p.request for p in self.protos]

    async def close(self) -> None:
        for p in self.protos:
            await p.close(drain=False)


class _FramedClientKind:
    """
    :class:`~framedclient.client.FramedClient` with every feature on: pool,
    limiter (``max_in_flight`` above the concurrency, so it admits every
    request but still counts each one), bounded wait queue, timeouts,
    metrics.
    """

    fallback: str | None = None

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        connections: int,
        inflight: int,
        request_timeout: float,
    ) -> None:
        from framedclient.client import FramedClient

        limit = 2 * inflight + 64
        self.client = FramedClient.from_endpoint(
            reactor,
            f"tcp:{host}:{port}",
            pool_size=connections,
            max_in_flight=limit,
            max_pending=limit,
            # The per-connection table must hold a whole scale burst plus
            # the request that drops the connection.
            max_pending_per_connection=max(100_000, limit),
            request_timeout=request_timeout,
        )

    async def connect(self) -> None:
        await self.client.when_ready()

    def requesters(self) -> list[_Requester]:
        return [self.client.request]

    async def close(self) -> None:
        await self.client.close()


def _make_client(
    kind: str,
    reactor: Any,
    host: str,
    port: int,
    connections: int,
    inflight: int,
    request_timeout: float = REQUEST_TIMEOUT,
) -> _Client:
    if kind == "framedclient":
        try:
            return _FramedClientKind(
                reactor, host, port, connections, inflight, request_timeout
            )
        except ImportError as e:
            proto = _ProtoClient(
                reactor, host, port, connections, inflight, request_timeout
            )
            proto.fallback = f"proto (framedclient.client not importable: {e})"
            return proto
    if kind == "proto":
        return _ProtoClient(reactor, host, port, connections, inflight, request_timeout)
    if kind in ("raw", "amp"):
        # Imported here: the runner imports this module for its kind names
        # and should not load the baselines' Twisted protocols for that.
        from framedclient.bench.baselines import AmpClient, RawClient

        baseline = RawClient if kind == "raw" else AmpClient
        return baseline(reactor, host, port, connections)
    raise ValueError(f"unknown Twisted client kind {kind!r}")


class _Loop:
    """
    One closed loop: send, wait for the reply, record its latency, send the
    next, while the shared :class:`_ClosedLoop` has requests left.
    """

    __slots__ = ("_body", "_request", "_run", "_started")

    def __init__(self, run: _ClosedLoop, request: _Requester, body: bytes) -> None:
        self._run = run
        self._request = request
        self._body = body
        self._started = 0.0

    def send(self) -> None:
        self._started = time.perf_counter()
        self._request(self._body).addCallbacks(self._replied, self._failed)

    def _replied(self, reply: bytes) -> None:
        run = self._run
        run.latencies.append(time.perf_counter() - self._started)
        if reply == self._body:
            run.ok += 1
        else:
            run.failed += 1
            if run.first_error is None:
                run.first_error = (
                    f"reply of {len(reply)} bytes does not echo the request"
                )
        self._next()

    def _failed(self, failure: Any) -> None:
        run = self._run
        run.failed += 1
        if run.first_error is None:
            run.first_error = failure.getErrorMessage()
        # A request may fail synchronously (refused before it was sent);
        # sending the next one from here could then recurse without bound.
        run.reactor.callLater(0, self._next)

    def _next(self) -> None:
        run = self._run
        if run.issued < run.total:
            run.issued += 1
            self.send()
        elif run.ok + run.failed == run.total and run.done is not None:
            done, run.done = run.done, None
            done.callback(None)


class _ClosedLoop:
    """
    ``concurrency`` :class:`_Loop` s sharing a request budget.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.latencies: list[float] = []
        self.ok = 0
        self.failed = 0
        self.first_error: str | None = None
        self.issued = 0
        self.total = 0
        self.done: Any = None

    def run(
        self, requesters: list[_Requester], concurrency: int, total: int, body: bytes
    ) -> Any:
        """
        Send ``total`` requests through ``concurrency`` loops; the Deferred
        fires once every reply (or failure) is in.
        """
        from twisted.internet.defer import Deferred, succeed

        if total <= 0:
            return succeed(None)
        self.total = total
        done: Deferred[None] = Deferred()
        self.done = done
        loops = [
            _Loop(self, requesters[i % len(requesters)], body)
            for i in range(min(concurrency, total))
        ]
        self.issued = len(loops)
        for loop in loops:
            loop.send()
        return done


async def _closed_loop(
    reactor: Any,
    kind: str,
    host: str,
    port: int,
    concurrency: int,
    payload: int,
    requests: int | None,
    connections: int,
    profile: str | None = None,
) -> dict[str, Any]:
    client = _make_client(kind, reactor, host, port, connections, concurrency)
    await client.connect()
    try:
        body = b"x" * payload
        requesters = client.requesters()
        # Two warm-up rounds: the first pays for cold caches and connection
        # setup, the second's rate sizes the measured run.
        warmup_total = warmup_count(concurrency)
        await _ClosedLoop(reactor).run(requesters, concurrency, warmup_total, body)
        warmup_start = time.perf_counter()
        await _ClosedLoop(reactor).run(requesters, concurrency, warmup_total, body)
        total = requests or auto_request_count(
            warmup_total, time.perf_counter() - warmup_start
        )
        gc.collect()
        measured = _ClosedLoop(reactor)
        profiler = _start_profiler(profile)
        start = ProcessSample.now()
        await measured.run(requesters, concurrency, total, body)
        end = ProcessSample.now()
        _stop_profiler(profiler, profile)
    finally:
        await client.close()
    return tally_result(
        measured,
        kind=kind,
        concurrency=concurrency,
        payload=payload,
        connections=connections,
        requests=total,
        start=start,
        end=end,
        extra={"fallback": client.fallback, "warmup_requests": 2 * warmup_total},
    )


def _start_profiler(path: str | None) -> Any:
    """
    A running :mod:`cProfile` profiler when ``path`` is given: the measured
    phase only, so imports, connecting and warm-up stay out of the profile.
    """
    if path is None:
        return None
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def _stop_profiler(profiler: Any, path: str | None) -> None:
    if profiler is None or path is None:
        return
    profiler.disable()
    profiler.dump_stats(path)


# -- scale ---------------------------------------------------------------------


async def _sleep(reactor: Any, seconds: float) -> None:
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


async def _burst(
    reactor: Any, request: _Requester, count: int, body: bytes
) -> list[Any]:
    deferreds: list[Any] = [None] * count
    for i in range(count):
        deferreds[i] = request(body)
    await _sleep(reactor, settle_seconds(count))
    return deferreds


async def _fail_all(
    reactor: Any, request: _Requester, deferreds: list[Any]
) -> tuple[ProcessSample, ProcessSample, int]:
    """
    Ask the server to drop the connection; time until every Deferred in
    ``deferreds`` (and the drop request's own) has fired.

    :return: process samples at the drop and when the last Deferred fired,
        and how many of ``deferreds`` failed.
    :raises RuntimeError: some Deferreds had not fired
        :data:`FAIL_ALL_TIMEOUT` seconds after the drop (a client that
        forgets pending requests on connection loss).
    """
    from twisted.internet.defer import Deferred

    done: Deferred[ProcessSample] = Deferred()
    remaining = len(deferreds) + 1
    failed = 0

    def counted(result: object) -> None:
        nonlocal remaining, failed
        if not isinstance(result, bytes):
            failed += 1
        remaining -= 1
        if not remaining and not done.called:
            done.callback(ProcessSample.now())

    def too_late() -> None:
        if not done.called:
            done.errback(
                RuntimeError(
                    f"{remaining} of {len(deferreds) + 1} requests had not failed "
                    f"{FAIL_ALL_TIMEOUT:g} s after the server dropped the connection"
                )
            )

    for d in deferreds:
        d.addBoth(counted)
    guard = reactor.callLater(FAIL_ALL_TIMEOUT, too_late)
    start = ProcessSample.now()
    request(b"!drop").addBoth(counted)
    try:
        end = await done
    finally:
        if guard.active():
            guard.cancel()
    return start, end, failed - 1


async def _scale(
    reactor: Any,
    kind: str,
    host: str,
    port: int,
    inflight: int,
    payload: int,
    requests: int | None,
) -> dict[str, Any]:
    body = b"x" * payload
    held = held_body(payload)
    result: dict[str, Any] = {"kind": kind, "inflight": inflight, "payload": payload}

    def client() -> _Client:
        return _make_client(
            kind,
            reactor,
            host,
            port,
            1,
            inflight,
            request_timeout=SCALE_REQUEST_TIMEOUT,
        )

    # 1. RSS of `inflight` pending requests, then the cost of failing them.
    c = client()
    result["fallback"] = c.fallback
    await c.connect()
    request = c.requesters()[0]
    await _ClosedLoop(reactor).run([request], min(inflight, 64), 2_000, body)
    gc.collect()
    rss_before = current_rss()
    deferreds = await _burst(reactor, request, inflight, held)
    rss_after = current_rss()
    start, end, failed = await _fail_all(reactor, request, deferreds)
    await c.close()
    result.update(fail_all_fields(inflight, rss_before, rss_after, start, end, failed))
    del deferreds

    # 2. The same burst under tracemalloc, after a short warm-up so that it
    # measures the steady state (a pool may route the first requests after
    # connecting through a slower path).
    c = client()
    await c.connect()
    request = c.requesters()[0]
    await _ClosedLoop(reactor).run([request], min(inflight, 64), 500, body)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    deferreds = await _burst(reactor, request, inflight, held)
    traced = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    await _fail_all(reactor, request, deferreds)
    await c.close()
    result["traced_per_request"] = traced / inflight
    del deferreds

    # 3. Throughput with `inflight` requests outstanding all the time.
    c = client()
    await c.connect()
    try:
        requesters = c.requesters()
        warm_c = min(inflight, 1024)
        warm_total = warmup_count(warm_c)
        warm_start = time.perf_counter()
        await _ClosedLoop(reactor).run(requesters, warm_c, warm_total, body)
        total = scale_requests(
            inflight, requests, warm_total, time.perf_counter() - warm_start
        )
        gc.collect()
        loop = _ClosedLoop(reactor)
        start = ProcessSample.now()
        await loop.run(requesters, inflight, total, body)
        end = ProcessSample.now()
    finally:
        await c.close()
    result.update(
        tally_result(
            loop,
            kind=kind,
            concurrency=inflight,
            payload=payload,
            connections=1,
            requests=total,
            start=start,
            end=end,
        )
    )
    return result


# -- entry point ---------------------------------------------------------------


def _run_twisted(coroutine_factory: Callable[[Any], Any]) -> dict[str, Any]:
    """
    Run one coroutine on the default reactor and return its result.
    """
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred
    from twisted.python.failure import Failure

    box: list[Any] = []

    def finished(result: object) -> None:
        box.append(result)
        reactor.stop()

    def start() -> None:
        ensureDeferred(coroutine_factory(reactor)).addBoth(finished)

    reactor.callWhenRunning(start)
    reactor.run()
    if not box:
        raise RuntimeError("the reactor stopped before the measurement finished")
    outcome = box[0]
    if isinstance(outcome, Failure):
        outcome.raiseException()
    result: dict[str, Any] = outcome
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """
    ``python -m framedclient.bench.loadgen {closed,scale} --kind KIND ...``:
    measure one client kind and print one JSON object.
    """
    parser = argparse.ArgumentParser(
        prog="python -m framedclient.bench.loadgen",
        description="One measured client process "
        "(started by python -m framedclient.bench).",
    )
    parser.add_argument("mode", choices=["closed", "scale"])
    parser.add_argument("--kind", required=True, choices=CLIENT_KINDS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--inflight", type=int, default=1024)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--requests", type=int, default=0, help="0: about 2 s worth")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument(
        "--profile",
        metavar="FILE.pstats",
        help="closed mode, Twisted kinds: cProfile the measured phase into FILE "
        "(read it with python -m pstats); the numbers then include the profiler",
    )
    parser.add_argument(
        "--gc-threshold",
        type=int,
        metavar="N",
        help="raise the young-generation GC threshold to N first "
        "(framedclient.gctune.raise_gc_thresholds)",
    )
    args = parser.parse_args(argv)
    requests: int | None = args.requests or None
    if args.gc_threshold is not None:
        from framedclient.gctune import raise_gc_thresholds

        raise_gc_thresholds(args.gc_threshold)

    result: dict[str, Any]
    if args.mode == "closed":
        if args.kind == "asyncio":
            from framedclient.bench.baselines import run_asyncio_closed_loop

            result = run_asyncio_closed_loop(
                args.host,
                args.port,
                args.concurrency,
                args.payload,
                requests,
                args.connections,
            )
        else:
            result = _run_twisted(
                lambda reactor: _closed_loop(
                    reactor,
                    args.kind,
                    args.host,
                    args.port,
                    args.concurrency,
                    args.payload,
                    requests,
                    args.connections,
                    args.profile,
                )
            )
    else:
        if args.kind not in SCALE_KINDS:
            parser.error(f"--kind {args.kind} cannot run the scale mode")
        if args.kind == "asyncio":
            from framedclient.bench.baselines import run_asyncio_scale

            result = run_asyncio_scale(
                args.host, args.port, args.inflight, args.payload, requests
            )
        else:
            result = _run_twisted(
                lambda reactor: _scale(
                    reactor,
                    args.kind,
                    args.host,
                    args.port,
                    args.inflight,
                    args.payload,
                    requests,
                )
            )
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
