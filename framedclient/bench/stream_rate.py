"""
``python -m framedclient.bench stream``: what a stream costs, measured
against request/reply in the same run.

Two measurements, each against the fc1 reference server in its own process
on loopback (one connection, the client in this process):

- **rate** (the default): a stream of ``--parts`` parts of ``--size``
  bytes read with ``async for`` (``!stream:N:SIZE``), against as many
  requests whose replies carry the same bytes (an echo of ``--size``
  bytes, ``--concurrency`` in flight), alternating for ``--runs`` rounds.
  It prints parts/s and requests/s, the client's CPU per part and per
  request, and the ratio of the rates (issue 18's target: at least 0.8).
- **flow control** (``--flow-control``): what a lagging stream costs the
  plain requests on its connection.  A stream of 1,000-byte parts with
  ``buffer_bytes`` 64 KiB whose consumer takes 64 KiB every 10 ms, and 200
  plain requests, one every 5 ms, sent meanwhile: their latency (p50,
  p99) alone, on the stream's connection, and with the stream on a
  client of its own (``docs/streams.md`` explains why they wait, and the
  advice the last figure backs).

Figures from a shared machine are for ratios side by side, not absolutes.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred

from framedclient.bench.measure import ProcessSample, latency_summary
from framedclient.bench.serverproc import REFERENCE_SERVER_COMMAND, ServerProcess

__all__ = ["build_parser", "flow_control", "main", "rate"]


class _Echoes:
    """
    ``concurrency`` closed loops of echo requests sharing a budget of
    ``total``: the request/reply side of the comparison.
    """

    def __init__(self, client: Any, body: bytes, total: int) -> None:
        self._request = client.request
        self._body = body
        self.left = total
        self.answered = 0
        self.total = total
        self.error: str | None = None
        self.done: Deferred[None] = Deferred()

    def start(self, concurrency: int) -> Deferred[None]:
        for _ in range(min(concurrency, self.left)):
            self.left -= 1
            self._send()
        return self.done

    def _send(self) -> None:
        self._request(self._body).addCallbacks(self._replied, self._failed)

    def _replied(self, reply: bytes) -> None:
        if len(reply) != len(self._body) and self.error is None:
            self.error = f"a reply of {len(reply)} bytes, not {len(self._body)}"
        self._next()

    def _failed(self, failure: Any) -> None:
        if self.error is None:
            self.error = failure.getErrorMessage()
        self._next()

    def _next(self) -> None:
        self.answered += 1
        if self.left:
            self.left -= 1
            self._send()
        elif self.answered == self.total:
            self.done.callback(None)


def _phase(start: ProcessSample, end: ProcessSample, items: int) -> dict[str, float]:
    wall = end.wall - start.wall
    cpu = end.cpu - start.cpu
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "per_s": items / wall if wall > 0 else 0.0,
        "cpu_us_each": 1e6 * cpu / items if items else 0.0,
    }


async def _stream_round(
    client: Any, parts: int, size: int, profiler: cProfile.Profile | None
) -> dict[str, float]:
    gc.collect()
    start = ProcessSample.now()
    if profiler is not None:
        profiler.enable()
    count = 0
    received = 0
    async for part in client.stream(b"!stream:%d:%d" % (parts, size)):
        count += 1
        received += len(part)
    if profiler is not None:
        profiler.disable()
    end = ProcessSample.now()
    if count != parts or received < parts * size:
        raise RuntimeError(f"the stream gave {count} parts of {received} bytes")
    return _phase(start, end, parts)


async def _echo_round(
    client: Any, requests: int, size: int, concurrency: int
) -> dict[str, float]:
    gc.collect()
    echoes = _Echoes(client, b"x" * size, requests)
    start = ProcessSample.now()
    await echoes.start(concurrency)
    end = ProcessSample.now()
    if echoes.error is not None:
        raise RuntimeError(f"request/reply failed: {echoes.error}")
    return _phase(start, end, requests)


async def rate(
    reactor: Any,
    address: str,
    parts: int,
    size: int,
    concurrency: int,
    runs: int,
    profile: str | None = None,
) -> dict[str, Any]:
    """
    Alternate a stream of ``parts`` parts and as many echo requests of
    ``size`` bytes, ``runs`` times each, on one connection.

    :return: every round, and the medians with their ratio.
    """
    from framedclient import FramedClient

    limit = 2 * concurrency + 64
    client = FramedClient.from_endpoint(
        reactor, address, pool_size=1, max_in_flight=limit, max_pending=limit
    )
    profiler = cProfile.Profile() if profile else None
    rounds: dict[str, list[dict[str, float]]] = {"stream": [], "request_reply": []}
    try:
        await client.when_ready()
        # Warm-up: a tenth of each, not measured.
        await _stream_round(client, max(1, parts // 10), size, None)
        await _echo_round(client, max(1, parts // 10), size, concurrency)
        for _ in range(runs):
            rounds["stream"].append(await _stream_round(client, parts, size, profiler))
            rounds["request_reply"].append(
                await _echo_round(client, parts, size, concurrency)
            )
    finally:
        await client.close()
    if profiler is not None and profile:
        profiler.dump_stats(profile)
    median = {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in rounds.items()
    }
    ratios = [
        s["per_s"] / r["per_s"]
        for s, r in zip(rounds["stream"], rounds["request_reply"], strict=True)
    ]
    return {
        "parts": parts,
        "size": size,
        "concurrency": concurrency,
        "rounds": rounds,
        "median": median,
        "rate_ratios": ratios,
        "rate_ratio": statistics.median(ratios),
        "cpu_ratio": median["request_reply"]["cpu_us_each"]
        / median["stream"]["cpu_us_each"],
    }


async def _plain_latencies(
    reactor: Any, client: Any, count: int, every: float
) -> list[float]:
    # ``count`` requests, one every ``every`` seconds whatever the earlier
    # ones are doing (open loop): each one's time to its reply.
    latencies: list[float] = []
    done: Deferred[None] = Deferred()

    def replied(_: object, started: float) -> None:
        latencies.append(time.perf_counter() - started)
        if len(latencies) == count:
            done.callback(None)

    def send(n: int) -> None:
        client.request(b"plain-%d" % n).addCallback(replied, time.perf_counter())
        if n + 1 < count:
            reactor.callLater(every, send, n + 1)

    send(0)
    await done
    return latencies


class _LaggingStream:
    """
    A long stream of 1,000-byte parts (``buffer_bytes`` 64 KiB) whose
    consumer takes at most 64 KiB every 10 ms, whatever is there.
    """

    take_bytes = 64 * 1024
    take_every = 0.010

    def __init__(self, reactor: Any, client: Any) -> None:
        self._reactor = reactor
        self._client = client
        self.stream = client.stream(b"!stream:10000000:1000", buffer_bytes=64 * 1024)
        #: bytes the consumer has taken so far
        self.taken = 0
        self._call = reactor.callLater(self.take_every, self._take)

    def _take(self) -> None:
        stream = self.stream
        got = 0
        while stream.buffered and got < self.take_bytes:
            stream.next()
            got += 1000
        self.taken += got
        if not stream.finished:
            self._call = self._reactor.callLater(self.take_every, self._take)

    async def stop(self) -> None:
        if self._call.active():
            self._call.cancel()
        self.stream.cancel()
        # Close once the server has answered the cancel (the parts already
        # on their way are read and dropped meanwhile): closing a socket
        # with unread data resets it, and the cancel could be lost with it.
        for _ in range(250):
            (upstream,) = self._client.debug_state()["upstreams"]
            if not (upstream.get("protocol") or {}).get("tombstones"):
                break
            await _sleep(self._reactor, 0.02)


async def flow_control(
    reactor: Any, address: str, count: int = 200, every: float = 0.005
) -> dict[str, Any]:
    """
    Plain requests' latency alone, on the connection of a lagging stream,
    and with the lagging stream on a client (connection) of its own:
    ``count`` requests, one every ``every`` seconds, each time.
    """
    from framedclient import FramedClient

    client = FramedClient.from_endpoint(reactor, address, pool_size=1)
    own = FramedClient.from_endpoint(reactor, address, pool_size=1)
    latencies: dict[str, list[float]] = {}
    # What the lagging consumer took per second while the requests ran.
    rates: dict[str, float] = {}
    try:
        await client.when_ready()
        await own.when_ready()
        latencies["alone"] = await _plain_latencies(reactor, client, count, every)
        for name, streams_client in (
            ("next_to_lagging_stream", client),
            ("lagging_stream_on_its_own_client", own),
        ):
            lagging = _LaggingStream(reactor, streams_client)
            # Let the stream fill the buffers first, as a long-running one has.
            await _sleep(reactor, 0.5)
            taken, started = lagging.taken, time.perf_counter()
            latencies[name] = await _plain_latencies(reactor, client, count, every)
            rates[name] = (lagging.taken - taken) / (time.perf_counter() - started)
            await lagging.stop()
    finally:
        await client.close()
        await own.close()
    return {
        "requests": count,
        "every_s": every,
        "consumer": f"{_LaggingStream.take_bytes} bytes every "
        f"{_LaggingStream.take_every * 1000:g} ms",
        "answered": {name: len(values) for name, values in latencies.items()},
        "consumer_bytes_per_s": rates,
        **{name: latency_summary(sorted(values)) for name, values in latencies.items()},
    }


def _sleep(reactor: Any, seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m framedclient.bench stream",
        description="A stream of N parts over fc1 against the request/reply "
        "rate of the same bytes, same run (or, with --flow-control, what a "
        "lagging stream costs the plain requests on its connection).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--parts", type=int, default=100_000, help="parts per stream")
    parser.add_argument("--size", type=int, default=64, help="bytes per part")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="requests in flight on the request/reply side",
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="rounds of each, alternating"
    )
    parser.add_argument(
        "--flow-control",
        action="store_true",
        help="measure plain requests next to a lagging stream instead",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="write a cProfile of the stream rounds to FILE (pstats)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the server and this client to separate CPUs",
    )
    return parser


def _text(result: dict[str, Any]) -> str:
    if "next_to_lagging_stream" in result:
        lines = [
            f"{result['requests']} plain requests, one every "
            f"{result['every_s'] * 1000:g} ms; the stream's consumer takes "
            f"{result['consumer']}"
        ]
        for name, label in (
            ("alone", "alone"),
            ("next_to_lagging_stream", "same connection as the stream"),
            ("lagging_stream_on_its_own_client", "stream on a client of its own"),
        ):
            summary = result[name]
            lines.append(
                f"  {label + ':':31} p50 {summary['p50'] * 1000:8.2f} ms  "
                f"p99 {summary['p99'] * 1000:8.2f} ms"
            )
        rate = result["consumer_bytes_per_s"]["next_to_lagging_stream"]
        lines.append(
            f"  the consumer took {rate / 1e6:.2f} MB/s: a reply on the stream's "
            f"connection waited behind about "
            f"{rate * result['next_to_lagging_stream']['p50'] / 1e6:.1f} MB"
        )
        return "\n".join(lines)
    stream, rr = result["median"]["stream"], result["median"]["request_reply"]
    ratios = ", ".join(f"{r:.2f}" for r in result["rate_ratios"])
    return "\n".join(
        [
            f"{result['parts']:,} parts of {result['size']} bytes, one connection "
            f"(median of {len(result['rate_ratios'])} rounds)",
            f"  stream (async for):      {stream['per_s']:>10,.0f} parts/s  "
            f"{stream['cpu_us_each']:6.2f} us CPU/part",
            f"  request/reply (C={result['concurrency']}): "
            f"{rr['per_s']:>10,.0f} req/s    {rr['cpu_us_each']:6.2f} us CPU/request",
            f"  stream / request-reply rate: {result['rate_ratio']:.2f}x "
            f"(rounds: {ratios}; target >= 0.8x); CPU per item "
            f"{result['cpu_ratio']:.2f}x less",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the measurement the command line asks for; print it.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("parts", "concurrency", "runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.size < 0:
        parser.error("--size must be at least 0")
    pin = not args.no_pin and hasattr(os, "sched_setaffinity")
    if pin and len(os.sched_getaffinity(0)) < 2:
        pin = False
    server = ServerProcess(REFERENCE_SERVER_COMMAND, cpu=1 if pin else None)
    with server:
        if pin:
            os.sched_setaffinity(0, {0})
        address = f"tcp:{server.host}:{server.port}"
        from twisted.internet import task

        results: list[dict[str, Any]] = []

        async def run(reactor: Any) -> None:
            if args.flow_control:
                results.append(await flow_control(reactor, address))
            else:
                results.append(
                    await rate(
                        reactor,
                        address,
                        args.parts,
                        args.size,
                        args.concurrency,
                        args.runs,
                        args.profile,
                    )
                )

        try:
            task.react(lambda r: ensureDeferred(run(r)))
        except SystemExit as e:
            # react() always exits: 0 once run() is done, 1 if it failed
            # (the traceback is printed).
            if e.code:
                return int(e.code)
    (result,) = results
    result["machine"] = {"pinned": pin, "cpus": os.cpu_count()}
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(_text(result))
    return 0
