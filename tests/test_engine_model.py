"""
The request engine fuzzed against a model (issue 9).

A hypothesis ``RuleBasedStateMachine`` drives one
:class:`~framedclient.engine.RequestEngine` per matching mode with a tiny ID
space, and keeps its own model of every request: queued, sent, abandoned
(a tombstone whose ID stays reserved) or done.  Every outcome the engine
delivers is checked against the operation that caused it as it happens, and
after every step the engine's counters, its table and its wake-ups are
checked against the model.  What it guarantees:

- every request is delivered exactly once by the end of the connection, and
  never twice;
- a reply reaches the request that was written with its ID (by ID) or the
  oldest written request still held (in order), never another one;
- no two held requests (live or tombstone) share an ID, so a late reply to
  an abandoned request cannot reach a new one;
- the table's real size (``entries``) only holds what the model holds, and
  is 0 once everything has settled and been written, and after the end;
- the engine never asks to be woken later than the earliest deadline it
  holds, so no timeout is missed.

Callbacks may call back into the engine (the adapter's callers do): a rule
arms a one-shot re-entrant open or cancel, run from inside the next
delivery.  Not during ``lose_all()``: that case has its own (xfail) tests in
``test_engine.py``.
"""

from __future__ import annotations

import math
import sys
from functools import partial
from typing import Any, ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

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
from framedclient.errors import ConnectionLost, RequestTimeout
from tests.test_engine import FakeClock, encode

QUEUED, SENT, ABANDONED, DONE = "queued", "sent", "abandoned", "done"
LIVE = (QUEUED, SENT)
HELD = (QUEUED, SENT, ABANDONED)

# Times are multiples of 0.25: exact in binary, so "due" is never a rounding
# question.
TIMEOUTS = st.sampled_from([None, 0.25, 0.5, 1.0, 2.0, 5.0])
STEPS = st.sampled_from([0.25, 0.5, 1.0, 3.0])
BODIES = st.binary(max_size=3)


class Model:
    """
    What the model knows about one request.
    """

    def __init__(
        self,
        r: Request,
        body: bytes,
        timeout: float | None,
        now: float,
        idempotent: bool,
    ) -> None:
        self.r = r
        self.request_id = r.request_id
        self.body = body
        self.timeout = timeout
        self.deadline = math.inf if timeout is None else now + timeout
        self.started = now
        self.idempotent = idempotent
        self.state = QUEUED
        #: the TTL deadline of a tombstone (inf: kept until its reply / the end)
        self.ttl_at = math.inf
        #: position in write order (IN_ORDER matching)
        self.write_seq = -1
        #: every exit delivered for it (the engine must deliver exactly one)
        self.exits: list[int] = []

    def __repr__(self) -> str:
        return f"<Model id={self.request_id} {self.state} exits={self.exits}>"


