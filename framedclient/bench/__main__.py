"""
``python -m framedclient.bench``: load generator and side-by-side comparison
of framedclient with the clients a user would otherwise write.

Examples::

    # the headline comparison (about 3 minutes)
    python -m framedclient.bench --clients framedclient,proto \\
        --compare raw,amp,asyncio --concurrency 1,64,1024 --runs 3

    # how cost grows with requests in flight
    python -m framedclient.bench --clients framedclient,proto --compare raw \\
        --concurrency 64 --runs 1 --scale

    # regenerate docs/benchmarks.md and its plot
    python -m framedclient.bench --docs

    # CPU instructions per request under callgrind, in the running mode
    python -m framedclient.bench instructions

    # the chaos soak (see framedclient.bench.soak)
    python -m framedclient.bench soak --help

    # HTTP req/s through twist framedclient with 1 and 2 --workers
    python -m framedclient.bench gateway --workers 1,2

    # full-size hostile clients: non-reading 16 MB replies, slowloris
    python -m framedclient.bench hostile non-reading
    python -m framedclient.bench hostile slowloris
    # Redis and memcached clients side by side (framedclient.bench.keyvalue)
    python -m framedclient.bench redis --concurrency 50
    python -m framedclient.bench memcache --concurrency 50
    # a stream of 100,000 parts against request/reply of the same bytes;
    # what a lagging stream costs the requests on its connection
    python -m framedclient.bench stream
    python -m framedclient.bench stream --flow-control
    # Redis pub/sub delivery to one subscriber connection, framedclient vs
    # redis.asyncio's PubSub and txredisapi (framedclient.bench.pubsub)
    python -m framedclient.bench pubsub
    # a 3-master Redis Cluster: framedclient, redis-py, coredis, and the
    # cost of cluster routing (framedclient.bench.redis_cluster)
    python -m framedclient.bench redis-cluster --callgrind
    # each pick policy with 50 clients x 20 hosts, one slow and one dead,
    # simulated on the in-memory kit (framedclient.bench.fleetsim)
    python -m framedclient.bench fleet-sim
    # a 50,000-record zone transfer (AXFR) from NSD, against dnspython
    # (framedclient.bench.axfr)
    python -m framedclient.bench axfr

See ``docs/benchmarks.md`` for what every column means.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from framedclient.bench.loadgen import CLIENT_KINDS
from framedclient.bench.runner import (
    DEFAULT_SCALE_INFLIGHT,
    BenchConfig,
    ClientRunFailed,
    run_benchmark,
)

__all__ = ["DOCS_ARGS", "main"]

#: What ``--docs`` runs: the configuration whose numbers docs/benchmarks.md
#: shows.
DOCS_ARGS: tuple[str, ...] = (
    "--clients",
    "framedclient,proto",
    "--compare",
    "raw,amp,asyncio",
    "--concurrency",
    "1,64,1024",
    "--runs",
    "3",
    "--scale",
    "--plot",
    "docs/benchmarks.png",
    "--markdown",
    "docs/benchmarks.md",
)


def _kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in CLIENT_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown client kind(s) {', '.join(unknown)}; "
            f"choose from {', '.join(CLIENT_KINDS)}"
        )
    return kinds


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m framedclient.bench",
        description=(
            "Benchmark framedclient against hand-written Twisted, AMP and asyncio "
            "clients. Each client runs in its own process against a reference server "
            "in another process, on loopback."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--clients",
        type=_kinds,
        default=["framedclient"],
        help="framedclient kinds to measure: framedclient (FramedClient, everything "
        "on), proto (one FramedProtocol per connection)",
    )
    parser.add_argument(
        "--compare",
        type=_kinds,
        default=["raw", "amp", "asyncio"],
        help="baselines measured in the same run; every figure gets a ratio to each "
        "(empty string for none)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_ints,
        default=[1, 64, 1024],
        help="requests in flight per client (closed loops), comma-separated",
    )
    parser.add_argument(
        "--payload",
        type=_positive_int,
        default=64,
        help="request and reply body size in bytes",
    )
    parser.add_argument(
        "--requests",
        type=_positive_int,
        default=None,
        help="measured requests per run (default: about 2 s worth, from the warm-up)",
    )
    parser.add_argument(
        "--connections", type=_positive_int, default=1, help="connections per client"
    )
    parser.add_argument(
        "--runs",
        type=_positive_int,
        default=3,
        help="runs per figure; the table shows the median and min-max",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="also measure "
        + ", ".join(f"{m:,}" for m in DEFAULT_SCALE_INFLIGHT)
        + " requests "
        "in flight on one connection: throughput, memory per pending request, CPU to "
        "fail them all on connection loss",
    )
    parser.add_argument(
        "--gc-threshold",
        type=int,
        metavar="N",
        help="raise the young-generation GC threshold to N in the framedclient "
        "and proto client processes (framedclient.gctune; CPython's default is "
        "700); the baselines keep the default",
    )
    parser.add_argument(
        "--scale-inflight",
        type=_positive_ints,
        default=list(DEFAULT_SCALE_INFLIGHT),
        help=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="write the full report as JSON to FILE ('-' or nothing: stdout, "
        "instead of the table)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help="draw latency CDFs and throughput vs concurrency (matplotlib)",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="FILE.md",
        help="replace the generated block of FILE.md (docs/benchmarks.md) "
        "with the tables",
    )
    parser.add_argument(
        "--docs",
        action="store_true",
        help="regenerate docs/benchmarks.md and docs/benchmarks.png: runs "
        + " ".join(DOCS_ARGS),
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the server and the client to separate CPUs",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=300.0,
        help="seconds one client process may run before it is killed",
    )
    return parser


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM becomes an exception so the runner's cleanup (stopping the
    # servers) runs, as it does for Ctrl-C.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the benchmark the command line describes; print the table (or JSON).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["soak"]:
        # The chaos soak (framedclient.bench.soak) shares the entry point.
        from framedclient.bench.soak import main as soak_main

        return soak_main(argv[1:])
    if argv[:1] == ["instructions"]:
        # Instructions per request under callgrind (compiled vs pure).
        from framedclient.bench.instructions import main as instructions_main

        return instructions_main(argv[1:])
    if argv[:1] == ["hostile"]:
        # Full-size non-reading and slowloris clients against the gateway.
        from framedclient.bench.hostile import main as hostile_main

        return hostile_main(argv[1:])
    if argv[:1] == ["gateway"]:
        # HTTP req/s through twist framedclient --workers N.
        # (framedclient.bench.http_load: named for what it measures, so it
        # is not mistaken for the gateway itself, framedclient.runner.gateway.)
        from framedclient.bench.http_load import main as http_load_main

        return http_load_main(argv[1:])
    if argv[:1] == ["fleet-sim"]:
        # 50 clients x 20 hosts (one slow, one dead) on the in-memory kit.
        from framedclient.bench.fleetsim import main as fleet_main

        return fleet_main(argv[1:])
    if argv[:1] == ["stream"]:
        # A stream of N parts against request/reply of the same bytes, or
        # (--flow-control) what a lagging stream costs its connection.
        from framedclient.bench.stream_rate import main as streaming_main

        return streaming_main(argv[1:])
    if argv[:1] == ["pubsub"]:
        # Redis pub/sub delivery to one subscriber (framedclient.bench.pubsub).
        from framedclient.bench.pubsub import main as pubsub_main

        return pubsub_main(argv[1:])
    if argv[:1] == ["redis-cluster"]:
        # A real 3-master Redis Cluster: framedclient, redis-py, coredis,
        # and the cost of routing (framedclient.bench.redis_cluster).
        from framedclient.bench.redis_cluster import main as cluster_main

        return cluster_main(argv[1:])
    if argv[:1] == ["axfr"]:
        # A 50,000-record zone transfer from NSD, against dnspython.
        from framedclient.bench.axfr import main as axfr_main

        return axfr_main(argv[1:])
    if argv[:1] in (["redis"], ["memcache"]):
        # Real protocols against real servers (framedclient.bench.keyvalue).
        from framedclient.bench.keyvalue import main as keyvalue_main

        return keyvalue_main(argv)
    parser = build_parser()
    # The command recorded in the Markdown is the one to type again.
    command = "python -m framedclient.bench " + shlex.join(
        [a for a in argv if a != "--no-progress"]
    )
    if "--docs" in argv:
        argv = [a for a in argv if a != "--docs"] + list(DOCS_ARGS)
    args = parser.parse_args(argv)
    if args.payload > 16 * 1024 * 1024 - 64:
        parser.error("--payload must fit in a 16 MiB frame")
    if "amp" in args.compare + args.clients and args.payload > 0xFFFF:
        parser.error("AMP values are at most 65,535 bytes; drop amp or lower --payload")

    config = BenchConfig(
        clients=args.clients,
        compare=args.compare,
        concurrency=args.concurrency,
        payload=args.payload,
        requests=args.requests,
        connections=args.connections,
        runs=args.runs,
        scale=args.scale,
        scale_inflight=args.scale_inflight,
        pin=not args.no_pin,
        run_timeout=args.run_timeout,
        gc_threshold=args.gc_threshold,
    )
    signal.signal(signal.SIGTERM, _terminate)
    try:
        report = run_benchmark(config, progress=not args.no_progress)
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    except ClientRunFailed as e:
        print(f"benchmark failed (servers stopped): {e}", file=sys.stderr)
        return 2

    from framedclient.bench.report import markdown_section, text_report, update_markdown

    if args.plot is not None:
        from framedclient.bench.plot import PlotUnavailable, plot_report

        try:
            plot_report(report, args.plot)
        except PlotUnavailable as e:
            print(f"no plot: {e}", file=sys.stderr)
    if args.markdown is not None:
        update_markdown(args.markdown, markdown_section(report, command))
    if args.json == "-":
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        if args.json:
            Path(args.json).write_text(
                json.dumps(report, indent=1) + "\n", encoding="utf-8"
            )
        print(text_report(report))
    return 1 if any(r["failed"] for r in report["results"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
