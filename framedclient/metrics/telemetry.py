"""
A client's observability in one place: where its connections' metrics are
recorded and read, per upstream, and the Prometheus samples built from them.

Each connection records its own requests in a
:class:`~framedclient.metrics.Metrics` of its own (so latency can be shown per
connection at no cost per request), attached to its upstream's, itself
attached to the client's, so that reading the client's (the user's own
object, a Prometheus scrape) adds them all up live.  A connection's figures
are folded in, not dropped, when it ends: totals only grow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from framedclient.connection import STATES as CONNECTION_STATES
from framedclient.health import STATES as HEALTH_STATES
from framedclient.hedging import HEDGE_EVENTS
from framedclient.metrics import (
    CounterSample,
    GaugeSample,
    HistogramSample,
    LatencyHistogram,
    Metrics,
    Sample,
)

if TYPE_CHECKING:
    from framedclient.health import HealthBoard
    from framedclient.pool import Pool
    from framedclient.protocol import FramedProtocol

__all__ = ["ClientTelemetry"]


class ClientTelemetry:
    """
    The metrics of one client, its upstreams and its connections, and the
    samples and snapshots made of them.

    :param metrics: the client's :class:`~framedclient.metrics.Metrics`
        (the user's own, or a fresh one): client-level events are recorded
        there, and every connection's figures are read through it.
    :param pool: the connections, for the per-upstream series.
    :param health: the hosts' health, for the health series.
    :param hedges: the hedge counts (see
        :data:`~framedclient.hedging.HEDGE_EVENTS`).
    """

    def __init__(
        self,
        metrics: Metrics,
        pool: Pool,
        health: HealthBoard,
        hedges: Callable[[], dict[str, int]],
    ) -> None:
        #: what ``FramedClient.metrics`` returns: everything recorded, live
        self.metrics = metrics
        self._pool = pool
        self._health = health
        self._hedges = hedges
        # Each connection's metrics are read through its upstream's (made
        # when the upstream's first connection is ready), so /metrics and
        # debug_state() can tell upstreams apart.
        self._upstreams: dict[str, Metrics] = {}

    # -- wiring the connections' metrics ---------------------------------------

    def track(self, proto: FramedProtocol) -> None:
        """
        A connection was built (its factory's ``on_built``): read its
        metrics through the client's from now on.
        """
        own = proto.metrics
        if isinstance(own, Metrics) and own is not self.metrics:
            self.metrics.attach(own)
            proto.when_closed().addCallback(self._retire, own)

    def _retire(self, reason: str, own: Metrics) -> None:
        # Folded in, not dropped, when the connection ends: the totals only
        # grow (Prometheus counters must never go back).
        self.metrics.detach(own)
        for upstream in self._upstreams.values():
            upstream.detach(own)

    def connection_ready(self, proto: FramedProtocol) -> None:
        """
        A connection is ready: from now on its figures count for its
        upstream too.
        """
        if isinstance(proto.metrics, Metrics):
            upstream = self._pool.upstream_of(proto)
            if upstream is not None:
                self.metrics.move(proto.metrics, self.upstream_node(upstream))

    def connection_changed(self, conn: Any, old: str, new: str) -> None:
        """
        A connection's state changed (a connection listener).
        """
        if new == "ready" and conn.protocol is not None:
            self.connection_ready(conn.protocol)

    def upstream_node(self, upstream: str) -> Metrics:
        """
        The metrics of ``upstream``, read through the client's: made when
        its first connection is ready, kept after it leaves (counters never
        go back).
        """
        own = self._upstreams.get(upstream)
        if own is None:
            self._upstreams[upstream] = own = Metrics()
            self.metrics.attach(own)
        return own

    def latency_of(self, upstream: str) -> LatencyHistogram | None:
        """
        The reply latency of ``upstream`` so far (``None``: no connection
        of it was ever ready), for hedging's percentile delays.
        """
        own = self._upstreams.get(upstream)
        return own.latency if own is not None else None

    # -- snapshots ---------------------------------------------------------------

    def by_upstream(
        self, connections: list[dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """
        ``connections`` (the pool's ``debug_state()``, by name) grouped by
        the host they go to: the hosts
        of the pool, and those gone whose figures remain; each with its
        ready connections, requests in flight, metrics, and health as
        counts by state (one host: a single 1), so that the groups of
        several worker processes add up.
        """
        by_upstream: dict[str, dict[str, Any]] = {}
        for label in [*self._pool.upstreams, *self._upstreams]:
            own = self._upstreams.get(label)
            by_upstream.setdefault(
                label,
                {
                    "connections": [],
                    "ready": 0,
                    "in_flight": 0,
                    "metrics": own.snapshot() if own is not None else None,
                },
            )
        for conn in connections:
            group = by_upstream[conn["upstream"]]
            group["connections"].append(conn["name"])
            group["ready"] += conn["state"] == "ready"
        for proto, upstream in self._pool.ready_upstreams().items():
            by_upstream[upstream]["in_flight"] += proto.table_size
        for host in self._health.hosts:
            if host.name in by_upstream:
                by_upstream[host.name]["health"] = {
                    s: int(host.state == s) for s in HEALTH_STATES
                }
                by_upstream[host.name]["ejections"] = host.total_ejections
        return by_upstream

    # -- Prometheus samples ------------------------------------------------------

    def gauges(self, in_flight: int, queued: int) -> list[Sample]:
        """
        Current gauge (and per-upstream counter) values for Prometheus
        exposition, given the client's requests in flight and queued.
        """
        samples: list[Sample] = [
            GaugeSample("framedclient_in_flight", "Requests in flight.", in_flight),
            GaugeSample(
                "framedclient_queued",
                "Requests waiting for a slot or a connection.",
                queued,
            ),
        ]
        counts = self._pool.counts_by_state()
        for state in CONNECTION_STATES:
            samples.append(
                GaugeSample(
                    "framedclient_connections",
                    "Connections by state.",
                    counts.get(state, 0),
                    {"state": state},
                )
            )
        return samples + self.upstream_samples()

    def upstream_samples(self) -> list[Sample]:
        """
        The per-upstream series: connections by state, requests in flight,
        requests by outcome, latency, bytes; and hedges.
        """
        samples: list[Sample] = []
        by_state: dict[tuple[str, str], int] = {}
        for conn, upstream in zip(self._pool, self._pool.upstream_names, strict=True):
            by_state[upstream, conn.state] = by_state.get((upstream, conn.state), 0) + 1
        upstreams = [*self._pool.upstreams, *self._upstreams]
        in_flight = dict.fromkeys(upstreams, 0)
        for proto, upstream in self._pool.ready_upstreams().items():
            in_flight[upstream] += proto.table_size
        for upstream in in_flight:
            own = self.upstream_node(upstream)
            labels = {"upstream": upstream}
            for state in CONNECTION_STATES:
                samples.append(
                    GaugeSample(
                        "framedclient_upstream_connections",
                        "Connections by upstream and state.",
                        by_state.get((upstream, state), 0),
                        {**labels, "state": state},
                    )
                )
            samples.append(
                GaugeSample(
                    "framedclient_upstream_in_flight",
                    "Requests (and abandoned IDs) held by the upstream's "
                    "ready connections.",
                    in_flight[upstream],
                    labels,
                )
            )
            totals = own.totals()
            for outcome, histogram in (
                ("ok", totals.latency),
                ("error", totals.failure_latency),
            ):
                samples.append(
                    HistogramSample(
                        "framedclient_upstream_request_latency_seconds",
                        "Seconds from sending a request to its end, by upstream; "
                        "outcome=ok for replies, outcome=error for sent requests "
                        "that failed.",
                        histogram,
                        {**labels, "outcome": outcome},
                    )
                )
            for outcome, count in totals.outcomes.items():
                samples.append(
                    CounterSample(
                        "framedclient_upstream_requests_total",
                        "Requests that ended on a connection, by upstream and "
                        "outcome.",
                        count,
                        {**labels, "outcome": outcome},
                    )
                )
            samples.append(
                CounterSample(
                    "framedclient_upstream_received_bytes_total",
                    "Bytes read from the upstream.",
                    totals.bytes_received,
                    labels,
                )
            )
            samples.append(
                CounterSample(
                    "framedclient_upstream_sent_bytes_total",
                    "Bytes written to the upstream.",
                    totals.bytes_sent,
                    labels,
                )
            )
        samples.extend(self.health_samples())
        hedges = self._hedges()
        for event in HEDGE_EVENTS:
            samples.append(
                CounterSample(
                    "framedclient_hedges_total",
                    "Hedged requests: sent, won (answered first), or not sent "
                    "(no_budget, no_host).",
                    hedges[event],
                    {"result": event},
                )
            )
        return samples


    def health_samples(self) -> list[Sample]:
        """
        Each host's health: its state as one gauge per state (1 for the
        state it is in, so that summed over ``--workers`` processes the
        value counts the workers that see the host in that state), and
        its ejections, probes and black-hole closes so far.
        """
        samples: list[Sample] = []
        for host in self._health.hosts:
            labels = {"upstream": host.name}
            for state in HEALTH_STATES:
                samples.append(
                    GaugeSample(
                        "framedclient_upstream_health",
                        "1 for the health state the upstream is in (live takes "
                        "requests; ejected, probing and probe_sent are out), "
                        "else 0.",
                        int(host.state == state),
                        {**labels, "state": state},
                    )
                )
            samples.append(
                CounterSample(
                    "framedclient_upstream_ejections_total",
                    "Times the upstream was ejected for consecutive failures.",
                    host.total_ejections,
                    labels,
                )
            )
            samples.append(
                CounterSample(
                    "framedclient_upstream_probes_total",
                    "Probe requests sent to the upstream when its ejection "
                    "window ended.",
                    host.total_probes,
                    labels,
                )
            )
            own = self._upstreams.get(host.name)
            black_holes = (
                own.totals().connection_events.get("black_hole", 0)
                if own is not None
                else 0
            )
            samples.append(
                CounterSample(
                    "framedclient_upstream_black_holes_total",
                    "Connections to the upstream closed as black holes "
                    "(written requests timed out in a row, nothing read).",
                    black_holes,
                    labels,
                )
            )
        return samples
