"""
Streams and subscriptions over HTTP (issue 18, item 8): ``POST /v1/stream``
relays a streamed reply as records of a chunked response, ``GET
/v1/subscribe`` a subscription as Server-Sent Events, both bounded for HTTP
clients that read slowly or not at all.

Real sockets on 127.0.0.1 against ``makeService`` with its embedded
reference server (or a small fc1 server of the test's own); treq for the
reading clients, raw sockets for the ones that never read.  The relays'
own rules are unit-tested with a fake request and a Clock.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.web.iweb import UNKNOWN_LENGTH

from framedclient.client import FramedClient
from framedclient.codecs import ERROR, PART, FC1Codec
from framedclient.runner.app import makeService
from framedclient.runner.options import Options, UsageExit
from framedclient.runner.streaming import (
    END_RECORD,
    PART_RECORD,
    StreamCounters,
    StreamLimits,
    StreamRelay,
    SubscriptionRelay,
    read_records,
)
from framedclient.streams import PushMessage, Stream
from framedclient.validation import InvalidSetting
from tests.test_runner_gateway import Runner, error_of, parse, running, wait_until

# -- helpers ------------------------------------------------------------------------


@asynccontextmanager
async def stoppable(*argv: str) -> AsyncIterator[Runner]:
    """
    Like ``running``, for a test that stops the service itself.
    """
    service = makeService(parse(*argv))
    service.startService()
    try:
        url = await service.ready.addTimeout(10, reactor)
        runner = Runner(service, url)
        await runner.client.when_ready().addTimeout(10, reactor)
        yield runner
    finally:
        if service.running:
            await service.stopService()


def stream_client(runner: Runner) -> FramedClient:
    """
    The client of ``/v1/stream`` (its own pool, ``--http-stream-pool-size``).
    """
    service = runner.service.stream_client_service
    assert service is not None and service.client is not None
    return service.client


def port_of(runner: Runner) -> int:
    return int(runner.url.rsplit(":", 1)[1])


async def post_stream(
    runner: Runner, body: bytes, query: str = ""
) -> tuple[int, Any, bytes]:
    response = await runner.http.post(f"{runner.url}/v1/stream{query}", data=body)
    return response.code, response, await response.content()


def parse_events(text: bytes) -> list[tuple[str, Any]]:
    """
    The events of an SSE body (type, JSON data); comments as ``(":", text)``.
    """
    events: list[tuple[str, Any]] = []
    for block in text.split(b"\n\n"):
        if not block:
            continue
        if block.startswith(b":"):
            events.append((":", block[1:].strip().decode()))
            continue
        fields = dict(line.split(b": ", 1) for line in block.split(b"\n"))
        events.append((fields[b"event"].decode(), json.loads(fields[b"data"])))
    return events


class EventReader:
    """
    A reading SSE client (treq): collects the body as it arrives.
    """

    def __init__(self) -> None:
        self.body = bytearray()
        self.response: Any = None
        self.done: Deferred[None] | None = None

    async def open(self, runner: Runner, query: str) -> EventReader:
        return await self.open_at(runner.http, runner.url, query)

    async def open_at(self, http: Any, url: str, query: str) -> EventReader:
        self.response = await http.get(f"{url}/v1/subscribe{query}", unbuffered=True)
        self.done = treq.collect(self.response, self.body.extend)
        self.done.addErrback(lambda _: None)
        return self

    @property
    def events(self) -> list[tuple[str, Any]]:
        complete = bytes(self.body).rpartition(b"\n\n")[0]
        return parse_events(complete + b"\n\n") if complete else []

    def of(self, kind: str) -> list[Any]:
        return [data for event, data in self.events if event == kind]

    def close(self) -> None:
        # Drops the connection (the TCP transport's stopProducing).
        self.response.original._transport.stopProducing()


def raw_client(port: int, head: bytes, body: bytes = b"") -> socket.socket:
    """
    A raw HTTP client with a small receive buffer that sends one request and
    never reads.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.sendall(head + body)
    return sock


