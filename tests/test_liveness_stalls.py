"""
A client that stalls (a long callback, a garbage collection, a starved CPU,
a laptop resumed from sleep) is not fooled into closing live connections:
when it resumes, the reactor runs the timers that fell due before it reads
what arrived meanwhile, so the liveness checks confirm a verdict one turn
later, after the reads.

The tests run the fc1 reference server in memory on a ``ReactorClock``,
which orders timers and reads as a reactor does.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from framedclient.errors import RequestTimeout
from framedclient.server import ReferenceServerFactory
from framedclient.testing.memory import MemoryPair, connected_pair

from .wire import outcomes


class ReactorClock(Clock):
    """
    A ``Clock`` that runs timers as a reactor does: a call scheduled while
    the due ones run waits for the next turn, after the reads in between.
    """

    def advance(self, amount: float) -> None:
        self.rightNow += amount
        now = self.seconds()
        for call in [c for c in self.calls if c.getTime() <= now]:
            if call in self.calls:
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


def pair(**config: object) -> MemoryPair:
    clock = ReactorClock()
    return connected_pair(ReferenceServerFactory(clock=clock), clock=clock, **config)


def black_holes(p: MemoryPair) -> int:
    events: dict[str, int] = p.client.metrics.totals().connection_events
    return events["black_hole"]


def test_replies_waiting_in_the_socket_after_a_client_stall_are_read_first():
    """
    The client stalls (a long callback, a GC pause) while a fast server's
    replies reach its socket; when it resumes, the reactor runs the due
    timers before it reads, so eight requests time out with nothing read.
    The replies are there all the same: the connection is not closed.
    """
    p = pair(black_hole_after=5)
    clock = p.clock
    stalled = [p.client.request(b"x", timeout=0.05) for _ in range(8)]
    clock.advance(0)  # written
    p.pump.pump(advanceClock=False)  # answered: the replies are on their way
    clock.advance(0.1)  # the stall ends: timers first
    assert all(f.check(RequestTimeout) for f in outcomes(stalled))
    p.pump.pump(advanceClock=False)  # then the reads
    clock.advance(0)
    assert p.client.late_replies == 8
    assert not p.client.is_closed, p.client.close_reason
    assert black_holes(p) == 0
    # A peer that really is silent is still found, one turn later.
    p.client.request(b"!mute")
    p.flush()
    silent = [p.client.request(b"x", timeout=0.05) for _ in range(5)]
    clock.advance(0)
    clock.advance(0.1)
    assert not p.client.is_closed, "confirmed after the reads"
    p.flush()
    assert p.client.is_closed
    assert all(f.check(RequestTimeout) for f in outcomes(silent))
    assert black_holes(p) == 1


def test_a_pong_waiting_in_the_socket_after_a_client_stall_keeps_the_connection():
    """
    The heartbeat's ping is answered, but the client stalls past the
    heartbeat timeout before reading the pong: the pong is read before the
    verdict, and the connection stays.  A peer that really stopped
    answering is still closed.
    """
    p = pair(heartbeat_interval=1.0, heartbeat_timeout=1.0)
    clock = p.clock
    clock.advance(1.0)  # idle for the interval: a ping goes out
    p.pump.pump(advanceClock=False)  # the server answers it
    clock.advance(1.5)  # the stall ends past the heartbeat timeout
    assert p.client.close_reason is None, "confirmed after the reads"
    p.pump.pump(advanceClock=False)  # the pong is read
    clock.advance(0)
    p.flush()
    assert not p.client.is_closed, p.client.close_reason
    # Still watching: the next pings go unanswered, and it is closed.
    p.client.request(b"!mute").addErrback(lambda _: None)
    p.flush()
    for _ in range(40):
        clock.advance(0.1)
        p.flush()
    assert p.client.is_closed
    assert "heartbeat" in (p.client.close_reason or "")


def test_a_reply_waiting_in_the_socket_after_a_client_stall_beats_the_read_timeout():
    """
    With ``read_timeout``, a request's reply reaches the socket while the
    client stalls past the read timeout: it is read, the request succeeds.
    """
    p = pair(read_timeout=1.0)
    clock = p.clock
    d = p.client.request(b"!delay:0.5")
    clock.advance(0)
    p.pump.pump(advanceClock=False)  # the server has the request
    clock.advance(1.5)  # its reply is due at 0.5 s; the stall ends at 1.5 s
    p.pump.pump(advanceClock=False)  # the reply is read
    clock.advance(0)
    p.flush()
    assert outcomes([d]) == [b"!delay:0.5"]
    assert not p.client.is_closed, p.client.close_reason
