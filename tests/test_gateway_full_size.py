"""
Issue 12's hostile clients at full size, against ``twist framedclient`` in
its own process (``tests/test_gateway_backpressure.py`` and
``tests/test_gateway_limits.py`` run them scaled down, in-process): 40
clients that never read 16 MB replies, and 1,100 slowloris connections
under ``RLIMIT_NOFILE=1024``.  Both go through
``python -m framedclient.bench hostile``, the on-demand tool that reports
the figures (docs/gateway.md records them).
"""

from __future__ import annotations

import pytest

from framedclient.bench.hostile import MB, non_reading, slowloris

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_40_clients_not_reading_16mb_replies_grow_the_gateway_by_at_most_100mb():
    result = non_reading(clients=40, size=16_000_000, hold=2.0)
    # The budget (64 MiB) admits four 16 MB replies; the rest are refused.
    assert result["responses"] == {"200": 4, "503": 36}
    assert result["held_reply_bytes"] == 4 * 16_000_000
    assert result["rss_growth_held"] <= 100 * MB, result


def test_livez_and_readyz_answer_through_1100_slowloris_connections_at_nofile_1024():
    result = slowloris(connections=1100, nofile=1024, duration=3.0)
    assert result["probes"] >= 20
    assert result["failed_probes"] == [], result
    assert result["http_connections_evicted"] > 0
