"""
``python -m framedclient.bench axfr``: a zone transfer (AXFR) of a
50,000-record zone from NSD, by framedclient's
:class:`~framedclient.clients.dns.DNSClient` and by dnspython, in one run.

NSD (see :mod:`framedclient.bench.nsd`) runs pinned to one CPU; each client
runs in a process of its own pinned to another, one after the other, and
transfers the zone ``--transfers`` times in a row (after one transfer not
counted, which warms the imports and the connection), every record
counted against the zone:

- ``framedclient``: ``async for record in client.zone_transfer(zone)``,
  each record a ``twisted.names.dns.RRHeader``;
- ``dnspython-inbound``: ``dns.query.inbound_xfr`` into a
  ``dns.zone.Zone`` (dnspython's inbound transfer, what a secondary does);
- ``dnspython-xfr``: ``dns.query.xfr``, iterating its messages and their
  records (no zone built).

``python -m framedclient.bench axfr latency`` measures queries instead: how
long each takes while a transfer runs, with the transfer on a connection of
its own (``DNSClient``'s way) and on the queries' connection.

Every figure is a rate (records per second of wall time) and a cost
(records per CPU second of the client process: on a machine busy with
other work the cost is the steadier of the two), and framedclient's ratio
to each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from framedclient.bench.measure import cpu_seconds as _cpu
from framedclient.bench.nsd import RECORDS, ZONE, NsdServer, nsd_program
from framedclient.bench.ratio_table import (
    heading,
    load_average,
    pinned,
    rate_and_ratio_cells,
    row,
)
from framedclient.bench.serverproc import child_setup
from framedclient.bench.subprocess_runs import (
    add_pin_and_json_options,
    best_run,
    cpu_pair,
    run_json_child,
    write_rows,
)

__all__ = ["CLIENTS", "main"]

CLIENTS = ("framedclient", "dnspython-inbound", "dnspython-xfr")


# -- one client run (a child process) ----------------------------------------------


class _Timer:
    """
    Wall and CPU time from :meth:`start` (after the untimed transfer) to
    :meth:`stop` (after the last one).
    """

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), _cpu()

    def stop(self) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, _cpu() - self.cpu


def _run_framedclient(port: int, transfers: int, timer: _Timer) -> list[int]:
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    from framedclient.clients.dns import DNSClient

    counts: list[int] = []

    async def run() -> None:
        client = DNSClient.from_endpoint(reactor, f"tcp:127.0.0.1:{port}", pool_size=1)
        async with client:
            await client.when_ready()
            for i in range(transfers + 1):
                if i == 1:
                    timer.start()
                n = 0
                async for _record in client.zone_transfer(ZONE):
                    n += 1
                counts.append(n)
            timer.stop()

    failures: list[Any] = []
    done = ensureDeferred(run())
    done.addErrback(failures.append)
    done.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    if failures:
        failures[0].raiseException()
    return counts[1:]


def _run_dnspython_inbound(port: int, transfers: int, timer: _Timer) -> list[int]:
    import dns.query
    import dns.zone

    counts = []
    for i in range(transfers + 1):
        if i == 1:
            timer.start()
        zone = dns.zone.Zone(ZONE)
        dns.query.inbound_xfr("127.0.0.1", zone, port=port, lifetime=300)
        counts.append(sum(1 for _ in zone.iterate_rdatas()))
    timer.stop()
    return counts[1:]


def _run_dnspython_xfr(port: int, transfers: int, timer: _Timer) -> list[int]:
    import dns.query

    counts = []
    for i in range(transfers + 1):
        if i == 1:
            timer.start()
        n = 0
        for message in dns.query.xfr("127.0.0.1", ZONE, port=port, lifetime=300):
            for rrset in message.answer:
                n += len(rrset)
        # The closing SOA is counted too: the zone's records, once each.
        counts.append(n - 1)
    timer.stop()
    return counts[1:]


def run_client(kind: str, port: int, transfers: int) -> dict[str, Any]:
    """
    ``transfers`` timed transfers by ``kind`` (after an untimed one).
    """
    runner = {
        "framedclient": _run_framedclient,
        "dnspython-inbound": _run_dnspython_inbound,
        "dnspython-xfr": _run_dnspython_xfr,
    }[kind]
    timer = _Timer()
    counts = runner(port, transfers, timer)
    return {
        "records": sum(counts),
        "counts": counts,
        "seconds": timer.wall,
        "cpu": timer.cpu,
    }


# -- queries during a transfer (``axfr latency``) -----------------------------------


def query_latency(port: int, shared: bool) -> list[float]:
    """
    Milliseconds each query took while one transfer of the zone ran (one
    query at a time, 10 ms apart): on its own connection (``DNSClient``'s
    default), or on the transfer's (``shared``).
    """
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred
    from twisted.internet.task import deferLater

    from framedclient.client import FramedClient
    from framedclient.clients.dns import DNSClient
    from framedclient.codecs.dns_transfer import DNSMessageCodec

    endpoint = f"tcp:127.0.0.1:{port}"
    if shared:
        one = FramedClient.from_endpoint(
            reactor,
            endpoint,
            codec=DNSMessageCodec(),
            pool_size=1,
            request_timeout=300.0,
        )
        client = DNSClient(one, clock=reactor)
    else:
        client = DNSClient.from_endpoint(reactor, endpoint, pool_size=1)
    latencies: list[float] = []

    async def run() -> None:
        async with client:
            await client.when_ready()
            transfer = client.zone_transfer(ZONE)

            async def consume() -> None:
                async for _record in transfer:
                    pass

            done = ensureDeferred(consume())
            while not done.called:
                started = time.perf_counter()
                await client.query("h0." + ZONE, "A")
                latencies.append(1000 * (time.perf_counter() - started))
                await deferLater(reactor, 0.01, lambda: None)
            await done

    failures: list[Any] = []
    d = ensureDeferred(run())
    d.addErrback(failures.append)
    d.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    if failures:
        failures[0].raiseException()
    return latencies


def latency_main(argv: Sequence[str]) -> int:
    """
    ``python -m framedclient.bench axfr latency``: query latency during a
    transfer, transfers on their own connection and on the queries'.
    """
    parser = argparse.ArgumentParser(prog="python -m framedclient.bench axfr latency")
    parser.add_argument("--records", type=int, default=RECORDS)
    args = parser.parse_args(argv)
    program = nsd_program()
    if program is None:
        raise SystemExit("nsd is not installed (apt-get install nsd)")
    lines = [
        f"Query latency while a {args.records:,}-record zone is transferred "
        f"(one query at a time, 10 ms apart); load average {load_average()}",
        "",
        "| transfer on | queries answered during it | median ms | max ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    with tempfile.TemporaryDirectory() as workdir:
        server = NsdServer(program, Path(workdir), args.records)
        server.start()
        try:
            for shared in (False, True):
                command = [
                    sys.executable,
                    "-m",
                    "framedclient.bench.axfr",
                    "latency-client",
                    "--port",
                    str(server.port),
                    *(["--shared"] if shared else []),
                ]
                times = run_json_child(command, cpu=None, timeout=900)
                where = "the queries' connection" if shared else "its own connection"
                lines.append(
                    f"| {where} | {len(times)} | {statistics.median(times):,.1f} "
                    f"| {max(times):,.1f} |"
                )
        finally:
            server.stop()
    print("\n".join(lines))
    return 0


# -- the driver ----------------------------------------------------------------------


def _child(kind: str, port: int, transfers: int, cpu: int | None) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "framedclient.bench.axfr",
        "client",
        kind,
        "--port",
        str(port),
        "--transfers",
        str(transfers),
    ]
    result: dict[str, Any] = run_json_child(command, cpu=cpu, timeout=900)
    return result


def compare(args: argparse.Namespace) -> list[dict[str, Any]]:
    """
    Each client ``args.runs`` times against one NSD; the best run of each
    (the least disturbed by the rest of the machine) is kept.

    :raises RuntimeError: a client counted other than the zone's records.
    """
    program = nsd_program()
    if program is None:
        raise SystemExit(
            "nsd is not installed (apt-get install nsd); the comparison needs "
            "a real authoritative server"
        )
    server_cpu, client_cpu = cpu_pair(args.pin)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as workdir:
        server = NsdServer(program, Path(workdir), args.records)
        server.start(preexec_fn=child_setup(server_cpu))
        try:
            for kind in args.clients:

                def transfer(kind: str = kind) -> dict[str, Any]:
                    result = _child(kind, server.port, args.transfers, client_cpu)
                    if set(result["counts"]) != {args.records}:
                        raise RuntimeError(
                            f"{kind} counted {result['counts']} records, not "
                            f"{args.records} per transfer"
                        )
                    return result

                best = best_run(kind, args.runs, transfer, "records", "records/s")
                assert best is not None
                rows.append({"client": kind, **best})
        finally:
            server.stop()
    return rows


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """
    A Markdown table: each client's rate and cost, and framedclient's
    ratio to it.
    """
    ours = next((r for r in rows if r["client"] == "framedclient"), None)
    lines = [
        *heading(
            f"AXFR of a {args.records:,}-record zone from NSD over loopback TCP, "
            f"{args.transfers} transfers per run, best of {args.runs}; server and "
            f"client {pinned(args.pin)}"
        ),
        "| client | records/s | records per client CPU s | ms per transfer "
        "| framedclient / this (wall) | framedclient / this (CPU) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        rate, per_cpu, ratio, cpu_ratio = rate_and_ratio_cells(r, ours, "records")
        per_transfer = f"{1000 * r['seconds'] / len(r['counts']):,.0f}"
        lines.append(row([r["client"], rate, per_cpu, per_transfer, ratio, cpu_ratio]))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m framedclient.bench axfr",
        description="A zone transfer (AXFR) from NSD by framedclient's DNSClient "
        "and by dnspython, in one run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--clients",
        type=lambda text: [k for k in text.split(",") if k],
        default=list(CLIENTS),
        help=f"which clients, comma-separated, from: {', '.join(CLIENTS)}",
    )
    parser.add_argument("--records", type=int, default=RECORDS)
    parser.add_argument("--transfers", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    add_pin_and_json_options(parser, "NSD and the clients")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["client"]:
        parser = argparse.ArgumentParser(prog="axfr client")
        parser.add_argument("kind", choices=CLIENTS)
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--transfers", type=int, default=3)
        a = parser.parse_args(argv[1:])
        print(json.dumps(run_client(a.kind, a.port, a.transfers)))
        return 0
    if argv[:1] == ["latency-client"]:
        parser = argparse.ArgumentParser(prog="axfr latency-client")
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--shared", action="store_true")
        a = parser.parse_args(argv[1:])
        print(json.dumps(query_latency(a.port, a.shared)))
        return 0
    if argv[:1] == ["latency"]:
        return latency_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = [k for k in args.clients if k not in CLIENTS]
    if unknown:
        parser.error(f"unknown clients {unknown}; choose from {', '.join(CLIENTS)}")
    if args.records < 4 or args.transfers < 1 or args.runs < 1:
        parser.error("--records must be at least 4, --transfers and --runs at least 1")
    rows = compare(args)
    print(render(rows, args))
    write_rows(args.json, {"args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
