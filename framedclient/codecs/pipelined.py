"""
A codec for protocols without request IDs (Redis, memcached's text
protocol): replies come back in request order.
"""

from __future__ import annotations

from collections.abc import Callable

from framedclient.codecs.base import ERROR, REPLY, REQUEST, Kind, Matching
from framedclient.framing import Framer, check_framer_factory

__all__ = ["PipelinedCodec"]


class PipelinedCodec:
    """
    A codec for protocols without request IDs: every frame from the server
    is the reply to the oldest outstanding request.

    :param framer_factory: makes one framer per connection; also used to
        frame requests.
    :param is_error: tells error replies apart (for example RESP's ``-ERR``
        lines); returns the error message, or ``None`` for a normal reply.
    :param exclusive: the server cannot pipeline either, so only one request
        may be outstanding on a connection at a time.
    """

    __slots__ = ("_encoder", "_framer_factory", "is_error", "matching", "max_frame")

    supports_cancel = False
    supports_ping = False
    max_id = 2**63 - 1

    def __init__(
        self,
        framer_factory: Callable[[], Framer],
        *,
        is_error: Callable[[bytes], str | None] | None = None,
        exclusive: bool = False,
    ) -> None:
        check_framer_factory("PipelinedCodec", framer_factory)
        if is_error is not None and not callable(is_error):
            raise TypeError(
                f"PipelinedCodec: is_error must be a function of a reply frame "
                f"returning its error message (or None for a success), got "
                f"{is_error!r}: for a prefix, is_error=lambda frame: "
                f"frame.decode() if frame.startswith(b'ERR') else None"
            )
        self._framer_factory = framer_factory
        self._encoder = framer_factory()
        self.is_error = is_error
        self.matching = Matching.EXCLUSIVE if exclusive else Matching.IN_ORDER
        self.max_frame = self._encoder.max_frame

    def new_framer(self) -> Framer:
        return self._framer_factory()

    def encode(self, kind: int, request_id: int, body: bytes) -> bytes:
        if kind != REQUEST:
            raise ValueError(
                f"a pipelined codec cannot encode {Kind(kind).name} frames"
            )
        return self._encoder.encode(body)

    def decode(self, frame: bytes) -> tuple[int, int, bytes]:
        if self.is_error is not None:
            message = self.is_error(frame)
            if message is not None:
                return ERROR, 0, message.encode("utf-8", "replace")
        return REPLY, 0, frame
