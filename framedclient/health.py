"""
Host health: which upstream hosts may take requests.

A connection heals itself (:mod:`framedclient.connection`), but it cannot
tell a host that accepts connections and then fails or swallows the requests
sent to it: every new connection to that host would be "ready" again.  So
each upstream endpoint (a *host*) has a :class:`HostHealth`, fed by its
connections with the outcomes the server is responsible for, and the pool
gives requests only to connections of *eligible* hosts.

Failure accrual (Finagle's ``FailureAccrualFactory``, Envoy's consecutive
errors): ``failure_accrual`` consecutive failures (requests that timed out
after being written, connections lost or found dead) eject the host for a
backoff window (``ejection_time``, growing on each ejection in a row, with
jitter so that a fleet of clients does not probe in step).  When the window
ends the host is *probing*: the next request picked for it is the probe,
and no other reaches it until the probe's outcome is known.  Any answer from
the server revives the host; another failure ejects it again for longer.

The ejected share is capped (``max_ejected_share``, and never every host):
past the cap a failing host stays in use.  Hosts are ejected first come,
first served, so when every host fails the ones kept are those that took
longest to fail: a client never ejects itself into refusing all work, and
a fleet-wide fault (a bad deploy, a network partition) shows up as errors,
not as an empty pool.

Costs on the hot path: a connection tells its host about a success only
while the host has failures on record (one integer test per reply), and the
pool rebuilds its list of eligible connections only when a host changes
state.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from framedclient.backoff import ExponentialBackoff

__all__ = [
    "EJECTED",
    "LIVE",
    "PROBE_SENT",
    "PROBING",
    "STATES",
    "HealthBoard",
    "HostHealth",
]

_log = Logger()

#: Takes requests.
LIVE = "live"
#: Takes none until its window ends.
EJECTED = "ejected"
#: Window over: the next request picked for it is the probe.
PROBING = "probing"
#: The probe is out: no other request until its outcome is known.
PROBE_SENT = "probe_sent"

#: Every state, in the order the status page and ``/metrics`` list them.
STATES: tuple[str, ...] = (LIVE, EJECTED, PROBING, PROBE_SENT)

#: The longest an ejection window grows to (unless ``ejection_time`` is
#: longer): a host that stays broken is still probed every minute.
MAX_EJECTION = 60.0

HealthListener = Callable[["HostHealth"], object]


class HostHealth:
    """
    The health of one upstream host; made by :meth:`HealthBoard.host`.

    Its connections call :meth:`succeeded` (only while :attr:`failures` is
    non-zero) and :meth:`failed`; the pool calls :meth:`probe_sent` when it
    hands a probing host a request.

    :ivar name: the host's label (``upstream0``, the endpoint string).
    :ivar state: :data:`LIVE`, :data:`EJECTED`, :data:`PROBING` or
        :data:`PROBE_SENT`.
    :ivar failures: consecutive failures on record (reset by any answer
        from the server while the host is in use).
    :ivar ejections: ejections in a row (reset when the host revives);
        sets the length of the next window.
    :ivar total_ejections: every ejection so far.
    :ivar total_probes: every probe sent so far (a request handed to the
        host when its window ended, to learn whether it is back).
    :ivar ejected_until: when the current window ends (``-inf`` unless
        ejected).
    """

    __slots__ = (
        "_board",
        "_timer",
        "ejected_until",
        "ejections",
        "failures",
        "name",
        "state",
        "total_ejections",
        "total_probes",
    )

    def __init__(self, name: str, board: HealthBoard) -> None:
        self.name = name
        self._board = board
        self.state = LIVE
        self.failures = 0
        self.ejections = 0
        self.total_ejections = 0
        self.total_probes = 0
        self.ejected_until = -math.inf
        self._timer: IDelayedCall | None = None

    def __repr__(self) -> str:
        return f"<HostHealth {self.name} {self.state} failures={self.failures}>"

    @property
    def eligible(self) -> bool:
        """
        Whether the pool may pick this host's connections now.
        """
        return self.state == LIVE or self.state == PROBING

    @property
    def out(self) -> bool:
        """
        Ejected and not yet revived (ejected, probing or probe out): what
        the ejected share counts.
        """
        return self.state != LIVE

    def succeeded(self) -> None:
        """
        The server answered a request (a reply or an error reply: it is
        there and working).
        """
        state = self.state
        if state == EJECTED:
            # The late answer of a request sent before the ejection: the
            # window still runs; the probe decides.
            return
        self.failures = 0
        if state != LIVE:
            self.ejections = 0
            self._cancel_timer()
            self._set(LIVE)
            _log.info("Host {name} answered its probe: back in use", name=self.name)

    def failed(self) -> None:
        """
        A failure the server is responsible for: a written request timed
        out, a connection was lost or found dead.
        """
        state = self.state
        if state == EJECTED:
            return
        self.failures += 1
        board = self._board
        if state != LIVE:
            # The probe (or a request still out from before) failed: the
            # host was already counted as ejected.
            self._eject()
        elif (
            board.failure_accrual is not None
            and self.failures >= board.failure_accrual
            and board.may_eject()
        ):
            self._eject()

    def probe_sent(self) -> None:
        """
        The pool picked this probing host for a request: that request is
        the probe.  Should its outcome never be reported (cancelled, say),
        the host is probed again after ``ejection_time``.
        """
        if self.state != PROBING:
            return
        board = self._board
        self.total_probes += 1
        self._cancel_timer()
        self._timer = board.clock.callLater(board.ejection_time, self._probe_lapsed)
        self._set(PROBE_SENT)

    def stop(self) -> None:
        """
        Cancel the timer (the client is closed).
        """
        self._cancel_timer()

    def debug_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "failures": self.failures,
            "ejections": self.total_ejections,
            "probes": self.total_probes,
            "ejected_for": max(0.0, self.ejected_until - self._board.clock.seconds())
            if self.state == EJECTED
            else None,
        }

    # -- transitions ----------------------------------------------------------

    def _eject(self) -> None:
        board = self._board
        self.ejections += 1
        self.total_ejections += 1
        window = board.window(self.ejections)
        now = board.clock.seconds()
        self.ejected_until = now + window
        self._cancel_timer()
        self._timer = board.clock.callLater(window, self._window_over)
        _log.warn(
            "Host {name} ejected for {window:.1f} s after {failures} consecutive "
            "failures (ejection {ejections} in a row); requests go to the other "
            "hosts",
            name=self.name,
            window=window,
            failures=self.failures,
            ejections=self.ejections,
        )
        self._set(EJECTED)

    def _window_over(self) -> None:
        self._timer = None
        self.ejected_until = -math.inf
        self._set(PROBING)

    def _probe_lapsed(self) -> None:
        self._timer = None
        if self.state == PROBE_SENT:
            self._set(PROBING)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._board.changed(self)


def _check_share(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"max_ejected_share must be a number, got {value!r}")
    if not 0 <= value <= 1:
        raise ValueError(f"max_ejected_share must be within 0..1, got {value!r}")
    return float(value)


class HealthBoard:
    """
    The hosts of one client, and the rules they share.

    :param clock: time and timers.
    :param failure_accrual: consecutive failures that eject a host; ``None``
        never ejects (hosts are still tracked, for the status page).
    :param ejection_time: the first ejection window, in seconds; each
        ejection in a row lasts 1.6 times longer, up to
        :data:`MAX_EJECTION` (or ``ejection_time`` if longer), each
        jittered by ±20 %.
    :param max_ejected_share: the most hosts ejected at once, as a share of
        all hosts (rounded down); never all of them.
    :param random: ``[0, 1)`` floats for the jitter (inject a constant in
        tests).
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        failure_accrual: int | None = 5,
        ejection_time: float = 5.0,
        max_ejected_share: float = 0.5,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if failure_accrual is not None and (
            isinstance(failure_accrual, bool)
            or not isinstance(failure_accrual, int)
            or failure_accrual < 1
        ):
            raise ValueError(
                f"failure_accrual must be an integer >= 1 or None, got "
                f"{failure_accrual!r}"
            )
        if not (ejection_time > 0 and math.isfinite(ejection_time)):
            raise ValueError(
                f"ejection_time must be a finite number of seconds > 0, got "
                f"{ejection_time!r}"
            )
        self.clock = clock
        self.failure_accrual = failure_accrual
        self.ejection_time = float(ejection_time)
        self.max_ejected_share = _check_share(max_ejected_share)
        self._windows = ExponentialBackoff(
            initial=self.ejection_time,
            multiplier=1.6,
            jitter=0.2,
            max_delay=max(self.ejection_time, MAX_EJECTION),
            random=random,
        )
        self.hosts: list[HostHealth] = []
        self._listeners: list[HealthListener] = []

    def host(self, name: str) -> HostHealth:
        """
        The host called ``name``: the one on the board, or a new one.
        """
        for h in self.hosts:
            if h.name == name:
                return h
        h = HostHealth(name, self)
        self.hosts.append(h)
        return h

    def retain(self, in_use: set[HostHealth]) -> None:
        """
        The hosts in use now (hosts join and leave as discovery says):
        the others leave the board, so the ejected share counts only hosts
        in use.
        """
        gone = [h for h in self.hosts if h not in in_use]
        if gone:
            for h in gone:
                h.stop()
            self.hosts = [h for h in self.hosts if h in in_use]

    def add_listener(self, listener: HealthListener) -> None:
        """
        Call ``listener(host)`` whenever a host changes state.
        """
        self._listeners.append(listener)

    @property
    def max_ejected(self) -> int:
        """
        How many hosts may be out at once.
        """
        n = len(self.hosts)
        return max(0, min(math.floor(self.max_ejected_share * n + 1e-9), n - 1))

    @property
    def ejected(self) -> int:
        """
        Hosts out now (ejected, probing or with a probe out).
        """
        return sum(1 for h in self.hosts if h.out)

    def may_eject(self) -> bool:
        """
        Whether one more host may be ejected without passing the cap.
        """
        return self.ejected < self.max_ejected

    def window(self, ejections: int) -> float:
        """
        The length of ejection number ``ejections`` in a row.
        """
        return self._windows.delay(ejections)

    def changed(self, host: HostHealth) -> None:
        for listener in list(self._listeners):
            try:
                listener(host)
            except Exception:
                _log.failure("health listener {listener!r} failed", listener=listener)

    def stop(self) -> None:
        for h in self.hosts:
            h.stop()

    def debug_state(self) -> list[dict[str, Any]]:
        return [h.debug_state() for h in self.hosts]
