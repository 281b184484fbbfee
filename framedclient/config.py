"""
Every setting of framedclient, defined once.

Two frozen attrs classes hold them: :class:`ProtocolConfig` (one
connection) and :class:`ClientConfig` (a
:class:`~framedclient.client.FramedClient`: its pool, limiter and deadlines,
plus the per-connection settings it gives each of its connections).  Each
field carries a :class:`Setting` in its attrs metadata (its help text, its
kind, its command-line form), and everything else is derived from that one
definition:

- validation, in the constructors, with errors that name the setting
  (:class:`InvalidSetting`, also a :exc:`ValueError`; a value of the wrong
  type raises :class:`InvalidSettingType`, also a :exc:`TypeError`);
- the keywords of :class:`~framedclient.client.FramedClient` (one per
  :class:`ClientConfig` field, see :func:`resolve_client_config`);
- the options of ``twist framedclient`` (generated in
  ``framedclient.runner.options``), so every setting is reachable from
  the command line and ``--help`` cannot drift;
- the options table in ``docs/gateway.md`` (a test compares it with what the
  options render) and the ``:param:`` lists of the two classes here.

Collaborators that are objects with behaviour rather than values (the
``prepare`` hook, the retry budget, the metrics recorder, endpoint names)
stay plain keyword arguments of :class:`~framedclient.client.FramedClient`.
The codec and the backoff policy are settings: both are immutable values
with a text form on the command line (``--codec``, ``--backoff``).

Why validation is strict about types: ``timeout="5"`` used to fail later,
inside a comparison, far from the typo; and ``pool_size=True`` used to be
accepted as 1.  A bool is never a number here, a string is never a number
or a bool (``wait_for_ready="no"`` is refused, not taken as true), and
``None`` is accepted only where it has a meaning ("off").  The kinds of
values and their checks live in :mod:`framedclient.validation` (re-exported
here), below every module that takes arguments, so the backoff policies,
the connection and the limiter check theirs the same way.
"""

from __future__ import annotations

import difflib
import inspect
import math
import textwrap
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypedDict, TypeVar

import attrs

from framedclient.backoff import BackoffLike, parse_backoff
from framedclient.codecs import Codec, FC1Codec
from framedclient.validation import (
    Count,
    InvalidSetting,
    InvalidSettingType,
    Number,
    Seconds,
    SettingKind,
    Share,
    Switch,
)

__all__ = [
    "BALANCER_NAMES",
    "METADATA_KEY",
    "BalancerChoice",
    "ClientConfig",
    "ClientSettings",
    "Collaborator",
    "Count",
    "HedgeDelay",
    "InvalidSetting",
    "InvalidSettingType",
    "ProtocolConfig",
    "Seconds",
    "Setting",
    "SettingKind",
    "Share",
    "Switch",
    "did_you_mean",
    "documents_settings",
    "resolve_client_config",
    "setting_of",
    "settings_docs",
]

#: The attrs metadata key under which each field keeps its :class:`Setting`.
METADATA_KEY = "framedclient.setting"


# -- kinds of settings (the plain ones are in framedclient.validation) ---------------


@attrs.frozen
class Collaborator(SettingKind):
    """
    An object providing an interface (a codec, a backoff policy), checked by
    the attributes it must have; ``parse`` reads its command-line spec.
    """

    what: str
    needs: tuple[str, ...]
    optional: bool = False
    parser: Callable[[str], object] | None = None
    #: a plain callable is accepted too (a backoff function)
    or_callable: bool = False
    metavar: str = "SPEC"  # type: ignore[misc]
    #: said after the usual message when the value is a string: the
    #: command line's names are not objects in Python
    text_advice: str = ""

    def expects(self, cli: bool) -> str:
        text = f"must be {self.what}"
        if self.optional and not cli:
            text += " or None"
        return text

    def check(self, name: str, value: object) -> None:
        if value is None and self.optional:
            return
        if self.or_callable and callable(value):
            return
        if isinstance(value, type):
            raise InvalidSettingType(
                name,
                value,
                f"{self.expects(False)}: an instance, {value.__name__}(), not the "
                f"class {value.__name__}",
                show_value=False,
            )
        if value is None or any(not hasattr(value, a) for a in self.needs):
            expects = self.expects(False)
            if isinstance(value, str) and self.text_advice:
                expects += f", got {value!r}: {self.text_advice}"
                raise InvalidSettingType(name, value, expects, show_value=False)
            raise InvalidSettingType(name, value, expects)

    def parse(self, text: str) -> object:
        if self.parser is None:
            # The codec's spec parser lives in the runner (an upper layer),
            # which supplies it.
            raise ValueError(f"no parser for {self.what}")
        return self.parser(text)


