"""
Every exception the public API raises for a typical mistake names what was
wrong (the argument) and what to do (the fix), the way "did you mean
'pool_size'?" and ``InvalidKey``'s "nothing was sent" do: one table, one row
per call and mistake, so that a message that loses its argument or its fix
fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.task import Clock

from framedclient import (
    Delimited,
    FC1Codec,
    FramedClient,
    FramedClientService,
    HeaderCodec,
    LengthPrefixed,
    MemcacheClient,
    Netstring,
    PipelinedCodec,
    RedisClient,
)
from framedclient.codecs.memcache import MemcacheCodec
from framedclient.codecs.redis import RedisCodec
from framedclient.metrics.prometheus import PrometheusCollector
from framedclient.testing import memory_client

REDIS = "tcp:127.0.0.1:6379"
MEMCACHED = "tcp:127.0.0.1:11211"


def fc() -> FramedClient:
    client, server = memory_client()
    server.flush()
    return client


def redis() -> RedisClient:
    return RedisClient.from_endpoint(Clock(), REDIS, start=False)


def memcache() -> MemcacheClient:
    return MemcacheClient.from_endpoint(Clock(), MEMCACHED, start=False)


def raised(call: Callable[[], Any]) -> BaseException:
    """What ``call`` raised, at the call or through the Deferred it returned."""
    try:
        result = call()
    except Exception as error:
        return error
    failures: list[Any] = []
    if hasattr(result, "addErrback"):
        result.addErrback(failures.append)
    assert failures, f"no error: {result!r}"
    return failures[0].value  # type: ignore[no-any-return]


#: (mistake, the call, the exception class, texts the message must hold:
#: the argument, then the fix)
ROWS: list[tuple[str, Callable[[], Any], type[BaseException], tuple[str, ...]]] = [
    # FramedClient and from_endpoint
    (
        "a mistyped setting",
        lambda: FramedClient.from_endpoint(Clock(), "tcp:127.0.0.1:9000", pool_sise=2),
        TypeError,
        ("'pool_sise'", "did you mean 'pool_size'?"),
    ),
    (
        "an endpoint string given to the constructor",
        lambda: FramedClient("tcp:127.0.0.1:9000", Clock()),
        TypeError,
        ("endpoints", "use FramedClient.from_endpoint(reactor, 'tcp:127.0.0.1:9000')"),
    ),
    (
        "the constructor's endpoints and reactor swapped",
        lambda: FramedClient(Clock(), []),  # type: ignore[arg-type]
        TypeError,
        ("endpoints", "the endpoints come first, FramedClient(endpoints, reactor)"),
    ),
    (
        "host:port without the endpoint type",
        lambda: FramedClient.from_endpoint(Clock(), "127.0.0.1:9000"),
        ValueError,
        ("'127.0.0.1:9000'", "'tcp:127.0.0.1:9000'"),
    ),
    (
        "a Redis URL instead of an endpoint string",
        lambda: RedisClient.from_endpoint(Clock(), "redis://127.0.0.1:6379"),
        ValueError,
        ("'redis://127.0.0.1:6379'", "write 'tcp:127.0.0.1:6379'", "password=, db="),
    ),
    (
        "no endpoint at all",
        lambda: FramedClient.from_endpoint(Clock(), []),
        ValueError,
        ("at least one endpoint", "from_endpoint(reactor, 'tcp:HOST:PORT')"),
    ),
    (
        "the reactor and the endpoint swapped",
        lambda: FramedClient.from_endpoint("tcp:127.0.0.1:9000", Clock()),
        TypeError,
        ("endpoints[0]", "the reactor comes first: from_endpoint(reactor, "),
    ),
    (
        "a setting out of range",
        lambda: FramedClient.from_endpoint(Clock(), "tcp:127.0.0.1:9000", pool_size=0),
        ValueError,
        ("pool_size", "must be an integer >= 1", "got 0"),
    ),
    (
        "a duration written as text",
        lambda: FramedClient.from_endpoint(
            Clock(), "tcp:127.0.0.1:9000", request_timeout="5s"
        ),
        TypeError,
        ("request_timeout", "must be a positive, finite number of seconds"),
    ),
    (
        "a codec class instead of an instance",
        lambda: FramedClient.from_endpoint(
            Clock(), "tcp:127.0.0.1:9000", codec=FC1Codec
        ),
        TypeError,
        ("codec", "FC1Codec(), not the class FC1Codec"),
    ),
    (
        "a codec named as on the command line",
        lambda: FramedClient.from_endpoint(
            Clock(), "tcp:127.0.0.1:6379", codec="redis"
        ),
        TypeError,
        (
            "codec must be a codec",
            "got 'redis'",
            "names are the command line's",
            "RedisCodec()",
            "RedisClient.from_endpoint",
        ),
    ),
    (
        "a pick policy misspelt",
        lambda: FramedClient.from_endpoint(
            Clock(), "tcp:127.0.0.1:9000", balancer="ketema"
        ),
        ValueError,
        ("balancer", "must be one of p2c, least_loaded, round_robin, ketama"),
    ),
    # request, lease, set_endpoints
    (
        "a text body",
        lambda: fc().request("hello"),
        TypeError,
        ("body", "body.encode()"),
    ),
    (
        "a request timeout as text",
        lambda: fc().request(b"x", timeout="1"),
        TypeError,
        ("timeout", "number of seconds or None"),
    ),
    (
        "a negative request timeout",
        lambda: fc().request(b"x", timeout=-1),
        ValueError,
        ("timeout", "positive number of seconds (math.inf for none)"),
    ),
    (
        "a routing key that is a number",
        lambda: fc().request(b"x", key=5),
        TypeError,
        ("key", "got int 5", "str(key)"),
    ),
    (
        "a lease timeout as text",
        lambda: fc().lease(timeout="1"),
        TypeError,
        ("lease(): timeout", "number of seconds or None"),
    ),
    (
        "set_endpoints given host:port",
        lambda: fc().set_endpoints(["127.0.0.1:9000"]),
        ValueError,
        ("'127.0.0.1:9000'", "'tcp:127.0.0.1:9000'"),
    ),
    (
        "set_endpoints given nothing",
        lambda: fc().set_endpoints([]),
        ValueError,
        ("at least one endpoint", "close the client"),
    ),
    # RedisClient
    (
        "a Redis keyword misspelt",
        lambda: RedisClient.from_endpoint(Clock(), REDIS, pasword="s3cret"),
        TypeError,
        ("'pasword'", "did you mean 'password'?"),
    ),
    (
        "a Redis db as text",
        lambda: RedisClient.from_endpoint(Clock(), REDIS, db="1"),
        TypeError,
        ("RedisClient.from_endpoint: db", "must be an integer >= 0", "got '1'"),
    ),
    (
        "a Redis username without a password",
        lambda: RedisClient.from_endpoint(Clock(), REDIS, username="app"),
        ValueError,
        ("username", "pass password= too"),
    ),
    (
        "RedisClient.from_endpoint given another codec",
        lambda: RedisClient.from_endpoint(Clock(), REDIS, codec=MemcacheCodec()),
        TypeError,
        ("codec must be a RedisCodec", "leave it out"),
    ),
    (
        "RedisClient around an fc1 client",
        lambda: RedisClient(fc()),
        TypeError,
        ("RedisCodec", "RedisClient.from_endpoint(reactor, 'tcp:HOST:6379')"),
    ),
    (
        "mget given a list",
        lambda: redis().mget(["a", "b"]),
        TypeError,
        ("mget", "mget('a', 'b') or mget(*keys)", "nothing was sent"),
    ),
    (
        "set given a dict",
        lambda: redis().set("k", {"a": 1}),
        TypeError,
        ("value", "json.dumps(value)", "nothing was sent"),
    ),
    (
        "set given None",
        lambda: redis().set("k", None),
        TypeError,
        ("value", "leave it out, or delete the key", "nothing was sent"),
    ),
    # MemcacheClient
    (
        "a memcached keyword misspelt",
        lambda: MemcacheClient.from_endpoint(Clock(), MEMCACHED, pool_sze=2),
        TypeError,
        ("'pool_sze'", "did you mean 'pool_size'?"),
    ),
    (
        "MemcacheClient.from_endpoint given another codec",
        lambda: MemcacheClient.from_endpoint(Clock(), MEMCACHED, codec=RedisCodec()),
        TypeError,
        ("codec must be a MemcacheCodec", "leave it out"),
    ),
    (
        "MemcacheClient around an fc1 client",
        lambda: MemcacheClient(fc()),
        TypeError,
        ("MemcacheCodec", "MemcacheClient.from_endpoint(reactor, 'tcp:HOST:11211')"),
    ),
    (
        "get_many given one key",
        lambda: memcache().get_many(b"k"),
        TypeError,
        ("get_many", "get_many([key])", "nothing was sent"),
    ),
    (
        "a memcached key that is a number",
        lambda: memcache().get(5),
        TypeError,
        ("key", "got int 5", "str(key)", "nothing was sent"),
    ),
    (
        "a key with a space",
        lambda: memcache().get("a b"),
        ValueError,
        ("key", "spaces", "nothing was sent"),
    ),
    (
        "an expiry as text",
        lambda: memcache().set("k", "v", expire="10"),
        ValueError,
        ("expire", "whole number of seconds >= 0"),
    ),
    # FramedClientService
    (
        "the service given a client rather than a function",
        lambda: FramedClientService(fc()),  # type: ignore[arg-type]
        TypeError,
        ("make_client", "lambda: FramedClient.from_endpoint(..., start=False)"),
    ),
    (
        "a drain timeout as text",
        lambda: FramedClientService(fc, drain_timeout="5"),  # type: ignore[arg-type]
        TypeError,
        ("FramedClientService: drain_timeout", "number of seconds or None"),
    ),
    # PrometheusCollector
    (
        "the collector given the client",
        lambda: PrometheusCollector(fc()),  # type: ignore[arg-type]
        TypeError,
        ("metrics", "pass client.metrics instead"),
    ),
    # codecs' constructors
    (
        "fc1's max_frame as text",
        lambda: FC1Codec(max_frame="16M"),  # type: ignore[arg-type]
        TypeError,
        ("max_frame", "write 16 * 1024 * 1024"),
    ),
    (
        "fc1's max_frame below its header",
        lambda: FC1Codec(max_frame=4),
        ValueError,
        ("max_frame", "at least 13 bytes (the fc1 header)"),
    ),
    (
        "RESP's max_frame as text",
        lambda: RedisCodec(max_frame="16M"),  # type: ignore[arg-type]
        TypeError,
        ("max_frame", "write 16 * 1024 * 1024"),
    ),
    (
        "memcached's max_frame as text",
        lambda: MemcacheCodec(max_frame="16M"),  # type: ignore[arg-type]
        TypeError,
        ("max_frame", "write 16 * 1024 * 1024"),
    ),
    (
        "a header codec given a framer instead of a factory",
        lambda: HeaderCodec(
            LengthPrefixed(),  # type: ignore[arg-type]
            header_size=8,
            id_offset=0,
            id_size=4,
        ),
        TypeError,
        ("framer_factory", "pass the class (LengthPrefixed)", "lambda: LengthPrefixed"),
    ),
    (
        "a header codec whose ID field overflows the header",
        lambda: HeaderCodec(LengthPrefixed, header_size=4, id_offset=2, id_size=4),
        ValueError,
        ("id field", "must lie inside the 4-byte header"),
    ),
    (
        "a header size as text",
        lambda: HeaderCodec(
            LengthPrefixed,
            header_size="8",  # type: ignore[arg-type]
            id_offset=0,
            id_size=4,
        ),
        TypeError,
        ("header_size", "must be an int", "got str '8'"),
    ),
    (
        "a pipelined codec given an error prefix instead of a function",
        lambda: PipelinedCodec(Delimited, is_error="ERR"),  # type: ignore[arg-type]
        TypeError,
        ("is_error", "must be a function", "is_error=lambda frame:"),
    ),
    (
        "a pipelined codec given a framer instead of a factory",
        lambda: PipelinedCodec(Delimited()),  # type: ignore[arg-type]
        TypeError,
        ("framer_factory", "pass the class (Delimited)"),
    ),
    # framers' constructors
    (
        "a length field of 5 bytes",
        lambda: LengthPrefixed(length_size=5),
        ValueError,
        ("length_size", "must be 1, 2, 3, 4 or 8"),
    ),
    (
        "a length field size as text",
        lambda: LengthPrefixed(length_size="4"),  # type: ignore[arg-type]
        ValueError,
        ("length_size", "(an int", "not '4'"),
    ),
    (
        "a byte order by another name",
        lambda: LengthPrefixed(byteorder="network"),  # type: ignore[arg-type]
        ValueError,
        ("byteorder", '"big" or "little"'),
    ),
    (
        "a framer's max_frame as text",
        lambda: LengthPrefixed(max_frame="16M"),  # type: ignore[arg-type]
        TypeError,
        ("max_frame", "write 16 * 1024 * 1024"),
    ),
    (
        "a text delimiter",
        lambda: Delimited("\n"),  # type: ignore[arg-type]
        TypeError,
        ("delimiter", "write it as bytes (b'\\n'"),
    ),
    (
        "a netstring max_frame as text",
        lambda: Netstring("1M"),  # type: ignore[arg-type]
        TypeError,
        ("max_frame", "write 16 * 1024 * 1024"),
    ),
]


@pytest.mark.parametrize(
    ("call", "kind", "texts"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_a_typical_mistake_names_the_argument_and_the_fix(
    call: Callable[[], Any], kind: type[BaseException], texts: tuple[str, ...]
) -> None:
    error = raised(call)
    assert isinstance(error, kind), f"{type(error).__name__}: {error}"
    message = str(error)
    for text in texts:
        assert text in message, f"{text!r} is not in {message!r}"
