"""
Backpressure on the gateway's reply path: replies go to HTTP clients under a
global byte budget, in chunks, and a client that stops reading is closed.

Why: ``request.write(reply)`` hands the whole reply to ``twisted.web``'s
transport buffer at once, after the upstream in-flight slot is released, so
a client that never reads keeps the reply in the gateway's memory for as
long as its connection lives, and nothing bounds how many do (40 clients
asking for 16 MB each grew the gateway by 700 MB).

Three bounds replace that:

- **global**: :class:`ReplyBudget` counts the bytes of every reply being
  written (:attr:`ReplyBudget.held`).  A reply that would take it past
  :attr:`~ReplyBudget.max_bytes` is refused with 503 and ``Retry-After`` at
  once and its bytes dropped.  It is refused, not made to wait: the reply is
  already in memory when it arrives, so a waiting reply would be held outside
  any bound, which is the problem being fixed.  A reply larger than the whole
  budget is still written when nothing else is held, so the bound is
  ``max(max_bytes, the largest single reply)``.
- **per connection**: :class:`ReplyWriter` writes the reply as an
  ``IPushProducer`` in chunks of :attr:`~ReplyBudget.chunk_size`, stopping
  as soon as the transport says its buffer is full, so ``twisted.web``'s
  buffer holds at most its own ``bufferSize`` plus one chunk of the reply;
  the rest waits in the reply itself (already counted by the budget).
- **time**: a connection whose transport stays paused (the client not
  reading) for :attr:`~ReplyBudget.write_deadline` seconds is aborted and its
  bytes released.  A slow client that keeps reading resumes the writer each
  time its buffer drains, which restarts the deadline.

The reply's bytes count until the last chunk has left ``twisted.web``'s
buffer for the kernel (or the connection is gone): a ``bytes`` object
cannot be freed in parts, so counting it down as it is written would
understate memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_REPLY_BYTES",
    "DEFAULT_WRITE_DEADLINE",
    "ReplyBudget",
    "ReplyWriter",
]

_log = Logger()

#: Default global budget of reply bytes being written to HTTP clients: room
#: for a few large replies at once, a small share of a gateway's memory.
DEFAULT_MAX_REPLY_BYTES = 64 * 1024 * 1024

#: Default bytes handed to ``twisted.web`` per write: the size of its own
#: transport buffer (``bufferSize``), so one connection's buffer holds at
#: most about two of them.
DEFAULT_CHUNK_SIZE = 64 * 1024

#: Default seconds a connection may stay paused (its client not reading)
#: before it is aborted; the upstream connections' ``--write-timeout``
#: default too.
DEFAULT_WRITE_DEADLINE = 30.0


class ReplyBudget:
    """
    The reply bytes the gateway holds for HTTP clients, bounded.

    :param clock: for the write deadlines.
    :param max_bytes: the global budget (see the module docstring).
    :param chunk_size: bytes handed to a transport per write.
    :param write_deadline: seconds a paused connection may stay paused.
    """

    def __init__(
        self,
        clock: IReactorTime,
        max_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        write_deadline: float = DEFAULT_WRITE_DEADLINE,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes {max_bytes!r} must be at least 1")
        if chunk_size < 1:
            raise ValueError(f"chunk_size {chunk_size!r} must be at least 1")
        if not write_deadline > 0:
            raise ValueError(
                f"write_deadline {write_deadline!r} must be a positive number "
                f"of seconds"
            )
        self.clock = clock
        self.max_bytes = max_bytes
        self.chunk_size = chunk_size
        self.write_deadline = write_deadline
        #: bytes of replies being written now.
        self.held = 0
        #: the most :attr:`held` has been.
        self.peak = 0
        #: replies refused because the budget was full.
        self.refused = 0
        #: connections aborted because they stayed paused past the deadline.
        self.stalled = 0

    def reserve(self, size: int) -> bool:
        """
        Count ``size`` bytes as held if the budget has room (or holds
        nothing, so one reply larger than the budget still goes out); else
        count a refusal and return ``False``.
        """
        if self.held and self.held + size > self.max_bytes:
            self.refused += 1
            return False
        self.held += size
        self.peak = max(self.peak, self.held)
        return True

    def release(self, size: int) -> None:
        self.held -= size


@implementer(IPushProducer)
class ReplyWriter:
    """
    Writes one reply body, already counted in ``budget``, to an HTTP request
    as a push producer; releases the bytes once written or abandoned.

    :param on_done: called once, with ``True`` when the reply was written
        and ``False`` when the connection was lost or aborted first.
    """

    def __init__(
        self,
        request: Any,
        body: bytes,
        budget: ReplyBudget,
        on_done: Callable[[bool], None] | None = None,
    ) -> None:
        self._request = request
        self._body: bytes | None = body
        self._size = len(body)
        self._budget = budget
        self._on_done = on_done
        self._offset = 0
        self._paused = False
        self._done = False
        self._timer: IDelayedCall | None = None

    def start(self) -> None:
        """
        Register with the request and write until the transport is full.
        """
        self._request.notifyFinish().addErrback(self._lost)
        self._request.registerProducer(self, True)
        self._produce()

    # -- IPushProducer ----------------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True
        if self._timer is None and not self._done:
            self._timer = self._budget.clock.callLater(
                self._budget.write_deadline, self._stalled
            )

    def resumeProducing(self) -> None:
        self._paused = False
        self._cancel_timer()
        self._produce()

    def stopProducing(self) -> None:
        self._end(written=False)

    # -- internals ----------------------------------------------------------------

    def _produce(self) -> None:
        body = self._body
        if self._done or body is None:
            return
        chunk = self._budget.chunk_size
        while not self._paused and self._offset < self._size:
            end = self._offset + chunk
            self._request.write(body[self._offset : end])
            self._offset = end
            if self._done:  # the write lost the connection
                return
        if self._offset >= self._size and not self._paused:
            # Everything is in the transport, and (not paused) its buffer is
            # below bufferSize: done.
            self._end(written=True)

    def _stalled(self) -> None:
        self._timer = None
        if self._done:
            return
        self._budget.stalled += 1
        _log.info(
            "Aborted an HTTP client that read none of its reply for {deadline} s "
            "({left} of {size} bytes unwritten)",
            deadline=self._budget.write_deadline,
            left=self._size - self._offset,
            size=self._size,
        )
        transport = getattr(self._request, "transport", None)
        self._end(written=False)
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()

    def _lost(self, _: Failure) -> None:
        self._end(written=False)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _end(self, written: bool) -> None:
        if self._done:
            return
        self._done = True
        self._cancel_timer()
        self._body = None
        self._budget.release(self._size)
        request = self._request
        if getattr(request, "channel", None) is not None:
            request.unregisterProducer()
            if written:
                request.finish()
        if self._on_done is not None:
            self._on_done(written)
