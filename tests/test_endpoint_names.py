"""
Connections are named after their endpoint's address (``tcp:HOST:PORT``) in
``debug_state()`` (so on the status page) and in logs, never after an
endpoint's ``repr()``, which says nothing and changes from run to run.
"""

from __future__ import annotations

import re

import pytest
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
from twisted.python import usage

from framedclient import FramedClient
from framedclient._endpoints import endpoint_name
from framedclient.runner.options import check_client_endpoint


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


# -- endpoint strings are checked when they are given --------------------------------

MALFORMED = [
    # (string, what the message must say)
    ("tcp:127.0.0.1:99999", "the port must be a port number (1-65535), got '99999'"),
    ("tcp:127.0.0.1:0", "the port must be a port number (1-65535), got '0'"),
    ("tcp:127.0.0.1:-1", "the port must be a port number (1-65535), got '-1'"),
    ("tcp:127.0.0.1:http", "the port must be a port number (1-65535), got 'http'"),
    ("tcp:host=127.0.0.1:port=70000", "got '70000'"),
    ("tcp:", "no host; expected tcp:HOST:PORT"),
    ("tcp::9000", "no host; expected tcp:HOST:PORT"),
    ("tcp:127.0.0.1", "no port; expected tcp:HOST:PORT"),
    ("tcp:[::1]:9000", "an IPv6 address is written with its colons escaped"),
    ("tls:", "no host; expected tls:HOST:PORT"),
    ("tls:example.com", "no port; expected tls:HOST:PORT"),
    ("tls:example.com:65536", "got '65536'; expected tls:HOST:PORT"),
    ("ssl:example.com", "no port; expected ssl:HOST:PORT"),
    ("unix:", "no socket path; expected unix:PATH"),
    ("tcp:127.0.0.1:9000:timeout=soon", "not a client endpoint string Twisted can parse"),
    ("carrier-pigeon:1", "Unknown endpoint type"),
    ("srv:", "is not a DNS name"),
    ("srv:example.com", "expected srv:_SERVICE._PROTO.NAME"),
    ("srv:_fc._tcp.example.com@10.0.0.53:99999", "got '99999'"),
    ("dns:", "expected dns:NAME:PORT"),
    ("dns:db.example.com", "expected dns:NAME:PORT"),
    ("dns:db.example.com:99999", "got '99999'"),
    ("dns:db.example.com:0", "got '0'"),
]


@pytest.mark.parametrize(("text", "says"), MALFORMED)
def test_a_malformed_endpoint_string_is_refused_at_construction(text, says):
    # Before, tcp:127.0.0.1:99999 made a client that failed every request
    # with Unavailable, and tcp: raised Twisted's TypeError about
    # TCP4ClientEndpoint.__init__'s arguments.
    memory = MemoryReactorClock()
    with pytest.raises(ValueError) as raised:
        FramedClient.from_endpoint(memory, ["tcp:127.0.0.1:9000", text])
    message = str(raised.value)
    assert repr(text) in message and says in message
    assert memory.tcpClients == [] and memory.unixClients == []  # nothing tried


@pytest.mark.parametrize(("text", "says"), MALFORMED)
def test_a_malformed_endpoint_string_is_refused_by_set_endpoints_keeping_the_hosts(
    text, says
):
    memory = MemoryReactorClock()
    client = FramedClient.from_endpoint(memory, "tcp:127.0.0.1:9000", pool_size=1)
    before = [u["name"] for u in client.debug_state()["upstreams"]]
    with pytest.raises(ValueError, match=re.escape(says)):
        client.set_endpoints(["tcp:127.0.0.1:9001", text])
    assert [u["name"] for u in client.debug_state()["upstreams"]] == before


@pytest.mark.parametrize(("text", "says"), MALFORMED)
def test_a_malformed_upstream_option_is_one_usage_error(text, says):
    with pytest.raises(usage.UsageError) as raised:
        check_client_endpoint("upstream", text)
    assert str(raised.value).startswith(f"--upstream {text!r}")
    assert says in str(raised.value)


@pytest.mark.parametrize(
    "text",
    [
        "tcp:127.0.0.1:1",
        "tcp:127.0.0.1:65535",
        "tcp:host=127.0.0.1:port=9000",
        "tcp:localhost:9000:timeout=5",
        "tcp:\\:\\:1:9000",
        "tls:example.com:443",
        "ssl:example.com:443",
        "unix:/tmp/framedclient.sock",
        "unix:path=/tmp/framedclient.sock",
        # With a name server of their own: without one, the client would
        # take twisted.names' process-wide resolver, whose re-reading of
        # /etc/resolv.conf every 60 s on the real reactor outlives this test
        # and shows up as a timer left behind in a later test's check.
        "srv:_fc._tcp.example.com@127.0.0.1",
        "dns:db.example.com:9000@127.0.0.1:53",
    ],
)
def test_well_formed_endpoint_strings_are_still_accepted(text):
    memory = MemoryReactorClock()
    FramedClient.from_endpoint(memory, text, start=False)
    assert check_client_endpoint("upstream", text) == text
