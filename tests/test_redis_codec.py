"""
The Redis (RESP2) codec: framing of nested replies, in-order matching, and a
real redis-server on loopback (skipped when it is missing, failed under
CI=true).
"""

from __future__ import annotations

import array

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from framedclient import FramedClient, RemoteError
from framedclient.codecs import ERROR, REQUEST
from framedclient.codecs.redis import (
    BadArgument,
    CommandBatch,
    RedisCodec,
    ReplyDiscarded,
    RespError,
    RespFramer,
    command,
    count_commands,
    parse_reply,
)
from framedclient.errors import (
    ConnectionLost,
    CorruptFrame,
    InvalidRequest,
    ProtocolError,
)
from framedclient.protocol import FramedProtocol, ProtocolConfig

from .servers import redis_server
from .wire import outcomes


def to_resp(value) -> bytes:
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, str):  # simple string
        return b"+%s\r\n" % value.encode()
    return b"*%d\r\n" % len(value) + b"".join(to_resp(v) for v in value)


values = st.recursive(
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.binary(max_size=40)
    | st.text("abcXYZ 01", max_size=10),
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(values, min_size=1, max_size=8), st.data())
def test_any_replies_split_anywhere_come_out_whole_and_in_order(replies, data):
    stream = b"".join(to_resp(v) for v in replies)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)))))
    framer = RespFramer()
    frames = []
    last = 0
    for cut in [*cuts, len(stream)]:
        frames += framer.feed(stream[last:cut])
        last = cut
    assert frames == [to_resp(v) for v in replies]
    assert framer.buffered == 0


def test_one_byte_at_a_time_parses_a_large_array_linearly():
    reply = to_resp([b"x" * 10] * 20_000)
    framer = RespFramer()
    frames = []
    for i in range(len(reply)):
        frames += framer.feed(reply[i : i + 1])
    assert frames == [reply]


def test_a_bulk_string_over_max_frame_is_discarded_without_buffering():
    framer = RespFramer(max_frame=1024)
    assert framer.feed(b"$1000000\r\n") == []
    for _ in range(100):
        assert framer.feed(b"x" * 10_000) == []
        assert framer.buffered < 64
    frames = framer.feed(b"\r\n+OK\r\n")
    assert frames[1:] == [b"+OK\r\n"]
    kind, _, error = RedisCodec().decode(frames[0])
    assert kind == ERROR and isinstance(error, ReplyDiscarded)
    assert "1000000 bytes" in error.message and "=1024" in error.message


@settings(max_examples=100, deadline=None)
@given(st.lists(values, min_size=1, max_size=6), st.data())
def test_replies_over_the_limits_fail_alone_and_the_rest_come_out_whole(replies, data):
    # Any split, any mix of replies within and over the limits: each reply
    # gives exactly one frame, in order; those over a limit are discarded,
    # and those within every limit are kept intact.
    max_frame = data.draw(st.integers(16, 120))
    max_bulk = data.draw(st.integers(0, max_frame))
    max_array = data.draw(st.integers(1, 6))
    stream = b"".join(to_resp(v) for v in replies)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)))))
    framer = RespFramer(max_frame, max_bulk=max_bulk, max_array=max_array)
    frames = []
    last = 0
    for cut in [*cuts, len(stream)]:
        frames += framer.feed(stream[last:cut])
        last = cut
        assert framer.buffered <= max_frame + 64
    assert len(frames) == len(replies)
    for frame, value in zip(frames, replies, strict=True):
        within = (
            len(to_resp(value)) <= max_frame
            and _longest_bulk(value) <= max_bulk
            and not _has_long_array(value, max_array)
        )
        if within:
            assert frame == to_resp(value)
        else:
            assert frame[:1] == b"!"
            kind, _, error = RedisCodec().decode(frame)
            assert kind == ERROR and isinstance(error, ReplyDiscarded)


def _has_long_array(value, max_array):
    if isinstance(value, list):
        return len(value) > max_array or any(
            _has_long_array(v, max_array) for v in value
        )
    return False


