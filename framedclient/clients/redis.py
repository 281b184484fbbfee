"""
:class:`RedisClient`: Redis through :class:`~framedclient.FramedClient`,
with the everyday commands, pipelines, transactions and AUTH/SELECT done
on each new connection.

Everything goes through :class:`~framedclient.codecs.redis.RedisCodec`,
so each reply reaches its own caller: one command per request, several
only as one :class:`~framedclient.codecs.redis.CommandBatch` (a pipeline
or a transaction) that takes exactly its own replies.  Import it from
:mod:`framedclient` (``from framedclient import RedisClient``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self, TypeVar, Unpack

from twisted.internet.defer import Deferred, FirstError, gatherResults, succeed
from twisted.python.failure import Failure

from framedclient.client import ClientKeywords, FramedClient, Lease
from framedclient.clients.base import ProtocolClient, check_keywords
from framedclient.clients.cluster_map import READ_ONLY_COMMANDS
from framedclient.clients.redis_cache import RedisCache
from framedclient.clients.redis_pubsub import RedisSubscriber, SharedRedisSubscriber
from framedclient.clients.sentinel import (
    SCHEME,
    TLS_SCHEME,
    SentinelHosts,
    SentinelReplicas,
    parse_sentinel_string,
)
from framedclient.codecs.arguments import refusal
from framedclient.codecs.redis import (
    BadArgument,
    CommandBatch,
    RedisCodec,
    RespError,
    RespValue,
    _Command,
    _command_bytes,
    _whole_commands,
    command,
    parse_replies,
    parse_reply,
)
from framedclient.codecs.redis_pubsub import RedisPubSubCodec
from framedclient.codecs.resp3 import Resp3Codec
from framedclient.config import documents_settings
from framedclient.errors import ConnectionLost, InvalidRequest, RemoteError
from framedclient.protocol import FramedProtocol
from framedclient.streams import Subscription
from framedclient.validation import Count, check_argument

__all__ = ["Pipeline", "RedisClient", "RedisLease", "SentinelRedisClient"]

Arg = bytes | str | int | float
T = TypeVar("T")


def _named(error: BadArgument, call: str, names: tuple[str, ...]) -> TypeError:
    # command() names an argument by its place; a method names it as its
    # caller wrote it.  names[i] is the argument at place i + 1, the last
    # one standing for all the rest (the keys of mget, the values of lpush).
    name = names[min(error.position, len(names)) - 1]
    value = error.value
    if error.position >= len(names) and isinstance(value, (list, tuple, set)):
        # mget(["a", "b"]): one list where the method takes many arguments.
        before = "".join(f"{n}, " for n in names[:-1])
        return TypeError(
            f"{call} takes {name} as separate arguments, not one "
            f"{type(value).__name__}: {call}({before}'a', 'b') or "
            f"{call}({before}*{name}); nothing was sent"
        )
    return refusal(value, f"{call}(): {name}")


def _build(call: str, names: tuple[str, ...], args: tuple[Arg, ...]) -> bytes:
    try:
        return command(*args)
    except BadArgument as e:
        if e.position == 0:
            raise
        raise _named(e, call, names) from None


def _as_resp_error(failure: Any) -> Any:
    # A command's error reply raises RespError (a RemoteError) with
    # Redis's text and its code; other failures pass unchanged.
    error = failure.value
    if type(error) is RemoteError:
        raise RespError(error.message) from None
    return failure


def _ok(reply: RespValue) -> bool:
    # SET answers +OK, or nil when NX/XX was not met.
    return reply == b"OK"


_GET = ("get", "key")
_SET = ("set", "key", "value", "option")


def _pairs(reply: RespValue) -> dict[bytes, bytes]:
    items = reply if isinstance(reply, list) else []
    return {items[i]: items[i + 1] for i in range(0, len(items) - 1, 2)}  # type: ignore[misc]


class RedisCommands:
    """
    The commands shared by :class:`RedisClient` and :class:`RedisLease`.
    Each returns a Deferred that fires with the parsed reply, or fails with
    :class:`~framedclient.codecs.redis.RespError` for Redis's error reply
    (or with the request's other errors: timeout, connection lost, ...).
    """

    def _request(self, body: bytes, timeout: float | None) -> Deferred[Any]:
        raise NotImplementedError

    def execute(self, *args: Arg, timeout: float | None = None) -> Deferred[RespValue]:
        """
        Any command: ``execute("HINCRBY", "h", "f", 2)``.  Arguments are
        bytes, str (UTF-8), int or float; anything else (``bool``, ``None``,
        a list, a dict) raises :class:`TypeError` naming the argument, and
        nothing is sent.  Bulk strings come back as bytes, integers as int,
        nil as ``None``, arrays as lists (nested errors as
        :class:`~framedclient.codecs.redis.RespError` values).
        """
        if not args:
            raise ValueError("execute() needs a command name")
        _check_in_step(args)
        d = self._request(command(*args), timeout)
        return d.addCallbacks(parse_reply, _as_resp_error)

    def _call(self, names: tuple[str, ...], *args: Arg) -> Deferred[Any]:
        # A method's command: names[0] is the method, the rest name its
        # arguments for a refusal (see _named).
        body = _build(names[0], names[1:], args)
        return self._request(body, None).addCallbacks(parse_reply, _as_resp_error)

    def _convert(
        self, convert: Callable[[RespValue], T], names: tuple[str, ...], *args: Arg
    ) -> Deferred[T]:
        return self._call(names, *args).addCallback(convert)

    def ping(self) -> Deferred[RespValue]:
        return self.execute("PING")

    def get(self, key: Arg) -> Deferred[bytes | None]:
        if key.__class__ is bytes:
            # The everyday command, built at once: what command() makes,
            # so as trusted (the codec does not parse it again).
            body = _Command(
                b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)  # type: ignore[arg-type]
            )
            d = self._request(body, None)
            return d.addCallbacks(parse_reply, _as_resp_error)
        return self._call(_GET, "GET", key)

    def set(
        self,
        key: Arg,
        value: Arg,
        *,
        ex: float | None = None,
        px: int | None = None,
        nx: bool = False,
        xx: bool = False,
    ) -> Deferred[bool]:
        """
        ``SET``; fires with ``True`` when the value was set, ``False`` when
        ``nx``/``xx`` stopped it.

        :param ex: expire after this many seconds (whole seconds).
        :param px: expire after this many milliseconds.
        """
        args: list[Arg] = ["SET", key, value]
        if ex is not None or px is not None:
            args += _expiry(ex, px)
        if nx is not False or xx is not False:
            args += _condition(nx, xx)
        return self._convert(_ok, _SET, *args)

    def delete(self, *keys: Arg) -> Deferred[int]:
        """``DEL``: how many of ``keys`` existed."""
        return self._call(("delete", "keys"), "DEL", *keys)

    def exists(self, *keys: Arg) -> Deferred[int]:
        """``EXISTS``: how many of ``keys`` exist (a key named twice counts twice)."""
        return self._call(("exists", "keys"), "EXISTS", *keys)

    def incr(self, key: Arg, amount: int = 1) -> Deferred[int]:
        """``INCR``/``INCRBY``: the new value."""
        if amount == 1:
            return self._call(("incr", "key"), "INCR", key)
        return self._call(("incr", "key", "amount"), "INCRBY", key, amount)

    def mget(self, *keys: Arg) -> Deferred[list[bytes | None]]:
        return self._call(("mget", "keys"), "MGET", *keys)

    def mset(self, mapping: Mapping[Arg, Arg]) -> Deferred[bool]:
        args: list[Arg] = ["MSET"]
        for k, v in _items("mset", mapping):
            args += [k, v]
        return self._convert(_ok, ("mset", "a key or value of mapping"), *args)

    def expire(self, key: Arg, seconds: int) -> Deferred[bool]:
        """``EXPIRE``: whether the key exists (and now expires)."""
        return self._convert(bool, ("expire", "key", "seconds"), "EXPIRE", key, seconds)

    def ttl(self, key: Arg) -> Deferred[int]:
        """``TTL``: seconds left; -1 without expiry, -2 for a missing key."""
        return self._call(("ttl", "key"), "TTL", key)

    def hget(self, key: Arg, field: Arg) -> Deferred[bytes | None]:
        return self._call(("hget", "key", "field"), "HGET", key, field)

    def hset(self, key: Arg, mapping: Mapping[Arg, Arg]) -> Deferred[int]:
        """``HSET key field value ...``: how many fields were added."""
        args: list[Arg] = ["HSET", key]
        for k, v in _items("hset", mapping):
            args += [k, v]
        if len(args) == 2:
            raise ValueError("hset needs at least one field")
        return self._call(("hset", "key", "a field or value of mapping"), *args)

    def hgetall(self, key: Arg) -> Deferred[dict[bytes, bytes]]:
        return self._convert(_pairs, ("hgetall", "key"), "HGETALL", key)

    def lpush(self, key: Arg, *values: Arg) -> Deferred[int]:
        """``LPUSH``: the list's length after the push."""
        if not values:
            raise ValueError("lpush needs at least one value")
        return self._call(("lpush", "key", "values"), "LPUSH", key, *values)

    def rpop(self, key: Arg) -> Deferred[bytes | None]:
        return self._call(("rpop", "key"), "RPOP", key)

    def pipeline(self, timeout: float | None = None) -> Pipeline:
        """
        Commands sent as one unit, their replies returned together; see
        :class:`Pipeline`.
        """
        return Pipeline(self._request, timeout)

    def transaction(
        self, *commands: Sequence[Arg], timeout: float | None = None
    ) -> Deferred[list[RespValue] | None]:
        """
        ``MULTI``, ``commands``, ``EXEC`` as one unit: Redis runs them with
        nothing in between.  Fires with the commands' replies (an error
        reply as a :class:`~framedclient.codecs.redis.RespError` value),
        ``None`` when a key watched on this connection changed
        (:meth:`RedisLease.watch`); fails with ``RespError`` when Redis
        refused to queue a command (``EXECABORT``: nothing ran).
        """
        if not commands:
            return succeed([])
        batch = CommandBatch.of(
            [command("MULTI")]
            + [_transaction_command(c) for c in commands]
            + [command("EXEC")]
        )
        return self._request(batch, timeout).addCallback(_exec_reply)


# Commands after which the server's replies no longer pair one to one with
# the commands sent (RESP2 carries no request IDs): SUBSCRIBE and MONITOR
# make it send messages nobody asked for, CLIENT REPLY OFF/SKIP makes it
# answer nothing, HELLO 3 switches to RESP3.  On a shared connection each
# later caller would get another's reply, so they are refused at the call.
_OUT_OF_STEP = {
    "SUBSCRIBE": "it makes the server push messages no command asked for",
    "PSUBSCRIBE": "it makes the server push messages no command asked for",
    "SSUBSCRIBE": "it makes the server push messages no command asked for",
    "MONITOR": "it makes the server stream every command it runs",
}


# Command names found to keep the replies in step whatever their arguments
# (nearly every name a program uses): checked once, then one set lookup
# (a pipeline's add() checks each command).  Bounded: names are the
# caller's to choose.
_IN_STEP: set[str | bytes] = set()
_IN_STEP_MAX = 1024


def _check_in_step(args: Sequence[Arg]) -> None:
    # Only execute(), Pipeline.add() and transaction() can send these; the
    # named methods never do, and skip this.
    given = name = args[0]
    if name.__class__ is bytes:
        if name in _IN_STEP:
            return
        name = name.decode("latin-1")  # type: ignore[union-attr]
    elif name.__class__ is not str:
        return  # command() refuses it, naming it
    elif name in _IN_STEP:
        return
    upper = name.upper()  # type: ignore[union-attr]
    if (
        upper not in _OUT_OF_STEP
        and upper != "CLIENT"
        and upper != "HELLO"
        and len(_IN_STEP) < _IN_STEP_MAX
    ):
        _IN_STEP.add(given)  # type: ignore[arg-type]
        return
    why = _OUT_OF_STEP.get(upper)
    if why is None and len(args) > 1:
        second = args[1]
        if second.__class__ is bytes:
            second = second.decode("latin-1")  # type: ignore[union-attr]
        option = str(second).upper()
        if upper == "CLIENT" and option == "REPLY":
            upper = "CLIENT REPLY"
            why = "OFF and SKIP stop the replies that pair commands with callers"
        elif upper == "HELLO" and option not in ("2", "AUTH", "SETNAME"):
            why = "it switches the connection to RESP3, which RedisCodec does not read"
    if why is not None:
        raise InvalidRequest(
            f"{upper} cannot run on a shared connection: {why}, so later "
            f"replies would reach the wrong callers (RESP2 has no request "
            f"IDs); nothing was sent"
        )


def _expiry(ex: float | None, px: int | None) -> list[Arg]:
    # set()'s expiry, checked: a flag of the wrong type is refused, not
    # read as a number (True would be 1 second).
    if ex is not None and px is not None:
        raise ValueError("give ex or px, not both")
    if ex is not None:
        if (
            isinstance(ex, bool)
            or not isinstance(ex, (int, float))
            or ex != int(ex)
            or ex <= 0
        ):
            raise ValueError(
                f"ex must be a positive whole number of seconds, got {ex!r}"
            )
        return ["EX", int(ex)]
    if isinstance(px, bool) or not isinstance(px, int) or px <= 0:
        raise ValueError(
            f"px must be a positive whole number of milliseconds, got {px!r}"
        )
    return ["PX", px]


def _condition(nx: bool, xx: bool) -> list[Arg]:
    # A flag is True or False: nx="no" is refused, not read as true.
    for name, flag in (("nx", nx), ("xx", xx)):
        if flag is not True and flag is not False:
            raise TypeError(
                f"set(): {name} must be True or False, got "
                f"{type(flag).__name__} {flag!r}; nothing was sent"
            )
    if nx and xx:
        raise ValueError("nx and xx exclude each other")
    return ["NX"] if nx else ["XX"]


def _transaction_command(args: Sequence[Arg]) -> bytes:
    if isinstance(args, (bytes, str)):
        # transaction("INCR k"): one string where a command's words go.
        raise TypeError(
            f"transaction takes each command as a tuple of its words: "
            f"transaction(('SET', 'k', 1), ('INCR', 'k')), got {args!r}; "
            f"nothing was sent"
        )
    if args:
        _check_in_step(args)
    return command(*args)


def _items(call: str, mapping: Mapping[Arg, Arg]) -> Any:
    # hset/mset take field -> value pairs; a list of pairs or a string is a
    # likely slip, refused with the shape they take.
    items = getattr(mapping, "items", None)
    if items is None:
        raise TypeError(
            f"{call} takes a mapping (a dict of field -> value), got "
            f"{type(mapping).__name__}: {call}(..., {{'f': 'v'}}); nothing was sent"
        )
    return items()


def _exec_reply(parts: list[tuple[bool, bytes]]) -> list[RespValue] | None:
    ok, body = parts[-1]
    if not ok:
        queued = [b.decode("utf-8", "replace") for o, b in parts[1:-1] if not o]
        message = body.decode("utf-8", "replace")
        if queued:
            message += f" ({'; '.join(queued)})"
        raise RespError(message)
    result = parse_reply(body)
    if result is None or isinstance(result, list):
        return result
    raise RespError(f"EXEC answered {result!r}, not an array")  # pragma: no cover


class Pipeline:
    """
    Commands queued with :meth:`add`, sent by :meth:`execute` as one
    :class:`~framedclient.codecs.redis.CommandBatch`: one request, one
    connection, one timeout, exactly one reply per command back to this
    caller, in order.  Not a transaction: other clients' commands may run
    between them (use :meth:`RedisClient.transaction` for that).
    """

    def __init__(
        self,
        request: Callable[[bytes, float | None], Deferred[Any]],
        timeout: float | None,
    ) -> None:
        self._send = request
        self._timeout = timeout
        self._commands: list[bytes] = []

    def __len__(self) -> int:
        return len(self._commands)

    def add(self, *args: Arg) -> Pipeline:
        """
        Queue one command (as :meth:`RedisClient.execute` takes it);
        returns the pipeline, so calls chain.
        """
        if not args:
            raise ValueError("add() needs a command name")
        _check_in_step(args)
        self._commands.append(_command_bytes(args))
        return self

    def execute(self) -> Deferred[list[RespValue]]:
        """
        Send the queued commands; fires with their replies in order (an
        error reply as a :class:`~framedclient.codecs.redis.RespError`
        value, so one failed command hides no other reply).  The pipeline
        is empty again afterwards.
        """
        commands, self._commands = self._commands, []
        if not commands:
            return succeed([])
        d = self._send(_whole_commands(commands), self._timeout)
        return d.addCallback(parse_replies)


class RedisClient(RedisCommands, ProtocolClient):
    """
    A Redis client over a :class:`~framedclient.FramedClient` (pooled,
    self-healing connections, many commands in flight on each).

    Embedded like a ``FramedClient``
    (:class:`~framedclient.clients.base.ProtocolClient`): ``async with``,
    ``start()``/``close()``, ``when_ready()``, ``stats()``, ``metrics``, and
    :class:`~framedclient.FramedClientService` for ``twistd``/``twist``.

    :param client: a client whose codec is a
        :class:`~framedclient.codecs.redis.RedisCodec`;
        :meth:`from_endpoint` makes one.

    :ivar client: the :class:`~framedclient.FramedClient` underneath.
    """

    codec_type = RedisCodec
    default_port = 6379

    def __init__(self, client: FramedClient) -> None:
        super().__init__(client)
        self._subscriber: RedisSubscriber | SharedRedisSubscriber | None = None
        self._cache_client: Callable[[Any], FramedClient] | None = None
        self._caches: list[RedisCache] = []

    @classmethod
    @documents_settings
    # codec is declared here, narrower than ClientKeywords' Codec, so that
    # help() shows this client's default codec rather than fc1.
    def from_endpoint(  # type: ignore[misc]
        cls,
        reactor: Any,
        endpoint: str | Any,
        *,
        password: str | bytes | None = None,
        username: str | bytes | None = None,
        db: int = 0,
        codec: RedisCodec | None = None,
        protocol: int = 2,
        **options: Unpack[ClientKeywords],
    ) -> Self:
        """
        Connect to Redis at ``endpoint`` (``"tcp:127.0.0.1:6379"``, ...);
        the keywords are :meth:`FramedClient.from_endpoint`'s (``pool_size``,
        ``request_timeout``, ...), listed below.

        :param password: sent as ``AUTH`` on each new connection before it
            is used (with ``username`` for Redis 6 ACLs); a refusal is a
            failed connection attempt (retried with backoff).
        :param db: ``SELECT``-ed on each new connection.
        :param codec: a :class:`~framedclient.codecs.redis.RedisCodec`
            (default ``RedisCodec()``; ``RedisCodec(max_frame=...)`` for
            larger replies).
        :param protocol: ``2`` (RESP2, the default): pub/sub runs on
            connections of its own.  ``3``: each connection says ``HELLO
            3`` and reads RESP3 (:class:`~framedclient.codecs.resp3.Resp3Codec`,
            the default codec then), and :meth:`subscribe` and its kin
            share the client's connections, their messages arriving as
            push frames between other replies (Redis 6 or later;
            docs/redis-pubsub.md).  Replies keep RESP2's shape either way.

        A Redis Sentinel string,
        ``"redis-sentinel:HOST:PORT[,HOST:PORT...]/SERVICE"``, stands alone
        and gives what :meth:`from_sentinel` gives for those sentinels and
        that service; ``"redis-sentinel+tls:...
        /SERVICE:trustRoots=DIR"`` the same with TLS to the sentinels, the
        master and the replicas.
        """
        check_keywords(
            "RedisClient.from_endpoint", options, ("password", "username", "db")
        )
        check_argument(Count(minimum=0), "db", db, "RedisClient.from_endpoint")
        if protocol not in (2, 3) or isinstance(protocol, bool):
            raise ValueError(
                f"RedisClient.from_endpoint: protocol must be 2 (RESP2, pub/sub "
                f"on connections of its own) or 3 (RESP3, pub/sub on the shared "
                f"connections), got {protocol!r}"
            )
        if protocol == 3 and codec is not None and not isinstance(codec, Resp3Codec):
            raise TypeError(
                f"RedisClient.from_endpoint: protocol=3 reads RESP3 and needs a "
                f"Resp3Codec, got codec={codec!r}: leave codec out, or pass "
                f"Resp3Codec(max_frame=...)"
            )
        if isinstance(endpoint, str):
            found = parse_sentinel_string(endpoint)
            if found is not None:
                sentinels, service = found
                if codec is not None:
                    options["codec"] = codec
                if protocol != 2:
                    raise ValueError(
                        "protocol=3 is for a Redis at a known endpoint; a "
                        "redis-sentinel: string takes protocol=2 (the default)"
                    )
                return cls.from_sentinel(  # type: ignore[return-value]
                    reactor,
                    sentinels,
                    service,
                    password=password,
                    username=username,
                    db=db,
                    **options,
                )
        elif isinstance(endpoint, Sequence) and any(
            isinstance(e, str) and e.startswith((SCHEME, TLS_SCHEME)) for e in endpoint
        ):
            raise ValueError(
                f"a {SCHEME} string stands alone (the sentinels find the one "
                f"master), not in a list of endpoints: {list(endpoint)!r}"
            )
        if username is not None and password is None:
            raise ValueError(
                "username needs a password: pass password= too (Redis 6 ACLs "
                "authenticate with both)"
            )
        if protocol == 3 and codec is None:
            codec = Resp3Codec()
        options["codec"] = cls._codec(codec)
        setup: list[bytes] = []
        if protocol == 3:
            # HELLO 3 first, with AUTH inside it (a username is required
            # there: Redis's own user is "default").
            hello: list[bytes | str] = ["HELLO", "3"]
            if password is not None:
                hello += ["AUTH", username or "default", password]
            setup.append(command(*hello))
        elif password is not None:
            auth: list[bytes | str] = ["AUTH"]
            if username is not None:
                auth.append(username)
            auth.append(password)
            setup.append(command(*auth))
        if db:
            setup.append(command("SELECT", db))
        user_prepare = options.get("prepare")
        if setup:
            options["prepare"] = _prepare(setup, user_prepare)
        redis = cls(FramedClient.from_endpoint(reactor, endpoint, **options))

        # The cache's tracking connection: RESP3 whatever protocol says, so
        # invalidations come on the connection that reads.
        hello3: list[bytes | str] = ["HELLO", "3"]
        if password is not None:
            hello3 += ["AUTH", username or "default", password]
        tracking = [command(*hello3)]
        if db:
            tracking.append(command("SELECT", db))
        tracking.append(command("CLIENT", "TRACKING", "ON"))

        def cache_client(hook: Callable[[FramedProtocol], Any]) -> FramedClient:
            settings: dict[str, Any] = dict(options)
            settings.update(pool_size=1, codec=Resp3Codec())
            settings["prepare"] = _prepare(tracking, hook)
            return FramedClient.from_endpoint(reactor, endpoint, **settings)

        redis._cache_client = cache_client
        if protocol == 3:
            redis._subscriber = SharedRedisSubscriber(redis.client)
            return redis

        # AUTH only: a subscriber connection takes no SELECT (pub/sub
        # ignores the database) and no other command.
        auth_setup = setup[:1] if password is not None else []

        def subscriber_client() -> FramedClient:
            settings: dict[str, Any] = dict(options)
            settings.update(pool_size=1, codec=RedisPubSubCodec())
            settings["prepare"] = _prepare(auth_setup, None) if auth_setup else None
            return FramedClient.from_endpoint(reactor, endpoint, **settings)

        redis._subscriber = RedisSubscriber(subscriber_client)
        return redis

    # -- pub/sub (framedclient.clients.redis_pubsub) ----------------------------

    def subscribe(self, *channels: str | bytes, **options: Any) -> Subscription:
        """
        ``SUBSCRIBE channels`` on a connection of its own (or, with
        ``protocol=3``, on one of the client's connections): ``async for
        message in sub`` gives each message (``.channel``, ``.data``), and
        after a reconnect a marker with ``.gap`` true first; ``await
        sub.unsubscribe()`` ends it.  ``buffer_bytes=`` bounds what a lagging
        consumer costs (docs/streams.md).
        """
        return self._pubsub().subscribe("subscribe", channels, **options)

    def psubscribe(self, *patterns: str | bytes, **options: Any) -> Subscription:
        """
        ``PSUBSCRIBE patterns``, as :meth:`subscribe`; each message's
        ``.channel`` is the channel it was published to.
        """
        return self._pubsub().subscribe("psubscribe", patterns, **options)

    def ssubscribe(self, *channels: str | bytes, **options: Any) -> Subscription:
        """
        ``SSUBSCRIBE channels`` (sharded pub/sub, Redis 7), as :meth:`subscribe`.
        """
        return self._pubsub().subscribe("ssubscribe", channels, **options)

    def cache(self, max_keys: int = 10_000) -> RedisCache:
        """
        A client-side cache of ``GET`` replies on a connection of its own
        with ``CLIENT TRACKING`` (Redis 6 or later): ``await
        cache.get(key)`` answers from memory while Redis has not said the
        key changed; at most ``max_keys`` keys, least recently used first
        out; emptied when its connection is lost.  ``await cache.close()``
        closes it, and so does closing this client (docs/redis-cache.md).

        :raises ValueError: ``max_keys`` is not a positive int.
        """
        if self._cache_client is None:
            raise TypeError(
                "cache() needs the RedisClient to know its server: make it with "
                "RedisClient.from_endpoint()"
            )
        cache = RedisCache(self._cache_client, max_keys)
        self._caches.append(cache)
        return cache

    def pubsub_stats(self) -> dict[str, int]:
        """
        ``channels``: channels and patterns subscribed now;
        ``connections_lost``: times a connection carrying subscriptions was
        lost and they moved to a new one (each a gap; Redis dropping a
        subscriber at its ``client-output-buffer-limit pubsub`` is one).
        """
        if self._subscriber is None:
            return {"channels": 0, "connections_lost": 0}
        return self._subscriber.stats()

    def _pubsub(self) -> RedisSubscriber | SharedRedisSubscriber:
        if self._subscriber is None:
            raise TypeError(
                "pub/sub needs the RedisClient to know its server: make it with "
                "RedisClient.from_endpoint()"
            )
        return self._subscriber

    def close(self, timeout: float | None = None) -> Deferred[None]:
        """
        Close the client, its subscriptions, its caches and their
        connections.
        """
        closing = [cache.close(timeout) for cache in self._caches]
        self._caches = []
        if self._subscriber is not None:
            # First: subscriptions on shared connections must not subscribe
            # again when the client's connections close.
            closing.append(self._subscriber.close(timeout))
        closing.append(super().close(timeout))
        return gatherResults(closing, consumeErrors=True).addBoth(lambda _: None)

    @classmethod
    def from_sentinel(
        cls,
        reactor: Any,
        sentinels: Sequence[str] | str,
        service: str,
        *,
        password: str | bytes | None = None,
        username: str | bytes | None = None,
        db: int = 0,
        sentinel_timeout: float = 1.0,
        sentinel_password: str | bytes | None = None,
        sentinel_username: str | bytes | None = None,
        read_from_replicas: bool = False,
        tls: bool | str | None = None,
        **options: Unpack[ClientKeywords],
    ) -> SentinelRedisClient:
        """
        Connect to the master of ``service`` that Redis Sentinel names, and
        follow it through failovers (see
        :class:`SentinelRedisClient` and
        docs/redis-sentinel.md).

        :param sentinels: ``"host:port"`` or endpoint strings
            (``"tcp:10.0.0.1:26379"``), asked in turn until one names a
            master that answers ``ROLE`` as a master.
        :param service: the master's name in the sentinels' configuration
            (``sentinel monitor NAME ...``).
        :param sentinel_timeout: how long one sentinel (or the master's
            ``ROLE``) may take to answer before the next one is asked.
        :param password: for the master (not the sentinels), as
            :meth:`from_endpoint` takes it; ``username`` and ``db`` too.
        :param sentinel_password: the sentinels' own password (their
            ``requirepass``), sent as ``AUTH`` to each sentinel before any
            question; with ``sentinel_username`` for an ACL user.  Separate
            from ``password``: a deployment may protect both, either or
            none.
        :param read_from_replicas: send the read-only commands (``GET``,
            ``MGET``, ``HGETALL``...; not pipelines or transactions) to the
            replicas the sentinels list (``SENTINEL REPLICAS``) and see up
            and in sync, in turn; asked again every 5 s and on
            ``+switch-master``.  While none is usable they go to the
            master.  A replica may return a value a little older than the
            master's (replication is asynchronous).  Off by default.
        :param tls: how the master and replicas the sentinels announce are
            reached: by default as the sentinels are (a ``"tls:..."``
            sentinel's ``trustRoots``, ``certificate`` and ``privateKey``
            are used for them, each certificate checked against the
            address announced); ``False`` plain TCP; ``True`` TLS (the
            platform's trust roots unless a sentinel is ``tls:``); a string
            of options, ``"trustRoots=/etc/redis/ca"``, TLS with those.

        The other keywords are :meth:`from_endpoint`'s.  Returns at once;
        :meth:`when_ready` fires once the master is found and connected.

        :raises ValueError: no sentinel, a malformed sentinel string, an
            empty ``service``, a ``sentinel_timeout`` that is not positive,
            a ``tls`` string that is not TLS options.
        :raises TypeError: ``tls`` not a bool, a string or ``None``.
        """
        auth: list[str | bytes] = []
        if password is not None:
            auth = [username, password] if username is not None else [password]
        if sentinel_username is not None and sentinel_password is None:
            raise ValueError(
                "sentinel_username needs a sentinel_password: pass "
                "sentinel_password= too"
            )
        sentinel_auth: list[str | bytes] = []
        if sentinel_password is not None:
            sentinel_auth = [sentinel_password]
            if sentinel_username is not None:
                sentinel_auth.insert(0, sentinel_username)
        source = SentinelHosts(
            reactor,
            sentinels,
            service,
            timeout=sentinel_timeout,
            auth=auth,
            sentinel_auth=sentinel_auth,
            tls=tls,
        )
        # options' codec is typed as any Codec (ClientKeywords);
        # from_endpoint refuses one that is not a RedisCodec at run time.
        client = SentinelRedisClient.from_endpoint(
            reactor,
            source,
            password=password,
            username=username,
            db=db,
            **options,  # type: ignore[arg-type]
        )
        client.sentinel = source
        if read_from_replicas:
            replicas = SentinelReplicas(
                reactor,
                sentinels,
                service,
                timeout=sentinel_timeout,
                sentinel_auth=sentinel_auth,
                check_interval=5.0,
                tls=tls,
            )
            client.replica_hosts = replicas
            client.replicas = RedisClient.from_endpoint(
                reactor,
                replicas,
                password=password,
                username=username,
                db=db,
                **options,  # type: ignore[arg-type]
            )
        return client

    def _request(self, body: bytes, timeout: float | None) -> Deferred[Any]:
        return self.client.request(body, timeout)

    def lease(self, timeout: float | None = None) -> RedisLease:
        """
        A connection for this caller alone: ``async with redis.lease() as
        conn:``, for ``WATCH`` and what must follow it on the same
        connection.
        """
        return RedisLease(self.client.lease(timeout))


class RedisLease(RedisCommands):
    """
    A whole connection borrowed from a :class:`RedisClient`, with the same
    commands; for optimistic transactions::

        async with redis.lease() as conn:
            await conn.watch("balance")
            balance = int(await conn.get("balance") or 0)
            replies = await conn.transaction(("SET", "balance", balance + 1))
            # None: "balance" changed meanwhile; try again

    Leaving the block ``UNWATCH``-es what a transaction did not, so the
    connection goes back to the pool clean.
    """

    def __init__(self, lease: Lease) -> None:
        self._lease = lease
        self._watching = False

    async def __aenter__(self) -> RedisLease:
        await self._lease.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._watching and self._lease.protocol is not None:
                self._watching = False
                try:
                    await self._request(command("UNWATCH"), None)
                except Exception:
                    # The connection is broken; the pool replaces it.
                    pass
        finally:
            await self._lease.__aexit__(*exc)

    def _request(self, body: bytes, timeout: float | None) -> Deferred[Any]:
        return self._lease.request(body, timeout)

    def watch(self, *keys: Arg) -> Deferred[RespValue]:
        """
        ``WATCH keys``: the next :meth:`transaction` on this lease runs only
        if none of them changed meanwhile.
        """
        if not keys:
            raise ValueError("watch needs at least one key")
        body = _build("watch", ("keys",), ("WATCH", *keys))
        self._watching = True
        return self._request(body, None).addCallbacks(parse_reply, _as_resp_error)

    def transaction(
        self, *commands: Sequence[Arg], timeout: float | None = None
    ) -> Deferred[list[RespValue] | None]:
        # EXEC (or DISCARD) ends any WATCH.
        self._watching = False
        return super().transaction(*commands, timeout=timeout)


def _first_error(failure: Failure) -> Failure:
    # gatherResults wraps the first failure in FirstError.
    error = failure.value
    if isinstance(error, FirstError):
        sub: Failure = error.subFailure
        return sub
    return failure


def _prepare(
    setup: list[bytes], user_prepare: Callable[[FramedProtocol], Any] | None
) -> Callable[[FramedProtocol], Deferred[Any]]:
    def prepare(proto: FramedProtocol) -> Deferred[Any]:
        # AUTH and SELECT go out together; an error reply fails the
        # connection attempt.
        sent = [proto.request(body, math.inf) for body in setup]
        d: Deferred[Any] = gatherResults(sent, consumeErrors=True)
        d.addErrback(_first_error)
        if user_prepare is not None:
            d.addCallback(lambda _: user_prepare(proto))
        return d

    return prepare


def _is_failover_sign(failure: Failure) -> bool:
    error = failure.value
    if isinstance(error, ConnectionLost):
        return True
    return isinstance(error, RemoteError) and error.message.startswith("READONLY")


class SentinelRedisClient(RedisClient):
    """
    A :class:`~framedclient.clients.redis.RedisClient` whose master is found
    and followed through Redis Sentinel; made by
    :meth:`RedisClient.from_sentinel
    <framedclient.clients.redis.RedisClient.from_sentinel>`.

    A request that fails with ``READONLY`` or a lost connection makes it
    ask the sentinels again (at once, one question at a time); the failure
    still goes to the caller, nothing is sent again.  With
    ``read_from_replicas``, a read goes to a replica only while the
    sentinels list one and a connection to one is ready; a read that loses
    its replica's connection makes it ask for the replicas again.

    :ivar sentinel: the
        :class:`~framedclient.clients.sentinel.SentinelHosts` that finds
        the master (its ``master``, ``switches`` and ``last_error`` say
        where it stands).
    """

    sentinel: SentinelHosts
    #: with ``read_from_replicas``: the client of the usable replicas
    replicas: RedisClient | None = None
    #: with ``read_from_replicas``: the replicas' host source
    replica_hosts: SentinelReplicas | None = None

    def _request(self, body: bytes, timeout: float | None) -> Deferred[Any]:
        replicas = self.replicas
        if (
            replicas is not None
            and self.replica_hosts is not None
            and self.replica_hosts.replicas
            # A replica whose connections were lost (killed, restarting)
            # is not waited for: the master answers while they reconnect.
            and replicas.client.pool.ready_count
            and _command_name(body) in READ_ONLY_COMMANDS
        ):
            d = replicas.client.request(body, timeout)
            d.addErrback(self._replica_failed)
            return d
        d = self.client.request(body, timeout)
        d.addErrback(self._failed)
        return d

    def close(self, timeout: float | None = None) -> Deferred[None]:
        closing = [super().close(timeout)]
        if self.replicas is not None:
            closing.append(self.replicas.close(timeout))
        return gatherResults(closing, consumeErrors=True).addBoth(lambda _: None)

    def _failed(self, failure: Failure) -> Failure:
        if _is_failover_sign(failure):
            self.sentinel.refresh()
        return failure

    def _replica_failed(self, failure: Failure) -> Failure:
        # A replica lost: the sentinels may list another one by now.
        if isinstance(failure.value, ConnectionLost) and self.replica_hosts:
            self.replica_hosts.refresh()
        return failure


def _command_name(body: bytes) -> bytes | None:
    # The name of the one RESP command in body (upper case); None for a
    # batch (a pipeline or a transaction stays on the master).
    if isinstance(body, CommandBatch):
        return None
    start = body.find(b"\r\n", body.find(b"\r\n") + 2) + 2
    return body[start : body.find(b"\r\n", start)].upper()