#: The pick policies known by name; :mod:`framedclient.balance` makes them.
BALANCER_NAMES = ("p2c", "least_loaded", "round_robin", "ketama")


@attrs.frozen
class BalancerChoice(SettingKind):
    """
    A pick policy: one of :data:`BALANCER_NAMES`, or a policy object (with
    ``pick``, or ``pick_upstream``).
    """

    metavar: str = "NAME"  # type: ignore[misc]

    def expects(self, cli: bool) -> str:
        text = f"must be one of {', '.join(BALANCER_NAMES)}"
        return text if cli else text + " or a policy object (pick, pick_upstream)"

    def check(self, name: str, value: object) -> None:
        if isinstance(value, str):
            if value not in BALANCER_NAMES:
                raise InvalidSetting(name, value, self.expects(False))
        elif not any(
            callable(getattr(value, method, None))
            for method in ("pick", "pick_upstream")
        ):
            raise InvalidSettingType(name, value, self.expects(False))

    def show(self, value: object, cli: bool) -> str:
        return value if isinstance(value, str) else repr(value)

    def parse(self, text: str) -> object:
        return text.strip().lower().replace("-", "_")


@attrs.frozen
class HedgeDelay(SettingKind):
    """
    When to hedge: ``None`` (never), a positive number of seconds, or a
    latency percentile of the host, ``"p95"`` (``"p99.9"``: between ``p0``
    and ``p100``, both excluded).
    """

    #: ``None`` is accepted (no hedging)
    optional: bool = True
    metavar: str = "S|pNN"  # type: ignore[misc]

    def expects(self, cli: bool) -> str:
        off = "'off'" if cli else "None"
        return f"must be a positive number of seconds, a percentile ('p95') or {off}"

    def check(self, name: str, value: object) -> None:
        if value is None:
            return
        if isinstance(value, str):
            if percentile_of(value) is None:
                raise InvalidSetting(name, value, self.expects(False))
            return
        Seconds().check(name, value)

    def show(self, value: object, cli: bool) -> str:
        if value is None:
            return "off" if cli else "None"
        return value if isinstance(value, str) else f"{value:g}"

    def parse(self, text: str) -> object:
        text = text.strip().lower()
        if text in ("off", "none", ""):
            return None
        if text.startswith("p"):
            return text
        return float(text)


def percentile_of(spec: str) -> float | None:
    """
    The percentile ``"p95"`` names (95.0), or ``None`` if ``spec`` is not
    one.
    """
    if not spec.startswith("p"):
        return None
    try:
        q = float(spec[1:])
    except ValueError:
        return None
    return q if 0 < q < 100 else None


@attrs.frozen
class Setting:
    """
    What one configuration field means, for people and for the command
    line; kept in the field's metadata under :data:`METADATA_KEY`.

    :ivar help: what the setting does, one or two sentences.
    :ivar kind: how values are checked, parsed and shown.
    :ivar off: for settings that accept ``None``: what ``None`` (``off`` on
        the command line) means.
    :ivar option: the command-line option, without ``--``; by default the
        field name with dashes.
    :ivar cli_help: the help text on the command line when the option reads
        differently from the setting (a flag that inverts it, a spec with
        forms listed in ``--help``).
    :ivar default_text: the default as shown when the default value has no
        text form of its own (a codec object is ``fc1``).
    """

    help: str
    kind: SettingKind
    off: str | None = None
    option: str | None = None
    cli_help: str | None = None
    default_text: str | None = None

    def doc(self) -> str:
        """
        The help text for the library's documentation.
        """
        if self.off is None:
            return self.help
        return f"{self.help} ``None``: {self.off}."

    def command_line_help(self) -> str:
        """
        The help text for ``--help`` and the gateway docs.
        """
        if self.cli_help is not None:
            return self.cli_help
        if self.off is None:
            return self.help
        # The word that stands for None: 'off', or 'auto' where None means
        # "derived from other settings".
        word = getattr(self.kind, "word", "off")
        return f"{self.help} {word!r}: {self.off}."


