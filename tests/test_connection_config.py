"""
What a Connection accepts as configuration: timeouts checked where they are
given, and Twisted's own retry policies.
"""

from __future__ import annotations

import itertools

import pytest
from twisted.application.internet import backoffPolicy
from twisted.internet.task import Clock

from framedclient.backoff import CallableBackoff, as_backoff_policy
from framedclient.client import FramedClient
from framedclient.connection import Connection
from framedclient.protocol import FramedClientFactory

from .fakes import ScriptedEndpoint


def make(
    endpoint: ScriptedEndpoint | None = None, **kw
) -> tuple[Connection, ScriptedEndpoint, Clock]:
    clock = Clock()
    endpoint = endpoint or ScriptedEndpoint()
    conn = Connection(endpoint, FramedClientFactory(clock=clock), clock, **kw)
    return conn, endpoint, clock


@pytest.mark.parametrize("name", ["connect_timeout", "healthy_after"])
@pytest.mark.parametrize("value", [0, -1, -0.5, float("nan"), float("inf")])
def test_non_positive_or_non_finite_seconds_are_refused_naming_the_argument(
    name, value
):
    with pytest.raises(ValueError, match=name):
        make(**{name: value})


@pytest.mark.parametrize("name", ["connect_timeout", "healthy_after"])
@pytest.mark.parametrize("value", [True, "5", [5]])
def test_seconds_that_are_not_numbers_are_refused_naming_the_argument(name, value):
    with pytest.raises(TypeError, match=name):
        make(**{name: value})


def test_client_refuses_a_negative_connect_timeout_before_connecting():
    endpoint = ScriptedEndpoint()
    with pytest.raises(ValueError, match="connect_timeout"):
        FramedClient([endpoint], Clock(), connect_timeout=-1)
    assert endpoint.attempts == []


def test_a_fractional_connect_timeout_is_honoured():
    conn, endpoint, clock = make(connect_timeout=0.5)
    conn.start()
    clock.advance(0.49)
    assert conn.state == "connecting"
    clock.advance(0.01)
    assert conn.state == "backing_off"


def test_twisted_backoff_policy_paces_retries_as_client_service_would():
    # ClientService calls its policy with the number of failed attempts so
    # far: 1 after the first failure.
    policy = backoffPolicy(jitter=lambda: 0.0)
    conn, endpoint, clock = make(ScriptedEndpoint(auto="down"), backoff=policy)
    times = []
    conn.add_listener(
        lambda c, old, new: (
            times.append(clock.seconds()) if new == "connecting" else None
        )
    )
    conn.start()
    for _ in range(4):
        clock.advance(conn.debug_state()["next_backoff_delay"])
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([policy(1), policy(2), policy(3), policy(4)])
    assert gaps == pytest.approx([1.5, 2.25, 3.375, 5.0625])


def test_a_plain_callable_gets_grpcs_minimum_connect_timeout():
    conn, endpoint, clock = make(backoff=lambda attempt: 1.0)
    conn.start()
    clock.advance(19.9)
    assert conn.state == "connecting"
    clock.advance(0.1)
    assert conn.state == "backing_off"


def test_a_plain_callable_with_connect_timeout_uses_that_timeout():
    conn, endpoint, clock = make(backoff=lambda attempt: 1.0, connect_timeout=3.0)
    conn.start()
    clock.advance(3.0)
    assert conn.state == "backing_off"


def test_a_callable_policy_returning_a_negative_delay_retries_at_once():
    assert CallableBackoff(lambda attempt: -3.0).delay(1) == 0.0


def test_backoff_that_is_neither_a_policy_nor_callable_is_refused():
    with pytest.raises(TypeError, match="backoff"):
        as_backoff_policy(2.0)  # type: ignore[arg-type]
