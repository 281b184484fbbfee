"""
``python -m framedclient.bench pubsub`` runs end to end: each subscriber in
its own process against a real redis-server, every message counted.
"""

from __future__ import annotations

import pytest

from framedclient.bench.__main__ import main
from framedclient.bench.pubsub import payload


def test_a_message_carries_its_number_and_has_the_size_asked():
    assert payload(7, 64) == b"0000000007" + b"." * 54
    assert len(payload(123, 10)) == 10


@pytest.mark.slow
def test_the_pubsub_bench_compares_the_subscribers_in_one_run(capsys):
    clients = "framedclient,framedclient-resp3,txredisapi,redis-asyncio"
    args = ["pubsub", "--messages", "2000", "--runs", "1", "--clients", clients]
    assert main(args) == 0
    table = capsys.readouterr().out
    for client in clients.split(","):
        assert f"| {client} |" in table
    assert "| framedclient | " in table and "1.00x" in table


def test_an_unknown_subscriber_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["pubsub", "--clients", "framedclient,nope"])
    assert "nope" in capsys.readouterr().err
