"""
``python -m framedclient.bench redis|memcache``: framedclient's Redis and
memcached clients side by side with the libraries a user would otherwise
pick, against one real server, in one run.

The server (``redis-server`` or ``memcached``) runs pinned to one CPU; each
client runs in a process of its own pinned to another, one after the
other, doing the same closed loop: ``concurrency`` callers, each sending a
GET of one key (a ``value_size``-byte value) as soon as its previous reply
came, every reply checked.  The physical reference (``redis-benchmark``,
``memaslap``; C programs that do nothing but the loop) runs on the client's
CPU too, when installed.

Every figure is a rate (replies per second) and a cost (replies per CPU
second of the client process: on a machine busy with other work the cost
is the steadier of the two), and a ratio to framedclient's.

Clients (``--clients``):

- redis: ``framedclient`` (:class:`~framedclient.clients.redis.RedisClient`,
  one connection), ``txredisapi`` (one connection), ``txredisapi-pool``
  (a pool of 4), ``redis-asyncio`` (redis-py's asyncio client, a pool of
  ``concurrency`` connections), ``redis-benchmark``;
- memcache: ``framedclient``
  (:class:`~framedclient.clients.memcache.MemcacheClient`, one connection),
  ``pymemcache-threads`` (pymemcache's pooled client in 8 threads),
  ``memaslap`` (Debian's ``memcaslap``; its default mix of 90 % GET).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from framedclient.bench.ratio_table import heading, pinned, rate_and_ratio_cells, row
from framedclient.bench.serverproc import child_setup, free_port, start_on_port
from framedclient.bench.subprocess_runs import (
    add_pin_and_json_options,
    best_run,
    cpu_pair,
    run_json_child,
    write_rows,
)

__all__ = ["MEMCACHE_CLIENTS", "REDIS_CLIENTS", "main"]

REDIS_CLIENTS = (
    "framedclient",
    "txredisapi",
    "txredisapi-pool",
    "redis-asyncio",
    "redis-benchmark",
)
MEMCACHE_CLIENTS = ("framedclient", "pymemcache-threads", "memaslap")
KEY = b"bench:key"
# pymemcache's threads (and its pool's connections).
_THREADS = 8


def _cpu() -> float:
    # CPU seconds of this process (all threads), for the measured loop only.
    t = os.times()
    return t.user + t.system


def _value(size: int) -> bytes:
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


# -- the servers ---------------------------------------------------------------


def server_argv(
    protocol: str, program: str, port: int, workdir: str, *extra: str
) -> list[str]:
    """
    The command line of a throwaway ``redis-server`` or ``memcached`` on
    127.0.0.1:``port`` (no persistence; memcached without UDP): one
    spelling for the bench and the test fixtures (``tests/servers.py``).
    """
    if protocol == "redis":
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", workdir]
    else:
        args = ["-l", "127.0.0.1", "-p", str(port), "-U", "0"]
        if os.geteuid() == 0:
            args += ["-u", "root"]  # memcached refuses root without it
    return [program, *args, *extra]


def _start_server(protocol: str, cpu: int | None, workdir: str) -> tuple[Any, int]:
    port = free_port()
    program = shutil.which("redis-server" if protocol == "redis" else "memcached")
    if program is None:
        package = "redis-server" if protocol == "redis" else "memcached"
        raise SystemExit(
            f"{package} is not installed (apt-get install {package}); the "
            f"comparison needs a real server"
        )
    extra = () if protocol == "redis" else ("-t", "1")
    argv = server_argv(protocol, program, port, workdir, *extra)
    return start_on_port(argv, port, cpu), port


# -- one client run (a child process) ---------------------------------------------


def _closed_loop_twisted(
    get: Callable[[bytes], Any], value: object, concurrency: int, total: int
) -> Any:
    """
    ``concurrency`` callback chains sending GETs (or pipelines of GETs,
    whose reply is the list of values) until ``total`` replies came; fires
    with the seconds and the CPU seconds it took.
    """
    from twisted.internet.defer import Deferred

    left = [total]
    done: Deferred[tuple[float, float]] = Deferred()
    active = [concurrency]
    start = time.perf_counter()
    cpu_start = _cpu()

    def step(reply: object) -> None:
        if reply != value:
            raise AssertionError(f"wrong reply {reply!r}")
        if left[0] > 0:
            left[0] -= 1
            get(KEY).addCallback(step).addErrback(fail)
        else:
            active[0] -= 1
            if not active[0] and not done.called:
                done.callback((time.perf_counter() - start, _cpu() - cpu_start))

    def fail(failure: Any) -> None:
        if not done.called:
            done.errback(failure)

    for _ in range(concurrency):
        left[0] -= 1
        get(KEY).addCallback(step).addErrback(fail)
    return done


async def _twisted_main(
    reactor: Any, kind: str, port: int, value: bytes, c: int, n: int, pipeline: int = 1
) -> tuple[float, float]:
    get: Callable[[bytes], Any]
    if kind == "framedclient-redis":
        from framedclient.clients.redis import RedisClient

        redis = RedisClient.from_endpoint(
            reactor, f"tcp:127.0.0.1:{port}", pool_size=1, max_in_flight=max(c, 1024)
        )
        await redis.when_ready()
        await redis.set(KEY, value)
        get = redis.get
        if pipeline > 1:

            def get(key: bytes) -> Any:
                p = redis.pipeline()
                for _ in range(pipeline):
                    p.add("GET", key)
                return p.execute()
    elif kind.startswith("txredisapi"):
        import txredisapi

        # charset=None: replies as bytes, like the other clients' (no
        # decoding to str, no adapter callback charged to txredisapi).
        # txredisapi pipelines: the callers' GETs share its connection(s)
        # without waiting for each other, as on framedclient's one.
        if kind == "txredisapi":
            conn = await txredisapi.Connection(
                "127.0.0.1", port, reconnect=False, charset=None
            )
        else:
            conn = await txredisapi.ConnectionPool(
                "127.0.0.1", port, poolsize=4, reconnect=False, charset=None
            )
        await conn.set(KEY, value)
        get = conn.get

    elif kind == "framedclient-memcache":
        from framedclient.clients.memcache import MemcacheClient

        memcache = MemcacheClient.from_endpoint(
            reactor, f"tcp:127.0.0.1:{port}", pool_size=1, max_in_flight=max(c, 1024)
        )
        await memcache.when_ready()
        await memcache.set(KEY, value)
        get = memcache.get
        if pipeline > 1:
            keys = [KEY] * pipeline

            def get(key: bytes) -> Any:
                return memcache.get_many(keys).addCallback(
                    lambda hits: [hits[KEY]] * pipeline
                )
    else:
        raise ValueError(f"unknown client {kind!r}")
    expect: object = value if pipeline <= 1 else [value] * pipeline
    calls = max(1, n // max(pipeline, 1))
    await _closed_loop_twisted(get, expect, c, max(1000 // pipeline, calls // 10))
    measured: tuple[float, float] = await _closed_loop_twisted(get, expect, c, calls)
    return measured


def _run_twisted(
    kind: str, port: int, value: bytes, c: int, n: int, pipeline: int = 1
) -> tuple[float, float]:
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    result: list[tuple[float, float]] = []

    def main(reactor: Any) -> Any:
        d = ensureDeferred(_twisted_main(reactor, kind, port, value, c, n, pipeline))
        return d.addCallback(result.append)

    try:
        task.react(main)
    except SystemExit as e:
        if e.code:
            raise
    return result[0]


def _run_redis_asyncio(port: int, value: bytes, c: int, n: int) -> tuple[float, float]:
    import asyncio

    import redis.asyncio as aioredis

    async def run() -> tuple[float, float]:
        client = aioredis.Redis(host="127.0.0.1", port=port, max_connections=c)
        await client.set(KEY, value)

        async def worker(count: int) -> None:
            for _ in range(count):
                if await client.get(KEY) != value:
                    raise AssertionError("wrong reply")

        async def loop(total: int) -> tuple[float, float]:
            start, cpu_start = time.perf_counter(), _cpu()
            await asyncio.gather(*(worker(total // c) for _ in range(c)))
            return time.perf_counter() - start, _cpu() - cpu_start

        await loop(max(1000, n // 10))
        measured = await loop(n)
        await client.aclose()
        return measured

    return asyncio.run(run())


def _run_pymemcache(port: int, value: bytes, c: int, n: int) -> tuple[float, float]:
    from concurrent.futures import ThreadPoolExecutor

    from pymemcache.client.base import PooledClient

    client = PooledClient(("127.0.0.1", port), max_pool_size=_THREADS)
    client.set(KEY, value)

    def worker(count: int) -> None:
        for _ in range(count):
            if client.get(KEY) != value:
                raise AssertionError("wrong reply")

    def loop(total: int) -> tuple[float, float]:
        # Each of the 8 threads loops over its share: no executor work
        # item per GET charged to pymemcache (queueing 100,000 futures
        # cost it about a fifth of its rate).
        shares = [total // _THREADS + (i < total % _THREADS) for i in range(_THREADS)]
        start, cpu_start = time.perf_counter(), _cpu()
        with ThreadPoolExecutor(_THREADS) as pool:
            for f in [pool.submit(worker, n) for n in shares]:
                f.result()
        return time.perf_counter() - start, _cpu() - cpu_start

    loop(max(1000, n // 10))
    return loop(n)


def run_client(
    kind: str, port: int, value_size: int, concurrency: int, n: int, pipeline: int = 1
) -> None:
    """
    One measurement, in this process; prints a JSON line.  With
    ``pipeline`` > 1 each call is a pipeline (Redis) or ``get_many``
    (memcached) of that many GETs, and ``n`` counts GETs.
    """
    value = _value(value_size)
    if pipeline > 1:
        if not kind.startswith("framedclient"):
            raise ValueError(
                f"--pipeline is measured for framedclient only, not {kind}"
            )
        calls = max(1, n // pipeline)
        seconds, cpu = _run_twisted(kind, port, value, concurrency, n, pipeline)
        print(
            json.dumps({"requests": calls * pipeline, "seconds": seconds, "cpu": cpu})
        )
        return
    if kind == "redis-asyncio":
        seconds, cpu = _run_redis_asyncio(port, value, concurrency, n)
    elif kind == "pymemcache-threads":
        seconds, cpu = _run_pymemcache(port, value, concurrency, n)
    else:
        seconds, cpu = _run_twisted(kind, port, value, concurrency, n)
    print(json.dumps({"requests": n, "seconds": seconds, "cpu": cpu}))


# -- the physical references ---------------------------------------------------------


def _redis_benchmark(
    port: int, value_size: int, c: int, n: int, cpu: int | None, pipeline: int = 1
) -> dict[str, Any] | None:
    program = shutil.which("redis-benchmark")
    if program is None:
        return None
    # SET first: GET of the (literal) key the GET test uses must find a value.
    args = [program, "-h", "127.0.0.1", "-p", str(port), "-c", str(c)]
    args += ["-d", str(value_size), "--csv", "-P", str(max(pipeline, 1))]
    subprocess.run([*args, "-n", "1000", "-t", "set"], capture_output=True, check=True)
    start = time.perf_counter()
    done = subprocess.run(
        [*args, "-n", str(n), "-t", "get"],
        capture_output=True,
        check=True,
        preexec_fn=child_setup(cpu),
    )
    seconds = time.perf_counter() - start
    match = re.search(r'"GET","([\d.]+)"', done.stdout.decode())
    if match is None:
        raise RuntimeError(f"no GET rate in redis-benchmark's output: {done.stdout!r}")
    rate = float(match[1])
    return {"requests": n, "seconds": n / rate, "cpu": None, "wall": seconds}


def _memaslap(
    port: int, value_size: int, c: int, cpu: int | None
) -> dict[str, Any] | None:
    program = shutil.which("memaslap") or shutil.which("memcaslap")
    if program is None:
        return None
    done = subprocess.run(
        [
            program,
            "-s",
            f"127.0.0.1:{port}",
            "-T",
            "1",
            "-c",
            str(c),
            "-t",
            "5s",
            "-X",
            str(value_size),
            "-B",
        ],
        capture_output=True,
        check=False,
        preexec_fn=child_setup(cpu),
    )
    match = re.search(r"Ops:\s*(\d+)\s+TPS:\s*(\d+)", done.stdout.decode())
    if match is None:
        raise RuntimeError(f"no TPS in memaslap's output: {done.stdout[-500:]!r}")
    ops, tps = int(match[1]), int(match[2])
    return {"requests": ops, "seconds": ops / tps, "cpu": None}


# -- the driver ----------------------------------------------------------------------


def _child(
    kind: str, port: int, args: argparse.Namespace, cpu: int | None
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "framedclient.bench.keyvalue",
        "client",
        kind,
        "--port",
        str(port),
        "--value-size",
        str(args.value_size),
        "--concurrency",
        str(args.concurrency),
        "--requests",
        str(args.requests),
        "--pipeline",
        str(args.pipeline),
    ]
    result: dict[str, Any] = run_json_child(command, cpu=cpu, timeout=600)
    return result


def compare(protocol: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """
    Run every chosen client ``args.runs`` times against one server; the
    best run of each is kept (the least disturbed by the rest of the
    machine).
    """
    server_cpu, client_cpu = cpu_pair(args.pin)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as workdir:
        proc, port = _start_server(protocol, server_cpu, workdir)
        try:
            for kind in args.clients:

                def measure(kind: str = kind) -> dict[str, Any] | None:
                    if kind == "redis-benchmark":
                        return _redis_benchmark(
                            port,
                            args.value_size,
                            reference_connections(args),
                            args.requests,
                            client_cpu,
                            args.pipeline,
                        )
                    if kind == "memaslap":
                        return _memaslap(
                            port,
                            args.value_size,
                            reference_connections(args),
                            client_cpu,
                        )
                    child = (
                        "framedclient-" + protocol if kind == "framedclient" else kind
                    )
                    return _child(child, port, args, client_cpu)

                best = best_run(kind, args.runs, measure, "requests", "req/s")
                if best is not None:
                    rows.append({"client": kind, **best})
        finally:
            proc.terminate()
            proc.wait(10)
    return rows


def reference_connections(args: argparse.Namespace) -> int:
    """
    How many connections redis-benchmark (``-c``) or memaslap (``-c``) opens:
    ``--reference-connections``, else one per concurrent caller.  Issue 22's
    pipeline target compares framedclient's one connection with
    ``redis-benchmark -c 1 -P 50``, whose figure depends on the count.
    """
    given: int | None = args.reference_connections
    return args.concurrency if given is None else given


def render(protocol: str, rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """
    A Markdown table: each client's rate and cost, and framedclient's
    ratio to it.
    """
    ours = next((r for r in rows if r["client"] == "framedclient"), None)
    reference = "redis-benchmark" if protocol == "redis" else "memaslap"
    batched = (
        f" in pipelines of {args.pipeline}"
        + (" (get_many)" if protocol == "memcache" else "")
        if args.pipeline > 1
        else ""
    )
    lines = [
        *heading(
            f"{protocol} GET{batched}, {args.value_size}-byte value, "
            f"{args.concurrency} concurrent callers, {args.requests:,} requests, "
            f"best of {args.runs}; server and client {pinned(args.pin)}"
            + (
                f"; {reference} with {reference_connections(args)} connection(s)"
                if args.reference_connections is not None
                else ""
            )
        ),
        "| client | req/s | req per client CPU s | framedclient / this (rate) "
        "| framedclient / this (CPU) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(row([r["client"], *rate_and_ratio_cells(r, ours, "requests")]))
    return "\n".join(lines)


def build_parser(protocol: str) -> argparse.ArgumentParser:
    choices = REDIS_CLIENTS if protocol == "redis" else MEMCACHE_CLIENTS
    parser = argparse.ArgumentParser(
        prog=f"python -m framedclient.bench {protocol}",
        description=f"framedclient's {protocol} client side by side with other "
        f"clients of a real {protocol} server, in one run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--clients",
        type=lambda text: [k for k in text.split(",") if k],
        default=list(choices),
        help=f"which clients, comma-separated, from: {', '.join(choices)}",
    )
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--value-size", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--pipeline",
        type=int,
        default=1,
        help="GETs per call: a pipeline (Redis; redis-benchmark -P) or a "
        "get_many (memcached) of this many; --requests counts GETs; only "
        "framedclient and redis-benchmark take it",
    )
    parser.add_argument(
        "--reference-connections",
        type=_positive,
        default=None,
        metavar="N",
        help="connections of redis-benchmark or memaslap (-c N); default: "
        "--concurrency (framedclient always uses one connection)",
    )
    add_pin_and_json_options(parser, "the server and the clients")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 1 connection")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["client"]:
        parser = argparse.ArgumentParser(prog="keyvalue client")
        parser.add_argument("kind")
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--value-size", type=int, default=64)
        parser.add_argument("--concurrency", type=int, default=50)
        parser.add_argument("--requests", type=int, default=100_000)
        parser.add_argument("--pipeline", type=int, default=1)
        a = parser.parse_args(argv[1:])
        run_client(a.kind, a.port, a.value_size, a.concurrency, a.requests, a.pipeline)
        return 0
    if argv[:1] not in (["redis"], ["memcache"]):
        print(
            "usage: python -m framedclient.bench redis|memcache [options]",
            file=sys.stderr,
        )
        return 2
    protocol = argv[0]
    args = build_parser(protocol).parse_args(argv[1:])
    choices = REDIS_CLIENTS if protocol == "redis" else MEMCACHE_CLIENTS
    unknown = [k for k in args.clients if k not in choices]
    if unknown:
        print(f"unknown clients {unknown}; choose from {choices}", file=sys.stderr)
        return 2
    if args.pipeline < 1:
        print(f"--pipeline must be 1 or more, got {args.pipeline}", file=sys.stderr)
        return 2
    if args.pipeline > 1:
        takes = ("framedclient", "redis-benchmark")
        others = [k for k in args.clients if k not in takes]
        if args.clients == list(choices):
            args.clients = [k for k in args.clients if k in takes]
        elif others:
            print(
                f"--pipeline is measured for {', '.join(takes)} only, not "
                f"{', '.join(others)}",
                file=sys.stderr,
            )
            return 2
    rows = compare(protocol, args)
    print(render(protocol, rows, args))
    write_rows(args.json, {"protocol": protocol, "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
