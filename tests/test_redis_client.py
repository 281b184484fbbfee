"""
:class:`RedisClient` against a real redis-server: every command it offers,
pipelines and transactions, AUTH/SELECT on connect, and load: each reply
reaches its own caller, whatever the callers send and whatever the server
does.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from framedclient import FramedClient
from framedclient.clients.redis import RedisClient, RedisCommands
from framedclient.codecs.redis import (
    CommandBatch,
    RedisCodec,
    ReplyDiscarded,
    RespError,
    command,
    parse_reply,
)
from framedclient.errors import (
    ConnectFailed,
    ConnectionLost,
    InvalidRequest,
    RemoteError,
    RequestTimeout,
    RequestTooLarge,
    Unavailable,
)

from .servers import redis_server


@pytest.fixture
def server(tmp_path):
    with redis_server(str(tmp_path)) as server:
        yield server


@pytest_twisted.async_yield_fixture
async def redis(server):
    client = RedisClient.from_endpoint(
        reactor, f"tcp:127.0.0.1:{server.port}", pool_size=2, request_timeout=10.0
    )
    await client.when_ready()
    yield client
    await client.close(timeout=2)


def endpoint(server) -> str:
    return f"tcp:127.0.0.1:{server.port}"


# -- the bug this client exists for ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_raw_body_of_two_commands_is_refused_and_nothing_is_sent(server):
    client = FramedClient.from_endpoint(
        reactor, endpoint(server), codec=RedisCodec(), pool_size=1
    )
    try:
        await client.when_ready()
        await client.request(command("SET", "a", "1"))
        two = command("SET", "b", "2") + command("PING")
        with pytest.raises(InvalidRequest, match="exactly one Redis command"):
            await client.request(two)
        # The next caller gets its own reply, and nothing of the refused
        # body reached the server.
        assert parse_reply(await client.request(command("GET", "a"))) == b"1"
        assert parse_reply(await client.request(command("EXISTS", "b"))) == 0
    finally:
        await client.close(timeout=2)


# -- every command -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_strings_set_get_delete_exists(redis):
    assert await redis.ping() == b"PONG"
    assert await redis.get("missing") is None
    assert await redis.set("k", "v") is True
    assert await redis.get("k") == b"v"
    assert await redis.exists("k", "k", "missing") == 2
    assert await redis.delete("k", "missing") == 1
    assert await redis.exists("k") == 0


@pytest_twisted.ensureDeferred
async def test_set_nx_xx_ex_px(redis):
    assert await redis.set("k", "1", xx=True) is False
    assert await redis.get("k") is None
    assert await redis.set("k", "1", nx=True) is True
    assert await redis.set("k", "2", nx=True) is False
    assert await redis.set("k", "3", xx=True, ex=100) is True
    assert await redis.get("k") == b"3"
    assert 98 <= await redis.ttl("k") <= 100
    assert await redis.set("p", "x", px=100_000) is True
    assert 98 <= await redis.ttl("p") <= 100
    with pytest.raises(ValueError, match="exclude"):
        redis.set("k", "v", nx=True, xx=True)
    with pytest.raises(ValueError, match="ex or px"):
        redis.set("k", "v", ex=1, px=1)


@pytest_twisted.ensureDeferred
async def test_incr_mget_mset_expire_ttl(redis):
    assert await redis.incr("n") == 1
    assert await redis.incr("n", 10) == 11
    assert await redis.incr("n", -12) == -1
    assert await redis.mset({"a": "1", b"b": b"2", "c": 3}) is True
    assert await redis.mget("a", "missing", "b", "c") == [b"1", None, b"2", b"3"]
    assert await redis.ttl("a") == -1
    assert await redis.ttl("missing") == -2
    assert await redis.expire("a", 50) is True
    assert await redis.expire("missing", 50) is False
    assert 48 <= await redis.ttl("a") <= 50


@pytest_twisted.ensureDeferred
async def test_hashes_and_lists(redis):
    assert await redis.hset("h", {"f1": "v1", "f2": b"v2"}) == 2
    assert await redis.hset("h", {"f1": "new"}) == 0
    assert await redis.hget("h", "f1") == b"new"
    assert await redis.hget("h", "nope") is None
    assert await redis.hgetall("h") == {b"f1": b"new", b"f2": b"v2"}
    assert await redis.hgetall("missing") == {}
    assert await redis.lpush("l", "a", "b", "c") == 3
    assert await redis.rpop("l") == b"a"
    assert await redis.rpop("l") == b"b"
    assert await redis.rpop("l") == b"c"
    assert await redis.rpop("l") is None


@pytest_twisted.ensureDeferred
async def test_execute_any_command_and_nested_replies(redis):
    await redis.execute("RPUSH", "l", "x", 1, 2.5)
    assert await redis.execute("LRANGE", "l", 0, -1) == [b"x", b"1", b"2.5"]
    assert await redis.execute("HINCRBY", "h", "f", 2) == 2
    with pytest.raises(ValueError, match="command name"):
        redis.execute()


@pytest_twisted.ensureDeferred
async def test_error_replies_raise_resp_error_with_code_and_text(redis):
    await redis.set("s", "text")
    with pytest.raises(RespError) as info:
        await redis.lpush("s", "x")
    assert info.value.prefix == "WRONGTYPE"
    assert "WRONGTYPE" in info.value.message
    assert isinstance(info.value, RemoteError)  # one failure vocabulary
    with pytest.raises(RespError, match="not an integer") as info:
        await redis.incr("s")
    assert info.value.prefix == "ERR"
    with pytest.raises(RespError, match="unknown command"):
        await redis.execute("NO-SUCH-COMMAND")
    # The connection carries on.
    assert await redis.get("s") == b"text"


# -- values --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_binary_safe_keys_and_values(redis):
    every_byte = bytes(range(256))
    tricky = [b"", b"\r\n", b"$3\r\nabc\r\n", b"*1\r\n", b"\x00" * 100, every_byte]
    for i, value in enumerate(tricky):
        key = b"k\r\n\x00" + bytes([i])
        assert await redis.set(key, value) is True
        assert await redis.get(key) == value
    assert await redis.hset(every_byte, {every_byte: every_byte}) == 1
    assert await redis.hgetall(every_byte) == {every_byte: every_byte}


@pytest_twisted.ensureDeferred
async def test_values_near_the_limit_pass_and_over_it_fail_alone(server):
    limit = 256 * 1024
    redis = RedisClient.from_endpoint(
        reactor, endpoint(server), codec=RedisCodec(max_frame=limit), pool_size=1
    )
    try:
        await redis.when_ready()
        # The SET request (value plus about 40 bytes) fits, and so does
        # the GET reply ("$<n>\r\n" + value + "\r\n").
        fits = b"v" * (limit - 64)
        assert await redis.set("fits", fits) is True
        assert await redis.get("fits") == fits
        # A request too large for the codec: refused, nothing sent.
        with pytest.raises(RequestTooLarge):
            await redis.set("big", b"x" * limit)
        # A reply too large (appended to past the limit on the server):
        # that request fails, the connection and the next request carry on.
        await redis.execute("APPEND", "fits", b"y" * 64)
        with pytest.raises(ReplyDiscarded, match=r"reply discarded.*max_"):
            await redis.get("fits")
        assert await redis.ping() == b"PONG"
        # In a pipeline, it takes that reply's place; the others arrive.
        replies = await redis.pipeline().add("GET", "fits").add("PING").execute()
        assert isinstance(replies[0], ReplyDiscarded) and replies[1] == b"PONG"
        assert redis.client.stats()["connections"] == {"ready": 1}
        assert await redis.execute("STRLEN", "fits") == len(fits) + 64
    finally:
        await redis.close(timeout=2)


@pytest_twisted.ensureDeferred
async def test_an_array_over_max_array_fails_alone(server):
    redis = RedisClient.from_endpoint(
        reactor, endpoint(server), codec=RedisCodec(max_array=100), pool_size=1
    )
    try:
        await redis.when_ready()
        await redis.lpush("l", *range(101))
        assert len(await redis.execute("LRANGE", "l", 0, 99)) == 100
        with pytest.raises(ReplyDiscarded, match="101 elements exceeds max_array=100"):
            await redis.execute("LRANGE", "l", 0, -1)
        assert await redis.ping() == b"PONG"
    finally:
        await redis.close(timeout=2)


# -- pipelines and transactions ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_pipeline_returns_exactly_its_replies_in_order(redis):
    pipe = redis.pipeline()
    pipe.add("SET", "a", "1").add("INCR", "a").add("LPUSH", "a", "x").add("GET", "a")
    assert len(pipe) == 4
    other = redis.get("a")  # concurrently, from another caller
    replies = await pipe.execute()
    assert replies[:2] == [b"OK", 2]
    assert isinstance(replies[2], RespError) and replies[2].prefix == "WRONGTYPE"
    assert replies[3] == b"2"
    assert await other in (None, b"1", b"2")
    assert len(pipe) == 0 and await pipe.execute() == []


@pytest_twisted.ensureDeferred
async def test_many_pipelines_and_single_commands_interleaved(redis):
    pipes = []
    for p in range(200):
        pipe = redis.pipeline()
        for i in range(5):
            pipe.add("SET", f"p{p}:{i}", f"{p}.{i}")
            pipe.add("GET", f"p{p}:{i}")
        pipes.append(pipe.execute())
    singles = [redis.ping() for _ in range(200)]
    results = await gatherResults(pipes)
    for p, replies in enumerate(results):
        assert replies == [b"OK", b"%d.%d" % (p, i)] * 0 + [
            v for i in range(5) for v in (b"OK", b"%d.%d" % (p, i))
        ]
    assert set(await gatherResults(singles)) == {b"PONG"}


@pytest_twisted.ensureDeferred
async def test_a_timed_out_pipeline_leaves_the_next_caller_its_own_reply(server):
    redis = RedisClient.from_endpoint(reactor, endpoint(server), pool_size=1)
    try:
        await redis.when_ready()
        pipe = redis.pipeline(timeout=0.2)
        # BLPOP blocks the connection for 0.5 s: the pipeline times out
        # first; its replies still come, and must not reach anyone else.
        pipe.add("BLPOP", "nothing", "0.5").add("SET", "x", "1").add("GET", "x")
        late = pipe.execute()
        mine = redis.get("mine")
        with pytest.raises(RequestTimeout):
            await late
        assert await mine is None
        assert await redis.get("x") == b"1"
        stats = redis.client.stats()
        assert stats["in_flight"] == 0
    finally:
        await redis.close(timeout=2)


@pytest_twisted.ensureDeferred
async def test_a_transaction_runs_its_commands_together(redis):
    replies = await redis.transaction(("SET", "t", "1"), ("INCR", "t"), ("GET", "t"))
    assert replies == [b"OK", 2, b"2"]
    # A runtime error is one reply; the others ran.
    replies = await redis.transaction(("LPUSH", "t", "x"), ("INCR", "t"))
    assert isinstance(replies[0], RespError) and replies[1] == 3
    # A command Redis refuses to queue aborts the whole transaction.
    with pytest.raises(RespError, match="EXECABORT") as info:
        await redis.transaction(("SET", "t", "9"), ("NO-SUCH-COMMAND",))
    assert info.value.prefix == "EXECABORT"
    assert await redis.get("t") == b"3"
    assert await redis.transaction() == []


@pytest_twisted.ensureDeferred
async def test_watch_on_a_lease_aborts_when_the_key_changes(redis):
    await redis.set("balance", "10")
    async with redis.lease() as conn:
        await conn.watch("balance")
        balance = int(await conn.get("balance"))
        # Someone else changes it meanwhile, on another connection.
        await redis.set("balance", "100")
        assert await conn.transaction(("SET", "balance", balance + 1)) is None
    assert await redis.get("balance") == b"100"
    async with redis.lease() as conn:
        await conn.watch("balance")
        balance = int(await conn.get("balance"))
        assert await conn.transaction(("SET", "balance", balance + 1)) == [b"OK"]
    assert await redis.get("balance") == b"101"


@pytest_twisted.ensureDeferred
async def test_a_lease_left_while_watching_is_unwatched(server):
    redis = RedisClient.from_endpoint(reactor, endpoint(server), pool_size=1)
    try:
        await redis.when_ready()
        async with redis.lease() as conn:
            await conn.watch("w")
        await redis.set("w", "changed")
        # Same (only) connection: a transaction now must not see the old WATCH.
        assert await redis.transaction(("SET", "w", "mine")) == [b"OK"]
    finally:
        await redis.close(timeout=2)


# -- AUTH and SELECT through prepare --------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_auth_and_select_run_on_each_new_connection(tmp_path):
    with redis_server(str(tmp_path), "--requirepass", "s3cret") as server:
        redis = RedisClient.from_endpoint(
            reactor, endpoint(server), password="s3cret", db=3, pool_size=2
        )
        plain = RedisClient.from_endpoint(
            reactor, endpoint(server), password="s3cret", pool_size=1
        )
        try:
            await redis.when_ready()
            await plain.when_ready()
            await redis.set("where", "db3")
            assert await plain.get("where") is None
            assert await plain.execute("SELECT", 3) == b"OK"
            assert await plain.get("where") == b"db3"
            # AUTH and SELECT took no slot, and gave none back.
            await gatherResults([redis.ping() for _ in range(10)])
            assert redis.client.in_flight == 0
            assert redis.client.stats()["connections"] == {"ready": 2}
        finally:
            await redis.close(timeout=2)
            await plain.close(timeout=2)


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_fails_the_connection_attempt(tmp_path):
    with redis_server(str(tmp_path), "--requirepass", "s3cret") as server:
        redis = RedisClient.from_endpoint(
            reactor, endpoint(server), password="wrong", pool_size=1
        )
        try:
            with pytest.raises(ConnectFailed, match="WRONGPASS"):
                await redis.client.when_ready(fail_after=1)
        finally:
            await redis.close(timeout=2)


def test_from_endpoint_checks_its_arguments():
    with pytest.raises(ValueError, match="db"):
        RedisClient.from_endpoint(reactor, "tcp:127.0.0.1:1", db=-1, start=False)
    with pytest.raises(ValueError, match="username needs a password"):
        RedisClient.from_endpoint(reactor, "tcp:127.0.0.1:1", username="u", start=False)
    from framedclient.codecs import FC1Codec

    with pytest.raises(TypeError, match="RedisCodec"):
        RedisClient.from_endpoint(
            reactor, "tcp:127.0.0.1:1", codec=FC1Codec(), start=False
        )


# -- load -----------------------------------------------------------------------------


def expect_arity_error(failure):
    if failure.check(RespError):
        return "wrong number of arguments" in failure.value.message
    return failure  # another failure (a lost connection) stays one


def mixed_operation(redis, i: int) -> Deferred:
    """
    One of several request shapes, checked against what it must return.
    """
    kind = i % 6
    key = f"load:{i}"
    value = b"%d:" % i + bytes([i % 256]) * (i % 50)
    if kind == 0:
        return redis.set(key, value).addCallback(lambda r: r is True)
    if kind == 1:
        return redis.execute("ECHO", value).addCallback(lambda r: r == value)
    if kind == 2:
        return redis.incr(f"counter:{i % 7}").addCallback(lambda r: r >= 1)
    if kind == 3:
        pipe = redis.pipeline().add("SET", key, value).add("GET", key)
        return pipe.execute().addCallback(lambda r: r == [b"OK", value])
    if kind == 4:
        # An error reply, which must reach this caller only.
        return redis.execute("GET", key, "extra").addCallbacks(
            lambda r: False, expect_arity_error
        )
    return redis.execute("ECHO", str(i)).addCallback(lambda r: r == str(i).encode())


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_ten_thousand_concurrent_mixed_requests_each_get_their_own_reply(server):
    redis = RedisClient.from_endpoint(
        reactor,
        endpoint(server),
        pool_size=4,
        max_in_flight=20_000,
        max_pending=20_000,
        request_timeout=60.0,
    )
    try:
        await redis.when_ready()
        results = await gatherResults(
            [mixed_operation(redis, i) for i in range(10_000)]
        )
        wrong = [i for i, ok in enumerate(results) if not ok]
        assert wrong == []
        assert redis.client.in_flight == 0
    finally:
        await redis.close(timeout=5)


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_a_server_restart_mid_load_loses_nothing_and_mixes_nothing(server):
    redis = RedisClient.from_endpoint(
        reactor,
        endpoint(server),
        pool_size=2,
        max_in_flight=20_000,
        max_pending=20_000,
        request_timeout=20.0,
    )
    try:
        await redis.when_ready()
        ds = []
        for wave in range(10):
            ds += [mixed_operation(redis, wave * 1000 + i) for i in range(1000)]
            if wave == 4:
                # SIGKILL with requests on the wire and replies half read;
                # the restart runs in a thread, the reactor keeps going.
                await deferToThread(server.restart)
            else:
                await deferLater(reactor, 0, lambda: None)
        outcomes = await DeferredList(ds, consumeErrors=True)
        ok = failed = 0
        for i, (success, result) in enumerate(outcomes):
            if success:
                # A reply is never someone else's.
                assert result is True, f"request {i} got a wrong reply"
                ok += 1
            else:
                # A failure is a clean, named one.
                assert result.check(ConnectionLost, Unavailable), result
                failed += 1
        assert ok + failed == len(ds)
        assert ok > len(ds) // 2
        assert redis.client.in_flight == 0
        assert await redis.ping() == b"PONG"
    finally:
        await redis.close(timeout=5)


@pytest_twisted.ensureDeferred
async def test_a_batch_through_the_plain_client_gives_ok_body_pairs(server):
    client = FramedClient.from_endpoint(reactor, endpoint(server), codec=RedisCodec())
    try:
        await client.when_ready()
        batch = CommandBatch.of([command("PING"), command("GET", "nothing")])
        assert await client.request(batch) == [(True, b"+PONG\r\n"), (True, b"$-1\r\n")]
        with pytest.raises(InvalidRequest, match="says it holds 3"):
            await client.request(CommandBatch(batch, 3))
    finally:
        await client.close(timeout=2)


@given(st.binary(max_size=40) | st.text(max_size=10))
def test_get_sends_the_command_that_command_makes_and_as_trusted(key):
    # get() builds its command by hand for speed: the bytes, and the trust
    # the codec gives command()'s results, must be command()'s own.
    sent: list[bytes] = []

    class Capture(RedisCommands):
        def _request(self, body: bytes, timeout: float | None) -> Deferred[object]:
            sent.append(body)
            return Deferred()

    Capture().get(key)
    (body,) = sent
    expected = command("GET", key)
    assert body == expected and body.__class__ is expected.__class__


# -- arguments of the wrong type: refused at the call, naming the argument -----


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda r: r.mget(["a", "b"]),
            "mget takes keys as separate arguments, not one list: "
            "mget('a', 'b') or mget(*keys)",
        ),
        (lambda r: r.set("k", {"a": 1}), "set(): value must be bytes, str, int"),
        (lambda r: r.set("k", None), "set(): value must be bytes, str, int"),
        (lambda r: r.set("k", True), "no boolean"),
        (lambda r: r.get(None), "get(): key must be"),
        (lambda r: r.delete(["a", "b"]), "delete takes keys as separate arguments"),
        (lambda r: r.lpush("k", ["a"]), "lpush(key, *values)"),
        (lambda r: r.hset("k", [("f", "v")]), "hset takes a mapping"),
        (lambda r: r.hset("k", {"f": None}), "hset(): a field or value of mapping"),
        (lambda r: r.transaction("INCR k"), "each command as a tuple"),
        (lambda r: r.execute("SET", "k", [1]), "argument 2 of SET"),
        (lambda r: r.pipeline().add("SET", "k", None), "argument 2 of SET"),
    ],
)
def test_a_wrong_argument_is_refused_at_the_call_naming_it(call, message):
    redis = RedisClient.from_endpoint(reactor, "tcp:127.0.0.1:1", start=False)
    with pytest.raises(TypeError) as refused:
        call(redis)
    assert message in str(refused.value)
    assert redis.stats()["in_flight"] == 0 and redis.stats()["queued"] == 0


@pytest_twisted.ensureDeferred
async def test_a_list_value_is_refused_not_stored_as_its_bytes(redis):
    # bytes([104, 105]) is b"hi": the old conversion stored text nobody wrote.
    with pytest.raises(TypeError, match="set\\(\\): value"):
        redis.set("k", [104, 105])
    assert await redis.exists("k") == 0
    # The client carries on.
    assert await redis.set("k", 0.5) is True
    assert await redis.get("k") == b"0.5"


@pytest.mark.parametrize(
    "args",
    [
        ("SUBSCRIBE", "news"),
        (b"psubscribe", b"n*"),
        ("MONITOR",),
        ("client", "reply", "off"),
        ("HELLO", 3),
    ],
)
def test_commands_that_put_replies_out_of_step_are_refused(args):
    # RESP2 has no request IDs: after these, later replies would reach the
    # wrong callers of a shared connection.
    redis = RedisClient.from_endpoint(reactor, "tcp:127.0.0.1:1", start=False)
    for call in (
        lambda: redis.execute(*args),
        lambda: redis.pipeline().add(*args),
        lambda: redis.transaction(args),
    ):
        with pytest.raises(InvalidRequest, match="cannot run on a shared connection"):
            call()
    assert redis.stats()["in_flight"] == 0


def test_a_command_name_passed_once_does_not_let_out_of_step_forms_through():
    # Pipeline.add checks each command; names that passed are remembered
    # (one set lookup), but never CLIENT or HELLO, whose verdict depends
    # on their arguments, and the memory is bounded.
    from framedclient.clients import redis as module

    redis = RedisClient.from_endpoint(reactor, "tcp:127.0.0.1:1", start=False)
    p = redis.pipeline()
    for _ in range(3):
        p.add("CLIENT", "SETNAME", "x").add(b"HELLO", 2).add("GET", "k")
    for args in (
        ("CLIENT", "REPLY", "OFF"),
        (b"HELLO", 3),
        ("client", "reply", "skip"),
    ):
        with pytest.raises(InvalidRequest, match="cannot run on a shared connection"):
            p.add(*args)
    for i in range(module._IN_STEP_MAX + 10):
        p.add(f"X{i}")
    assert len(module._IN_STEP) <= module._IN_STEP_MAX
    with pytest.raises(InvalidRequest):
        p.add("subscribe", "c")


@pytest_twisted.ensureDeferred
async def test_hello_2_and_client_commands_other_than_reply_still_run(redis):
    assert (await redis.execute("CLIENT", "SETNAME", "t")) == b"OK"
    hello = await redis.execute("HELLO", 2)
    assert b"proto" in hello


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"nx": "no"}, TypeError, "nx must be True or False, got str 'no'"),
        ({"xx": 1}, TypeError, "xx must be True or False"),
        ({"ex": True}, ValueError, "ex must be a positive whole number"),
        ({"px": 1.5}, ValueError, "px must be a positive whole number"),
        ({"ex": "10"}, ValueError, "ex must be"),
    ],
)
def test_set_options_of_the_wrong_type_are_refused_not_read_as_truthy(
    options, error, message
):
    redis = RedisClient.from_endpoint(reactor, "tcp:127.0.0.1:1", start=False)
    with pytest.raises(error, match=message):
        redis.set("k", "v", **options)
    assert redis.stats()["in_flight"] == 0


@pytest_twisted.ensureDeferred
async def test_a_request_batch_takes_its_own_replies_in_order_on_redis(server):
    # The generic unit on an in-order codec: the next N replies, an error
    # reply as that slot's RemoteError; the requests after it get theirs.
    from framedclient.batch import RequestBatch

    client = FramedClient.from_endpoint(
        reactor, endpoint(server), codec=RedisCodec(), pool_size=1
    )
    try:
        await client.when_ready()
        await client.request(command("SET", "rb", "1"))
        unit = client.request(
            RequestBatch(
                [
                    command("INCR", "rb"),
                    command("LPUSH", "rb", "x"),
                    command("GET", "rb"),
                ]
            )
        )
        after = client.request(command("GET", "rb"))
        incr, wrong, got = await unit
        assert incr == b":2\r\n" and got == b"$1\r\n2\r\n"
        assert isinstance(wrong, RemoteError) and "WRONGTYPE" in wrong.message
        assert await after == b"$1\r\n2\r\n"
    finally:
        await client.close()
