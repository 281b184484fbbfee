"""
``python -m framedclient.bench pubsub``: Redis pub/sub delivery to one
subscriber connection, framedclient side by side with redis-py's asyncio
``PubSub`` and txredisapi's ``SubscriberProtocol``, in one run.

Each subscriber runs in a process of its own (pinned to one CPU, the
server to another): it subscribes to one channel and says so; the driver
then stops it (``SIGSTOP``), publishes ``--messages`` messages of
``--size`` bytes from a pipelined publisher of its own, and lets it go on
(``SIGCONT``).  Redis holds the messages in the subscriber's output buffer
(the server runs with ``client-output-buffer-limit pubsub 0 0 0``), so what
is timed, from the first message received to the last, is the subscriber
alone reading as fast as it can, not the publisher.  Every message is
counted and its size checked; the last one must be the last published.

Figures: messages per second (wall) and per CPU second of the subscriber
process, and framedclient's ratio to each.

Clients (``--clients``): ``framedclient`` (``RedisClient.subscribe``, its
RESP2 subscriber connection, read with ``consume(callback)``),
``framedclient-async-for`` (the same, read with ``async for``),
``framedclient-resp3`` (``protocol=3``: the push frames of a shared RESP3
connection, ``consume``),
``txredisapi`` (a ``SubscriberProtocol`` whose ``messageReceived`` counts),
``redis-asyncio`` (``redis.asyncio`` ``PubSub.listen()``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from framedclient.bench.keyvalue import server_argv
from framedclient.bench.measure import cpu_seconds as _cpu
from framedclient.bench.ratio_table import heading, pinned, rate_and_ratio_cells, row
from framedclient.bench.serverproc import child_setup, free_port, start_on_port
from framedclient.bench.subprocess_runs import (
    add_pin_and_json_options,
    best_run,
    cpu_pair,
    write_rows,
)

__all__ = ["CLIENTS", "main"]

CLIENTS = (
    "framedclient",
    "framedclient-async-for",
    "framedclient-resp3",
    "txredisapi",
    "redis-asyncio",
)
CHANNEL = b"bench:pubsub"


def payload(i: int, size: int) -> bytes:
    """
    Message ``i``: its number, padded to ``size`` bytes.
    """
    head = b"%010d" % i
    return head + b"." * (size - len(head))


class _Tally:
    """
    What a subscriber counts: each message's size, the time and CPU from
    the first message to the last, and the last one's number.
    """

    def __init__(self, expected: int, size: int) -> None:
        self.expected = expected
        self.size = size
        self.count = 0
        self.start = 0.0
        self.cpu_start = 0.0
        self.result: dict[str, Any] | None = None

    def message(self, data: bytes) -> bool:
        """
        Count one message; true once the last has come.
        """
        if self.count == 0:
            self.start = time.perf_counter()
            self.cpu_start = _cpu()
        if len(data) != self.size:
            raise AssertionError(f"a message of {len(data)} bytes, not {self.size}")
        self.count += 1
        if self.count < self.expected:
            return False
        if int(data[:10]) != self.expected - 1:
            raise AssertionError(f"the last message is {data[:10]!r}")
        self.result = {
            "messages": self.count,
            "seconds": time.perf_counter() - self.start,
            "cpu": _cpu() - self.cpu_start,
        }
        return True


def _ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()


# -- one subscriber (a child process) -----------------------------------------------


async def _framedclient(
    reactor: Any, port: int, tally: _Tally, protocol: int, consume: bool
) -> None:
    from twisted.internet.defer import Deferred

    from framedclient.clients.redis import RedisClient

    redis = RedisClient.from_endpoint(
        reactor, f"tcp:127.0.0.1:{port}", pool_size=1, protocol=protocol
    )
    await redis.when_ready()
    sub = redis.subscribe(CHANNEL)
    await sub.when_subscribed()
    _ready()
    if consume:
        done: Deferred[None] = Deferred()

        def on_message(message: Any) -> None:
            if tally.message(message.data):
                done.callback(None)

        consuming = sub.consume(on_message)
        await done
        await sub.unsubscribe()
        await consuming
    else:
        async for message in sub:
            if tally.message(message.data):
                break
        await sub.unsubscribe()
    await redis.close()


async def _txredisapi(reactor: Any, port: int, tally: _Tally) -> None:
    import txredisapi
    from twisted.internet.defer import Deferred
    from twisted.internet.protocol import ClientCreator

    done: Deferred[None] = Deferred()

    class Subscriber(txredisapi.SubscriberProtocol):  # type: ignore[misc]
        def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
            if tally.message(message) and not done.called:
                done.callback(None)

    creator = ClientCreator(reactor, Subscriber, charset=None)  # type: ignore[no-untyped-call]
    proto = await creator.connectTCP("127.0.0.1", port)  # type: ignore[no-untyped-call]
    await proto.subscribe([CHANNEL])
    _ready()
    await done
    proto.transport.loseConnection()


def _run_twisted(kind: str, port: int, tally: _Tally) -> None:
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    def main(reactor: Any) -> Any:
        if kind == "txredisapi":
            return ensureDeferred(_txredisapi(reactor, port, tally))
        protocol = 3 if kind == "framedclient-resp3" else 2
        consume = kind != "framedclient-async-for"
        return ensureDeferred(_framedclient(reactor, port, tally, protocol, consume))

    try:
        task.react(main)
    except SystemExit as e:
        if e.code:
            raise


def _run_redis_asyncio(port: int, tally: _Tally) -> None:
    import asyncio

    import redis.asyncio as aioredis

    async def run() -> None:
        client = aioredis.Redis(host="127.0.0.1", port=port)
        pubsub = client.pubsub()
        await pubsub.subscribe(CHANNEL)
        confirmed = await pubsub.get_message(timeout=5)
        if confirmed is None or confirmed["type"] != "subscribe":
            raise AssertionError(f"no subscribe confirmation: {confirmed!r}")
        _ready()
        async for message in pubsub.listen():
            if message["type"] == "message" and tally.message(message["data"]):
                break
        await pubsub.aclose()
        await client.aclose()

    asyncio.run(run())


def run_client(kind: str, port: int, messages: int, size: int) -> None:
    """
    One subscriber, in this process; prints ``ready``, then a JSON line.
    """
    tally = _Tally(messages, size)
    if kind == "redis-asyncio":
        _run_redis_asyncio(port, tally)
    else:
        _run_twisted(kind, port, tally)
    if tally.result is None:
        raise SystemExit(f"{kind} stopped after {tally.count} messages")
    print(json.dumps(tally.result))


# -- the driver -----------------------------------------------------------------------


def publish(port: int, messages: int, size: int, batch: int = 1000) -> None:
    """
    PUBLISH ``messages`` messages to the bench channel, ``batch`` at a time
    pipelined, each reply read (each must say one subscriber got it).
    """
    with socket.create_connection(("127.0.0.1", port)) as s:
        head = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n" % (
            len(CHANNEL),
            CHANNEL,
            size,
        )
        for first in range(0, messages, batch):
            count = min(batch, messages - first)
            s.sendall(
                b"".join(
                    head + payload(i, size) + b"\r\n"
                    for i in range(first, first + count)
                )
            )
            want = b":1\r\n" * count
            got = bytearray()
            while len(got) < len(want):
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("redis-server closed the publisher")
                got += chunk
            if bytes(got) != want:
                raise RuntimeError(f"PUBLISH reached no subscriber: {got[:40]!r}")


def _child(kind: str, port: int, args: argparse.Namespace, cpu: int | None) -> Any:
    command = [
        sys.executable,
        "-m",
        "framedclient.bench.pubsub",
        "client",
        kind,
        "--port",
        str(port),
        "--messages",
        str(args.messages),
        "--size",
        str(args.size),
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=child_setup(cpu),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"{kind} did not subscribe: {line!r}")
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            publish(port, args.messages, args.size)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=600)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{err.decode()[-3000:]}")
    return json.loads(out.decode().splitlines()[-1])


def _start_redis(cpu: int | None, workdir: str) -> tuple[Any, int]:
    program = shutil.which("redis-server")
    if program is None:
        raise SystemExit(
            "redis-server is not installed (apt-get install redis-server); the "
            "comparison needs a real server"
        )
    port = free_port()
    # No output-buffer limit for subscribers: the driver fills the
    # subscriber's on purpose (see the module's notes).
    argv = server_argv("redis", program, port, workdir)
    argv += ["--client-output-buffer-limit", "pubsub 0 0 0"]
    return start_on_port(argv, port, cpu), port


def compare(args: argparse.Namespace) -> list[dict[str, Any]]:
    """
    Every chosen subscriber ``args.runs`` times against one server; the
    best run of each is kept.
    """
    server_cpu, client_cpu = cpu_pair(args.pin)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as workdir:
        proc, port = _start_redis(server_cpu, workdir)
        try:
            for kind in args.clients:
                measure = partial(_child, kind, port, args, client_cpu)
                best = best_run(kind, args.runs, measure, "messages", "messages/s")
                assert best is not None
                rows.append({"client": kind, **best})
        finally:
            proc.terminate()
            proc.wait(10)
    return rows


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """
    A Markdown table: each subscriber's rate and cost, and framedclient's
    ratio to it.
    """
    ours = next((r for r in rows if r["client"] == "framedclient"), None)
    lines = [
        *heading(
            f"Redis pub/sub, one subscriber connection, {args.size}-byte messages, "
            f"{args.messages:,} messages, best of {args.runs}; server and "
            f"subscriber {pinned(args.pin)}"
        ),
        "| subscriber | messages/s | messages per CPU s | framedclient / this "
        "(rate) | framedclient / this (CPU) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(row([r["client"], *rate_and_ratio_cells(r, ours, "messages")]))
    return "\n".join(lines)


def _clients(text: str) -> list[str]:
    kinds = [k for k in text.split(",") if k]
    unknown = [k for k in kinds if k not in CLIENTS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"unknown subscriber(s) {unknown}; choose from {', '.join(CLIENTS)}"
        )
    return kinds


def _positive(text: str) -> int:
    value = int(text.replace("_", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m framedclient.bench pubsub",
        description="Redis pub/sub delivery to one subscriber connection: "
        "framedclient, redis.asyncio and txredisapi, each in its own process, "
        "in one run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--clients",
        type=_clients,
        default=list(CLIENTS),
        help=f"which subscribers, comma-separated, from: {', '.join(CLIENTS)}",
    )
    parser.add_argument("--messages", type=_positive, default=200_000)
    parser.add_argument("--size", type=_positive, default=64)
    parser.add_argument("--runs", type=_positive, default=3)
    add_pin_and_json_options(parser, "the server and the subscribers")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["client"]:
        parser = argparse.ArgumentParser(prog="pubsub client")
        parser.add_argument("kind", choices=CLIENTS)
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--messages", type=int, default=200_000)
        parser.add_argument("--size", type=int, default=64)
        a = parser.parse_args(argv[1:])
        run_client(a.kind, a.port, a.messages, a.size)
        return 0
    args = build_parser().parse_args(argv)
    if args.size < 10:
        print("--size must be at least 10 (a message carries its number)")
        return 2
    rows = compare(args)
    print(render(rows, args))
    write_rows(args.json, {"args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
