"""
``twist framedclient --codec redis --upstream redis-cluster:...`` against a
real 6-node Redis Cluster (tests/redis_cluster_servers.py), through a real
gateway over HTTP: each RESP body goes to the master of its key's slot,
MOVED and ASK are followed, a cross-slot command is refused naming the
slots, and the figures show each master as an upstream.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.task import deferLater

from framedclient.clients.slots import key_slot
from framedclient.codecs.redis import command
from framedclient.errors import Unavailable

from .redis_cluster_servers import RedisCluster, redis_cluster
from .sentinel_servers import ask
from .servers import free_port
from .test_redis_cluster import finish_slot, keys_on_each_master, move_slot
from .test_runner_gateway import running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with redis_cluster(tmp_path_factory.mktemp("gwcluster")) as running:
        yield running


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing under CI (Debian package prometheus)")
        pytest.skip("promtool not installed (Debian package prometheus)")
    return found


def upstream(cluster: RedisCluster) -> str:
    # One seed is enough: the map names the others.
    return f"redis-cluster:127.0.0.1:{cluster.ports[0]}"


def gateway(cluster: RedisCluster, *argv: str):  # type: ignore[no-untyped-def]
    return running(
        "--codec", "redis", "--upstream", upstream(cluster), "--pool-size", "1",
        *argv,
    )  # fmt: skip


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_sets_and_gets_reach_the_master_of_each_keys_slot(cluster) -> None:
    keys = keys_on_each_master(cluster, "gw:each:")
    async with gateway(cluster) as runner:
        for port, key in keys.items():
            code, _, reply = await runner.post(command("SET", key, f"on {port}"))
            assert (code, reply) == (200, b"+OK\r\n")
            # Written on that master itself.
            assert ask(port, "GET", key) == f"on {port}".encode()
        for port, key in keys.items():
            code, _, reply = await runner.post(command("GET", key))
            value = f"on {port}".encode()
            assert (code, reply) == (200, b"$%d\r\n%s\r\n" % (len(value), value))
        # The three masters each answered their own, and nothing was
        # redirected: the map was right.
        code, stats = await runner.get_json("/v1/stats")
        nodes = stats["cluster"]["nodes"]
        assert {f"127.0.0.1:{p}" for p in keys} <= set(nodes)
        for port in keys:
            assert nodes[f"127.0.0.1:{port}"]["requests"]["ok"] >= 2
        assert stats["cluster"]["moved"] == 0
        assert stats["cluster"]["unmapped_slots"] == 0
        assert stats["requests"]["ok"] == 6


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_each_master_is_an_upstream_on_metrics_and_readyz(cluster) -> None:
    keys = keys_on_each_master(cluster, "gw:metrics:")
    async with gateway(cluster) as runner:
        for key in keys.values():
            assert (await runner.post(command("SET", key, "v")))[0] == 200
        code, _, text = await runner.get("/metrics")
        assert code == 200
        families = {f.name: f for f in text_string_to_metric_families(text.decode())}
        ok_by_upstream = {
            s.labels["upstream"]
            for s in families["framedclient_upstream_requests"].samples
            if s.labels["outcome"] == "ok" and s.value >= 1
        }
        assert {f"tcp:host=127.0.0.1:port={p}" for p in keys} <= ok_by_upstream
        [requests] = [
            s.value
            for s in families["framedclient_requests"].samples
            if s.name == "framedclient_requests_total" and s.labels["outcome"] == "ok"
        ]
        assert requests == 3  # what the HTTP callers got, once each
        [unmapped] = families["framedclient_cluster_unmapped_slots"].samples
        assert unmapped.value == 0
        # Each series once: the nodes' own families added up, not repeated.
        result = subprocess.run(
            [promtool(), "check", "metrics"], input=text, capture_output=True
        )
        assert result.returncode == 0, (result.stdout + result.stderr).decode()
        code, health = await runner.get_json("/readyz")
        assert code == 200
        # One pool_size connection per master at least (replicas unused).
        assert health["ready"] >= 3
        # The status page's state lists each master's connections and its
        # figures, as for a client of several hosts.
        code, state = await runner.get_json("/debug/state")
        assert code == 200
        named = {u["name"].rsplit("/", 1)[0] for u in state["upstreams"]}
        assert {f"tcp:host=127.0.0.1:port={p}" for p in keys} <= named
        assert {f"tcp:host=127.0.0.1:port={p}" for p in keys} <= set(
            state["by_upstream"]
        )
        code, _, page = await runner.get("/")
        assert code == 200 and b"<html" in page.lower()


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_moved_slot_is_followed_and_the_write_runs_once(cluster) -> None:
    key = "gw:moved:{m1}"
    slot = key_slot(key)
    async with gateway(cluster) as runner:
        assert (await runner.post(command("SET", key, 10)))[0] == 200
        source = cluster.owner(slot)
        target = next(p for p in cluster.masters().values() if p != source)
        move_slot(cluster, slot, target)
        # The gateway still believes the old owner: its INCR answers MOVED
        # (not run there) and runs once on the new owner.
        code, _, reply = await runner.post(command("INCR", key))
        assert (code, reply) == (200, b":11\r\n")
        _, stats = await runner.get_json("/v1/stats")
        assert stats["cluster"]["moved"] == 1
        assert ask(target, "GET", key) == b"11"
        code, _, reply = await runner.post(command("GET", key))
        assert (code, reply) == (200, b"$2\r\n11\r\n")
        _, stats = await runner.get_json("/v1/stats")
        assert stats["cluster"]["moved"] == 1  # the map was updated


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_key_on_a_migrating_slot_is_asked_for_on_its_new_node(
    cluster,
) -> None:
    key = "gw:ask:{a3}"
    slot = key_slot(key)
    async with gateway(cluster) as runner:
        assert (await runner.post(command("SET", key, "here")))[0] == 200
        source = cluster.owner(slot)
        target = next(p for p in cluster.masters().values() if p != source)
        move_slot(cluster, slot, target, finish=False)
        try:
            code, _, reply = await runner.post(command("GET", key))
            assert (code, reply) == (200, b"$4\r\nhere\r\n")
            _, stats = await runner.get_json("/v1/stats")
            assert (stats["cluster"]["ask"], stats["cluster"]["moved"]) == (1, 0)
        finally:
            finish_slot(cluster, slot, target)


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_cross_slot_command_is_refused_naming_the_slots(cluster) -> None:
    a, b = "gw:cross:a", "gw:cross:b"
    assert key_slot(a) != key_slot(b)
    async with gateway(cluster) as runner:
        code, _, body = await runner.post(command("MSET", a, "1", b, "2"))
        assert code == 400
        error = json.loads(body)
        assert error["error"] == "bad_body"
        text = error["message"] + error.get("detail", "")
        assert f"slot {key_slot(a)}" in text and f"slot {key_slot(b)}" in text
        assert "hash tag" in text
        # Nothing was sent.
        for key in (a, b):
            code, _, reply = await runner.post(command("EXISTS", key))
            assert (code, reply) == (200, b":0\r\n")
        # Keys that share a {hash tag} share a slot, and the command runs.
        code, _, reply = await runner.post(
            command("MSET", "{gw}:a", "1", "{gw}:b", "2")
        )
        assert (code, reply) == (200, b"+OK\r\n")


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_body_that_is_not_a_resp_command_is_refused(cluster) -> None:
    async with gateway(cluster) as runner:
        code, _, body = await runner.post(b"GET k\r\n")
        assert code == 400
        error = json.loads(body)
        assert "not one Redis command in RESP" in error["message"]
        # The gateway still serves.
        code, _, reply = await runner.post(command("PING"))
        assert (code, reply) == (200, b"+PONG\r\n")


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_two_workers_each_route_by_slot_and_their_figures_add_up(
    cluster,
) -> None:
    from .test_runner_workers import post_many, stats, two_workers

    keys = keys_on_each_master(cluster, "gw:workers:")
    async with two_workers("--codec", "redis", "--upstream", upstream(cluster)) as (
        _,
        url,
    ):
        sent = 0
        for _ in range(30):
            bodies = [command("INCR", key) for key in keys.values() for _ in range(10)]
            replies = await post_many(url, bodies)
            sent += len(bodies)
            assert {code for code, _ in replies} == {200}
            current = await stats(url)
            if all(w["requests"]["ok"] for w in current["workers"]):
                break
        else:
            raise AssertionError("one worker served everything")
        # Every INCR ran once, on its key's master, whichever worker sent it.
        for port, key in keys.items():
            assert ask(port, "GET", key) == str(sent // 3).encode()
        assert current["requests"]["ok"] == sent
        nodes = current["cluster"]["nodes"]
        for port in keys:
            assert nodes[f"127.0.0.1:{port}"]["requests"]["ok"] >= sent // 3
        masters = {f"127.0.0.1:{p}" for p in cluster.masters().values()}
        assert set(current["cluster"]["masters"]) == masters


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_a_write_lost_after_it_was_sent_is_not_sent_again(cluster) -> None:
    key = "gw:lost:{w1}"
    owner = cluster.owner(key_slot(key))
    async with gateway(cluster) as runner:
        assert (await runner.post(command("SET", key, 5)))[0] == 200
        # Writes wait on the master; ours is sent, then its connection killed
        # (also the killing command's own connections, which redis-cli
        # makes anew for each call).
        cluster.cli(owner, "CLIENT", "PAUSE", "2000", "WRITE")
        try:
            incr = runner.post(command("INCR", key))
            read = runner.post(command("GET", key))
            await deferLater(reactor, 0.3, lambda: None)
            cluster.cli(owner, "CLIENT", "KILL", "TYPE", "normal")
            code, _, body = await incr
            assert code == 502
            assert json.loads(body)["error"] == "connection_lost"
            # A read may be sent again: it changes nothing.
            code, _, reply = await read
            assert (code, reply) == (200, b"$1\r\n5\r\n")
        finally:
            cluster.cli(owner, "CLIENT", "UNPAUSE")
        # The INCR never ran twice, nor once.
        assert ask(owner, "GET", key) == b"5"


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_every_node_of_a_protected_cluster_takes_the_password(
    tmp_path,
) -> None:
    from .test_runner_logs import captured_log

    with redis_cluster(tmp_path, password="cluster-secret") as protected:
        keys = keys_on_each_master(protected, "gw:auth:")
        with captured_log() as logged:
            async with gateway(
                protected, "--redis-password", "cluster-secret"
            ) as runner:
                for port, key in keys.items():
                    code, _, reply = await runner.post(command("SET", key, "ok"))
                    assert (code, reply) == (200, b"+OK\r\n")
                    got = ask(port, "GET", key, password="cluster-secret")
                    assert got == b"ok"
                shown = []
                for path in ("/", "/v1/stats", "/debug/state", "/v1/config"):
                    shown.append((await runner.get(path))[2].decode())
        assert not [t for t in shown + logged if "cluster-secret" in t]


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_no_answering_node_is_a_503_within_the_request_timeout() -> None:
    # Nothing listens there: every map read fails, and the redirect loop
    # alone would retry them for 20 s and more.
    dead = f"redis-cluster:127.0.0.1:{free_port()}"
    async with running(
        "--codec", "redis", "--upstream", dead, "--request-timeout", "1",
        wait_ready=False,
    ) as runner:  # fmt: skip
        started = time.monotonic()
        code, _, body = await runner.post(command("GET", "k"))
        elapsed = time.monotonic() - started
        assert code == 503
        error = json.loads(body)
        assert error["error"] == "unavailable"
        assert "slot map could not be read within 1 s" in error["detail"]
        # The client itself says why when it gives up on the map.
        cluster = runner.client.cluster
        with pytest.raises(Unavailable) as caught:
            await cluster.when_ready()
        assert "no answer within 2 s (connection refused)" in str(caught.value)
        assert elapsed < 2.5
        # X-Timeout is the whole deadline too.
        started = time.monotonic()
        code, _, _ = await runner.post(command("GET", "k"), "?timeout=0.3")
        assert code == 503
        assert time.monotonic() - started < 1.5


def test_the_passwords_never_show_in_a_repr() -> None:
    from framedclient.runner.redis_upstream import RedisAuth

    auth = RedisAuth(password="s3cret", sentinel_password="t0p")
    shown = repr(auth) + str(auth)
    assert "s3cret" not in shown and "t0p" not in shown
    assert "<hidden>" in shown
    assert repr(RedisAuth()) == "RedisAuth(password=None, sentinel_password=None)"
