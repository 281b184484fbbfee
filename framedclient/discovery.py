"""
Where the hosts are: host sources, which tell a
:class:`~framedclient.client.FramedClient` its current set of hosts while it
runs.

A :class:`Host` is one place to connect to (a name for logs, an address, an
endpoint), with the SRV ``weight`` and ``priority`` it was given.  A host
source hands the client a whole new list each time it learns one
(:meth:`HostSource.start`'s ``update``); the client works out who joined and
who left (:mod:`framedclient.membership`).  Three sources:

- :class:`StaticHosts`: a fixed list (endpoint strings or objects).
- :class:`AddressHosts` (``dns:NAME:PORT``): one host per A/AAAA address of
  ``NAME``, asked again when the answer's TTL runs out.
- :class:`ServiceHosts` (``srv:_SERVICE._PROTO.NAME``): one host per DNS SRV
  record, with its priority and weight, asked again likewise.  Consul,
  Kubernetes headless services and CoreDNS all serve SRV records.

Both DNS sources ask through ``twisted.names`` (the system's resolvers from
``/etc/resolv.conf``, or the name servers after an ``@``:
``srv:_fc._tcp.example.com@10.0.0.53:53``).  Why a ``dns:`` spelling rather
than re-resolving every ``tcp:NAME:PORT``: a ``tcp:`` endpoint is Twisted's
own (one connection that tries the name's addresses in turn, re-resolved at
each connect), and it keeps meaning exactly that; ``dns:`` makes each address
a host of its own, which is what spreading load over a DNS-announced fleet
needs.

What is pure and what is not: the refresh schedule (:class:`RefreshPolicy`)
and turning DNS answers into hosts (:func:`hosts_from_srv`,
:func:`hosts_from_addresses`) do no I/O and are tested as such; the sources
only ask the resolver and keep one timer.

Why a failed or empty answer keeps the hosts already known: a DNS outage
(or a zone briefly emptied during a redeploy) must not take down a client
whose connections are healthy.  Such an answer is retried sooner (from
``dns_refresh_min``, doubling up to ``dns_refresh_max``), and every delay is
jittered (±10 %), so a fleet of clients that started together does not ask
its DNS servers in lockstep.
"""

from __future__ import annotations

import ipaddress
import random
import re
import socket
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = [
    "AddressHosts",
    "AddressQuery",
    "Host",
    "HostSource",
    "RefreshPolicy",
    "ServiceHosts",
    "ServiceQuery",
    "StaticHosts",
    "TLSEndpoints",
    "hosts_from_addresses",
    "hosts_from_srv",
    "parse_discovery",
    "split_weight",
]

_log = Logger()

#: DNS record types (``twisted.names.dns``), without importing it at import
#: time: most clients never use discovery.
_A = 1
_AAAA = 28
_SRV = 33

#: The seconds a query is retried after before it fails (``twisted.names``
#: retries on each timeout): 1 + 3 + 5 = 9 s at most.
QUERY_TIMEOUT = (1, 3, 5)

MakeEndpoint = Callable[[str, int], IStreamClientEndpoint]


@attrs.frozen
class Host:
    """
    One host: where to connect and how much of the load it should take.

    :ivar name: the host's name in logs, ``debug_state()`` and connection
        names (``target:port`` for SRV, ``name:port`` for ``dns:``, the
        endpoint string otherwise).
    :ivar address: what the host is, with ``name``: two hosts with the same
        name and address are the same host, so a new list that still holds
        it keeps its connections.
    :ivar endpoint: where its connections connect.
    :ivar weight: its share of the load relative to its peers (SRV weight);
        the client gives it connections in proportion (see
        :mod:`framedclient.membership`).
    :ivar priority: lower is preferred (SRV priority): hosts of a higher
        priority are used only while no host of a lower one is reachable.
    """

    name: str
    address: str
    endpoint: IStreamClientEndpoint = attrs.field(eq=False, repr=False)
    weight: int = 1
    priority: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.address)


