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

Examples::

    python -m framedclient.bench instructions            # the current mode
    FRAMEDCLIENT_PURE=1 python -m framedclient.bench instructions
    python -m framedclient.bench instructions --loop 120  # the loop alone
    python -m framedclient.bench instructions --raw       # raw Twisted
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

__all__ = ["count_instructions", "main", "run_loop"]

#: Batches of the short and the long run; their difference is measured.
SHORT, LONG = 20, 120
BATCH = 64


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


def _callgrind_total(batches: int, batch: int, proto: bool, raw: bool = False) -> int:
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
    raw: bool = False,
) -> float:
    """
    Instructions per request: the difference of two callgrind runs.
    """
    low = _callgrind_total(short, batch, proto, raw)
    high = _callgrind_total(long, batch, proto, raw)
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
        help="one FramedProtocol instead of a whole FramedClient",
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="the raw Twisted baseline client (RawFC1Protocol) instead",
    )
    args = parser.parse_args(argv)
    if args.loop is not None:
        run_loop(args.loop, args.batch, args.proto, args.raw)
        return 0
    import framedclient

    per_request = count_instructions(
        args.short, args.long, args.batch, args.proto, args.raw
    )
    layer = "raw" if args.raw else "proto" if args.proto else "framedclient"
    print(
        f"mode={framedclient.compiled} layer={layer} batch={args.batch} "
        f"instructions/request={per_request:.0f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
