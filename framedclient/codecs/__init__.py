"""
Codecs: how a frame's bytes map to a message (kind, request ID, body).

- :mod:`framedclient.codecs.base`: the :class:`Codec` contract,
  :class:`Message` (header fields and body), :class:`Kind` and
  :class:`Matching`;
- :mod:`framedclient.codecs.fc1`: :class:`FC1Codec`, the reference protocol;
- :mod:`framedclient.codecs.header`: :class:`HeaderCodec` and :class:`Field`,
  a fixed header declared field by field behind any framer (describe your
  own binary protocol);
- :mod:`framedclient.codecs.pipelined`: :class:`PipelinedCodec`, protocols
  without IDs whose replies come back in order;
- :mod:`framedclient.codecs.redis`: Redis (RESP2);
- :mod:`framedclient.codecs.memcache`: memcached's binary header, declared;
- :mod:`framedclient.codecs.dns`: DNS over TCP, declared;
- :mod:`framedclient.codecs.plugin`: codecs as plugins of
  ``twist framedclient --codec`` (:class:`~framedclient.codecs.plugin.ICodecPlugin`);
  :mod:`framedclient.codecs.builtin`: the built-ins' option parsers.

Users describe their own protocol with :class:`HeaderCodec` or
:class:`PipelinedCodec`, or write a class that satisfies :class:`Codec`
(docs/codecs.md, docs/codec-tutorial.md).
"""

from framedclient.codecs.base import (
    CANCEL,
    DEFAULT_MAX_FRAME,
    ERROR,
    GOAWAY,
    PART,
    PING,
    PONG,
    PUSH,
    REPLY,
    REQUEST,
    Codec,
    Kind,
    Matching,
    Message,
    Push,
)
from framedclient.codecs.fc1 import FC1Codec
from framedclient.codecs.header import BODY, Field, HeaderCodec
from framedclient.codecs.pipelined import PipelinedCodec

__all__ = [
    "BODY",
    "CANCEL",
    "DEFAULT_MAX_FRAME",
    "ERROR",
    "GOAWAY",
    "PART",
    "PING",
    "PONG",
    "PUSH",
    "REPLY",
    "REQUEST",
    "Codec",
    "FC1Codec",
    "Field",
    "HeaderCodec",
    "Kind",
    "Matching",
    "Message",
    "PipelinedCodec",
    "Push",
]
