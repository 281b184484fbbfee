"""
Codecs: how a frame's bytes map to a message (kind, request ID, body).

- :mod:`framedclient.codecs.base`: the :class:`Codec` contract, :class:`Kind`
  and :class:`Matching`;
- :mod:`framedclient.codecs.fc1`: :class:`FC1Codec`, the reference protocol;
- :mod:`framedclient.codecs.header`: :class:`HeaderCodec`, a fixed header with
  an ID field behind a length prefix (describe your own binary protocol);
- :mod:`framedclient.codecs.pipelined`: :class:`PipelinedCodec`, protocols
  without IDs whose replies come back in order;
- :mod:`framedclient.codecs.redis`: Redis (RESP2).

Users describe their own protocol with :class:`HeaderCodec` or
:class:`PipelinedCodec`, or write a class that satisfies :class:`Codec`.
"""

from framedclient.codecs.base import (
    CANCEL,
    DEFAULT_MAX_FRAME,
    ERROR,
    GOAWAY,
    PING,
    PONG,
    REPLY,
    REQUEST,
    Codec,
    Kind,
    Matching,
)
from framedclient.codecs.fc1 import FC1Codec
from framedclient.codecs.header import HeaderCodec
from framedclient.codecs.pipelined import PipelinedCodec

__all__ = [
    "CANCEL",
    "DEFAULT_MAX_FRAME",
    "ERROR",
    "GOAWAY",
    "PING",
    "PONG",
    "REPLY",
    "REQUEST",
    "Codec",
    "FC1Codec",
    "HeaderCodec",
    "Kind",
    "Matching",
    "PipelinedCodec",
]
