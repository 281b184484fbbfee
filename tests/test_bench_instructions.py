"""
``python -m framedclient.bench instructions``: the loops callgrind counts
must answer every request they send, or a broken loop would report a cheap
figure.
"""

from __future__ import annotations

import pytest

from framedclient.bench.instructions import main, run_loop


@pytest.mark.parametrize(
    "layer",
    [{}, {"proto": True}, {"raw": True}],
    ids=["framedclient", "proto", "raw"],
)
def test_each_loop_answers_every_request(layer: dict[str, bool]) -> None:
    assert run_loop(3, 5, **layer) == 15


def test_loop_option_runs_the_raw_loop_without_valgrind() -> None:
    assert main(["--loop", "2", "--batch", "3", "--raw"]) == 0