def post_head(path: str, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: gateway\r\nContent-Length: %d\r\n\r\n" % (
        path.encode(),
        len(body),
    )


def get_head(path: str) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: gateway\r\n\r\n" % path.encode()


async def watch(value: Callable[[], int], until: Callable[[], bool]) -> int:
    """
    The most ``value()`` was, sampled every 5 ms until ``until()``.
    """
    most = 0
    for _ in range(2000):
        most = max(most, value())
        if until():
            return most
        await deferLater(reactor, 0.005, lambda: None)
    raise AssertionError("condition not met within 10 s")


# -- POST /v1/stream ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stream_parts_arrive_in_order_as_records_then_an_ok_end_record():
    async with running() as runner:
        code, response, body = await post_stream(runner, b"!stream:500:100")
        assert code == 200
        assert response.headers.getRawHeaders("content-type") == [
            "application/x-framedclient-stream"
        ]
        # No length: the body went out chunked, part by part.
        assert response.length == UNKNOWN_LENGTH
        records = read_records(body)
        parts = [payload for flag, payload in records if flag == PART_RECORD]
        assert [p.split(b":")[0] for p in parts] == [b"%d" % i for i in range(500)]
        assert all(len(p) == 100 for p in parts)
        assert records[-1][0] == END_RECORD
        assert [flag for flag, _ in records].count(END_RECORD) == 1
        assert json.loads(records[-1][1]) == {
            "status": "ok",
            "parts": 500,
            "bytes": 50_000,
        }
        assert runner.service.gateway.stream_counters.streams == 0


@pytest_twisted.ensureDeferred
async def test_shared_stream_pool_streams_on_the_request_pool():
    async with running("--http-stream-pool-size", "shared") as runner:
        assert runner.service.stream_client_service is None
        code, _, body = await post_stream(runner, b"!stream:50:10")
        assert code == 200
        assert json.loads(read_records(body)[-1][1])["parts"] == 50
        assert runner.client.stats()["metrics"]["requests"]["ok"] == 1
        _, stats = await runner.get_json("/v1/stats")
        assert "stream_pool" not in stats
        _, _, text = await runner.get("/metrics")
        assert b"framedclient_gateway_stream_pool" not in text


@pytest_twisted.ensureDeferred
async def test_stream_of_no_parts_is_just_the_ok_end_record():
    async with running() as runner:
        code, _, body = await post_stream(runner, b"!stream:0:10")
        assert code == 200
        assert read_records(body) == [
            (END_RECORD, b'{"status":"ok","parts":0,"bytes":0}')
        ]


@pytest_twisted.ensureDeferred
async def test_stream_waiting_past_its_timeout_for_a_first_part_is_504():
    async with running() as runner:
        code, _, body = await post_stream(runner, b"!hold", "?timeout=0.1")
        assert code == 504
        assert error_of(body)[0] == "timeout"
        await wait_until(lambda: stream_client(runner).in_flight == 0)


@pytest_twisted.ensureDeferred
async def test_stream_failing_before_its_first_part_is_an_ordinary_json_error():
    async with running() as runner:
        code, response, body = await post_stream(runner, b"!error:no such cursor")
        assert code == 500
        assert response.headers.getRawHeaders("content-type") == ["application/json"]
        assert error_of(body) == ("remote_error", "no such cursor")


class PartsThenError(Protocol):
    """
    An fc1 server that answers every request with three parts, then an
    error reply.
    """

    def connectionMade(self) -> None:
        self.codec = FC1Codec()
        self.framer = self.codec.new_framer()

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        for frame in self.framer.feed(data):
            kind, request_id, _ = self.codec.decode(frame)
            if kind != 0:
                continue
            for i in range(3):
                self.transport.write(
                    self.codec.encode(PART, request_id, b"part %d" % i)
                )
            self.transport.write(self.codec.encode(ERROR, request_id, b"disk on fire"))


