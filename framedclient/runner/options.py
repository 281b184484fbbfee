"""
Command-line options of ``twist framedclient``.

Every value is checked in :meth:`Options.postOptions`, before the reactor
runs, so a typo costs the operator one line on stderr and exit status 2
(the shell convention for usage errors, as argparse uses), never a traceback
and never a half-started service.  ``twist`` itself would print the whole
``--help`` text and exit 64 for a :class:`~twisted.python.usage.UsageError`;
for a service with this many options that buries the one line that matters,
so :meth:`Options.parseOptions` prints just that line.

Endpoint strings are checked by parsing them with Twisted's own endpoint
parsers against a placeholder reactor: ``twist`` installs the real reactor
only after the plugin's options are parsed (``--reactor`` may choose it), so
importing ``twisted.internet.reactor`` here would break ``--reactor``.
"""

from __future__ import annotations

import math
import sys
import textwrap
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from twisted.python import usage

from framedclient.backoff import BackoffPolicy, parse_backoff
from framedclient.codec import Codec, Matching
from framedclient.runner.codecspec import parse_codec

__all__ = ["DEFAULT_HTTP", "Options", "UsageExit", "usage_exit"]

DEFAULT_HTTP = "tcp:8080:interface=127.0.0.1"

_T = TypeVar("_T")

_LONGDESC = """\
Keep a pool of connections to an upstream framed-protocol server and expose
it over HTTP (POST /v1/request, GET /metrics, /healthz, /debug/state, and a
live status page at /), and optionally as a local framed listener that
multiplexes many local clients onto the pool (--listen).

Without --upstream, the fc1 reference server is started in-process on an
ephemeral loopback port and used as the upstream, so a bare
`twist framedclient` shows something real at http://127.0.0.1:8080/.

ENDPOINT is any Twisted endpoint string: client endpoints for --upstream
(tcp:HOST:PORT, tls:HOST:PORT, unix:PATH, ...), server endpoints for --http
and --listen (tcp:PORT:interface=ADDR, ssl:..., unix:..., systemd:...).

--codec (every key optional; BYTES and N are integers):
  fc1[:max-frame=BYTES]                  the reference protocol (default)
  lines[:delimiter=crlf|lf|nul,max-frame=BYTES]     text lines, in order
  netstring[:max-frame=BYTES]            netstrings, in order
  redis[:max-frame=BYTES]                Redis RESP2, in order (bodies are
                                         RESP commands)
  length:size=1|2|3|4|8,order=big|little,adjust=N,header=BYTES,
         id-offset=N,id-size=1|2|4|8,kind-offset=N,kind-size=1|2|4|8,
         kinds=NAME:VALUE;NAME:VALUE...,max-frame=BYTES
    a length field, then a header with the request ID (and a kind field),
    then the body; e.g. length:size=2,order=little,header=8,id-size=4,
    kind-offset=4 (see docs/gateway.md for the byte diagram)

--backoff:
  grpc                                   gRPC's policy (default)
  grpc:initial=S,multiplier=X,jitter=F,max=S
  full-jitter:base=S,max=S
  constant:S

Durations are in seconds (decimals allowed); 'off' disables the optional
ones.  SIGTERM stops accepting, lets in-flight requests finish for up to
--drain-timeout seconds, then exits with status 0.
"""


class UsageExit(SystemExit):
    """
    Raised (as a :class:`SystemExit` with status 2) after printing a usage
    error, so ``twist`` exits without its traceback or full help text.
    """


def usage_exit(command: str, error: usage.UsageError) -> NoReturn:
    """
    Print ``twist COMMAND: error: MESSAGE`` as one line on stderr and exit
    with status 2.
    """
    message = " ".join(str(error).split())
    sys.stderr.write(
        f"twist {command}: error: {message} (see twist {command} --help)\n"
    )
    sys.stderr.flush()
    raise UsageExit(2)


class _PlaceholderReactor:
    """
    Stands in for the reactor while endpoint strings are parsed for
    validation only; parsing never calls it, and using it is a bug.
    """

    def __getattr__(self, name: str) -> Any:
        # AttributeError, so that interface checks (providedBy) say no.
        raise AttributeError(f"endpoint validation touched reactor.{name}")


