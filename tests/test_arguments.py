"""
Bad arguments: one rule.  A wrong type or value raises TypeError/ValueError
naming the argument at the call, on every path (a free slot, a queued
request, a bare connection), and leaves no slot or queue entry behind.
"""

from __future__ import annotations

import math
import re

import attrs
import pytest
from twisted.internet.task import Clock

from framedclient.backoff import (
    CallableBackoff,
    ConstantBackoff,
    ExponentialBackoff,
    FullJitterBackoff,
)
from framedclient.client import FramedClient
from framedclient.config import ClientConfig, ProtocolConfig, setting_of
from framedclient.connection import Connection
from framedclient.pool import Limiter
from framedclient.protocol import FramedClientFactory, FramedProtocol
from framedclient.testing import connected_pair
from framedclient.validation import InvalidSettingType, Switch

from .fakes import ScriptedEndpoint

BAD_BODIES = [None, "text", 123, 1.5, [b"a"], object()]
BAD_TIMEOUTS = [("5", TypeError), (True, TypeError), ([1], TypeError),
                (0, ValueError), (-1, ValueError), (-math.inf, ValueError),
                (math.nan, ValueError)]


def client_with(up: bool, **kw):
    clock = Clock()
    endpoint = ScriptedEndpoint(auto="up" if up else None)
    client = FramedClient(
        [endpoint], clock, pool_size=1, backoff=ExponentialBackoff(random=lambda: 0.5),
        **kw,
    )
    return client, clock


@pytest.mark.parametrize("up", [True, False], ids=["slot-and-connection", "queued"])
@pytest.mark.parametrize("body", BAD_BODIES, ids=repr)
def test_client_request_with_a_non_bytes_body_raises_type_error_naming_body(up, body):
    client, clock = client_with(up)
    with pytest.raises(TypeError, match="body must be bytes"):
        client.request(body)
    assert client.in_flight == 0 and client.queued == 0
    assert client.stats()["queued_bytes"] == 0


def test_a_str_body_is_told_to_encode():
    client, clock = client_with(True)
    with pytest.raises(TypeError, match=r"encode\(\)"):
        client.request("hello")  # type: ignore[arg-type]


@pytest.mark.parametrize("up", [True, False], ids=["slot-and-connection", "queued"])
@pytest.mark.parametrize(("timeout", "error"), BAD_TIMEOUTS, ids=repr)
def test_client_request_with_a_bad_timeout_raises_naming_timeout(up, timeout, error):
    client, clock = client_with(up)
    with pytest.raises(error, match="timeout"):
        client.request(b"x", timeout=timeout)
    assert client.in_flight == 0 and client.queued == 0


def test_bad_arguments_while_every_slot_is_taken_still_raise_at_the_call():
    client, clock = client_with(True, max_in_flight=1, max_pending=1)
    client.request(b"holds the slot")
    with pytest.raises(TypeError, match="body"):
        client.request(None)  # type: ignore[arg-type]
    assert client.in_flight == 1 and client.queued == 0


def test_bytearray_bodies_are_accepted():
    client, clock = client_with(True)
    d = client.request(bytearray(b"x"))
    assert client.in_flight == 1
    seen = []
    d.addErrback(seen.append)
    d.cancel()
    assert client.in_flight == 0 and len(seen) == 1


@pytest.mark.parametrize("body", BAD_BODIES, ids=repr)
def test_protocol_request_with_a_bad_body_raises_and_holds_nothing(body):
    pair = connected_pair()
    proto: FramedProtocol = pair.client
    with pytest.raises(TypeError, match="body must be bytes"):
        proto.request(body)
    assert proto.pending == 0
    assert proto.debug_state()["table_entries"] == 0


@pytest.mark.parametrize(("timeout", "error"), BAD_TIMEOUTS, ids=repr)
def test_protocol_request_with_a_bad_timeout_raises(timeout, error):
    pair = connected_pair()
    with pytest.raises(error, match="timeout"):
        pair.client.request(b"x", timeout=timeout)
    assert pair.client.pending == 0


@pytest.mark.parametrize("endpoint", [None, 123, b"tcp:127.0.0.1:1", object()], ids=repr)
def test_a_client_of_something_that_is_not_an_endpoint_raises_type_error(endpoint):
    with pytest.raises(TypeError, match=r"endpoints\[0\] must be a Twisted client"):
        FramedClient([endpoint], Clock())  # type: ignore[list-item]


def test_endpoint_strings_given_to_the_constructor_point_at_from_endpoint():
    with pytest.raises(TypeError, match="from_endpoint"):
        FramedClient("tcp:127.0.0.1:1", Clock())  # type: ignore[arg-type]


@pytest.mark.parametrize("endpoint", [None, 123, object()], ids=repr)
def test_from_endpoint_refuses_what_is_not_an_endpoint(endpoint):
    with pytest.raises(TypeError, match="endpoint"):
        FramedClient.from_endpoint(Clock(), endpoint, start=False)


def test_from_endpoint_asks_for_str_not_bytes():
    with pytest.raises(TypeError, match="decode"):
        FramedClient.from_endpoint(Clock(), b"tcp:127.0.0.1:1", start=False)


# -- the type rule for settings and constructor arguments ------------------------
#
# A flag is a bool: "no", "false", "0", 0 and 1 are refused, never read for
# their truthiness ("no" is a non-empty string, so true).  Numbers are never
# bools or strings.  The error names the setting (and the class, for a
# constructor argument) and says what it accepts.

