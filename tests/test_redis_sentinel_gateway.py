"""
``twist framedclient --codec redis --upstream redis-sentinel:...``: the
gateway's pool connects to the master the sentinels name (a real
deployment, :mod:`tests.sentinel_servers`), and Redis upstreams are
refused at the command line where they cannot work, saying what to do.
"""

from __future__ import annotations

import pytest
import pytest_twisted

from framedclient.codecs.redis import command
from framedclient.runner.options import UsageExit

from .sentinel_servers import ask, sentinel_group
from .test_runner_gateway import parse, running


@pytest.fixture
def group(tmp_path):
    with sentinel_group(str(tmp_path)) as group:
        yield group


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_redis_sentinel_upstream_reaches_the_master_it_names(group):
    sentinels = ",".join(f"127.0.0.1:{s.port}" for s in group.sentinels)
    upstream = f"redis-sentinel:{sentinels}/{group.service}"
    async with running("--codec", "redis", "--upstream", upstream) as runner:
        code, _, reply = await runner.post(command("SET", "via-gateway", "yes"))
        assert (code, reply) == (200, b"+OK\r\n")
        # Written on the master itself, not on the replica or a sentinel.
        assert ask(group.master.port, "GET", "via-gateway") == b"yes"
        code, _, reply = await runner.post(command("GET", "via-gateway"))
        assert (code, reply) == (200, b"$3\r\nyes\r\n")


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        # Served since the gateway routes by hash slot (it was refused
        # before); what stays refused says what to do.
        (
            ["--upstream", "redis-cluster:127.0.0.1:7000"],
            "speaks Redis: add --codec redis",
        ),
        (
            ["--codec", "redis", "--upstream", "redis-cluster:127.0.0.1:7000",
             "--upstream", "tcp:127.0.0.1:6379"],
            "redis-cluster:... stands alone",
        ),
        (
            ["--codec", "redis", "--upstream", "redis-cluster:127.0.0.1"],
            "'127.0.0.1' is not HOST:PORT",
        ),
        (
            ["--upstream", "redis-sentinel:127.0.0.1:26379/mymaster"],
            "speaks Redis: add --codec redis",
        ),
    ],
)  # fmt: skip
def test_a_redis_cluster_upstream_is_refused_where_it_cannot_work(capsys, argv, said):
    with pytest.raises(UsageExit):
        parse(*argv)
    assert said in capsys.readouterr().err


def test_a_well_formed_redis_cluster_upstream_is_taken():
    options = parse("--codec", "redis", "--upstream", "redis-cluster:127.0.0.1:7000")
    assert options["upstream"] == ["redis-cluster:127.0.0.1:7000"]


def test_a_malformed_redis_sentinel_upstream_is_refused_quoting_it(capsys):
    with pytest.raises(UsageExit):
        parse("--codec", "redis", "--upstream", "redis-sentinel:127.0.0.1:26379")
    error = capsys.readouterr().err
    assert "'redis-sentinel:127.0.0.1:26379'" in error
    assert "/SERVICE" in error
