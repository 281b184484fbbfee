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

import os
import re
import sys
import textwrap
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import attrs
from twisted.python import usage

from framedclient.codecs import Codec, Matching
from framedclient.config import (
    ClientConfig,
    Collaborator,
    Count,
    InvalidSetting,
    Seconds,
    Setting,
    SettingKind,
    Switch,
    did_you_mean,
    setting_of,
)
from framedclient.runner.codecspec import codec_help, parse_codec
from framedclient.runner.replies import DEFAULT_MAX_REPLY_BYTES, DEFAULT_WRITE_DEADLINE
from framedclient.runner.streaming import (
    DEFAULT_KEEPALIVE,
    DEFAULT_STALL_TIMEOUT,
    DEFAULT_STREAM_BUFFER,
)

__all__ = [
    "DEFAULT_HTTP",
    "ConfigOption",
    "Options",
    "UsageExit",
    "config_options",
    "options_table",
    "usage_exit",
    "version_exit",
    "with_suggestion",
]

DEFAULT_HTTP = "tcp:8080:interface=127.0.0.1"

#: How the upstream strings of a Redis Cluster and a Redis Sentinel begin
#: (:mod:`framedclient.clients.cluster_endpoints`,
#: :mod:`framedclient.clients.sentinel`; not imported here, to keep option
#: parsing light).
CLUSTER_SCHEME = "redis-cluster:"
SENTINEL_SCHEMES = ("redis-sentinel:", "redis-sentinel+tls:")

#: Where ``--redis-password`` and ``--sentinel-password`` are read from
#: when not given: a password in an environment variable stays out of
#: ``ps`` and shell history.
PASSWORD_ENVIRONMENT = {
    "redis-password": "FRAMEDCLIENT_REDIS_PASSWORD",
    "sentinel-password": "FRAMEDCLIENT_SENTINEL_PASSWORD",
}

#: The explanation ``--help`` opens with, before the options.
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
Durations are in seconds (decimals allowed); 'off' disables the optional
ones.  SIGTERM stops accepting, lets in-flight requests finish for up to
--drain-timeout seconds, then exits with status 0.
"""

#: What follows the options in ``--help-all``: the spec languages.
_FORMS = """\
{codecs}

--backoff:
  grpc                                   gRPC's policy (default)
  grpc:initial=S,multiplier=X,jitter=F,max=S
  full-jitter:base=S,max=S
  constant:S
