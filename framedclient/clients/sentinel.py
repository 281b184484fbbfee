"""
Redis Sentinel: find a service's master through its sentinels, and follow
it when the sentinels elect another one.

:class:`SentinelHosts` is a :class:`~framedclient.discovery.HostSource`
(as ``srv:``/``dns:`` strings make), so the client under a
:class:`~framedclient.clients.redis.SentinelRedisClient` (which calls
:meth:`SentinelHosts.refresh` on ``READONLY`` or a lost connection)
switches masters the way it switches any hosts: the new master gets
connections at once, the old one's drain (a dead master's fail with
:class:`~framedclient.errors.ConnectionLost`).

The master is asked for again

- when a sentinel announces ``+switch-master`` for the service (one
  sentinel at a time is subscribed, on a connection of its own): the new
  master it names is tried first (``ROLE``), since the sentinel asked
  first may not have heard of the switch yet;
- when a request fails with ``READONLY`` (the master was demoted) or with a
  lost connection (:meth:`SentinelHosts.refresh`, called by the client);
- every ``check_interval`` seconds, and when the subscription is
  re-established (a switch may have been missed meanwhile); the
  subscribed sentinel is PINGed every ``subscription_ping`` seconds, so a
  hung one is left for the next instead of silently announcing nothing.

An event that comes while a question is under way makes it ask once more
when the answer lands (that answer may predate the event).

Nothing here ever sends a request again: a request that failed during a
failover fails to its caller (see docs/redis-sentinel.md for what that
means for writes).  Use it through :meth:`RedisClient.from_sentinel
<framedclient.clients.redis.RedisClient.from_sentinel>`.

TLS: the master and the replicas the sentinels announce are reached as
:func:`node_endpoints` says: by default with the TLS settings of the first
``tls:`` sentinel (as a Redis Cluster's nodes are reached with the seeds'),
each certificate checked against the address announced.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from framedclient.clients.cluster_endpoints import tls_settings
from framedclient.codecs.redis import RespError, RespFramer, command, parse_reply
from framedclient.discovery import Host, MakeEndpoint, tcp_endpoint_maker
from framedclient.errors import ConnectionLost, FramedClientError

__all__ = [
    "SCHEME",
    "TLS_SCHEME",
    "MasterNotFound",
    "SentinelHosts",
    "SentinelReplicas",
    "event_service",
    "node_endpoints",
    "parse_sentinel_string",
    "parse_sentinels",
]

#: How a Redis Sentinel endpoint string begins:
#: ``redis-sentinel:HOST:PORT[,HOST:PORT...]/SERVICE``.
SCHEME = "redis-sentinel:"
#: The same over TLS (sentinels, master and replicas):
#: ``redis-sentinel+tls:HOST:PORT[,HOST:PORT...]/SERVICE[:trustRoots=DIR...]``.
TLS_SCHEME = "redis-sentinel+tls:"

#: The TLS options a ``tls=`` string or a ``redis-sentinel+tls:`` string
#: may carry (Twisted's ``tls:`` endpoint options, less host and port).
_TLS_OPTIONS = ("trustRoots", "certificate", "privateKey")

_log = Logger()

_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^:\s\[\]]+):(\d{1,5})$")


class MasterNotFound(FramedClientError):
    """
    No sentinel named a master that says it is one; the message says what
    each sentinel answered.
    """


def parse_sentinels(
    reactor: Any, sentinels: Sequence[str] | str
) -> list[tuple[str, IStreamClientEndpoint]]:
    """
    The sentinels as (name, endpoint): ``"host:port"`` or an endpoint
    string (``"tcp:host:port"``, ``"tls:..."``).

    :raises ValueError: no sentinel, or a string that is neither form
        (quoted).
    :raises TypeError: something other than strings.
    """
    if isinstance(sentinels, str):
        sentinels = [sentinels]
    if not isinstance(sentinels, Sequence) or not sentinels:
        raise ValueError(
            f"sentinels must be a list of 'host:port' or endpoint strings, at "
            f"least one, got {sentinels!r}"
        )
    found: list[tuple[str, IStreamClientEndpoint]] = []
    for s in sentinels:
        if not isinstance(s, str):
            raise TypeError(
                f"each sentinel is a 'host:port' or endpoint string, got "
                f"{type(s).__name__} {s!r}"
            )
        m = _HOST_PORT.match(s)
        if m is not None:
            port = int(m.group(2))
            if not 1 <= port <= 65535:
                raise ValueError(f"sentinel {s!r}: the port must be 1-65535")
            host = m.group(1).strip("[]")
            found.append((s, tcp_endpoint_maker(reactor)(host, port)))
        else:
            found.append((s, _endpoint(reactor, s, f"sentinel {s!r}")))
    return found


def _endpoint(reactor: Any, text: str, what: str) -> IStreamClientEndpoint:
    from framedclient._endpoints import client_from_string

    try:
        return client_from_string(reactor, text)
    except OSError as error:
        # Twisted's UnlistableError for a trustRoots that is not a
        # directory says nothing at all.
        raise ValueError(
            f"{what}: a file or directory it names cannot be read ({error!r}): "
            f"trustRoots= is a directory of PEM CA certificates, "
            f"certificate= and privateKey= PEM files"
        ) from None


def parse_sentinel_string(text: str) -> tuple[list[str], str] | None:
    """
    ``redis-sentinel:HOST:PORT[,HOST:PORT...]/SERVICE`` (an IPv6 address in
    brackets) as its sentinels and service, in the style of ``srv:`` and
    ``dns:`` strings; ``None`` for a string of another kind.

    ``redis-sentinel+tls:HOST:PORT[,...]/SERVICE[:trustRoots=DIR]
    [:certificate=PEM:privateKey=PEM]`` is the same over TLS: its sentinels
    come back as ``tls:`` endpoint strings with those options, so the
    master and replicas are reached with them too (:func:`node_endpoints`).

    :raises ValueError: a malformed one, quoted, with the form it takes.
    """
    if text.startswith(TLS_SCHEME):
        scheme, tls = TLS_SCHEME, True
    elif text.startswith(SCHEME):
        scheme, tls = SCHEME, False
    else:
        return None
    form = f"{scheme}HOST:PORT[,HOST:PORT...]/SERVICE"
    if tls:
        form += "[:trustRoots=DIR]"
    # Hosts hold no '/'; a trustRoots path after the service may.
    hosts, slash, service = text[len(scheme) :].partition("/")
    options = ""
    if tls:
        service, _, options = service.partition(":")
    if not slash or not hosts or not service:
        raise ValueError(
            f"{text!r}: a Redis Sentinel string is {form} (the sentinels, "
            f"then the master's name in their configuration after '/')"
        )
    if options:
        _check_tls_options(options, f"{text!r}: the TLS options after the service")
    sentinels = hosts.split(",")
    found = []
    for s in sentinels:
        m = _HOST_PORT.match(s)
        if m is None or not 1 <= int(m.group(2)) <= 65535:
            raise ValueError(
                f"{text!r}: {s!r} is not a sentinel's HOST:PORT (port "
                f"1-65535); the string is {form}"
            )
        if tls:
            host = m.group(1).strip("[]").replace(":", "\\:")
            s = f"tls:host={host}:port={m.group(2)}" + (
                f":{options}" if options else ""
            )
        found.append(s)
    return found, service


def _check_tls_options(options: str, what: str) -> None:
    for part in options.split(":"):
        name, equals, value = part.partition("=")
        if not equals or name not in _TLS_OPTIONS or not value:
            raise ValueError(
                f"{what} are NAME=VALUE separated by ':', each one of "
                f"{', '.join(_TLS_OPTIONS)}; got {part!r} in {options!r}"
            )


def node_endpoints(
    reactor: Any, sentinels: Sequence[str] | str, tls: bool | str | None = None
) -> MakeEndpoint:
    """
    How the master and replicas the sentinels announce (``ip``, ``port``)
    are reached: over TLS, verifying each certificate against the address
    announced (an IP SAN for an IP, as with a ``tls:HOST:PORT`` endpoint),
    or plain TCP.

    :param sentinels: as given to :class:`SentinelHosts`.
    :param tls: ``None`` (the default): as the sentinels are reached, with
        the TLS settings (``trustRoots``, ``certificate``, ``privateKey``)
        of the first ``tls:`` sentinel, plain TCP when none is ``tls:``.
        ``False``: plain TCP.  ``True``: TLS, with the first ``tls:``
        sentinel's settings or else the platform's trust roots.  A string:
        TLS with these options, ``"trustRoots=/etc/redis/ca"`` (and
        ``:certificate=PEM:privateKey=PEM`` for a client certificate).

    :raises TypeError: ``tls`` of another type.
    :raises ValueError: a ``tls`` string Twisted cannot use (quoted).
    :raises ImportError: TLS without the TLS extra.
    """
    if tls is not None and not isinstance(tls, (bool, str)):
        raise TypeError(
            f"tls must be None (as the sentinels are reached), True, False "
            f"or a string of TLS options ('trustRoots=/etc/redis/ca'), got "
            f"{type(tls).__name__} {tls!r}"
        )
    if isinstance(sentinels, str):
        sentinels = [sentinels]
    first = next(
        (s for s in sentinels if isinstance(s, str) and s.startswith("tls:")), None
    )
    if tls is False or (tls is None and first is None):
        return tcp_endpoint_maker(reactor)
    if isinstance(tls, str) and not isinstance(tls, bool):
        if tls:
            _check_tls_options(tls, "tls= options")
        options = f":{tls}" if tls else ""
    else:
        options = "" if first is None else tls_settings(first)

    def make(host: str, port: int) -> IStreamClientEndpoint:
        escaped = host.replace(":", "\\:")
        text = f"tls:host={escaped}:port={port}{options}"
        return _endpoint(reactor, text, f"tls={tls!r}")

    make("127.0.0.1", 1)  # a bad trustRoots fails here, not at connect
    return make


class _RespLink(Protocol):
    """
    A bare RESP2 connection: replies go to the commands in order; pub/sub
    messages (``["message", channel, data]``) go to ``on_message``.
    """

    def __init__(
        self,
        on_message: Callable[[list[Any]], None] | None = None,
        peer: str = "the sentinel",
    ) -> None:
        self._peer = peer
        self._framer = RespFramer()
        self._waiting: deque[Deferred[Any]] = deque()
        self._on_message = on_message
        self.closed: Deferred[None] = Deferred()
        self._gone = False

    def send(self, *args: str | bytes | int) -> Deferred[Any]:
        d: Deferred[Any] = Deferred(lambda _: self.abort())
        if self._gone:
            d.errback(
                ConnectionLost(False, f"the connection to {self._peer} is closed")
            )
            return d
        self._waiting.append(d)
        self.transport.write(command(*args))  # type: ignore[union-attr]
        return d

    def abort(self) -> None:
        if self.transport is not None and not self._gone:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self._framer.feed(data)
        except Exception:
            self.abort()
            return
        for frame in frames:
            value = parse_reply(frame)
            if (
                self._on_message is not None
                and isinstance(value, list)
                and value
                and value[0] == b"message"
            ):
                self._on_message(value)
            elif self._waiting:
                d = self._waiting.popleft()
                if isinstance(value, RespError):
                    d.errback(value)
                else:
                    d.callback(value)

    def connectionLost(self, reason: Failure | None = None) -> None:  # type: ignore[override]
        self._gone = True
        waiting, self._waiting = self._waiting, deque()
        # Why, in the error: a TLS handshake that failed (an untrusted or
        # mismatched certificate) ends the connection like any other loss.
        why = reason.getErrorMessage() if reason is not None else "closed"
        for d in waiting:
            if not d.called:  # a cancelled one has fired already
                d.errback(
                    ConnectionLost(True, f"{self._peer}'s connection was lost: {why}")
                )
        self.closed.callback(None)


def _describe(error: BaseException) -> str:
    if isinstance(error, (TimeoutError, CancelledError)):
        return "no answer in time"
    if isinstance(error, RespError):
        return f"error reply: {error.message}"
    if isinstance(error, ConnectionLost):
        # Not its advice on retrying: a question to a sentinel is asked
        # again anyway.
        return error.reason
    text = str(error) or type(error).__name__
    return text.splitlines()[0]


class SentinelHosts:
    """
    The master of ``service`` as the sentinels name it, as a host source.

    :param reactor: connects and times out the questions.
    :param sentinels: see :func:`parse_sentinels`; asked in turn, the one
        that answered last first.
    :param service: the name the sentinels monitor the master under.
    :param timeout: for each sentinel, and for the master's ``ROLE``: a
        sentinel that is down or silent costs at most this long.
    :param auth: ``AUTH`` arguments for the master (its password), sent
        before ``ROLE``.
    :param sentinel_auth: ``AUTH`` arguments for the sentinels (their own
        ``requirepass``, which is not the master's), sent before every
        question and before the subscription.
    :param check_interval: ask again this often even when nothing
        happened.
    :param tls: how the master (and replicas) are reached: see
        :func:`node_endpoints` (by default, as the sentinels are).
    :param make_endpoint: instead of ``tls``, endpoints of one's own.
    """

    #: after a failed round of questions, ask again after this long
    retry_delay = 0.5
    #: hints (failed requests) closer together than this ask only once
    minimum_interval = 0.2
    #: what the subscription listens to: the events after which the
    #: answer may have changed
    channels: tuple[str, ...] = ("+switch-master",)
    #: the subscription's sentinel is PINGed this often; one that does
    #: not answer within the timeout (hung, or cut off with the connection
    #: left open) is left for the next, as announcements would not come
    subscription_ping = 1.0

    #: ask again this often even when nothing happened (from the next
    #: answer on when changed)
    check_interval: float

    def __init__(
        self,
        reactor: Any,
        sentinels: Sequence[str] | str,
        service: str,
        *,
        timeout: float = 1.0,
        auth: Sequence[str | bytes] = (),
        sentinel_auth: Sequence[str | bytes] = (),
        check_interval: float = 30.0,
        tls: bool | str | None = None,
        make_endpoint: MakeEndpoint | None = None,
    ) -> None:
        if not isinstance(service, str) or not service:
            raise ValueError(
                f"service must be the master's name in the sentinels' "
                f"configuration ('sentinel monitor NAME ...'), got {service!r}"
            )
        if not timeout > 0:
            raise ValueError(f"sentinel_timeout must be positive, got {timeout!r}")
        self._reactor = reactor
        self._sentinels = parse_sentinels(reactor, sentinels)
        self.service = service
        self.description = f"sentinel:{service}"
        self._timeout = timeout
        self._auth = tuple(auth)
        self._sentinel_auth = tuple(sentinel_auth)
        self.check_interval = check_interval
        self._make_endpoint = make_endpoint or node_endpoints(reactor, sentinels, tls)
        self._update: Callable[[list[Host]], None] | None = None
        self._asking: Deferred[Any] | None = None
        # An event came while a question was under way: its answer may
        # predate the event, so ask once more when it lands.
        self._again = False
        # The new master a +switch-master named, tried first next time.
        self._announced: tuple[str, int] | None = None
        self._asked_at: float | None = None
        self._timer: IDelayedCall | None = None
        self._watch_timer: IDelayedCall | None = None
        self._ping_timer: IDelayedCall | None = None
        self._watching: _RespLink | None = None
        self._watch_connecting: Deferred[Any] | None = None
        self._watch_index = 0
        self._watch_failures = 0
        #: the master's ``ip:port`` last handed over, or ``None``
        self.master: str | None = None
        #: why the last question failed, ``None`` after a good answer
        self.last_error: str | None = None
        #: how many times the master changed after the first one was found
        self.switches = 0
        #: the sentinel this source is subscribed to (``None`` while not)
        self.subscribed_to: str | None = None

    # -- HostSource -------------------------------------------------------------

    def start(self, update: Callable[[list[Host]], None]) -> None:
        if self._update is None:
            self._update = update
            self._ask()
            self._watch()

    def stop(self) -> None:
        self._update = None
        for timer in (self._timer, self._watch_timer, self._ping_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._watch_timer = self._ping_timer = None
        asking, self._asking = self._asking, None
        if asking is not None:
            asking.cancel()
        connecting, self._watch_connecting = self._watch_connecting, None
        if connecting is not None:
            connecting.cancel()
        watching, self._watching = self._watching, None
        if watching is not None:
            watching.abort()

    def refresh(self) -> None:
        """
        Ask the sentinels again now, unless a question is under way or the
        last one is younger than :attr:`minimum_interval`.
        """
        if self._update is None or self._asking is not None:
            return
        now = self._reactor.seconds()
        if self._asked_at is not None and now - self._asked_at < self.minimum_interval:
            return
        self._ask()

    def debug_state(self) -> dict[str, Any]:
        return {
            "source": self.description,
            "hosts": 0 if self.master is None else 1,
            "master": self.master,
            "last_error": self.last_error,
            "switches": self.switches,
            "subscribed_to": self.subscribed_to,
        }

    # -- asking -----------------------------------------------------------------

    def _ask(self) -> None:
        if self._asking is not None:
            self._again = True
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._again = False
        self._asked_at = self._reactor.seconds()
        asking = Deferred.fromCoroutine(self._find_master())
        self._asking = asking
        asking.addCallbacks(self._answered, self._failed)
        asking.addErrback(lambda f: _log.failure("sentinel source: bug", f))

    async def _query(
        self,
        endpoint: IStreamClientEndpoint,
        *commands: tuple[str | bytes, ...],
        peer: str = "the sentinel",
    ) -> list[Any]:
        # Connect, send, read the replies, close; all within the timeout.
        connecting = connectProtocol(endpoint, _RespLink(peer=peer))  # type: ignore[no-untyped-call]
        connecting.addTimeout(self._timeout, self._reactor)
        link: _RespLink = await connecting
        sent = [link.send(*c) for c in commands]
        try:
            replies = []
            for d in sent:
                d.addTimeout(self._timeout, self._reactor)
                replies.append(await d)
            return replies
        finally:
            # The replies after a failed one (ROLE after a refused AUTH)
            # fail as the connection closes: nobody awaits them.
            for d in sent:
                d.addErrback(lambda _: None)
            link.transport.loseConnection()  # type: ignore[union-attr]

    async def _find_master(self) -> tuple[str, int]:
        problems = []
        announced, self._announced = self._announced, None
        if announced is not None:
            # The sentinel that announced the switch knows; the one asked
            # first may not have heard yet, and name the old master, which
            # still says "master" until the sentinels demote it.
            ip, port = announced
            try:
                role = await self._role(ip, port)
            except Exception as e:
                role = None
                problems.append(
                    f"the announced master {ip}:{port} does not answer ROLE: "
                    f"{_describe(e)}"
                )
            if role == b"master":
                return announced
        for i in range(len(self._sentinels)):
            name, endpoint = self._sentinels[i]
            try:
                *_, reply = await self._query(
                    endpoint,
                    *self._to_sentinel(
                        ("SENTINEL", "get-master-addr-by-name", self.service)
                    ),
                )
            except Exception as e:
                problems.append(f"sentinel {name}: {_describe(e)}")
                continue
            if reply is None:
                problems.append(f"sentinel {name} does not know {self.service!r}")
                continue
            address = _address(reply)
            if address is None:
                problems.append(
                    f"sentinel {name} answered {_shown(reply)}, not the "
                    f"master's [IP, PORT]"
                )
                continue
            ip, port = address
            try:
                role = await self._role(ip, port)
            except Exception as e:
                problems.append(
                    f"sentinel {name} names {ip}:{port}, which does not answer "
                    f"ROLE: {_describe(e)}"
                )
                continue
            if role != b"master":
                problems.append(
                    f"sentinel {name} names {ip}:{port}, which says it is a "
                    f"{role.decode('ascii', 'replace')}"
                )
                continue
            if i:
                # Redis's advice: ask the sentinel that answered first next time.
                self._sentinels.insert(0, self._sentinels.pop(i))
            return ip, port
        raise MasterNotFound(f"no master for {self.service!r}: " + "; ".join(problems))

    def _to_sentinel(
        self, *commands: tuple[str | bytes, ...]
    ) -> list[tuple[str | bytes, ...]]:
        # A sentinel with a password of its own answers NOAUTH to anything
        # sent before AUTH.
        if self._sentinel_auth:
            return [("AUTH", *self._sentinel_auth), *commands]
        return list(commands)

    async def _role(self, ip: str, port: int) -> bytes:
        commands: list[tuple[str | bytes, ...]] = []
        if self._auth:
            commands.append(("AUTH", *self._auth))
        commands.append(("ROLE",))
        replies = await self._query(
            self._make_endpoint(ip, port), *commands, peer="the server"
        )
        role = replies[-1]
        if not isinstance(role, list) or not role:
            raise MasterNotFound(f"ROLE answered {role!r}")
        return role[0]  # type: ignore[no-any-return]

    def _answered(self, address: tuple[str, int]) -> None:
        self._asking = None
        if self._update is None:
            return
        ip, port = address
        name = f"{ip}:{port}"
        self.last_error = None
        self._next_question()
        if name == self.master:
            return
        if self.master is not None:
            self.switches += 1
            _log.info(
                "sentinel {service}: the master is now {new} (was {old})",
                service=self.service,
                new=name,
                old=self.master,
            )
        self.master = name
        self._update([Host(name, name, self._make_endpoint(ip, port))])

    def _next_question(self) -> None:
        # After an answer: at once if an event came meanwhile, else after
        # check_interval.
        if self._again:
            self._again = False
            self._timer = self._reactor.callLater(0, self._ask)
        else:
            self._timer = self._reactor.callLater(self.check_interval, self._ask)

    def _failed(self, failure: Failure) -> None:
        self._asking = None
        self._again = False
        if self._update is None:
            return
        self.last_error = _describe(failure.value or Exception())
        _log.warn(
            "sentinel {service}: {error}; asking again in {delay} s",
            service=self.service,
            error=self.last_error,
            delay=self.retry_delay,
        )
        self._timer = self._reactor.callLater(self.retry_delay, self._ask)

    # -- following +switch-master -----------------------------------------------

    def _watch(self) -> None:
        self._watch_timer = None
        if self._update is None:
            return
        name, endpoint = self._sentinels[self._watch_index % len(self._sentinels)]
        link = _RespLink(self._message)
        # Held as the watching link at once, so that stop() ends it
        # whatever stage it is at.
        self._watching = link
        connecting = connectProtocol(endpoint, link)  # type: ignore[no-untyped-call]
        connecting.addTimeout(self._timeout, self._reactor)
        self._watch_connecting = connecting

        def connected(link: _RespLink) -> Deferred[Any]:
            self._watch_connecting = None
            sent = [
                link.send(*c) for c in self._to_sentinel(("SUBSCRIBE", *self.channels))
            ]
            d = sent[-1]
            for earlier in sent[:-1]:
                # A refused AUTH makes SUBSCRIBE fail too (NOAUTH): that
                # failure is the one handled.
                earlier.addErrback(lambda _: None)
            d.addTimeout(self._timeout, self._reactor)
            return d

        def subscribed(_: object) -> None:
            self._watch_failures = 0
            self.subscribed_to = name
            # A switch may have happened while nobody listened.
            self.refresh()
            link.closed.addCallback(lambda _: self._unwatched(link))
            self._ping_timer = self._reactor.callLater(
                self.subscription_ping, self._ping, link
            )

        def failed(failure: Failure) -> None:
            self._watch_connecting = None
            link.abort()
            self._unwatched(link)

        connecting.addCallback(connected).addCallbacks(subscribed, failed)

    def _ping(self, link: _RespLink) -> None:
        # PING is allowed while subscribed; it answers ["pong", ""].
        self._ping_timer = None
        if self._watching is not link:
            return
        d = link.send("PING")
        d.addTimeout(self._timeout, self._reactor)

        def answered(_: object) -> None:
            if self._watching is link and self._update is not None:
                self._ping_timer = self._reactor.callLater(
                    self.subscription_ping, self._ping, link
                )

        def silent(failure: Failure) -> None:
            if isinstance(failure.value, TimeoutError) and self._watching is link:
                _log.info(
                    "sentinel {service}: {name} did not answer PING in time; "
                    "subscribing to the next sentinel",
                    service=self.service,
                    name=self.subscribed_to,
                )
            link.abort()

        d.addCallbacks(answered, silent)

    def _unwatched(self, link: _RespLink) -> None:
        if self._ping_timer is not None and self._ping_timer.active():
            self._ping_timer.cancel()
        self._ping_timer = None
        if self._watching is link:
            self._watching = None
        self.subscribed_to = None
        if self._update is None or self._watch_timer is not None:
            return
        # The next sentinel, sooner the first time, at most every 2 s.
        self._watch_index += 1
        self._watch_failures += 1
        delay = min(0.1 * 2**self._watch_failures, 2.0)
        self._watch_timer = self._reactor.callLater(delay, self._watch)

    def _ask_first(self, name: str | None) -> None:
        # The sentinel that announced a switch knows of it: asked first
        # from now on, before one that may not have heard yet.
        for i, (known, _) in enumerate(self._sentinels):
            if known == name and i:
                self._sentinels.insert(0, self._sentinels.pop(i))
                return

    def _message(self, message: list[Any]) -> None:
        # ["message", CHANNEL, PAYLOAD]
        if len(message) != 3 or not isinstance(message[2], bytes):
            return
        if event_service(message[1], message[2]) == self.service:
            if self._update is not None:
                if message[1] == b"+switch-master":
                    self._announced = _address(message[2].split()[3:5])
                    self._ask_first(self.subscribed_to)
                self._ask()


def event_service(channel: bytes, payload: bytes) -> str | None:
    """
    The service a sentinel's event is about, ``None`` when the payload
    names none: ``+switch-master`` says ``NAME OLDIP OLDPORT NEWIP
    NEWPORT``, the others ``master NAME IP PORT`` or ``slave IP:PORT IP
    PORT @ NAME IP PORT``.
    """
    words = payload.split()
    if channel == b"+switch-master":
        named = words[:1]
    elif b"@" in words:
        named = words[words.index(b"@") + 1 :][:1]
    else:
        named = words[1:2] if words[:1] == [b"master"] else []
    return named[0].decode("utf-8", "replace") if named else None


#: A replica with one of these flags (or a link to its master that is not
#: up) is left out: it is down, or would answer with stale data or not at all.
_UNUSABLE = {b"s_down", b"o_down", b"disconnected"}


def _shown(reply: Any) -> str:
    text = repr(reply)
    return text if len(text) <= 80 else text[:77] + "..."


def _address(reply: Any) -> tuple[str, int] | None:
    # [IP, PORT] as bulk strings, or None for anything else.
    if not isinstance(reply, list) or len(reply) != 2:
        return None
    ip, port = reply
    if not isinstance(ip, bytes) or not isinstance(port, bytes) or not ip:
        return None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    try:
        return ip.decode("ascii"), int(port)
    except UnicodeDecodeError:
        return None


def _usable_replicas(reply: list[Any]) -> list[tuple[str, int]] | None:
    # SENTINEL REPLICAS' answer (one flat field list per replica) as the
    # sorted addresses of the usable ones; None for another shape.
    found = []
    for entry in reply:
        if not isinstance(entry, list) or len(entry) % 2:
            return None
        fields = dict(zip(entry[::2], entry[1::2], strict=True))
        address = _address([fields.get(b"ip"), fields.get(b"port")])
        flags = fields.get(b"flags", b"")
        link = fields.get(b"master-link-status", b"ok")
        if address is None or not isinstance(flags, bytes):
            return None
        if set(flags.split(b",")) & _UNUSABLE or link != b"ok":
            continue
        found.append(address)
    return sorted(found)


class SentinelReplicas(SentinelHosts):
    """
    The replicas of ``service`` as the sentinels list them (``SENTINEL
    REPLICAS``), as a host source: the ones the sentinels see up and in sync
    with the master (no ``s_down``, ``o_down`` or ``disconnected`` flag,
    ``master-link-status`` ok).  Asked again as :class:`SentinelHosts` asks
    for the master: every ``check_interval``, on ``+switch-master``, and on
    :meth:`refresh`; the hosts change as the answer does.  The replicas
    themselves are not contacted here: the client's connections
    authenticate themselves.

    Also asked again when a sentinel announces that a replica joined
    (``+slave``), went down (``+sdown``), came back (``-sdown``) or was
    reconfigured after a failover (``+slave-reconf-done``).  No event
    says that a replica's link to its master came up: a replica that
    returns is found by the next periodic check once it is in sync.

    :ivar replicas: the ``ip:port`` of each replica handed over last.
    """

    channels = ("+switch-master", "+slave", "+sdown", "-sdown", "+slave-reconf-done")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.description = f"sentinel-replicas:{self.service}"
        self.replicas: list[str] = []

    def debug_state(self) -> dict[str, Any]:
        state = super().debug_state()
        state.update(hosts=len(self.replicas), replicas=self.replicas)
        return state

    async def _find_master(self) -> Any:
        problems = []
        for name, endpoint in self._sentinels:
            try:
                *_, reply = await self._query(
                    endpoint,
                    *self._to_sentinel(("SENTINEL", "REPLICAS", self.service)),
                )
            except Exception as e:
                problems.append(f"sentinel {name}: {_describe(e)}")
                continue
            if not isinstance(reply, list):
                problems.append(f"sentinel {name} does not know {self.service!r}")
                continue
            found = _usable_replicas(reply)
            if found is None:
                problems.append(
                    f"sentinel {name} answered {_shown(reply)}, not a list of "
                    f"replicas' fields"
                )
                continue
            return found
        raise MasterNotFound(
            f"no replicas for {self.service!r}: " + "; ".join(problems)
        )

    def _answered(self, found: Any) -> None:
        self._asking = None
        if self._update is None:
            return
        self.last_error = None
        self._next_question()
        names = [f"{ip}:{port}" for ip, port in found]
        if names == self.replicas:
            return
        self.replicas = names
        self._update(
            [
                Host(name, name, self._make_endpoint(ip, port))
                for name, (ip, port) in zip(names, found, strict=True)
            ]
        )