def _longest_bulk(value):
    if isinstance(value, list):
        return max((_longest_bulk(v) for v in value), default=-1)
    return len(value) if isinstance(value, bytes) else -1


def test_garbage_is_a_protocol_error_with_the_replies_before_it():
    framer = RespFramer()
    with pytest.raises(CorruptFrame) as info:
        framer.feed(b"+OK\r\n?what\r\n")
    assert info.value.frames == [b"+OK\r\n"]
    with pytest.raises(ProtocolError):
        framer.feed(b"$x\r\n")


def test_parse_reply_gives_python_values():
    assert parse_reply(b"+OK\r\n") == b"OK"
    assert parse_reply(b":-7\r\n") == -7
    assert parse_reply(b"$-1\r\n") is None
    nested = parse_reply(b"*3\r\n$1\r\na\r\n*1\r\n:1\r\n-ERR inner\r\n")
    assert nested[:2] == [b"a", [1]]
    assert nested[2] == RespError("ERR inner") and nested[2].prefix == "ERR"
    assert command("SET", b"k", 5) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n"


def test_replies_are_matched_in_order_and_errors_fail_their_request():
    clock = Clock()
    proto = FramedProtocol(ProtocolConfig(codec=RedisCodec()), clock)
    transport = StringTransport()
    proto.makeConnection(transport)
    ds = [proto.request(command("GET", f"k{i}")) for i in range(3)]
    clock.advance(0)
    assert transport.value().count(b"GET") == 3
    proto.dataReceived(b"$2\r\nv0\r\n-WRONGTYPE no\r\n*2\r\n:1\r")
    proto.dataReceived(b"\n:2\r\n")
    r0, r1, r2 = outcomes(ds)
    assert r0 == b"$2\r\nv0\r\n"
    assert r1.check(RemoteError) and r1.value.message == "WRONGTYPE no"
    assert parse_reply(r2) == [1, 2]


@pytest.fixture
def redis_port(tmp_path):
    with redis_server(str(tmp_path)) as server:
        yield server.port


@pytest_twisted.ensureDeferred
async def test_pipelined_commands_against_a_real_redis(redis_port):
    client = FramedClient.from_endpoint(
        reactor,
        f"tcp:127.0.0.1:{redis_port}",
        codec=RedisCodec(),
        pool_size=2,
        request_timeout=5.0,
    )
    try:
        await client.when_ready()
        sets = [client.request(command("SET", f"key:{i}", f"v{i}")) for i in range(500)]
        assert set(await gatherResults(sets)) == {b"+OK\r\n"}
        gets = [client.request(command("GET", f"key:{i}")) for i in range(500)]
        replies = [parse_reply(r) for r in await gatherResults(gets)]
        assert replies == [b"v%d" % i for i in range(500)]
        with pytest.raises(RemoteError, match=r"WRONGTYPE|ERR"):
            await client.request(command("LPUSH", "key:1", "x"))
        reply = await client.request(command("MGET", "key:1", "missing", "key:2"))
        assert parse_reply(reply) == [b"v1", None, b"v2"]
    finally:
        await client.close(timeout=2)


def connected(**options):
    clock = Clock()
    proto = FramedProtocol(ProtocolConfig(codec=RedisCodec(), **options), clock)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport, clock


def test_a_body_of_two_commands_fails_alone_and_nothing_is_written():
    proto, transport, clock = connected()
    two = command("SET", "b", "2") + command("PING")
    d = proto.request(two)
    ok = proto.request(command("PING"))
    clock.advance(0)
    (refused, _) = outcomes([d, ok])
    assert refused.check(InvalidRequest)
    assert "holds 2" in str(refused.value)
    assert transport.value() == command("PING")


