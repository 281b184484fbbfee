"""
framedclient: concurrent clients for framed TCP protocols, on Twisted.

The everyday names live here; the layers behind them (framing, codec,
protocol, connection, pool) are importable from their own modules.
"""

from framedclient._version import __version__ as __version__
from framedclient.backoff import ExponentialBackoff, FullJitterBackoff
from framedclient.client import FramedClient, Lease
from framedclient.clients import MemcacheClient, RedisClient
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
    "RemoteError",
    "RequestTimeout",
    "RequestTooLarge",
    "Unavailable",
]
