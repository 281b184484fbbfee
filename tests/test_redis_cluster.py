"""
RedisClusterClient against a real 6-node Redis Cluster (3 masters, 3
replicas; tests/redis_cluster_servers.py): commands reach the master of
their key's slot, pipelines span masters with replies in the caller's
order, transactions stay on one slot, and MOVED and ASK are followed.

The cluster is shared by the module; a test that moves a slot leaves the
cluster ok (every node agreeing) for the next.
"""

from __future__ import annotations

import random

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater

from framedclient import RedisClient
from framedclient.clients.cluster import CrossSlot, RedisClusterClient
from framedclient.clients.cluster_map import parse_cluster_shards, parse_cluster_slots
from framedclient.clients.slots import key_slot
from framedclient.errors import ClientClosed, ConnectionLost, Unavailable

from .redis_cluster_servers import RedisCluster, redis_cluster
from .servers import free_port


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest_twisted.async_yield_fixture
async def client(cluster: RedisCluster):
    redis = RedisClusterClient.from_endpoint(
        reactor, cluster.seeds()[0], pool_size=1, request_timeout=10.0
    )
    await redis.when_ready()
    yield redis
    await redis.close(timeout=2)


def node_client(port: int) -> RedisClient:
    return RedisClient.from_endpoint(
        reactor, f"tcp:127.0.0.1:{port}", pool_size=1, request_timeout=10.0
    )


def keys_on_each_master(cluster: RedisCluster, prefix: str) -> dict[int, str]:
    """One key per master port, named from ``prefix``."""
    found: dict[int, str] = {}
    owners = {}
    for i in range(1000):
        key = f"{prefix}{i}"
        slot = key_slot(key)
        if slot not in owners:
            owners[slot] = cluster.owner(slot) if len(owners) < 40 else None
        owner = owners[slot]
        if owner is not None and owner not in found:
            found[owner] = key
        if len(found) == 3:
            return found
    raise AssertionError("no key found for every master")


