"""
A connection's request table empties once its requests are settled.

``pending`` and ``table_size`` are counters; a bug that keeps a settled
request's entry in the table leaves them right and leaks memory on every
request.  ``debug_state()["table_entries"]`` counts what the request
containers really hold, so these tests can see such a leak: after requests
end in every possible way (replies, error replies, timeouts, cancels before
and after writing, late replies, connection loss) the counters and the real
table must all be back to 0, for a codec matching replies by ID (fc1) and
one matching them in order (pipelined, no IDs).

Public API only: requests and Deferreds on a protocol built by
:class:`~framedclient.protocol.FramedClientFactory`, bytes parsed from a
``StringTransport``, a ``Clock``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from framedclient.codecs import (
    ERROR,
    REPLY,
    REQUEST,
    FC1Codec,
    Matching,
    PipelinedCodec,
)
from framedclient.errors import ConnectionLost, RemoteError, RequestTimeout
from framedclient.framing import Delimited
from framedclient.protocol import FramedClientFactory, FramedProtocol


def _resp_error(frame: bytes) -> str | None:
    return frame[1:].decode() if frame.startswith(b"-") else None


CODECS: dict[str, Callable[[], Any]] = {
    "by-id": FC1Codec,
    "in-order": lambda: PipelinedCodec(
        lambda: Delimited(b"\r\n", max_frame=1024), is_error=_resp_error
    ),
}


class Link:
    """
    One client connection over a StringTransport, and a server side that
    answers what it received, in the order received.
    """

    def __init__(self, codec: Any, **config: Any) -> None:
        self.codec = codec
        self.by_id = codec.matching is Matching.BY_ID
        self.clock = Clock()
        factory = FramedClientFactory(codec, clock=self.clock, **config)
        self.proto: FramedProtocol = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self._framer = codec.new_framer()
        self._reply_framer = codec.new_framer()
        #: Requests the server received and has not answered: (id, body).
        self.unanswered: list[tuple[int, bytes]] = []
        self.deferreds: list[Deferred[bytes]] = []
        self.results: list[list[Any]] = []

    def request(self, body: bytes, **kw: Any) -> Deferred[bytes]:
        d = self.proto.request(body, **kw)
        box: list[Any] = []
        d.addBoth(lambda r: (box.append(r), None)[1])
        self.deferreds.append(d)
        self.results.append(box)
        return d

    def write(self) -> None:
        """
        Let the client write what it queued; the server reads it.
        """
        self.clock.advance(0)
        data = self.transport.value()
        self.transport.clear()
        for frame in self._framer.feed(data):
            kind, request_id, body = self.codec.decode(frame)
            if kind == REQUEST or not self.by_id:
                self.unanswered.append((request_id, body))

    def answer(self, count: int | None = None, error: bool = False) -> None:
        """
        Answer the ``count`` oldest unanswered requests (all by default).
        """
        count = len(self.unanswered) if count is None else count
        todo, self.unanswered = self.unanswered[:count], self.unanswered[count:]
        out = []
        for request_id, body in todo:
            if self.by_id:
                kind = ERROR if error else REPLY
                out.append(self.codec.encode(kind, request_id, b"re: " + body))
            else:
                reply = b"-ERR " + body if error else b"re: " + body
                out.append(self._reply_framer.encode(reply))
        if out:
            self.proto.dataReceived(b"".join(out))

    def assert_table_empty(self) -> None:
        state = self.proto.debug_state()
        assert (
            self.proto.pending,
            self.proto.table_size,
            state["table_entries"],
        ) == (0, 0, 0), state


@pytest.fixture(params=list(CODECS), ids=list(CODECS))
def link(request):
    return Link(CODECS[request.param]())


def test_answered_requests_leave_nothing_in_the_table(link):
    for i in range(50):
        link.request(b"%d" % i)
    link.write()
    link.answer()
    assert all(r and r[0].startswith(b"re: ") for r in link.results)
    link.assert_table_empty()


def test_error_replies_leave_nothing_in_the_table(link):
    for i in range(50):
        link.request(b"%d" % i)
    link.write()
    link.answer(error=True)
    assert all(r and r[0].check(RemoteError) for r in link.results)
    link.assert_table_empty()


def test_timed_out_requests_leave_nothing_once_their_late_replies_come(link):
    for i in range(20):
        link.request(b"%d" % i, timeout=1.0)
    link.write()
    link.clock.advance(1.0)
    assert all(r and r[0].check(RequestTimeout) for r in link.results)
    link.answer()
    assert link.proto.late_replies == 20
    link.assert_table_empty()


def test_timed_out_requests_leave_nothing_once_abandoned_ttl_passes():
    link = Link(FC1Codec(), abandoned_ttl=5.0)
    for i in range(20):
        link.request(b"%d" % i, timeout=1.0)
    link.write()
    link.clock.advance(1.0)
    assert link.proto.table_size == 20, "IDs are reserved for late replies"
    link.clock.advance(5.0)
    link.assert_table_empty()


def test_requests_cancelled_before_writing_leave_nothing_in_the_table(link):
    for i in range(20):
        link.request(b"%d" % i).cancel()
    link.write()
    assert link.unanswered == [], "nothing was written"
    link.assert_table_empty()


def test_requests_cancelled_after_writing_leave_nothing_once_answered(link):
    for i in range(20):
        link.request(b"%d" % i)
    link.write()
    for d in link.deferreds:
        d.cancel()
    link.write()
    link.answer()
    assert link.proto.late_replies == 20
    link.assert_table_empty()


def test_connection_loss_leaves_nothing_in_the_table(link):
    for i in range(10):
        link.request(b"written %d" % i)
    link.write()
    for i in range(10):
        link.request(b"still queued %d" % i)
    link.deferreds[0].cancel()  # a tombstone too
    link.proto.connectionLost(Failure(ConnectionDone("server went away")))
    lost = [r[0] for r in link.results[1:]]
    assert all(isinstance(f, Failure) and f.check(ConnectionLost) for f in lost)
    link.assert_table_empty()


# -- fuzzing ------------------------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("request"), st.sampled_from([None, 1.0, 3.0])),
        st.tuples(st.just("write"), st.none()),
        st.tuples(st.just("cancel"), st.integers(0, 15)),
        st.tuples(st.just("answer"), st.integers(1, 4)),
        st.tuples(st.just("error"), st.integers(1, 4)),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 2.0])),
    ),
    max_size=60,
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(codec=st.sampled_from(list(CODECS)), ops=OPS, lose=st.booleans())
def test_any_mix_of_outcomes_leaves_nothing_in_the_table(codec, ops, lose):
    """
    Requests ending in any mix of ways, then the server answers everything
    it received (or the connection is lost): the table is empty.
    """
    link = Link(CODECS[codec](), abandoned_ttl=2.5)
    for number, (op, arg) in enumerate(ops):
        if op == "request":
            link.request(b"request %d" % number, timeout=arg)
        elif op == "write":
            link.write()
        elif op == "cancel" and link.deferreds:
            link.deferreds[-1 - arg % len(link.deferreds)].cancel()
        elif op in ("answer", "error"):
            link.answer(arg, error=op == "error")
        elif op == "advance":
            link.clock.advance(arg)
    if lose:
        link.proto.connectionLost(Failure(ConnectionDone("server went away")))
    else:
        link.write()
        link.answer()
    assert all(len(r) == 1 for r in link.results), "every request has settled"
    link.assert_table_empty()