class HostSource(Protocol):
    """
    Tells its owner the current set of hosts, now and whenever it changes.
    """

    #: What it watches, for logs and ``debug_state()`` (``srv:...``).
    description: str

    def start(self, update: Callable[[list[Host]], None]) -> None:
        """
        Begin: call ``update`` with the whole list of hosts each time one is
        known (the same list may come again).  Never with an empty list:
        a source that finds nothing keeps the hosts it last gave.
        """

    def stop(self) -> None:
        """
        No more updates; cancel timers and queries.
        """

    def refresh(self) -> None:
        """
        A hint that the hosts may have changed (a connection was recycled):
        ask again now unless the last answer is younger than the minimum
        refresh interval.
        """

    def debug_state(self) -> dict[str, Any]:
        """
        A JSON-able picture: what is watched, the last error, when the next
        refresh is due.
        """


class StaticHosts:
    """
    A fixed list of hosts (what endpoint strings and objects give).

    :param absolute_weights: see :attr:`AddressHosts.absolute_weights`.
    """

    def __init__(
        self,
        hosts: Sequence[Host],
        description: str = "static",
        absolute_weights: bool = False,
    ) -> None:
        self.hosts = list(hosts)
        self.description = description
        self.absolute_weights = absolute_weights

    def start(self, update: Callable[[list[Host]], None]) -> None:
        if self.hosts:
            update(list(self.hosts))

    def stop(self) -> None:
        pass

    def refresh(self) -> None:
        pass

    def debug_state(self) -> dict[str, Any]:
        return {"source": self.description, "hosts": len(self.hosts)}


# -- parsing ``srv:`` and ``dns:`` -----------------------------------------------------


@attrs.frozen
class ServiceQuery:
    """
    ``srv:_SERVICE._PROTO.NAME[@SERVER[:PORT],...]``, or ``srv+tls:`` for
    TLS connections (``srv+tls:NAME[:trustRoots=DIR][@SERVER...]``).

    :ivar name: the SRV name asked (``_fc._tcp.example.com``).
    :ivar servers: the name servers to ask, ``()`` for the system's.
    :ivar tls: connect with TLS, verifying each server's certificate
        against its SRV target's name.
    :ivar trust_roots: a directory of PEM CA certificates to trust instead
        of the platform's (``None``: the platform's).
    """

    name: str
    servers: tuple[tuple[str, int], ...] = ()
    tls: bool = False
    trust_roots: str | None = None

    def __str__(self) -> str:
        return (
            ("srv+tls:" if self.tls else "srv:")
            + self.name
            + _tls_text(self.trust_roots)
            + _servers_text(self.servers)
        )


@attrs.frozen
class AddressQuery:
    """
    ``dns:NAME:PORT[:weight=N][@SERVER[:PORT],...]``: every A/AAAA address
    of ``NAME`` is a host, at ``port``, of weight ``N`` (1 by default,
    relative to the client's other hosts, as ``tcp:...:weight=N``);
    ``dns+tls:`` connects with TLS, verifying the certificates against
    ``NAME``.
    """

    name: str
    port: int
    servers: tuple[tuple[str, int], ...] = ()
    tls: bool = False
    trust_roots: str | None = None
    weight: int | None = None

    def __str__(self) -> str:
        return (
            ("dns+tls:" if self.tls else "dns:")
            + f"{self.name}:{self.port}"
            + ("" if self.weight is None else f":weight={self.weight}")
            + _tls_text(self.trust_roots)
            + _servers_text(self.servers)
        )


def _tls_text(trust_roots: str | None) -> str:
    return "" if trust_roots is None else f":trustRoots={trust_roots}"


def _options(
    parts: list[str], tls: bool, address: bool, description: str
) -> tuple[list[str], str | None, int | None]:
    """
    ``parts`` less the trailing ``KEY=VALUE`` options, the trust roots and
    the weight they name.
    """
    trust_roots = None
    weight = None
    while parts and "=" in parts[-1]:
        option = parts.pop()
        key, _, value = option.partition("=")
        if key == "weight" and address:
            if weight is not None or not value.isdigit() or int(value) < 1:
                got = "weight= twice" if weight is not None else repr(value)
                raise ValueError(
                    f"{description!r}: weight= takes one whole number >= 1 (the "
                    f"share of the connections of each address relative to "
                    f"weight 1), got {got}"
                )
            weight = int(value)
            continue
        if key == "weight":
            raise ValueError(
                f"{description!r}: an SRV record carries its host's weight; "
                f"weight= is for dns: and fixed endpoints"
            )
        if not tls or key != "trustRoots" or not value:
            raise ValueError(
                f"{description!r}: unknown option {option!r}; "
                f"srv+tls: and dns+tls: take trustRoots=DIRECTORY, dns: and "
                f"dns+tls: weight=N"
            )
        trust_roots = value
    return parts, trust_roots, weight


