"""
The sans-IO request engine, driven directly: a fake clock, a trivial codec
and a fake :class:`~framedclient.engine.EngineActions` that records every
outcome, cancel frame and wake-up the engine asks for.

These are the named defects as plain examples (tombstoned IDs must not be
reused, late replies are dropped, tombstones expire, the table's real size
returns to 0); ``test_engine_model.py`` fuzzes the same engine against a
model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from framedclient.codecs import REQUEST, Matching
from framedclient.engine import (
    CANCELLED,
    ERROR_REPLY,
    LATE,
    LOST,
    MATCHED,
    REPLY,
    TIMEOUT,
    UNKNOWN,
    Request,
    RequestEngine,
)
from framedclient.errors import ConnectionLost, Overloaded, RequestTimeout


def encode(kind: int, request_id: int, body: bytes) -> bytes:
    """
    A codec's ``encode`` reduced to what the engine relies on: the frame
    says its kind and ID, so a test can read them back.
    """
    return bytes([kind]) + request_id.to_bytes(8, "big") + body


class FakeClock:
    """
    The engine's ``seconds``: a float the test advances.
    """

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class RecordingActions:
    """
    An :class:`~framedclient.engine.EngineActions` that records everything.

    :ivar delivered: ``(request, exit, value, now)`` per outcome, in order.
    :ivar cancel_frames: the IDs of cancel frames asked for.
    :ivar arms: every wake-up asked for; :ivar:`armed` is the one in force
        (``inf`` once the test has fired it).
    :ivar on_deliver: called after recording an outcome, as an adapter's
        callbacks would be (they may call back into the engine).
    """

    def __init__(self) -> None:
        self.delivered: list[tuple[Request, int, Any, float]] = []
        self.cancel_frames: list[int] = []
        self.arms: list[float] = []
        self.armed = math.inf
        self.idles = 0
        self.on_deliver: Callable[[Request, int, Any, float], None] | None = None

    def deliver(self, request: Request, exit: int, value: Any, now: float) -> None:
        self.delivered.append((request, exit, value, now))
        if self.on_deliver is not None:
            self.on_deliver(request, exit, value, now)

    def send_cancel(self, request_id: int) -> None:
        self.cancel_frames.append(request_id)

    def arm(self, deadline: float) -> None:
        self.arms.append(deadline)
        self.armed = deadline

    def idle(self) -> None:
        self.idles += 1

    def outcomes(self, r: Request) -> list[tuple[int, Any]]:
        return [(exit, value) for req, exit, value, _ in self.delivered if req is r]


class Harness:
    """
    An engine with its fake clock and actions, plus the adapter's duties:
    write what is queued, fire the wake-up when its time comes.
    """

    def __init__(
        self,
        matching: Matching = Matching.BY_ID,
        max_id: int = 15,
        max_pending: int = 8,
        abandoned_ttl: float | None = None,
        supports_cancel: bool = False,
    ) -> None:
        self.clock = FakeClock()
        self.actions = RecordingActions()
        self.engine = RequestEngine(
            matching=matching,
            max_id=max_id,
            max_pending=max_pending,
            abandoned_ttl=abandoned_ttl,
            supports_cancel=supports_cancel,
            encode=encode,
            seconds=self.clock,
            actions=self.actions,
        )
        self.written: list[bytes] = []

    def send(self, body: bytes = b"x", timeout: float | None = None) -> Request:
        """
        Open a request and write it at once.
        """
        assert not self.engine.full
        r = self.engine.open(body, timeout, self.clock.now)
        self.engine.take_unwritten(self.written)
        return r

    def reply(self, request_id: int, body: bytes = b"ok") -> int:
        return self.engine.reply(request_id, True, body, self.clock.now)

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        while self.actions.armed <= self.clock.now:
            self.actions.armed = math.inf
            self.engine.wake(self.clock.now)


# -- IDs of abandoned requests ---------------------------------------------


@pytest.mark.parametrize("abandon", ["cancel", "timeout"])
def test_an_abandoned_id_is_not_reused_while_its_reply_may_come(abandon: str) -> None:
    # A 2-bit ID space: any reuse of ID 1 would show up within a few
    # allocations.
    h = Harness(max_id=3, max_pending=2)
    old = h.send(timeout=1.0)
    assert old.request_id == 1
    if abandon == "cancel":
        h.engine.cancel(old)
    else:
        h.advance(1.0)
    assert h.actions.outcomes(old)[0][0] == (
        CANCELLED if abandon == "cancel" else TIMEOUT
    )
    assert h.engine.tombstones == 1
    for _ in range(10):
        r = h.send()
        assert r.request_id != 1, "the ID of an abandoned request was handed out"
        assert h.reply(r.request_id) == MATCHED
        # Only the tombstone is left (a leak would fill the ID space and
        # make the next allocation spin).
        assert h.engine.entries == 1
    # The old reply arrives at last: dropped, and nobody else receives it.
    delivered = len(h.actions.delivered)
    assert h.reply(1, b"old reply") == LATE
    assert len(h.actions.delivered) == delivered
    assert h.engine.late_replies == 1
    assert h.engine.tombstones == 0
    assert h.engine.entries == 0


def test_a_late_reply_never_reaches_the_request_that_now_holds_a_nearby_id() -> None:
    h = Harness(max_id=3, max_pending=2)
    old = h.send(timeout=1.0)
    h.advance(1.0)
    ((exit, value),) = h.actions.outcomes(old)
    assert exit == TIMEOUT and isinstance(value, RequestTimeout)
    assert value.timeout == 1.0
    new = h.send()
    assert new.request_id != old.request_id
    assert h.reply(old.request_id, b"stale") == LATE
    assert h.actions.outcomes(new) == []
    assert h.reply(new.request_id, b"fresh") == MATCHED
    assert h.actions.outcomes(new) == [(REPLY, b"fresh")]
    assert h.engine.late_replies == 1
    assert h.engine.unknown_replies == 0


def test_an_abandoned_id_is_released_after_abandoned_ttl() -> None:
    h = Harness(max_id=3, max_pending=2, abandoned_ttl=5.0)
    old = h.send()
    h.engine.cancel(old)
    assert h.engine.tombstones == 1
    h.advance(4.5)
    assert h.engine.tombstones == 1
    h.advance(0.5)
    assert h.engine.tombstones == 0
    assert h.engine.entries == 0
    # A reply after the TTL is no longer recognised as late.
    assert h.reply(old.request_id) == UNKNOWN
    assert h.engine.late_replies == 0
    # The ID is free again: the allocator comes back to it.
    ids = []
    for _ in range(3):
        r = h.send()
        ids.append(r.request_id)
        h.reply(r.request_id)
    assert old.request_id in ids


def test_a_late_reply_before_abandoned_ttl_releases_the_id_at_once() -> None:
    h = Harness(max_id=3, max_pending=2, abandoned_ttl=5.0)
    old = h.send()
    h.engine.cancel(old)
    assert h.reply(old.request_id) == LATE
    assert h.engine.tombstones == 0
    assert h.engine.entries == 0
    # The expired TTL entry later finds nothing to release.
    h.advance(5.0)
    assert h.engine.tombstones == 0
    assert h.engine.late_replies == 1


def test_cancelling_a_written_request_asks_for_a_cancel_frame() -> None:
    h = Harness(supports_cancel=True)
    r = h.send()
    h.engine.cancel(r)
    assert h.actions.cancel_frames == [r.request_id]


def test_cancelling_an_unwritten_request_frees_its_id_and_bytes() -> None:
    h = Harness(supports_cancel=True)
    r = h.engine.open(b"body", None, h.clock.now)
    assert h.engine.unwritten_bytes == len(encode(REQUEST, r.request_id, b"body"))
    h.engine.cancel(r)  # what the Deferred's cancel() does
    assert h.actions.outcomes(r) == [(CANCELLED, None)]
    assert h.actions.cancel_frames == []
    assert h.engine.tombstones == 0
    assert h.engine.unwritten_bytes == 0
    chunks: list[bytes] = []
    h.engine.take_unwritten(chunks)
    assert chunks == []
    assert h.engine.entries == 0


# -- a full table --------------------------------------------------------------


def test_tombstones_count_towards_a_full_table() -> None:
    h = Harness(max_id=3, max_pending=2)
    a, b = h.send(), h.send()
    h.engine.cancel(a)
    h.engine.cancel(b)
    assert h.engine.live == 0
    assert h.engine.full
    assert isinstance(h.engine.overloaded(), Overloaded)
    assert "2 abandoned" in str(h.engine.overloaded())
    assert h.reply(a.request_id) == LATE
    assert not h.engine.full


def test_live_requests_fill_the_table() -> None:
    h = Harness(max_id=7, max_pending=4)
    rs = [h.send() for _ in range(4)]
    assert h.engine.full
    assert len({r.request_id for r in rs}) == 4
    h.reply(rs[2].request_id)
    assert not h.engine.full


def test_max_pending_must_leave_room_in_the_id_space() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        Harness(max_id=3, max_pending=3)


# -- the real size of the table ----------------------------------------------


@pytest.mark.parametrize("matching", [Matching.BY_ID, Matching.IN_ORDER])
def test_the_table_is_empty_once_every_request_is_answered(matching: Matching) -> None:
    h = Harness(matching=matching)
    rs = [h.send(timeout=10.0) for _ in range(5)]
    for r in rs:
        h.reply(r.request_id)
    assert [h.actions.outcomes(r) for r in rs] == [[(REPLY, b"ok")]] * 5
    assert h.engine.live == 0
    assert h.engine.entries == 0
    assert h.actions.idles == 1


@pytest.mark.parametrize("matching", [Matching.BY_ID, Matching.IN_ORDER])
def test_the_table_is_empty_after_the_connection_is_lost(matching: Matching) -> None:
    h = Harness(matching=matching, abandoned_ttl=30.0)
    written = h.send(timeout=10.0)
    abandoned = h.send(timeout=10.0)
    h.engine.cancel(abandoned)
    queued = h.engine.open(b"later", 5.0, h.clock.now)
    error = RuntimeError("boom")
    h.engine.lose_all("gone", True, error)
    ((exit, value),) = h.actions.outcomes(written)
    assert exit == LOST and isinstance(value, ConnectionLost)
    assert value.written and value.error is error
    ((exit, value),) = h.actions.outcomes(queued)
    assert exit == LOST and not value.written
    assert h.actions.outcomes(abandoned) == [(CANCELLED, None)]
    assert (h.engine.live, h.engine.tombstones) == (0, 0)
    assert h.engine.entries == 0
    assert h.engine.deadline_entries == 0
    assert h.engine.unwritten_bytes == 0


def test_a_written_request_is_not_written_if_the_bytes_cannot_have_reached_the_peer() -> (
    None
):
    h = Harness()
    r = h.send()
    h.engine.lose_all("handshake failed", False)
    ((exit, value),) = h.actions.outcomes(r)
    assert exit == LOST and not value.written


def test_goaway_withdraws_only_unwritten_requests() -> None:
    h = Harness()
    written = h.send()
    queued = h.engine.open(b"q", None, h.clock.now)
    h.engine.withdraw_unwritten("server sent GOAWAY")
    ((exit, value),) = h.actions.outcomes(queued)
    assert exit == LOST and not value.written
    assert h.actions.outcomes(written) == []
    assert h.engine.live == 1
    assert h.engine.unwritten_bytes == 0
    h.reply(written.request_id)
    assert h.engine.entries == 0


# -- matching in order -----------------------------------------------------------


def test_in_order_the_reply_of_a_timed_out_request_is_dropped() -> None:
    h = Harness(matching=Matching.IN_ORDER)
    first = h.send(timeout=1.0)
    second = h.send(timeout=5.0)
    h.advance(1.0)
    assert h.actions.outcomes(first)[0][0] == TIMEOUT
    # The peer still answers in order: the first reply is the dead one's.
    assert h.reply(0, b"first's") == LATE
    assert h.actions.outcomes(second) == []
    assert h.reply(0, b"second's") == MATCHED
    assert h.actions.outcomes(second) == [(REPLY, b"second's")]
    assert h.engine.entries == 0


def test_in_order_an_error_reply_settles_the_oldest_request() -> None:
    h = Harness(matching=Matching.IN_ORDER)
    first, second = h.send(), h.send()
    assert h.engine.reply(0, False, b"nope", 0.0) == MATCHED
    assert h.actions.outcomes(first) == [(ERROR_REPLY, b"nope")]
    assert h.actions.outcomes(second) == []


def test_in_order_a_reply_with_nothing_written_is_unknown() -> None:
    h = Harness(matching=Matching.IN_ORDER)
    queued = h.engine.open(b"q", None, h.clock.now)
    assert h.reply(0) == UNKNOWN
    assert h.engine.unknown_replies == 1
    assert h.actions.outcomes(queued) == []


# -- callbacks that call back into the engine ------------------------------------


def test_cancelling_from_a_lost_callback_leaves_no_tombstone_behind() -> None:
    # A caller's errback on one request cancels another request on the same
    # connection while lose_all() delivers (reachable through FramedProtocol:
    # d1.addErrback(lambda f: d2.cancel())).
    h = Harness(abandoned_ttl=60.0, supports_cancel=True)
    first, second = h.send(), h.send()
    h.actions.on_deliver = lambda r, exit, value, now: (
        h.engine.cancel(second) if r is first else None
    )
    h.actions.arms.clear()
    h.engine.lose_all("gone", True)
    assert len(h.actions.outcomes(second)) == 1
    assert h.engine.tombstones == 0
    assert not h.engine.full
    assert h.actions.arms == [], "asked for a wake-up after the connection ended"
    assert h.actions.cancel_frames == []


def test_a_nested_settle_that_empties_the_table_says_idle_once() -> None:
    h = Harness()
    first, second = h.send(), h.send()
    h.actions.on_deliver = lambda r, exit, value, now: (
        h.engine.cancel(second) if r is first else None
    )
    h.reply(first.request_id)
    assert h.engine.live == 0
    assert h.actions.idles == 1


def test_opening_from_a_lost_callback_keeps_unwritten_bytes_true() -> None:
    # The engine's contract: deliver() comes after the books are done, "so
    # the callee may send new requests at once".
    h = Harness()
    first = h.send()
    opened: list[Request] = []
    h.actions.on_deliver = lambda r, exit, value, now: (
        opened.append(h.engine.open(b"retry", None, h.clock.now)) if (
            r is first
        ) else None
    )
    h.engine.lose_all("gone", True)
    (retry,) = opened
    assert h.engine.unwritten_count == 1
    assert h.engine.unwritten_bytes == len(encode(REQUEST, retry.request_id, b"retry"))


def test_a_request_sent_from_a_reply_callback_keeps_the_connection_busy() -> None:
    h = Harness(max_id=3, max_pending=2)
    first = h.send()
    opened: list[Request] = []
    h.actions.on_deliver = lambda r, exit, value, now: (
        opened.append(h.engine.open(b"next", None, h.clock.now)) if (
            r is first
        ) else None
    )
    h.reply(first.request_id)
    (nxt,) = opened
    assert h.engine.live == 1
    chunks: list[bytes] = []
    h.engine.take_unwritten(chunks)
    assert chunks == [encode(REQUEST, nxt.request_id, b"next")]
    # idle() is not called: a request was sent before the last one ended.
    assert h.actions.idles == 0


class CountingRequest(Request):
    """
    A record that counts how often its fields are read while ``counting``
    is on: how much of the table a wake-up looks at.
    """

    __slots__ = ("_state",)
    counting = False
    reads = 0

    @property  # type: ignore[override]
    def state(self) -> int:
        if CountingRequest.counting:
            CountingRequest.reads += 1
        return self._state

    @state.setter
    def state(self, value: int) -> None:
        self._state = value


@pytest.mark.parametrize("matching", [Matching.BY_ID, Matching.IN_ORDER])
def test_timeouts_one_after_another_cost_each_wake_up_only_what_is_due(matching):
    # A server that never answers: every request times out and its ID stays
    # reserved.  Each wake-up must look only at the requests that are due
    # (and the next one), not at the whole table of tombstones, or a black
    # hole would cost O(n^2).
    clock, actions = FakeClock(), RecordingActions()
    engine = RequestEngine(
        matching=matching,
        max_id=100_000,
        max_pending=50_000,
        abandoned_ttl=None,
        supports_cancel=False,
        encode=encode,
        seconds=clock,
        actions=actions,
        record=CountingRequest,
    )

    def wake_when_due() -> None:
        while actions.armed <= clock.now:
            actions.armed = math.inf
            CountingRequest.counting = True
            try:
                engine.wake(clock.now)
            finally:
                CountingRequest.counting = False

    n = 3_000
    for _ in range(n):
        engine.open(b"x", 1.0, clock.now)
        engine.take_unwritten([])
        clock.now += 0.001
        wake_when_due()
    clock.now += 2.0
    wake_when_due()
    assert engine.tombstones == n and engine.live == 0
    assert CountingRequest.reads < 10 * n


def test_a_clock_that_steps_back_does_not_delay_a_timeout() -> None:
    h = Harness()
    h.clock.now = 100.0
    first = h.send(timeout=5.0)  # due at 105
    h.clock.now = 50.0  # wall-clock time stepped back
    second = h.send(timeout=5.0)  # due at 55, behind an earlier-opened one
    h.advance(5.0)
    assert h.actions.outcomes(second)[0][0] == TIMEOUT
    assert h.actions.outcomes(first) == []