def setting_of(field: attrs.Attribute[Any]) -> Setting:
    """
    The :class:`Setting` of one field of :class:`ProtocolConfig` or
    :class:`ClientConfig`.
    """
    setting = field.metadata[METADATA_KEY]
    assert isinstance(setting, Setting)
    return setting


def _check(instance: object, field: attrs.Attribute[Any], value: object) -> None:
    setting_of(field).kind.check(field.name, value)


def _field(default: object, setting: Setting) -> Any:
    return attrs.field(
        default=default, validator=_check, metadata={METADATA_KEY: setting}
    )


# -- the settings, each written once ---------------------------------------------------

_CODEC = Collaborator(
    "a codec (matching, max_id, supports_ping, new_framer, encode, decode)",
    ("matching", "max_id", "supports_ping", "new_framer", "encode", "decode"),
    # A user coming from `twist framedclient --codec redis` tries the name.
    text_advice="the codec names are the command line's; in Python pass a "
    "codec object (FC1Codec() from framedclient.codecs, RedisCodec() from "
    "framedclient.codecs.redis, MemcacheCodec() from "
    "framedclient.codecs.memcache, ...), or use RedisClient.from_endpoint "
    "or MemcacheClient.from_endpoint, which speak those protocols' commands",
)
_BACKOFF = Collaborator(
    "a backoff policy (delay, connect_timeout) or a function of the number "
    "of failed attempts returning seconds (Twisted's backoffPolicy())",
    ("delay", "connect_timeout"),
    optional=True,
    parser=parse_backoff,
    or_callable=True,
)


def _codec() -> Any:
    return _field(
        attrs.Factory(FC1Codec),
        Setting(
            "The wire format.",
            _CODEC,
            cli_help="Wire format of the upstream (and of --listen clients): "
            "NAME[:options], one of the codecs listed below (fc1, lines, "
            "netstring, redis, length:..., memcache-binary, dns, and codec "
            "plugins of other packages).",
            default_text="fc1",
        ),
    )


def _request_timeout(default: float | None, scope: str) -> Any:
    return _field(
        default,
        Setting(
            f"Default deadline of one request{scope}, in seconds: from the call "
            "to its outcome, whatever it waits for on the way (RequestTimeout, "
            "or HTTP 504 from the gateway, when it passes); a request may ask "
            "for another.",
            Seconds(optional=True),
            off="no deadline",
        ),
    )


def _max_write_buffer() -> Any:
    return _field(
        8 * 1024 * 1024,
        Setting(
            "Bytes of encoded requests one connection may hold while its "
            "transport is not draining; beyond it new requests on that "
            "connection fail with Overloaded.",
            Count(1, "BYTES"),
        ),
    )


def _write_timeout() -> Any:
    return _field(
        30.0,
        Setting(
            "Seconds a connection's send buffer may stay full (the peer not "
            "reading) before the connection is declared stuck and closed.",
            Seconds(optional=True),
            off="never",
        ),
    )


def _read_timeout() -> Any:
    return _field(
        None,
        Setting(
            "Seconds a connection may read nothing while requests are "
            "outstanding before the peer is declared dead and the connection "
            "closed.",
            Seconds(optional=True),
            off="never",
        ),
    )


#: The client's heartbeat interval for codecs with ping frames: with the
#: default ``heartbeat_timeout`` a silent connection is closed within about
#: 10 s.
DEFAULT_HEARTBEAT = 5.0


def _heartbeat_for_codec(config: Any) -> float | None:
    # A Factory taking the config being built: codec is its first field
    # (validated after the factories run, so it may not be a codec yet).
    return DEFAULT_HEARTBEAT if getattr(config.codec, "supports_ping", False) else None


def _heartbeat_interval(on_by_default: bool) -> Any:
    help = (
        "Ping a connection that has been silent for this many seconds "
        "(codecs with ping frames, like fc1)."
    )
    if not on_by_default:
        return _field(
            None,
            Setting(
                help, Seconds(optional=True), off="no heartbeats", option="heartbeat"
            ),
        )
    return _field(
        attrs.Factory(_heartbeat_for_codec, takes_self=True),
        Setting(
            help + f" By default {DEFAULT_HEARTBEAT:g} s for codecs with ping "
            "frames and off for the others.",
            Seconds(optional=True),
            off="no heartbeats",
            option="heartbeat",
            cli_help=help + f" 'auto' (the default): {DEFAULT_HEARTBEAT:g} s for "
            "codecs with ping frames, off for the others. 'off': no heartbeats.",
            default_text="auto",
        ),
    )