@pytest_twisted.ensureDeferred
async def test_upstream_error_after_parts_is_an_error_end_record_not_the_end():
    port = reactor.listenTCP(  # type: ignore[attr-defined]
        0, Factory.forProtocol(PartsThenError), interface="127.0.0.1"
    )
    try:
        upstream = f"tcp:127.0.0.1:{port.getHost().port}"
        async with running("--upstream", upstream, "--heartbeat", "off") as runner:
            code, _, body = await post_stream(runner, b"anything")
            assert code == 200
            records = read_records(body)
            assert records[:3] == [(PART_RECORD, b"part %d" % i) for i in range(3)]
            assert records[3][0] == END_RECORD
            assert json.loads(records[3][1]) == {
                "status": "error",
                "parts": 3,
                "error": "remote_error",
                "message": "disk on fire",
            }
            assert len(records) == 4
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_http_client_disconnecting_cancels_the_upstream_stream():
    async with running("--http-stream-pool-size", "1") as runner:
        gateway = runner.service.gateway
        backend = runner.service.backend
        assert backend is not None
        sock = raw_client(
            port_of(runner),
            post_head("/v1/stream", b"!stream:10000000:100"),
            b"!stream:10000000:100",
        )
        try:
            await wait_until(lambda: gateway.stream_counters.streams == 1)
            await wait_until(lambda: stream_client(runner).in_flight == 1)
        finally:
            sock.close()
        await wait_until(lambda: gateway.stream_counters.streams == 0)
        # The slot is free and the server stopped streaming (fc1's CANCEL).
        await wait_until(lambda: stream_client(runner).in_flight == 0)
        await wait_until(
            lambda: not any(p._streams for p in backend.factory.connections)
        )
        assert gateway.stream_counters.held_bytes == 0


@pytest_twisted.ensureDeferred
async def test_stream_still_running_at_shutdown_ends_with_an_error_record():
    async with stoppable("--drain-timeout", "0.5") as runner:
        response = await runner.http.post(
            f"{runner.url}/v1/stream", data=b"!stream:100000000:100", unbuffered=True
        )
        received = bytearray()
        done = treq.collect(response, received.extend)
        await wait_until(lambda: len(received) > 10_000)
        await runner.service.stopService()
        await done
        records = read_records(bytes(received))
        assert records[-1][0] == END_RECORD
        end = json.loads(records[-1][1])
        assert (end["status"], end["error"]) == ("error", "connection_lost")
        assert end["parts"] == len(records) - 1


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/stream", 405), ("POST", "/v1/subscribe?topic=t", 405)],
)
@pytest_twisted.ensureDeferred
async def test_wrong_method_is_405(method, path, status):
    async with running() as runner:
        response = await runner.http.request(method, runner.url + path)
        body = await response.content()
        assert response.code == status
        assert error_of(body)[0] == "method_not_allowed"


@pytest_twisted.ensureDeferred
async def test_stream_with_a_codec_that_has_no_ids_is_501():
    async with running("--codec", "lines", wait_ready=False) as runner:
        code, _, body = await post_stream(runner, b"x")
        assert code == 501
        kind, message = error_of(body)
        assert kind == "not_supported"
        assert "/v1/request" in message