def _servers_text(servers: tuple[tuple[str, int], ...]) -> str:
    if not servers:
        return ""
    return "@" + ",".join(_host_port(h, p) for h, p in servers)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _port(text: str, what: str, description: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(
            f"{description!r}: {what} must be a port number (1-65535), got {text!r}"
        )
    return int(text)


def _parse_servers(text: str, description: str) -> tuple[tuple[str, int], ...]:
    servers = []
    for item in text.split(","):
        item = item.strip()
        port = 53
        if item.startswith("["):  # [v6]:port
            host, _, rest = item[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(
                        f"{description!r}: name server {item!r} should be "
                        f"[ADDRESS]:PORT"
                    )
                port = _port(rest[1:], "a name server's port", description)
        elif item.count(":") == 1:
            host, _, port_text = item.partition(":")
            port = _port(port_text, "a name server's port", description)
        else:
            host = item
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"{description!r}: a name server after '@' must be an IP "
                f"address (with an optional :PORT), got {item!r}"
            ) from None
        servers.append((host, port))
    return tuple(servers)


def _check_name(name: str, description: str) -> str:
    name = name.rstrip(".")
    if not name or any(not label for label in name.split(".")) or " " in name:
        raise ValueError(f"{description!r}: {name!r} is not a DNS name")
    return name


def parse_discovery(description: str) -> ServiceQuery | AddressQuery | None:
    """
    The query an endpoint string asks for, or ``None`` when it is no
    discovery string (an ordinary Twisted endpoint).

    :raises ValueError: a ``srv:``/``dns:`` string that is malformed; the
        message says what the right form is.
    """
    scheme, colon, rest = description.partition(":")
    scheme = scheme.strip().lower()
    if not colon or scheme not in ("srv", "dns", "srv+tls", "dns+tls"):
        return None
    tls = scheme.endswith("+tls")
    rest, at, servers_text = rest.partition("@")
    servers = _parse_servers(servers_text, description) if at else ()
    parts, trust_roots, weight = _options(
        rest.strip().split(":"), tls, scheme.startswith("dns"), description
    )
    rest = ":".join(parts)
    if scheme.startswith("srv"):
        name = _check_name(rest.strip(), description)
        first = name.split(".")
        if (
            len(first) < 3
            or not first[0].startswith("_")
            or not first[1].startswith("_")
        ):
            raise ValueError(
                f"{description!r}: expected srv:_SERVICE._PROTO.NAME (e.g. "
                f"srv:_fc._tcp.example.com), optionally @NAMESERVER[:PORT]"
            )
        return ServiceQuery(name, servers, tls, trust_roots)
    name, colon, port_text = rest.strip().rpartition(":")
    if not colon:
        raise ValueError(
            f"{description!r}: expected dns:NAME:PORT (e.g. dns:db.example.com:9000), "
            f"optionally :weight=N and @NAMESERVER[:PORT]"
        )
    return AddressQuery(
        _check_name(name, description),
        _port(port_text, "the port", description),
        servers,
        tls,
        trust_roots,
        weight,
    )


# -- the pure part: answers to hosts, and when to ask again ---------------------------


def _address_of(record: Any) -> str | None:
    if record.type == _A:
        return socket.inet_ntop(socket.AF_INET, record.payload.address)
    if record.type == _AAAA:
        return socket.inet_ntop(socket.AF_INET6, record.payload.address)
    return None


def _name_of(dns_name: Any) -> str:
    raw = dns_name.name
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
    return text.rstrip(".").lower()


def addresses_in(records: Sequence[Any]) -> dict[str, list[tuple[str, int]]]:
    """
    The A/AAAA records among ``records`` (``twisted.names`` ``RRHeader``),
    as ``{name: [(address, ttl), ...]}``, IPv4 first.
    """
    found: dict[str, list[tuple[str, int]]] = {}
    for record in records:
        address = _address_of(record)
        if address is not None:
            found.setdefault(_name_of(record.name), []).append((address, record.ttl))
    for entries in found.values():
        entries.sort(key=lambda e: (":" in e[0], e[0]))
    return found


def hosts_from_addresses(
    name: str,
    port: int,
    addresses: Sequence[tuple[str, int]],
    make_endpoint: MakeEndpoint,
    weight: int = 1,
) -> tuple[list[Host], float | None]:
    """
    One host per address of ``name`` (``dns:``), each of ``weight``, and
    the smallest TTL.
    """
    hosts = []
    ttls: list[int] = []
    seen: set[str] = set()
    make_endpoint = _for_name(make_endpoint, name)
    for address, ttl in addresses:
        ttls.append(ttl)
        if address in seen:
            continue
        seen.add(address)
        hosts.append(
            Host(
                f"{name}:{port}",
                _host_port(address, port),
                make_endpoint(address, port),
                weight=weight,
            )
        )
    return hosts, (min(ttls) if ttls else None)


def srv_records(answers: Sequence[Any]) -> list[tuple[str, int, int, int, int]]:
    """
    The SRV records among ``answers``, as ``(target, port, priority,
    weight, ttl)``.  RFC 2782's "service decidedly not available" (one
    record with target ``.``) gives none.
    """
    records = []
    for record in answers:
        if record.type != _SRV:
            continue
        srv = record.payload
        target = _name_of(srv.target)
        if not target:
            continue
        records.append((target, srv.port, srv.priority, srv.weight, record.ttl))
    return records


def hosts_from_srv(
    records: Sequence[tuple[str, int, int, int, int]],
    addresses: dict[str, list[tuple[str, int]]],
    make_endpoint: MakeEndpoint,
) -> tuple[list[Host], float | None, list[str]]:
    """
    One host per address of each SRV record's target (IPv4 first), each
    with the record's priority and weight; the smallest TTL of the records
    and addresses used; and the targets left out for want of an address.

    Why every address, each with the record's weight (as Envoy's DNS
    clusters do): a target name with several addresses is several servers
    (a load balancer's pool, a Kubernetes service name), and connecting to
    the first alone would leave the others idle.
    """
    hosts = []
    ttls: list[int] = []
    missing = []
    for target, port, priority, weight, ttl in records:
        known = addresses.get(target)
        if not known:
            missing.append(target)
            continue
        ttls.append(ttl)
        seen: set[str] = set()
        make = _for_name(make_endpoint, target)
        for address, address_ttl in known:
            ttls.append(address_ttl)
            if address in seen:
                continue
            seen.add(address)
            hosts.append(
                Host(
                    f"{target}:{port}",
                    _host_port(address, port),
                    make(address, port),
                    weight=weight,
                    priority=priority,
                )
            )
    return hosts, (min(ttls) if ttls else None), missing


def _positive(instance: object, field: attrs.Attribute[float], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(
            f"{field.name} must be a positive number of seconds, got {value!r}"
        )


@attrs.frozen
class RefreshPolicy:
    """
    When to ask DNS again: at the answer's TTL, kept within
    ``[minimum, maximum]``; after a failure (or an empty answer), from
    ``minimum`` doubling up to ``maximum``.  Every delay is jittered by
    ±10 % so that clients do not ask in lockstep.

    :param random: ``() -> float`` in ``[0, 1)``; injectable for tests.
    """

    minimum: float = attrs.field(validator=_positive)
    maximum: float = attrs.field(validator=_positive)
    random: Callable[[], float] = attrs.field(default=random.random, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.minimum > self.maximum:
            raise ValueError(
                f"the minimum refresh interval ({self.minimum:g} s) is above the "
                f"maximum ({self.maximum:g} s)"
            )

    def _jitter(self, delay: float) -> float:
        return delay * (0.9 + 0.2 * self.random())

    def after_answer(self, ttl: float | None) -> float:
        """
        Seconds until the next question after an answer whose smallest TTL
        is ``ttl`` (``None``: the answer carried none).
        """
        if ttl is None:
            ttl = self.maximum
        return self._jitter(min(self.maximum, max(self.minimum, ttl)))

    def after_failure(self, failures: int) -> float:
        """
        Seconds until the next question after ``failures`` failed ones in a
        row (``>= 1``).
        """
        return self._jitter(
            min(self.maximum, self.minimum * 2 ** min(failures - 1, 30))
        )


# -- the sources that ask DNS -----------------------------------------------------


class Resolver(Protocol):
    """
    The part of ``twisted.names``' ``IResolver`` the DNS sources use.
    """

    def lookupService(
        self, name: str, timeout: Sequence[int] = ...
    ) -> Deferred[tuple[list[Any], list[Any], list[Any]]]: ...

    def lookupAddress(
        self, name: str, timeout: Sequence[int] = ...
    ) -> Deferred[tuple[list[Any], list[Any], list[Any]]]: ...

    def lookupIPV6Address(
        self, name: str, timeout: Sequence[int] = ...
    ) -> Deferred[tuple[list[Any], list[Any], list[Any]]]: ...


def make_resolver(reactor: Any, servers: Sequence[tuple[str, int]]) -> Resolver:
    """
    A ``twisted.names`` resolver asking ``servers`` (and nothing else), or
    the system's shared resolver (``/etc/resolv.conf``, ``/etc/hosts``)
    when ``servers`` is empty.
    """
    from twisted.names import client

    if servers:
        resolver: Resolver = client.Resolver(servers=list(servers), reactor=reactor)  # type: ignore[no-untyped-call]
    else:
        resolver = client.getResolver()  # type: ignore[no-untyped-call]
    return resolver


def tcp_endpoint_maker(reactor: Any) -> MakeEndpoint:
    """
    Plain TCP endpoints to an IP address on ``reactor``.
    """
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint

    def make(address: str, port: int) -> IStreamClientEndpoint:
        if ":" in address:
            return TCP6ClientEndpoint(reactor, address, port)  # type: ignore[no-untyped-call]
        return TCP4ClientEndpoint(reactor, address, port)  # type: ignore[no-untyped-call]

    return make


def _for_name(make_endpoint: MakeEndpoint, name: str) -> MakeEndpoint:
    for_name = getattr(make_endpoint, "for_name", None)
    return make_endpoint if for_name is None else for_name(name)  # type: ignore[no-any-return]


class TLSEndpoints:
    """
    TLS endpoints to an IP address that verify the server's certificate
    against a DNS name (``srv+tls:``, ``dns+tls:``): the connection goes to
    the address DNS gave, and the certificate must be valid for the name
    the host was found under (the SRV target, the ``dns+tls:`` name), as
    with a ``tls:HOST:PORT`` endpoint.

    :param tcp: makes the TCP endpoint under the TLS.
    :param trust_roots: a directory of PEM CA certificates to trust, or
        ``None`` for the platform's.
    :raises ImportError: the TLS extra is not installed (the message says
        how to install it).
    """

    def __init__(self, tcp: MakeEndpoint, trust_roots: str | None = None) -> None:
        try:
            from twisted.internet import ssl

            ssl.optionsForClientTLS  # noqa: B018 (missing without pyOpenSSL)
        except (ImportError, AttributeError) as error:
            from framedclient._endpoints import TLS_EXTRA

            raise ImportError(
                f"srv+tls: and dns+tls: need TLS, and the TLS extra (pyOpenSSL, "
                f"service_identity) is not installed: {TLS_EXTRA}"
            ) from error
        self._tcp = tcp
        self._trust: Any = None
        if trust_roots is not None:
            from twisted.python.filepath import FilePath

            certificates = [
                ssl.Certificate.loadPEM(child.getContent())
                for child in FilePath(trust_roots).children()
                if child.isfile()
            ]
            if not certificates:
                raise ValueError(
                    f"trustRoots={trust_roots!r} holds no PEM certificate"
                )
            self._trust = ssl.trustRootFromCertificates(certificates)  # type: ignore[no-untyped-call]

    def for_name(self, name: str) -> MakeEndpoint:
        """
        Endpoints whose certificate must be valid for ``name``.
        """
        from twisted.internet.endpoints import wrapClientTLS
        from twisted.internet.ssl import optionsForClientTLS

        options = optionsForClientTLS(name, trustRoot=self._trust)

        def make(address: str, port: int) -> IStreamClientEndpoint:
            return wrapClientTLS(options, self._tcp(address, port))  # type: ignore[no-any-return]

        return make

    def __call__(self, address: str, port: int) -> IStreamClientEndpoint:
        return self.for_name(address)(address, port)


def _answers(result: tuple[list[Any], list[Any], list[Any]]) -> list[Any]:
    answers, _, additional = result
    return list(answers) + list(additional)


def _lookup_addresses(resolver: Resolver, name: str) -> Deferred[list[Any]]:
    """
    The A and AAAA records of ``name``; fails only if both questions do.
    """
    asked = [
        resolver.lookupAddress(name, QUERY_TIMEOUT),
        resolver.lookupIPV6Address(name, QUERY_TIMEOUT),
    ]

    def combine(results: list[tuple[bool, Any]]) -> list[Any] | Failure:
        records: list[Any] = []
        failures = []
        for ok, value in results:
            if ok:
                records += _answers(value)
            else:
                failures.append(value)
        if failures and len(failures) == len(results):
            failure: Failure = failures[0]
            return failure
        return records

    return DeferredList(asked, consumeErrors=True).addCallback(combine)  # type: ignore[arg-type]


def _describe_failure(failure: Failure) -> str:
    text = failure.getErrorMessage()
    kind = type(failure.value).__name__
    return f"{kind}: {text}" if text and text != kind else kind


class _Resolving:
    """
    What both DNS sources share: ask, hand the hosts over, ask again when
    the policy says; keep the last hosts through failures.
    """

    description: str

    def __init__(
        self,
        clock: IReactorTime,
        resolver: Resolver,
        policy: RefreshPolicy,
        make_endpoint: MakeEndpoint,
    ) -> None:
        self._clock = clock
        self._resolver = resolver
        self._policy = policy
        self._make_endpoint = make_endpoint
        self._update: Callable[[list[Host]], None] | None = None
        self._timer: IDelayedCall | None = None
        self._asking: Deferred[Any] | None = None
        self._asked_at: float | None = None
        self.failures = 0
        #: why the last question failed or gave no host; ``None`` after a
        #: good answer
        self.last_error: str | None = None
        #: the hosts last handed over
        self.hosts: list[Host] = []

    def start(self, update: Callable[[list[Host]], None]) -> None:
        if self._update is None:
            self._update = update
            self._ask()

    def stop(self) -> None:
        self._update = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        asking, self._asking = self._asking, None
        if asking is not None:
            asking.cancel()

    def refresh(self) -> None:
        if self._update is None or self._asking is not None:
            return
        now = self._clock.seconds()
        if self._asked_at is not None and now - self._asked_at < self._policy.minimum:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._ask()

    def debug_state(self) -> dict[str, Any]:
        due = None
        if self._timer is not None and self._timer.active():
            due = round(self._timer.getTime() - self._clock.seconds(), 3)
        return {
            "source": self.description,
            "hosts": len(self.hosts),
            "last_error": self.last_error,
            "failures": self.failures,
            "next_refresh": due,
        }

    def _query(self) -> Deferred[tuple[list[Host], float | None, str | None]]:
        """
        The hosts, the smallest TTL, and a problem worth reporting.
        """
        raise NotImplementedError

    def _ask(self) -> None:
        self._timer = None
        self._asked_at = self._clock.seconds()
        asking = self._query()
        self._asking = asking
        asking.addCallbacks(self._answered, self._failed)
        asking.addErrback(
            lambda f: _log.failure(
                "discovery {source}: bug", f, source=self.description
            )
        )

    def _answered(self, result: tuple[list[Host], float | None, str | None]) -> None:
        self._asking = None
        if self._update is None:
            return
        hosts, ttl, problem = result
        if not hosts:
            self._failed(problem or "the answer holds no host")
            return
        if problem is not None:
            _log.warn(
                "discovery {source}: {problem}",
                source=self.description,
                problem=problem,
            )
        self.failures = 0
        self.last_error = None
        self.hosts = hosts
        self._schedule(self._policy.after_answer(ttl))
        self._update(list(hosts))

    def _failed(self, why: Failure | str) -> None:
        self._asking = None
        if self._update is None:
            return
        self.failures += 1
        self.last_error = why if isinstance(why, str) else _describe_failure(why)
        delay = self._policy.after_failure(self.failures)
        kept = (
            f"keeping the {len(self.hosts)} hosts known"
            if self.hosts
            else "no host known yet"
        )
        # The first failure of a run, then one line per ten: a DNS outage
        # must not flood the log.
        if self.failures == 1 or self.failures % 10 == 0:
            _log.warn(
                "discovery {source}: {error} ({kept}); asking again in {delay:.1f} s",
                source=self.description,
                error=self.last_error,
                kept=kept,
                delay=delay,
            )
        self._schedule(delay)

    def _schedule(self, delay: float) -> None:
        self._timer = self._clock.callLater(delay, self._ask)


class AddressHosts(_Resolving):
    """
    ``dns:NAME:PORT``: one host per A/AAAA address of ``NAME``.

    :param make_endpoint: builds the endpoint of an address and port
        (plain TCP by default, see :func:`tcp_endpoint_maker`).
    :ivar absolute_weights: its hosts' weight (``:weight=N``, the same for
        all) counts against the client's other hosts, a host of weight 1
        getting ``pool_size`` connections, rather than against each other
        (as an SRV record set's weights do).
    """

    absolute_weights = True

    def __init__(
        self,
        query: AddressQuery,
        clock: IReactorTime,
        resolver: Resolver,
        policy: RefreshPolicy,
        make_endpoint: MakeEndpoint,
    ) -> None:
        super().__init__(clock, resolver, policy, make_endpoint)
        self.query = query
        self.description = str(query)

    def _query(self) -> Deferred[tuple[list[Host], float | None, str | None]]:
        name, port = self.query.name, self.query.port

        def found(records: list[Any]) -> tuple[list[Host], float | None, str | None]:
            addresses = addresses_in(records).get(name.lower(), [])
            hosts, ttl = hosts_from_addresses(
                name, port, addresses, self._make_endpoint, self.query.weight or 1
            )
            problem = None if hosts else f"{name} has no A or AAAA record"
            return hosts, ttl, problem

        return _lookup_addresses(self._resolver, name).addCallback(found)


class ServiceHosts(_Resolving):
    """
    ``srv:_SERVICE._PROTO.NAME``: one host per SRV record, at its target's
    address (from the answer's additional section, else asked for).
    """

    def __init__(
        self,
        query: ServiceQuery,
        clock: IReactorTime,
        resolver: Resolver,
        policy: RefreshPolicy,
        make_endpoint: MakeEndpoint,
    ) -> None:
        super().__init__(clock, resolver, policy, make_endpoint)
        self.query = query
        self.description = str(query)

    def _query(self) -> Deferred[tuple[list[Host], float | None, str | None]]:
        resolver = self._resolver

        def targets(
            result: tuple[list[Any], list[Any], list[Any]],
        ) -> Deferred[tuple[list[Host], float | None, str | None]]:
            records = srv_records(result[0])
            addresses = addresses_in(_answers(result))
            unknown = sorted({r[0] for r in records} - addresses.keys())
            asked = [_lookup_addresses(resolver, t) for t in unknown]

            def build(
                results: list[tuple[bool, Any]],
            ) -> tuple[list[Host], float | None, str | None]:
                for ok, value in results:
                    if ok:
                        for target, found in addresses_in(value).items():
                            addresses.setdefault(target, found)
                hosts, ttl, missing = hosts_from_srv(
                    records, addresses, self._make_endpoint
                )
                problem = None
                if not records:
                    problem = f"{self.query.name} has no SRV record"
                elif missing:
                    problem = f"no address for SRV target(s) {', '.join(missing)}"
                return hosts, ttl, problem

            done: Deferred[tuple[list[Host], float | None, str | None]] = DeferredList(
                asked, consumeErrors=True
            ).addCallback(build)  # type: ignore[arg-type]
            return done

        looked = resolver.lookupService(self.query.name, QUERY_TIMEOUT)
        return looked.addCallback(targets)  # type: ignore[arg-type]


def source_for(
    query: ServiceQuery | AddressQuery,
    reactor: Any,
    policy: RefreshPolicy,
    resolver: Resolver | None = None,
    make_endpoint: MakeEndpoint | None = None,
) -> HostSource:
    """
    The source a parsed ``srv:``/``dns:`` string asks for.  A ``dns:`` name
    that is an IP address needs no DNS: a :class:`StaticHosts` of one.
    """
    make = make_endpoint if make_endpoint is not None else tcp_endpoint_maker(reactor)
    if query.tls:
        make = TLSEndpoints(make, query.trust_roots)
    if isinstance(query, AddressQuery):
        try:
            ipaddress.ip_address(query.name)
        except ValueError:
            pass
        else:
            address = _host_port(query.name, query.port)
            host = Host(
                address,
                address,
                make(query.name, query.port),
                weight=query.weight or 1,
            )
            return StaticHosts([host], str(query), absolute_weights=True)
    if resolver is None:
        resolver = make_resolver(reactor, query.servers)
    if isinstance(query, ServiceQuery):
        return ServiceHosts(query, reactor, resolver, policy, make)
    return AddressHosts(query, reactor, resolver, policy, make)


_WEIGHT = re.compile(r"(?<!\\):weight=([^:]*)")


def split_weight(description: str) -> tuple[str, int | None]:
    """
    An endpoint string less its ``:weight=N`` option, and ``N`` (``None``
    without one): ``tcp:10.0.0.1:9000:weight=3`` is a host with three
    times the connections, hence the requests, of a host of weight 1 (as an
    SRV record's weight does for ``srv:`` hosts), from the command line too
    (``--upstream``).

    :raises ValueError: a weight that is not a whole number >= 1, or two.
    """
    found = _WEIGHT.findall(description)
    if not found:
        return description, None
    if len(found) > 1 or not found[0].isdigit() or int(found[0]) < 1:
        raise ValueError(
            f"{description!r}: weight= takes one whole number >= 1 (a host's "
            f"share of the connections relative to weight 1), got "
            f"{', '.join(repr(f) for f in found)}"
        )
    return _WEIGHT.sub("", description), int(found[0])


def _is_source(thing: object) -> bool:
    return all(
        callable(getattr(thing, name, None)) for name in ("start", "stop", "refresh")
    ) and isinstance(getattr(thing, "description", None), str)


def sources_from(
    reactor: Any,
    endpoints: Any,
    names: Sequence[str] | None,
    policy: RefreshPolicy,
) -> tuple[list[IStreamClientEndpoint], list[str], list[HostSource]]:
    """
    What :meth:`FramedClient.from_endpoint
    <framedclient.client.FramedClient.from_endpoint>` and ``set_endpoints``
    take (an endpoint string or object, a :class:`HostSource`, or a
    sequence of them), split into fixed endpoints with their names
    (``names``, else the strings) and the host sources (given, or made from
    ``srv:``/``dns:`` strings).

    Endpoint strings may carry ``:weight=N`` (see :func:`split_weight`);
    when one does, every fixed endpoint becomes a host of one
    :class:`StaticHosts` source, with its weight (1 when not given), so that
    weights share the connections among all of them.

    :raises ImportError: a ``tls:`` string without the TLS extra.
    :raises TypeError: something that is neither a string nor an endpoint.
    :raises ValueError: a malformed ``srv:``/``dns:`` string or weight.
    """
    from framedclient._endpoints import client_from_string, endpoint_name

    if isinstance(endpoints, (str, bytes)) or not isinstance(endpoints, Sequence):
        endpoints = [endpoints]
    if names is not None and len(names) != len(endpoints):
        raise ValueError(
            f"names must have one name per endpoint: {len(names)} names for "
            f"{len(endpoints)} endpoints"
        )
    resolved: list[IStreamClientEndpoint] = []
    described: list[str] = []
    weights: list[int] = []
    weighted = False
    sources: list[HostSource] = []
    for i, e in enumerate(endpoints):
        if isinstance(e, str):
            query = parse_discovery(e)
            if query is not None:
                sources.append(source_for(query, reactor, policy))
                continue
            e, weight = split_weight(e)
            # ImportError naming the extra, for tls: without pyOpenSSL.
            resolved.append(client_from_string(reactor, e))
            described.append(e if names is None else names[i])
            weights.append(1 if weight is None else weight)
            if weight is not None:
                weighted = True
        elif isinstance(e, (bytes, bytearray)):
            raise TypeError(
                f"an endpoint string must be str, got bytes {e!r}: decode it"
            )
        elif _is_source(e):
            sources.append(e)
        elif not callable(getattr(e, "connect", None)):
            swapped = (
                "; the reactor comes first: from_endpoint(reactor, 'tcp:HOST:PORT')"
                if callable(getattr(e, "callLater", None))
                else ""
            )
            raise TypeError(
                f"endpoints[{i}] must be an endpoint string ('tcp:HOST:PORT'), a "
                f"Twisted client endpoint (with connect(factory)) or a HostSource, "
                f"got {e!r}{swapped}"
            )
        else:
            resolved.append(e)
            described.append(endpoint_name(e) if names is None else names[i])
            weights.append(1)
    if weighted:
        hosts = []
        seen: dict[str, int] = {}
        for endpoint, name, weight in zip(resolved, described, weights, strict=True):
            # Named as the client names fixed endpoints (the same endpoint
            # twice is two hosts).
            seen[name] = n = seen.get(name, 0) + 1
            address = name if n == 1 else f"{name}#{n}"
            hosts.append(Host(name, address, endpoint, weight=weight))
        return [], [], [StaticHosts(hosts, "weighted"), *sources]
    return resolved, described, sources
