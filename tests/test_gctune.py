"""
framedclient.gctune: the process-wide GC knob the benchmark recommends.
"""

from __future__ import annotations

import gc

import pytest

from framedclient.gctune import raise_gc_thresholds


def test_raise_gc_thresholds_sets_and_returns_the_previous_ones():
    before = gc.get_threshold()
    try:
        previous = raise_gc_thresholds(50_000)
        assert previous == before
        assert gc.get_threshold() == (50_000, 50, 1000)
    finally:
        gc.set_threshold(*before)


def test_invalid_threshold_is_rejected():
    with pytest.raises(ValueError, match="gen0"):
        raise_gc_thresholds(0)
