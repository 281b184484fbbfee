"""
The clients framedclient is compared with: what a user would write instead.

- ``raw``: a hand-written :class:`~twisted.protocols.basic.Int32StringReceiver`
  speaking fc1, with a dict of Deferreds keyed by the u64 request ID.  No
  timeouts, limits, metrics, reconnect or pool: the floor of what Twisted
  can do, and the bar framedclient is held to.
- ``amp``: Twisted AMP, ``callRemote`` with an ``Echo`` command against the
  AMP echo server below (run it with
  ``python -m framedclient.bench.baselines amp-server --port 0``).  AMP is the
  framed request/reply protocol Twisted ships, so it is what many users
  reach for first.
- ``asyncio``: asyncio streams (``readexactly``) and a dict of futures on the
  default event loop, speaking fc1 to the reference server: the same job
  done without Twisted.

Each baseline does exactly what the benchmark needs and nothing more: an
echo must match its request, and a lost connection must fail every pending
request (the failure-time measurement depends on it).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import struct
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols import amp
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from framedclient.bench.measure import (
    ProcessSample,
    auto_request_count,
    current_rss,
    fail_all_fields,
    held_body,
    scale_requests,
    settle_seconds,
    tally_result,
    warmup_count,
)

__all__ = [
    "AMP_MAX_PAYLOAD",
    "AmpClient",
    "AsyncioFC1Client",
    "Echo",
    "EchoLocator",
    "RawClient",
    "RawFC1Protocol",
    "amp_echo_body",
    "main",
    "run_asyncio_closed_loop",
    "run_asyncio_scale",
]

# u64 request id + u8 kind: the part of an fc1 frame after the length.
_ID_KIND = struct.Struct(">QB")
# The whole fc1 header, for the asyncio client that frames by hand.
_FC1_HEADER = struct.Struct(">IQB")
_REQUEST = 0
_REPLY = 1

#: AMP values are at most 65,535 bytes; larger payloads cannot be compared.
AMP_MAX_PAYLOAD = 0xFFFF


class RawFC1Protocol(Int32StringReceiver):
    """
    The "raw" baseline: fc1 over ``Int32StringReceiver`` with a dict of
    Deferreds.  One ``transport.write`` per request, no timers, no counters.
    """

    MAX_LENGTH = 16 * 1024 * 1024

    def __init__(self) -> None:
        self._pending: dict[int, Deferred[bytes]] = {}
        self._next_id = 0

    def request(self, body: bytes) -> Deferred[bytes]:
        """
        Send ``body``; the Deferred fires with the reply body, or fails when
        the server answers with an error or the connection is lost.
        """
        self._next_id += 1
        request_id = self._next_id
        d: Deferred[bytes] = Deferred()
        self._pending[request_id] = d
        self.sendString(_ID_KIND.pack(request_id, _REQUEST) + body)  # type: ignore[no-untyped-call]
        return d

    def stringReceived(self, string: bytes) -> None:
        request_id, kind = _ID_KIND.unpack_from(string)
        d = self._pending.pop(request_id, None)
        if d is None:
            return
        if kind == _REPLY:
            d.callback(string[9:])
        else:
            d.errback(RuntimeError(f"fc1 frame of kind {kind} in reply"))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # The one courtesy every hand-written client must have: nothing
        # pending is left hanging when the connection goes.
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(reason)


class Echo(amp.Command):
    """
    The AMP baseline's only command: the server returns ``body`` unchanged.
    """

    arguments = [(b"body", amp.String())]  # type: ignore[no-untyped-call]
    response = [(b"body", amp.String())]  # type: ignore[no-untyped-call]


class EchoLocator(amp.CommandLocator):
    """
    The AMP echo server's responders.
    """

    @Echo.responder
    def echo(self, body: bytes) -> dict[str, bytes]:
        return {"body": body}


def amp_echo_body(response: dict[str, Any]) -> bytes:
    """
    The body of an ``Echo`` response (a plain function, so the AMP baseline
    allocates no closure per request).
    """
    body: bytes = response["body"]
    return body


def _amp_server_protocol() -> amp.AMP:
    return amp.AMP(locator=EchoLocator())  # type: ignore[no-untyped-call]


def serve_amp(port: int, host: str) -> int:
    """
    Run the AMP echo server until interrupted, printing
    ``amp server listening on HOST:PORT`` once it listens (the bench's
    :class:`~framedclient.bench.serverproc.ServerProcess` waits for that
    line).
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint

    endpoint = TCP4ServerEndpoint(reactor, port, interface=host)  # type: ignore[no-untyped-call]

    def started(listening: IListeningPort) -> None:
        address = listening.getHost()
        print(
            f"amp server listening on {host}:{getattr(address, 'port', '?')}",
            flush=True,
        )

    def failed(failure: Failure) -> None:
        print(
            f"amp server: cannot listen: {failure.getErrorMessage()}", file=sys.stderr
        )
        reactor.stop()

    factory = Factory.forProtocol(_amp_server_protocol)
    listening: Deferred[IListeningPort] = endpoint.listen(factory)  # type: ignore[no-untyped-call]
    listening.addCallbacks(started, failed)
    reactor.run()
    return 0


