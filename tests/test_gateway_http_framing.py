"""
The gateway's answers to request framing that announces trouble, over real
sockets on loopback (issue 23): a body announced above the limit is refused
with 413 at once, before any of it is read and instead of
``100 Continue``; an obs-folded header line (a folded ``Transfer-Encoding``
is a smuggling vector) is refused with 400.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from framedclient.runner.codecspec import parse_codec
from framedclient.runner.gateway import Gateway, GatewayService, HTTPLimits

GIB = 1 << 30
#: A small fc1 frame keeps the bodies sent here small; less its 13-byte
#: header.
CODEC = "fc1:max-frame=65536"
LIMIT = parse_codec(CODEC).max_frame - 13


@asynccontextmanager
async def gateway_port() -> AsyncIterator[tuple[Gateway, int]]:
    # Default limits: a 60 s body deadline, which the answers must not wait for.
    gateway = Gateway(lambda: None, reactor, parse_codec(CODEC))
    service = GatewayService(
        reactor, "tcp:0:interface=127.0.0.1", gateway, HTTPLimits()
    )
    service.startService()
    try:
        port = await service.listening
        yield gateway, port.getHost().port
    finally:
        await service.stopService()


def exchange(
    port: int, head: bytes, body: bytes = b"", first_only: bool = False
) -> tuple[bytes, float]:
    """
    Send ``head`` (and ``body``), then read until the server closes (or, with
    ``first_only``, until one response head has arrived); the answer and the
    seconds it took.
    """
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
            if first_only and b"\r\n\r\n" in received:
                break
    return received, time.monotonic() - start


def post_head(length: int, *extra: bytes) -> bytes:
    return (
        b"POST /v1/request HTTP/1.1\r\nHost: gateway\r\n"
        + b"".join(e + b"\r\n" for e in extra)
        + b"Content-Length: %d\r\n\r\n" % length
    )


def body_of(answer: bytes) -> dict[str, str]:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


@pytest_twisted.ensureDeferred
async def test_expect_100_continue_above_the_limit_gets_413_not_100():
    async with gateway_port() as (gateway, port):
        answer, took = await deferToThread(
            exchange, port, post_head(GIB, b"Expect: 100-continue")
        )
    assert answer.startswith(b"HTTP/1.1 413 Content Too Large\r\n"), answer[:80]
    assert b"100 Continue" not in answer
    assert b"Connection: close" in answer
    refusal = body_of(answer)
    assert refusal["error"] == "too_large"
    assert f"{GIB} bytes exceeds {LIMIT} bytes" in refusal["message"]
    assert took < 5  # at once: the client was never told to send
    assert gateway.responses == {413: 1}


@pytest_twisted.ensureDeferred
async def test_a_body_announced_above_the_limit_is_413_at_once_without_reading_it():
    async with gateway_port() as (gateway, port):
        # The client starts sending its 1 GiB; the answer comes at once, not
        # after the 60 s body deadline, and the connection closes.
        answer, took = await deferToThread(exchange, port, post_head(GIB), b"x" * 65536)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:80]
    assert body_of(answer)["error"] == "too_large"
    assert took < 5


@pytest_twisted.ensureDeferred
async def test_one_byte_over_the_limit_is_413_and_at_the_limit_is_not():
    async with gateway_port() as (gateway, port):
        over, _ = await deferToThread(exchange, port, post_head(LIMIT + 1))
        at, _ = await deferToThread(
            exchange,
            port,
            post_head(LIMIT, b"Connection: close"),
            b"y" * LIMIT,
        )
    assert over.startswith(b"HTTP/1.1 413 ")
    # Within the limit the body is read and served (no client here: the
    # gateway answers that it is stopped, not that the body is too large).
    assert at.startswith(b"HTTP/1.1 503 "), at[:80]
    assert body_of(at)["error"] == "closed"


@pytest_twisted.ensureDeferred
async def test_expect_100_continue_within_the_limit_still_gets_100():
    async with gateway_port() as (_, port):
        answer, _ = await deferToThread(
            exchange,
            port,
            post_head(5, b"Expect: 100-continue", b"Connection: close"),
            b"",
            True,
        )
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n"), answer[:80]


@pytest_twisted.ensureDeferred
async def test_an_obs_folded_transfer_encoding_is_refused_with_400():
    folded = (
        b"POST /v1/request HTTP/1.1\r\nHost: gateway\r\n"
        b"Transfer-Encoding:\r\n chunked\r\n"
        b"Content-Length: 3\r\n\r\nabc"
    )
    async with gateway_port() as (gateway, port):
        answer, took = await deferToThread(exchange, port, folded)
        also_tab, _ = await deferToThread(
            exchange,
            port,
            b"GET /livez HTTP/1.1\r\nHost: gateway\r\nX-Note: a\r\n\tb\r\n\r\n",
        )
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer[:80]
    assert answer.count(b"HTTP/1.1") == 1  # nothing was served
    assert took < 5
    assert also_tab.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert gateway.responses == {}


@pytest_twisted.ensureDeferred
async def test_a_chunked_body_past_the_limit_is_413_at_once_not_read_to_its_end():
    head = (
        b"POST /v1/request HTTP/1.1\r\nHost: gateway\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    # One chunk announced far larger than the limit, sent in part: the rest
    # never comes, so only an answer at the crossing ends this before the
    # 60 s body deadline.
    chunk = b"%x\r\n" % (4 * LIMIT) + b"z" * (LIMIT + 4096)
    async with gateway_port() as (gateway, port):
        answer, took = await deferToThread(exchange, port, head, chunk)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:80]
    assert body_of(answer)["error"] == "too_large"
    assert took < 5
    assert gateway.responses == {413: 1}
