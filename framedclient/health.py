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

Outlier detection by success rate (Envoy's ``success_rate`` rule): each
host counts the outcomes of its written requests over a sliding window
(``success_rate_window``, 10 s).  When a host reports a failure (a timeout,
a lost request, or an error reply: the caller got no answer it could use),
the success rates of the hosts with at least ``success_rate_min_volume``
requests in the window are compared: if at least
``success_rate_min_hosts`` hosts have that volume and the host's rate is
below ``mean - success_rate_factor x stdev`` of them, it is ejected like a
host with consecutive failures (same windows, probe, cap).  This finds a
host that fails a share of its requests without ever failing
``failure_accrual`` in a row.

Latency (peak EWMA, for :class:`~framedclient.balance.PowerOfTwoChoices`):
each host keeps Finagle's and Linkerd's *peak EWMA* of its requests'
latencies.  A latency above the current estimate replaces it at once (the
peak: a host that turns slow is seen as slow on its first slow reply); a
lower one pulls it down as an exponentially weighted moving average whose
weight depends on the time since the last sample; and between samples the
estimate decays towards zero with time constant ``decay_time`` (2.5 s), so a
host that was slow is forgotten within seconds and gets a new trial.  The
estimate is kept as a *rank*, ``ln(cost) + t / decay_time`` (``t``: when it
was last updated): two hosts' estimates decayed to any common instant
compare as their ranks do, so a pick compares two numbers and needs neither
the clock nor ``exp``.  The rank also divides the estimate by the queue its
replies waited behind on their connection (``queued``), which the pick
multiplies back by the connection's own ``in flight + 1``: a pipelined
connection's latency already holds its queue (see :meth:`HostHealth.settled`).

Costs on the hot path: each settled request updates its host's estimate
and counts (an ``exp`` and a few additions); the success rates are compared
only when a host reports a failure; the pool rebuilds its list of eligible
connections only when a host changes state.
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
    "COLD",
    "DECAY_TIME",
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

#: The rank of a host with no latency estimate yet (a cold host): it wins
#: every comparison while it has no request out, so each new host gets a
#: fair trial at once.
COLD = -math.inf

#: The longest an ejection window grows to (unless ``ejection_time`` is
#: longer): a host that stays broken is still probed every minute.
MAX_EJECTION = 60.0

#: How long a host's latency estimate takes to forget by a factor e, in
#: seconds: a 200 ms spell falls to a 1 ms host's level in about 13 s.
DECAY_TIME = 2.5

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
    :ivar cost: the peak-EWMA latency estimate in seconds as of
        :attr:`stamp` (0: no sample yet); see :meth:`latency`.
    :ivar queued: the requests that were out on a connection beside each
        sample, averaged like :attr:`cost`: the queue its latency includes.
    :ivar rank: ``ln(cost / (queued + 1)) + stamp / decay_time``
        (:data:`COLD` without a sample): what a pick compares, with the
        connection's own ``ln(in flight + 1)`` added.
    """

    __slots__ = (
        "_before",
        "_board",
        "_bucket_end",
        "_now",
        "_pending",
        "_revived_at",
        "_streak",
        "_timer",
        "cost",
        "ejected_until",
        "ejections",
        "failures",
        "name",
        "queued",
        "rank",
        "stamp",
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
        self.cost = 0.0
        self.stamp = 0.0
        self.queued = 0.0
        self.rank = COLD
        # Outcomes [ok, failed] in the current half window and the one
        # before it; the current one ends at _bucket_end.
        self._now = [0, 0]
        self._before = [0, 0]
        self._bucket_end = -math.inf
        # Failures on record that could not be judged yet (too few requests
        # here or too few hosts with enough): judge again at each outcome.
        self._pending = False
        # Ejections in a row before the last revival, and when it was: an
        # ejection soon after a revival continues the streak (see _eject).
        self._streak = 0
        self._revived_at = -math.inf

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

    def latency(self, now: float) -> float:
        """
        The latency estimate decayed to ``now``, in seconds (0 before the
        first sample).
        """
        return self.cost * math.exp(-(now - self.stamp) / self._board.decay_time)

    def waiting_rank(self, since: float) -> float:
        """
        The rank of a latency of ``now - since`` measured now: what a
        connection that has read nothing since ``since`` while requests are
        out costs at least (so a host that stopped answering does not look
        cheaper as its estimate decays).
        """
        now = self._board.clock.seconds()
        waited = now - since
        if waited <= 0.0:
            return COLD
        return math.log(waited) + now / self._board.decay_time

    def waited(self, latency: float, now: float) -> None:
        """
        A written request to this host was given up after ``latency``
        seconds without an answer (cancelled: a hedge won, the caller
        stopped waiting): its latency is at least that, so it raises the
        estimate when higher (the peak) and is no sample otherwise, nor an
        outcome for the success rate.
        """
        tau = self._board.decay_time
        if latency > self.cost * math.exp(-(now - self.stamp) / tau):
            self.cost = latency
            self.stamp = now
            self.rank = math.log(latency) - math.log1p(self.queued) + now / tau

    def settled(self, latency: float, ok: bool, now: float, load: int = 0) -> None:
        """
        A written request to this host ended after ``latency`` seconds, at
        ``now``: answered (``ok``), or failed (timed out, lost, or answered
        with an error).  Feeds the latency estimate and the success rate,
        and may eject the host by the success-rate rule.

        ``load``: the other requests still out on its connection when it
        ended.  A pipelined connection's reply waited behind about that
        many, so its latency holds that queue; the pick multiplies the
        estimate by ``in flight + 1``, so the rank divides it by the
        queue the samples held (:attr:`queued`), or the queue would count
        twice: 64 callers keep 8 requests on each connection to a fast
        host, whose latency peaks at 10 ms on a busy machine, and an idle
        host 50 ms slow would look cheaper than any of them (50 < 10 x 9).
        """
        board = self._board
        if now != self.stamp or latency > self.cost:
            # (Skipped for a reply no slower than the estimate and read at
            # the instant it was last updated, as the other replies of one
            # read are: the weight of no time is 1, so the estimate would
            # stay as it is, and the exp and log are the dearest part of a
            # reply's bookkeeping.)
            tau = board.decay_time
            td = now - self.stamp
            w = math.exp(-td / tau) if td > 0.0 else 1.0
            current = self.cost * w
            if latency > current:
                # The peak: a slow reply counts in full at once.
                cost = latency
            else:
                cost = current * w + latency * (1.0 - w)
            # The queue is averaged, peaks or not: a stall that slows the
            # replies of a busy connection is no reason to forget what
            # they usually wait behind.  (The first sample sets it.)
            queued = self.queued * w + load * (1.0 - w) if self.cost else float(load)
            self.queued = queued
            if cost > 0.0:
                self.cost = cost
                self.stamp = now
                self.rank = math.log(cost) - math.log1p(queued) + now / tau
        if now >= self._bucket_end:
            self._rotate(now)
        if ok:
            self._now[0] += 1
            if self._pending and self.state == LIVE:
                # Failures came before the volume did (here or on enough
                # other hosts): judge again.
                self._judge(now)
        else:
            self._now[1] += 1
            if self.state == LIVE and board.success_rate_factor is not None:
                self._judge(now)

    def success_rate(self, now: float) -> tuple[float, int] | None:
        """
        The share of requests answered over the window, and their number
        (``None`` when there were none).
        """
        if now >= self._bucket_end:
            self._rotate(now)
        ok = self._now[0] + self._before[0]
        total = ok + self._now[1] + self._before[1]
        return (ok / total, total) if total else None

    def _rotate(self, now: float) -> None:
        half = self._board.success_rate_window / 2
        if now >= self._bucket_end + half:
            self._before = [0, 0]
        else:
            self._before = self._now
        self._now = [0, 0]
        self._bucket_end = now + half

    def _judge(self, now: float) -> None:
        board = self._board
        volume = board.success_rate_min_volume
        rates: list[float] = []
        mine: float | None = None
        for h in board.hosts:
            found = h.success_rate(now)
            if found is not None and found[1] >= volume:
                rates.append(found[0])
                if h is self:
                    mine = found[0]
        # Inconclusive for want of volume while failures are on record:
        # judged again at the next outcome (until they leave the window).
        short = mine is None or len(rates) < board.success_rate_min_hosts
        self._pending = short and bool(self._now[1] + self._before[1])
        if short or mine is None:
            return
        mean = sum(rates) / len(rates)
        stdev = math.sqrt(sum((r - mean) ** 2 for r in rates) / len(rates))
        assert board.success_rate_factor is not None
        threshold = mean - board.success_rate_factor * stdev
        if mine < threshold and board.may_eject():
            self._eject(
                f"its success rate {mine:.1%} over the last "
                f"{board.success_rate_window:g} s is below the threshold "
                f"{threshold:.1%} (mean {mean:.1%} of {len(rates)} hosts)"
            )

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
            self._streak = self.ejections
            self._revived_at = self._board.clock.seconds()
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
            self._eject(f"{self.failures} consecutive failures")
        elif (
            board.failure_accrual is not None
            and self.failures >= board.failure_accrual
            and board.may_eject()
        ):
            self._eject(f"{self.failures} consecutive failures")

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

    def _eject(self, why: str) -> None:
        board = self._board
        now = board.clock.seconds()
        if self.state == LIVE and self._streak:
            # Ejected again soon after a revival (a host that fails a share
            # of its requests answers some probes): the streak goes on,
            # less one for each ejection window it stayed in use, so such a
            # host is out for longer each time, as Envoy does.
            kept = self._streak - int((now - self._revived_at) / board.ejection_time)
            self.ejections = max(0, kept)
            self._streak = 0
        self.ejections += 1
        self.total_ejections += 1
        window = board.window(self.ejections)
        self.ejected_until = now + window
        self._cancel_timer()
        self._timer = board.clock.callLater(window, self._window_over)
        _log.warn(
            "Host {name} ejected for {window:.1f} s: {why} (ejection "
            "{ejections} in a row); requests go to the other hosts",
            name=self.name,
            window=window,
            why=why,
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
        never ejects, by this rule or by success rate (hosts are still
        tracked, for the status page and the pick's latency estimates).
    :param ejection_time: the first ejection window, in seconds; each
        ejection in a row lasts 1.6 times longer, up to
        :data:`MAX_EJECTION` (or ``ejection_time`` if longer), each
        jittered by ±20 %.
    :param max_ejected_share: the most hosts ejected at once, as a share of
        all hosts (rounded down); never all of them.
    :param random: ``[0, 1)`` floats for the jitter (inject a constant in
        tests).
    :param decay_time: the time constant, in seconds, with which a host's
        latency estimate forgets (see the module docstring).
    :param success_rate_factor: a host whose success rate is below the
        hosts' mean less this many standard deviations is ejected (Envoy's
        ``success_rate_stdev_factor``, 1900, is 1.9 here); ``None``: no
        ejection by success rate.
    :param success_rate_window: seconds of outcomes a success rate covers.
    :param success_rate_min_volume: requests a host needs in the window for
        its success rate to count.
    :param success_rate_min_hosts: hosts with that volume needed before any
        is judged (fewer say nothing about what is normal).
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        failure_accrual: int | None = 5,
        ejection_time: float = 5.0,
        max_ejected_share: float = 0.5,
        random: Callable[[], float] = _random.random,
        decay_time: float = DECAY_TIME,
        success_rate_factor: float | None = 1.9,
        success_rate_window: float = 10.0,
        success_rate_min_volume: int = 2,
        success_rate_min_hosts: int = 5,
    ) -> None:
        for label, value in (
            ("decay_time", decay_time),
            ("success_rate_window", success_rate_window),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (value > 0 and math.isfinite(value))
            ):
                raise ValueError(
                    f"{label} must be a finite number of seconds > 0, got {value!r}"
                )
        if success_rate_factor is not None and (
            isinstance(success_rate_factor, bool)
            or not isinstance(success_rate_factor, (int, float))
            or not (success_rate_factor >= 0 and math.isfinite(success_rate_factor))
        ):
            raise ValueError(
                f"success_rate_factor must be a finite number >= 0 or None, got "
                f"{success_rate_factor!r}"
            )
        for label, count in (
            ("success_rate_min_volume", success_rate_min_volume),
            ("success_rate_min_hosts", success_rate_min_hosts),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"{label} must be an integer >= 1, got {count!r}")
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
        self.decay_time = float(decay_time)
        # failure_accrual=None means "never eject" (the setting's promise):
        # by this rule either.
        self.success_rate_factor = (
            None
            if success_rate_factor is None or failure_accrual is None
            else float(success_rate_factor)
        )
        self.success_rate_window = float(success_rate_window)
        self.success_rate_min_volume = success_rate_min_volume
        self.success_rate_min_hosts = success_rate_min_hosts
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
