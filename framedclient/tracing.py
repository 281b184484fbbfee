"""
OpenTelemetry spans for requests, when ``opentelemetry-api`` is installed
(``pip install 'framedclient[otel]'``).

Each copy of a request sent to a connection is one span of kind CLIENT,
named ``framedclient.request``, under the caller's current span (the
OpenTelemetry context at the call), with these attributes:

- ``framedclient.upstream``: the host (``tcp:10.0.0.1:9000``);
- ``framedclient.connection``: the connection (``tcp:10.0.0.1:9000/2``);
- ``framedclient.attempt``: 1, or more for a request re-sent after its
  connection was lost;
- ``framedclient.hedge``: whether this copy is a hedge;
- ``framedclient.outcome``: ``ok`` or the failure's outcome, as counted in
  metrics (``timeout``, ``connection_lost``, ``cancelled``, ...); a span that
  did not end ``ok`` has an error status.

The client imports this module only when ``opentelemetry`` can be found
and its ``tracing`` setting is on: without the API installed nothing is
imported and requests do no tracing work at all.  It traces only when there
is somewhere for spans to go: a ``tracer_provider=`` given to the client,
or a global one set (``trace.set_tracer_provider``, as the SDK's setup
does) *before* the client is made.  The API alone (often installed as some
other package's dependency) would only make non-recording spans, at a few
microseconds a request, so it costs nothing instead.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from framedclient.errors import outcome_of

__all__ = ["SPAN_NAME", "RequestTracer", "request_tracer"]

SPAN_NAME = "framedclient.request"


def request_tracer(tracer_provider: object = None) -> RequestTracer | None:
    """
    A :class:`RequestTracer` for ``tracer_provider``, or for the global
    provider if one was set; ``None`` when spans would go nowhere.
    """
    if tracer_provider is None:
        provider = trace.get_tracer_provider()
        if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            return None
    return RequestTracer(tracer_provider)  # type: ignore[arg-type]


class RequestTracer:
    """
    Starts and ends the spans of one client's requests.

    :param tracer_provider: where spans go; the global one by default.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("framedclient", tracer_provider=tracer_provider)

    def context(self) -> object:
        """
        The caller's context, kept for copies sent later (after a wait for a
        slot, or a hedge), so their spans have the caller's parent.
        """
        return otel_context.get_current()

    def traced(
        self,
        d: Deferred[Any],
        upstream: str | None,
        connection: str | None,
        attempt: int,
        hedge: bool,
        context: object = None,
    ) -> Deferred[Any]:
        """
        ``d`` with a span that starts now and ends with ``d``'s outcome,
        under ``context`` (from :meth:`context`; ``None``: the current
        one).
        """
        span = self._tracer.start_span(
            SPAN_NAME,
            context=context,  # type: ignore[arg-type]
            kind=SpanKind.CLIENT,
            attributes={
                "framedclient.upstream": upstream or "",
                "framedclient.connection": connection or "",
                "framedclient.attempt": attempt,
                "framedclient.hedge": hedge,
            },
        )
        d.addBoth(_end, span)
        return d


def _end(result: Any, span: Span) -> Any:
    if isinstance(result, Failure):
        outcome = outcome_of(result.value)
        span.set_status(Status(StatusCode.ERROR, result.getErrorMessage()))
    else:
        outcome = "ok"
    span.set_attribute("framedclient.outcome", outcome)
    span.end()
    return result