# -- the Twisted baselines as the load generator drives them -----------------

_Requester = Callable[[bytes], "Deferred[bytes]"]


class _TwistedBaseline:
    """
    ``K`` connections of one Twisted protocol, as the load generator drives
    a client kind: :meth:`connect`, :meth:`requesters`, :meth:`close`.
    """

    fallback: str | None = None

    def __init__(self, reactor: Any, host: str, port: int, connections: int) -> None:
        self._reactor = reactor
        self._host = host
        self._port = port
        self._connections = connections
        self.protos: list[Any] = []

    def _protocol(self) -> Any:
        raise NotImplementedError

    async def connect(self) -> None:
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        endpoint = TCP4ClientEndpoint(self._reactor, self._host, self._port)
        for _ in range(self._connections):
            connecting = connectProtocol(endpoint, self._protocol())  # type: ignore[no-untyped-call]
            self.protos.append(await connecting)

    def requesters(self) -> list[_Requester]:
        """
        One request function per connection; loops use them round-robin.
        """
        raise NotImplementedError

    async def close(self) -> None:
        for p in self.protos:
            p.transport.loseConnection()


class RawClient(_TwistedBaseline):
    """
    ``K`` connections of :class:`RawFC1Protocol`.
    """

    protos: list[RawFC1Protocol]

    def _protocol(self) -> RawFC1Protocol:
        return RawFC1Protocol()

    def requesters(self) -> list[_Requester]:
        return [p.request for p in self.protos]


class AmpClient(_TwistedBaseline):
    """
    ``K`` AMP connections calling :class:`Echo`.
    """

    protos: list[amp.AMP]

    def _protocol(self) -> amp.AMP:
        return amp.AMP()  # type: ignore[no-untyped-call]

    def requesters(self) -> list[_Requester]:
        def bind(proto: amp.AMP) -> _Requester:
            call_remote = proto.callRemote

            def request(body: bytes) -> Deferred[bytes]:
                d: Deferred[bytes] = call_remote(  # type: ignore[no-untyped-call]
                    Echo, body=body
                ).addCallback(amp_echo_body)
                return d

            return request

        return [bind(p) for p in self.protos]


# -- asyncio -----------------------------------------------------------------