@pytest.mark.parametrize(
    "body",
    [
        b"PING\r\n",  # inline form
        b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPI",  # a second command, cut short
        b"*2\r\n$3\r\nGET\r\n",  # fewer arguments than announced
        b"*1\r\n$+4\r\nPING\r\n",  # Python's int() would take "+4"; Redis not
        b"*0\r\n",  # Redis answers nothing to an empty command
        b"",
    ],
)
def test_a_body_that_is_not_one_whole_command_is_refused(body):
    proto, transport, clock = connected()
    d = proto.request(body)
    clock.advance(0)
    (refused,) = outcomes([d])
    assert refused.check(InvalidRequest)
    assert transport.value() == b""


def test_a_batch_takes_exactly_its_replies_in_order():
    proto, transport, clock = connected()
    batch = CommandBatch.of(
        [command("SET", "a", "1"), command("LPUSH", "a", "x"), command("GET", "a")]
    )
    d = proto.request(batch)
    after = proto.request(command("PING"))
    clock.advance(0)
    assert transport.value() == batch + command("PING")
    proto.dataReceived(b"+OK\r\n-WRONGTYPE no\r\n$1\r\n1\r\n+PONG\r\n")
    replies, pong = outcomes([d, after])
    assert replies == [
        (True, b"+OK\r\n"),
        (False, b"WRONGTYPE no"),
        (True, b"$1\r\n1\r\n"),
    ]
    assert pong == b"+PONG\r\n"


@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_an_abandoned_batch_still_consumes_all_its_replies(how):
    proto, transport, clock = connected(request_timeout=1.0)
    batch = CommandBatch.of([command("GET", "a"), command("GET", "b")])
    d = proto.request(batch)
    clock.advance(0)
    if how == "timeout":
        clock.advance(1.5)
    else:
        d.cancel()
    d.addErrback(lambda f: None)
    after = proto.request(command("GET", "c"))
    clock.advance(0)
    proto.dataReceived(b"$1\r\nA\r\n$1\r\nB\r\n$1\r\nC\r\n")
    (c,) = outcomes([after])
    assert c == b"$1\r\nC\r\n"
    assert proto.late_replies == 1 and proto.unknown_replies == 0
    assert proto.engine.entries == 0


def test_a_batch_lost_with_its_connection_fails_once():
    proto, transport, clock = connected()
    d = proto.request(CommandBatch.of([command("GET", "a"), command("GET", "b")]))
    clock.advance(0)
    proto.dataReceived(b"$1\r\nA\r\n")
    proto.connectionLost()
    (lost,) = outcomes([d])
    assert lost.check(ConnectionLost) and lost.value.written


@settings(max_examples=200, deadline=None)
@given(values)
def test_parse_reply_gives_the_same_values_with_and_without_hiredis(value):
    from framedclient.codecs import redis as module

    frame = to_resp(value)
    with_hiredis = parse_reply(frame)
    saved = module._hiredis
    module._hiredis = None
    try:
        pure = parse_reply(frame)
    finally:
        module._hiredis = saved
    assert with_hiredis == pure
    assert pure == (value.encode() if isinstance(value, str) else _expected(value))


def _expected(value):
    if isinstance(value, list):
        return [v.encode() if isinstance(v, str) else _expected(v) for v in value]
    return value


