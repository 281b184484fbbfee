"""
A Redis Cluster over TLS only (tests/redis_cluster_servers.py with
certificates made here): the nodes the client learns from the slot map are
reached with the seed's TLS settings, so a key on any master is served.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from framedclient.clients.cluster import RedisClusterClient
from framedclient.clients.cluster_endpoints import node_endpoint

from .redis_cluster_servers import TlsFiles, redis_cluster
from .test_redis_cluster import keys_on_each_master


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory):
    from tests.test_tls import cert_pem, key_pem, make_ca, make_server_cert

    home = tmp_path_factory.mktemp("tls-cluster")
    ca_key, ca = make_ca("framedclient cluster TLS test CA")
    key, cert = make_server_cert(ca_key, ca)
    (home / "roots").mkdir()
    (home / "roots" / "ca.pem").write_bytes(cert_pem(ca))
    (home / "ca.pem").write_bytes(cert_pem(ca))
    (home / "server.crt").write_bytes(cert_pem(cert))
    (home / "server.key").write_bytes(key_pem(key))
    files = TlsFiles(
        str(home / "ca.pem"), str(home / "server.crt"), str(home / "server.key")
    )
    nodes = home / "nodes"
    nodes.mkdir()
    with redis_cluster(nodes, tls=files) as running:
        yield running, str(home / "roots")


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_nodes_learnt_from_the_map_are_reached_with_the_seeds_tls(
    tls_cluster,
) -> None:
    cluster, roots = tls_cluster
    seed = f"tls:127.0.0.1:{cluster.ports[0]}:trustRoots={roots}"
    redis = RedisClusterClient.from_endpoint(
        reactor, seed, pool_size=1, request_timeout=10.0
    )
    try:
        await redis.when_ready().addTimeout(20, reactor)
        keys = keys_on_each_master(cluster, "tls:")
        for port, key in keys.items():
            assert await redis.set(key, str(port)) is True
            assert await redis.get(key) == str(port).encode()
        assert len(redis.stats()["masters"]) == 3
    finally:
        await redis.close(timeout=2)


def test_a_node_endpoint_keeps_the_tls_seeds_settings() -> None:
    seed = "tls:10.0.0.1:7000:trustRoots=/etc/ca:certificate=/c.pem"
    assert node_endpoint("10.0.0.2:7001", seed) == (
        "tls:host=10.0.0.2:port=7001:trustRoots=/etc/ca:certificate=/c.pem"
    )
    named = "tls:host=10.0.0.1:port=7000:trustRoots=/etc/ca"
    assert node_endpoint("10.0.0.2:7001", named) == (
        "tls:host=10.0.0.2:port=7001:trustRoots=/etc/ca"
    )
    assert node_endpoint("10.0.0.2:7001", "tcp:10.0.0.1:7000") == (
        "tcp:host=10.0.0.2:port=7001"
    )