NOT_BOOLS = ["no", "false", "0", "", "yes", 0, 1, None, b"", [True]]


def switch_fields(cls):
    return [f.name for f in attrs.fields(cls) if isinstance(setting_of(f).kind, Switch)]


@pytest.mark.parametrize("cls", [ClientConfig, ProtocolConfig])
def test_every_bool_setting_is_checked_as_a_switch(cls):
    # A new flag declared with another kind would take "no" as true.
    annotated = [f.name for f in attrs.fields(cls) if f.type in (bool, "bool")]
    assert annotated == switch_fields(cls)


SWITCHES = [(cls, name) for cls in (ClientConfig, ProtocolConfig) for name in switch_fields(cls)]


def test_there_are_switch_settings_to_check():
    assert {name for _, name in SWITCHES} >= {"wait_for_ready", "tracing"}


@pytest.mark.parametrize(("cls", "name"), SWITCHES)
@pytest.mark.parametrize("value", NOT_BOOLS, ids=repr)
def test_a_bool_setting_given_anything_but_a_bool_is_refused_naming_it(cls, name, value):
    with pytest.raises(InvalidSettingType, match=f"^{name} must be True or False, got "):
        cls(**{name: value})
    with pytest.raises(TypeError, match=f"^{name} must be True or False"):
        attrs.evolve(cls(), **{name: value})


@pytest.mark.parametrize(("cls", "name"), SWITCHES)
def test_a_bool_setting_takes_true_and_false(cls, name):
    assert getattr(cls(**{name: True}), name) is True
    assert getattr(cls(**{name: False}), name) is False


@pytest.mark.parametrize("name", switch_fields(ClientConfig))
@pytest.mark.parametrize("value", ["no", "false", "0", 0, 1], ids=repr)
def test_a_client_given_a_bool_setting_that_is_not_a_bool_is_refused(name, value):
    endpoint = ScriptedEndpoint()
    with pytest.raises(TypeError, match=f"^{name} must be True or False"):
        FramedClient([endpoint], Clock(), **{name: value})
    with pytest.raises(TypeError, match=f"^{name} must be True or False"):
        FramedClient.from_endpoint(Clock(), "tcp:127.0.0.1:1", start=False, **{name: value})
    assert endpoint.attempts == []  # refused before anything connected


@pytest.mark.parametrize("value", ["no", "false", "0", 0, 1, None], ids=repr)
def test_a_client_told_to_start_with_anything_but_a_bool_is_refused(value):
    endpoint = ScriptedEndpoint()
    with pytest.raises(TypeError, match="FramedClient: start must be True or False"):
        FramedClient([endpoint], Clock(), start=value)
    assert endpoint.attempts == []


@pytest.mark.parametrize(
    ("build", "argument"),
    [
        (lambda v: ExponentialBackoff(initial=v), "ExponentialBackoff: initial"),
        (lambda v: ExponentialBackoff(multiplier=v), "ExponentialBackoff: multiplier"),
        (lambda v: ExponentialBackoff(jitter=v), "ExponentialBackoff: jitter"),
        (lambda v: ExponentialBackoff(max_delay=v), "ExponentialBackoff: max_delay"),
        (
            lambda v: ExponentialBackoff(min_connect_timeout=v),
            "ExponentialBackoff: min_connect_timeout",
        ),
        (lambda v: FullJitterBackoff(base=v), "FullJitterBackoff: base"),
        (lambda v: FullJitterBackoff(max_delay=v), "FullJitterBackoff: max_delay"),
        (lambda v: ConstantBackoff(v), "ConstantBackoff: delay"),
        (lambda v: ConstantBackoff(1, connect_timeout=v), "ConstantBackoff: connect_timeout"),
        (
            lambda v: CallableBackoff(lambda n: 1.0, min_connect_timeout=v),
            "CallableBackoff: min_connect_timeout",
        ),
        (lambda v: Limiter(Clock(), v, 1), "Limiter: max_in_flight"),
        (lambda v: Limiter(Clock(), 1, v), "Limiter: max_pending"),
        (lambda v: Limiter(Clock(), 1, 1, acquire_timeout=v), "Limiter: acquire_timeout"),
        (
            lambda v: Connection(ScriptedEndpoint(), FramedClientFactory(clock=Clock()), Clock(), connect_timeout=v),
            "Connection: connect_timeout",
        ),
        (
            lambda v: Connection(ScriptedEndpoint(), FramedClientFactory(clock=Clock()), Clock(), healthy_after=v),
            "Connection: healthy_after",
        ),
    ],
)
@pytest.mark.parametrize(
    ("value", "error"),
    [
        (True, TypeError),
        ("1", TypeError),
        ([1], TypeError),
        (-1, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
    ],
    ids=repr,
)
def test_constructor_arguments_are_checked_like_settings(build, argument, value, error):
    # The same kinds as the settings' (framedclient.validation): a bool or a
    # string is never a number, NaN and infinity are no number of seconds.
    if argument.startswith("Limiter: max_") and value is math.nan:
        error = TypeError  # a count is an int: a float is the wrong type
    if argument.startswith("Limiter: max_") and value is math.inf:
        error = TypeError
    expected = f"^{re.escape(argument)} must be .*, got {re.escape(repr(value))}$"
    with pytest.raises(error, match=expected):
        build(value)
