"""
framedclient: concurrent clients for framed TCP protocols, on Twisted.
"""

from framedclient.errors import (
    ClientClosed,
    ConnectionLost,
    CorruptFrame,
    FramedClientError,
    FrameTooLarge,
    Overloaded,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    Unavailable,
)

__version__ = "0.1.0"

__all__ = [
    "ClientClosed",
    "ConnectionLost",
    "CorruptFrame",
    "FrameTooLarge",
    "FramedClientError",
    "Overloaded",
    "ProtocolError",
    "RemoteError",
    "RequestTimeout",
    "Unavailable",
]
