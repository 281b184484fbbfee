"""
Connections are named after their endpoint's address (``tcp:HOST:PORT``) in
``debug_state()`` (so on the status page) and in logs, never after an
endpoint's ``repr()``, which says nothing and changes from run to run.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
    clientFromString,
    wrapClientTLS,
)
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.testing import MemoryReactorClock

from framedclient import FramedClient
from framedclient._endpoints import endpoint_name


def test_tcp_endpoints_are_named_host_port():
    assert endpoint_name(TCP4ClientEndpoint(reactor, "10.0.0.1", 9000)) == (
        "tcp:10.0.0.1:9000"
    )
    # HostnameEndpoint wants a reactor with a name resolver: the real one
    # (nothing connects).
    assert endpoint_name(HostnameEndpoint(reactor, b"db.example", 7)) == (
        "tcp:db.example:7"
    )


def test_ipv6_hosts_are_bracketed_so_the_port_stays_readable():
    assert endpoint_name(TCP6ClientEndpoint(reactor, "::1", 80)) == "tcp:[::1]:80"


def test_unix_and_tls_endpoints_are_named_like_their_endpoint_strings():
    assert endpoint_name(UNIXClientEndpoint(reactor, "/run/x.sock")) == (
        "unix:/run/x.sock"
    )
    wrapped = wrapClientTLS(
        optionsForClientTLS("db.example"), HostnameEndpoint(reactor, b"db.example", 443)
    )
    assert endpoint_name(wrapped) == "tls:db.example:443"
    parsed = clientFromString(reactor, "tls:db.example:443")
    assert endpoint_name(parsed) == "tls:db.example:443"


def test_an_endpoint_with_its_own_str_names_itself_and_others_by_class():
    class Named:
        def __str__(self) -> str:
            return "primary"

    class Anonymous:
        pass

    assert endpoint_name(Named()) == "primary"
    assert endpoint_name(Anonymous()) == "Anonymous"


def test_repeated_endpoints_are_told_apart():
    memory = MemoryReactorClock()
    same = [TCP4ClientEndpoint(memory, "10.0.0.1", 9000) for _ in range(2)]
    client = FramedClient(same, memory, pool_size=1)
    names = [u["name"] for u in client.debug_state()["upstreams"]]
    assert len(set(names)) == 2
    assert all(name.startswith("tcp:10.0.0.1:9000") for name in names)


def test_connections_to_endpoint_objects_are_named_by_address():
    # Connection attempts go to an in-memory reactor: nothing leaves.
    memory = MemoryReactorClock()
    endpoints = [
        TCP4ClientEndpoint(memory, "10.0.0.1", 9000),
        TCP4ClientEndpoint(memory, "10.0.0.2", 9000),
    ]
    for client in (
        FramedClient(endpoints, memory, pool_size=1),
        FramedClient.from_endpoint(memory, endpoints, pool_size=1),
    ):
        names = [u["name"] for u in client.debug_state()["upstreams"]]
        assert names == ["tcp:10.0.0.1:9000/0", "tcp:10.0.0.2:9000/0"]
        assert repr(next(iter(client.pool))).startswith(
            "<Connection tcp:10.0.0.1:9000/0 "
        )
