"""
``python -m framedclient.bench instructions`` (fc1 through a whole client,
``--proto``, ``--raw``; ``--codec redis|memcache|redis-raw``): the loops
callgrind counts must answer every request they send, so a broken loop
cannot report a cheap figure.
"""

from __future__ import annotations

import pytest

from framedclient.bench import instructions


@pytest.mark.parametrize(
    "layer",
    [{}, {"proto": True}, {"raw": True}],
    ids=["framedclient", "proto", "raw"],
)
def test_each_loop_answers_every_request(layer: dict[str, bool]) -> None:
    assert instructions.run_loop(3, 5, **layer) == 15


def test_loop_option_runs_the_raw_loop_without_valgrind() -> None:
    assert instructions.main(["--loop", "2", "--batch", "3", "--raw"]) == 0


@pytest.mark.parametrize(
    ("codec", "pipeline"),
    [
        ("redis", False),
        ("redis", True),
        ("memcache", False),
        ("memcache", True),
        ("redis-raw", False),
    ],
)
def test_each_codec_loop_answers_every_get_with_the_value(codec, pipeline):
    assert instructions.run_codec_loop(codec, 3, 7, pipeline=pipeline) == 21


def test_the_canned_redis_server_refuses_what_is_not_a_get():
    # It counts GETs by their bytes: anything else would be answered with
    # a value it did not ask for, so the loop fails instead.
    from twisted.test.proto_helpers import StringTransport

    server = instructions._redis_server_factory().buildProtocol(None)
    server.makeConnection(StringTransport())
    with pytest.raises(AssertionError, match="not only GETs"):
        server.dataReceived(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")


def test_an_unknown_codec_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="--codec must be one of fc1, redis"):
        instructions.run_codec_loop("mongodb", 1, 1)


@pytest.mark.parametrize(
    "argv",
    [
        ["--pipeline"],
        ["--codec", "redis-raw", "--pipeline"],
        ["--codec", "redis", "--proto"],
        ["--codec", "redis", "--raw"],
    ],
)
def test_options_that_measure_nothing_are_refused(argv, capsys):
    with pytest.raises(SystemExit):
        instructions.main([*argv, "--loop", "1"])
    assert "error:" in capsys.readouterr().err