def _heartbeat_timeout() -> Any:
    return _field(
        5.0,
        Setting(
            "Seconds a ping may go unanswered before the connection is "
            "declared dead and closed.",
            Seconds(),
        ),
    )


def _black_hole_after(default: int | None) -> Any:
    return _field(
        default,
        Setting(
            "Close and replace a connection once this many written requests "
            "timed out on it with nothing read from the peer since the first "
            "of them was written, and for at least the "
            "timeout of every request still waiting (a black hole: the peer "
            "went silent without closing).",
            Count(1, optional=True),
            off="never",
        ),
    )


def _abandoned_ttl() -> Any:
    return _field(
        60.0,
        Setting(
            "Seconds the ID of a written request that was cancelled or timed "
            "out stays reserved for its late reply (codecs matching by ID); "
            "servers that answer cancel frames release it sooner.",
            Seconds(optional=True),
            off="until the reply comes or the connection ends",
        ),
    )


_MAX_PENDING_PER_CONNECTION = 100_000


def _fit_id_space(config: Any) -> int:
    """
    The default cap of requests per connection: 100,000, or just below the
    codec's ID space when that is smaller (a 16-bit ID), so a narrow ID
    works with default settings.  A value set explicitly is kept, and
    checked against the ID space like any other.
    """
    max_id = getattr(config.codec, "max_id", None)
    if isinstance(max_id, int) and not isinstance(max_id, bool) and max_id > 1:
        return min(_MAX_PENDING_PER_CONNECTION, max_id - 1)
    return _MAX_PENDING_PER_CONNECTION


def _max_pending_per_connection() -> Any:
    return _field(
        attrs.Factory(_fit_id_space, takes_self=True),
        Setting(
            "Requests (abandoned IDs included) one connection may hold; more "
            "fail with Overloaded. Must be below the codec's ID space; by "
            "default 100000, or the ID space minus one if smaller.",
            Count(1),
            default_text=str(_MAX_PENDING_PER_CONNECTION),
        ),
    )


def _check_codec_fit(
    codec: Codec,
    max_pending_name: str,
    max_pending: int,
    heartbeat_interval: float | None,
) -> None:
    """
    The checks that involve the codec and another setting.
    """
    if max_pending >= codec.max_id:
        raise InvalidSetting(
            max_pending_name,
            max_pending,
            f"must be below the codec's ID space ({codec.max_id}), or IDs "
            f"could not stay unique",
        )
    if heartbeat_interval is not None and not codec.supports_ping:
        raise InvalidSetting(
            "heartbeat_interval",
            heartbeat_interval,
            "is set but the codec has no ping frames; turn heartbeats off or "
            "use a codec with pings (fc1, or a header codec with ping and pong "
            "kinds)",
            show_value=False,
        )


@attrs.frozen(kw_only=True)
class ProtocolConfig:
    """
    The settings of one connection
    (:class:`~framedclient.protocol.FramedProtocol`).  Every bound has a
    default, because nothing may be unbounded.

    ``request_timeout`` means what it means on :class:`ClientConfig`: the
    overall deadline of one request, from the call to its outcome.  A
    request sent straight on a connection simply has no queueing or retries
    to wait through.  A :class:`~framedclient.client.FramedClient` keeps its
    connections' ``request_timeout`` unset and holds each deadline itself.
    """

    codec: Codec = _codec()  # noqa: RUF009 (an attrs field, not a shared default)
    request_timeout: float | None = _request_timeout(None, " sent on this connection")
    max_pending: int = _max_pending_per_connection()
    max_write_buffer: int = _max_write_buffer()
    write_timeout: float | None = _write_timeout()
    read_timeout: float | None = _read_timeout()
    heartbeat_interval: float | None = _heartbeat_interval(False)
    heartbeat_timeout: float = _heartbeat_timeout()
    abandoned_ttl: float | None = _abandoned_ttl()
    black_hole_after: int | None = _black_hole_after(None)
    max_in_flight: int | None = _field(
        None,
        Setting(
            "Requests in flight on this connection beyond which a pool picks "
            "another one (requests sent on it directly are not refused).",
            Count(1, optional=True),
            off="no cap",
        ),
    )

    def __attrs_post_init__(self) -> None:
        _check_codec_fit(
            self.codec, "max_pending", self.max_pending, self.heartbeat_interval
        )


