"""
Is the peer still there?  Read deadlines and heartbeats for one connection.

A peer can vanish without a FIN or RST (a black hole, a half-open
connection): TCP then says nothing for minutes.  Two settings catch it:

- ``read_timeout``: while requests are outstanding, nothing read for that
  long means the peer is dead or stuck.  It counts from when work starts,
  not from the last bytes read before an idle period.
- ``heartbeat_interval``: after that much silence a ping is sent; no byte
  within ``heartbeat_timeout`` means the peer is dead.

Any byte from the peer counts as a sign of life, so a busy connection sends
no pings.  One reactor timer serves both; the hot path only stores the time
of the last read.  A verdict of death waits one more reactor turn, which
reads first: after a stall of the client itself, the bytes that arrived
meanwhile are still signs of life.

A third check needs no timer of its own: :class:`BlackHoleCheck` looks at
the requests that time out (a peer that went silent under load, for codecs
without pings too), and holds the *slow-server rule*: a connection that is
reading from its peer is never a black hole.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["BlackHoleCheck", "Liveness"]

_SLACK = 1e-9


class Liveness:
    """
    The liveness timer of one connection.

    :param clock: time and timers.
    :param read_timeout: see the module docstring; ``None`` disables.
    :param heartbeat_interval: see the module docstring; ``None`` disables.
    :param heartbeat_timeout: seconds a ping may wait for any byte.
    :param outstanding: how many requests are outstanding now.
    :param send_ping: write a ping now.
    :param dead: the peer is dead; called with the reason, once.
    """

    __slots__ = (
        "_clock",
        "_dead",
        "_heartbeat_interval",
        "_heartbeat_timeout",
        "_outstanding",
        "_read_timeout",
        "_send_ping",
        "_timer",
        "last_read",
        "ping_sent_at",
    )

    def __init__(
        self,
        clock: IReactorTime,
        read_timeout: float | None,
        heartbeat_interval: float | None,
        heartbeat_timeout: float,
        outstanding: Callable[[], int],
        send_ping: Callable[[], object],
        dead: Callable[[str], object],
    ) -> None:
        self._clock = clock
        self._read_timeout = read_timeout
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout
        self._outstanding = outstanding
        self._send_ping = send_ping
        self._dead = dead
        self._timer: IDelayedCall | None = None
        #: when the peer last sent anything (or work started)
        self.last_read = 0.0
        #: when the unanswered ping was sent, else ``None``
        self.ping_sent_at: float | None = None

    @property
    def enabled(self) -> bool:
        return self._read_timeout is not None or self._heartbeat_interval is not None

    def start(self, now: float) -> None:
        """
        The connection is up: start watching.
        """
        self.last_read = now
        if self.enabled:
            self._arm(now)

    def stop(self) -> None:
        timer = self._timer
        if timer is not None:
            if timer.active():
                timer.cancel()
            self._timer = None

    def _arm(self, now: float) -> None:
        due = math.inf
        interval = self._heartbeat_interval
        if interval is not None:
            if self.ping_sent_at is None:
                due = self.last_read + interval
            else:
                due = self.ping_sent_at + self._heartbeat_timeout
        read_timeout = self._read_timeout
        if read_timeout is not None and self._outstanding():
            due = min(due, self.last_read + read_timeout)
        if due == math.inf:
            # Only a read timeout and nothing outstanding: check again after
            # one period, when work may have started.
            due = now + (read_timeout or 1.0)
        self._timer = self._clock.callLater(max(0.0, due - now), self._check)

    def _check(self) -> None:
        self._timer = None
        # Compared with the same sums _arm computed, and a timer may land a
        # rounding error short: without the slack it would re-arm for "now"
        # forever (a busy loop on a stepped clock).
        now = self._clock.seconds() + _SLACK
        read_timeout = self._read_timeout
        if (
            read_timeout is not None
            and self._outstanding()
            and now >= self.last_read + read_timeout
        ):
            self._confirm(
                f"read timeout: nothing received for {read_timeout:g} s with "
                f"{self._outstanding()} requests outstanding; the peer is dead "
                f"or stuck"
            )
            return
        if self._heartbeat_interval is not None:
            if self.ping_sent_at is not None:
                if now >= self.ping_sent_at + self._heartbeat_timeout:
                    self._confirm(
                        f"heartbeat timeout: no answer to a ping within "
                        f"{self._heartbeat_timeout:g} s; the peer is dead or "
                        f"the connection is half-open"
                    )
                    return
            elif now >= self.last_read + self._heartbeat_interval:
                self.ping_sent_at = now - _SLACK
                self._send_ping()
        self._arm(now - _SLACK)

    def _confirm(self, reason: str) -> None:
        # After a stall of the client (a long callback, a GC pause, a
        # laptop resumed from sleep) the reactor runs the timers that fell
        # due before it reads what arrived meanwhile: the verdict waits one
        # turn (a callLater(0) runs after the reads), and stands only if
        # nothing was read by then.
        seen = (self.last_read, self.ping_sent_at)
        self._timer = self._clock.callLater(0, self._confirmed, seen, reason)

    def _confirmed(self, seen: tuple[float, float | None], reason: str) -> None:
        self._timer = None
        # A read moves last_read and clears ping_sent_at.
        if (self.last_read, self.ping_sent_at) == seen:
            self._dead(reason)
        else:
            self._arm(self._clock.seconds())


class BlackHoleCheck:
    """
    Whether a connection whose requests time out is a black hole (the peer,
    or the path to it, went silent without closing), by the slow-server
    rule:

    The connection is closed when ``after`` written requests have timed
    out with nothing at all (no reply, late reply, error reply, pong, nor
    any other byte) read from the peer since the first of them was
    written, the silence has lasted at least the timeout of every written
    request still waiting on the connection (a request with a longer
    deadline is given its whole timeout: a blocking pop, a long query), and
    it outlasts one more turn of the reactor.

    So a slow server that answers late is not a black hole (its late
    replies are read), nor is a busy one on which some requests time out
    while others are answered; a peer that says nothing for longer than
    every timeout of the requests written to it is one.

    The last condition is for a client that stalled (a long callback, a
    garbage collection, a starved CPU): when it resumes, the reactor runs
    the timers that fell due before it reads what arrived meanwhile, so
    timeouts come first although the replies are already in the socket.
    The verdict is confirmed from a ``callLater(0)``, which the reactor
    runs after reading.

    The protocol reports each timed-out written request with
    :meth:`timed_out` while the engine settles a wake-up, then calls
    :meth:`wake_done`.  Reads cost nothing here: a row of silent timeouts
    ends when the connection's byte count moves.

    :param after: how many silent timeouts make a black hole; ``None``
        disables the check.
    :param liveness: the connection's :class:`Liveness` (its ``last_read``).
    :param clock: schedules the confirmation.
    :param bytes_read: every byte read on the connection so far.
    :param waiting: the timeouts of the written requests still waiting
        that have one (called only when the count is reached: O(n)).
    :param found: the connection is a black hole: called with the reason.
    """

    __slots__ = (
        "_after",
        "_bytes_read",
        "_clock",
        "_confirm",
        "_found",
        "_hold_until",
        "_liveness",
        "_row",
        "_row_bytes",
        "_silent",
        "_waiting",
        "timeouts",
    )

    def __init__(
        self,
        after: int | None,
        liveness: Liveness,
        clock: IReactorTime,
        bytes_read: Callable[[], int],
        waiting: Callable[[], Iterable[float]],
        found: Callable[[str], object],
    ) -> None:
        self._after = after
        self._liveness = liveness
        self._clock = clock
        self._bytes_read = bytes_read
        self._waiting = waiting
        self._found = found
        #: written requests timed out since the last :meth:`wake_done`
        self.timeouts = 0
        self._silent = 0
        self._row = 0
        self._row_bytes = -1
        self._hold_until = -math.inf
        self._confirm: IDelayedCall | None = None

    def timed_out(self, started: float) -> None:
        """
        A request written at ``started`` (a clock reading) timed out.
        """
        self.timeouts += 1
        if self._liveness.last_read <= started:
            self._silent += 1

    def wake_done(self, now: float) -> None:
        """
        A deadline wake-up is over: count its silent timeouts, and if they
        make a black hole, confirm it once the reactor has read.
        """
        silent, self._silent = self._silent, 0
        self.timeouts = 0
        if not silent or self._after is None:
            return
        bytes_read = self._bytes_read()
        if bytes_read != self._row_bytes:
            # Something was read since the row began: a new row.
            self._row_bytes = bytes_read
            self._row = 0
            self._hold_until = -math.inf
        self._row += silent
        if self._row < self._after or now < self._hold_until:
            return
        since = self._liveness.last_read
        longest = max(self._waiting(), default=0.0)
        if since + longest > now + _SLACK:
            self._hold_until = since + longest
            return
        if self._confirm is None:
            reason = (
                f"black hole: {self._row} written requests timed out and "
                f"nothing was read from the peer for {now - since:.3g} s, longer "
                f"than any waiting request's timeout; the peer or the path to "
                f"it went silent"
            )
            self._confirm = self._clock.callLater(
                0, self._confirmed, bytes_read, reason
            )

    def _confirmed(self, bytes_read: int, reason: str) -> None:
        self._confirm = None
        if self._bytes_read() == bytes_read:
            self._found(reason)
        # Otherwise the peer spoke meanwhile: the next silent timeout
        # starts a new row.

    def stop(self) -> None:
        """
        The connection ended: drop a pending confirmation.
        """
        confirm = self._confirm
        if confirm is not None:
            if confirm.active():
                confirm.cancel()
            self._confirm = None
