"""
Discovery over real sockets: an in-process ``twisted.names`` DNS server
(UDP and TCP on 127.0.0.1) serves an SRV zone and A records, fc1 reference
servers listen on 127.0.0.1, and a client reaches them through ``srv:``.
Then the zone changes under load (one host removed, another added) and
every request still gets its own reply exactly once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.names import authority, common, dns, server

from framedclient import FramedClient
from framedclient.backoff import ExponentialBackoff
from framedclient.server import ReferenceServerFactory, ReferenceServerProtocol, listen
from tests.test_runner_gateway import running

FAST = ExponentialBackoff(initial=0.05, max_delay=0.2, min_connect_timeout=1.0)
ZONE = b"example.test"
SERVICE = "_fc._tcp.example.test"


class Zone(authority.FileAuthority):
    """
    An authority for ``example.test`` whose records the test edits in place
    (``records``: lower-case name → records); every TTL is one second.
    """

    def __init__(self) -> None:
        common.ResolverBase.__init__(self)  # type: ignore[no-untyped-call]
        self._cache: dict[Any, Any] = {}
        self.soa = (
            ZONE,
            dns.Record_SOA(
                mname=b"ns." + ZONE,
                rname=b"root." + ZONE,
                serial=1,
                refresh=1,
                retry=1,
                expire=1,
                minimum=1,
                ttl=1,
            ),
        )
        self.records: dict[bytes, list[Any]] = {}

    def serve(self, hosts: dict[str, int]) -> None:
        """
        The SRV name lists ``hosts`` (``{label: port}``); each label has an
        A record for 127.0.0.1.
        """
        records: dict[bytes, list[Any]] = {}
        srvs = []
        for label, port in hosts.items():
            target = f"{label}.example.test".encode()
            srvs.append(dns.Record_SRV(0, 1, port, target, ttl=1))
            records[target] = [dns.Record_A("127.0.0.1", ttl=1)]
        records[SERVICE.encode()] = srvs
        self.records = records


async def dns_server(zone: Zone) -> tuple[int, list[IListeningPort]]:
    """
    ``zone`` served over UDP and TCP on one free 127.0.0.1 port.
    """
    factory = server.DNSServerFactory(authorities=[zone])  # type: ignore[no-untyped-call]
    for _ in range(20):
        tcp = reactor.listenTCP(0, factory, interface="127.0.0.1")
        port = tcp.getHost().port
        try:
            udp = reactor.listenUDP(
                port, dns.DNSDatagramProtocol(factory), interface="127.0.0.1"
            )
        except CannotListenError:
            await tcp.stopListening()
            continue
        return port, [tcp, udp]
    raise AssertionError("no free port for both UDP and TCP")


class CountingProtocol(ReferenceServerProtocol):
    def _command(self, request_id: int, body: bytes) -> None:
        self.factory.bodies[body] += 1  # type: ignore[attr-defined]
        super()._command(request_id, body)


class CountingServer(ReferenceServerFactory):
    """
    The reference server, counting each request body it receives.
    """

    def __init__(self) -> None:
        super().__init__(clock=reactor)
        self.bodies: Counter[bytes] = Counter()

    def buildProtocol(self, addr: Any) -> ReferenceServerProtocol:  # type: ignore[override]
        proto = CountingProtocol(self.codec, self.clock)
        proto.factory = self
        return proto


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"condition not met within {timeout} s")


class Fleet:
    """
    Three counting reference servers (a, b, c) and the DNS zone.
    """

    def __init__(self) -> None:
        self.zone = Zone()
        self.servers = {name: CountingServer() for name in "abc"}
        self.ports: dict[str, int] = {}
        self.listening: list[IListeningPort] = []
        self.dns_port = 0

    async def start(self) -> None:
        for name, factory in self.servers.items():
            port = await listen(reactor, "tcp:0:interface=127.0.0.1", factory)
            self.listening.append(port)
            self.ports[name] = port.getHost().port
        self.dns_port, ports = await dns_server(self.zone)
        self.listening += ports

    def serve(self, *names: str) -> None:
        self.zone.serve({name: self.ports[name] for name in names})

    async def stop(self) -> None:
        for port in self.listening:
            await port.stopListening()
        for factory in self.servers.values():
            factory.drop_all()

    @property
    def srv(self) -> str:
        return f"srv:{SERVICE}@127.0.0.1:{self.dns_port}"


@pytest.fixture
def fleet() -> Any:
    f = Fleet()
    pytest_twisted.blockon(Deferred.fromCoroutine(f.start()))
    yield f
    pytest_twisted.blockon(Deferred.fromCoroutine(f.stop()))


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_a_client_finds_its_servers_through_srv(fleet):
    fleet.serve("a", "b")
    client = FramedClient.from_endpoint(reactor, fleet.srv, pool_size=2, backoff=FAST)
    try:
        await client.when_ready().addTimeout(10, reactor)
        await wait_until(lambda: client.pool.ready_count == 4)
        bodies = [b"hello-%d" % i for i in range(200)]
        assert await gatherResults([client.request(b) for b in bodies]) == bodies
        assert sorted(c.name.split("@")[0] for c in client.pool) == [
            f"a.example.test:{fleet.ports['a']}",
            f"a.example.test:{fleet.ports['a']}",
            f"b.example.test:{fleet.ports['b']}",
            f"b.example.test:{fleet.ports['b']}",
        ]
        assert sum(f.requests for f in fleet.servers.values()) == 200
        assert fleet.servers["a"].requests > 0 and fleet.servers["b"].requests > 0
    finally:
        await client.close()


@pytest.mark.slow
@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_the_host_set_changes_under_load_and_no_request_is_lost(fleet):
    fleet.serve("a", "b")
    client = FramedClient.from_endpoint(
        reactor,
        fleet.srv,
        pool_size=2,
        max_in_flight=256,
        request_timeout=10.0,
        backoff=FAST,
        dns_refresh_min=0.2,
        dns_refresh_max=1.0,
    )
    # What b's connections held when they were retired.
    held_by_b: list[int] = []

    def watch(conn: Any, old: str, new: str) -> None:
        if conn.name.startswith("b.") and old == "ready" and new == "closing":
            held_by_b.append(conn.debug_state()["protocol"]["pending"])

    client.add_connection_listener(watch)
    sent: list[bytes] = []
    replies: list[Any] = []
    running_load = True

    async def worker(w: int) -> None:
        n = 0
        while running_load:
            body = b"!delay:0.02 w%d-%d" % (w, n)
            n += 1
            sent.append(body)
            try:
                replies.append((body, await client.request(body)))
            except Exception as error:  # counted as lost below
                replies.append((body, error))

    try:
        await client.when_ready().addTimeout(10, reactor)
        workers = [Deferred.fromCoroutine(worker(w)) for w in range(64)]
        await wait_until(lambda: fleet.servers["b"].requests > 500)

        fleet.serve("a", "c")  # b leaves, c joins
        await wait_until(
            lambda: (
                not fleet.servers["b"].connections and fleet.servers["c"].requests > 500
            )
        )
        b_total = fleet.servers["b"].requests
        await deferLater(reactor, 0.3, lambda: None)
        running_load = False
        await gatherResults(workers)
    finally:
        running_load = False
        await client.close()

    lost = [r for body, r in replies if not isinstance(r, bytes)]
    wrong = [(body, r) for body, r in replies if isinstance(r, bytes) and r != body]
    received: Counter[bytes] = Counter()
    for factory in fleet.servers.values():
        received.update(factory.bodies)
    twice = [body for body, count in received.items() if count > 1]
    assert (len(lost), len(twice), len(wrong)) == (0, 0, 0), (lost[:3], twice, wrong)
    assert len(replies) == len(sent) == sum(received.values())
    # b drained: it held requests when it was retired, and got no more after.
    assert sum(held_by_b) > 0
    assert fleet.servers["b"].requests == b_total
    assert not fleet.servers["b"].connections


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_twist_framedclient_takes_an_srv_upstream(fleet):
    fleet.serve("c")
    async with running("--upstream", fleet.srv, "--pool-size", "1") as runner:
        code, _, body = await runner.post(b"through srv")
        assert (code, body) == (200, b"through srv")
        assert fleet.servers["c"].requests == 1
        code, state = await runner.get_json("/debug/state")
        assert state["discovery"]["sources"][0]["source"] == fleet.srv


# -- srv+tls: the certificate must be valid for the SRV target's name ---------------------


def tls_files(tmp_path: Any, dns_name: str) -> tuple[str, str]:
    """
    A CA directory and a server PEM (key and certificate) for ``dns_name``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.test_tls import _name, _validity, cert_pem, key_pem, make_ca

    ca_key, ca = make_ca("framedclient srv+tls test CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _validity(x509.CertificateBuilder())
        .subject_name(_name(dns_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    roots = tmp_path / "roots"
    roots.mkdir()
    (roots / "ca.pem").write_bytes(cert_pem(ca))
    server_pem = tmp_path / "server.pem"
    server_pem.write_bytes(key_pem(key) + cert_pem(cert))
    return str(roots), str(server_pem)


@pytest.mark.timeout(30)
@pytest_twisted.ensureDeferred
async def test_srv_with_tls_connects_to_the_address_and_verifies_the_target_name(
    tmp_path,
):
    roots, server_pem = tls_files(tmp_path, "a.example.test")
    zone = Zone()
    factory = CountingServer()
    port = await listen(
        reactor, f"ssl:0:interface=127.0.0.1:privateKey={server_pem}", factory
    )
    dns_port, dns_ports = await dns_server(zone)
    clients = []
    try:
        # a.example.test: the name on the certificate; b.example.test: the
        # same server under a name the certificate does not carry.
        zone.serve({"a": port.getHost().port})
        good = FramedClient.from_endpoint(
            reactor,
            f"srv+tls:{SERVICE}:trustRoots={roots}@127.0.0.1:{dns_port}",
            pool_size=1,
            backoff=FAST,
        )
        clients.append(good)
        await good.when_ready().addTimeout(10, reactor)
        assert await good.request(b"over tls") == b"over tls"
        zone.serve({"b": port.getHost().port})
        wrong = FramedClient.from_endpoint(
            reactor,
            f"srv+tls:{SERVICE}:trustRoots={roots}@127.0.0.1:{dns_port}",
            pool_size=1,
            backoff=FAST,
            wait_for_ready=False,
        )
        clients.append(wrong)
        await wait_until(
            lambda: any(
                "certificate" in str(c.last_error) or "hostname" in str(c.last_error)
                for c in wrong.pool
            )
        )
        assert wrong.pool.ready_count == 0
        assert factory.requests == 1, "nothing sent over the unverified connection"
    finally:
        for client in clients:
            await client.close()
        factory.drop_all()
        await port.stopListening()
        for p in dns_ports:
            await p.stopListening()
