"""
Tracing: with OpenTelemetry installed each copy of a request sent is a span
under the caller's span; without it (or with tracing off) nothing is
imported.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from framedclient.testing import memory_client
from framedclient.tracing import SPAN_NAME

from .test_hedging import SLOW_KEYS, Fleet


def sdk() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_each_request_is_a_span_under_the_callers_span():
    provider, exporter = sdk()
    client, server = memory_client(tracer_provider=provider, pool_size=1)
    server.flush()
    seen = []
    with provider.get_tracer("app").start_as_current_span("caller") as caller:
        client.request(b"hello").addBoth(seen.append)
    server.flush()
    assert seen == [b"hello"]
    (span,) = [s for s in exporter.get_finished_spans() if s.name == SPAN_NAME]
    assert span.parent is not None
    assert span.parent.span_id == caller.get_span_context().span_id
    assert span.kind == trace.SpanKind.CLIENT
    attributes = dict(span.attributes or {})
    assert attributes == {
        "framedclient.upstream": "memory",
        "framedclient.connection": "memory/0",
        "framedclient.attempt": 1,
        "framedclient.hedge": False,
        "framedclient.outcome": "ok",
    }


def test_a_failed_request_has_its_outcome_and_an_error_status():
    provider, exporter = sdk()
    client, server = memory_client(tracer_provider=provider, pool_size=1)
    server.flush()
    seen = []
    client.request(b"!error:nope").addBoth(seen.append)
    server.flush()
    (span,) = exporter.get_finished_spans()
    assert span.attributes["framedclient.outcome"] == "remote_error"
    assert span.status.status_code is StatusCode.ERROR


def test_a_request_that_waited_for_a_connection_keeps_the_callers_parent():
    provider, exporter = sdk()
    client, server = memory_client(tracer_provider=provider, pool_size=1)
    seen = []
    with provider.get_tracer("app").start_as_current_span("caller") as caller:
        client.request(b"early").addBoth(seen.append)
    server.flush()  # connects, then sends, outside the caller's span
    assert seen == [b"early"]
    (span,) = [s for s in exporter.get_finished_spans() if s.name == SPAN_NAME]
    assert span.parent.span_id == caller.get_span_context().span_id


def test_a_hedge_is_a_span_of_its_own_marked_as_a_hedge():
    provider, exporter = sdk()
    fleet = Fleet(tracer_provider=provider)
    seen = []
    fleet.client.request(b"x", key=SLOW_KEYS[0], idempotent=True).addBoth(seen.append)
    fleet.advance(0.1)
    assert seen == [b"x"]
    spans = {
        s.attributes["framedclient.hedge"]: s
        for s in exporter.get_finished_spans()
        if s.name == SPAN_NAME
    }
    assert spans[True].attributes["framedclient.upstream"] == "tcp:10.0.0.2:9000"
    assert spans[True].attributes["framedclient.outcome"] == "ok"
    # The slow copy lost and was cancelled.
    assert spans[False].attributes["framedclient.upstream"] == "tcp:10.0.0.1:9000"
    assert spans[False].attributes["framedclient.outcome"] == "cancelled"


PROGRAM = textwrap.dedent(
    """
    import sys
    {prelude}
    from framedclient.testing import memory_client

    client, server = memory_client(pool_size=1{options})
    server.flush()
    seen = []
    client.request(b"x").addBoth(seen.append)
    server.flush()
    assert seen == [b"x"], seen
    loaded = sorted(
        m for m in sys.modules
        if m.startswith("opentelemetry") or m == "framedclient.tracing"
    )
    print(loaded)
    """
)

BLOCK_OPENTELEMETRY = """
import importlib.abc

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NotInstalled())
"""


def run(prelude: str = "", options: str = "") -> str:
    program = PROGRAM.format(prelude=prelude, options=options)
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_without_opentelemetry_nothing_of_it_is_imported():
    assert run(prelude=BLOCK_OPENTELEMETRY) == "[]"


def test_with_tracing_off_nothing_of_opentelemetry_is_imported():
    assert run(options=", tracing=False") == "[]"


SET_PROVIDER = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

trace.set_tracer_provider(TracerProvider())
"""


def test_with_a_global_tracer_provider_requests_are_traced():
    # The tests above would pass if tracing never loaded at all.
    assert "framedclient.tracing" in run(prelude=SET_PROVIDER)


def test_with_opentelemetry_but_no_provider_requests_are_not_traced():
    # The API alone would only make non-recording spans, for nothing.
    client, _ = memory_client(pool_size=1)
    assert client.stats()["tracing"] is False
    provider, _ = sdk()
    client, _ = memory_client(pool_size=1, tracer_provider=provider)
    assert client.stats()["tracing"] is True
