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
of the last read.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["Liveness"]

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
            self._dead(
                f"read timeout: nothing received for {read_timeout:g} s with "
                f"{self._outstanding()} requests outstanding; the peer is dead "
                f"or stuck"
            )
            return
        if self._heartbeat_interval is not None:
            if self.ping_sent_at is not None:
                if now >= self.ping_sent_at + self._heartbeat_timeout:
                    self._dead(
                        f"heartbeat timeout: no answer to a ping within "
                        f"{self._heartbeat_timeout:g} s; the peer is dead or "
                        f"the connection is half-open"
                    )
                    return
            elif now >= self.last_read + self._heartbeat_interval:
                self.ping_sent_at = now - _SLACK
                self._send_ping()
        self._arm(now - _SLACK)