"""

#: The options by what an operator sets them for, in the order ``--help``
#: shows them: the upstream first, logging last.  An option missing here
#: (a new setting) is shown under "Other options", so none is ever hidden.
OPTION_GROUPS: list[tuple[str, list[str]]] = [
    (
        "Upstream and codec",
        [
            "upstream",
            "codec",
            "redis-password",
            "sentinel-password",
            "pool-size",
            "balancer",
            "backoff",
            "connect-timeout",
            "heartbeat",
            "heartbeat-timeout",
            "max-connection-age",
            "retire-timeout",
            "dns-refresh-min",
            "dns-refresh-max",
        ],
    ),
    (
        "Requests and limits",
        [
            "request-timeout",
            "max-in-flight",
            "max-pending",
            "fail-fast",
            "acquire-timeout",
            "hedge-after",
            "max-in-flight-per-connection",
            "max-pending-per-connection",
            "max-write-buffer",
            "max-queued-bytes",
            "write-timeout",
            "read-timeout",
            "abandoned-ttl",
        ],
    ),
    (
        "Health",
        [
            "black-hole-after",
            "failure-accrual",
            "ejection-time",
            "max-ejected-share",
            "latency-decay-time",
            "success-rate-factor",
            "success-rate-window",
            "success-rate-min-volume",
            "success-rate-min-hosts",
        ],
    ),
    (
        "HTTP gateway, proxy and processes",
        [
            "http",
            "listen",
            "workers",
            "drain-timeout",
            "http-max-connections",
            "http-header-timeout",
            "http-body-timeout",
            "http-reply-budget",
            "http-write-timeout",
            "http-stream-pool-size",
            "http-stream-buffer",
            "http-stream-stall-timeout",
            "http-sse-keepalive",
        ],
    ),
    ("Logging, tracing and help", ["no-tracing", "version", "help", "help-all"]),
]

#: The options plain ``--help`` shows: what most runs set.  The rest are in
#: ``--help-all`` and docs/gateway.md, as ``curl --help`` and
#: ``curl --help all`` split them.
EVERYDAY_OPTIONS = frozenset(
    {
        "upstream",
        "codec",
        "pool-size",
        "request-timeout",
        "max-in-flight",
        "fail-fast",
        "http",
        "listen",
        "workers",
        "drain-timeout",
        "no-tracing",
        "version",
        "help",
        "help-all",
    }
)

_LOGGING_NOTE = (
    "Logs go to stdout: text on a terminal, JSON lines otherwise; twist's own "
    "--log-format, --log-level and --log-file (before 'framedclient') change "
    "that."
)


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


def with_suggestion(error: usage.UsageError, names: Sequence[str]) -> usage.UsageError:
    """
    ``error`` with the closest of ``names`` (options, without ``--``) named
    when it is getopt's "option --uptream not recognized": the operator sees
    the fix, not only the typo.
    """
    match = re.fullmatch(r"option --(\S+) not recognized", str(error))
    if match is None:
        return error
    hint = did_you_mean(match.group(1), names, quote="--{}")
    return usage.UsageError(f"{error}{hint}")


def version_exit() -> NoReturn:
    """
    Print framedclient's version, then the Twisted and Python it runs on, and
    exit with status 0.  ``usage.Options`` would
    print Twisted's version alone, which says nothing about this package.
    """
    import platform

    import twisted
    from framedclient import compiled
    from framedclient._version import __version__

    print(
        f"framedclient {__version__} (Twisted {twisted.__version__}, "
        f"Python {platform.python_version()}, {compiled.describe()})"
    )
    sys.stdout.flush()
    raise SystemExit(0)


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
    from framedclient._endpoints import client_from_string
    from framedclient.clients.sentinel import parse_sentinel_string
    from framedclient.discovery import parse_discovery, split_weight

    try:
        if parse_discovery(value) is not None:
            return value  # srv: or dns:, well formed
        if parse_sentinel_string(value) is not None:
            return value  # redis-sentinel:, well formed
        if value.startswith(CLUSTER_SCHEME):
            from framedclient.clients.cluster_endpoints import cluster_seeds

            cluster_seeds(value)
            return value  # redis-cluster:, well formed
        endpoint, _ = split_weight(value)  # the host's weight, if any
    except ValueError as error:
        raise usage.UsageError(f"--{option} {error}") from None
    try:
        with warnings.catch_warnings():
            # HostnameEndpoint (tls:) warns that the placeholder is not a
            # full reactor; the real one will be.
            warnings.simplefilter("ignore", DeprecationWarning)
            client_from_string(_PlaceholderReactor(), endpoint)
    except ImportError as error:  # the TLS extra is missing
        raise usage.UsageError(f"--{option} {error}") from None
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


# -- options generated from ClientConfig --------------------------------------------

#: Parsers of settings whose text form belongs to the runner: the codec spec
#: language lives in :mod:`framedclient.runner.codecspec`, above the config
#: layer.
_PARSERS: dict[str, Callable[[str], object]] = {"codec": parse_codec}


@attrs.frozen
class ConfigOption:
    """
    The command-line form of one :class:`~framedclient.config.ClientConfig`
    field, derived from its :class:`~framedclient.config.Setting`.

    :ivar field: the field name (``pool_size``).
    :ivar option: the option name without ``--`` (``pool-size``).
    :ivar flag: for a bool setting: the value the flag sets (the option is a
        flag with no argument); ``None`` for options that take a value.
    :ivar default: the default as written on the command line (``None`` for
        flags).
    """

    field: str
    option: str
    setting: Setting
    flag: bool | None
    default: str | None

    @property
    def help(self) -> str:
        return self.setting.command_line_help()

    def parse(self, raw: str) -> object:
        """
        The value ``raw`` stands for (the range is checked by
        :class:`ClientConfig`).

        :raises usage.UsageError: if ``raw`` is not of the setting's kind.
        """
        kind = self.setting.kind
        parse = _PARSERS.get(self.field, kind.parse)
        try:
            return parse(raw)
        except ValueError as error:
            if isinstance(kind, Collaborator):
                # Spec parsers say precisely what is wrong.
                raise usage.UsageError(f"--{self.option}: {error}") from None
            raise usage.UsageError(
                f"--{self.option} {raw!r}: {kind.expects(cli=True)}"
            ) from None


def config_options() -> list[ConfigOption]:
    """
    One :class:`ConfigOption` per :class:`ClientConfig` field, in field
    order: every setting is reachable from ``twist framedclient``.
    """
    options = []
    for field in attrs.fields(ClientConfig):
        setting = setting_of(field)
        option = setting.option or field.name.replace("_", "-")
        if isinstance(setting.kind, Switch):
            options.append(
                ConfigOption(field.name, option, setting, not field.default, None)
            )
            continue
        if setting.default_text is not None:
            default = setting.default_text
        else:
            default = setting.kind.show(field.default, cli=True)
        options.append(ConfigOption(field.name, option, setting, None, default))
    return options


_CONFIG_OPTIONS = config_options()

#: Settings whose default the config computes from other settings: passed
#: to ClientConfig only when given on the command line.
_DERIVED_DEFAULTS = frozenset(
    field.name
    for field in attrs.fields(ClientConfig)
    if isinstance(field.default, attrs.Factory)  # type: ignore[arg-type]
    and getattr(field.default, "takes_self", False)
)

#: The runner's own options (not client settings): name, metavar, default,
#: help.
_RUNNER_PARAMETERS: list[tuple[str, str, str | None, str]] = [
    (
        "redis-password",
        "PASSWORD",
        None,
        "With --codec redis: the Redis servers' password (requirepass), sent "
        "as AUTH on each new connection: the one server, the master a "
        "redis-sentinel: upstream names, or every node of a redis-cluster: "
        "one. Read from FRAMEDCLIENT_REDIS_PASSWORD when not given (which "
        "keeps it out of ps). Never shown in logs, status or errors.",
    ),
    (
        "sentinel-password",
        "PASSWORD",
        None,
        "With a redis-sentinel: upstream: the sentinels' own password (their "
        "requirepass, not the master's), sent as AUTH before each question. "
        "Read from FRAMEDCLIENT_SENTINEL_PASSWORD when not given. Never "
        "shown in logs, status or errors.",
    ),
    (
        "http",
        "ENDPOINT",
        DEFAULT_HTTP,
        "Server endpoint of the HTTP gateway and status page.",
    ),
    (
        "listen",
        "ENDPOINT",
        None,
        "Server endpoint of the local multiplexing proxy (same codec as the "
        "upstream); off unless given.",
    ),
    (
        "http-max-connections",
        "N",
        "auto",
        "Open HTTP connections at most; at the limit a new connection closes "
        "the oldest one that has not sent a complete request. 'auto': the "
        "soft RLIMIT_NOFILE minus two per upstream connection minus 64.",
    ),
    (
        "http-header-timeout",
        "S",
        "10",
        "Seconds an HTTP client gets to send a request's line and headers, "
        "from connecting (or from the first byte of a later request); bytes "
        "arriving do not extend it. 'off' disables it.",
    ),
    (
        "http-body-timeout",
        "S",
        "60",
        "Seconds an HTTP client gets to send a request body after its "
        "headers; bytes arriving do not extend it. 'off' disables it.",
    ),
    (
        "http-reply-budget",
        "BYTES",
        str(DEFAULT_MAX_REPLY_BYTES),
        "Bytes of replies the gateway may hold for HTTP clients at once (each "
        "written out a chunk at a time as the client reads); a reply beyond "
        "it is refused with 503 reply_overloaded.",
    ),
    (
        "http-write-timeout",
        "S",
        str(int(DEFAULT_WRITE_DEADLINE)),
        "Seconds an HTTP client may leave its reply unread (the connection "
        "not draining) before it is disconnected and the reply's bytes freed.",
    ),
    (
        "http-stream-pool-size",
        "N",
        "2",
        "Connections per upstream endpoint kept for POST /v1/stream, apart "
        "from the request pool, so that a stream whose HTTP client reads "
        "slowly (which stops its connection's reading) never delays "
        "/v1/request. 'shared': streams use the request pool.",
    ),
    (
        "http-stream-buffer",
        "BYTES",
        str(DEFAULT_STREAM_BUFFER),
        "Bytes the gateway buffers for one POST /v1/stream or GET "
        "/v1/subscribe client that reads slower than they arrive: a stream "
        "then stops reading upstream; a subscriber past it is disconnected.",
    ),
    (
        "http-stream-stall-timeout",
        "S",
        f"{DEFAULT_STALL_TIMEOUT:g}",
        "Seconds a /v1/stream or /v1/subscribe client may read nothing (its "
        "connection not draining) before it is disconnected, its stream "
        "cancelled and its bytes freed.",
    ),
    (
        "http-sse-keepalive",
        "S",
        f"{DEFAULT_KEEPALIVE:g}",
        "Seconds between keep-alive comments on a /v1/subscribe "
        "(Server-Sent Events) response, so idle proxies keep it open.",
    ),
    (
        "workers",
        "N",
        "1",
        "Processes that serve the same --http (and --listen) socket, each "
        "with its own upstream pool, under a supervisor that restarts them; "
        "/metrics and /v1/stats add them up. 1: a single process. tcp: and "
        "tcp6: endpoints only.",
    ),
    (
        "drain-timeout",
        "S",
        "10",
        "On SIGTERM, seconds in-flight requests get to finish before the "
        "connections are dropped.",
    ),
]

_UPSTREAM_HELP = (
    "Client endpoint of the upstream server (tcp:HOST:PORT, tls:HOST:PORT, "
    "unix:PATH, ...), or hosts found through DNS and followed as they change: "
    "srv:_SERVICE._PROTO.NAME (SRV records, with priority and weight) or "
    "dns:NAME:PORT (every A/AAAA address), either with @NAMESERVER[:PORT] to "
    "ask that server (srv+tls:/dns+tls: for TLS); with --codec redis, the "
    "master Redis Sentinel names, followed through failovers: "
    "redis-sentinel:HOST:PORT[,HOST:PORT...]/SERVICE, or a Redis Cluster, "
    "each command sent to the master of its key's slot: "
    "redis-cluster:HOST:PORT[,HOST:PORT...] (either alone); repeat for "
    "several (each "
    "host gets --pool-size connections; :weight=N gives a host N times as "
    "many). Default: an embedded fc1 reference server."
)


def options_table() -> str:
    """
    The Markdown table of every ``twist framedclient`` option, as
    ``docs/gateway.md`` shows it (a test checks that it does).
    """

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    upstream = f"| `--upstream ENDPOINT` | embedded server | {cell(_UPSTREAM_HELP)} |"
    rows = {"upstream": upstream}
    for o in _CONFIG_OPTIONS:
        if o.flag is not None:
            rows[o.option] = f"| `--{o.option}` | off | {cell(o.help)} |"
        else:
            metavar = o.setting.kind.metavar
            rows[o.option] = (
                f"| `--{o.option} {metavar}` | `{o.default}` | {cell(o.help)} |"
            )
    for name, metavar, default, help in _RUNNER_PARAMETERS:
        shown = "off" if default is None else f"`{default}`"
        rows[name] = f"| `--{name} {metavar}` | {shown} | {cell(help)} |"
    # In --help's order: the upstream first.
    order = [n for _, members in OPTION_GROUPS for n in members if n in rows]
    order += [n for n in rows if n not in order]
    return (
        "\n".join(
            ["| option | default | meaning |", "| --- | --- | --- |"]
            + [rows[n] for n in order]
        )
        + "\n"
    )


class Options(usage.Options):
    """
    ``twist framedclient`` options: one per
    :class:`~framedclient.config.ClientConfig` setting (generated), plus the
    runner's own (``--upstream``, ``--http``, ``--listen``,
    ``--drain-timeout``).

    After parsing, ``self["config"]`` is the
    :class:`~framedclient.config.ClientConfig` to build the client from, and
    each option's key holds its typed value: ``upstream``: ``list[str]``
    (empty: embedded backend); ``codec``: a :class:`Codec` (the spec stays in
    ``codec-spec``); ``backoff``: a :class:`BackoffPolicy` or ``None``
    (gRPC's); counts: ``int``; durations: ``float`` or ``None``.
    """

    synopsis = "[options]"
    longdesc = _LONGDESC

    optFlags = [[o.option, None, o.help] for o in _CONFIG_OPTIONS if o.flag is not None]

    optParameters = [
        [o.option, None, o.default, o.help] for o in _CONFIG_OPTIONS if o.flag is None
    ] + [[name, None, default, help] for name, _, default, help in _RUNNER_PARAMETERS]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["upstream"] = []

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        # What a --workers N supervisor starts its workers with.
        self["argv"] = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except usage.UsageError as error:
            usage_exit("framedclient", with_suggestion(error, self._names()))

    def opt_version(self) -> NoReturn:
        """
        Print framedclient's version (and Twisted's and Python's) and exit.
        """
        version_exit()

    def opt_upstream(self, endpoint: str) -> None:
        self["upstream"].append(check_client_endpoint("upstream", endpoint))

    # usage.Options shows a method's docstring in --help.
    opt_upstream.__doc__ = _UPSTREAM_HELP

    def opt_help(self) -> NoReturn:
        """
        Print the everyday options and exit (--help-all: every option).
        """
        self._help(complete=False)

    def opt_help_all(self) -> NoReturn:
        """
        Print every option, the codec and backoff forms, and exit.
        """
        self._help(complete=True)

    def _help(self, complete: bool) -> NoReturn:
        self.complete_help = complete
        print(self.__str__())
        sys.stdout.flush()
        raise SystemExit(0)

    #: Whether :meth:`getUsage` lists every option (``--help-all``) or the
    #: everyday ones (``--help``).
    complete_help = False

    def getUsage(self, width: int | None = None) -> str:
        """
        The explanation, then the options grouped by purpose (everyday ones
        only unless :attr:`complete_help`), then the codec list: an operator
        reads what the program is before forty options, and finds
        ``--upstream`` first rather than near the bottom of an alphabetical
        list.
        """
        width = width or 80
        sections = [_paragraphs(self.longdesc, width)]
        for title, names in self._groups():
            shown = [n for n in names if self.complete_help or n in EVERYDAY_OPTIONS]
            if shown:
                lines = [f"{title}:"]
                lines.extend(self._describe(name, width) for name in shown)
                sections.append("\n".join(lines))
        forms = _FORMS.replace("{codecs}", codec_help(width - 2))
        if not self.complete_help:
            forms = forms.split("\n\n--backoff:")[0]
        sections.append(_paragraphs(forms, width))
        sections.append(_paragraphs(_LOGGING_NOTE, width))
        if self.complete_help:
            pointer = "docs/gateway.md#options has the same options as a table."
        else:
            total = len(self._names())
            pointer = (
                f"These are the everyday options; `twist framedclient "
                f"--help-all` lists all {total}, with the --backoff forms "
                f"(docs/gateway.md#options has them as a table)."
            )
        sections.append(_paragraphs(pointer, width))
        # A blank line after twist's "Usage: ..." synopsis.
        return "\n" + "\n\n".join(sections) + "\n"

    def _names(self) -> list[str]:
        return [o.rstrip("=") for o in self.longOpt]

    def _groups(self) -> list[tuple[str, list[str]]]:
        names = self._names()
        grouped = {n for _, members in OPTION_GROUPS for n in members}
        groups = [
            (title, [n for n in members if n in names])
            for title, members in OPTION_GROUPS
        ]
        other = sorted(n for n in names if n not in grouped)
        if other:
            groups.append(("Other options", other))
        return groups

    def _describe(self, name: str, width: int) -> str:
        takes_value = f"{name}=" in self.longOpt
        head = f"  --{name}"
        if takes_value:
            head += f"={_METAVARS.get(name, 'VALUE')}"
        doc = " ".join((self.docs.get(name) or "").split())
        default = self.defaults.get(name)
        if takes_value and default is not None:
            doc += f" [default: {default}]"
        column = 34
        body = textwrap.wrap(
            doc,
            max(width - column, 30),
            break_on_hyphens=False,
            break_long_words=False,
        )
        if len(head) + 2 > column:
            first = [head]
        else:
            first = [head.ljust(column) + (body.pop(0) if body else "")]
        return "\n".join(first + [" " * column + line for line in body])

    def postOptions(self) -> None:
        self["codec-spec"] = self["codec"]
        self["backoff-spec"] = self["backoff"]
        values: dict[str, object] = {}
        raws: dict[str, str] = {}
        for o in _CONFIG_OPTIONS:
            if o.flag is not None:
                values[o.field] = o.flag if self[o.option] else not o.flag
                continue
            raw = self[o.option]
            if raw is o.default and o.field in _DERIVED_DEFAULTS:
                # Not given: the config derives it (from the codec's ID
                # space); the same number typed out is checked as given.
                continue
            raws[o.field] = raw
            if o.default == "auto" == raw.strip().lower():
                # Asked for by name: the config derives it (heartbeats: on
                # for codecs with ping frames).
                continue
            self[o.option] = values[o.field] = o.parse(raw)
        try:
            config = self["config"] = ClientConfig(**values)  # type: ignore[arg-type]
        except InvalidSetting as error:
            option = next(o for o in _CONFIG_OPTIONS if o.field == error.setting)
            raise usage.UsageError(
                f"--{option.option} {raws.get(error.setting)!r}: "
                f"{_command_line_reason(option, error.reason)}"
            ) from None
        for o in _CONFIG_OPTIONS:
            if o.field not in values and o.flag is None:
                self[o.option] = getattr(config, o.field)
        for name in (
            "drain-timeout",
            "http-write-timeout",
            "http-stream-stall-timeout",
            "http-sse-keepalive",
        ):
            self[name] = _seconds(name, self[name])
        for name in ("http-reply-budget", "http-stream-buffer"):
            self[name] = _bytes(name, self[name])
        for name in ("http-header-timeout", "http-body-timeout"):
            self[name] = _optional_seconds(name, self[name])
        self._check_redis_upstreams()
        self["http-max-connections"] = _max_connections(self["http-max-connections"])
        self["http-stream-pool-size"] = _stream_pool_size(self["http-stream-pool-size"])
        self["workers"] = _workers(self["workers"])
        check_server_endpoint("http", self["http"])
        if self["listen"] is not None:
            check_server_endpoint("listen", self["listen"])
        if self["workers"] > 1:
            for name in ("http", "listen"):
                _check_shareable(name, self[name])
        if self["listen"] is not None:
            codec: Codec = self["codec"]
            if codec.matching is not Matching.BY_ID:
                # The proxy tells its clients' replies apart by request ID.
                raise usage.UsageError(
                    f"--listen: codec {self['codec-spec']!r} has no request IDs, "
                    f"so the proxy could not route replies; use fc1 or a length: "
                    f"codec with an id field"
                )
            if getattr(codec, "declared", False):
                # Its replies are messages and it reads only replies: the
                # proxy would have to decode its clients' requests too.
                raise usage.UsageError(
                    f"--listen: codec {self['codec-spec']!r} declares header "
                    f"fields, which the proxy does not forward; use fc1 or a "
                    f"length: codec"
                )

    def _check_redis_upstreams(self) -> None:
        """
        The Redis upstream kinds and passwords: a ``redis-cluster:`` or
        ``redis-sentinel:`` upstream stands alone and speaks RESP, and a
        password is for an upstream that takes it.  Passwords not given
        are read from :data:`PASSWORD_ENVIRONMENT`.
        """
        from framedclient.codecs.redis import RedisCodec

        upstreams: list[str] = self["upstream"]
        kinds = [
            u for u in upstreams if u.startswith((CLUSTER_SCHEME, *SENTINEL_SCHEMES))
        ]
        redis = isinstance(self["codec"], RedisCodec)
        sentinel = any(u.startswith(SENTINEL_SCHEMES) for u in upstreams)
        for name, variable in PASSWORD_ENVIRONMENT.items():
            # Read only where it applies: one environment may serve
            # several programs.
            applies = sentinel if name == "sentinel-password" else redis
            if self[name] is None and applies and os.environ.get(variable):
                self[name] = os.environ[variable]
            if self[name] is not None and not self[name]:
                raise usage.UsageError(f"--{name}: the password is empty")
        if kinds and len(upstreams) > 1:
            scheme = kinds[0].split(":", 1)[0]
            raise usage.UsageError(
                f"--upstream {scheme}:... stands alone (it finds its own "
                f"servers); give it as the only --upstream"
            )
        if kinds and not redis:
            scheme = kinds[0].split(":", 1)[0]
            raise usage.UsageError(
                f"--upstream {scheme}:... speaks Redis: add --codec redis "
                f"(the HTTP bodies are then RESP commands)"
            )
        if self["redis-password"] is not None and not redis:
            raise usage.UsageError(
                "--redis-password is sent as Redis AUTH: add --codec redis"
            )
        if self["sentinel-password"] is not None and not sentinel:
            raise usage.UsageError(
                "--sentinel-password is for the sentinels of a "
                "redis-sentinel:HOST:PORT[,HOST:PORT...]/SERVICE upstream; give "
                "one, or leave the option out"
            )


#: The placeholder each option's value is shown with in ``--help``.
_METAVARS: dict[str, str] = {
    "upstream": "ENDPOINT",
    **{o.option: o.setting.kind.metavar for o in _CONFIG_OPTIONS if o.flag is None},
    **{name: metavar for name, metavar, _, _ in _RUNNER_PARAMETERS},
}


def _paragraphs(text: str, width: int) -> str:
    """
    ``text`` with each paragraph filled to ``width``; paragraphs with
    indented lines are tables and stay as written.
    """
    return "\n\n".join(
        p.strip("\n")
        if "\n  " in p
        else textwrap.fill(
            " ".join(p.split()),
            width,
            break_on_hyphens=False,
            break_long_words=False,
        )
        for p in text.split("\n\n")
        if p.strip()
    )


def _command_line_reason(option: ConfigOption, reason: str) -> str:
    """
    ``reason`` (:class:`ClientConfig`'s, in Python's words) as the command
    line says it: the word its user types for ``None`` (``off``, ``auto``)
    instead of ``None``.  Reasons that involve other settings stay as they
    are.
    """
    kind = option.setting.kind
    if reason == kind.expects(cli=False) or reason.endswith(" or None"):
        return kind.expects(cli=True)
    return reason


def _parsed(option: str, raw: str, kind: SettingKind) -> object:
    # A gateway option read and checked like a setting of the same kind.
    try:
        value = kind.parse(raw)
        kind.check(option, value)
    except ValueError:
        raise usage.UsageError(
            f"--{option} {raw!r}: {kind.expects(cli=True)}"
        ) from None
    return value


def _seconds(option: str, raw: str) -> float:
    value = _parsed(option, raw, Seconds())
    assert isinstance(value, float)
    return value


def _optional_seconds(option: str, raw: str) -> float | None:
    value = _parsed(option, raw, Seconds(optional=True))
    assert value is None or isinstance(value, float)
    return value


def _bytes(option: str, raw: str) -> int:
    value = _parsed(option, raw, Count(1, "BYTES"))
    assert isinstance(value, int)
    return value


def _max_connections(raw: str) -> int | None:
    """
    ``None`` for ``auto`` (derived from ``RLIMIT_NOFILE`` by the service,
    which knows the upstream connections), else the positive count.
    """
    if raw.strip().lower() == "auto":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise usage.UsageError(
            f"--http-max-connections {raw!r}: must be a positive whole number or 'auto'"
        )
    return value


def _stream_pool_size(raw: str) -> int | None:
    """
    ``None`` for ``shared`` (streams use the request pool), else the
    positive count.
    """
    if raw.strip().lower() == "shared":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise usage.UsageError(
            f"--http-stream-pool-size {raw!r}: must be a positive whole number "
            f"of connections per upstream, or 'shared' (streams use the "
            f"request pool)"
        )
    return value


#: The most ``--workers``: more processes than this is a typo, not a
#: machine.
MAX_WORKERS = 256


def _workers(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_WORKERS:
        raise usage.UsageError(
            f"--workers {raw!r}: must be a whole number from 1 to {MAX_WORKERS} "
            f"(1: a single process)"
        )
    return value


def _check_shareable(option: str, description: str | None) -> None:
    """
    :raises usage.UsageError: if ``--workers`` cannot share the listening
        socket of ``description``: only TCP sockets are shared (a worker
        that stopped would remove a ``unix:`` socket's file from under the
        others; ``ssl:`` and ``systemd:`` are not adopted by Twisted).
    """
    if description is None:
        return
    kind = description.split(":", 1)[0].strip().lower()
    if kind not in ("tcp", "tcp6"):
        raise usage.UsageError(
            f"--{option} {description!r}: --workers above 1 shares tcp: and "
            f"tcp6: listening sockets only; use one of those (put TLS in "
            f"front) or --workers 1"
        )