# -- GET /v1/subscribe ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_subscriber_gets_subscribed_then_one_message_event_per_publish():
    async with running() as runner:
        reader = await EventReader().open(runner, "?topic=news")
        assert reader.response.code == 200
        assert reader.response.headers.getRawHeaders("content-type") == [
            "text/event-stream; charset=utf-8"
        ]
        await wait_until(lambda: reader.of("subscribed"))
        assert reader.of("subscribed") == [{"topics": ["news"]}]
        for i in range(20):
            await runner.post(b"!publish:news hello %d" % i)
        await runner.post(b"!publish:other not for us")
        await runner.post(b"!publish:news \xff\xfe")
        await wait_until(lambda: len(reader.of("message")) == 21)
        messages = reader.of("message")
        assert messages[:20] == [
            {"channel": "news", "data": f"hello {i}"} for i in range(20)
        ]
        # Bytes that are not UTF-8 come whole, as base64.
        assert messages[20] == {"channel": "news", "data_base64": "//4="}
        assert runner.service.gateway.stream_counters.subscribers == 1
        reader.close()
        await wait_until(
            lambda: runner.service.gateway.stream_counters.subscribers == 0
        )


@pytest_twisted.ensureDeferred
async def test_several_topics_in_one_subscription():
    async with running() as runner:
        reader = await EventReader().open(runner, "?topic=a&topic=b")
        await wait_until(lambda: reader.of("subscribed"))
        await runner.post(b"!publish:a 1")
        await runner.post(b"!publish:b 2")
        await wait_until(lambda: len(reader.of("message")) == 2)
        assert reader.of("message") == [
            {"channel": "a", "data": "1"},
            {"channel": "b", "data": "2"},
        ]
        reader.close()


@pytest_twisted.ensureDeferred
async def test_subscriber_going_away_unsubscribes_upstream():
    async with running() as runner:
        backend = runner.service.backend
        assert backend is not None
        reader = await EventReader().open(runner, "?topic=gone")
        await wait_until(lambda: reader.of("subscribed"))
        assert backend.factory.subscribers.get(b"gone")
        reader.close()
        await wait_until(lambda: not backend.factory.subscribers.get(b"gone"))
        code, _, reply = await runner.post(b"!publish:gone x")
        assert (code, reply) == (200, b"0")


@pytest_twisted.ensureDeferred
async def test_subscribers_coming_and_going_leave_nothing_behind():
    async with running() as runner:
        backend = runner.service.backend
        assert backend is not None
        counters = runner.service.gateway.stream_counters
        readers = [
            await EventReader().open(runner, f"?topic=t{i % 3}") for i in range(30)
        ]
        for reader in readers:
            await wait_until(lambda r=reader: bool(r.of("subscribed")))
        assert counters.subscribers == 30
        for reader in readers:
            reader.close()
        await wait_until(lambda: counters.subscribers == 0)
        await wait_until(lambda: not runner.client.subscriptions._by_topic)
        await wait_until(lambda: not any(backend.factory.subscribers.values()))
        # No keep-alive or stall timer of a gone subscriber is left.
        relay_timers = [
            call
            for call in reactor.getDelayedCalls()  # type: ignore[attr-defined]
            if getattr(call.func, "__self__", None).__class__.__name__
            == "SubscriptionRelay"
        ]
        assert relay_timers == []
        assert counters.subscribers_total == 30


@pytest_twisted.ensureDeferred
async def test_gap_event_after_the_upstream_connection_is_replaced():
    async with running("--pool-size", "2") as runner:
        reader = await EventReader().open(runner, "?topic=t")
        await wait_until(lambda: reader.of("subscribed"))
        await runner.post(b"!publish:t before")
        await wait_until(lambda: reader.of("message"))
        proto = runner.client.subscriptions.proto
        assert proto is not None and proto.transport is not None
        proto.transport.abortConnection()
        await wait_until(lambda: reader.of("gap"))
        assert reader.of("gap") == [{"channel": "t"}]
        await runner.post(b"!publish:t after")
        await wait_until(lambda: len(reader.of("message")) == 2)
        kinds = [e for e, _ in reader.events if e in ("message", "gap")]
        assert kinds == ["message", "gap", "message"]
        reader.close()


