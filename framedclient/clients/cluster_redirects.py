"""
What a Redis Cluster client does about a command that did not run where it
was sent: the re-send loop of one command (``MOVED``, ``ASK``,
``TRYAGAIN``/``CLUSTERDOWN``, a node lost or unreachable), under the
contract of docs/redis-cluster.md:

- ``MOVED slot host:port``: the node did not run the command; the slot's
  new owner goes into the map at once, a refresh of the whole map is
  started (at most one in flight), and the command is sent again there.
- ``ASK slot host:port``: the slot is migrating and this key has already
  left; the command is sent once to that node after ``ASKING`` on the same
  connection; the map does not change.
- ``TRYAGAIN``/``CLUSTERDOWN``: nothing ran; sent again after a short,
  growing delay.
- a connection lost *before* the command was written, or no connection to
  the node: nothing ran; the map is refreshed and the command sent again.
  Lost *after* it was written: it may have run, so only a read-only
  command is sent again; any other fails with
  :class:`~framedclient.errors.ConnectionLost` (``written=True``).

Each command gets at most ``max_redirects`` such re-sends; then the last
error is raised.  The client's state reaches these functions through
:class:`Router`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred

from framedclient.clients.cluster_map import Address, SlotMap, parse_redirect
from framedclient.codecs.redis import CommandBatch, command
from framedclient.errors import ConnectionLost, RemoteError, Unavailable

if TYPE_CHECKING:
    from framedclient.clients.redis import RedisClient

__all__ = ["ASKING", "RETRY_LATER", "Router", "resend"]

#: Sent before a command that an ``ASK`` redirect sends to another node.
ASKING = command("ASKING")
#: Error replies that mean "nothing ran; try again shortly".
RETRY_LATER = ("TRYAGAIN", "CLUSTERDOWN")


class Router(Protocol):
    """
    What the re-send loops need of the cluster client: its map, its nodes'
    clients, a map refresh (one in flight at most), the backoff, and which
    errors prove a command was not sent.
    """

    counts: dict[str, int]
    max_redirects: int

    @property
    def loaded(self) -> bool: ...

    @property
    def map(self) -> SlotMap: ...

    def owner(self, slot: int | None) -> Address | None: ...

    def node(self, where: Address) -> RedisClient: ...

    def refresh(self) -> Deferred[None]: ...

    def sleep(self, tries: int) -> Deferred[None]: ...

    def unsent(self, error: BaseException) -> bool: ...


async def resend(
    router: Router,
    body: bytes,
    slot: int | None,
    read_only: bool,
    timeout: float | None,
    tries: int,
    error: BaseException | None = None,
) -> Any:
    asking: Address | None = None
    while True:
        if error is not None:
            if tries >= router.max_redirects:
                raise error
            tries += 1
            asking = await _after(router, error, read_only, tries)
            error = None
        try:
            if asking is not None:
                batch = CommandBatch.of([ASKING, body])
                parts = await router.node(asking).client.request(batch, timeout)
                ok, reply = parts[1]
                if ok:
                    return reply
                raise RemoteError(reply.decode("utf-8", "replace"))
            if not router.loaded:
                await router.refresh()
            owner = router.owner(slot)
            if owner is None:
                raise Unavailable(f"no master serves slot {slot} in the map")
            return await router.node(owner).client.request(body, timeout)
        except Exception as e:
            error = e


async def _after(
    router: Router, error: BaseException, read_only: bool, tries: int
) -> Address | None:
    """
    What to do about ``error`` before sending again: update the map,
    wait, or give up (raise it).  Returns the node to send to after
    ``ASKING``, for an ``ASK`` redirect.
    """
    if isinstance(error, RemoteError):
        redirect = parse_redirect(error.message)
        if redirect is not None:
            kind, slot, where = redirect
            if kind == "ASK":
                router.counts["ask"] += 1
                return where
            router.counts["moved"] += 1
            router.map.move(slot, where)
            router.refresh().addErrback(lambda _: None)
            return None
        if error.message.startswith(RETRY_LATER):
            router.counts["retried"] += 1
            await router.sleep(tries)
            if error.message.startswith("CLUSTERDOWN"):
                await router.refresh()
            return None
        raise error
    if router.unsent(error) or (isinstance(error, ConnectionLost) and read_only):
        # The node is gone or unreachable: maybe failed over.
        router.counts["retried"] += 1
        await router.sleep(tries)
        try:
            await router.refresh()
        except Unavailable:
            pass
        return None
    raise error
