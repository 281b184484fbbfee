"""
``twist framedclient --codec redis --upstream redis-sentinel:...``: the
gateway's pool connects to the master the sentinels name (a real
deployment, :mod:`tests.sentinel_servers`), and Redis upstreams are
refused at the command line where they cannot work, saying what to do.
"""

from __future__ import annotations

import json
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from framedclient.codecs.redis import command
from framedclient.runner.options import UsageExit

from .sentinel_servers import ask, sentinel_group
from .servers import redis_server
from .test_redis_sentinel import failover, fake_sentinel
from .test_runner_gateway import parse, running, wait_until
from .test_runner_logs import captured_log


@pytest.fixture
def group(tmp_path):
    with sentinel_group(str(tmp_path)) as group:
        yield group


@pytest.mark.slow
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
        (
            ["--upstream", "redis-sentinel+tls:127.0.0.1:26379/mymaster"],
            "speaks Redis: add --codec redis",
        ),
        (
            ["--codec", "redis",
             "--upstream", "redis-sentinel+tls:127.0.0.1:26379/mymaster",
             "--upstream", "tcp:127.0.0.1:6379"],
            "redis-sentinel+tls:... stands alone",
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


# -- passwords ----------------------------------------------------------------


@pytest.fixture
def protected(tmp_path):
    with sentinel_group(
        str(tmp_path), password="master-secret", sentinel_password="sentinel-secret"
    ) as group:
        yield group


async def everything_shown(runner) -> str:
    """What the gateway shows anyone: status page, figures, config, metrics."""
    shown = []
    for path in ("/", "/v1/stats", "/debug/state", "/v1/config", "/metrics", "/readyz"):
        _, _, body = await runner.get(path)
        shown.append(body.decode("utf-8", "replace"))
    return "\n".join(shown)


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_the_sentinels_and_the_master_passwords_are_given_apart(protected):
    sentinels = ",".join(f"127.0.0.1:{s.port}" for s in protected.sentinels)
    with captured_log() as logged:
        async with running(
            "--codec", "redis",
            "--upstream", f"redis-sentinel:{sentinels}/{protected.service}",
            "--redis-password", "master-secret",
            "--sentinel-password", "sentinel-secret",
        ) as runner:  # fmt: skip
            code, _, reply = await runner.post(command("SET", "pw", "yes"))
            assert (code, reply) == (200, b"+OK\r\n")
            got = ask(protected.master.port, "GET", "pw", password="master-secret")
            assert got == b"yes"
            shown = await everything_shown(runner)
    for secret in ("master-secret", "sentinel-secret"):
        assert secret not in shown
        assert not [line for line in logged if secret in line]


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_wrong_master_password_is_said_without_showing_it(
    protected, monkeypatch
):
    # Passwords from the environment: kept out of ps.
    monkeypatch.setenv("FRAMEDCLIENT_REDIS_PASSWORD", "not-the-secret")
    monkeypatch.setenv("FRAMEDCLIENT_SENTINEL_PASSWORD", "sentinel-secret")
    sentinels = ",".join(f"127.0.0.1:{s.port}" for s in protected.sentinels)
    with captured_log() as logged:
        async with running(
            "--codec", "redis",
            "--upstream", f"redis-sentinel:{sentinels}/{protected.service}",
            "--fail-fast",
            wait_ready=False,
        ) as runner:  # fmt: skip
            # The sentinels answered (their password is right) and named the
            # master, whose AUTH refuses the wrong one.
            sentinel = runner.client.sentinel
            await wait_until(
                lambda: "WRONGPASS" in (sentinel.last_error or ""), timeout=10
            )
            code, _, body = await runner.post(command("SET", "pw", "no"))
            assert code == 503
            assert "WRONGPASS" in json.loads(body)["detail"]
            code, _ = await runner.get_json("/readyz")
            assert code == 503
            shown = await everything_shown(runner) + body.decode()
    assert "not-the-secret" not in shown
    assert not [line for line in logged if "not-the-secret" in line]


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_plain_redis_upstream_takes_the_password_too(tmp_path):
    with redis_server(str(tmp_path), "--requirepass", "plain-secret") as server:
        async with running(
            "--codec", "redis",
            "--upstream", f"tcp:127.0.0.1:{server.port}",
            "--redis-password", "plain-secret",
        ) as runner:  # fmt: skip
            code, _, reply = await runner.post(command("SET", "plain", "yes"))
            assert (code, reply) == (200, b"+OK\r\n")
            assert ask(server.port, "GET", "plain", password="plain-secret") == b"yes"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--redis-password", "x"], "--redis-password is sent as Redis AUTH"),
        (
            ["--codec", "redis", "--sentinel-password", "x"],
            "--sentinel-password is for the sentinels",
        ),
        (["--codec", "redis", "--redis-password", ""], "the password is empty"),
    ],
)
def test_a_password_where_none_applies_is_refused(capsys, argv, said):
    with pytest.raises(UsageExit):
        parse(*argv)
    error = capsys.readouterr().err
    assert said in error