class AsyncioFC1Client:
    """
    The asyncio baseline: one stream connection, a reader task that matches
    replies by ID, and a dict of futures.

    Use :meth:`connect`, then :meth:`send` (returns a future) from the event
    loop's thread.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._next_id = 0
        self._reader_task = asyncio.create_task(self._read_replies())

    @classmethod
    async def connect(cls, host: str, port: int) -> AsyncioFC1Client:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    def send(self, body: bytes) -> asyncio.Future[bytes]:
        """
        Send ``body``; the future resolves to the reply body, or fails when
        the connection is lost.
        """
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._pending[request_id] = future
        self._writer.write(_FC1_HEADER.pack(len(body) + 9, request_id, _REQUEST) + body)
        return future

    async def _read_replies(self) -> None:
        reader = self._reader
        pending = self._pending
        error: BaseException
        try:
            while True:
                header = await reader.readexactly(13)
                length, request_id, kind = _FC1_HEADER.unpack(header)
                body = await reader.readexactly(length - 9)
                future = pending.pop(request_id, None)
                if future is None or future.done():
                    continue
                if kind == _REPLY:
                    future.set_result(body)
                else:
                    future.set_exception(
                        RuntimeError(f"fc1 frame of kind {kind} in reply")
                    )
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
            error = ConnectionError(f"connection lost: {e!r}")
        except asyncio.CancelledError:
            error = ConnectionError("client closed")
        self._fail_all(error)

    def _fail_all(self, error: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass
        await asyncio.gather(self._reader_task, return_exceptions=True)


class _AsyncioClosedLoop:
    """
    ``concurrency`` coroutines, each sending its next request as soon as its
    previous reply arrives, until ``total`` requests were sent.
    """

    def __init__(
        self, senders: Sequence[Callable[[bytes], asyncio.Future[bytes]]]
    ) -> None:
        self._senders = senders
        self.latencies: list[float] = []
        self.ok = 0
        self.failed = 0
        self.first_error: str | None = None
        self._issued = 0
        self._total = 0

    async def run(self, concurrency: int, total: int, body: bytes) -> None:
        self._issued = 0
        self._total = total
        senders = self._senders
        workers = [
            self._worker(senders[i % len(senders)], body)
            for i in range(min(concurrency, total))
        ]
        await asyncio.gather(*workers)

    async def _worker(
        self, send: Callable[[bytes], asyncio.Future[bytes]], body: bytes
    ) -> None:
        latencies = self.latencies
        perf_counter = time.perf_counter
        while self._issued < self._total:
            self._issued += 1
            started = perf_counter()
            try:
                reply = await send(body)
            except Exception as e:
                self.failed += 1
                if self.first_error is None:
                    self.first_error = repr(e)
                continue
            latencies.append(perf_counter() - started)
            if reply == body:
                self.ok += 1
            else:
                self.failed += 1
                if self.first_error is None:
                    self.first_error = (
                        f"reply of {len(reply)} bytes does not echo the request"
                    )


async def _asyncio_closed_loop(
    host: str,
    port: int,
    concurrency: int,
    payload: int,
    requests: int | None,
    connections: int,
) -> dict[str, Any]:
    clients = [await AsyncioFC1Client.connect(host, port) for _ in range(connections)]
    try:
        body = b"x" * payload
        senders = [c.send for c in clients]
        # Two warm-up rounds, as in loadgen: the second one's rate sizes the run.
        warmup_total = warmup_count(concurrency)
        await _AsyncioClosedLoop(senders).run(concurrency, warmup_total, body)
        warmup_start = time.perf_counter()
        await _AsyncioClosedLoop(senders).run(concurrency, warmup_total, body)
        total = requests or auto_request_count(
            warmup_total, time.perf_counter() - warmup_start
        )
        gc.collect()
        measured = _AsyncioClosedLoop(senders)
        start = ProcessSample.now()
        await measured.run(concurrency, total, body)
        end = ProcessSample.now()
    finally:
        for c in clients:
            await c.close()
    return tally_result(
        measured,
        kind="asyncio",
        concurrency=concurrency,
        payload=payload,
        connections=connections,
        requests=total,
        start=start,
        end=end,
        extra={"fallback": None, "warmup_requests": 2 * warmup_total},
    )


def run_asyncio_closed_loop(
    host: str,
    port: int,
    concurrency: int,
    payload: int,
    requests: int | None,
    connections: int,
) -> dict[str, Any]:
    """
    One measured closed-loop run of the asyncio baseline (after a warm-up),
    as :func:`~framedclient.bench.measure.closed_loop_result` describes.
    """
    return asyncio.run(
        _asyncio_closed_loop(host, port, concurrency, payload, requests, connections)
    )


async def _asyncio_burst(
    client: AsyncioFC1Client, count: int, body: bytes, settle: float
) -> list[asyncio.Future[bytes]]:
    futures: list[asyncio.Future[bytes]] = [None] * count  # type: ignore[list-item]
    send = client.send
    for i in range(count):
        futures[i] = send(body)
    await asyncio.sleep(settle)
    return futures


async def _asyncio_fail_all(
    client: AsyncioFC1Client, futures: list[asyncio.Future[bytes]]
) -> tuple[ProcessSample, ProcessSample, int]:
    """
    Make the server drop the connection; time until every future is done.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[ProcessSample] = loop.create_future()
    remaining = len(futures) + 1
    failed = 0

    def count(future: asyncio.Future[bytes]) -> None:
        nonlocal remaining, failed
        if future.cancelled() or future.exception() is not None:
            failed += 1
        remaining -= 1
        if not remaining:
            done.set_result(ProcessSample.now())

    for f in futures:
        f.add_done_callback(count)
    start = ProcessSample.now()
    client.send(b"!drop").add_done_callback(count)
    end = await done
    return start, end, failed - 1