class EngineMachine(RuleBasedStateMachine):
    """
    One connection's engine against the model; ``lose_all`` ends a
    connection (and starts a new one, same parameters).
    """

    matching: ClassVar[Matching]

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.by_id = self.matching is Matching.BY_ID
        self.connections = 0

    # -- connection set-up ---------------------------------------------------

    @initialize(
        # Mostly tiny ID spaces: the allocator wraps onto held IDs often.
        max_id=st.one_of(st.integers(3, 5), st.integers(6, 15)),
        pending_room=st.integers(0, 12),
        ttl=st.sampled_from([None, None, 0.5, 2.0, 6.0]),
        supports_cancel=st.booleans(),
    )
    def connect(
        self,
        max_id: int,
        pending_room: int,
        ttl: float | None,
        supports_cancel: bool,
    ) -> None:
        # max_pending close to max_id: the allocator has to skip held IDs.
        self.max_id = max_id
        self.max_pending = max(1, max_id - 1 - pending_room)
        if self.matching is Matching.EXCLUSIVE:
            self.max_pending = 1
        self.ttl = ttl if self.by_id else None
        self.supports_cancel = supports_cancel and self.by_id
        self._new_engine()

    def _new_engine(self) -> None:
        self.connections += 1
        self.engine = RequestEngine(
            matching=self.matching,
            max_id=self.max_id,
            max_pending=self.max_pending,
            abandoned_ttl=self.ttl,
            supports_cancel=self.supports_cancel,
            encode=encode,
            seconds=self.clock,
            actions=self,
        )
        self.models: list[Model] = []
        self.model_of: dict[Request, Model] = {}
        #: requests opened since the write queue was last taken/withdrawn
        #: (settled ones may still sit in it: the engine skips them lazily)
        self.since_take: list[Model] = []
        self.write_seq = 0
        self.late = 0
        self.unknown = 0
        self.expected_cancel_frames: list[int] = []
        self.cancel_frames: list[int] = []
        self.armed = math.inf
        #: what the engine is doing now: deliveries are checked against it
        self.ops: list[tuple[Any, ...]] = []
        self.delivered_in_op = False
        self.idle_since_deliver = True
        #: a one-shot call back into the engine from the next delivery
        self.reentry: tuple[str, Any] | None = None

    # -- EngineActions ---------------------------------------------------------

    def deliver(self, r: Request, exit: int, value: Any, now: float) -> None:
        m = self.model_of[r]
        assert not m.exits, f"{m} delivered a second time: exit {exit}"
        assert m.state in LIVE, f"{m} was not live, yet was delivered"
        assert now == self.clock.now
        self._check_outcome(m, exit, value)
        m.exits.append(exit)
        if m.state == SENT and exit in (TIMEOUT, CANCELLED):
            m.state = ABANDONED
            if self.ttl is not None:
                m.ttl_at = now + self.ttl
            if exit == CANCELLED and self.supports_cancel:
                self.expected_cancel_frames.append(m.request_id)
        else:
            m.state = DONE
        # "Called after the engine's own books are done."
        assert self.engine.live == self._count(LIVE), (
            f"engine.live={self.engine.live} when {m} was delivered exit {exit}"
        )
        assert self.engine.tombstones == self._count((ABANDONED,)), (
            f"engine.tombstones={self.engine.tombstones} when {m} was delivered"
        )
        assert r.written == (m.state in (SENT, ABANDONED))
        self.delivered_in_op = True
        self.idle_since_deliver = False
        if self.reentry is not None and self.ops[-1][0] != "lose":
            kind, arg = self.reentry
            self.reentry = None
            if kind == "open":
                if not self._model_full():
                    self._open(*arg)
            else:
                others = [o for o in self.models if o.state in LIVE]
                if others:
                    self._cancel(others[arg % len(others)])

    def _check_outcome(self, m: Model, exit: int, value: Any) -> None:
        op = self.ops[-1]
        kind = op[0]
        if kind == "reply":
            _, target, ok, body = op
            assert m is target, f"reply for {target} delivered to {m}"
            assert m.state == SENT
            assert exit == (REPLY if ok else ERROR_REPLY)
            assert value is body
        elif kind == "wake":
            assert exit == TIMEOUT, f"{m}: exit {exit} from wake()"
            assert m.deadline <= self.clock.now, f"{m} timed out early"
            assert isinstance(value, RequestTimeout)
            assert value.timeout == m.timeout
            assert m.deadline >= op[1], "timeouts delivered out of deadline order"
            self.ops[-1] = ("wake", m.deadline)
        elif kind == "cancel":
            assert m is op[1], f"cancel of {op[1]} delivered to {m}"
            assert exit == CANCELLED and value is None
        elif kind == "withdraw":
            assert m.state == QUEUED, f"GOAWAY withdrew written {m}"
            assert exit == LOST and isinstance(value, ConnectionLost)
            assert not value.written
        elif kind == "lose":
            _, reached_peer, error = op
            assert exit == LOST and isinstance(value, ConnectionLost)
            assert value.written == (m.state == SENT and reached_peer)
            assert value.error is error
        else:
            raise AssertionError(f"{m} delivered during {kind}")

    def send_cancel(self, request_id: int) -> None:
        self.cancel_frames.append(request_id)

    def arm(self, deadline: float) -> None:
        self.armed = deadline

    def idle(self) -> None:
        assert self.engine.live == 0, "idle() with live requests"
        self.idle_since_deliver = True

    # -- the model's helpers ---------------------------------------------------

    def _count(self, states: tuple[str, ...]) -> int:
        return sum(1 for m in self.models if m.state in states)

    def _held(self) -> list[Model]:
        return [m for m in self.models if m.state in HELD]

    def _model_full(self) -> bool:
        return self._count(HELD) >= self.max_pending

    def _run(self, op: tuple[Any, ...], call: Any) -> Any:
        self.ops.append(op)
        outer = self.delivered_in_op
        self.delivered_in_op = False
        try:
            result = call()
        finally:
            self.ops.pop()
        if self.delivered_in_op and self.engine.live == 0:
            assert self.idle_since_deliver, f"no idle() after the last {op[0]}"
        self.delivered_in_op = outer or self.delivered_in_op
        return result

    def _open(self, body: bytes, timeout: float | None, idempotent: bool) -> None:
        assert not self.engine.full
        if not self.ops:
            # A leaked entry must fail here: once leaks fill the ID space,
            # the allocator would spin.
            self.the_table_holds_what_the_model_holds()
        held_ids = {m.request_id for m in self._held()}
        r = self.engine.open(body, timeout, self.clock.now, idempotent)
        assert 1 <= r.request_id <= self.max_id
        if self.by_id:
            assert r.request_id not in held_ids, (
                f"ID {r.request_id} handed out while held by "
                f"{[m for m in self._held() if m.request_id == r.request_id]}"
            )
        m = Model(r, body, timeout, self.clock.now, idempotent)
        self.models.append(m)
        self.model_of[r] = m
        self.since_take.append(m)

    def _cancel(self, m: Model) -> None:
        was = m.state

        def call() -> None:
            self.engine.cancel(m.r)

        self._run(("cancel", m), call)
        if was in LIVE:
            assert m.exits == [CANCELLED]
        else:
            assert m.state == was, f"cancel() changed settled {m}"

    def _fire(self) -> None:
        for _ in range(3):
            if self.armed > self.clock.now:
                return
            self.armed = math.inf
            now = self.clock.now
            due = [m for m in self.models if m.state in LIVE and m.deadline <= now]
            expired = [
                m for m in self.models if m.state == ABANDONED and m.ttl_at <= now
            ]
            self._run(("wake", -math.inf), partial(self.engine.wake, now))
            for m in due:
                assert m.state not in LIVE, f"{m} was due at {now} but did not time out"
            for m in expired:
                m.state = DONE
        raise AssertionError("the engine keeps asking to be woken in the past")

    # -- rules -------------------------------------------------------------------

    @rule(
        requests=st.lists(
            st.tuples(BODIES, TIMEOUTS, st.booleans()), min_size=1, max_size=4
        ),
        write=st.booleans(),
    )
    def open(
        self, requests: list[tuple[bytes, float | None, bool]], write: bool
    ) -> None:
        for body, timeout, idempotent in requests:
            if self._model_full():
                # The adapter checks ``full`` and refuses; the engine agrees.
                assert self.engine.full
                break
            self._open(body, timeout, idempotent)
        if write:
            self.take_unwritten()

    @rule()
    def take_unwritten(self) -> None:
        chunks: list[bytes] = []
        self.engine.take_unwritten(chunks)
        queued = [m for m in self.since_take if m.state == QUEUED]
        assert chunks == [encode(REQUEST, m.request_id, m.body) for m in queued]
        for m in queued:
            m.state = SENT
            m.write_seq = self.write_seq
            self.write_seq += 1
        self.since_take = []

    def _written(self) -> list[Model]:
        return [m for m in self.models if m.state in (SENT, ABANDONED)]

    @precondition(lambda self: self.by_id and self._written())
    @rule(data=st.data(), ok=st.booleans(), body=BODIES)
    def reply_by_id(self, data: st.DataObject, ok: bool, body: bytes) -> None:
        # The ID of a written request, live or tombstone.
        m = data.draw(st.sampled_from(self._written()))
        self._reply(m.request_id, ok, body)

    @precondition(lambda self: not self.by_id and self._written())
    @rule(ok=st.booleans(), body=BODIES, request_id=st.integers(0, 3))
    def reply_in_order(self, ok: bool, body: bytes, request_id: int) -> None:
        self._reply(request_id, ok, body)

    @rule(request_id=st.integers(0, 17), ok=st.booleans(), body=BODIES)
    def reply_to_any_id(self, request_id: int, ok: bool, body: bytes) -> None:
        # Never sent, queued, answered already, released, out of range: or,
        # by chance, a written one.
        self._reply(request_id, ok, body)

    def _reply(self, request_id: int, ok: bool, body: bytes) -> None:
        target: Model | None
        if self.by_id:
            held = [m for m in self._held() if m.request_id == request_id]
            assert len(held) <= 1
            target = held[0] if held else None
            if target is not None and target.state == QUEUED:
                target = None  # not written yet: the peer cannot answer it
        else:
            written = [m for m in self._held() if m.state != QUEUED]
            target = min(written, key=lambda m: m.write_seq) if written else None
        # A fresh object: "delivered as is" is checked by identity.
        body = bytes(bytearray(body))
        sent = target if target is not None and target.state == SENT else None
        found = self._run(
            ("reply", sent, ok, body),
            lambda: self.engine.reply(request_id, ok, body, self.clock.now),
        )
        if target is None:
            assert found == UNKNOWN
            self.unknown += 1
        elif sent is not None:
            assert found == MATCHED
            assert target.exits == [REPLY if ok else ERROR_REPLY]
        else:
            assert found == LATE
            target.state = DONE
            self.late += 1

    @rule(count=st.integers(1, 20), ok=st.booleans())
    def round_trips(self, count: int, ok: bool) -> None:
        """
        A burst of requests each answered at once: the allocator wraps
        around the ID space, past whatever is still held.
        """
        for _ in range(count):
            if self._model_full():
                assert self.engine.full
                return
            self._open(b"rt", None, False)
            self.take_unwritten()
            self._reply(self.models[-1].request_id, ok, b"rt")

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if not self.models:
            return
        # Any request of this connection, settled ones included: cancelling
        # those must change nothing.
        self._cancel(data.draw(st.sampled_from(self.models)))

    @rule(dt=STEPS)
    def advance(self, dt: float) -> None:
        self.clock.now += dt
        self._fire()

    @precondition(lambda self: self.armed < math.inf)
    @rule()
    def advance_to_wake_up(self) -> None:
        self.clock.now = max(self.clock.now, self.armed)
        self._fire()

    @precondition(lambda self: self.since_take)
    @rule()
    def withdraw_unwritten(self) -> None:
        queued = [m for m in self.models if m.state == QUEUED]
        self.since_take = []
        self._run(
            ("withdraw",),
            lambda: self.engine.withdraw_unwritten("server sent GOAWAY"),
        )
        for m in queued:
            assert m.state not in LIVE, f"GOAWAY left {m} queued"

    @rule(
        kind=st.sampled_from(["open", "cancel"]),
        body=BODIES,
        timeout=TIMEOUTS,
        idempotent=st.booleans(),
        index=st.integers(0, 20),
    )
    def call_back_from_next_delivery(
        self,
        kind: str,
        body: bytes,
        timeout: float | None,
        idempotent: bool,
        index: int,
    ) -> None:
        if kind == "open":
            self.reentry = ("open", (body, timeout, idempotent))
        else:
            self.reentry = ("cancel", index)

    @precondition(lambda self: self.models)
    @rule(reached_peer=st.booleans(), with_error=st.booleans())
    def lose_all(self, reached_peer: bool, with_error: bool) -> None:
        self._lose_all(reached_peer, with_error)
        self._new_engine()

    def _lose_all(self, reached_peer: bool, with_error: bool) -> None:
        error = RuntimeError("closed by framedclient") if with_error else None
        self.reentry = None
        for m in self.models:
            if m.state == ABANDONED:
                m.state = DONE  # tombstones are dropped with the connection
        self.since_take = []
        self._run(
            ("lose", reached_peer, error),
            lambda: self.engine.lose_all("connection lost", reached_peer, error),
        )
        # Nothing is left, and every request was delivered exactly once.
        for m in self.models:
            assert m.state == DONE and len(m.exits) == 1, m
        engine = self.engine
        assert (engine.live, engine.tombstones) == (0, 0)
        assert engine.entries == 0, f"{engine.entries} entries left after the end"
        assert engine.requests() == []
        assert engine.unwritten_bytes == 0
        assert engine.deadline_entries == 0
        assert not engine.full

    def teardown(self) -> None:
        # Every run ends with the connection: check nothing is left.  Not
        # after a failed step (hypothesis calls teardown in a ``finally``):
        # that failure is the one to report.
        if hasattr(self, "engine") and sys.exc_info()[0] is None:
            self._lose_all(reached_peer=True, with_error=False)

    # -- invariants ------------------------------------------------------------

    @invariant()
    def counters_agree_with_the_model(self) -> None:
        engine = self.engine
        assert engine.live == self._count(LIVE), f"live={engine.live}: {self.models}"
        assert engine.tombstones == self._count((ABANDONED,)), (
            f"tombstones={engine.tombstones}: {self.models}"
        )
        assert engine.full == self._model_full()
        assert engine.late_replies == self.late
        assert engine.unknown_replies == self.unknown
        assert self.cancel_frames == self.expected_cancel_frames

    @invariant()
    def every_request_is_delivered_once_when_it_leaves(self) -> None:
        for m in self.models:
            if m.state in LIVE:
                assert m.exits == [], m
            elif m.state == ABANDONED:
                assert m.exits in ([TIMEOUT], [CANCELLED]), m
            else:
                assert len(m.exits) == 1, m

    @invariant()
    def the_table_holds_what_the_model_holds(self) -> None:
        engine = self.engine
        held = self._held()
        assert set(engine.requests()) == {m.r for m in held}
        for m in held:
            assert m.r.request_id == m.request_id
            assert m.r.written == (m.state != QUEUED)
        if self.by_id:
            ids = [m.request_id for m in held]
            assert len(ids) == len(set(ids)), f"two held requests share an ID: {held}"
        queued = [m for m in held if m.state == QUEUED]
        assert engine.unwritten_count == len(queued)
        assert engine.unwritten_bytes == sum(
            len(encode(REQUEST, m.request_id, m.body)) for m in queued
        )
        # The real size: at least every held record (a queued one is also in
        # the write queue), at most that plus settled requests still sitting
        # in the write queue.  0 once everything settled and was written.
        if self.by_id:
            lower = len(held) + len(queued)
            upper = len(held) + len(self.since_take)
        else:
            lower = len(held)
            upper = len(held) - len(queued) + len(self.since_take)
        assert lower <= engine.entries <= upper, (
            f"entries={engine.entries}, model holds {held} "
            f"and {len(self.since_take)} in the write queue"
        )

    @invariant()
    def bodies_are_kept_only_while_they_may_be_resent(self) -> None:
        for m in self.models:
            if m.state == QUEUED:
                assert m.r.body is m.body
            elif m.state == SENT:
                assert m.r.body is (m.body if m.idempotent else None)
            elif m.state == ABANDONED:
                assert m.r.body is None

    @invariant()
    def no_deadline_is_missed(self) -> None:
        now = self.clock.now
        for m in self.models:
            if m.state in LIVE:
                assert m.deadline > now, f"{m} is past its deadline yet live"
                assert self.armed <= m.deadline, (
                    f"wake-up asked for {self.armed}, after {m}'s deadline {m.deadline}"
                )
            elif m.state == ABANDONED:
                assert m.ttl_at > now, f"tombstone {m} is past its TTL"
                assert self.armed <= m.ttl_at
        live = [m.started for m in self.models if m.state in LIVE]
        assert self.engine.oldest_started() == (min(live) if live else None)


FUZZ = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class ByIdMachine(EngineMachine):
    matching = Matching.BY_ID


class InOrderMachine(EngineMachine):
    matching = Matching.IN_ORDER


class ExclusiveMachine(EngineMachine):
    matching = Matching.EXCLUSIVE


TestEngineById = ByIdMachine.TestCase
TestEngineById.settings = FUZZ
TestEngineInOrder = InOrderMachine.TestCase
TestEngineInOrder.settings = FUZZ
TestEngineExclusive = ExclusiveMachine.TestCase
TestEngineExclusive.settings = settings(FUZZ, max_examples=30)
