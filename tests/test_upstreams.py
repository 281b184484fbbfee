"""
Upstreams apart: per-host series in /metrics (an ``upstream`` label),
``debug_state()`` grouped by upstream.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from framedclient.client import FramedClient
from framedclient.metrics import prometheus_text
from framedclient.testing import MemoryServer

NAMES = ["tcp:10.0.0.1:9000", "tcp:10.0.0.2:9000"]


def two_hosts():
    clock = Clock()
    a, b = MemoryServer(clock=clock), MemoryServer(clock=clock)
    client = FramedClient(
        [a.endpoint(), b.endpoint()],
        clock,
        pool_size=2,
        names=NAMES,
        balancer="round_robin",
    )

    def flush():
        while a.flush() | b.flush():
            pass

    flush()
    return client, a, b, flush


def send(client, flush, bodies):
    seen = []
    for body in bodies:
        client.request(body).addBoth(seen.append)
    flush()
    return seen


def samples(client):
    return {
        (s.name, tuple(sorted((s.labels or {}).items()))): s.value
        for s in client.gauges()
    }


def test_requests_are_counted_by_upstream_and_add_up_to_the_total():
    client, a, b, flush = two_hosts()
    seen = send(client, flush, [b"ok"] * 8 + [b"!error:no"] * 4)
    assert len(seen) == 12
    got = samples(client)
    per_host = {
        name: got["framedclient_upstream_requests_total", (("outcome", "ok"), ("upstream", name))]
        for name in NAMES
    }
    # Round robin over four connections: half of each kind on each host.
    assert per_host == {NAMES[0]: 4, NAMES[1]: 4}
    errors = [
        got["framedclient_upstream_requests_total", (("outcome", "remote_error"), ("upstream", n))]
        for n in NAMES
    ]
    assert errors == [2, 2]
    assert client.metrics.outcomes["ok"] == sum(per_host.values())
    for name in NAMES:
        ready = got["framedclient_upstream_connections", (("state", "ready"), ("upstream", name))]
        assert ready == 2


def test_the_exposition_has_an_upstream_label_per_host():
    client, a, b, flush = two_hosts()
    send(client, flush, [b"x"] * 4)
    text = prometheus_text(client.metrics, client.gauges()).decode()
    for name in NAMES:
        assert (
            f'framedclient_upstream_requests_total{{outcome="ok",upstream="{name}"}} 2.0'
            in text
        )
        assert f'framedclient_upstream_in_flight{{upstream="{name}"}} 0.0' in text
        assert (
            "framedclient_upstream_request_latency_seconds_count"
            f'{{outcome="ok",upstream="{name}"}} 2.0' in text
        )
    assert 'framedclient_hedges_total{result="sent"} 0.0' in text


def test_per_upstream_counts_never_go_back_when_connections_die():
    client, a, b, flush = two_hosts()
    send(client, flush, [b"x"] * 8)
    a.drop_all("host a restarted")
    flush()
    got = samples(client)
    key = ("framedclient_upstream_requests_total", (("outcome", "ok"), ("upstream", NAMES[0])))
    assert got[key] == 4
    assert client.metrics.outcomes["ok"] == 8


def test_debug_state_groups_connections_by_upstream():
    client, a, b, flush = two_hosts()
    send(client, flush, [b"x"] * 4)
    b.drop_all("host b down")
    b.refuse()
    flush()
    state = client.debug_state()
    groups = state["by_upstream"]
    assert list(groups) == NAMES
    assert groups[NAMES[0]]["connections"] == [f"{NAMES[0]}/0", f"{NAMES[0]}/1"]
    assert groups[NAMES[0]]["ready"] == 2
    assert groups[NAMES[1]]["ready"] == 0
    assert groups[NAMES[0]]["metrics"]["requests"]["ok"] == 2
    assert {c["upstream"] for c in state["upstreams"]} == set(NAMES)