@attrs.frozen(kw_only=True)
class ClientConfig:
    """
    The settings of a :class:`~framedclient.client.FramedClient`, each a
    keyword of its constructor and an option of ``twist framedclient``
    (``pool_size`` is ``--pool-size``).  Change a few with
    :func:`attrs.evolve`.
    """

    codec: Codec = _codec()  # noqa: RUF009 (an attrs field, not a shared default)
    pool_size: int = _field(4, Setting("Connections per upstream endpoint.", Count(1)))
    max_in_flight: int = _field(
        512,
        Setting("Requests outstanding at once over the whole pool.", Count(1)),
    )
    max_pending: int = _field(
        2048,
        Setting(
            "Requests that may wait for an in-flight slot; beyond it requests "
            "are shed at once with Overloaded (HTTP 503 with Retry-After from "
            "the gateway).",
            Count(0),
        ),
    )
    request_timeout: float | None = _request_timeout(5.0, "")
    acquire_timeout: float | None = _field(
        None,
        Setting(
            "Seconds a request may wait for an in-flight slot before it is "
            "shed with Overloaded.",
            Seconds(optional=True),
            off="only the request's deadline applies",
        ),
    )
    connect_timeout: float | None = _field(
        None,
        Setting(
            "Seconds one connection attempt (connect, TLS handshake, prepare "
            "hook) may take.",
            Seconds(optional=True),
            off="the backoff policy decides (at least 20 s for grpc)",
        ),
    )
    backoff: BackoffLike | None = _field(  # noqa: RUF009 (an attrs field)
        None,
        Setting(
            "Reconnect policy.",
            _BACKOFF,
            off="gRPC's (exponential with jitter)",
            cli_help="Reconnect policy (gRPC's, exponential with jitter, by "
            "default); see below.",
            default_text="grpc",
        ),
    )
    heartbeat_interval: float | None = _heartbeat_interval(True)
    heartbeat_timeout: float = _heartbeat_timeout()
    black_hole_after: int | None = _black_hole_after(5)
    read_timeout: float | None = _read_timeout()
    write_timeout: float | None = _write_timeout()
    max_pending_per_connection: int = _max_pending_per_connection()
    max_write_buffer: int = _max_write_buffer()
    max_queued_bytes: int = _field(
        64 * 1024 * 1024,
        Setting(
            "Bytes of request bodies that may wait in the client (for a slot, "
            "a connection or a retry); beyond it new requests are shed at once "
            "with Overloaded, so large bodies cannot turn max_pending into "
            "gigabytes.",
            Count(1, "BYTES"),
        ),
    )
    max_in_flight_per_connection: int | None = _field(
        None,
        Setting(
            "Requests in flight on one connection beyond which the pool picks "
            "another, so that losing one connection fails a bounded share of "
            "the work.",
            Count(1, optional=True, word="auto"),
            off="ceil(2 x max_in_flight / connections), at most the codec's ID "
            "space",
        ),
    )
    failure_accrual: int | None = _field(
        5,
        Setting(
            "Consecutive failures (written requests timed out, connections "
            "lost or found dead) that eject a host: its connections get no "
            "requests until its ejection window ends and a probe request "
            "succeeds.",
            Count(1, optional=True),
            off="hosts are never ejected",
        ),
    )
    ejection_time: float = _field(
        5.0,
        Setting(
            "Seconds of a host's first ejection; each ejection in a row lasts "
            "1.6 times longer (jittered), up to 60 s.",
            Seconds(),
        ),
    )
    max_ejected_share: float = _field(
        0.5,
        Setting(
            "The most hosts ejected at once, as a share of all hosts (rounded "
            "down; never all of them): past it failing hosts stay in use.",
            Share(),
        ),
    )
    latency_decay_time: float = _field(
        2.5,
        Setting(
            "Seconds in which a host's peak-EWMA latency estimate, which p2c "
            "weighs, forgets by a factor e when the host gets no requests: a "
            "slow spell is forgotten within seconds and the host gets a trial "
            "request again (see docs/scaling.md).",
            Seconds(),
        ),
    )
    success_rate_factor: float | None = _field(
        1.9,
        Setting(
            "Eject a host whose success rate over success_rate_window is below "
            "the mean of the hosts' rates less this many standard deviations "
            "(Envoy's success_rate_stdev_factor, 1900 there); error replies, "
            "timeouts and lost requests count as failures.",
            Number(minimum=0.0, inclusive=True, optional=True),
            off="no ejection by success rate (consecutive failures still eject)",
        ),
    )
    success_rate_window: float = _field(
        10.0,
        Setting(
            "Seconds of request outcomes a host's success rate covers.",
            Seconds(),
        ),
    )
    success_rate_min_volume: int = _field(
        2,
        Setting(
            "Requests a host needs within success_rate_window for its success "
            "rate to count: fewer eject nothing and set no norm. Higher waits "
            "for that many requests to a host before its failures can eject "
            "it: at 1 request a second per host, seconds after a client first "
            "saw it fail (see docs/scaling.md).",
            Count(1),
        ),
    )
    success_rate_min_hosts: int = _field(
        5,
        Setting(
            "Hosts with success_rate_min_volume needed before any host is "
            "judged by success rate (fewer say nothing about what is normal).",
            Count(1),
        ),
    )
    abandoned_ttl: float | None = _abandoned_ttl()
    wait_for_ready: bool = _field(
        True,
        Setting(
            "When no connection is ready, wait for one (up to the request's "
            "deadline) instead of failing at once with Unavailable.",
            Switch(),
            option="fail-fast",
            cli_help="Answer at once (Unavailable; HTTP 503) when no upstream "
            "connection is ready, instead of waiting for one (up to the "
            "request's timeout).",
            default_text="off",
        ),
    )
    balancer: Any = _field(  # noqa: RUF009 (an attrs field)
        "p2c",
        Setting(
            "Which connection takes each request: p2c (two at random, the one "
            "with the lower peak-EWMA latency x load wins), least_loaded, "
            "round_robin, or ketama (consistent hashing of the request's key "
            "onto upstreams, as libketama and twemproxy place keys).",
            BalancerChoice(),
        ),
    )
    hedge_after: float | str | None = _field(
        None,
        Setting(
            "Send a second copy of an idempotent request to another upstream "
            "when the first has not answered after this many seconds, or after "
            "the host's latency percentile ('p95'); the first answer wins, the "
            "other copy is cancelled, and a budget (10 % of requests) bounds "
            "the extra load.",
            HedgeDelay(),
            off="no hedging",
        ),
    )
    tracing: bool = _field(
        True,
        Setting(
            "Make each request an OpenTelemetry span when opentelemetry-api is "
            "installed and a tracer provider is set (nothing is imported or "
            "done otherwise).",
            Switch(),
            option="no-tracing",
            cli_help="Make no OpenTelemetry spans, even with opentelemetry-api "
            "installed.",
            default_text="off",
        ),
    )

    max_connection_age: float | None = _field(
        None,
        Setting(
            "Seconds a connection may serve before it is replaced (jittered by "
            "10 % either way): a new one connects at once, resolving its host "
            "name again, while the old one finishes its requests and closes. "
            "Use it behind L4 load balancers or when hosts join under one DNS "
            "name, so old connections do not pin the load forever.",
            Seconds(optional=True),
            off="connections live until they fail",
        ),
    )
    retire_timeout: float | None = _field(
        30.0,
        Setting(
            "Seconds a retired connection (its host left the host set, or "
            "max_connection_age replaced it) may take to finish its in-flight "
            "requests before it is closed without waiting.",
            Seconds(optional=True),
            off="wait for the requests' own deadlines",
        ),
    )
    dns_refresh_min: float = _field(
        5.0,
        Setting(
            "Fewest seconds between two DNS lookups of a srv: or dns: upstream "
            "(a TTL of 0 is read as this), and the first delay before asking "
            "again after a failed lookup.",
            Seconds(),
        ),
    )
    dns_refresh_max: float = _field(
        300.0,
        Setting(
            "Most seconds between two DNS lookups of a srv: or dns: upstream, "
            "whatever the TTL (and the longest delay after failed ones).",
            Seconds(),
        ),
    )

    def __attrs_post_init__(self) -> None:
        if self.dns_refresh_min > self.dns_refresh_max:
            raise InvalidSetting(
                "dns_refresh_min",
                self.dns_refresh_min,
                f"must not be above dns_refresh_max ({self.dns_refresh_max:g})",
            )
        _check_codec_fit(
            self.codec,
            "max_pending_per_connection",
            self.max_pending_per_connection,
            self.heartbeat_interval,
        )

    def in_flight_per_connection(self, connections: int) -> int:
        """
        The in-flight cap of each of ``connections`` connections:
        ``max_in_flight_per_connection``, or by default twice their fair
        share of ``max_in_flight``, within the codec's ID space.
        """
        cap = self.max_in_flight_per_connection
        if cap is None:
            cap = math.ceil(2 * self.max_in_flight / max(1, connections))
        return max(1, min(cap, self.codec.max_id - 1, self.max_pending_per_connection))

    def protocol_config(self) -> ProtocolConfig:
        """
        The settings each of the client's connections gets.

        ``request_timeout`` stays unset there: the client holds each
        request's deadline itself, across queueing and retries; so does
        the in-flight cap (``max_in_flight``), which its pool sets as the
        number of connections changes (see :meth:`in_flight_per_connection`).
        """
        return ProtocolConfig(
            black_hole_after=self.black_hole_after,
            max_in_flight=None,
            codec=self.codec,
            request_timeout=None,
            max_pending=self.max_pending_per_connection,
            max_write_buffer=self.max_write_buffer,
            write_timeout=self.write_timeout,
            read_timeout=self.read_timeout,
            heartbeat_interval=self.heartbeat_interval,
            heartbeat_timeout=self.heartbeat_timeout,
            abandoned_ttl=self.abandoned_ttl,
        )


