"""
A fault-injecting TCP proxy for tests and soaks.

:class:`FaultProxy` listens on loopback, connects every accepted client to an
upstream server and forwards bytes both ways, misbehaving on purpose in the
ways real networks and servers do: it cuts connections in the middle of a
frame, delays and reorders nothing (TCP never reorders), splits writes into
single bytes, merges many writes into one, corrupts an fc1 length header,
goes silent without closing (a half-open connection), refuses new
connections for a while, and throttles bandwidth.

Which faults happen, where and when is decided by a :class:`FaultSchedule`:
a set of probabilities and ranges plus a **seed**.  Every decision comes from
a ``random.Random`` derived from the seed, the connection's number and the
direction of the bytes, so the same seed and the same traffic give the same
faults, and a failure found by a soak can be replayed.  Tests can also
trigger any fault on demand (:meth:`FaultProxy.cut_all`,
:meth:`FaultProxy.silence_all`, :meth:`FaultProxy.refuse_new`,
:meth:`ProxiedConnection.corrupt_next_header`, ...).

Why a real TCP proxy and not only in-memory transports: the client's
behaviour under faults depends on how the reactor, the kernel's socket
buffers and Twisted's transports interact (reads that carry half a frame,
backpressure when a buffer fills, resets), and only real sockets show that.

Bounds, because a test tool must not become the leak it is hunting:

- each direction of each connection holds at most ``max_buffer`` bytes
  (plus the one read that crossed the limit: 64 KiB with Twisted's TCP
  transport) in its delay/merge/throttle queue; past that the proxy stops
  reading from the sender, so the kernel's buffers and then the sender's own
  write buffer fill up, as they would behind a slow network;
- while the receiver's transport buffer is full (Twisted asks its producer
  to pause), nothing more is written to it and the sender is not read;
- a connection whose peer closed is torn down within ``close_grace``
  seconds even if the proxy still holds bytes for the other side.

Every timer runs on the injected clock (the reactor by default), and
:meth:`FaultProxy.stop` closes the listener and every proxied connection and
fires when they are all gone, so tests end with a clean reactor.
"""

from __future__ import annotations

import math
import random
import struct
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    serverFromString,
)
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "CORRUPT_LENGTH",
    "CUT",
    "DELAY",
    "FAULT_KINDS",
    "MERGE",
    "REFUSE",
    "SILENCE",
    "SPLIT",
    "THROTTLE",
    "TO_CLIENT",
    "TO_SERVER",
    "ChunkFaults",
    "ConnectionPlan",
    "Direction",
    "FaultProxy",
    "FaultSchedule",
    "Flow",
    "FlowFaults",
    "ProxiedConnection",
]

_log = Logger()

#: Which way bytes travel through the proxy.
Direction = Literal["to_server", "to_client"]
TO_SERVER: Direction = "to_server"
TO_CLIENT: Direction = "to_client"

# Fault kinds: the keys of FaultProxy.faults.
CUT = "cut"
DELAY = "delay"
SPLIT = "split"
MERGE = "merge"
CORRUPT_LENGTH = "corrupt_length"
SILENCE = "silence"
REFUSE = "refuse"
THROTTLE = "throttle"
#: Every key :attr:`FaultProxy.faults` may hold.
FAULT_KINDS = (CUT, DELAY, SPLIT, MERGE, CORRUPT_LENGTH, SILENCE, REFUSE, THROTTLE)

_U32 = struct.Struct(">I")
_MiB = 1024 * 1024
# A throttled direction writes at most this many seconds' worth of bytes at
# once, so the rate holds within a large chunk and not only across chunks.
_THROTTLE_TICK = 0.02

FloatRange = tuple[float, float]
IntRange = tuple[int, int]


def _float_range(name: str, value: float | FloatRange) -> FloatRange:
    low, high = (value, value) if isinstance(value, (int, float)) else value
    if not 0 <= low <= high:
        raise ValueError(
            f"{name} must be a number >= 0 or a (low, high) range, got {value!r}"
        )
    return float(low), float(high)


def _int_range(name: str, value: int | IntRange) -> IntRange:
    low, high = (value, value) if isinstance(value, int) else value
    if not 0 <= low <= high:
        raise ValueError(
            f"{name} must be an int >= 0 or a (low, high) range, got {value!r}"
        )
    return int(low), int(high)


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{name} is a probability and must be in [0, 1], got {value!r}"
        )


def _pick(low: float, high: float, r: float) -> float:
    return low + (high - low) * r


@dataclass(frozen=True, slots=True)
class ConnectionPlan:
    """
    The faults decided for one connection when it is accepted.

    :ivar index: the connection's number (0 for the first connection the
        proxy accepted, refused ones included).
    :ivar refuse: the connection is refused, and a refusal period of
        ``refuse_for`` seconds starts with it.
    :ivar cut_after: the connection is cut once this many bytes have been
        passed on in direction ``cut_in`` (moved one byte later if it falls
        on an fc1 frame boundary, so the cut is always inside a frame);
        ``None``: never cut.
    :ivar silence_at: seconds after the upstream connection is made at which
        the connection goes silent; ``None``: never.
    :ivar silence_for: how long the silence lasts; ``math.inf``: until
        :meth:`ProxiedConnection.resume`.
    """

    index: int
    refuse: bool
    refuse_for: float
    cut_after: int | None
    cut_in: Direction | None
    silence_at: float | None
    silence_for: float


@dataclass(frozen=True, slots=True)
class ChunkFaults:
    """
    The faults decided for one chunk (one read from the sending side).

    :ivar delay: seconds to hold the chunk before it may be written (order
        within the direction is kept: a chunk never overtakes an earlier one).
    :ivar split_seed: when not ``None``, the chunk is written in pieces of
        1..``split_max`` bytes, one piece per reactor turn; the sizes come
        from ``random.Random(split_seed)``.
    :ivar merge: the chunk opens a merge window: it and every chunk that
        follows within ``merge_window`` seconds (up to ``merge_bytes``) are
        written as one.
    """

    delay: float
    split_seed: int | None
    merge: bool