def test_parse_reply_reads_nested_errors_and_refuses_broken_frames():
    assert parse_reply(b"*2\r\n-ERR x\r\n*-1\r\n") == [RespError("ERR x"), None]
    for broken in [b"", b"$5\r\nab\r\n", b"*2\r\n:1\r\n", b"?\r\n", b":1\r\n:2\r\n"]:
        with pytest.raises(CorruptFrame):
            parse_reply(broken)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.sampled_from(["keep", "cancel", "timeout"])),
        min_size=1,
        max_size=12,
    ),
    st.data(),
)
def test_singles_and_batches_each_get_exactly_their_own_replies(requests, data):
    # Any mix of single commands and batches, some abandoned (cancelled or
    # timed out) before their replies: every caller that kept its request
    # gets exactly the replies to its own commands, in order, however the
    # reply stream is split.
    proto, transport, clock = connected()
    sent = []
    counter = 0
    for size, fate in requests:
        commands = [command("ECHO", str(counter + i)) for i in range(size)]
        expected = [
            b"$%d\r\n%d\r\n" % (len(str(counter + i)), counter + i) for i in range(size)
        ]
        counter += size
        body = commands[0] if size == 1 else CommandBatch.of(commands)
        d = proto.request(body, timeout=10.0 if fate == "timeout" else 100.0)
        sent.append((d, size, fate, expected))
    clock.advance(0)
    for d, _, fate, _ in sent:
        if fate == "cancel":
            d.cancel()
            d.addErrback(lambda f: None)
    clock.advance(20)  # the "timeout" ones expire
    for d, _, fate, _ in sent:
        if fate == "timeout":
            d.addErrback(lambda f: None)
    stream = b"".join(r for _, _, _, expected in sent for r in expected)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)))))
    last = 0
    for cut in [*cuts, len(stream)]:
        proto.dataReceived(stream[last:cut])
        last = cut
    for d, size, fate, expected in sent:
        if fate != "keep":
            continue
        (result,) = outcomes([d])
        if size == 1:
            assert result == expected[0]
        else:
            assert result == [(True, r) for r in expected]
    assert proto.engine.entries == 0 and proto.unknown_replies == 0


# -- commands the client built itself: trusted, not parsed again --------------

arguments = st.lists(
    st.binary(max_size=30)
    | st.text(max_size=10)
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.binary(max_size=30).map(bytearray)
    | st.lists(st.integers(-(2**31), 2**31 - 1), max_size=4).map(
        lambda items: memoryview(array.array("i", items))
    ),
    min_size=1,
    max_size=6,
)


def _as_bytes(arg) -> bytes:
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, int):
        return str(arg).encode()
    if isinstance(arg, float):
        return repr(arg).encode()
    return bytes(arg)


@settings(max_examples=300, deadline=None)
@given(arguments)
def test_a_command_sent_unchecked_is_exactly_the_one_the_check_accepts(args):
    # command() builds one whole command whatever its arguments (a
    # memoryview of 4-byte items included); the codec's short path for it
    # sends what the full check would have accepted, byte for byte.
    codec = RedisCodec()
    body = command(*args)
    checked = bytes(body)
    assert count_commands(checked) == 1
    assert codec.encode(REQUEST, 1, body) == codec.encode(REQUEST, 1, checked)
    assert parse_reply(checked) == [_as_bytes(a) for a in args]


@settings(max_examples=100, deadline=None)
@given(st.lists(arguments, min_size=1, max_size=5))
def test_a_batch_of_commands_sent_unchecked_holds_as_many_as_it_says(commands):
    batch = CommandBatch.of([command(*args) for args in commands])
    assert count_commands(bytes(batch)) == batch.expected_replies == len(commands)
    assert RedisCodec().encode(REQUEST, 1, batch) == bytes(batch)


@pytest.mark.parametrize(
    "body",
    [
        command("SET", "a", "1") + command("PING"),  # joined: plain bytes
        bytes(command("PING")) + command("PING"),
        (command("PING") * 2)[:-1],  # repeated then cut
        command("GET", "a")[:-2],  # cut short
        b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n",  # written by hand
    ],
)
def test_a_users_body_is_still_checked_when_made_from_commands(body):
    # Only command()'s own result is trusted: whatever a user derives from
    # it is plain bytes again, and two commands in it are refused.
    assert body.__class__ is bytes
    proto, transport, clock = connected()
    d = proto.request(body)
    clock.advance(0)
    (refused,) = outcomes([d])
    assert refused.check(InvalidRequest)
    assert transport.value() == b""


def test_a_batch_that_says_one_command_but_holds_two_is_still_refused():
    two = command("PING") + command("PING")
    for batch in (CommandBatch(two, 1), CommandBatch.of([two])):
        proto, transport, clock = connected()
        d = proto.request(batch)
        clock.advance(0)
        (refused,) = outcomes([d])
        assert refused.check(InvalidRequest)
        assert "holds 2" in str(refused.value)
        assert transport.value() == b""