@pytest_twisted.ensureDeferred
async def test_keepalive_comments_while_nothing_is_published():
    async with running("--http-sse-keepalive", "0.05") as runner:
        reader = await EventReader().open(runner, "?topic=quiet")
        await wait_until(
            lambda: [d for e, d in reader.events if e == ":"].count("keep-alive") >= 3
        )
        reader.close()


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("", "at least one topic"),
        ("?topic=a%20b", "without spaces"),
        ("?topic=", "1 to"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_or_missing_topic_is_400(query, words):
    async with running() as runner:
        code, _, body = await runner.get("/v1/subscribe" + query)
        assert code == 400
        kind, message = error_of(body)
        assert kind == "bad_topic"
        assert words in message
        assert runner.service.gateway.stream_counters.subscribers == 0


@pytest_twisted.ensureDeferred
async def test_stopping_the_gateway_ends_subscribers_with_an_end_event():
    async with stoppable() as runner:
        reader = await EventReader().open(runner, "?topic=t")
        await wait_until(lambda: reader.of("subscribed"))
        await runner.service.stopService()
        await reader.done
        assert reader.events[-1][0] == "end"
        assert reader.events[-1][1]["reason"] == "closed"


# -- slow and non-reading clients -----------------------------------------------------

BUFFER = 64 * 1024
STALL = 1.0
#: one socket read of the upstream connection
READ = 64 * 1024


@pytest_twisted.ensureDeferred
async def test_non_reading_stream_client_stays_under_the_bound_then_is_dropped():
    async with running(
        "--pool-size",
        "1",
        "--http-stream-pool-size",
        "2",
        "--http-stream-buffer",
        str(BUFFER),
        "--http-stream-stall-timeout",
        str(STALL),
    ) as runner:
        counters = runner.service.gateway.stream_counters
        await wait_until(lambda: stream_client(runner).pool.ready_count == 2)
        body = b"!stream:1000000:1000"
        sock = raw_client(port_of(runner), post_head("/v1/stream", body), body)
        try:
            await wait_until(lambda: counters.held_bytes >= BUFFER)
            # While it is paused, the others carry on: a stream and requests.
            code, _, other = await post_stream(runner, b"!stream:200:1000")
            assert code == 200
            assert json.loads(read_records(other)[-1][1])["parts"] == 200
            assert (await runner.post(b"ping"))[2] == b"ping"
            most = await watch(lambda: counters.held_bytes, lambda: counters.dropped)
            # The stream's buffer plus one read of the upstream socket.
            assert most <= BUFFER + READ
            assert counters.dropped == 1
            # Dropped: its bytes freed, its stream cancelled, its slot back.
            assert counters.held_bytes == 0
            assert counters.streams == 0
            await wait_until(lambda: stream_client(runner).in_flight == 0)
            _, stats = await runner.get_json("/v1/stats")
            assert stats["gateway"]["slow_stream_clients_dropped"] == 1
            assert stats["gateway"]["http_streams_total"] == 2
        finally:
            sock.close()
        # And after the drop everything still works.
        code, _, again = await post_stream(runner, b"!stream:10:10")
        assert read_records(again)[-1][0] == END_RECORD


@pytest_twisted.ensureDeferred
async def test_non_reading_stream_clients_never_delay_plain_requests():
    # One connection for the streams, held by clients that never read; the
    # requests have a pool of their own.
    async with running(
        "--pool-size",
        "1",
        "--http-stream-pool-size",
        "1",
        "--http-stream-buffer",
        str(BUFFER),
        "--http-stream-stall-timeout",
        "30",
        "--request-timeout",
        "1",
    ) as runner:
        counters = runner.service.gateway.stream_counters
        body = b"!stream:1000000:1000"
        socks = [
            raw_client(port_of(runner), post_head("/v1/stream", body), body)
            for _ in range(3)
        ]
        try:
            await wait_until(lambda: counters.held_bytes >= 3 * BUFFER)
            replies = [await runner.post(b"ping %d" % i) for i in range(20)]
            assert [(code, reply) for code, _, reply in replies] == [
                (200, b"ping %d" % i) for i in range(20)
            ]
            _, stats = await runner.get_json("/v1/stats")
            assert stats["stream_pool"] == {
                "connections": 1,
                "ready": 1,
                "in_flight": 3,
            }
        finally:
            for sock in socks:
                sock.close()


@pytest_twisted.ensureDeferred
async def test_slow_stream_reader_is_paused_not_dropped_and_gets_every_part():
    async with running(
        "--http-stream-buffer", str(BUFFER), "--http-stream-stall-timeout", "5"
    ) as runner:
        counters = runner.service.gateway.stream_counters
        response = await runner.http.post(
            f"{runner.url}/v1/stream", data=b"!stream:3000:1000", unbuffered=True
        )
        received = bytearray()
        transport = response.original._transport
        paused = []

        def slowly(data: bytes) -> None:
            received.extend(data)
            if len(received) // 200_000 > len(paused):
                # Stop reading for a moment, every 200 kB.
                paused.append(True)
                transport.pauseProducing()
                reactor.callLater(0.1, transport.resumeProducing)  # type: ignore[attr-defined]

        await treq.collect(response, slowly)
        records = read_records(bytes(received))
        assert len(records) == 3001
        assert json.loads(records[-1][1])["status"] == "ok"
        assert paused and counters.dropped == 0


@pytest_twisted.ensureDeferred
async def test_non_reading_subscriber_is_dropped_past_its_buffer_and_others_carry_on():
    async with running("--http-stream-buffer", str(BUFFER)) as runner:
        counters = runner.service.gateway.stream_counters
        reader = await EventReader().open(runner, "?topic=t")
        sock = raw_client(port_of(runner), get_head("/v1/subscribe?topic=t"))
        try:
            await wait_until(lambda: counters.subscribers == 2)
            await wait_until(lambda: reader.of("subscribed"))
            # Let the non-reader's subscribe be confirmed too.
            await wait_until(
                lambda: (
                    len(runner.client.subscriptions._by_topic[b"t"]) == 2
                    and all(
                        not s._unconfirmed
                        for s in runner.client.subscriptions._by_topic[b"t"]
                    )
                )
            )
            # Until the kernel's buffers towards the non-reader are full
            # (megabytes on loopback) and its queue passes the bound.
            data = b"y" * 16000
            most = sent = 0
            while not counters.dropped:
                assert sent < 4000, "never dropped"
                await runner.client.request(b"!publish:t %d %s" % (sent, data))
                sent += 1
                most = max(most, counters.held_bytes)
            # Its queue never passed the bound by more than one event.
            assert most <= BUFFER + len(data) + 100
            assert counters.subscribers == 1
            assert counters.held_bytes == 0
            # The reading subscriber got every message, in order.
            await wait_until(lambda: reader.body.count(b"event: message") == sent)
            assert [m["data"].split()[0] for m in reader.of("message")] == [
                str(i) for i in range(sent)
            ]
        finally:
            sock.close()
            reader.close()


# -- figures ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stats_and_metrics_show_open_streams_and_subscribers():
    async with running() as runner:
        await wait_until(lambda: stream_client(runner).pool.ready_count == 2)
        reader = await EventReader().open(runner, "?topic=t")
        await wait_until(lambda: reader.of("subscribed"))
        _, stats = await runner.get_json("/v1/stats")
        gateway = stats["gateway"]
        assert gateway["http_subscribers"] == 1
        assert gateway["http_subscribers_total"] == 1
        assert gateway["http_streams"] == 0
        assert gateway["slow_stream_clients_dropped"] == 0
        _, _, text = await runner.get("/metrics")
        values = {
            s.name: s.value
            for f in text_string_to_metric_families(text.decode())
            for s in f.samples
        }
        assert values["framedclient_gateway_http_subscribers"] == 1
        assert values["framedclient_gateway_http_streams"] == 0
        assert values["framedclient_gateway_slow_stream_clients_dropped_total"] == 0
        assert "framedclient_gateway_held_stream_bytes" in values
        assert values["framedclient_gateway_stream_pool_ready_connections"] == 2
        assert values["framedclient_gateway_stream_pool_in_flight"] == 0
        reader.close()


def metric_samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text.decode())
        for s in f.samples
    }


