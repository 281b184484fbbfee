"""
``python -m framedclient.bench redis-cluster``'s pieces that decide what
its figures mean: the routing rows send only keys the one node serves, the
comparison rows keys on every slot range, and the table's ratios are
framedclient's over each other client's (the routing rows compared with
each other only).
"""

from __future__ import annotations

import pytest

from framedclient.bench.__main__ import main as bench_main
from framedclient.bench.redis_cluster import KEYS, bench_keys, build_parser, render
from framedclient.clients.slots import key_slot


def test_routing_keys_are_all_on_the_one_node() -> None:
    ranges = [(0, 5460)]
    keys = bench_keys(ranges)
    assert len(keys) == KEYS == len(set(keys))
    assert all(0 <= key_slot(k) <= 5460 for k in keys)
    spread = {key_slot(k) * 3 // 16384 for k in bench_keys()}
    assert spread == {0, 1, 2}  # the comparison's keys reach every master


def test_the_table_gives_ratios_to_framedclient_and_the_routing_cost() -> None:
    args = build_parser().parse_args(["--ops", "get", "--runs", "1"])
    rows = [
        {"client": "framedclient", "op": "get", "requests": 100, "seconds": 1.0,
         "cpu": 1.0, "rate": 100.0},
        {"client": "coredis", "op": "get", "requests": 100, "seconds": 4.0,
         "cpu": 5.0, "rate": 25.0},
        {"client": "routing-direct", "op": "get", "requests": 100, "seconds": 1.0,
         "cpu": 1.0, "rate": 100.0},
        {"client": "routing-cluster", "op": "get", "requests": 100, "seconds": 1.0,
         "cpu": 1.1, "rate": 100.0},
        {"client": "routing-direct", "op": "get", "instructions": 1000.0},
        {"client": "routing-cluster", "op": "get", "instructions": 1070.0},
    ]  # fmt: skip
    table = render(rows, args)
    assert "| GET | coredis | 25 | 20 | 4.00x | 5.00x |" in table
    assert "| GET | routing-cluster | 100 | 91 | - | - |" in table
    assert "| GET | +10.0 % | 1,000 | 1,070 | +7.0 % |" in table


def test_an_unknown_client_is_refused_naming_the_choices(capsys) -> None:
    with pytest.raises(SystemExit) as exit:
        bench_main(["redis-cluster", "--clients", "jedis"])
    assert exit.value.code == 2
    assert "unknown jedis; choose from framedclient" in capsys.readouterr().err
