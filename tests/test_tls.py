"""
TLS: the reference server on a TLS port on 127.0.0.1 with a certificate made
here (cryptography), clients on ``tls:`` endpoints trusting the test's CA.

Requests work; an untrusted certificate or a wrong hostname fails the
connection attempt (a TLS connection is ready only once its handshake is
done) with an error that names the cause, requests are never sent over it,
and the client backs off instead of reconnecting in a tight loop.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import deferLater

from framedclient.backoff import ExponentialBackoff
from framedclient.client import FramedClient
from framedclient.connection import ConnectFailed
from framedclient.errors import ConnectionLost, Unavailable
from framedclient.server import ReferenceServerFactory, listen

# Twisted's ssl: server endpoint hands pyOpenSSL objects to pyOpenSSL.
pytestmark = pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")

# -- certificates ---------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(
        now + datetime.timedelta(days=7)
    )


def make_ca(common_name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _validity(x509.CertificateBuilder())
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(ca_key, ca_cert):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _validity(x509.CertificateBuilder())
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def cert_pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Pki:
    def __init__(self, root: Path) -> None:
        ca_key, self.ca = make_ca("framedclient test CA")
        server_key, server_cert = make_server_cert(ca_key, self.ca)
        _, stranger = make_ca("a CA nobody trusts here")
        self.server_pem = root / "server.pem"
        self.server_pem.write_bytes(key_pem(server_key) + cert_pem(server_cert))
        self.trusted = root / "trusted"
        self.trusted.mkdir()
        (self.trusted / "ca.pem").write_bytes(cert_pem(self.ca))
        self.untrusted = root / "untrusted"
        self.untrusted.mkdir()
        (self.untrusted / "ca.pem").write_bytes(cert_pem(stranger))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


# -- helpers --------------------------------------------------------------------


async def tls_server(pki: Pki):
    factory = ReferenceServerFactory(clock=reactor)
    port = await listen(
        reactor, f"ssl:0:interface=127.0.0.1:privateKey={pki.server_pem}", factory
    )
    return factory, port


async def shutdown(client: FramedClient, factory, port) -> None:
    await client.close(timeout=1.0)
    factory.drop_all()
    await maybeDeferred(port.stopListening)
    for _ in range(200):
        if not factory.connections:
            break
        await deferLater(reactor, 0.01, lambda: None)


def quick_backoff() -> ExponentialBackoff:
    return ExponentialBackoff(initial=0.1, multiplier=1.6, max_delay=5.0)


async def failure_of(d: Deferred) -> BaseException:
    try:
        await d
    except Exception as e:
        return e
    raise AssertionError("expected a failure")


def attempts(client: FramedClient) -> int:
    return client.metrics.snapshot()["connections"]["connect_attempt"]


# -- tests ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_requests_work_over_tls_with_the_tests_trust_root(pki, host):
    factory, port = await tls_server(pki)
    client = FramedClient.from_endpoint(
        reactor,
        f"tls:{host}:{port.getHost().port}:trustRoots={pki.trusted}",
        pool_size=2,
        request_timeout=5.0,
    )
    try:
        replies = [await client.request(b"secret-%d" % i) for i in range(20)]
        assert replies == [b"secret-%d" % i for i in range(20)]
        # The server saw TLS, not plaintext.
        (server_proto, *_) = factory.connections
        assert ISSLTransport.providedBy(server_proto.transport)
    finally:
        await shutdown(client, factory, port)


@pytest_twisted.ensureDeferred
async def test_untrusted_certificate_fails_naming_the_cause_and_backs_off(pki):
    factory, port = await tls_server(pki)
    client = FramedClient.from_endpoint(
        reactor,
        f"tls:127.0.0.1:{port.getHost().port}:trustRoots={pki.untrusted}",
        pool_size=1,
        request_timeout=2.0,
        backoff=quick_backoff(),
    )
    try:
        # The handshake fails, so no connection ever becomes ready: the
        # request waits out its deadline, unsent, and says why.
        error = await failure_of(client.request(b"hello"))
        assert isinstance(error, Unavailable)
        assert "certificate verify failed" in str(error)
        assert factory.requests == 0
        # Delays of 0.1, 0.16, 0.26, 0.41, 0.66 s (+/-20 %): a handful of
        # attempts during the request's 2 s, not the hundreds of a tight loop.
        assert 3 <= attempts(client) <= 10, attempts(client)
        conn = client.pool.connections[0]
        assert conn.failed_attempts >= 2 and conn.connect_failures >= 2
        assert "certificate verify failed" in (conn.last_error or "")
    finally:
        await shutdown(client, factory, port)


@pytest_twisted.ensureDeferred
async def test_wrong_hostname_fails_naming_the_mismatch_and_backs_off(pki):
    factory, port = await tls_server(pki)
    options = ssl.optionsForClientTLS(
        "wrong.example", trustRoot=ssl.Certificate.loadPEM(cert_pem(pki.ca))
    )
    endpoint = wrapClientTLS(
        options, TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    )
    client = FramedClient(
        [endpoint], reactor, pool_size=1, request_timeout=2.0, backoff=quick_backoff()
    )
    try:
        error = await failure_of(client.request(b"hello"))
        assert isinstance(error, Unavailable)
        assert "wrong.example" in str(error) and "Mismatch" in str(error)
        assert 3 <= attempts(client) <= 10, attempts(client)
        assert "wrong.example" in (client.pool.connections[0].last_error or "")
    finally:
        await shutdown(client, factory, port)


@pytest_twisted.ensureDeferred
async def test_when_ready_fails_for_an_untrusted_certificate(pki):
    factory, port = await tls_server(pki)
    client = FramedClient.from_endpoint(
        reactor,
        f"tls:127.0.0.1:{port.getHost().port}:trustRoots={pki.untrusted}",
        pool_size=1,
        backoff=quick_backoff(),
    )
    try:
        waiter = client.when_ready(fail_after=1)
        error = await failure_of(waiter)
        assert isinstance(error, ConnectFailed)
        assert "certificate verify failed" in str(error)
        assert client.pool.connections[0].connect_failures >= 1
    finally:
        await shutdown(client, factory, port)


@pytest_twisted.ensureDeferred
async def test_request_made_during_a_failing_handshake_is_never_sent(pki):
    factory, port = await tls_server(pki)
    client = FramedClient.from_endpoint(
        reactor,
        f"tls:127.0.0.1:{port.getHost().port}:trustRoots={pki.untrusted}",
        pool_size=1,
        request_timeout=1.0,
        backoff=quick_backoff(),
    )
    try:
        error = await failure_of(client.request(b"hello"))
        assert factory.requests == 0  # the server never saw it
        assert not (isinstance(error, ConnectionLost) and error.written)
    finally:
        await shutdown(client, factory, port)
