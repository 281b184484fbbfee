"""
Redis behind **Sentinel**: a :class:`~framedclient.clients.redis.RedisClient`
whose one host is whichever server the sentinels name as the master of a
service, and follows it through a failover.

:class:`SentinelMaster` is a :class:`~framedclient.discovery.HostSource`
(as ``srv:`` and ``dns:`` are): it asks the sentinels, in turn, ``SENTINEL
get-master-addr-by-name SERVICE`` and hands the client the master as its
host.  It asks again every ``interval`` seconds, and at once when the client
hints that its hosts may have changed (a connection lost or refused), so a
failover moves the client to the new master; the old one drains (what is in
flight finishes or fails there, see
:meth:`~framedclient.FramedClient.set_endpoints`).

A write in flight when the master dies fails with
:class:`~framedclient.errors.ConnectionLost` (``written=True``: it may have
run) and is not sent again; a write acknowledged by the old master but not
yet replicated is lost by Redis's asynchronous replication, which no client
can see (``WAIT`` narrows it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IDelayedCall

from framedclient.clients.redis import RedisClient
from framedclient.discovery import Host

__all__ = ["SentinelMaster", "from_sentinel"]


class SentinelMaster:
    """
    The master of ``service`` as the sentinels at ``sentinels`` see it, as
    a host source for :meth:`FramedClient.from_endpoint
    <framedclient.FramedClient.from_endpoint>`.

    :param interval: seconds between two questions while all is well.
    :param timeout: how long one sentinel may take to answer before the
        next is asked.
    """

    def __init__(
        self,
        reactor: Any,
        sentinels: Sequence[str],
        service: str,
        *,
        interval: float = 1.0,
        timeout: float = 1.0,
    ) -> None:
        self._reactor = reactor
        self._sentinels = list(sentinels)
        self._service = service
        self._interval = interval
        self._timeout = timeout
        self._clients: dict[str, RedisClient] = {}
        self._update: Callable[[list[Host]], None] | None = None
        self._timer: IDelayedCall | None = None
        self._asking = False
        self.master: str | None = None
        self.last_error: str | None = None
        self.switches = 0
        self.description = f"sentinel:{service}@{','.join(self._sentinels)}"

    def start(self, update: Callable[[list[Host]], None]) -> None:
        self._update = update
        self.refresh()

    def stop(self) -> None:
        self._update = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()

    def refresh(self) -> None:
        if self._update is None or self._asking:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._asking = True
        ensureDeferred(self._ask()).addBoth(self._asked)

    def _asked(self, _: object) -> None:
        self._asking = False
        if self._update is not None:
            self._timer = self._reactor.callLater(self._interval, self.refresh)

    async def _ask(self) -> None:
        errors = []
        for sentinel in self._sentinels:
            client = self._clients.get(sentinel)
            if client is None:
                client = RedisClient.from_endpoint(self._reactor, sentinel, pool_size=1)
                self._clients[sentinel] = client
            try:
                reply = await client.execute(
                    "SENTINEL",
                    "get-master-addr-by-name",
                    self._service,
                    timeout=self._timeout,
                )
            except Exception as e:
                errors.append(f"{sentinel}: {e}")
                continue
            if (
                not isinstance(reply, list)
                or len(reply) != 2
                or not isinstance(reply[0], bytes)
                or not isinstance(reply[1], bytes)
            ):
                errors.append(f"{sentinel}: knows no master named {self._service!r}")
                continue
            host, port = reply[0].decode(), int(reply[1])
            self.last_error = None
            self._use(host, port)
            return
        self.last_error = "; ".join(errors)

    def _use(self, host: str, port: int) -> None:
        where = f"{host}:{port}"
        if where == self.master or self._update is None:
            return
        if self.master is not None:
            self.switches += 1
        self.master = where
        if ":" in host:
            text = f"tcp6:host={host.replace(':', chr(92) + ':')}:port={port}"
        else:
            text = f"tcp:host={host}:port={port}"
        endpoint = clientFromString(self._reactor, text)  # type: ignore[no-untyped-call]
        self._update([Host(name=where, address=where, endpoint=endpoint)])

    def debug_state(self) -> dict[str, Any]:
        return {
            "source": self.description,
            "master": self.master,
            "switches": self.switches,
            "last_error": self.last_error,
        }


def from_sentinel(
    reactor: Any,
    sentinels: str | Sequence[str],
    service: str,
    *,
    interval: float = 1.0,
    **options: Any,
) -> RedisClient:
    """
    A :class:`~framedclient.RedisClient` connected to the master of
    ``service`` as the sentinels at ``sentinels`` (one endpoint string or a
    list) name it, following it through failovers.  ``options`` are
    :meth:`RedisClient.from_endpoint
    <framedclient.RedisClient.from_endpoint>`'s (``password``, ``db``,
    ``pool_size``...), for the master's connections.

    :param interval: seconds between two questions to the sentinels (also
        asked at once when a connection to the master is lost).
    :raises TypeError: ``sentinels`` is not a string or a list of them.
    :raises ValueError: no sentinel, or an empty ``service``.
    """
    if isinstance(sentinels, str):
        sentinels = [sentinels]
    elif not isinstance(sentinels, (list, tuple)) or not all(
        isinstance(s, str) for s in sentinels
    ):
        raise TypeError(
            f"sentinels must be an endpoint string or a list of them "
            f"(['tcp:10.0.0.1:26379', 'tcp:10.0.0.2:26379']), got {sentinels!r}"
        )
    if not sentinels:
        raise ValueError("sentinels is empty: give at least one sentinel's endpoint")
    if not isinstance(service, str) or not service:
        raise ValueError(
            f"service must be the master's name as the sentinels monitor it "
            f"('mymaster'), got {service!r}"
        )
    if interval <= 0:
        raise ValueError(f"interval must be positive, got {interval!r}")
    source = SentinelMaster(reactor, sentinels, service, interval=interval)
    return RedisClient.from_endpoint(reactor, source, **options)
