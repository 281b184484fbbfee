"""
framedclient: concurrent clients for framed TCP protocols, on Twisted.

The everyday names live here; the layers behind them (framing, codec,
protocol, connection, pool) are importable from their own modules.
"""

from typing import TYPE_CHECKING, Any

# First: importing _mode decides whether the hot modules load compiled or
# pure, before any of them is imported.
from framedclient import _mode
from framedclient._version import __version__ as __version__
from framedclient.backoff import ExponentialBackoff, FullJitterBackoff
from framedclient.batch import RequestBatch
from framedclient.client import FramedClient, Lease
from framedclient.codecs import FC1Codec, HeaderCodec, Kind, Matching, PipelinedCodec
from framedclient.config import ClientConfig
from framedclient.connection import Connection
from framedclient.errors import (
    ClientClosed,
    ConnectFailed,
    ConnectionLost,
    CorruptFrame,
    FramedClientError,
    FrameTooLarge,
    InvalidRequest,
    Overloaded,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    RequestTooLarge,
    Unavailable,
)
from framedclient.framing import Delimited, LengthPrefixed, Netstring
from framedclient.metrics import Metrics
from framedclient.protocol import FramedClientFactory, FramedProtocol, ProtocolConfig
from framedclient.service import FramedClientService

if TYPE_CHECKING:
    from framedclient.clients.cluster import RedisClusterClient
    from framedclient.clients.memcache import MemcacheClient
    from framedclient.clients.redis import RedisClient

__all__ = [
    "ClientClosed",
    "ClientConfig",
    "ConnectFailed",
    "Connection",
    "ConnectionLost",
    "CorruptFrame",
    "Delimited",
    "ExponentialBackoff",
    "FC1Codec",
    "FrameTooLarge",
    "FramedClient",
    "FramedClientError",
    "FramedClientFactory",
    "FramedClientService",
    "FramedProtocol",
    "FullJitterBackoff",
    "HeaderCodec",
    "InvalidRequest",
    "Kind",
    "Lease",
    "LengthPrefixed",
    "Matching",
    "MemcacheClient",
    "Metrics",
    "Netstring",
    "Overloaded",
    "PipelinedCodec",
    "ProtocolConfig",
    "ProtocolError",
    "RedisClient",
    "RedisClusterClient",
    "RemoteError",
    "RequestBatch",
    "RequestTimeout",
    "RequestTooLarge",
    "Unavailable",
]

#: Which build runs: true in compiled mode (mypyc extensions), false in pure
#: mode; ``str()`` is ``"compiled"`` or ``"pure"``, ``.modules`` names the
#: compiled modules, ``.describe()`` is what ``--version`` prints.
compiled: _mode.Mode = _mode.current_mode()

# The protocol clients load their codecs (RESP's parser, memcached's
# header): imported on first use, so that "import framedclient" (which
# "twist --help" does through the plugins) stays as cheap as before.
def __getattr__(name: str) -> Any:
    if name == "RedisClient":
        from framedclient.clients import redis

        value: type = redis.RedisClient
    elif name == "MemcacheClient":
        from framedclient.clients import memcache

        value = memcache.MemcacheClient
    elif name == "RedisClusterClient":
        from framedclient.clients import cluster

        value = cluster.RedisClusterClient
    else:
        raise AttributeError(f"module 'framedclient' has no attribute {name!r}")
    globals()[name] = value
    return value
