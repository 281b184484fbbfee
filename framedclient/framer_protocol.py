"""
:class:`~framedclient.framing.Framer`, the protocol every framer satisfies.

It is defined here, not in :mod:`framedclient.framing` where its users
import it from, because that module is compiled by mypyc in compiled mode
(docs/design.md, "compiled mode"), and a compiled class is not a
``typing.Protocol`` at run time: ``isinstance(x, Framer)`` would fail.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Framer"]


@runtime_checkable
class Framer(Protocol):
    """
    What codecs and the protocol layer need from a framer.

    A framer is a small state machine over a byte stream.  It holds at most
    one partial frame (plus a few bytes of bookkeeping), so :attr:`buffered`
    stays below :attr:`max_frame` plus a header's worth of bytes whatever the
    peer sends.
    """

    @property
    def max_frame(self) -> int:
        """
        The largest frame accepted, in bytes; anything longer is a
        :class:`~framedclient.errors.FrameTooLarge`.
        """
        ...

    @property
    def buffered(self) -> int:
        """
        How many bytes the framer currently holds (a partial frame, or bytes
        received after a rejected frame that are not decoded yet).
        """
        ...

    def feed(self, data: bytes) -> list[bytes]:
        """
        Add bytes received from the peer.

        :param data: the next bytes of the stream, however the transport
            split them.
        :return: the frames completed by these bytes, in order (possibly
            none).
        :raises ProtocolError: the stream breaks the framing rules; the
            error's ``frames`` holds the frames completed before the fault.
        """
        ...

    def encode(self, payload: bytes) -> bytes:
        """
        Frame ``payload`` so that the peer's framer decodes exactly it.

        :raises FrameTooLarge: the frame would exceed :attr:`max_frame`.
        :raises ValueError: the payload cannot be framed this way.
        """
        ...


# Documented, printed and pickled as framedclient.framing.Framer.
Framer.__module__ = "framedclient.framing"