def test_a_command_without_arguments_is_refused_as_before():
    proto, transport, clock = connected()
    d = proto.request(command())
    clock.advance(0)
    (refused,) = outcomes([d])
    assert refused.check(InvalidRequest)
    assert transport.value() == b""


@settings(max_examples=150, deadline=None)
@given(st.lists(values, min_size=1, max_size=8), st.integers(16, 200))
def test_whole_bulk_strings_cut_at_once_agree_with_the_byte_by_byte_parse(
    replies, max_frame
):
    # Fed whole, top-level bulk strings take the framer's short path; fed a
    # byte at a time they never can: both give the same frames, limits
    # included.
    stream = b"".join(to_resp(v) for v in replies)
    whole = RespFramer(max_frame, max_bulk=max_frame - 8).feed(stream)
    slow = RespFramer(max_frame, max_bulk=max_frame - 8)
    parts = []
    for i in range(len(stream)):
        parts += slow.feed(stream[i : i + 1])
    assert whole == parts
    assert len(whole) == len(replies)


@pytest.fixture(params=["hiredis", "pure Python"])
def parser(request, monkeypatch):
    """
    :func:`parse_reply` through each of its two array parsers: hiredis (when
    installed, the one used) and the pure-Python one (used without hiredis,
    and for large replies).
    """
    from framedclient.codecs import redis as module

    if request.param == "hiredis":
        assert module._hiredis is not None, "the test extra installs hiredis"
    else:
        monkeypatch.setattr(module, "_hiredis", None)
    return parse_reply


def test_a_nil_array_is_none_not_an_empty_list_with_either_parser(parser):
    # An aborted EXEC (WATCH saw a change) and a BLPOP timeout answer *-1:
    # None, which the caller must be able to tell from an empty array.
    assert parser(b"*-1\r\n") is None
    assert parser(b"*0\r\n") == []
    assert parser(b"*2\r\n*-1\r\n*0\r\n") == [None, []]


def test_a_large_reply_holding_a_nil_array_parses_it_as_none(parser):
    # Past hiredis's size threshold the pure-Python parser reads every array.
    big = b"x" * (128 * 1024)
    frame = b"*2\r\n$%d\r\n%s\r\n*-1\r\n" % (len(big), big)
    assert parser(frame) == [big, None]


@pytest.mark.parametrize("max_bulk", [0, 1, 10, 100])
def test_a_bulk_string_of_exactly_max_bulk_is_kept_one_byte_more_is_discarded(
    max_bulk,
):
    def framed(reply: bytes) -> list[bytes]:
        framer = RespFramer(1024, max_bulk=max_bulk)
        whole = framer.feed(reply + b"+OK\r\n")
        framer = RespFramer(1024, max_bulk=max_bulk)
        split = []
        for i in range(len(reply)):
            split += framer.feed(reply[i : i + 1])
        assert whole == [*split, b"+OK\r\n"]  # one frame, and the next intact
        return split

    for inner in (False, True):  # alone (the GET short path) and in an array
        for size, kept in ((max_bulk, True), (max_bulk + 1, False)):
            reply = to_resp([7, b"v" * size, None] if inner else b"v" * size)
            (frame,) = framed(reply)
            if kept:
                assert frame == reply, (inner, size)
            else:
                kind, _, error = RedisCodec().decode(frame)
                assert kind == ERROR and isinstance(error, ReplyDiscarded)
                assert f"max_bulk={max_bulk}" in error.message


@pytest.mark.parametrize("name", ["RedisClient", "RedisLease", "Pipeline"])
def test_the_clients_old_import_path_says_where_they_moved(name):
    # The codec no longer imports its client (it sits below the core);
    # code written for the old path learns the new one at the import.
    with pytest.raises(
        ImportError, match=f"from framedclient.clients.redis import {name}"
    ):
        exec(f"from framedclient.codecs.redis import {name}", {})


