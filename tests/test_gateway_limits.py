"""
The gateway's HTTP connection limits: header and body deadlines that
trickling cannot extend, fast 400s for malformed framing, the connection
cap, and the listen backlog; and ``/livez`` and ``/readyz`` answering under
a slowloris attack larger than ``RLIMIT_NOFILE``.
"""

from __future__ import annotations

import json
import os
import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from framedclient.codecs import Codec
from framedclient.runner.codecspec import parse_codec
from framedclient.runner.gateway import (
    Gateway,
    GatewayChannel,
    GatewayService,
    GatewaySite,
    HTTPLimits,
    _TrackingFactory,
    default_max_connections,
)
from framedclient.runner.listening import DEFAULT_BACKLOG
from framedclient.runner.options import Options

ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)
TWIST = str(Path(sys.executable).with_name("twist"))
ROOT = Path(__file__).resolve().parent.parent


class _Fine(Resource):
    isLeaf = True

    def render(self, request: object) -> bytes:
        return b"fine"


class _Hold(Resource):
    """Never answers: the request stays in progress."""

    isLeaf = True

    def render(self, request: object) -> int:
        return NOT_DONE_YET


def site(limits: HTTPLimits, clock: Clock) -> GatewaySite:
    root = Resource()
    root.putChild(b"ok", _Fine())
    root.putChild(b"hold", _Hold())
    result = GatewaySite(root, max_body=1000, limits=limits)
    result.reactor = clock
    return result


def connect(
    site: GatewaySite | _TrackingFactory,
) -> tuple[GatewayChannel, StringTransport]:
    transport = StringTransport(peerAddress=ADDRESS)
    protocol = site.buildProtocol(ADDRESS)
    assert protocol is not None
    protocol.makeConnection(transport)
    channel = getattr(protocol, "wrappedProtocol", protocol)
    assert isinstance(channel, GatewayChannel)
    return channel, transport


def status_line(transport: StringTransport) -> bytes:
    return transport.value().split(b"\r\n", 1)[0]


# -- deadlines (deterministic clock, in-memory transport) ---------------------


def test_trickled_headers_get_408_at_the_header_deadline_not_later():
    clock = Clock()
    channel, transport = connect(site(HTTPLimits(header_timeout=1.0), clock))
    # One byte every 0.25 s: each would reset twisted.web's idle timeout.
    for byte in b"GET":
        channel.dataReceived(bytes([byte]))
        clock.advance(0.25)
    assert not transport.disconnecting
    clock.advance(0.25)
    assert transport.disconnecting
    assert status_line(transport) == b"HTTP/1.1 408 Request Timeout"


def test_trickled_body_gets_408_at_the_body_deadline():
    clock = Clock()
    channel, transport = connect(site(HTTPLimits(body_timeout=2.0), clock))
    channel.dataReceived(b"POST /ok HTTP/1.1\r\nContent-Length: 100\r\n\r\n")
    for _ in range(7):
        channel.dataReceived(b"x")
        clock.advance(0.25)
    assert not transport.disconnecting
    clock.advance(0.25)
    assert status_line(transport) == b"HTTP/1.1 408 Request Timeout"


def test_prompt_requests_on_a_kept_alive_connection_outlive_the_deadline():
    clock = Clock()
    channel, transport = connect(site(HTTPLimits(header_timeout=1.0), clock))
    channel.dataReceived(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_line(transport) == b"HTTP/1.1 200 OK"
    # Idle between requests: only the (60 s) idle timeout applies.
    clock.advance(5)
    assert not transport.disconnecting
    transport.clear()
    channel.dataReceived(b"GET /ok HTTP/1.1\r\n")
    clock.advance(0.5)
    channel.dataReceived(b"Host: x\r\n\r\n")
    assert status_line(transport) == b"HTTP/1.1 200 OK"
    # The next request's deadline starts with its first byte.
    channel.dataReceived(b"G")
    clock.advance(1.0)
    assert b"408" in transport.value()


# -- malformed framing: an immediate 400 ---------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /ok HTTP/1.1\nHost: x\n\n", id="lf-only-lines"),
        pytest.param(b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n", id="long-uri"),
        pytest.param(
            b"GET /ok HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n", id="long-header"
        ),
        pytest.param(
            b"POST /ok HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"%x\r\nabc" % (1 << 80),
            id="2**80-chunk",
        ),
        pytest.param(
            b"POST /ok HTTP/1.1\r\nContent-Length: " + b"9" * 30 + b"\r\n\r\nabc",
            id="huge-content-length",
        ),
        pytest.param(
            b"POST /ok HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
            id="5000-digit-content-length",
        ),
    ],
)
def test_malformed_framing_is_answered_400_at_once(request_bytes: bytes):
    clock = Clock()
    channel, transport = connect(site(HTTPLimits(), clock))
    channel.dataReceived(request_bytes)
    assert status_line(transport) == b"HTTP/1.1 400 Bad Request"
    assert transport.disconnecting