_NO_CHUNK_FAULTS = ChunkFaults(0.0, None, False)


class FlowFaults:
    """
    The stream of per-chunk and per-frame decisions for one direction of one
    connection.

    Chunk decisions and frame-header decisions come from two separate
    generators, so whether a given frame's header is corrupted depends only
    on the frame's position in the stream, not on how TCP happened to cut
    the stream into reads.  Every decision consumes the same number of
    random draws whatever the probabilities, so turning one fault up or down
    leaves the other faults' decisions for a seed unchanged.
    """

    __slots__ = ("_chunks", "_frames", "_schedule", "active")

    def __init__(
        self, schedule: FaultSchedule, index: int, direction: Direction
    ) -> None:
        self._schedule = schedule
        prefix = f"framedclient.faultproxy/{schedule.seed}/{index}/{direction}"
        # String seeds are hashed with SHA-512 by random.Random: stable across
        # runs and Python versions, unlike hash().
        self._chunks = random.Random(prefix + "/chunks")
        self._frames = random.Random(prefix + "/frames")
        #: Whether any per-chunk fault can happen (lets the proxy skip the
        #: decision entirely on the fault-free fast path).
        self.active = (
            schedule.delay is not None or schedule.split > 0 or schedule.merge > 0
        )

    def chunk(self, size: int) -> ChunkFaults:
        """
        Decide the faults for the next chunk of ``size`` bytes.
        """
        rng = self._chunks
        r_delay = rng.random()
        r_split = rng.random()
        split_seed = rng.getrandbits(32)
        r_merge = rng.random()
        schedule = self._schedule
        delay = 0.0
        if schedule.delay is not None:
            base, jitter = schedule.delay_pair
            delay = base + jitter * r_delay
        merge = r_merge < schedule.merge
        # A merged chunk is not also split: the two would cancel out.
        split = not merge and size > 1 and r_split < schedule.split
        if not (delay or merge or split):
            return _NO_CHUNK_FAULTS
        return ChunkFaults(delay, split_seed if split else None, merge)

    def corrupt_header(self) -> bool:
        """
        Decide whether the next fc1 frame header (server to client) is
        overwritten with :attr:`FaultSchedule.corrupt_value`.
        """
        return self._frames.random() < self._schedule.corrupt_length