@pytest_twisted.ensureDeferred
async def test_streams_on_their_own_pool_count_in_the_request_outcomes():
    # The default --http-stream-pool-size 2: streams run on a client of
    # their own, and are counted in framedclient_requests_total all the
    # same (as with a shared pool), and on their own under the stream
    # pool's name.
    async with running() as runner:
        await runner.post(b"one")
        code, _, _ = await post_stream(runner, b"!stream:5:10")
        assert code == 200
        code, _, _ = await post_stream(runner, b"!error:no such cursor")
        assert code == 500
        _, _, text = await runner.get("/metrics")
        samples = metric_samples(text)
        requests = "framedclient_requests_total"
        assert samples[(requests, (("outcome", "ok"),))] == 2
        assert samples[(requests, (("outcome", "remote_error"),))] == 1
        pool = "framedclient_gateway_stream_pool_requests_total"
        assert samples[(pool, (("outcome", "ok"),))] == 1
        assert samples[(pool, (("outcome", "remote_error"),))] == 1
        _, stats = await runner.get_json("/v1/stats")
        assert stats["requests"]["ok"] == 2
        assert stats["requests"]["remote_error"] == 1
        # Only the plain request got an HTTP response counted by code.
        assert stats["gateway"]["responses"] == {"200": 1}