def test_after_a_400_nothing_more_is_parsed_and_the_connection_is_dropped():
    clock = Clock()
    channel, transport = connect(site(HTTPLimits(), clock))
    channel.dataReceived(b"GET /ok HTTP/1.1\nHost: x\n\nGET /ok HTTP/1.1\r\n\r\n")
    channel.dataReceived(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().count(b"HTTP/1.1") == 1


# -- the connection cap -----------------------------------------------------------


def test_at_the_cap_a_new_connection_evicts_the_oldest_without_a_request():
    clock = Clock()
    factory = _TrackingFactory(site(HTTPLimits(), clock), max_connections=3)
    busy, busy_transport = connect(factory)
    busy.dataReceived(b"GET /hold HTTP/1.1\r\n\r\n")  # in progress
    _, trickling = connect(factory)
    _, idle = connect(factory)
    _, newcomer = connect(factory)
    assert (busy_transport.disconnecting, trickling.disconnecting) == (False, True)
    assert not idle.disconnecting and not newcomer.disconnecting
    assert factory.evicted == 1


class _SocketTransport(StringTransport):
    """A StringTransport holding a real socket, as Twisted's TCP one does."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(peerAddress=ADDRESS)
        self.socket = sock

    def abortConnection(self) -> None:
        # Twisted's closes the socket on a later reactor turn.
        self.disconnecting = True


def test_an_evicted_connection_gives_its_descriptor_back_at_once():
    # One reactor turn may accept a hundred connections, each evicting one;
    # descriptors still held until the next turn would run the process into
    # RLIMIT_NOFILE, where Twisted resets whatever waits to be accepted.
    factory = _TrackingFactory(site(HTTPLimits(), Clock()), max_connections=1)
    with socket.create_server(("127.0.0.1", 0)) as server:
        theirs = socket.create_connection(server.getsockname())
        ours, _ = server.accept()
    try:
        first = factory.buildProtocol(ADDRESS)
        assert first is not None
        first.makeConnection(_SocketTransport(ours))
        connect(factory)  # evicts the first
        assert ours.fileno() == -1
        theirs.settimeout(5)
        with pytest.raises(ConnectionResetError):
            theirs.recv(1)
    finally:
        ours.close()
        theirs.close()


def test_at_the_cap_with_every_connection_busy_a_new_one_is_refused():
    clock = Clock()
    factory = _TrackingFactory(site(HTTPLimits(), clock), max_connections=2)
    for _ in range(2):
        channel, _ = connect(factory)
        channel.dataReceived(b"GET /hold HTTP/1.1\r\n\r\n")
    assert factory.buildProtocol(ADDRESS) is None
    assert factory.refused == 1


def test_default_cap_keeps_descriptors_for_upstreams_and_a_margin():
    assert default_max_connections(4, soft_limit=1024) == 1024 - 8 - 64
    assert default_max_connections(4, soft_limit=256) < 256
    assert default_max_connections(1000, soft_limit=256) == 16


def test_limit_options_are_parsed_and_checked(capsys: pytest.CaptureFixture[str]):
    options = Options()
    options.parseOptions(
        ["--http-max-connections", "500", "--http-header-timeout", "off"]
    )
    assert options["http-max-connections"] == 500
    assert options["http-header-timeout"] is None
    assert options["http-body-timeout"] == 60.0
    with pytest.raises(SystemExit) as exit:
        Options().parseOptions(["--http-max-connections", "0"])
    assert exit.value.code == 2
    assert "--http-max-connections '0': must be a positive" in capsys.readouterr().err


# -- real sockets on loopback -----------------------------------------------------


def _gateway_service(limits: HTTPLimits) -> GatewayService:
    codec: Codec = parse_codec("fc1")
    gateway = Gateway(lambda: None, reactor, codec)
    return GatewayService(reactor, "tcp:0:interface=127.0.0.1", gateway, limits)


@pytest_twisted.ensureDeferred
async def test_http_listens_with_a_backlog_well_above_50():
    service = _gateway_service(HTTPLimits())
    service.startService()
    try:
        port = await service.listening
        assert getattr(port, "backlog", None) == DEFAULT_BACKLOG >= 1024
    finally:
        await service.stopService()


def _send_and_read(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


@pytest_twisted.ensureDeferred
async def test_a_1mb_uri_over_a_real_socket_gets_its_400_before_the_close():
    service = _gateway_service(HTTPLimits())
    service.startService()
    try:
        port = (await service.listening).getHost().port
        start = time.monotonic()
        answer = await deferToThread(
            _send_and_read, port, b"GET /" + b"a" * (1 << 20) + b" HTTP/1.1\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert time.monotonic() - start < 3
    finally:
        await service.stopService()


# -- slowloris against a low RLIMIT_NOFILE, in a child process -------------------


def _lower_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


@pytest.fixture
def low_limit_gateway() -> Iterator[int]:
    """
    ``twist framedclient`` with ``RLIMIT_NOFILE`` 256; yields its HTTP port.
    The header deadline is long, so only the connection cap can save the
    probes.
    """
    proc = subprocess.Popen(
        [
            *(TWIST, "--log-format", "json", "framedclient"),
            *("--http", "tcp:0:interface=127.0.0.1", "--pool-size", "1"),
            *("--http-header-timeout", "60"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # This checkout's framedclient, wherever the test runs from.
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        preexec_fn=_lower_nofile,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 15
        url = None
        buffer = b""
        while url is None and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1)
            if ready:
                data = os.read(proc.stdout.fileno(), 65536)
                assert data, "twist framedclient exited: " + buffer.decode()
                buffer += data
            for line in buffer.split(b"\n"):
                line = line.strip(b"\x1e \r")
                if line.startswith(b"{") and b"http_url" in line:
                    url = json.loads(line)["http_url"]
        assert url is not None, buffer.decode()
        yield int(url.rstrip("/").rsplit(":", 1)[1])
    finally:
        proc.kill()
        proc.wait(10)


def _get(port: int, path: str) -> tuple[int, float]:
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = sock.recv(65536)
    return int(head.split(b" ", 2)[1]), time.monotonic() - start


@pytest.mark.slow
def test_livez_and_readyz_answer_while_more_slowloris_connections_than_fds_are_open(
    low_limit_gateway: int,
):
    port = low_limit_gateway
    deadline = time.monotonic() + 10
    while _get(port, "/readyz")[0] != 200:
        assert time.monotonic() < deadline, "the embedded upstream never got ready"
    attack: list[socket.socket] = []
    try:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            attack.append(sock)
            sock.sendall(b"GET / HTTP/1.1\r\nX-")
        # A trickle round: the connections still open send one more byte.
        for sock in attack:
            try:
                sock.sendall(b"a")
            except OSError:
                pass  # evicted to make room
        for path in ("/livez", "/readyz", "/livez", "/readyz"):
            status, took = _get(port, path)
            assert (status, took < 2) == (200, True), (path, status, took)
    finally:
        for sock in attack:
            sock.close()


def test_evicted_and_refused_connections_are_reported_in_metrics():
    from framedclient.metrics import Metrics, prometheus_text

    gateway = Gateway(lambda: None, Clock(), parse_codec("fc1"))
    service = GatewayService(Clock(), "tcp:0", gateway, HTTPLimits(max_connections=2))
    factory = service.factory
    busy, _ = connect(factory)
    busy.dataReceived(b"GET /hold HTTP/1.1\r\n\r\n")
    connect(factory)  # no request yet: evicted by the next one
    connect(factory)
    assert factory.evicted == 1
    lines = prometheus_text(Metrics(), gauges=gateway.gauges()).decode().splitlines()
    values = {
        line.split()[0]: float(line.split()[1])
        for line in lines
        if line.startswith("framedclient_gateway_http_connections")
    }
    assert values == {
        "framedclient_gateway_http_connections": 2,
        "framedclient_gateway_http_connections_evicted_total": 1,
        "framedclient_gateway_http_connections_refused_total": 0,
    }