class ClientSettings(TypedDict, total=False):
    """
    The keywords of :class:`~framedclient.client.FramedClient` that set
    :class:`ClientConfig` fields, for type checkers.  Names and types only;
    a test keeps them equal to the fields.
    """

    codec: Codec
    pool_size: int
    max_in_flight: int
    max_pending: int
    request_timeout: float | None
    acquire_timeout: float | None
    connect_timeout: float | None
    backoff: BackoffLike | None
    heartbeat_interval: float | None
    heartbeat_timeout: float
    black_hole_after: int | None
    read_timeout: float | None
    write_timeout: float | None
    max_pending_per_connection: int
    max_write_buffer: int
    max_queued_bytes: int
    max_in_flight_per_connection: int | None
    failure_accrual: int | None
    ejection_time: float
    max_ejected_share: float
    latency_decay_time: float
    success_rate_factor: float | None
    success_rate_window: float
    success_rate_min_volume: int
    success_rate_min_hosts: int
    abandoned_ttl: float | None
    wait_for_ready: bool
    balancer: Any
    hedge_after: float | str | None
    tracing: bool
    max_connection_age: float | None
    retire_timeout: float | None
    dns_refresh_min: float
    dns_refresh_max: float


def did_you_mean(word: str, names: Iterable[str], quote: str = "{!r}") -> str:
    """
    ``"; did you mean 'pool_size'?"`` for the name closest to a mistyped
    ``word``, or ``""``: a typo's message then says what was meant.

    :param quote: how the suggestion is written (``"--{}"`` for options).
    """
    close = difflib.get_close_matches(word, list(names), n=1)
    return f"; did you mean {quote.format(close[0])}?" if close else ""


