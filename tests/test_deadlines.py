"""
DeadlineQueue: one timer for many deadlines.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from framedclient.deadlines import DeadlineQueue
from framedclient.errors import RequestTimeout
from framedclient.testing.memory import memory_client


class Item:
    def __init__(self, name: str, deadline: float) -> None:
        self.name = name
        self.deadline = deadline
        self.live = True


ITEMS: dict[int, list[Item]] = {}


def make(clock: Clock, fired: list[str]) -> DeadlineQueue[Item]:
    items: list[Item] = []

    def expire(item: Item) -> None:
        item.live = False
        fired.append(item.name)

    q: DeadlineQueue[Item] = DeadlineQueue(
        clock,
        lambda i: i.live,
        expire,
        lambda: sum(1 for i in items if i.live),
        lambda i: i.deadline,
    )
    ITEMS[id(q)] = items
    return q


def add(q: DeadlineQueue[Item], clock: Clock, name: str, delay: float) -> Item:
    item = Item(name, clock.seconds() + delay)
    ITEMS[id(q)].append(item)
    q.add(item.deadline, item)
    return item


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 10), st.booleans()), max_size=40))
@example(spec=[(0.0, False), (2.8821356200715136, False), (2.220446049250313e-16, False)])
def test_live_items_expire_in_deadline_order_at_their_deadline(spec):
    clock = Clock()
    fired: list[str] = []
    q = make(clock, fired)
    expected = []
    for n, (delay, finishes) in enumerate(spec):
        item = add(q, clock, str(n), delay)
        if finishes:
            item.live = False
        else:
            expected.append((item.deadline, n, str(n)))
    expected.sort()
    for deadline, _, name in expected:
        # To the deadline: (deadline - now) added back to now can land one
        # float step short of it, and then no timer scheduled for it runs.
        clock.advance(max(0.0, deadline - clock.seconds()))
        if clock.seconds() < deadline:
            clock.advance(deadline - clock.seconds())
        assert name in fired
    assert sorted(fired, key=int) == sorted((e[2] for e in expected), key=int)
    # Equal deadlines may fire in either order; distinct ones in order.
    times = {name: deadline for deadline, _, name in expected}
    assert [times[n] for n in fired] == sorted(times[n] for n in fired)
    clock.advance(11)  # past every deadline: the timer is gone, not re-armed
    assert clock.getDelayedCalls() == []


def test_nothing_fires_early_and_one_timer_serves_all():
    clock = Clock()
    fired: list[str] = []
    q = make(clock, fired)
    for i in range(1000):
        add(q, clock, str(i), 5.0)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(4.999)
    assert fired == []
    clock.advance(0.001)
    assert len(fired) == 1000


def test_an_earlier_deadline_rearms_the_timer():
    clock = Clock()
    fired: list[str] = []
    q = make(clock, fired)
    add(q, clock, "late", 10)
    add(q, clock, "early", 1)
    clock.advance(1)
    assert fired == ["early"]
    clock.advance(9)
    assert fired == ["early", "late"]


def test_finished_items_do_not_accumulate():
    clock = Clock()
    fired: list[str] = []
    q = make(clock, fired)
    for i in range(100_000):
        add(q, clock, str(i), 60).live = False
        if i % 1000 == 0:
            ITEMS[id(q)].clear()
    assert len(q) < 2048
    assert fired == []


def test_expiry_callbacks_may_add_earlier_deadlines():
    clock = Clock()
    fired: list[str] = []
    q = make(clock, fired)
    first = add(q, clock, "first", 1)
    add(q, clock, "third", 5)
    original = q._on_expire

    def expire_and_add(item):
        original(item)
        if item is first:
            add(q, clock, "second", 1)

    q._on_expire = expire_and_add
    clock.advance(1)
    clock.advance(1)
    assert fired == ["first", "second"]
    clock.advance(3)
    assert fired == ["first", "second", "third"]


def test_stop_cancels_the_timer():
    clock = Clock()
    q = make(clock, [])
    add(q, clock, "x", 1)
    q.stop()
    assert clock.getDelayedCalls() == []


def test_a_first_request_that_waited_for_its_connection_leaves_the_usual_timeout_alone() -> None:
    # The request sent first on a new connection had waited for it, so it
    # carries what is left of its timeout.  Had that become the connection's
    # usual timeout, every later request with the configured one would cost
    # a deadline entry of its own (a heap push and pop each) for the
    # connection's whole life.
    client, server = memory_client(request_timeout=5.0, pool_size=1)
    first = client.request(b"!hold")
    server.advance(0.5)  # the connection comes up half a second later
    server.flush()
    later = [client.request(b"!hold") for _ in range(20)]
    server.flush()
    (connection,) = client.debug_state()["upstreams"]
    assert connection["protocol"]["deadline_entries"] == 1
    assert connection["protocol"]["pending"] == 21
    server.advance(5.0)
    for d in [first, *later]:
        d.addErrback(lambda f: f.trap(RequestTimeout))
    assert client.debug_state()["upstreams"][0]["protocol"]["pending"] == 0
