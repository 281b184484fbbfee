"""
A request re-sent after its connection died keeps what routed and traced it.

What users rely on (issue 20, docs/client.md): with ``balancer="ketama"`` a
request with a ``key`` that is retried because its host died goes to the
key's next host on the ring (where twemproxy and libketama send the key while
that host is out), not to any host; and its span has the caller's span as
its parent, like the first copy's.
"""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from twisted.internet.task import Clock

from framedclient.backoff import ExponentialBackoff
from framedclient.client import FramedClient
from framedclient.ketama import KetamaRing
from framedclient.tracing import SPAN_NAME

from .fakes import ScriptedEndpoint, answer_all, drop
from .test_goaway import requests_written
from .wire import outcomes

NAMES = ["cache-a:11211", "cache-b:11211", "cache-c:11211"]


def fleet(**kw):
    clock = Clock()
    endpoints = [ScriptedEndpoint(auto="up") for _ in NAMES]
    client = FramedClient(
        endpoints,
        clock,
        names=NAMES,
        pool_size=1,
        backoff=ExponentialBackoff(random=lambda: 0.5),
        **kw,
    )
    clock.advance(1.0)
    return client, endpoints, clock


def test_a_keyed_request_retried_after_its_host_died_goes_to_the_keys_next_host():
    ring = KetamaRing(NAMES)
    moved = 0
    for n in range(24):
        client, endpoints, clock = fleet(balancer="ketama")
        protos = {name: e.protocols[0] for name, e in zip(NAMES, endpoints, strict=True)}
        key = f"user:{n}"
        owner, next_owner, *_ = ring.nodes_for(key)
        d = client.request(b"get " + key.encode(), key=key)
        assert protos[owner].pending == 1, "placed as libketama places it"
        drop(protos[owner])  # before the write: safe to re-send
        clock.advance(0)
        assert requests_written(protos[next_owner]) == [b"get " + key.encode()]
        answer_all(protos[next_owner])
        assert outcomes([d]) == [b"get " + key.encode()]
        moved += 1
    assert moved == 24


def test_a_written_idempotent_keyed_request_retried_goes_to_the_keys_next_host():
    ring = KetamaRing(NAMES)
    for n in range(12):
        client, endpoints, clock = fleet(balancer="ketama")
        protos = {name: e.protocols[0] for name, e in zip(NAMES, endpoints, strict=True)}
        key = f"session:{n}"
        owner, next_owner, *_ = ring.nodes_for(key)
        d = client.request(b"read", key=key, idempotent=True)
        clock.advance(0)
        assert requests_written(protos[owner]) == [b"read"]
        drop(protos[owner])  # written: retried after a short delay
        clock.advance(1.0)
        assert requests_written(protos[next_owner]) == [b"read"]
        answer_all(protos[next_owner])
        assert outcomes([d]) == [b"read"]


def test_a_retried_request_keeps_the_callers_span_as_its_parent():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client, endpoints, clock = fleet(tracer_provider=provider)
    with provider.get_tracer("app").start_as_current_span("caller") as caller:
        d = client.request(b"x")
    (holder,) = [e.protocols[0] for e in endpoints if e.protocols[0].pending]
    drop(holder)  # outside the caller's span, before the write
    clock.advance(0)
    for e in endpoints:
        for proto in e.protocols:
            if proto is not holder:
                answer_all(proto)
    assert outcomes([d]) == [b"x"]
    spans = sorted(
        (s for s in exporter.get_finished_spans() if s.name == SPAN_NAME),
        key=lambda s: s.attributes["framedclient.attempt"],
    )
    assert [s.attributes["framedclient.attempt"] for s in spans] == [1, 2]
    for span in spans:
        assert span.parent is not None, "the retry has the caller's parent too"
        assert span.parent.span_id == caller.get_span_context().span_id