@dataclass(frozen=True, slots=True)
class FaultSchedule:
    """
    What a :class:`FaultProxy` does wrong, and how often.

    All defaults are "no fault", so ``FaultSchedule()`` is a transparent
    proxy and a test names only the faults it is about::

        FaultSchedule(seed=1, cut=0.02, split=0.1, merge=0.1,
                      delay=(0.0, 0.002), corrupt_length=0.005,
                      silence=0.01, refuse=0.01, refuse_for=0.2)

    Ranges are ``(low, high)`` tuples (a single number means a fixed
    value); a value is drawn uniformly from the range for each decision.

    **Per connection** (decided when the connection is accepted, see
    :meth:`plan`):

    :param cut: probability that the connection is cut: after ``cut_after``
        bytes have been passed on in one direction (``cut_in``; ``"either"``
        picks one at random), both sides are closed, so the receiver sees a
        partial frame followed by end-of-stream.
    :param cut_after: the byte offset range for ``cut``.
    :param cut_in: ``"to_server"``, ``"to_client"`` or ``"either"``.
    :param silence: probability that the connection goes silent (half-open):
        ``silence_after`` seconds after it is established the proxy stops
        reading and forwarding in both directions, without closing anything,
        for ``silence_for`` seconds (``None``: forever).  Bytes held or
        buffered by the kernel meanwhile are delivered when it ends, as TCP
        retransmission would after a partition heals.
    :param silence_after: when silence starts, in seconds after connecting.
    :param silence_for: how long it lasts; ``None`` means until
        :meth:`FaultProxy.resume`.
    :param refuse: probability that a new connection is refused (closed
        with a reset as soon as it is accepted) and starts a refusal period
        of ``refuse_for`` seconds during which every new connection is
        refused too: a server that is down or restarting.
    :param refuse_for: length of a refusal period in seconds.

    **Per chunk** (each read from one side, see :meth:`flow_faults`):

    :param delay: ``(base, jitter)``: every chunk is held for ``base +
        uniform(0, jitter)`` seconds before it is passed on; order within a
        direction is kept.  A single number is a fixed delay.
    :param split: probability that a chunk is written in pieces of 1 to
        ``split_max`` bytes, one piece per reactor turn, so the receiver
        reads frames in fragments.
    :param split_max: the largest piece of a split chunk.
    :param merge: probability that a chunk opens a merge window: it and the
        chunks after it are held for up to ``merge_window`` seconds (or until
        ``merge_bytes`` are held) and written as one, so the receiver reads
        many frames at once.
    :param merge_window: seconds a merge window stays open.
    :param merge_bytes: bytes that close a merge window early.

    **Per frame** (fc1 frames from the server):

    :param corrupt_length: probability that a frame's 4-byte length header
        is overwritten with ``corrupt_value`` on its way to the client.  The
        proxy follows the fc1 frame boundaries (u32 big-endian length
        prefix) of the server's stream, so exactly a header is hit, however
        the stream was cut into reads.
    :param corrupt_value: the length written; the default (4 GiB - 1) is
        far above any sane ``max_frame``, so the client must reject it
        without allocating it.

    **Per direction**:

    :param throttle: bandwidth limit in bytes per second, applied to each
        direction of each connection; ``None``: unlimited.
    :param max_buffer: most bytes one direction holds (delayed, merged,
        throttled) before the proxy stops reading from the sender.

    :param seed: seeds every decision; the same seed and the same traffic
        give the same faults.
    """

    seed: int = 0
    cut: float = 0.0
    cut_after: int | IntRange = (1, 4096)
    cut_in: Direction | Literal["either"] = "either"
    silence: float = 0.0
    silence_after: float | FloatRange = (0.0, 1.0)
    silence_for: float | FloatRange | None = None
    refuse: float = 0.0
    refuse_for: float | FloatRange = (0.05, 0.5)
    delay: float | FloatRange | None = None
    split: float = 0.0
    split_max: int = 1
    merge: float = 0.0
    merge_window: float = 0.005
    merge_bytes: int = 64 * 1024
    corrupt_length: float = 0.0
    corrupt_value: int = 0xFFFF_FFFF
    throttle: float | None = None
    max_buffer: int = _MiB

    def __post_init__(self) -> None:
        for name in ("cut", "silence", "refuse", "split", "merge", "corrupt_length"):
            _check_probability(name, getattr(self, name))
        # Normalise ranges once, so decisions only ever see (low, high).
        set_ = object.__setattr__
        set_(self, "cut_after", _int_range("cut_after", self.cut_after))
        set_(self, "silence_after", _float_range("silence_after", self.silence_after))
        if self.silence_for is not None:
            low, high = _float_range("silence_for", self.silence_for)
            if low <= 0:
                raise ValueError(
                    f"silence_for must be positive (None for 'forever'), "
                    f"got {self.silence_for!r}"
                )
            set_(self, "silence_for", (low, high))
        set_(self, "refuse_for", _float_range("refuse_for", self.refuse_for))
        if self.delay is not None:
            # For delay a pair means (base, jitter), not (low, high).
            base, jitter = (
                (self.delay, 0.0)
                if isinstance(self.delay, (int, float))
                else self.delay
            )
            if base < 0 or jitter < 0:
                raise ValueError(
                    f"delay must be seconds >= 0 or (base, jitter) >= 0, "
                    f"got {self.delay!r}"
                )
            set_(self, "delay", (float(base), float(jitter)))
        if self.cut_in not in (TO_SERVER, TO_CLIENT, "either"):
            raise ValueError(
                f"cut_in must be 'to_server', 'to_client' or 'either', "
                f"got {self.cut_in!r}"
            )
        if not isinstance(self.split_max, int) or self.split_max < 1:
            raise ValueError(f"split_max must be an int >= 1, got {self.split_max!r}")
        if not self.merge_window > 0:
            raise ValueError(
                f"merge_window must be positive seconds, got {self.merge_window!r}"
            )
        if not isinstance(self.merge_bytes, int) or self.merge_bytes < 1:
            raise ValueError(
                f"merge_bytes must be an int >= 1, got {self.merge_bytes!r}"
            )
        if not 0 <= self.corrupt_value <= 0xFFFF_FFFF:
            raise ValueError(
                f"corrupt_value must fit the u32 length field, "
                f"got {self.corrupt_value!r}"
            )
        if self.throttle is not None and not self.throttle > 0:
            raise ValueError(
                f"throttle must be positive bytes/s or None, got {self.throttle!r}"
            )
        if not isinstance(self.max_buffer, int) or self.max_buffer < 1:
            raise ValueError(f"max_buffer must be an int >= 1, got {self.max_buffer!r}")

    @property
    def delay_pair(self) -> FloatRange:
        """
        ``delay`` as ``(base, jitter)`` (``(0, 0)`` when there is none).
        """
        delay = self.delay
        if delay is None:
            return (0.0, 0.0)
        if isinstance(delay, (int, float)):
            return (float(delay), 0.0)
        return delay

    def plan(self, index: int) -> ConnectionPlan:
        """
        The per-connection decisions for connection number ``index``.

        A pure function of the schedule and ``index``: calling it twice gives
        equal plans, which is what makes a soak reproducible.
        """
        rng = random.Random(f"framedclient.faultproxy/{self.seed}/{index}/plan")
        # Draw every number unconditionally and in a fixed order, so one
        # fault's probability never shifts another fault's decisions.
        r_refuse, r_refuse_for = rng.random(), rng.random()
        r_cut, r_cut_after, r_cut_in = rng.random(), rng.random(), rng.random()
        r_silence, r_silence_at, r_silence_for = (
            rng.random(),
            rng.random(),
            rng.random(),
        )

        refuse_low, refuse_high = _float_range("refuse_for", self.refuse_for)
        cut_after: int | None = None
        cut_in: Direction | None = None
        if r_cut < self.cut:
            first, last = _int_range("cut_after", self.cut_after)
            cut_after = min(last, first + int(r_cut_after * (last - first + 1)))
            if self.cut_in == "either":
                cut_in = TO_SERVER if r_cut_in < 0.5 else TO_CLIENT
            else:
                cut_in = self.cut_in
        silence_at: float | None = None
        silence_for = math.inf
        if r_silence < self.silence:
            low, high = _float_range("silence_after", self.silence_after)
            silence_at = _pick(low, high, r_silence_at)
            if self.silence_for is not None:
                low, high = _float_range("silence_for", self.silence_for)
                silence_for = _pick(low, high, r_silence_for)
        return ConnectionPlan(
            index=index,
            refuse=r_refuse < self.refuse,
            refuse_for=_pick(refuse_low, refuse_high, r_refuse_for),
            cut_after=cut_after,
            cut_in=cut_in,
            silence_at=silence_at,
            silence_for=silence_for,
        )

    def flow_faults(self, index: int, direction: Direction) -> FlowFaults:
        """
        A fresh generator of per-chunk and per-frame decisions for one
        direction of connection ``index``.  Two generators made with the
        same arguments from equal schedules make the same decisions when
        asked about the same chunks.
        """
        return FlowFaults(self, index, direction)