async def _asyncio_scale(
    host: str, port: int, inflight: int, payload: int, requests: int | None
) -> dict[str, Any]:
    body = b"x" * payload
    held = held_body(payload)
    settle = settle_seconds(inflight)
    result: dict[str, Any] = {
        "kind": "asyncio",
        "inflight": inflight,
        "payload": payload,
    }

    # Connection loss with everything pending, and the RSS it took.
    client = await AsyncioFC1Client.connect(host, port)
    warmup = _AsyncioClosedLoop([client.send])
    await warmup.run(min(inflight, 64), 2_000, body)
    gc.collect()
    rss_before = current_rss()
    futures = await _asyncio_burst(client, inflight, held, settle)
    rss_after = current_rss()
    start, end, failed = await _asyncio_fail_all(client, futures)
    await client.close()
    result.update(fail_all_fields(inflight, rss_before, rss_after, start, end, failed))
    del futures

    # The same burst under tracemalloc: the bytes Python allocated for it.
    client = await AsyncioFC1Client.connect(host, port)
    await _AsyncioClosedLoop([client.send]).run(min(inflight, 64), 500, body)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    futures = await _asyncio_burst(client, inflight, held, settle)
    traced = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    await _asyncio_fail_all(client, futures)
    await client.close()
    result["traced_per_request"] = traced / inflight
    del futures

    # Throughput with ``inflight`` requests outstanding all the time.
    client = await AsyncioFC1Client.connect(host, port)
    try:
        warm = _AsyncioClosedLoop([client.send])
        warm_start = time.perf_counter()
        warm_total = warmup_count(min(inflight, 1024))
        await warm.run(min(inflight, 1024), warm_total, body)
        total = scale_requests(
            inflight, requests, warm_total, time.perf_counter() - warm_start
        )
        gc.collect()
        loop = _AsyncioClosedLoop([client.send])
        start = ProcessSample.now()
        await loop.run(inflight, total, body)
        end = ProcessSample.now()
    finally:
        await client.close()
    result.update(
        tally_result(
            loop,
            kind="asyncio",
            concurrency=inflight,
            payload=payload,
            connections=1,
            requests=total,
            start=start,
            end=end,
        )
    )
    return result


def run_asyncio_scale(
    host: str, port: int, inflight: int, payload: int, requests: int | None
) -> dict[str, Any]:
    """
    The scale measurements (the ``scale`` mode of :mod:`framedclient.bench.loadgen`)
    for the asyncio baseline.
    """
    return asyncio.run(_asyncio_scale(host, port, inflight, payload, requests))


def main(argv: Sequence[str] | None = None) -> int:
    """
    ``python -m framedclient.bench.baselines amp-server --port 0``: the AMP
    echo server the ``amp`` baseline talks to.
    """
    parser = argparse.ArgumentParser(prog="python -m framedclient.bench.baselines")
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser(
        "amp-server", help="run the AMP echo server (prints its port once listening)"
    )
    server.add_argument(
        "--port", type=int, default=0, help="TCP port; 0 picks a free one"
    )
    server.add_argument(
        "--host", default="127.0.0.1", help="interface (default 127.0.0.1)"
    )
    args = parser.parse_args(argv)
    return serve_amp(args.port, args.host)


if __name__ == "__main__":
    raise SystemExit(main())
