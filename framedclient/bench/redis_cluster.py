"""
``python -m framedclient.bench redis-cluster``: framedclient's
:class:`~framedclient.clients.cluster.RedisClusterClient` side by side with
redis-py's ``redis.asyncio.cluster.RedisCluster`` and coredis's
``RedisCluster``, against one real Redis Cluster of three masters, in one
run; and the **cost of cluster routing**: the cluster client and a plain
:class:`~framedclient.clients.redis.RedisClient` both talking to one node.

The cluster (three ``redis-server --cluster-enabled yes`` joined by
``redis-cli --cluster create``, no replicas) runs on one CPU; each client
runs in a process of its own on the other, one after the other, doing the
same closed loop: ``concurrency`` callers, each sending a GET (or a SET) of
one of 1,000 keys spread over every slot range as soon as its previous
reply came, every reply checked.

Clients (``--clients``):

- ``framedclient``: ``RedisClusterClient``, one connection per master;
- ``redis-asyncio``: redis-py's asyncio cluster client;
- ``coredis``: coredis's cluster client;
- ``routing-direct`` and ``routing-cluster``: the routing cost.  Both send
  to the first master only, keys it serves; ``direct`` through a
  ``RedisClient`` on that node, ``cluster`` through a ``RedisClusterClient``
  seeded with the whole cluster.  Their CPU per request differ only by
  what routing costs.

``--callgrind`` counts instructions per request of the two routing clients
under ``valgrind --tool=callgrind`` (two runs of different lengths each,
the difference divided by the difference in requests, so start-up and the
warm-up cancel out): a figure that does not move with the machine's load.
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from typing import Any

from framedclient.bench.keyvalue import server_argv
from framedclient.bench.measure import cpu_seconds as _cpu
from framedclient.bench.ratio_table import heading, pinned, rate_and_ratio_cells, row
from framedclient.bench.serverproc import child_setup
from framedclient.bench.subprocess_runs import (
    add_pin_and_json_options,
    best_run,
    cpu_pair,
    run_json_child,
    write_rows,
)
from framedclient.clients.slots import key_slot

__all__ = ["CLIENTS", "main", "start_cluster"]

CLIENTS = (
    "framedclient",
    "redis-asyncio",
    "coredis",
    "routing-direct",
    "routing-cluster",
)
OPERATIONS = ("get", "set")
#: How many keys the loop goes through (in every slot range).
KEYS = 1000
_MASTERS = 3


def _value(size: int) -> bytes:
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


# -- the cluster --------------------------------------------------------------


def _free_port_pair() -> int:
    # A cluster node also listens on its bus port, port + 10000.
    import random
    import socket

    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20000, 40000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free loopback ports for a Redis cluster")


def _cli(program: str, port: int, *args: str) -> str:
    done = subprocess.run(
        [program, "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return done.stdout.decode()


@contextmanager
def start_cluster(workdir: str, cpu: int | None = None) -> Iterator[list[int]]:
    """
    Three masters (no replicas) joined into one cluster covering every
    slot, each in its own directory under ``workdir``; yields their ports
    once every node says ``cluster_state:ok``; kills them on exit.
    """
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise SystemExit(
            "redis-server and redis-cli are not installed (apt-get install "
            "redis-server redis-tools); the comparison needs a real cluster"
        )
    with ExitStack() as stack:
        ports = []
        for _ in range(_MASTERS):
            port = _free_port_pair()
            home = os.path.join(workdir, str(port))
            os.mkdir(home)
            argv = server_argv(
                "redis",
                server,
                port,
                home,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                os.path.join(home, "nodes.conf"),
            )
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=child_setup(cpu),
            )
            stack.callback(_stop, proc)
            ports.append(port)
        deadline = time.monotonic() + 20
        for port in ports:
            while True:
                try:
                    _cli(cli, port, "PING")
                    break
                except subprocess.CalledProcessError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"redis-server on {port} did not start"
                        ) from None
                    time.sleep(0.05)
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in ports],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            check=True,
            timeout=60,
        )
        while not all(
            "cluster_state:ok" in _cli(cli, p, "CLUSTER", "INFO") for p in ports
        ):
            if time.monotonic() > deadline + 30:
                raise RuntimeError("the cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield ports


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()


def _slot_ranges(port: int) -> list[tuple[int, int]]:
    cli = shutil.which("redis-cli") or "redis-cli"
    ranges = []
    for line in _cli(cli, port, "CLUSTER", "NODES").splitlines():
        fields = line.split()
        if "myself" in fields[2]:
            for spec in fields[8:]:
                if not spec.startswith("["):
                    lo, _, hi = spec.partition("-")
                    ranges.append((int(lo), int(hi or lo)))
    return ranges


def bench_keys(ranges: list[tuple[int, int]] | None = None) -> list[bytes]:
    """
    :data:`KEYS` keys; with ``ranges``, only keys whose slot is in one of
    them (the keys one node serves).
    """
    keys: list[bytes] = []
    i = 0
    while len(keys) < KEYS:
        key = b"bench:%d" % i
        i += 1
        if ranges is None or any(lo <= key_slot(key) <= hi for lo, hi in ranges):
            keys.append(key)
    return keys


# -- one client run (a child process) -------------------------------------------


def _closed_loop_twisted(
    call: Callable[[bytes], Any],
    check: Callable[[Any], bool],
    keys: list[bytes],
    concurrency: int,
    total: int,
) -> Any:
    """
    ``concurrency`` callback chains, each sending its next command as its
    last reply came, until ``total`` replies came; fires with the seconds
    and CPU seconds it took.
    """
    from twisted.internet.defer import Deferred

    left = [total]
    turn = [0]
    active = [concurrency]
    done: Deferred[tuple[float, float]] = Deferred()
    start, cpu_start = time.perf_counter(), _cpu()
    count = len(keys)

    def send() -> None:
        left[0] -= 1
        turn[0] += 1
        call(keys[turn[0] % count]).addCallback(step).addErrback(fail)

    def step(reply: object) -> None:
        if not check(reply):
            raise AssertionError(f"wrong reply {reply!r}")
        if left[0] > 0:
            send()
        else:
            active[0] -= 1
            if not active[0] and not done.called:
                done.callback((time.perf_counter() - start, _cpu() - cpu_start))

    def fail(failure: Any) -> None:
        if not done.called:
            done.errback(failure)

    for _ in range(concurrency):
        send()
    return done


async def _twisted_main(
    reactor: Any,
    kind: str,
    ports: list[int],
    op: str,
    value: bytes,
    c: int,
    n: int,
    warmup: int,
) -> tuple[float, float]:
    from framedclient.clients.cluster import RedisClusterClient
    from framedclient.clients.redis import RedisClient

    seeds = [f"tcp:127.0.0.1:{p}" for p in ports]
    options: dict[str, Any] = {"pool_size": 1, "max_in_flight": max(c, 1024)}
    client: Any
    if kind == "routing-direct":
        client = RedisClient.from_endpoint(reactor, seeds[0], **options)
    else:
        client = RedisClusterClient.from_endpoint(reactor, seeds, **options)
    await client.when_ready()
    keys = bench_keys(_slot_ranges(ports[0]) if kind.startswith("routing") else None)
    for key in keys:
        await client.set(key, value)
    call: Callable[[bytes], Any]
    check: Callable[[Any], bool]
    if op == "get":
        call, check = client.get, value.__eq__
    else:
        set_ = client.set
        call, check = (lambda key: set_(key, value)), bool
    await _closed_loop_twisted(call, check, keys, c, warmup)
    measured: tuple[float, float] = await _closed_loop_twisted(call, check, keys, c, n)
    await client.close()
    return measured


def _run_twisted(
    kind: str, ports: list[int], op: str, value: bytes, c: int, n: int, warmup: int
) -> tuple[float, float]:
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    result: list[tuple[float, float]] = []

    def main(reactor: Any) -> Any:
        d = ensureDeferred(_twisted_main(reactor, kind, ports, op, value, c, n, warmup))
        return d.addCallback(result.append)

    try:
        task.react(main)
    except SystemExit as e:
        if e.code:
            raise
    return result[0]


def _run_asyncio(
    kind: str, ports: list[int], op: str, value: bytes, c: int, n: int, warmup: int
) -> tuple[float, float]:
    import asyncio

    keys = bench_keys()

    async def run() -> tuple[float, float]:
        client: Any
        if kind == "redis-asyncio":
            from redis.asyncio.cluster import RedisCluster

            client = RedisCluster(host="127.0.0.1", port=ports[0])
            await client.initialize()
        else:
            import coredis

            client = coredis.RedisCluster(
                "127.0.0.1", ports[0], max_connections=c, max_connections_per_node=True
            )
            await client.__aenter__()
        for key in keys:
            await client.set(key, value)

        async def worker(first: int, count: int) -> None:
            for i in range(first, first + count):
                key = keys[i % KEYS]
                if op == "get":
                    if await client.get(key) != value:
                        raise AssertionError("wrong reply")
                elif not await client.set(key, value):
                    raise AssertionError("SET failed")

        async def loop(total: int) -> tuple[float, float]:
            start, cpu_start = time.perf_counter(), _cpu()
            share = total // c
            await asyncio.gather(*(worker(i * 7, share) for i in range(c)))
            return time.perf_counter() - start, _cpu() - cpu_start

        await loop(warmup)
        measured = await loop(n)
        if kind == "redis-asyncio":
            await client.aclose()
        else:
            await client.__aexit__(None, None, None)
        return measured

    return asyncio.run(run())


def run_client(
    kind: str,
    ports: list[int],
    op: str,
    value_size: int,
    c: int,
    n: int,
    warmup: int,
) -> None:
    """One measurement, in this process; prints a JSON line."""
    value = _value(value_size)
    if kind in ("redis-asyncio", "coredis"):
        seconds, cpu = _run_asyncio(kind, ports, op, value, c, n, warmup)
    else:
        seconds, cpu = _run_twisted(kind, ports, op, value, c, n, warmup)
    print(json.dumps({"requests": n, "seconds": seconds, "cpu": cpu}))


# -- the driver ---------------------------------------------------------------------


def _client_command(
    kind: str, ports: list[int], op: str, args: argparse.Namespace, n: int, warmup: int
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "framedclient.bench.redis_cluster",
        "client",
        kind,
        "--ports",
        ",".join(map(str, ports)),
        "--op",
        op,
        "--value-size",
        str(args.value_size),
        "--concurrency",
        str(args.concurrency),
        "--requests",
        str(n),
        "--warmup",
        str(warmup),
    ]


def _child(
    kind: str, ports: list[int], op: str, args: argparse.Namespace, cpu: int | None
) -> dict[str, Any]:
    command = _client_command(
        kind, ports, op, args, args.requests, max(1000, args.requests // 10)
    )
    result: dict[str, Any] = run_json_child(command, cpu=cpu, timeout=600)
    return result


_COLLECTED = re.compile(rb"Collected\s*:\s*(\d+)")


def instructions_per_request(
    kind: str, ports: list[int], op: str, args: argparse.Namespace
) -> float:
    """
    Instructions per request of ``kind`` under callgrind: two runs, of
    ``args.callgrind_requests`` and twice that, the difference divided by
    the difference in requests.
    """
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    counts = []
    small: int = args.callgrind_requests
    for n in (small, 2 * small):
        command = [
            valgrind,
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            *_client_command(kind, ports, op, args, n, 2000),
        ]
        done = subprocess.run(
            command,
            capture_output=True,
            timeout=1800,
            check=False,
            preexec_fn=child_setup(None),
        )
        found = _COLLECTED.search(done.stderr)
        if done.returncode != 0 or found is None:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]!r}")
        counts.append(int(found[1]))
    return (counts[1] - counts[0]) / float(small)


def compare(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every chosen client and operation, best of ``args.runs``."""
    server_cpu, client_cpu = cpu_pair(args.pin)
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory() as workdir,
        start_cluster(workdir, server_cpu) as ports,
    ):
        for op in args.ops:
            for kind in args.clients:
                measure = partial(_child, kind, ports, op, args, client_cpu)
                best = best_run(f"{op} {kind}", args.runs, measure, "requests", "req/s")
                assert best is not None
                rows.append({"client": kind, "op": op, **best})
            if args.callgrind:
                for kind in ("routing-direct", "routing-cluster"):
                    ir = instructions_per_request(kind, ports, op, args)
                    rows.append({"client": kind, "op": op, "instructions": ir})
                    print(
                        f"  {op} {kind}: {ir:,.0f} instructions/request",
                        file=sys.stderr,
                    )
    return rows


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """
    Markdown: each client's rate and cost per operation, framedclient's
    ratios to it, and the routing cost (CPU and instructions).
    """
    lines = [
        *heading(
            f"Redis Cluster (3 masters), {args.value_size}-byte values, "
            f"{args.concurrency} concurrent callers, {args.requests:,} requests, "
            f"best of {args.runs}; cluster and client {pinned(args.pin)}"
        ),
        "| op | client | req/s | req per client CPU s | framedclient / this (rate) "
        "| framedclient / this (CPU) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    timed = [r for r in rows if "rate" in r]
    for op in args.ops:
        ours = next(
            (r for r in timed if r["op"] == op and r["client"] == "framedclient"), None
        )
        for r in (r for r in timed if r["op"] == op):
            rate, per_cpu, ratio, cpu_ratio = rate_and_ratio_cells(r, ours, "requests")
            if r["client"].startswith("routing"):
                ratio = cpu_ratio = "-"  # compared with each other, below
            lines.append(
                row([op.upper(), r["client"], rate, per_cpu, ratio, cpu_ratio])
            )
    lines += [
        "",
        "| op | routing cost: CPU per request, cluster / direct "
        "| instructions per request, direct | cluster | cluster / direct |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]

    def find(op: str, kind: str, field: str) -> Any:
        found = (r for r in rows if r["op"] == op and r["client"] == kind)
        return next((r for r in found if field in r), None)

    for op in args.ops:
        direct = find(op, "routing-direct", "rate")
        cluster = find(op, "routing-cluster", "rate")
        cpu_cost = "-"
        if direct and cluster and direct["cpu"] and cluster["cpu"]:
            ratio = (cluster["cpu"] / cluster["requests"]) / (
                direct["cpu"] / direct["requests"]
            )
            cpu_cost = f"{(ratio - 1) * 100:+.1f} %"
        ir_direct = find(op, "routing-direct", "instructions")
        ir_cluster = find(op, "routing-cluster", "instructions")
        irs = ["-", "-", "-"]
        if ir_direct and ir_cluster:
            a, b = ir_direct["instructions"], ir_cluster["instructions"]
            irs = [f"{a:,.0f}", f"{b:,.0f}", f"{(b / a - 1) * 100:+.1f} %"]
        if cpu_cost != "-" or ir_direct:
            lines.append(f"| {op.upper()} | {cpu_cost} | {' | '.join(irs)} |")
    return "\n".join(lines)


def _names(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [k for k in text.split(",") if k]
        unknown = [k for k in names if k not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown)}; choose from {', '.join(choices)}"
            )
        return names

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m framedclient.bench redis-cluster",
        description="framedclient's Redis Cluster client side by side with "
        "redis-py's and coredis's, against a real 3-master cluster, in one run; "
        "and the cost of cluster routing over one node.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--clients",
        type=_names(CLIENTS),
        default=list(CLIENTS),
        help=f"comma-separated, from: {', '.join(CLIENTS)}",
    )
    parser.add_argument(
        "--ops",
        type=_names(OPERATIONS),
        default=list(OPERATIONS),
        help="get, set or both",
    )
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--value-size", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="also count instructions per request of the two "
        "routing clients under valgrind (slow: minutes)",
    )
    parser.add_argument(
        "--callgrind-requests", type=int, default=10_000, help=argparse.SUPPRESS
    )
    add_pin_and_json_options(parser, "the cluster and the clients")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["client"]:
        parser = argparse.ArgumentParser(prog="redis_cluster client")
        parser.add_argument("kind", choices=CLIENTS)
        parser.add_argument("--ports", required=True)
        parser.add_argument("--op", choices=OPERATIONS, default="get")
        parser.add_argument("--value-size", type=int, default=64)
        parser.add_argument("--concurrency", type=int, default=50)
        parser.add_argument("--requests", type=int, default=100_000)
        parser.add_argument("--warmup", type=int, default=10_000)
        a = parser.parse_args(argv[1:])
        ports = [int(p) for p in a.ports.split(",")]
        run_client(
            a.kind, ports, a.op, a.value_size, a.concurrency, a.requests, a.warmup
        )
        return 0
    args = build_parser().parse_args(argv)
    rows = compare(args)
    print(render(rows, args))
    write_rows(args.json, {"args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