class _Fc1Tracker:
    """
    Follows fc1 frame boundaries (u32 big-endian length prefix) in a byte
    stream as it is forwarded, without buffering the frames.

    It looks at each header once (a few operations per frame, no per-byte
    loop), which is what lets the proxy overwrite exactly a length header,
    and keep a cut away from frame boundaries, whatever the read sizes.
    """

    __slots__ = ("_header", "_mask", "_offset", "_skip", "_value", "cut_at")

    def __init__(self, cut_at: int | None, corrupt_value: int) -> None:
        self._skip = 0  # body bytes of the current frame still to pass
        self._header = b""  # the part of a header seen so far (< 4 bytes)
        self._mask: bytes | None = None  # replacement for the header in progress
        self._offset = 0  # stream offset of the next byte fed
        self._value = _U32.pack(corrupt_value)
        #: The stream offset at which the flow is cut (``None``: never);
        #: moved off frame boundaries as they are found.
        self.cut_at = cut_at
        self._boundary(0)

    def _boundary(self, offset: int) -> None:
        if self.cut_at == offset:
            self.cut_at = offset + 1

    def feed(
        self, data: bytes, corrupt: Callable[[], bool] | None
    ) -> tuple[bytes, int]:
        """
        Track ``data`` (the next bytes of the stream).

        :param corrupt: asked once at the start of each frame header whether
            to overwrite it; ``None`` never corrupts.
        :return: the bytes to forward (``data`` itself unless a header was
            overwritten) and how many headers were overwritten.
        """
        n = len(data)
        i = 0
        base = self._offset
        skip = self._skip
        out: bytearray | None = None
        hits = 0
        while True:
            if skip:
                if skip > n - i:
                    skip -= n - i
                    break
                i += skip
                skip = 0
                self._boundary(base + i)
            if i >= n:
                break
            header = self._header
            if not header:
                mask = self._value if corrupt is not None and corrupt() else None
                if mask is not None:
                    hits += 1
                if n - i >= 4:
                    # The whole header is in this chunk: the common case.
                    skip = _U32.unpack_from(data, i)[0]
                    if mask is not None:
                        if out is None:
                            out = bytearray(data)
                        out[i : i + 4] = mask
                    i += 4
                    if not skip:
                        self._boundary(base + i)
                    continue
                self._mask = mask
            take = min(4 - len(header), n - i)
            if self._mask is not None:
                if out is None:
                    out = bytearray(data)
                out[i : i + take] = self._mask[len(header) : len(header) + take]
            header += data[i : i + take]
            i += take
            if len(header) < 4:
                self._header = header
                break
            skip = _U32.unpack(header)[0]
            self._header = b""
            self._mask = None
            if not skip:
                self._boundary(base + i)
        self._skip = skip
        self._offset = base + n
        return (bytes(out) if out is not None else data), hits


class _Segment:
    """
    Bytes waiting in a flow's queue.
    """

    __slots__ = ("data", "due", "pieces", "pos")

    def __init__(self, data: bytes, due: float, pieces: random.Random | None) -> None:
        self.data = data
        self.due = due
        self.pieces = pieces
        self.pos = 0


