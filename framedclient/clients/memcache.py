"""
:class:`MemcacheClient`: memcached's binary protocol through
:class:`~framedclient.FramedClient` (pooled, self-healing connections, many
requests in flight on each, replies matched by the opaque field).

Import it from :mod:`framedclient` (``from framedclient import
MemcacheClient``)::

    mc = MemcacheClient.from_endpoint(reactor, "tcp:127.0.0.1:11211")
    await mc.set(b"k", b"v", expire=60)
    await mc.get(b"k")                      # b"v"; None on a miss
    await mc.get_many([b"k", b"other"])     # {b"k": b"v"}
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, Unpack

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from framedclient.client import ClientKeywords, FramedClient
from framedclient.clients.base import ProtocolClient, check_keywords
from framedclient.codecs.arguments import argument_bytes
from framedclient.codecs.base import Message
from framedclient.codecs.memcache import (
    GetMany,
    KeyExists,
    KeyNotFound,
    MemcacheCodec,
    NotStored,
    Opcode,
    _Reply,
)
from framedclient.config import documents_settings
from framedclient.errors import InvalidRequest

__all__ = ["MAX_KEY_LENGTH", "InvalidKey", "MemcacheClient"]

#: memcached's longest key, in bytes.
MAX_KEY_LENGTH = 250

_FLAGS_EXPIRE = struct.Struct(">II")
_COUNTER = struct.Struct(">QQI")
_EXPIRE = struct.Struct(">I")
_U64 = struct.Struct(">Q")
# INCR/DECR with this expiration fail on a missing key instead of creating it.
_NO_CREATE = 0xFFFFFFFF
# Bytes no key may hold: space and the control characters (memcached's
# text protocol cannot carry them, and the binary one is kept compatible).
_BAD_KEY_BYTES = bytes(range(0x21)) + b"\x7f"

Key = bytes | str
#: What a value may be: the rule of :mod:`framedclient.codecs.arguments`,
#: the same as Redis arguments (str as UTF-8, numbers in decimal).
Value = bytes | str | int | float


class InvalidKey(InvalidRequest):
    """
    A key memcached cannot take (empty, over 250 bytes, with a space or a
    control byte).  Raised at the call; nothing was sent.
    """


def check_key(key: Key, what: str = "key") -> bytes:
    """
    ``key`` as bytes, checked.

    :param what: names the key in an error message (``"get_many(): a key"``).

    :raises InvalidKey: empty, longer than :data:`MAX_KEY_LENGTH` bytes, or
        holding a space or a control byte.
    :raises TypeError: neither bytes nor str.
    """
    if (
        key.__class__ is bytes
        and 0 < len(key) <= MAX_KEY_LENGTH
        and key.translate(None, _BAD_KEY_BYTES) == key
    ):
        return key  # the usual key, in one test
    if isinstance(key, str):
        key = key.encode("utf-8")
    elif not isinstance(key, bytes):
        raise TypeError(
            f"{what} must be bytes or str, got {type(key).__name__} {key!r:.40}: "
            f"convert it first (str(key)); nothing was sent"
        )
    if not key:
        raise InvalidKey("a memcached key cannot be empty; nothing was sent")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(
            f"a memcached key is at most {MAX_KEY_LENGTH} bytes, this one has "
            f"{len(key)} ({key[:20]!r}...); nothing was sent"
        )
    if key.translate(None, _BAD_KEY_BYTES) != key:
        raise InvalidKey(
            f"a memcached key cannot hold spaces or control bytes: {key!r}; "
            f"nothing was sent"
        )
    return key


def _check_number(name: str, value: object, limit: int) -> None:
    # A whole number in 0..limit-1; a bool or a str is refused, not read
    # as a number (True would be 1) or compared (a TypeError naming nothing).
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
        raise ValueError(
            f"{name} must be a whole number in 0..{limit - 1}, got {value!r}"
        )


def _check_expire(expire: int) -> int:
    if isinstance(expire, bool) or not isinstance(expire, int) or expire < 0:
        raise ValueError(
            f"expire must be a whole number of seconds >= 0, got {expire!r}"
        )
    return expire


def _value(reply: Message) -> bytes:
    if reply.__class__ is _Reply:
        return reply.value  # type: ignore[attr-defined, no-any-return]
    return reply.parts["value"]


def _on(errors: tuple[type[Exception], ...], result: Any) -> Any:
    # What a method returns instead of failing for these statuses.
    def handle(failure: Failure) -> Any:
        failure.trap(*errors)  # type: ignore[no-untyped-call]
        return result

    return handle


# get()'s: made once, not per call.
_none_on_miss = _on((KeyNotFound,), None)


def _true(_: object) -> bool:
    return True


def _cas_of(reply: Message) -> tuple[bytes, int]:
    return reply.parts["value"], reply.fields["cas"]


def _counter(reply: Message) -> int:
    (value,) = _U64.unpack(reply.parts["value"])
    return int(value)


def _hits(replies: list[Any]) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    for reply in replies:
        if reply.__class__ is _Reply:
            # The usual hit: its key and value sliced, no parts made.
            found[reply.key] = reply.value
            continue
        if isinstance(reply, Exception):
            raise reply
        found[reply.parts["key"]] = reply.parts["value"]
    return found


class MemcacheClient(ProtocolClient):
    """
    A memcached client (binary protocol) over a
    :class:`~framedclient.FramedClient`, embedded like one
    (:class:`~framedclient.clients.base.ProtocolClient`: ``async with``,
    ``start()``/``close()``, ``when_ready()``, ``stats()``, ``metrics``,
    :class:`~framedclient.FramedClientService`).

    Every method checks its keys first (:class:`InvalidKey`, nothing sent)
    and returns a Deferred.  A status other than success fails it with the
    :class:`~framedclient.codecs.memcache.MemcacheError` subclass for that
    status (``ValueTooLarge``, ``NonNumericValue``, ...; ``code`` is the
    status), except where a method says what it returns instead (a miss is
    ``None``, a refused ``add`` is ``False``).

    :param client: a client whose codec is a
        :class:`~framedclient.codecs.memcache.MemcacheCodec`;
        :meth:`from_endpoint` makes one.
    :ivar client: the :class:`~framedclient.FramedClient` underneath.
    """

    codec_type = MemcacheCodec
    default_port = 11211

    @classmethod
    @documents_settings
    # codec is declared here, narrower than ClientKeywords' Codec, so that
    # help() shows this client's default codec rather than fc1.
    def from_endpoint(  # type: ignore[misc]
        cls,
        reactor: Any,
        endpoint: str | Any,
        *,
        codec: MemcacheCodec | None = None,
        **options: Unpack[ClientKeywords],
    ) -> MemcacheClient:
        """
        Connect to memcached at ``endpoint`` (``"tcp:127.0.0.1:11211"``);
        the keywords are :meth:`FramedClient.from_endpoint`'s, listed below.

        :param codec: a :class:`~framedclient.codecs.memcache.MemcacheCodec`
            (default ``MemcacheCodec()``).
        """
        check_keywords("MemcacheClient.from_endpoint", options, ())
        options["codec"] = cls._codec(codec)
        return cls(FramedClient.from_endpoint(reactor, endpoint, **options))

    def _send(
        self,
        opcode: int,
        key: bytes = b"",
        value: bytes = b"",
        extras: bytes = b"",
        cas: int = 0,
    ) -> Deferred[Any]:
        fields = {"opcode": opcode}
        if cas:
            fields["cas"] = cas
        parts = {"key": key}
        if value:
            parts["value"] = value
        if extras:
            parts["extras"] = extras
        return self.client.request(Message(fields=fields, parts=parts))

    # -- reading -------------------------------------------------------------

    def get(self, key: Key) -> Deferred[bytes | None]:
        """The value, or ``None`` on a miss."""
        # A bytes body is a GET of that key (the codec's short path).
        d = self.client.request(check_key(key))
        return d.addCallbacks(_value, _none_on_miss)

    def gets(self, key: Key) -> Deferred[tuple[bytes, int] | None]:
        """``(value, cas)``, or ``None`` on a miss; ``cas`` is for :meth:`cas`."""
        d = self._send(Opcode.GET, check_key(key))
        return d.addCallbacks(_cas_of, _on((KeyNotFound,), None))

    def get_many(self, keys: Iterable[Key]) -> Deferred[dict[bytes, bytes]]:
        """
        The values of the keys that exist, in one request (quiet gets and a
        ``NOOP``: memcached sends nothing for a miss).
        """
        if isinstance(keys, (bytes, str)) or not hasattr(keys, "__iter__"):
            # get_many(b"k") would take b"k" as the keys 107; "abc" as three.
            raise TypeError(
                f"get_many takes a list of keys, got one {type(keys).__name__} "
                f"{keys!r:.40}: get_many([key]) (or get(key) for one); nothing "
                f"was sent"
            )
        checked = [check_key(k, "get_many(): each key") for k in keys]
        if not checked:
            return succeed({})
        return self.client.request(GetMany(checked)).addCallback(_hits)

    # -- writing -------------------------------------------------------------

    def _store(
        self,
        call: str,
        opcode: int,
        key: Key,
        value: Value,
        flags: int,
        expire: int,
        cas: int = 0,
    ) -> Deferred[Any]:
        if value.__class__ is not bytes:
            value = argument_bytes(value, f"{call}(): value")
        if flags.__class__ is not int or not 0 <= flags <= 0xFFFFFFFF:
            _check_number("flags", flags, 2**32)
        extras = _FLAGS_EXPIRE.pack(flags, _check_expire(expire))
        return self._send(opcode, check_key(key), value, extras, cas)  # type: ignore[arg-type]

    def set(
        self, key: Key, value: Value, flags: int = 0, expire: int = 0
    ) -> Deferred[bool]:
        """
        Store ``value`` (``expire``: seconds, or a Unix time past 30 days;
        0 for never); fires with ``True`` once stored, as
        :meth:`RedisClient.set <framedclient.clients.redis.RedisClient.set>`
        does.  ``value`` is bytes, str (UTF-8), int or float, as a Redis
        argument; anything else raises :class:`TypeError`, nothing sent.
        """
        d = self._store("set", Opcode.SET, key, value, flags, expire)
        return d.addCallback(_true)

    def add(
        self, key: Key, value: Value, flags: int = 0, expire: int = 0
    ) -> Deferred[bool]:
        """Store only if the key is absent: ``False`` if it exists."""
        d = self._store("add", Opcode.ADD, key, value, flags, expire)
        return d.addCallbacks(_true, _on((KeyExists,), False))

    def replace(
        self, key: Key, value: Value, flags: int = 0, expire: int = 0
    ) -> Deferred[bool]:
        """Store only if the key exists: ``False`` if it is absent."""
        d = self._store("replace", Opcode.REPLACE, key, value, flags, expire)
        return d.addCallbacks(_true, _on((KeyNotFound, NotStored), False))

    def cas(
        self, key: Key, value: Value, cas: int, flags: int = 0, expire: int = 0
    ) -> Deferred[bool]:
        """
        Store only if the item is unchanged since :meth:`gets` returned
        ``cas``: ``False`` if it changed or is gone.
        """
        if isinstance(cas, bool) or not isinstance(cas, int) or not 0 < cas < 2**64:
            raise ValueError(f"cas must be the number gets() returned, got {cas!r}")
        d = self._store("cas", Opcode.SET, key, value, flags, expire, cas)
        return d.addCallbacks(_true, _on((KeyExists, KeyNotFound), False))

    def delete(self, key: Key) -> Deferred[bool]:
        """``True`` if the key existed."""
        d = self._send(Opcode.DELETE, check_key(key))
        return d.addCallbacks(_true, _on((KeyNotFound,), False))

    def touch(self, key: Key, expire: int) -> Deferred[bool]:
        """A new expiration time for ``key``: ``False`` if it is absent."""
        extras = _EXPIRE.pack(_check_expire(expire))
        d = self._send(Opcode.TOUCH, check_key(key), extras=extras)
        return d.addCallbacks(_true, _on((KeyNotFound,), False))

    def _counter(
        self, opcode: int, key: Key, delta: int, initial: int | None, expire: int
    ) -> Deferred[int]:
        if (
            isinstance(delta, bool)
            or not isinstance(delta, int)
            or not 0 <= delta < 2**64
        ):
            raise ValueError(
                f"delta must be a whole number in 0..2**64-1, got {delta!r}"
            )
        if initial is None:
            extras = _COUNTER.pack(delta, 0, _NO_CREATE)
        else:
            _check_number("initial", initial, 2**64)
            extras = _COUNTER.pack(delta, initial, _check_expire(expire))
        d = self._send(opcode, check_key(key), extras=extras)
        return d.addCallback(_counter)

    def incr(
        self, key: Key, delta: int = 1, initial: int | None = None, expire: int = 0
    ) -> Deferred[int]:
        """
        Add ``delta`` to a counter (wrapping at 2**64); the new value.  A
        missing key fails with ``KeyNotFound``, unless ``initial`` is given:
        then it is created with that value (and ``expire``).
        """
        return self._counter(Opcode.INCREMENT, key, delta, initial, expire)

    def decr(
        self, key: Key, delta: int = 1, initial: int | None = None, expire: int = 0
    ) -> Deferred[int]:
        """Like :meth:`incr`, subtracting; a counter stops at 0."""
        return self._counter(Opcode.DECREMENT, key, delta, initial, expire)

    def version(self) -> Deferred[str]:
        """The server's version string."""
        d = self._send(Opcode.VERSION)
        return d.addCallback(
            lambda reply: reply.parts["value"].decode("ascii", "replace")
        )