def check_client_endpoint(option: str, value: str) -> str:
    """
    :raises usage.UsageError: if ``value`` is not a client endpoint string.
    """
    from twisted.internet.endpoints import clientFromString

    try:
        with warnings.catch_warnings():
            # HostnameEndpoint (tls:) warns that the placeholder is not a
            # full reactor; the real one will be.
            warnings.simplefilter("ignore", DeprecationWarning)
            clientFromString(_PlaceholderReactor(), value)  # type: ignore[no-untyped-call]
    except Exception as error:
        raise usage.UsageError(
            f"--{option} {value!r}: not a client endpoint ({_reason(error)}); "
            f"expected e.g. tcp:HOST:PORT or tls:HOST:PORT"
        ) from None
    return value


def check_server_endpoint(option: str, value: str) -> str:
    """
    :raises usage.UsageError: if ``value`` is not a server endpoint string.
    """
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(_PlaceholderReactor(), value)  # type: ignore[no-untyped-call]
    except Exception as error:
        raise usage.UsageError(
            f"--{option} {value!r}: not a server endpoint ({_reason(error)}); "
            f"expected e.g. tcp:PORT:interface=127.0.0.1"
        ) from None
    return value


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _positive_int(option: str, raw: str, minimum: int = 1) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise usage.UsageError(f"--{option} {raw!r}: expected an integer >= {minimum}")
    return value