def resolve_client_config(
    config: ClientConfig | None, settings: Mapping[str, object]
) -> ClientConfig:
    """
    The :class:`ClientConfig` of a ``FramedClient(..., config=...,
    **settings)`` call.

    :raises TypeError: for a keyword that is no setting (naming it, and the
        closest setting), or for ``config`` given together with settings.
    :raises InvalidSetting: for a value a setting cannot take.
    """
    names = attrs.fields_dict(ClientConfig)
    for key in settings:
        if key not in names:
            hint = did_you_mean(key, names)
            raise TypeError(
                f"FramedClient got an unexpected keyword argument {key!r}{hint} "
                f"(settings are the fields of ClientConfig)"
            )
    if config is None:
        return ClientConfig(**settings)  # type: ignore[arg-type]
    if settings:
        raise TypeError(
            f"FramedClient got config= and setting keywords "
            f"({', '.join(sorted(settings))}); pass one or the other, e.g. "
            f"config=attrs.evolve(config, {next(iter(settings))}=...)"
        )
    if not isinstance(config, ClientConfig):
        raise TypeError(f"config must be a ClientConfig, got {config!r}")
    return config


def _document(cls: type) -> None:
    """
    Append a ``:param:`` line per field to ``cls``'s docstring, from the
    fields' settings.
    """
    lines = [(cls.__doc__ or "").rstrip(), ""]
    for field in attrs.fields(cls):
        setting = setting_of(field)
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            shown = setting.default_text or "a new one"
        else:
            shown = setting.kind.show(default, cli=False)
        lines.append(f"    :param {field.name}: {setting.doc()} Default: {shown}.")
    cls.__doc__ = "\n".join(lines) + "\n"