def test_the_sentinels_password_goes_with_a_tls_sentinel_upstream_too():
    upstream = "redis-sentinel+tls:127.0.0.1:26379/mymaster"
    options = parse(
        "--codec", "redis", "--upstream", upstream, "--sentinel-password", "x"
    )
    assert options["sentinel-password"] == "x"


# -- following a failover -----------------------------------------------------------


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_readonly_reply_makes_the_gateway_ask_the_sentinels_again(group):
    # Subscribed to a sentinel that never announces (listed first): the
    # demoted master's READONLY reply is what tells the gateway.
    mute = fake_sentinel(None)
    listed = [f"127.0.0.1:{mute.getHost().port}"]
    listed += [f"127.0.0.1:{s.port}" for s in group.sentinels]
    upstream = f"redis-sentinel:{','.join(listed)}/{group.service}"
    new = f"127.0.0.1:{group.replica.port}"
    try:
        async with running(
            "--codec", "redis", "--upstream", upstream, "--pool-size", "1"
        ) as runner:
            sentinel = runner.client.sentinel
            await wait_until(lambda: sentinel.subscribed_to is not None)
            assert sentinel.subscribed_to == listed[0]
            code, _, _ = await runner.post(command("SET", "before", "1"))
            assert code == 200
            await failover(group)
            # The sentinels demote the old master some seconds later; done
            # at once here, as soon as they name the new one.
            while await deferToThread(group.master_port) != group.replica.port:
                await deferLater(reactor, 0.05, lambda: None)
            await deferToThread(
                ask, group.master.port, "REPLICAOF", "127.0.0.1", group.replica.port
            )
            started = time.monotonic()
            refused = 0
            while True:
                assert time.monotonic() - started < 10, sentinel.debug_state()
                code, _, body = await runner.post(command("SET", "after", "2"))
                if code == 200 and sentinel.master == new:
                    break
                if code != 200:
                    assert b"READONLY" in body, body
                    refused += 1
                await deferLater(reactor, 0.05, lambda: None)
            assert refused >= 1
            # Writes resumed on the new master.
            assert ask(group.replica.port, "GET", "after") == b"2"
            assert sentinel.switches == 1
    finally:
        await mute.stopListening()


def test_password_variables_are_read_only_where_they_apply(monkeypatch):
    # One environment may serve several programs: a variable that does not
    # apply is left alone, not refused.
    monkeypatch.setenv("FRAMEDCLIENT_REDIS_PASSWORD", "r")
    monkeypatch.setenv("FRAMEDCLIENT_SENTINEL_PASSWORD", "s")
    options = parse("--upstream", "tcp:127.0.0.1:9000")
    assert (options["redis-password"], options["sentinel-password"]) == (None, None)
    options = parse("--codec", "redis", "--upstream", "tcp:127.0.0.1:6379")
    assert (options["redis-password"], options["sentinel-password"]) == ("r", None)
    # Given on the command line, the option wins.
    options = parse(
        "--codec", "redis", "--upstream", "redis-sentinel:127.0.0.1:26379/m",
        "--sentinel-password", "given",
    )  # fmt: skip
    assert (options["redis-password"], options["sentinel-password"]) == ("r", "given")
