"""
Protocol clients built on :class:`~framedclient.FramedClient`: command
methods for a real server's protocol, over its pooled, self-healing
connections.

- :mod:`framedclient.clients.redis`: :class:`RedisClient` (RESP2: the
  everyday commands, pipelines, transactions, leases for ``WATCH``);
- :mod:`framedclient.clients.cluster`: :class:`RedisClusterClient` (Redis
  Cluster: slots, ``MOVED``/``ASK``, pipelines split per node) and
  :mod:`framedclient.clients.sentinel` (the master Redis Sentinel names,
  for :meth:`RedisClient.from_sentinel`);
- :mod:`framedclient.clients.memcache`: :class:`MemcacheClient`
  (memcached's binary protocol);
- :mod:`framedclient.clients.base`: :class:`ProtocolClient`, what they
  share with ``FramedClient``: ``start``/``close``, ``async with``,
  ``when_ready``, ``stats()`` and ``metrics``, so each works under
  :class:`~framedclient.FramedClientService` and ``twistd``.

They sit above the core and the codecs: a codec never imports a client.
"""

from framedclient.clients.base import ProtocolClient
from framedclient.clients.cluster import RedisClusterClient
from framedclient.clients.memcache import InvalidKey, MemcacheClient
from framedclient.clients.redis import Pipeline, RedisClient, RedisLease

__all__ = [
    "InvalidKey",
    "MemcacheClient",
    "Pipeline",
    "ProtocolClient",
    "RedisClient",
    "RedisClusterClient",
    "RedisLease",
]
