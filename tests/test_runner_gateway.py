"""
``twist framedclient`` in-process: makeService on ephemeral loopback ports,
driven over real HTTP with treq.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.protocols.basic import LineReceiver
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.test.requesthelper import DummyRequest

from framedclient import __version__
from framedclient.client import FramedClient
from framedclient.codecs import REPLY, Codec
from framedclient.runner.app import RunnerService, makeService
from framedclient.runner.codecspec import parse_codec
from framedclient.runner.gateway import RETRY_AFTER, Gateway
from framedclient.runner.options import Options
from framedclient.server import ReferenceServerFactory, listen

LOOPBACK = "tcp:0:interface=127.0.0.1"


# -- helpers (also used by the browser test) ----------------------------------


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(["--http", LOOPBACK, *argv])
    return options


class Runner:
    """
    A started :class:`RunnerService` and an HTTP client for it.
    """

    def __init__(self, service: RunnerService, url: str) -> None:
        self.service = service
        self.url = url.rstrip("/")
        # Not persistent: every test ends with no HTTP connection cached.
        self.http = HTTPClient(
            Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        )

    @property
    def client(self) -> FramedClient:
        client = self.service.client
        assert client is not None
        return client

    def post(
        self, body: bytes, query: str = "", headers: dict[str, str] | None = None
    ) -> Deferred[tuple[int, Any, bytes]]:
        """
        POST /v1/request; a Deferred so that many can be gathered.
        """
        return Deferred.fromCoroutine(self._post(body, query, headers))

    async def _post(
        self, body: bytes, query: str, headers: dict[str, str] | None
    ) -> tuple[int, Any, bytes]:
        response = await self.http.post(
            f"{self.url}/v1/request{query}", data=body, headers=headers
        )
        return response.code, response.headers, await response.content()

    async def get(self, path: str) -> tuple[int, Any, bytes]:
        response = await self.http.get(self.url + path)
        return response.code, response.headers, await response.content()

    async def get_json(self, path: str) -> tuple[int, Any]:
        code, headers, body = await self.get(path)
        assert headers.getRawHeaders("content-type") == ["application/json"]
        return code, json.loads(body)


@asynccontextmanager
async def running(*argv: str, wait_ready: bool = True) -> AsyncIterator[Runner]:
    """
    makeService with ``argv`` (HTTP on an ephemeral loopback port), started;
    stopped on exit.
    """
    service = makeService(parse(*argv))
    service.startService()
    try:
        # Bounded waits: a broken build fails the test, not the whole run.
        url = await service.ready.addTimeout(10, reactor)
        runner = Runner(service, url)
        if wait_ready:
            await runner.client.when_ready().addTimeout(10, reactor)
        yield runner
    finally:
        await service.stopService()


async def wait_until(
    predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.01
) -> None:
    for _ in range(int(timeout / step)):
        if predicate():
            return
        await deferLater(reactor, step, lambda: None)
    raise AssertionError(f"condition not met within {timeout} s")


def error_of(body: bytes) -> tuple[str, str]:
    payload = json.loads(body)
    assert set(payload) in ({"error", "message"}, {"error", "message", "detail"})
    return payload["error"], payload["message"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- POST /v1/request -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_request_returns_the_reply_body_as_octet_stream():
    async with running() as runner:
        body = bytes(range(256)) * 4
        code, headers, reply = await runner.post(body)
        assert code == 200
        assert reply == body
        assert headers.getRawHeaders("content-type") == ["application/octet-stream"]
        code, _, reply = await runner.post(b"")
        assert (code, reply) == (200, b"")


@pytest_twisted.ensureDeferred
async def test_remote_error_is_500_with_the_servers_message():
    async with running() as runner:
        code, headers, body = await runner.post(b"!error:no such key")
        assert code == 500
        assert headers.getRawHeaders("content-type") == ["application/json"]
        assert error_of(body) == ("remote_error", "no such key")


@pytest_twisted.ensureDeferred
async def test_timeout_from_query_or_header_is_504():
    async with running() as runner:
        code, _, body = await runner.post(b"!hold", "?timeout=0.05")
        assert code == 504
        assert error_of(body)[0] == "timeout"
        code, _, body = await runner.post(b"!hold", headers={"X-Timeout": "0.05"})
        assert code == 504
        # The query parameter wins over the header.
        code, _, _ = await runner.post(
            b"!delay:0.05", "?timeout=2", headers={"X-Timeout": "0.01"}
        )
        assert code == 200


@pytest_twisted.ensureDeferred
async def test_slow_reply_within_its_timeout_is_answered():
    async with running("--request-timeout", "0.02") as runner:
        code, _, body = await runner.post(b"!delay:0.1 slow", "?timeout=2")
        assert (code, body) == (200, b"!delay:0.1 slow")
        code, _, _ = await runner.post(b"!delay:0.1 slow")
        assert code == 504


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf", "3601", ""])
@pytest_twisted.ensureDeferred
async def test_bad_timeout_is_400(value):
    async with running() as runner:
        code, _, body = await runner.post(b"x", f"?timeout={value}")
        assert code == 400
        kind, message = error_of(body)
        assert kind == "bad_timeout"
        assert "seconds" in message
        assert runner.client.stats()["metrics"]["requests"]["ok"] == 0


@pytest_twisted.ensureDeferred
async def test_overloaded_is_503_with_retry_after():
    async with running("--max-in-flight", "1", "--max-pending", "0") as runner:
        held = runner.post(b"!hold", "?timeout=1")
        await wait_until(lambda: runner.client.in_flight == 1)
        code, headers, body = await runner.post(b"one too many")
        assert code == 503
        assert headers.getRawHeaders("retry-after") == ["1"]
        assert error_of(body)[0] == "overloaded"
        assert (await held)[0] == 504


@pytest_twisted.ensureDeferred
async def test_unavailable_is_503_and_healthz_says_why():
    port = free_port()  # nothing listens there
    async with running(
        "--upstream",
        f"tcp:127.0.0.1:{port}",
        "--fail-fast",
        "--backoff",
        "constant:0.05",
        wait_ready=False,
    ) as runner:
        code, headers, body = await runner.post(b"hello")
        assert code == 503
        assert headers.getRawHeaders("retry-after") == ["1"]
        kind, message = error_of(body)
        assert kind == "unavailable"
        assert "not sent" in message
        code, health = await runner.get_json("/healthz")
        assert code == 503
        assert health["status"] == "unavailable"
        assert health["ready"] == 0
        assert len(health["upstreams"]) == 4


@pytest_twisted.ensureDeferred
async def test_dead_upstream_error_is_worded_for_http_callers():
    port = free_port()
    async with running(
        "--upstream", f"tcp:127.0.0.1:{port}", "--fail-fast", wait_ready=False
    ) as runner:
        _, _, body = await runner.post(b"hello")
        payload = json.loads(body)
        assert payload["error"] == "unavailable"
        assert "retry" in payload["message"]
        # The gateway's own option, not the library's keyword (issue 21):
        # neither in the message nor in the detail, which keeps the
        # library's diagnosis (the connect error).
        assert "--fail-fast" in payload["message"]
        assert "wait_for_ready" not in payload["message"]
        assert "wait_for_ready" not in payload["detail"]
        assert "refused" in payload["detail"].lower()


@pytest_twisted.ensureDeferred
async def test_livez_is_200_while_readyz_and_healthz_are_503_without_upstream():
    port = free_port()
    async with running(
        "--upstream", f"tcp:127.0.0.1:{port}", "--fail-fast", wait_ready=False
    ) as runner:
        code, live = await runner.get_json("/livez")
        assert (code, live["status"]) == (200, "ok")
        for path in ("/readyz", "/healthz"):
            code, headers, body = await runner.get(path)
            assert code == 503, path
            assert headers.getRawHeaders("retry-after") == [str(RETRY_AFTER)]
            assert json.loads(body)["status"] == "unavailable"


@pytest_twisted.ensureDeferred
async def test_waiting_for_a_connection_past_the_timeout_is_503_unavailable():
    port = free_port()
    async with running(
        "--upstream", f"tcp:127.0.0.1:{port}", "--pool-size", "1", wait_ready=False
    ) as runner:
        code, _, body = await runner.post(b"hello", "?timeout=0.1")
        assert code == 503
        assert error_of(body)[0] == "unavailable"
        assert "within the request's timeout" in error_of(body)[1]
        assert b"wait_for_ready" not in body


@pytest_twisted.ensureDeferred
async def test_dropped_connection_is_502_connection_lost():
    async with running() as runner:
        code, _, body = await runner.post(b"!drop")
        assert code == 502
        kind, message = error_of(body)
        assert kind == "connection_lost"
        assert "may have been processed" in message
        assert runner.client.metrics.connection_events["lost"] == 1


@pytest_twisted.ensureDeferred
async def test_body_larger_than_the_codec_carries_is_413_and_the_limit_is_exact():
    async with running("--codec", "fc1:max-frame=1024") as runner:
        limit = 1024 - 13  # fc1 header: u32 length, u64 id, u8 kind
        code, _, body = await runner.post(b"x" * (limit + 1))
        assert code == 413
        kind, message = error_of(body)
        assert kind == "too_large"
        assert str(limit) in message
        code, _, reply = await runner.post(b"y" * limit)
        assert (code, reply) == (200, b"y" * limit)
        # Nothing oversized reached the upstream (it would have closed the
        # connection): no connection was lost.
        assert runner.client.metrics.connection_events["lost"] == 0


@pytest_twisted.ensureDeferred
async def test_chunked_body_over_the_limit_is_413():
    async with running("--codec", "fc1:max-frame=1024") as runner:
        producer = FileBodyProducer(io.BytesIO(b"z" * 1200))
        # An unknown length makes the agent send the body chunked.
        producer.length = UNKNOWN_LENGTH
        response = await runner.http.post(runner.url + "/v1/request", data=producer)
        assert response.code == 413
        assert error_of(await response.content())[0] == "too_large"


@pytest_twisted.ensureDeferred
async def test_wrong_method_is_405_and_unknown_path_404():
    async with running() as runner:
        code, headers, body = await runner.get("/v1/request")
        assert code == 405
        assert headers.getRawHeaders("allow") == ["POST"]
        assert error_of(body)[0] == "method_not_allowed"
        response = await runner.http.post(runner.url + "/healthz", data=b"")
        assert response.code == 405
        code, _, body = await runner.get("/v2/nothing")
        assert code == 404
        assert error_of(body)[0] == "not_found"


def test_stopped_gateway_answers_503_closed():
    gateway = Gateway(lambda: None, reactor, parse_codec("fc1"))
    resource = gateway.resource()
    request = DummyRequest([b"v1", b"request"])
    request.method = b"POST"
    child = resource.getChildWithDefault(b"v1", request).getChildWithDefault(
        b"request", request
    )
    request.content = io.BytesIO(b"x")
    request.uri = b"/v1/request"
    body = child.render(request)
    assert request.responseCode == 503
    assert request.responseHeaders.getRawHeaders(b"retry-after") == [b"1"]
    assert error_of(body)[0] == "closed"


def test_stopped_gateway_is_still_live_but_not_ready():
    gateway = Gateway(lambda: None, reactor, parse_codec("fc1"))
    resource = gateway.resource()
    codes = {}
    for path in (b"livez", b"readyz"):
        request = DummyRequest([path])
        request.method = b"GET"
        resource.getChildWithDefault(path, request).render(request)
        codes[path] = request.responseCode
    # A draining gateway must not be restarted by its liveness probe.
    assert codes == {b"livez": 200, b"readyz": 503}


@pytest_twisted.ensureDeferred
async def test_http_client_that_disconnects_cancels_its_upstream_request():
    async with running() as runner:
        backend = runner.service.backend
        assert backend is not None
        port = int(runner.url.rsplit(":", 1)[1])

        class Raw(Protocol):
            def connectionMade(self) -> None:
                body = b"!hold"
                self.transport.write(
                    b"POST /v1/request?timeout=30 HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )

        raw = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port), Raw()
        )
        await wait_until(lambda: backend.factory.requests == 1)
        assert runner.client.in_flight == 1
        assert runner.service.gateway.in_flight == 1
        raw.transport.loseConnection()
        await wait_until(lambda: runner.client.in_flight == 0)
        await wait_until(lambda: backend.factory.cancels == 1)
        assert runner.service.gateway.in_flight == 0
        assert runner.client.stats()["metrics"]["requests"]["cancelled"] == 1


# -- the other endpoints ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_healthz_is_200_with_a_ready_connection():
    async with running("--pool-size", "2") as runner:
        await wait_until(lambda: runner.client.pool.ready_count == 2)
        code, health = await runner.get_json("/healthz")
        assert code == 200
        assert health["status"] == "ok"
        assert health["ready"] == 2
        assert health["states"] == {"ready": 2}


@pytest_twisted.ensureDeferred
async def test_debug_state_is_the_clients_debug_state():
    async with running("--pool-size", "2") as runner:
        await runner.post(b"one")
        code, state = await runner.get_json("/debug/state")
        assert code == 200
        expected = runner.client.debug_state()
        assert [u["name"] for u in state["upstreams"]] == [
            u["name"] for u in expected["upstreams"]
        ]
        assert sum(u["protocol"]["ok"] for u in state["upstreams"]) == 1
        assert state["metrics"]["requests"]["ok"] == 1
        assert set(state) == set(expected)


@pytest_twisted.ensureDeferred
async def test_stats_summarise_requests_and_gateway_responses():
    async with running() as runner:
        await runner.post(b"one")
        await runner.post(b"!error:x")
        code, stats = await runner.get_json("/v1/stats")
        assert code == 200
        assert stats["requests"]["ok"] == 1
        assert stats["requests"]["remote_error"] == 1
        assert stats["latency"]["count"] == 1
        assert stats["gateway"]["responses"] == {"200": 1, "500": 1}
        backend = runner.service.backend
        assert backend is not None
        assert stats["upstreams"] == [f"{backend.endpoint} (embedded reference server)"]
        assert stats["codec"] == "fc1"
        assert stats["uptime"] >= 0
        # compiled or pure (docs/design.md, "Compiled mode")
        import framedclient

        assert stats["mode"] == str(framedclient.compiled)


@pytest_twisted.ensureDeferred
async def test_metrics_are_valid_prometheus_text():
    from prometheus_client.parser import text_string_to_metric_families

    async with running() as runner:
        await runner.post(b"one")
        code, headers, body = await runner.get("/metrics")
        assert code == 200
        assert headers.getRawHeaders("content-type")[0].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        ok = [
            s.value
            for s in families["framedclient_requests"].samples
            if s.labels.get("outcome") == "ok"
        ]
        assert ok == [1.0]
        assert "framedclient_gateway_http_in_flight" in families
        assert "framedclient_request_latency_seconds" in families


@pytest_twisted.ensureDeferred
async def test_metrics_export_http_responses_by_code_and_build_info():
    from prometheus_client.parser import text_string_to_metric_families

    async with running() as runner:
        await runner.post(b"one")
        await runner.post(b"two")
        await runner.post(b"!error:x")
        _, _, body = await runner.get("/metrics")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body.decode())
            for s in f.samples
        }
        responses = "framedclient_http_responses_total"
        assert samples[(responses, (("code", "200"),))] == 2
        assert samples[(responses, (("code", "500"),))] == 1
        assert samples[("framedclient_build_info", (("version", __version__),))] == 1


@pytest_twisted.ensureDeferred
async def test_metrics_pass_promtool_check_metrics():
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing under CI (Debian package prometheus)")
        pytest.skip("promtool not installed (Debian package prometheus)")
    async with running() as runner:
        await runner.post(b"one")
        await runner.post(b"!error:x")
        await runner.post(b"!drop")
        _, _, body = await runner.get("/metrics")
    # The host-health families are in what promtool checks.
    for family in (
        b"upstream_health",
        b"upstream_ejections_total",
        b"upstream_probes_total",
    ):
        assert b"# TYPE framedclient_" + family in body
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


@pytest_twisted.ensureDeferred
async def test_status_page_is_self_contained_html():
    async with running() as runner:
        code, headers, body = await runner.get("/")
        assert code == 200
        assert headers.getRawHeaders("content-type") == ["text/html; charset=utf-8"]
        csp = headers.getRawHeaders("content-security-policy")[0]
        assert "default-src 'none'" in csp
        html = body.decode()
        assert "<script src" not in html and "<link" not in html
        assert 'id="connections"' in html and 'id="latency-chart"' in html
        for path in ("/v1/stats", "/debug/state"):
            assert f'"{path}"' in html


# -- load and failures ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_500_concurrent_requests_are_all_answered_correctly():
    async with running("--pool-size", "2") as runner:
        bodies = [
            (b"!delay:0.0%d req-%d" % (i % 3, i) if i % 5 == 0 else b"req-%d" % i)
            for i in range(500)
        ]
        results = await gatherResults([runner.post(b) for b in bodies])
        assert [code for code, _, _ in results] == [200] * 500
        assert [reply for _, _, reply in results] == bodies
        assert runner.client.stats()["metrics"]["requests"]["ok"] == 500
        assert runner.service.gateway.in_flight == 0


@pytest_twisted.ensureDeferred
async def test_upstream_restart_while_serving():
    server = ReferenceServerFactory(clock=reactor)
    port: IListeningPort = await listen(reactor, LOOPBACK, server)
    number = port.getHost().port
    try:
        async with running(
            "--upstream",
            f"tcp:127.0.0.1:{number}",
            "--pool-size",
            "2",
            "--backoff",
            "constant:0.05",
        ) as runner:
            results = await gatherResults(
                [runner.post(b"before-%d" % i) for i in range(20)]
            )
            assert {code for code, _, _ in results} == {200}

            # The server goes away: port closed and connections dropped.
            await port.stopListening()
            server.drop_all()
            await wait_until(lambda: runner.client.pool.ready_count == 0)
            code, _ = await runner.get_json("/healthz")
            assert code == 503
            code, _, body = await runner.post(b"while-down", "?timeout=0.1")
            assert (code, error_of(body)[0]) == (503, "unavailable")
            # A request with time to spare waits for the server to return.
            waiting = runner.post(b"across-restart", "?timeout=5")
            await deferLater(reactor, 0.1, lambda: None)

            port = await listen(reactor, f"tcp:{number}:interface=127.0.0.1", server)
            code, _, reply = await waiting
            assert (code, reply) == (200, b"across-restart")
            await wait_until(lambda: runner.client.pool.ready_count == 2)
            results = await gatherResults(
                [runner.post(b"after-%d" % i) for i in range(20)]
            )
            assert [r for _, _, r in results] == [b"after-%d" % i for i in range(20)]
            code, _ = await runner.get_json("/healthz")
            assert code == 200
    finally:
        await port.stopListening()
        server.drop_all()


# -- other codecs end to end ------------------------------------------------------


class _CodecEcho(Protocol):
    """
    An echo server for any by-ID codec: replies to each request with its body.
    """

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.framer = codec.new_framer()

    def dataReceived(self, data: bytes) -> None:
        out = []
        for frame in self.framer.feed(data):
            _, request_id, body = self.codec.decode(frame)
            out.append(self.codec.encode(REPLY, request_id, body[::-1]))
        self.transport.write(b"".join(out))


class _LineEcho(LineReceiver):
    def lineReceived(self, line: bytes) -> None:
        self.sendLine(line.upper())


@pytest_twisted.ensureDeferred
async def test_length_codec_from_the_command_line_reaches_a_server_speaking_it():
    spec = "length:size=2,order=little,header=8,id-offset=0,id-size=4,kind-offset=4"
    server_codec = parse_codec(spec)
    port = await listen(
        reactor, LOOPBACK, Factory.forProtocol(lambda: _CodecEcho(server_codec))
    )
    try:
        async with running(
            "--upstream", f"tcp:127.0.0.1:{port.getHost().port}", "--codec", spec
        ) as runner:
            code, _, reply = await runner.post(b"hello")
            assert (code, reply) == (200, b"olleh")
            # size=2: at most 65535 - 8 header bytes of body.
            code, _, body = await runner.post(b"x" * 65535)
            assert (code, error_of(body)[0]) == (413, "too_large")
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_lines_codec_answers_in_order_and_refuses_a_body_with_a_newline():
    port = await listen(reactor, LOOPBACK, Factory.forProtocol(_LineEcho))
    try:
        async with running(
            "--upstream", f"tcp:127.0.0.1:{port.getHost().port}", "--codec", "lines"
        ) as runner:
            results = await gatherResults(
                [runner.post(b"line %d" % i) for i in range(50)]
            )
            assert [r for _, _, r in results] == [b"LINE %d" % i for i in range(50)]
            code, _, body = await runner.post(b"two\r\nlines")
            assert (code, error_of(body)[0]) == (400, "bad_body")
    finally:
        await port.stopListening()


# -- the proxy (--listen) -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_listen_starts_the_multiplexing_proxy_on_the_pool():
    async with running("--listen", LOOPBACK, "--pool-size", "2") as runner:
        proxy = runner.service.proxy
        assert proxy is not None and proxy.port is not None
        downstream = FramedClient.from_endpoint(
            reactor, f"tcp:127.0.0.1:{proxy.port.getHost().port}", pool_size=1
        )
        try:
            replies = await gatherResults(
                [downstream.request(b"via proxy %d" % i) for i in range(10)]
            )
            assert replies == [b"via proxy %d" % i for i in range(10)]
            _, stats = await runner.get_json("/v1/stats")
            assert stats["proxy"]["forwarded"] == 10
        finally:
            await downstream.close()


# -- lifecycle ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stop_drains_in_flight_http_requests():
    service = makeService(parse("--drain-timeout", "5"))
    service.startService()
    url = (await service.ready).rstrip("/")
    runner = Runner(service, url)
    await runner.client.when_ready()
    slow = runner.post(b"!delay:0.2 slow")
    await wait_until(lambda: service.gateway.in_flight == 1)
    stopped = service.stopService()
    code, _, reply = await slow
    assert (code, reply) == (200, b"!delay:0.2 slow")
    await stopped
    assert service.client is None
    assert not service.http.factory.protocols


@pytest_twisted.ensureDeferred
async def test_requests_outliving_the_drain_timeout_fail_with_502_and_stop_finishes():
    service = makeService(parse("--drain-timeout", "0.2"))
    service.startService()
    runner = Runner(service, await service.ready)
    await runner.client.when_ready()
    held = runner.post(b"!hold", "?timeout=30")
    await wait_until(lambda: service.gateway.in_flight == 1)
    started = reactor.seconds()
    await service.stopService()
    assert reactor.seconds() - started < 2
    code, _, body = await held
    assert (code, error_of(body)[0]) == (502, "connection_lost")


@pytest_twisted.ensureDeferred
async def test_listen_failure_fails_ready():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        number = taken.getsockname()[1]
        options = Options()
        options.parseOptions(["--http", f"tcp:{number}:interface=127.0.0.1"])
        service = makeService(options)
        service.startService()
        try:
            with pytest.raises(Exception, match="in use"):
                await service.ready
        finally:
            await service.stopService()


def test_state_changes_are_logged_rate_limited():
    from twisted.internet.task import Clock
    from twisted.logger import Logger

    from framedclient.runner.app import RateLimitedLog

    events: list[dict[str, Any]] = []
    clock = Clock()
    log = Logger(observer=events.append)
    limited = RateLimitedLog(clock, log, burst=3, period=10.0)
    for i in range(10):
        limited.emit("info", "change {i}", i=i)
    assert [e["i"] for e in events] == [0, 1, 2]
    clock.advance(10)
    assert events[-1]["suppressed"] == 7
    limited.emit("info", "change {i}", i=99)
    assert events[-1]["i"] == 99
    assert not clock.getDelayedCalls()


@pytest_twisted.ensureDeferred
async def test_requests_are_routed_by_key_and_hedged_when_idempotent():
    from framedclient.balance import ring_node_name
    from framedclient.ketama import KetamaRing
    from framedclient.server import ReferenceServerFactory, listen

    slow = ReferenceServerFactory(clock=reactor, delay=3.0)
    fast = ReferenceServerFactory(clock=reactor)
    slow_port = await listen(reactor, "tcp:0:interface=127.0.0.1", slow)
    fast_port = await listen(reactor, "tcp:0:interface=127.0.0.1", fast)
    upstreams = [
        f"tcp:127.0.0.1:{slow_port.getHost().port}",
        f"tcp:127.0.0.1:{fast_port.getHost().port}",
    ]
    ring = KetamaRing([ring_node_name(u) for u in upstreams])
    fast_key = next(
        k
        for k in (f"k{i}" for i in range(100))
        if ring.node_for(k) == ring_node_name(upstreams[1])
    )
    slow_key = next(
        k
        for k in (f"k{i}" for i in range(100))
        if ring.node_for(k) == ring_node_name(upstreams[0])
    )
    try:
        async with running(
            "--upstream",
            upstreams[0],
            "--upstream",
            upstreams[1],
            "--pool-size",
            "1",
            "--balancer",
            "ketama",
            "--hedge-after",
            "0.05",
        ) as runner:
            await wait_until(lambda: runner.client.pool.ready_count == 2)
            # The key's host, by query parameter or header.
            code, _, body = await runner.post(b"a", f"?key={fast_key}")
            assert (code, body, fast.requests, slow.requests) == (200, b"a", 1, 0)
            code, _, body = await runner.post(b"b", headers={"X-Key": fast_key})
            assert (code, fast.requests, slow.requests) == (200, 2, 0)
            # Idempotent, on the slow host: hedged to the fast one.
            code, _, body = await runner.post(
                b"c", f"?key={slow_key}", headers={"X-Idempotent": "1"}
            )
            assert (code, body) == (200, b"c")
            assert slow.requests == 1 and fast.requests == 3
            assert runner.client.stats()["hedges"]["won"] == 1
            code, _, body = await runner.post(b"d", "?idempotent=maybe")
            assert code == 400
            assert error_of(body)[0] == "bad_idempotent"
    finally:
        await slow_port.stopListening()
        await fast_port.stopListening()


# -- /v1/config and the status page's first snapshot ----------------------------------


@pytest_twisted.ensureDeferred
async def test_config_says_each_setting_with_its_unit_and_the_tracing_done():
    async with running(
        "--max-write-buffer",
        "1048576",
        "--backoff",
        "constant:0.5",
        "--hedge-after",
        "p95",
    ) as runner:
        code, body = await runner.get_json("/v1/config")
        _, stats = await runner.get_json("/v1/stats")
    assert code == 200
    shown = body["shown"]
    assert set(shown) == set(body["config"])  # one text per setting
    assert shown["max_write_buffer"] == "1 MiB"
    assert shown["max_pending_per_connection"] == "100000"
    assert shown["request_timeout"] == "5 s"
    assert shown["read_timeout"] == "off"
    assert shown["max_in_flight_per_connection"] == "auto"
    assert shown["backoff"] == "constant:0.5"
    assert shown["codec"] == "fc1"
    assert shown["hedge_after"] == "p95"
    assert shown["tracing"].startswith("on" if stats["tracing"] else "off")
    # The raw values stay as they were.
    assert body["config"]["max_write_buffer"] == 1048576


@pytest_twisted.ensureDeferred
async def test_the_status_page_carries_a_first_snapshot_safe_inside_its_script():
    async with running() as runner:
        code, _, html = await runner.get("/")
    assert code == 200
    start = html.index(b'<script type="application/json" id="initial">')
    end = html.index(b"</script>", start)
    data = html[start:end].split(b">", 1)[1]
    snapshot = json.loads(data)
    assert snapshot["config"]["version"] == __version__
    assert snapshot["stats"]["ready"] == 4
    assert len(snapshot["state"]["upstreams"]) == 4
    assert b"<!--initial-->" not in html
