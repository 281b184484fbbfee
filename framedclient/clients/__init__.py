"""
Protocol clients built on :class:`~framedclient.FramedClient`: command
methods for a real server's protocol, over its pooled, self-healing
connections.

- :mod:`framedclient.clients.redis`: :class:`RedisClient` (RESP2: the
  everyday commands, pipelines, transactions, leases for ``WATCH``);
- :mod:`framedclient.clients.memcache`: :class:`MemcacheClient`
  (memcached's binary protocol).

They sit above the core and the codecs: a codec never imports a client.
"""

from framedclient.clients.memcache import InvalidKey, MemcacheClient
from framedclient.clients.redis import Pipeline, RedisClient, RedisLease

__all__ = [
    "InvalidKey",
    "MemcacheClient",
    "Pipeline",
    "RedisClient",
    "RedisLease",
]