_document(ProtocolConfig)
_document(ClientConfig)


# -- the settings, published where users look for them ---------------------------


class _Default:
    """
    A default shown in a signature by its text (``codec=fc1``): a default
    made fresh for each client has no value to show.
    """

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _default_text(field: attrs.Attribute[Any]) -> str:
    setting = setting_of(field)
    if isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
        return setting.default_text or "a new one"
    return setting.kind.show(field.default, cli=False)


def settings_docs() -> list[tuple[str, str, str, str]]:
    """
    ``(name, type, default, help)`` for each :class:`ClientConfig` field, in
    definition order: what the docstrings, the signatures and the settings
    table of the documentation show.
    """
    # The types as written in ClientSettings (attrs.resolve_types() may
    # have replaced the fields' own text with the objects).
    written = {
        name: getattr(hint, "__forward_arg__", hint)
        for name, hint in ClientSettings.__annotations__.items()
    }
    return [
        (
            field.name,
            str(written[field.name]),
            _default_text(field),
            setting_of(field).doc(),
        )
        for field in attrs.fields(ClientConfig)
    ]


_F = TypeVar("_F", bound=Callable[..., Any])


def documents_settings(func: _F) -> _F:
    """
    Publish every :class:`ClientConfig` setting on ``func``, a callable that
    takes them through ``**settings`` (``FramedClient.__init__``,
    ``from_endpoint``): its signature lists each as a keyword with its
    default, and its docstring gets a "name (type, default X): help" line
    per setting.

    Why: the settings arrive through ``**`` (one definition, here, for
    the client, the command line and the docs), so without this ``help()``,
    IDE tooltips and the API reference would show none of them.  Type
    checkers see them through ``Unpack[ClientSettings]``.

    A ``**`` parameter typed with :class:`ClientSettings` alone is replaced
    by the settings; any other (``**options`` that also take collaborators)
    stays, after them.
    """
    signature = inspect.signature(func)
    # The types themselves, not their text (this module's annotations are
    # strings): help() shows "pool_size: int = 4".
    types = typing.get_type_hints(ClientConfig)
    kept = []
    var_keyword = None
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = parameter
        else:
            kept.append(parameter)
    if var_keyword is None:
        raise TypeError(f"{func.__qualname__} takes no **settings to document")
    taken = {parameter.name for parameter in kept}
    for field in attrs.fields(ClientConfig):
        if field.name in taken:
            continue
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = _Default(_default_text(field))
        kept.append(
            inspect.Parameter(
                field.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=types[field.name],
            )
        )
    if "Unpack[ClientSettings]" not in str(var_keyword.annotation):
        kept.append(var_keyword)
    func.__signature__ = signature.replace(parameters=kept)  # type: ignore[attr-defined]
    lines = [
        inspect.cleandoc(func.__doc__ or ""),
        "",
        *textwrap.wrap(
            "Settings, each a keyword (the fields of "
            ":class:`~framedclient.config.ClientConfig`; ``twist framedclient`` "
            "takes each as an option, ``pool_size`` as ``--pool-size``):",
            76,
        ),
        "",
    ]
    for name, kind, default, help in settings_docs():
        if name in taken:  # declared by func itself, with its own default
            continue
        lines += textwrap.wrap(
            f":param {name}: ({kind}, default {default}) {help}",
            76,
            subsequent_indent="    ",
            break_on_hyphens=False,
        )
    func.__doc__ = "\n".join(lines) + "\n"
    return func