# -- the type rule: bytes, str, int or float; anything else refused ------------


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ([104, 105], "json.dumps"),  # bytes([104, 105]) would be b"hi"
        ((1, 2), "separate arguments"),
        ({"a": 1}, "json.dumps"),
        (None, "no null argument"),
        (True, "no boolean: pass 1 or 0"),
        (object(), "convert it first"),
    ],
)
def test_an_argument_of_another_type_is_refused_naming_its_place(value, hint):
    with pytest.raises(TypeError) as refused:
        command("SET", "k", value)
    message = str(refused.value)
    assert message.startswith("argument 2 of SET must be bytes, str, int or float")
    assert hint in message and "nothing was sent" in message
    assert isinstance(refused.value, BadArgument) and refused.value.position == 2


def test_the_command_name_of_the_wrong_type_is_named_too():
    with pytest.raises(TypeError, match=r"the command name \(argument 0\)"):
        command(["GET", "k"])


def test_accepted_arguments_become_the_bytes_documented():
    class Level(int):
        pass

    body = command("SET", b"k", "é", 7, Level(3), 0.1, 1e100, -2.5)
    assert parse_reply(bytes(body)) == [
        b"SET",
        b"k",
        "é".encode(),
        b"7",
        b"3",
        b"0.1",
        b"1e+100",
        b"-2.5",
    ]


def test_a_mutable_buffer_is_copied_at_the_call():
    # What is sent is what the buffer held when command() was called.
    buffer = bytearray(b"before")
    body = command("SET", "k", buffer, memoryview(buffer))
    buffer[:] = b"AFTER!"
    assert parse_reply(bytes(body)) == [b"SET", b"k", b"before", b"before"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), values), min_size=1, max_size=12),
    st.booleans(),
)
def test_parse_replies_reads_a_batch_as_parse_reply_does_each(replies, errors):
    # A pipeline's replies in one pass, with and without hiredis: the same
    # values as one parse_reply per reply, error replies as RespError values.
    from framedclient.codecs import redis as module

    parts = []
    expected = []
    for failed, value in replies:
        if failed and errors:
            parts.append((False, b"ERR bad " + to_resp(value)[:5]))
            expected.append(
                RespError("ERR bad " + to_resp(value)[:5].decode("utf-8", "replace"))
            )
        else:
            parts.append((True, to_resp(value)))
            expected.append(parse_reply(to_resp(value)))
    with_hiredis = module.parse_replies(parts)
    saved = module._hiredis
    module._hiredis = None
    try:
        pure = module.parse_replies(parts)
    finally:
        module._hiredis = saved
    assert with_hiredis == expected
    assert pure == expected


def test_the_clients_old_import_place_says_where_they_moved():
    # RedisClient lived in the codec module until it moved above the core;
    # an old import gets the new place, in either mode (a module-level
    # __getattr__ compiled by mypyc crashed the import of the whole module).
    for name in ("RedisClient", "RedisLease", "Pipeline"):
        with pytest.raises(
            ImportError, match=f"from framedclient.clients.redis import {name}"
        ):
            exec(f"from framedclient.codecs.redis import {name}", {})
    import framedclient.codecs.redis as module

    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        module.nothing_here  # noqa: B018


@settings(max_examples=100, deadline=None)
@given(st.lists(arguments, min_size=1, max_size=5))
def test_a_pipelines_batch_is_the_batch_of_its_commands(commands):
    # A pipeline joins plain command bytes into a batch the codec trusts
    # without counting: byte for byte what CommandBatch.of(command()s)
    # makes, and as many commands as it says.
    from framedclient.codecs.redis import _command_bytes, _whole_commands

    batch = _whole_commands([_command_bytes(tuple(args)) for args in commands])
    assert bytes(batch) == bytes(CommandBatch.of([command(*a) for a in commands]))
    assert count_commands(bytes(batch)) == batch.expected_replies == len(commands)
    assert RedisCodec().encode(REQUEST, 1, batch) == bytes(batch)


def test_a_long_argument_gets_its_length_written_out():
    # Bulk headers come from a table up to 511 bytes; past it they are
    # formatted: both sides of the edge.
    for size in (0, 511, 512, 70000):
        value = b"x" * size
        assert parse_reply(bytes(command("SET", "k", value))) == [b"SET", b"k", value]