def _seconds(option: str, raw: str, optional: bool = False) -> float | None:
    if optional and raw.strip().lower() in ("off", "none", ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        accepted = "a positive number of seconds"
        if optional:
            accepted += " or 'off'"
        raise usage.UsageError(f"--{option} {raw!r}: expected {accepted}")
    return value


def _parsed(option: str, raw: str, parse: Callable[[str], _T]) -> _T:
    try:
        return parse(raw)
    except ValueError as error:
        raise usage.UsageError(f"--{option}: {error}") from None


class Options(usage.Options):
    """
    ``twist framedclient`` options.

    After parsing, the typed values are in the dictionary under the keys of
    :attr:`optParameters` with these types: ``upstream``: ``list[str]``
    (empty: embedded backend); ``codec``: a :class:`Codec` (the spec stays in
    ``codec-spec``); ``backoff``: a :class:`BackoffPolicy`; counts: ``int``;
    durations: ``float`` or ``None``.
    """

    synopsis = "[options]"
    longdesc = _LONGDESC

    optFlags = [
        [
            "fail-fast",
            None,
            "Answer 503 at once when no upstream connection is ready, instead "
            "of waiting for one (up to the request's timeout).",
        ],
    ]

    optParameters = [
        [
            "codec",
            None,
            "fc1",
            "Wire format of the upstream (and of --listen clients): fc1, "
            "lines, netstring, redis, or a length:... layout (see below).",
        ],
        ["pool-size", None, "4", "Connections per upstream endpoint."],
        [
            "max-in-flight",
            None,
            "512",
            "Requests outstanding at once over the whole pool.",
        ],
        [
            "max-pending",
            None,
            "2048",
            "Requests that may wait for an in-flight slot; beyond it requests "
            "are shed at once (HTTP 503 with Retry-After).",
        ],
        [
            "request-timeout",
            None,
            "5",
            "Default deadline of one request, in seconds, queueing included "
            "(HTTP 504 when it passes); a request may ask for another with "
            "?timeout= or X-Timeout.",
        ],
        [
            "acquire-timeout",
            None,
            "off",
            "Seconds a request may wait for an in-flight slot before it is "
            "shed (HTTP 503); 'off': only the request timeout applies.",
        ],
        [
            "connect-timeout",
            None,
            "off",
            "Seconds one connection attempt may take; 'off': the backoff "
            "policy decides (20 s for grpc).",
        ],
        [
            "backoff",
            None,
            "grpc",
            "Reconnect policy (exponential with jitter by default); see below.",
        ],
        [
            "heartbeat",
            None,
            "off",
            "Ping an idle upstream connection after this many seconds (codecs "
            "with pings, like fc1); 'off' disables.",
        ],
        [
            "heartbeat-timeout",
            None,
            "10",
            "Seconds a ping may go unanswered before the connection is "
            "dropped and reconnected.",
        ],
        [
            "read-timeout",
            None,
            "off",
            "Drop a connection that reads nothing for this many seconds while "
            "requests are outstanding; 'off' disables.",
        ],
        [
            "http",
            None,
            DEFAULT_HTTP,
            "Server endpoint of the HTTP gateway and status page.",
        ],
        [
            "listen",
            None,
            None,
            "Server endpoint of the local multiplexing proxy (same codec as the "
            "upstream); off unless given.",
        ],
        [
            "drain-timeout",
            None,
            "10",
            "On SIGTERM, seconds in-flight requests get to finish before the "
            "connections are dropped.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["upstream"] = []

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except usage.UsageError as error:
            usage_exit("framedclient", error)

    def opt_upstream(self, endpoint: str) -> None:
        """
        Client endpoint of the upstream server (tcp:HOST:PORT, tls:HOST:PORT,
        unix:PATH, ...); repeat for several (each gets --pool-size
        connections). Default: an embedded fc1 reference server.
        """
        self["upstream"].append(check_client_endpoint("upstream", endpoint))

    # usage.Options shows a method's docstring verbatim in --help.
    opt_upstream.__doc__ = " ".join((opt_upstream.__doc__ or "").split())

    def getUsage(self, width: int | None = None) -> str:
        """
        The usage text, with :attr:`longdesc`'s paragraphs kept apart
        (``usage.Options`` wraps it into one block).
        """
        longdesc, self.longdesc = self.longdesc, ""
        try:
            text: str = super().getUsage(width)
        finally:
            self.longdesc = longdesc
        paragraphs = [
            # Paragraphs with indented lines are tables: keep them as written.
            p.strip("\n")
            if "\n  " in p
            else textwrap.fill(
                " ".join(p.split()),
                width or 80,
                break_on_hyphens=False,
                break_long_words=False,
            )
            for p in longdesc.split("\n\n")
            if p.strip()
        ]
        return text + "\n" + "\n\n".join(paragraphs) + "\n"

    def postOptions(self) -> None:
        self["codec-spec"] = self["codec"]
        codec: Codec = _parsed("codec", self["codec"], parse_codec)
        self["codec"] = codec
        backoff: BackoffPolicy = _parsed("backoff", self["backoff"], parse_backoff)
        self["backoff"] = backoff
        self["pool-size"] = _positive_int("pool-size", self["pool-size"])
        self["max-in-flight"] = _positive_int("max-in-flight", self["max-in-flight"])
        self["max-pending"] = _positive_int("max-pending", self["max-pending"], 0)
        self["request-timeout"] = _seconds("request-timeout", self["request-timeout"])
        for option in (
            "acquire-timeout",
            "connect-timeout",
            "heartbeat",
            "read-timeout",
        ):
            self[option] = _seconds(option, self[option], optional=True)
        self["heartbeat-timeout"] = _seconds(
            "heartbeat-timeout", self["heartbeat-timeout"]
        )
        self["drain-timeout"] = _seconds("drain-timeout", self["drain-timeout"])
        if self["heartbeat"] is not None and not codec.supports_ping:
            raise usage.UsageError(
                f"--heartbeat: codec {self['codec-spec']!r} has no ping frames; "
                f"use --heartbeat off or a codec with pings (fc1, or length: "
                f"with ping and pong kinds)"
            )
        check_server_endpoint("http", self["http"])
        if self["listen"] is not None:
            check_server_endpoint("listen", self["listen"])
            if codec.matching is not Matching.BY_ID:
                # The proxy tells its clients' replies apart by request ID.
                raise usage.UsageError(
                    f"--listen: codec {self['codec-spec']!r} has no request IDs, "
                    f"so the proxy could not route replies; use fc1 or a length: "
                    f"codec with an id field"
                )