@pytest_twisted.ensureDeferred
async def test_the_status_pages_throughput_counts_streams_on_their_own_pool():
    async with running() as runner:
        await runner.post(b"one")
        code, _, _ = await post_stream(runner, b"!stream:5:10")
        assert code == 200
        history = runner.service.gateway.throughput
        history.sample()
        assert sum(ok for _, ok, _ in history.samples) == 2


# -- settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--http-stream-buffer", "0"], "--http-stream-buffer '0'"),
        (["--http-stream-buffer", "lots"], "--http-stream-buffer 'lots'"),
        (["--http-stream-stall-timeout", "-1"], "--http-stream-stall-timeout '-1'"),
        (["--http-sse-keepalive", "off"], "--http-sse-keepalive 'off'"),
        (["--http-stream-pool-size", "0"], "--http-stream-pool-size '0'"),
    ],
)
def test_bad_stream_options_are_one_line_naming_the_option(argv, words, capsys):
    with pytest.raises(UsageExit):
        Options().parseOptions(argv)
    err = capsys.readouterr().err
    assert words in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"buffer_bytes": 0}, "buffer_bytes"),
        ({"buffer_bytes": True}, "buffer_bytes"),
        ({"stall_timeout": 0}, "stall_timeout"),
        ({"keepalive": float("nan")}, "keepalive"),
    ],
)
def test_bad_stream_limits_are_refused_naming_the_argument(kwargs, name):
    with pytest.raises(InvalidSetting) as error:
        StreamLimits(**kwargs)
    assert name in str(error.value)
    assert "StreamLimits" in str(error.value)


# -- the relays, unit-tested ---------------------------------------------------------


class FakeRequest:
    """
    What the relays use of a ``twisted.web`` request.
    """

    def __init__(self) -> None:
        self.channel: object | None = object()
        self.written: list[bytes] = []
        self.producer: Any = None
        self.finished = False
        self.code = 0
        self.headers: dict[bytes, bytes] = {}
        self._finish: Deferred[None] = Deferred()
        self.transport = self

    def notifyFinish(self) -> Deferred[None]:
        return self._finish

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name] = value

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def finish(self) -> None:
        self.finished = True

    def abortConnection(self) -> None:
        self.channel = None
        from twisted.python.failure import Failure

        self._finish.errback(Failure(ConnectionError("aborted")))