class ProxySide(Protocol):
    """
    One of the proxy's two sockets for a proxied connection (the proxy
    builds them; they appear in :class:`ProxiedConnection`'s signature).
    """

    def __init__(self, proxy: FaultProxy, role: Direction) -> None:
        self.proxy = proxy
        #: The direction bytes written to this side travel.
        self.role = role
        self.link: ProxiedConnection | None = None
        self.lost = False
        self.paused = False
        self._lost_waiters: list[Deferred[None]] = []

    def connectionMade(self) -> None:
        if self.role == TO_CLIENT:
            self.proxy._accept(self)

    def dataReceived(self, data: bytes) -> None:
        link = self.link
        if link is not None:
            flow = link.to_server if self.role == TO_CLIENT else link.to_client
            flow._receive(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        if self.link is not None:
            self.link._side_lost(self)
        else:
            self.proxy._refused.discard(self)
        waiters, self._lost_waiters = self._lost_waiters, []
        for d in waiters:
            d.callback(None)

    def when_lost(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.lost:
            d.callback(None)
        else:
            self._lost_waiters.append(d)
        return d

    def set_paused(self, paused: bool) -> None:
        if paused != self.paused and not self.lost and self.transport is not None:
            self.paused = paused
            if paused:
                self.transport.pauseProducing()  # type: ignore[attr-defined]
            else:
                self.transport.resumeProducing()  # type: ignore[attr-defined]


@implementer(IPushProducer)
class Flow:
    """
    One direction of a proxied connection: the queue between what one side
    sent and what the other side is given, where delay, split, merge,
    throttle, cut and corruption happen.

    A flow is the producer registered with its receiving transport, so it
    learns when that transport's buffer is full and stops writing (and
    reading from the sender) until it drains.

    :ivar direction: ``"to_server"`` or ``"to_client"``.
    :ivar received: bytes read from the sending side.
    :ivar delivered: bytes written to the receiving side.
    :ivar held: bytes held by the proxy right now (queued or merging).
    :ivar peak_held: the most bytes ever held at once; stays at or below
        ``max_buffer`` plus one read.
    """

    def __init__(
        self, link: ProxiedConnection, direction: Direction, schedule: FaultSchedule
    ) -> None:
        self.direction = direction
        self.received = 0
        self.delivered = 0
        self.held = 0
        self.peak_held = 0
        self._link = link
        self._clock = link._clock
        self._schedule = schedule
        self._faults = schedule.flow_faults(link.index, direction)
        self._max_buffer = schedule.max_buffer
        plan = link.plan
        cut_at = plan.cut_after if plan.cut_in == direction else None
        # The server's stream is always followed (on-demand corruption may
        # be asked for at any time); the client's only when it may be cut.
        self._tracker: _Fc1Tracker | None = None
        if direction == TO_CLIENT or cut_at is not None:
            self._tracker = _Fc1Tracker(cut_at, schedule.corrupt_value)
        self._queue: deque[_Segment] = deque()
        self._last_due = -math.inf
        self._timer: IDelayedCall | None = None
        self._bucket: list[bytes] = []
        self._bucket_bytes = 0
        self._bucket_due = 0.0
        self._bucket_timer: IDelayedCall | None = None
        self._next_free = -math.inf
        self._dst_full = False
        self._over = False
        self._eof = False
        self._corrupt_requested = False

    def __repr__(self) -> str:
        return (
            f"<Flow {self.direction} received={self.received} "
            f"delivered={self.delivered} held={self.held}>"
        )

    # -- IPushProducer, called by the receiving transport ---------------------

    def pauseProducing(self) -> None:
        self._dst_full = True
        self._link._update_reading()

    def resumeProducing(self) -> None:
        self._dst_full = False
        self._deliver()

    def stopProducing(self) -> None:
        # The transport is going away; its connectionLost tells the link.
        pass

    # -- internals -----------------------------------------------------------

    @property
    def _dst(self) -> ProxySide | None:
        link = self._link
        return link._server if self.direction == TO_SERVER else link._client

    def _blocked(self) -> bool:
        """
        Whether the sending side should not be read now.
        """
        return self._dst_full or self._over

    def _should_corrupt(self) -> bool:
        if self._corrupt_requested:
            self._corrupt_requested = False
            return True
        return self._schedule.corrupt_length > 0 and self._faults.corrupt_header()

    def _add_held(self, n: int) -> None:
        held = self.held = self.held + n
        if held > self.peak_held:
            self.peak_held = held
        if held >= self._max_buffer:
            self._over = True
        elif held <= self._max_buffer // 2:
            # Hysteresis: do not flap between pausing and resuming the
            # sender on every write.
            self._over = False

    def _receive(self, data: bytes) -> None:
        link = self._link
        if link._closing:
            return
        self.received += len(data)
        proxy = link._proxy
        if self._tracker is not None:
            corrupt = self._should_corrupt if self.direction == TO_CLIENT else None
            data, hits = self._tracker.feed(data, corrupt)
            if hits:
                proxy.faults[CORRUPT_LENGTH] += hits
        faults = (
            self._faults.chunk(len(data)) if self._faults.active else _NO_CHUNK_FAULTS
        )
        now = self._clock.seconds()
        if self._bucket_timer is not None:
            # A merge window is open: everything joins it, whatever was
            # decided for this chunk, or it would overtake the bucket.
            self._bucket.append(data)
            self._bucket_bytes += len(data)
            self._add_held(len(data))
            if self._bucket_bytes >= self._schedule.merge_bytes:
                self._close_bucket()
        elif faults.merge:
            proxy.faults[MERGE] += 1
            if faults.delay:
                proxy.faults[DELAY] += 1
            self._bucket = [data]
            self._bucket_bytes = len(data)
            self._bucket_due = now + faults.delay
            self._add_held(len(data))
            self._bucket_timer = self._clock.callLater(
                self._schedule.merge_window, self._close_bucket
            )
            if self._bucket_bytes >= self._schedule.merge_bytes:
                self._close_bucket()
        else:
            if faults.delay:
                proxy.faults[DELAY] += 1
            pieces = None
            if faults.split_seed is not None:
                proxy.faults[SPLIT] += 1
                pieces = random.Random(faults.split_seed)
            self._add_held(len(data))
            self._enqueue(data, now + faults.delay, pieces)
        link._update_reading()
        if self._timer is None:
            # With a timer pending the head of the queue is waiting (for its
            # due time, the throttle or the next split piece), and this
            # chunk, behind it, cannot go sooner.
            self._deliver()

    def _close_bucket(self) -> None:
        timer = self._bucket_timer
        if timer is None:
            return
        self._bucket_timer = None
        if timer.active():
            timer.cancel()
        data = b"".join(self._bucket)
        self._bucket = []
        self._bucket_bytes = 0
        self._enqueue(data, self._bucket_due, None)
        if self._timer is None:
            self._deliver()

    def _enqueue(self, data: bytes, due: float, pieces: random.Random | None) -> None:
        # Never before the previous chunk: delays jitter, TCP does not reorder.
        if due < self._last_due:
            due = self._last_due
        self._last_due = due
        self._queue.append(_Segment(data, due, pieces))

    def _schedule_delivery(self, delay: float) -> None:
        self._timer = self._clock.callLater(max(0.0, delay), self._deliver)

    def _deliver(self) -> None:
        """
        Write whatever is due to the receiving side, as far as throttle,
        split, silence and the receiver's buffer allow, and arrange to be
        called again for the rest.
        """
        timer = self._timer
        if timer is not None:
            self._timer = None
            if timer.active():
                timer.cancel()
        link = self._link
        dst = self._dst
        if link._closing or link._silenced or self._dst_full or dst is None or dst.lost:
            return
        transport = dst.transport
        assert transport is not None
        queue = self._queue
        rate = self._schedule.throttle
        split_max = self._schedule.split_max
        now = self._clock.seconds()
        while queue:
            seg = queue[0]
            if seg.due > now:
                self._schedule_delivery(seg.due - now)
                break
            if rate is not None and self._next_free > now:
                self._schedule_delivery(self._next_free - now)
                break
            data = seg.data
            pos = seg.pos
            n = len(data) - pos
            if seg.pieces is not None and n > 1:
                n = 1 if split_max == 1 else min(n, seg.pieces.randint(1, split_max))
            if rate is not None:
                n = min(n, max(1, int(rate * _THROTTLE_TICK)))
            chunk = data if n == len(data) else data[pos : pos + n]
            tracker = self._tracker
            if tracker is not None and tracker.cut_at is not None:
                if self.delivered + n >= tracker.cut_at:
                    keep = tracker.cut_at - self.delivered
                    if keep > 0:
                        transport.write(chunk[:keep])
                        self.delivered += keep
                    link.cut()
                    return
            transport.write(chunk)
            self.delivered += n
            self._add_held(-n)
            if rate is not None:
                self._next_free = max(self._next_free, now) + n / rate
            seg.pos = pos + n
            if seg.pos >= len(data):
                queue.popleft()
            if seg.pieces is not None:
                # One piece per reactor turn, so each reaches the socket on
                # its own instead of being coalesced in the transport buffer.
                self._schedule_delivery(0)
                break
            if self._dst_full or link._closing:
                break
        else:
            if self._eof and self._bucket_timer is None:
                link._close_side(dst)
                return
        link._update_reading()

    def _drop(self) -> None:
        """
        Forget everything held: the connection is going away.
        """
        for timer in (self._timer, self._bucket_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._bucket_timer = None
        self._queue.clear()
        self._bucket = []
        self._bucket_bytes = 0
        self.held = 0
        self._over = False


class ProxiedConnection:
    """
    One client connection through the proxy, and its upstream connection.

    Handles are listed by :attr:`FaultProxy.connections` while the
    connection is open; tests use them to inject faults into one connection
    and leave the others alone.

    :ivar index: the connection's number (see :class:`ConnectionPlan`).
    :ivar plan: the faults the schedule decided for it.
    :ivar client_address: the client's address as the proxy sees it (its
        port matches the client transport's ``getHost().port``).
    :ivar to_server: the client-to-server :class:`Flow`.
    :ivar to_client: the server-to-client :class:`Flow`.
    :ivar closed: both sides are closed and the connection is forgotten.
    """

    def __init__(
        self, proxy: FaultProxy, index: int, plan: ConnectionPlan, client: ProxySide
    ) -> None:
        self._proxy = proxy
        self._clock = proxy._clock
        self.index = index
        self.plan = plan
        self.client_address: IAddress = client.transport.getPeer()  # type: ignore[union-attr]
        self._client = client
        self._server: ProxySide | None = None
        self._connect_d: Deferred[Any] | None = None
        self._closing = False
        self.closed = False
        self._silenced = False
        self._silence_timer: IDelayedCall | None = None
        self._plan_timer: IDelayedCall | None = None
        self._grace_timer: IDelayedCall | None = None
        self._waiters: list[Deferred[None]] = []
        schedule = proxy.schedule
        self.to_server = Flow(self, TO_SERVER, schedule)
        self.to_client = Flow(self, TO_CLIENT, schedule)
        client.link = self

    def __repr__(self) -> str:
        state = "closed" if self.closed else "closing" if self._closing else "open"
        return (
            f"<ProxiedConnection #{self.index} {state} "
            f"{self.to_server!r} {self.to_client!r}>"
        )

    # -- faults on demand -----------------------------------------------------

    def cut(self) -> None:
        """
        Close both sides now.  Bytes already passed on are delivered (each
        side gets a clean end-of-stream after them); bytes the proxy still
        holds are dropped.  Counted as a ``"cut"`` fault.
        """
        if self._closing or self.closed:
            return
        self._proxy.faults[CUT] += 1
        self._closing = True
        self._drop()
        self._cancel_connect()
        for side in (self._client, self._server):
            if side is not None:
                self._close_side(side)
        self._arm_grace()
        self._maybe_finish()

    def silence(self, duration: float | None = None) -> None:
        """
        Stop reading and forwarding in both directions, without closing
        anything, for ``duration`` seconds (``None``: until
        :meth:`resume`).  To both peers the connection looks alive and
        idle: a half-open connection, a partitioned network.
        """
        if self._closing or self.closed:
            return
        self._proxy.faults[SILENCE] += 1
        self._silenced = True
        if self._silence_timer is not None and self._silence_timer.active():
            self._silence_timer.cancel()
        self._silence_timer = None
        if duration is not None:
            self._silence_timer = self._clock.callLater(duration, self._end_silence)
        self._update_reading()

    def resume(self) -> None:
        """
        End a silence now; what was held or buffered meanwhile flows on.
        """
        if self._silence_timer is not None and self._silence_timer.active():
            self._silence_timer.cancel()
        self._end_silence()

    def corrupt_next_header(self) -> None:
        """
        Overwrite the length header of the next fc1 frame the server sends
        on this connection with the schedule's ``corrupt_value``.
        """
        self.to_client._corrupt_requested = True

    def when_closed(self) -> Deferred[None]:
        """
        A Deferred that fires once both sides are closed (at once if they
        are).
        """
        d: Deferred[None] = Deferred()
        if self.closed:
            d.callback(None)
        else:
            self._waiters.append(d)
        return d

    # -- lifecycle --------------------------------------------------------------

    def _start(self, endpoint: IStreamClientEndpoint) -> None:
        """
        Connect upstream; the client is not read until that succeeds, so
        nothing piles up meanwhile.
        """
        _set_no_delay(self._client)
        self._client.set_paused(True)
        server = ProxySide(self._proxy, TO_SERVER)
        server.link = self
        d = endpoint.connect(_OneShotFactory(server))
        self._connect_d = d
        d.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, proto: object) -> None:
        self._connect_d = None
        assert isinstance(proto, ProxySide)
        self._server = proto
        if self._closing or self.closed:
            # Raced with a close: drop the new connection too.
            proto.transport.abortConnection()  # type: ignore[union-attr]
            return
        _set_no_delay(proto)
        # Each flow hears from the transport it writes to when that
        # transport's buffer fills and drains.
        self._client.transport.registerProducer(self.to_client, True)  # type: ignore[union-attr]
        proto.transport.registerProducer(self.to_server, True)  # type: ignore[union-attr]
        if self._proxy.schedule.throttle is not None:
            self._proxy.faults[THROTTLE] += 1
        plan = self.plan
        if plan.silence_at is not None:
            duration = None if plan.silence_for == math.inf else plan.silence_for
            self._plan_timer = self._clock.callLater(
                plan.silence_at, self.silence, duration
            )
        self._update_reading()
        self.to_server._deliver()

    def _connect_failed(self, failure: Failure) -> None:
        self._connect_d = None
        if self._closing or self.closed:
            # We cancelled it.
            self._maybe_finish()
            return
        self._proxy.upstream_failures += 1
        _log.info(
            "Fault proxy could not reach the upstream server: {error}; "
            "dropping the client connection",
            error=failure.getErrorMessage(),
        )
        self._abort()

    def _side_lost(self, side: ProxySide) -> None:
        if self.closed:
            return
        other = self._server if side is self._client else self._client
        if self._closing or other is None or other.lost:
            self._closing = True
            self._drop()
            self._cancel_connect()
            self._maybe_finish()
            return
        # One peer closed by itself: pass on what it sent last, then close
        # the other side too (no half-close, as most framed protocols).
        toward_other = self.to_server if side is self._client else self.to_client
        away = self.to_client if side is self._client else self.to_server
        away._drop()
        toward_other._eof = True
        self._arm_grace()
        toward_other._close_bucket()
        toward_other._deliver()

    def _close_side(self, side: ProxySide) -> None:
        if side.lost or side.transport is None:
            return
        # A registered producer keeps a TCP transport open after
        # loseConnection; unregister ours first.
        side.transport.unregisterProducer()  # type: ignore[attr-defined]
        side.transport.loseConnection()

    def _abort(self) -> None:
        """
        Close both sides at once, dropping everything (stop(), or a peer
        that did not go away within close_grace).
        """
        self._closing = True
        self._drop()
        self._cancel_connect()
        for side in (self._client, self._server):
            if side is not None and not side.lost and side.transport is not None:
                side.transport.abortConnection()  # type: ignore[attr-defined]
        self._maybe_finish()

    def _arm_grace(self) -> None:
        if self._grace_timer is None and not self.closed:
            self._grace_timer = self._clock.callLater(
                self._proxy.close_grace, self._grace_expired
            )

    def _grace_expired(self) -> None:
        self._grace_timer = None
        self._abort()

    def _cancel_connect(self) -> None:
        if self._connect_d is not None:
            # Fires _connect_failed, which stays quiet because we are
            # closing; a connection that won the race is dropped in
            # _connected.
            self._connect_d.cancel()

    def _drop(self) -> None:
        self.to_server._drop()
        self.to_client._drop()
        for timer in (self._silence_timer, self._plan_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._silence_timer = self._plan_timer = None

    def _maybe_finish(self) -> None:
        if self.closed or self._connect_d is not None:
            return
        for side in (self._client, self._server):
            if side is not None and not side.lost:
                return
        self.closed = True
        self._closing = True
        self._drop()
        if self._grace_timer is not None and self._grace_timer.active():
            self._grace_timer.cancel()
        self._grace_timer = None
        self._proxy._forget(self)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def _end_silence(self) -> None:
        self._silence_timer = None
        if not self._silenced:
            return
        self._silenced = False
        self._update_reading()
        self.to_server._deliver()
        self.to_client._deliver()

    def _update_reading(self) -> None:
        """
        Read from a side only when its bytes can go somewhere: the upstream
        connection exists, the connection is not silenced, and the flow it
        feeds is neither over its byte cap nor facing a full receiver.
        """
        if self._closing:
            return
        client, server = self._client, self._server
        client.set_paused(server is None or self._silenced or self.to_server._blocked())
        if server is not None:
            server.set_paused(self._silenced or self.to_client._blocked())


class _OneShotFactory(Factory):
    """
    Hands an endpoint the one protocol instance already made for it.
    """

    noisy = False

    def __init__(self, proto: ProxySide) -> None:
        self._proto = proto

    def buildProtocol(self, addr: IAddress | None) -> ProxySide:
        return self._proto


class _ListeningFactory(Factory):
    noisy = False

    def __init__(self, proxy: FaultProxy) -> None:
        self._proxy = proxy

    def buildProtocol(self, addr: IAddress | None) -> ProxySide:
        return ProxySide(self._proxy, TO_CLIENT)


def _set_no_delay(side: ProxySide) -> None:
    # Small writes (split pieces, single frames) must leave at once: with
    # Nagle's algorithm the kernel would coalesce them behind delayed ACKs,
    # undoing split and adding 40 ms stalls.
    set_no_delay = getattr(side.transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        try:
            set_no_delay(True)
        except OSError:
            pass


class FaultProxy:
    """
    A TCP proxy on loopback that injects faults between a client and a
    server.

    ::

        proxy = FaultProxy(reactor, ("127.0.0.1", server_port),
                           FaultSchedule(seed=7, split=0.2, cut=0.01))
        await proxy.listen()
        client_endpoint = proxy.client_endpoint()
        ...
        await proxy.stop()

    :param reactor: provides ``IReactorTCP`` (and ``IReactorTime`` unless
        ``clock`` is given).
    :param upstream: the real server: any client endpoint, or a ``(host,
        port)`` pair for TCP.
    :param schedule: what goes wrong and how often; the default injects
        nothing (faults can still be triggered on demand).  It may be
        replaced later through :attr:`schedule`; connections accepted after
        that use the new one, existing ones keep theirs.
    :param clock: where every timer of the proxy runs; the reactor by
        default.
    :param close_grace: seconds a connection whose peer closed (or which
        was cut) may take to deliver its last bytes before it is aborted.

    :ivar faults: faults injected so far, by kind (:data:`FAULT_KINDS`):
        ``cut``, ``silence`` (periods started), ``refuse`` (connections
        refused), ``throttle`` (connections throttled) count per connection;
        ``delay``, ``split`` and ``merge`` per chunk (a merge counts the
        window, not the chunks in it); ``corrupt_length`` per header.
    :ivar connections_accepted: connections proxied (refused ones not
        included).
    :ivar connections_refused: connections refused (by the schedule, by
        :meth:`refuse_new`, or after :meth:`stop`).
    :ivar upstream_failures: accepted connections dropped because the
        upstream server could not be reached.
    :ivar port: the listening port, once :meth:`listen` has fired.
    """

    def __init__(
        self,
        reactor: Any,
        upstream: IStreamClientEndpoint | tuple[str, int],
        schedule: FaultSchedule | None = None,
        *,
        clock: IReactorTime | None = None,
        close_grace: float = 5.0,
    ) -> None:
        if not close_grace > 0:
            raise ValueError(
                f"close_grace must be positive seconds, got {close_grace!r}"
            )
        self._reactor = reactor
        if isinstance(upstream, tuple):
            host, port = upstream
            endpoint_type = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
            self._upstream: IStreamClientEndpoint = endpoint_type(reactor, host, port)
        else:
            self._upstream = upstream
        #: What goes wrong and how often, for connections accepted from now on.
        self.schedule = schedule if schedule is not None else FaultSchedule()
        self._clock: IReactorTime = clock if clock is not None else reactor
        self.close_grace = close_grace
        #: Faults injected so far, by kind (:data:`FAULT_KINDS`).
        self.faults: Counter[str] = Counter()
        self.connections_accepted = 0
        self.connections_refused = 0
        self.upstream_failures = 0
        #: The listening port while listening, else ``None``.
        self.port: IListeningPort | None = None
        self._links: dict[int, ProxiedConnection] = {}
        self._next_index = 0
        self._refuse_until = -math.inf
        self._stopped = False
        # Refused sockets until their (aborted) transports are gone, so
        # stop() can wait for them too.
        self._refused: set[ProxySide] = set()

    def __repr__(self) -> str:
        where = self.client_description if self.port is not None else "not listening"
        return (
            f"<FaultProxy {where} connections={len(self._links)} "
            f"faults={dict(self.faults)}>"
        )

    # -- listening ----------------------------------------------------------------

    def listen(
        self, endpoint_description: str = "tcp:0:interface=127.0.0.1"
    ) -> Deferred[IListeningPort]:
        """
        Start accepting clients.

        :param endpoint_description: a server endpoint string; the default
            is an ephemeral port on 127.0.0.1 only, so a test never exposes
            the proxy beyond the machine.
        :return: fires with the listening port (also :attr:`port`).
        """
        if self.port is not None or self._stopped:
            raise RuntimeError(
                "a FaultProxy listens once; make a new one to listen again"
            )
        endpoint = serverFromString(  # type: ignore[no-untyped-call]
            self._reactor, endpoint_description
        )
        d: Deferred[IListeningPort] = endpoint.listen(_ListeningFactory(self))

        def listening(port: IListeningPort) -> IListeningPort:
            self.port = port
            return port

        return d.addCallback(listening)

    @property
    def address(self) -> IAddress:
        """
        The address the proxy listens on.

        :raises RuntimeError: not listening.
        """
        if self.port is None:
            raise RuntimeError("the proxy is not listening; call listen() first")
        return self.port.getHost()

    @property
    def client_description(self) -> str:
        """
        A client endpoint string for the proxy (``tcp:host=...:port=...``),
        for ``clientFromString`` or ``FramedClient.from_endpoint``.
        """
        address = self.address
        if not isinstance(address, (IPv4Address, IPv6Address)):
            raise RuntimeError(f"the proxy listens on a non-TCP address: {address!r}")
        host = address.host.replace(":", "\\:")
        return f"tcp:host={host}:port={address.port}"

    def client_endpoint(self) -> IStreamClientEndpoint:
        """
        A client endpoint that connects to the proxy.
        """
        address = self.address
        if isinstance(address, IPv6Address):
            return TCP6ClientEndpoint(  # type: ignore[no-untyped-call]
                self._reactor, address.host, address.port
            )
        if isinstance(address, IPv4Address):
            return TCP4ClientEndpoint(self._reactor, address.host, address.port)
        raise RuntimeError(f"the proxy listens on a non-TCP address: {address!r}")

    @property
    def connections(self) -> list[ProxiedConnection]:
        """
        The proxied connections still open, oldest first (a new list).
        """
        return list(self._links.values())

    def stop(self) -> Deferred[None]:
        """
        Stop listening and abort every proxied connection.

        :return: fires once the port is closed and every connection's two
            sides are gone, so no socket or timer of the proxy outlives it.
        """
        self._stopped = True
        waits: list[Deferred[Any]] = []
        port, self.port = self.port, None
        if port is not None:
            waits.append(maybeDeferred(port.stopListening))
        for link in list(self._links.values()):
            waits.append(link.when_closed())
            link._abort()
        for side in list(self._refused):
            waits.append(side.when_lost())
        done: Deferred[None] = gatherResults(waits, consumeErrors=True).addCallback(
            lambda _: None
        )
        return done

    # -- faults on demand -------------------------------------------------------

    def cut_all(self) -> int:
        """
        Cut every open connection now (see :meth:`ProxiedConnection.cut`).

        :return: how many connections were cut.
        """
        links = [link for link in self._links.values() if not link._closing]
        for link in links:
            link.cut()
        return len(links)

    def silence_all(self, duration: float | None = None) -> int:
        """
        Silence every open connection (see :meth:`ProxiedConnection.silence`);
        connections accepted later are not affected.

        :return: how many connections were silenced.
        """
        links = [link for link in self._links.values() if not link._closing]
        for link in links:
            link.silence(duration)
        return len(links)

    def corrupt_all(self) -> int:
        """
        Corrupt the next server frame header on every open connection.

        :return: how many connections will be hit.
        """
        links = [link for link in self._links.values() if not link._closing]
        for link in links:
            link.corrupt_next_header()
        return len(links)

    def refuse_new(self, duration: float | None = None) -> None:
        """
        Refuse new connections for ``duration`` seconds (``None``: until
        :meth:`resume`).  Open connections are not touched.
        """
        now = self._clock.seconds()
        self._refuse_until = math.inf if duration is None else now + duration

    def resume(self) -> None:
        """
        Lift the faults in effect now: end every silence and accept new
        connections again.  Faults the schedule has yet to inject still
        happen; assign ``proxy.schedule = FaultSchedule()`` to stop those
        for new connections.
        """
        self._refuse_until = -math.inf
        for link in list(self._links.values()):
            link.resume()

    # -- internals ----------------------------------------------------------------

    def _accept(self, client: ProxySide) -> None:
        index = self._next_index
        self._next_index += 1
        schedule = self.schedule
        plan = schedule.plan(index)
        now = self._clock.seconds()
        refusing = now < self._refuse_until
        if plan.refuse and not self._stopped:
            # This connection starts (or extends) a refusal period.
            self._refuse_until = max(self._refuse_until, now + plan.refuse_for)
        if self._stopped or refusing or plan.refuse:
            self.connections_refused += 1
            if not self._stopped:
                self.faults[REFUSE] += 1
            # A reset rather than a clean close: what a client sees from a
            # server that is not there.
            self._refused.add(client)
            client.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.connections_accepted += 1
        link = ProxiedConnection(self, index, plan, client)
        self._links[index] = link
        link._start(self._upstream)

    def _forget(self, link: ProxiedConnection) -> None:
        self._links.pop(link.index, None)
