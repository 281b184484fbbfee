"""
``python -m framedclient.bench instructions``: CPU instructions per request,
counted by ``valgrind --tool=callgrind`` on a deterministic in-memory loop.

Wall-clock benchmarks on a shared machine move with the neighbours' load;
instruction counts do not, so decisions about the hot path (compiled or
pure, this change or that) are taken on them.  The loop is
:func:`framedclient.testing.memory_client` (a whole
:class:`~framedclient.client.FramedClient` with its pool, limiter, deadlines
and metrics, against the reference server over ``twisted.test.iosim``
transports on a :class:`~twisted.internet.task.Clock`): ``batches`` rounds of
``batch`` requests sent together and answered by one flush.  Nothing in it
reads a clock or a socket, so with ``PYTHONHASHSEED=0`` two runs execute the
same instructions.

The figure is a difference, so start-up and imports cancel out::

    instructions/request = (I(long) - I(short)) / ((long - short) * batch)

It counts the client and the in-memory server together (both run in the
process); the server's share is the same in both modes as long as the
compiled modules it shares with the client (framers, codecs) are counted on
both sides, so compare modes by their difference, not as absolute client
cost.  ``--proto`` runs the same loop on one
:class:`~framedclient.protocol.FramedProtocol` (no pool, no client layer);
``--raw`` on the bench's hand-written Twisted client
(:class:`~framedclient.bench.baselines.RawFC1Protocol`: one Deferred per
request, no deadlines, no counters) against the same server, which is the
figure the others are measured against.

``--codec redis`` and ``--codec memcache`` run the same loop through
:class:`~framedclient.clients.redis.RedisClient` ``.get`` and
:class:`~framedclient.clients.memcache.MemcacheClient` ``.get`` (the codecs,
the reply parsing and the client's methods included) against a canned
in-memory server that answers every GET with one 64-byte value: a Redis
server that repeats one reply per command it counts, a memcached server
that copies each request's opaque into one reply template.  Its cost per
request is small and the same in both modes.  ``--pipeline N`` sends each
round as one Redis pipeline (or one memcached ``get_many``) of ``batch``
GETs instead of ``batch`` single calls.  ``--codec redis-raw`` is the
yardstick: a hand-written Twisted RESP client (a ``Protocol`` with a queue
of Deferreds, no pool, limiter, deadlines or metrics) doing the same GETs
against the same server, i.e. what the reactor's transport and one
Deferred per GET cost at least.

Examples::

    python -m framedclient.bench instructions            # the current mode
    FRAMEDCLIENT_PURE=1 python -m framedclient.bench instructions
    python -m framedclient.bench instructions --loop 120  # the loop alone
    python -m framedclient.bench instructions --raw       # raw Twisted
    python -m framedclient.bench instructions --codec redis --batch 50
    python -m framedclient.bench instructions --codec memcache --batch 50 --pipeline
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["CODECS", "count_instructions", "main", "run_codec_loop", "run_loop"]

#: Batches of the short and the long run; their difference is measured.
SHORT, LONG = 20, 120
BATCH = 64
#: The protocols of ``--codec``: fc1 is :func:`run_loop`, the others
#: :func:`run_codec_loop`.
CODECS = ("fc1", "redis", "memcache", "redis-raw")

_KEY = b"bench:key"
_VALUE = b"v" * 64
# What the canned Redis server counts and answers.
_REDIS_GET = b"*2\r\n$3\r\nGET\r\n"
_REDIS_REPLY = b"$%d\r\n%s\r\n" % (len(_VALUE), _VALUE)
# memcached: a GET request is a 24-byte header and the key; the reply is a
# header (status 0, 4 bytes of flags as extras), the flags and the value,
# with the request's opaque (bytes 12-16) copied in.
_MEMCACHE_REQUEST = 24 + len(_KEY)
_MEMCACHE_REPLY = bytes([0x81, 0x00, 0, 0, 4, 0, 0, 0]) + (4 + len(_VALUE)).to_bytes(
    4, "big"
)
_MEMCACHE_REPLY_TAIL = bytes(8) + bytes(4) + _VALUE  # cas, flags, value
_MEMCACHE_NOOP_REPLY = bytes([0x81, 0x0A]) + bytes(10)


def run_loop(
    batches: int, batch: int = BATCH, proto: bool = False, raw: bool = False
) -> int:
    """
    Send ``batches`` rounds of ``batch`` requests and wait for every reply.

    :return: how many requests were answered (checked, so a broken loop
        cannot report a cheap figure).
    """
    from collections.abc import Callable

    from twisted.internet.defer import Deferred

    payload = b"x" * 32
    answered = 0
    send: Callable[[bytes], Deferred[Any]]
    flush: Callable[[], bool]
    if raw:
        send, flush = _raw_pair()
    elif proto:
        from framedclient.testing.memory import connected_pair

        pair = connected_pair()
        pair.flush()
        send = pair.client.request
        flush = pair.flush
    else:
        from framedclient.testing.memory import memory_client

        client, server = memory_client(pool_size=1, request_timeout=30.0)
        server.flush()
        send = client.request
        flush = server.flush

    def count(_: object) -> None:
        nonlocal answered
        answered += 1

    for _ in range(batches):
        pending: list[Deferred[Any]] = [send(payload) for _ in range(batch)]
        flush()
        for d in pending:
            d.addCallback(count)
    if answered != batches * batch:
        raise RuntimeError(f"{answered} of {batches * batch} requests answered")
    return answered


def _raw_pair() -> tuple[Any, Any]:
    # The raw baseline's client wired to the in-memory reference server, as
    # connected_pair wires a FramedProtocol.
    from twisted.internet.task import Clock
    from twisted.test.iosim import FakeAddress

    from framedclient.bench.baselines import RawFC1Protocol
    from framedclient.server import ReferenceServerFactory
    from framedclient.testing.memory import (
        DEFAULT_MAX_ROUNDS,
        MemoryPump,
        _flush_pumps,
        _make_transports,
    )

    clock = Clock()
    client = RawFC1Protocol()
    server = ReferenceServerFactory(clock=clock).buildProtocol(FakeAddress())  # type: ignore[no-untyped-call]
    client_io, server_io = _make_transports(client, server)
    server.makeConnection(server_io)  # type: ignore[no-untyped-call]
    client.makeConnection(client_io)  # type: ignore[no-untyped-call]
    pump = MemoryPump(client, server, client_io, server_io, clock)

    def flush() -> bool:
        return _flush_pumps([pump], clock, DEFAULT_MAX_ROUNDS)

    flush()
    return client.request, flush


def _redis_server_factory() -> Any:
    from twisted.internet.protocol import Factory, Protocol

    class CannedRedis(Protocol):
        # One bulk reply per GET command in what came (commands are never
        # split in memory: each flush delivers whole writes).
        def dataReceived(self, data: bytes) -> None:
            n = data.count(_REDIS_GET)
            if n != data.count(b"*"):
                raise AssertionError(f"not only GETs: {data[:80]!r}")
            self.transport.write(_REDIS_REPLY * n)  # type: ignore[union-attr]

    return Factory.forProtocol(CannedRedis)


def _memcache_server_factory() -> Any:
    from twisted.internet.protocol import Factory, Protocol

    class CannedMemcache(Protocol):
        # A GET (opcode 0) or quiet GETKQ (0x0D) gets a hit with its opaque;
        # a NOOP (0x0A) its empty reply.  Requests arrive whole.
        def dataReceived(self, data: bytes) -> None:
            out = []
            pos = 0
            end = len(data)
            while pos < end:
                opcode = data[pos + 1]
                opaque = data[pos + 12 : pos + 16]
                if opcode == 0x0A:
                    out.append(_MEMCACHE_NOOP_REPLY + opaque + bytes(8))
                    pos += 24
                    continue
                if opcode == 0x0D:  # GETKQ: the key comes back too
                    out.append(
                        b"\x81\x0d\x00%c\x04\x00\x00\x00" % len(_KEY)
                        + (4 + len(_KEY) + len(_VALUE)).to_bytes(4, "big")
                        + opaque
                        + bytes(12)
                        + _KEY
                        + _VALUE
                    )
                elif opcode == 0x00:
                    out.append(_MEMCACHE_REPLY + opaque + _MEMCACHE_REPLY_TAIL)
                else:
                    raise AssertionError(f"not a GET: opcode {opcode}")
                pos += _MEMCACHE_REQUEST
            self.transport.write(b"".join(out))  # type: ignore[union-attr]

    return Factory.forProtocol(CannedMemcache)


def _raw_redis_protocol() -> Any:
    from collections import deque

    from twisted.internet.defer import Deferred
    from twisted.internet.protocol import Protocol

    class RawRedisClient(Protocol):
        # The least a Twisted client does per GET: write the command, queue
        # a Deferred, cut each bulk reply and fire the oldest Deferred.
        def __init__(self) -> None:
            self.waiting: deque[Deferred[bytes]] = deque()
            self.buffer = b""

        def get(self, key: bytes) -> Deferred[bytes]:
            self.transport.write(  # type: ignore[union-attr]
                b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
            )
            d: Deferred[bytes] = Deferred()
            self.waiting.append(d)
            return d

        def dataReceived(self, data: bytes) -> None:
            buf = self.buffer + data if self.buffer else data
            pos = 0
            end = len(buf)
            popleft = self.waiting.popleft
            while pos < end:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                start = eol + 2
                stop = start + int(buf[pos + 1 : eol])
                if stop + 2 > end:
                    break
                popleft().callback(buf[start:stop])
                pos = stop + 2
            self.buffer = buf[pos:]

    return RawRedisClient


def run_codec_loop(
    codec: str, batches: int, batch: int = BATCH, pipeline: bool = False
) -> int:
    """
    :func:`run_loop` through a protocol client: ``batches`` rounds of
    ``batch`` GETs of one key (or one pipeline / ``get_many`` of ``batch``
    GETs per round when ``pipeline``), against a canned in-memory server.

    :return: how many GETs were answered with the value (checked).
    """
    from twisted.internet.defer import Deferred

    from framedclient.client import FramedClient
    from framedclient.testing.memory import MemoryServer

    answered = 0
    if codec == "redis":
        from framedclient.clients.redis import RedisClient
        from framedclient.codecs.redis import RedisCodec

        server = MemoryServer(_redis_server_factory())
        redis = RedisClient(
            FramedClient(
                [server.endpoint()],
                server.clock,
                codec=RedisCodec(),
                pool_size=1,
                max_in_flight=max(batch, 1024),
                request_timeout=30.0,
            )
        )

        def many() -> Deferred[Any]:
            p = redis.pipeline()
            for _ in range(batch):
                p.add("GET", _KEY)
            return p.execute()

        get: Any = redis.get
    elif codec == "memcache":
        from framedclient.clients.memcache import MemcacheClient
        from framedclient.codecs.memcache import MemcacheCodec

        server = MemoryServer(_memcache_server_factory())
        memcache = MemcacheClient(
            FramedClient(
                [server.endpoint()],
                server.clock,
                codec=MemcacheCodec(),
                pool_size=1,
                max_in_flight=max(batch, 1024),
                request_timeout=30.0,
            )
        )
        keys = [_KEY] * batch

        def many() -> Deferred[Any]:
            # One key asked batch times (one hit per GETKQ, all decoded),
            # as the redis|memcache bench's --pipeline does.
            return memcache.get_many(keys).addCallback(
                lambda hits: [hits[_KEY]] * batch
            )

        get = memcache.get
    elif codec == "redis-raw":
        from twisted.internet.protocol import Factory

        server = MemoryServer(_redis_server_factory())
        connecting = server.endpoint().connect(
            Factory.forProtocol(_raw_redis_protocol())
        )
        connected: list[Any] = []
        connecting.addCallback(connected.append)
        server.flush()
        get = connected[0].get

        def many() -> Deferred[Any]:
            raise ValueError("--codec redis-raw has no --pipeline")
    else:
        raise ValueError(f"--codec must be one of {', '.join(CODECS)}, got {codec!r}")
    server.flush()

    def count(reply: object) -> None:
        nonlocal answered
        if reply != _VALUE:
            raise AssertionError(f"wrong reply {reply!r}")
        answered += 1

    def count_all(replies: list[object]) -> None:
        for reply in replies:
            count(reply)

    for _ in range(batches):
        if pipeline:
            d = many()
            server.flush()
            d.addCallback(count_all)
        else:
            pending: list[Deferred[Any]] = [get(_KEY) for _ in range(batch)]
            server.flush()
            for d in pending:
                d.addCallback(count)
    if answered != batches * batch:
        raise RuntimeError(f"{answered} of {batches * batch} GETs answered")
    return answered


def _callgrind_total(
    batches: int,
    batch: int,
    proto: bool,
    codec: str = "fc1",
    pipeline: bool = False,
    raw: bool = False,
) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "framedclient.bench.instructions",
            "--loop",
            str(batches),
            "--batch",
            str(batch),
        ]
        if proto:
            command.append("--proto")
        if raw:
            command.append("--raw")
        if codec != "fc1":
            command += ["--codec", codec]
        if pipeline:
            command.append("--pipeline")
        env = dict(os.environ, PYTHONHASHSEED="0")
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"callgrind run failed:\n{result.stderr[-2000:]}")
        match = re.search(r"^summary:\s+(\d+)", out.read_text(), re.MULTILINE)
        if match is None:
            match = re.search(r"^totals:\s+(\d+)", out.read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError("no totals in the callgrind output")
        return int(match.group(1))


def count_instructions(
    short: int = SHORT,
    long: int = LONG,
    batch: int = BATCH,
    proto: bool = False,
    codec: str = "fc1",
    pipeline: bool = False,
    raw: bool = False,
) -> float:
    """
    Instructions per request (per GET with ``codec``): the difference of
    two callgrind runs.
    """
    low = _callgrind_total(short, batch, proto, codec, pipeline, raw)
    high = _callgrind_total(long, batch, proto, codec, pipeline, raw)
    return (high - low) / ((long - short) * batch)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m framedclient.bench instructions",
        description="CPU instructions per request under valgrind --tool=callgrind",
    )
    parser.add_argument(
        "--loop",
        type=int,
        metavar="BATCHES",
        help="run the loop only (what callgrind runs), without valgrind",
    )
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--short", type=int, default=SHORT)
    parser.add_argument("--long", type=int, default=LONG)
    parser.add_argument(
        "--proto",
        action="store_true",
        help="one FramedProtocol instead of a whole FramedClient (fc1 only)",
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="the raw Twisted baseline client (RawFC1Protocol) instead (fc1 only)",
    )
    parser.add_argument(
        "--codec",
        choices=CODECS,
        default="fc1",
        help="fc1 (the reference server), or GETs through RedisClient or "
        "MemcacheClient against a canned in-memory server",
    )
    parser.add_argument(
        "--pipeline",
        action="store_true",
        help="with --codec redis|memcache: each batch as one Redis pipeline "
        "or one memcached get_many",
    )
    args = parser.parse_args(argv)
    if args.codec == "fc1" and args.pipeline:
        parser.error("--pipeline needs --codec redis or --codec memcache")
    if args.codec == "redis-raw" and args.pipeline:
        parser.error("--codec redis-raw measures single GETs; drop --pipeline")
    if args.codec != "fc1" and args.proto:
        parser.error("--proto measures fc1 only; drop --codec or --proto")
    if args.codec != "fc1" and args.raw:
        parser.error("--raw measures fc1 only; use --codec redis-raw for Redis")
    if args.loop is not None:
        if args.codec == "fc1":
            run_loop(args.loop, args.batch, args.proto, args.raw)
        else:
            run_codec_loop(args.codec, args.loop, args.batch, args.pipeline)
        return 0
    import framedclient

    per_request = count_instructions(
        args.short,
        args.long,
        args.batch,
        args.proto,
        args.codec,
        args.pipeline,
        args.raw,
    )
    layer = "raw" if args.raw else "proto" if args.proto else "framedclient"
    if args.codec != "fc1":
        layer = f"{args.codec}-{'pipeline' if args.pipeline else 'get'}"
    print(
        f"mode={framedclient.compiled} layer={layer} batch={args.batch} "
        f"instructions/request={per_request:.0f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