def open_stream_relay(
    clock: Clock, items: int, limits: StreamLimits | None = None
) -> tuple[FakeRequest, Stream, StreamRelay, StreamCounters]:
    stream = Stream(clock, None, 1 << 30)
    for i in range(items):
        stream._put(b"%d" % i, 1)
    request = FakeRequest()
    counters = StreamCounters()
    relay = StreamRelay(
        request,
        stream,
        clock,
        limits or StreamLimits(stall_timeout=2.0),
        counters,
        lambda f: None,
        lambda f: {"error": "x"},
    )
    return request, stream, relay, counters


def test_many_buffered_parts_are_relayed_without_recursion():
    clock = Clock()
    request, stream, relay, _ = open_stream_relay(clock, 20_000)
    relay.start()
    assert len(request.written) == 20_000
    assert stream.buffered == 0


def test_a_paused_stream_relay_takes_no_part_until_resumed():
    clock = Clock()
    request, stream, relay, _ = open_stream_relay(clock, 0)
    relay.start()
    relay.pauseProducing()
    for i in range(5):
        stream._put(b"%d" % i, 1)
    # The one pull already asked for is answered; no more.
    assert len(request.written) == 1
    assert stream.buffered == 4
    relay.resumeProducing()
    assert len(request.written) == 5


def test_a_stream_relay_paused_past_the_stall_timeout_is_dropped_and_cancelled():
    clock = Clock()
    request, stream, relay, counters = open_stream_relay(clock, 0)
    relay.start()
    relay.pauseProducing()
    stream._put(b"part", 4)
    clock.advance(1.9)
    assert counters.dropped == 0
    relay.resumeProducing()  # a slow reader: the deadline starts again
    relay.pauseProducing()
    clock.advance(1.9)
    assert counters.dropped == 0
    clock.advance(0.2)
    assert counters.dropped == 1
    assert counters.streams == 0
    assert stream.finished and stream.buffered == 0
    assert not request.finished
    assert clock.getDelayedCalls() == []


class FakeSubscription:
    """
    A subscription fed by the test.
    """

    def __init__(self) -> None:
        self.topics = (b"t",)
        self.waiter: Deferred[Any] | None = None
        self.finished = False
        self.buffered_bytes = 0
        self.unsubscribed = 0

    def next(self) -> Deferred[Any]:
        self.waiter = Deferred()
        return self.waiter

    def put(self, item: Any) -> None:
        waiter, self.waiter = self.waiter, None
        assert waiter is not None
        waiter.callback(item)

    def when_subscribed(self) -> Deferred[None]:
        return succeed(None)

    def unsubscribe(self) -> Deferred[None]:
        self.unsubscribed += 1
        self.finished = True
        return succeed(None)


def test_a_paused_subscriber_is_dropped_once_its_queue_passes_the_buffer():
    clock = Clock()
    request = FakeRequest()
    sub = FakeSubscription()
    counters = StreamCounters()
    relay = SubscriptionRelay(
        request,
        sub,  # type: ignore[arg-type]
        clock,
        StreamLimits(buffer_bytes=1000, keepalive=5.0),
        counters,
        lambda f: {},
    )
    relay.start()
    written = len(request.written)
    relay.pauseProducing()
    for _ in range(10):
        sub.put(PushMessage(b"t", b"z" * 50))
    # Queued, not written, still pulled: the shared connection reads on.
    assert len(request.written) == written
    assert counters.held_bytes > 500
    for _ in range(100):
        if counters.dropped:
            break
        sub.put(PushMessage(b"t", b"z" * 50))
    assert relay.messages <= 20
    assert counters.held_bytes == 0
    assert counters.subscribers == 0
    assert sub.unsubscribed == 1
    assert clock.getDelayedCalls() == []
