"""
How a Redis Cluster's nodes are named and reached: the
``redis-cluster:HOST:PORT[,HOST:PORT...]`` string of the seeds, and the
endpoint string of a node the slot map names (``host:port``).

Pure functions, no I/O:
:class:`~framedclient.clients.cluster.RedisClusterClient` makes each node's
client from what these return.
"""

from __future__ import annotations

import re

from framedclient.clients.cluster_map import Address

__all__ = ["SCHEME", "cluster_seeds", "node_endpoint", "seed_address", "tls_settings"]

#: The prefix of a cluster's endpoint string.
SCHEME = "redis-cluster:"


def node_endpoint(where: Address, like: str | None = None) -> str:
    """
    The client endpoint string of the node at ``host:port``: over TLS, with
    the seed's TLS settings (``trustRoots``, ``certificate``,
    ``privateKey``...), when ``like`` (a seed) is a ``tls:`` string, so
    that a node learnt from the slot map is reached as the seeds are;
    plain TCP otherwise.
    """
    host, _, port = where.rpartition(":")
    if like is not None and like.startswith("tls:"):
        escaped = host.replace(":", "\\:")
        return f"tls:host={escaped}:port={port}" + tls_settings(like)
    if ":" in host:  # IPv6
        escaped = host.replace(":", "\\:")
        return f"tcp6:host={escaped}:port={port}"
    return f"tcp:host={host}:port={port}"


def tls_settings(seed: str) -> str:
    """
    The options of a ``tls:`` endpoint string other than its host and port
    (``":trustRoots=/etc/ca:certificate=c.pem"``), to reach another node
    the same way; ``""`` for none.
    """
    parts = re.split(r"(?<!\\):", seed)[1:]
    positional = 0
    kept = []
    for part in parts:
        name, equals, _ = part.partition("=")
        if not equals:
            positional += 1  # host, then port
            if positional <= 2:
                continue
        elif name in ("host", "port"):
            continue
        kept.append(part)
    return "".join(f":{p}" for p in kept)


def cluster_seeds(text: str) -> list[str]:
    """
    The seed endpoints of ``redis-cluster:HOST:PORT[,HOST:PORT...]``
    (IPv6 hosts in brackets: ``redis-cluster:[::1]:7000``), as
    :meth:`RedisClusterClient.from_endpoint
    <framedclient.clients.cluster.RedisClusterClient.from_endpoint>` takes
    them.

    :raises ValueError: ``text`` is not of that form; the message shows it.
    """
    if not text.startswith(SCHEME):
        raise ValueError(f"a cluster endpoint starts with {SCHEME!r}, got {text!r}")
    seeds = []
    for part in text[len(SCHEME) :].split(","):
        host, sep, port = part.strip().rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"{text!r}: {part!r} is not HOST:PORT; write "
                f"'redis-cluster:10.0.0.1:7000,10.0.0.2:7000'"
            )
        seeds.append(node_endpoint(f"{host}:{port}"))
    return seeds


def seed_address(seed: str) -> Address | None:
    """
    The node's own name (``host:port``) of a plain TCP seed endpoint
    (``"tcp:127.0.0.1:7000"`` or ``"tcp:host=h:port=p"``), so that the
    seed's client serves as that node's client too; ``None`` for another
    kind (``unix:``, ``tls:``), asked through its own endpoint string.
    """
    parts = seed.split(":")
    if parts[0] != "tcp" or len(parts) != 3:
        return None
    named = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    if named:
        host, port = named.get("host"), named.get("port")
    else:
        host, port = parts[1], parts[2]
    return f"{host}:{port}" if host and port else None