def move_slot(
    cluster: RedisCluster, slot: int, target: int, *, finish: bool = True
) -> int:
    """
    Migrate ``slot`` (and its keys) to the master at port ``target`` as
    ``redis-cli --cluster reshard`` does; with ``finish=False`` stop once
    the keys moved, leaving the slot MIGRATING/IMPORTING (ASK territory).
    Returns the source's port.
    """
    source = cluster.owner(slot)
    source_id, target_id = cluster.node_id(source), cluster.node_id(target)
    cluster.cli(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
    cluster.cli(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
    keys = cluster.cli(source, "CLUSTER", "GETKEYSINSLOT", str(slot), "1000").split()
    if keys:
        cluster.cli(
            source, "MIGRATE", "127.0.0.1", str(target), "", "0", "5000", "KEYS", *keys
        )
    if finish:
        finish_slot(cluster, slot, target)
    return source


def finish_slot(cluster: RedisCluster, slot: int, target: int) -> None:
    target_id = cluster.node_id(target)
    for port in [target, *cluster.masters().values()]:
        cluster.cli(port, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
    cluster.wait_until_ok()


@pytest_twisted.ensureDeferred
async def test_key_slot_agrees_with_a_live_node(cluster: RedisCluster) -> None:
    node = node_client(cluster.ports[0])
    try:
        rng = random.Random(19)
        keys = [rng.randbytes(rng.randrange(0, 12)) for _ in range(200)]
        keys += [b"{" + k + b"}x" for k in keys[:50]] + [b"a{}b", b"{{x}}", b"x{y"]
        for key in keys:
            assert await node.execute("CLUSTER", "KEYSLOT", key) == key_slot(key)
    finally:
        await node.close()


@pytest_twisted.ensureDeferred
async def test_each_command_runs_on_the_master_of_its_slot(cluster, client) -> None:
    keys = keys_on_each_master(cluster, "route:")
    for port, key in keys.items():
        assert await client.set(key, f"on {port}") is True
    for port, key in keys.items():
        assert await client.get(key) == f"on {port}".encode()
        node = node_client(port)
        try:
            # Stored on that master itself, not merely readable through us.
            assert await node.get(key) == f"on {port}".encode()
        finally:
            await node.close()
    assert sorted(client.stats()["masters"]) == sorted(
        f"127.0.0.1:{p}" for p in cluster.masters().values()
    )
    assert client.stats()["slots_mapped"] == 16384


def deadline_entries(node: RedisClient) -> int:
    """The deadlines a node's connections track apart from the usual ones."""
    state = node.client.debug_state()
    return sum(
        (c["protocol"] or {}).get("deadline_entries", 0) for c in state["upstreams"]
    )


@pytest_twisted.ensureDeferred
async def test_commands_in_flight_cost_no_deadline_entry_of_their_own(
    cluster, client
) -> None:
    # The slot map is asked for on the same connections as the commands;
    # asked with a timeout of its own it would make every later command
    # with the usual timeout a deadline entry of its own (a heap push and
    # pop per command: the routing cost over talking to one node).
    keys = keys_on_each_master(cluster, "deadline:")
    for key in keys.values():
        await client.set(key, "v")
    await client._refresh()  # another map question on a live connection
    sent = [client.get(key) for key in keys.values() for _ in range(20)]
    sent += [client.set(key, "w") for key in keys.values() for _ in range(20)]
    assert [deadline_entries(client.node_for(k)) for k in keys.values()] == [0, 0, 0]
    await gatherResults(sent)


@pytest_twisted.ensureDeferred
async def test_cross_slot_transaction_fails_before_sending_naming_the_slots(
    client,
) -> None:
    assert key_slot("a") != key_slot("b")
    with pytest.raises(CrossSlot) as caught:
        client.transaction(("SET", "a", "1"), ("SET", "b", "2"))
    message = str(caught.value)
    assert f"slot {key_slot('a')}" in message and f"slot {key_slot('b')}" in message
    assert "hash tag" in message
    # Nothing was sent: neither key was set.
    assert await client.exists("a", "b") == 0


@pytest_twisted.ensureDeferred
async def test_cross_slot_multi_key_command_fails_before_sending(client) -> None:
    with pytest.raises(CrossSlot, match="MSET has keys in 2 different hash slots"):
        client.execute("MSET", "a", "1", "b", "2")
    assert await client.exists("a", "b") == 0


@pytest_twisted.ensureDeferred
async def test_hash_tagged_transaction_runs_on_one_node(client) -> None:
    replies = await client.transaction(
        ("SET", "{acct:7}:balance", 100),
        ("INCRBY", "{acct:7}:balance", 5),
        ("LPUSH", "{acct:7}:log", "+5"),
    )
    assert replies == [b"OK", 105, 1]
    assert await client.get("{acct:7}:balance") == b"105"


@pytest_twisted.ensureDeferred
async def test_pipeline_spanning_all_masters_replies_in_callers_order(
    cluster, client
) -> None:
    keys = list(keys_on_each_master(cluster, "pipe:").values())
    pipe = client.pipeline()
    for i, key in enumerate(keys):
        pipe.add("SET", key, i)
    for key in reversed(keys):
        pipe.add("INCR", key)
    pipe.add("GET", keys[1]).add("PING").add("LPUSH", keys[0], "x")
    replies = await pipe.execute()
    assert replies[:3] == [b"OK", b"OK", b"OK"]
    assert replies[3:6] == [3, 2, 1]
    assert replies[6:8] == [b"2", b"PONG"]
    assert isinstance(replies[8], Exception)  # WRONGTYPE, in its place
    assert "WRONGTYPE" in str(replies[8])


@pytest_twisted.ensureDeferred
async def test_mget_and_delete_are_split_per_slot(cluster, client) -> None:
    keys = list(keys_on_each_master(cluster, "many:").values())
    for i, key in enumerate(keys):
        await client.set(key, str(i))
    assert await client.mget(keys[2], "missing", keys[0], keys[1]) == [
        b"2",
        None,
        b"0",
        b"1",
    ]
    assert await client.exists(*keys, "missing") == 3
    assert await client.delete(*keys) == 3
    assert await client.mget(*keys) == [None, None, None]


@pytest_twisted.ensureDeferred
async def test_moved_updates_the_map_and_runs_the_command_once(cluster, client) -> None:
    key = "moved:{m1}"
    slot = key_slot(key)
    await client.set(key, 10)
    source = cluster.owner(slot)
    target = next(p for p in cluster.masters().values() if p != source)
    move_slot(cluster, slot, target)
    # The client still believes the old owner: its INCR answers MOVED (not
    # run there), and is run once on the new owner.
    assert await client.incr(key) == 11
    assert client.stats()["moved"] == 1
    assert await client.get(key) == b"11"
    assert client.stats()["moved"] == 1  # the map was updated
    node = node_client(target)
    try:
        assert await node.get(key) == b"11"
    finally:
        await node.close()


@pytest_twisted.ensureDeferred
async def test_many_moved_replies_start_at_most_one_map_refresh(
    cluster, client
) -> None:
    tagged = [f"herd:{{h2}}:{i}" for i in range(50)]
    for key in tagged:
        await client.set(key, "v")
    slot = key_slot(tagged[0])
    source = cluster.owner(slot)
    target = next(p for p in cluster.masters().values() if p != source)
    move_slot(cluster, slot, target)
    before = client.stats()["map_refreshes"]
    values = await gatherResults([client.get(k) for k in tagged])
    assert values == [b"v"] * 50
    assert client.stats()["moved"] >= 1
    assert client.stats()["map_refreshes"] - before <= 2


@pytest_twisted.ensureDeferred
async def test_ask_on_a_migrating_slot_sends_asking_once_and_keeps_the_map(
    cluster, client
) -> None:
    key = "ask:{a3}"
    slot = key_slot(key)
    await client.set(key, "here")
    source = cluster.owner(slot)
    target = next(p for p in cluster.masters().values() if p != source)
    move_slot(cluster, slot, target, finish=False)
    try:
        # The key left the source, which answers ASK: the client asks the
        # target with ASKING on the same connection.
        assert await client.get(key) == b"here"
        assert client.stats()["ask"] == 1
        assert client.stats()["moved"] == 0
        # The map still names the source as the slot's owner: the next
        # command goes there first and is asked over again.
        assert await client.get(key) == b"here"
        assert client.stats()["ask"] == 2
        assert client.stats()["moved"] == 0
    finally:
        finish_slot(cluster, slot, target)


@pytest_twisted.ensureDeferred
async def test_cluster_slots_and_cluster_shards_give_the_same_map(cluster) -> None:
    node = node_client(cluster.ports[0])
    asked = f"127.0.0.1:{cluster.ports[0]}"
    try:
        shards = parse_cluster_shards(await node.execute("CLUSTER", "SHARDS"), asked)
        slots = parse_cluster_slots(await node.execute("CLUSTER", "SLOTS"), asked)
    finally:
        await node.close()
    assert shards.covered() == slots.covered() == 16384
    assert shards.masters == slots.masters
    assert len(shards.masters) == 3
    assert all(shards.owner(s) == slots.owner(s) for s in range(0, 16384, 97))
    assert {m: sorted(r) for m, r in shards.replicas.items()} == {
        m: sorted(r) for m, r in slots.replicas.items()
    }
    assert all(len(r) == 1 for r in shards.replicas.values()), shards.replicas
    for slot in (0, 5461, 5462, 16383):
        assert shards.owner(slot) == f"127.0.0.1:{cluster.owner(slot)}"


@pytest_twisted.ensureDeferred
async def test_a_write_lost_after_it_was_sent_is_not_sent_again(
    cluster, client
) -> None:
    key = "lost:{w1}"
    await client.set(key, 5)
    owner = cluster.owner(key_slot(key))
    # Writes wait on the master; ours is sent, then its connection killed.
    cluster.cli(owner, "CLIENT", "PAUSE", "2000", "WRITE")
    try:
        incr = client.incr(key)
        read = client.get(key)
        await deferLater(reactor, 0.2, lambda: None)
        cluster.cli(owner, "CLIENT", "KILL", "TYPE", "normal")
        with pytest.raises(ConnectionLost) as caught:
            await incr
        assert caught.value.written is True
        # A read may be sent again: it changes nothing.
        assert await read == b"5"
    finally:
        cluster.cli(owner, "CLIENT", "UNPAUSE")
    assert await client.get(key) == b"5"  # the INCR never ran twice, nor once


@pytest_twisted.ensureDeferred
async def test_a_transaction_whose_slot_moved_runs_once_on_the_new_owner(
    cluster, client
) -> None:
    key = "{tx9}:n"
    await client.set(key, 1)
    slot = key_slot(key)
    source = cluster.owner(slot)
    target = next(p for p in cluster.masters().values() if p != source)
    move_slot(cluster, slot, target)
    # Queued on the old owner, each command answers MOVED and EXEC
    # EXECABORT: nothing ran there, so it is sent again to the new owner.
    assert await client.transaction(("INCR", key), ("INCR", key)) == [2, 3]
    assert client.stats()["moved"] >= 1
    assert await client.get(key) == b"3"


@pytest_twisted.ensureDeferred
async def test_leaving_async_with_closes_every_node(cluster) -> None:
    # (Seeds given as a cluster string, as an --upstream would.)
    seeds = ",".join(f"127.0.0.1:{p}" for p in cluster.ports[:2])
    async with RedisClusterClient.from_endpoint(
        reactor, f"redis-cluster:{seeds}", pool_size=1
    ) as redis:
        keys = list(keys_on_each_master(cluster, "close:").values())
        for key in keys:
            await redis.set(key, "x")
    for key in keys:
        with pytest.raises(ClientClosed):
            await redis.get(key)
        with pytest.raises(ClientClosed):
            await redis.set(key, "y")


def replica_of(cluster: RedisCluster, port: int) -> int:
    master_id = cluster.node_id(port)
    for line in cluster.cli(port, "CLUSTER", "NODES").splitlines():
        fields = line.split()
        if "slave" in fields[2] and fields[3] == master_id:
            return int(fields[1].split(":")[1].split("@")[0])
    raise LookupError(f"no replica of {port}")


def gets_served(cluster: RedisCluster, port: int) -> int:
    for line in cluster.cli(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_get:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


@pytest_twisted.ensureDeferred
async def test_reads_go_to_replicas_only_when_asked(cluster, client) -> None:
    key = "replica:{r5}"
    await client.set(key, "copied")
    owner = cluster.owner(key_slot(key))
    replica = replica_of(cluster, owner)
    assert await client.node_for(key).execute("WAIT", 1, 2000) == 1
    before = gets_served(cluster, replica), gets_served(cluster, owner)
    for _ in range(5):
        assert await client.get(key) == b"copied"  # the default: the master
    assert gets_served(cluster, replica) == before[0]
    readers = RedisClusterClient.from_endpoint(
        reactor, cluster.seeds()[0], pool_size=1, read_from_replicas=True
    )
    try:
        await readers.when_ready()
        for _ in range(5):
            assert await readers.get(key) == b"copied"
        assert await readers.hgetall("replica:{r5}:none") == {}
        assert await readers.incr("replica:{r5}:n") == 1  # writes: the master
    finally:
        await readers.close()
    assert gets_served(cluster, replica) == before[0] + 5
    assert gets_served(cluster, owner) == before[1] + 5


@pytest_twisted.ensureDeferred
async def test_a_pipeline_over_a_moved_slot_and_a_migrating_one_keeps_its_order(
    cluster, client
) -> None:
    moved, asked = "{pm1}:k", "{pa1}:k"
    await client.set(moved, "m")
    await client.set(asked, "a")
    slot_moved, slot_asked = key_slot(moved), key_slot(asked)
    others = [p for p in cluster.masters().values() if p != cluster.owner(slot_moved)]
    move_slot(cluster, slot_moved, others[0])
    target = next(
        p for p in cluster.masters().values() if p != cluster.owner(slot_asked)
    )
    move_slot(cluster, slot_asked, target, finish=False)
    try:
        pipe = client.pipeline()
        pipe.add("GET", asked).add("INCR", "{pm1}:n").add("GET", moved)
        pipe.add("PING").add("GET", asked).add("INCR", "{pm1}:n")
        assert await pipe.execute() == [b"a", 1, b"m", b"PONG", b"a", 2]
        assert client.stats()["moved"] >= 1
        assert client.stats()["ask"] >= 1
        assert await client.get("{pm1}:n") == b"2"  # each INCR ran once
    finally:
        finish_slot(cluster, slot_asked, target)


@pytest_twisted.ensureDeferred
async def test_tryagain_during_a_migration_is_retried_until_it_ends(
    cluster, client
) -> None:
    a, b = "{tg7}:a", "{tg7}:b"
    await client.set(a, "1")
    await client.set(b, "2")
    slot = key_slot(a)
    source = cluster.owner(slot)
    target = next(p for p in cluster.masters().values() if p != source)
    cluster.cli(
        target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", cluster.node_id(source)
    )
    cluster.cli(
        source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", cluster.node_id(target)
    )
    cluster.cli(source, "MIGRATE", "127.0.0.1", str(target), "", "0", "5000", "KEYS", a)

    def finish() -> None:
        cluster.cli(
            source, "MIGRATE", "127.0.0.1", str(target), "", "0", "5000", "KEYS", b
        )
        finish_slot(cluster, slot, target)

    # One key left, one still here: the source answers TRYAGAIN until the
    # migration ends, and the command is sent again (after a growing wait).
    reactor.callLater(0.3, finish)
    assert await client.mget(a, b) == [b"1", b"2"]
    assert client.stats()["retried"] >= 1


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_when_ready_fails_saying_why_when_no_seed_answers() -> None:
    # The refresh started by start() and the one when_ready() waits for are
    # one; each waiter gets its failure (the first used to swallow it for
    # the others, and when_ready() fired as if the map were read).
    redis = RedisClusterClient.from_endpoint(reactor, f"tcp:127.0.0.1:{free_port()}")
    try:
        with pytest.raises(Unavailable) as caught:
            await redis.when_ready()
        assert "no answer within 2 s (connection refused)" in str(caught.value)
        assert redis.stats()["slots_mapped"] == 0
    finally:
        await redis.close()
