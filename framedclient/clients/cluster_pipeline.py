"""
Pipelines and transactions over a Redis Cluster: a pipeline is split per
node (each command to its slot's master, in order per node) and its
replies re-assembled in the caller's order; a transaction runs on the one
node of its one slot (:class:`~framedclient.clients.cluster_map.CrossSlot`
before anything is sent otherwise).  ``MOVED``, ``ASK`` and
``TRYAGAIN`` replies inside a batch are followed per command, as
:mod:`framedclient.clients.cluster_redirects` follows them for one.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.python.failure import Failure

from framedclient.clients.cluster_map import (
    Address,
    command_keys,
    command_words,
    parse_redirect,
    slot_of,
    split_commands,
)
from framedclient.clients.cluster_redirects import ASKING, RETRY_LATER, Router
from framedclient.codecs.redis import CommandBatch
from framedclient.errors import RemoteError, Unavailable

__all__ = ["send_batch"]


def send_batch(
    router: Router, batch: CommandBatch, timeout: float | None
) -> Deferred[Any]:
    # Slots are found (and a cross-slot transaction refused) here, at
    # the call, before anything is sent.
    commands = split_commands(batch, batch.expected_replies)
    words = [command_words(c) for c in commands]
    if words[0][0].upper() == b"MULTI":
        keys = [k for w in words[1:-1] for k in command_keys(w)]
        slot = slot_of("a transaction", keys)
        return ensureDeferred(_transaction(router, batch, slot, timeout))
    slots = [slot_of(w[0].decode("ascii", "replace"), command_keys(w)) for w in words]
    return ensureDeferred(_pipeline(router, commands, slots, timeout))


async def _pipeline(
    router: Router,
    commands: list[bytes],
    slots: list[int | None],
    timeout: float | None,
) -> Any:
    # Each command to its slot's master, in order per node; replies
    # back in the caller's order.
    results: list[Any] = [None] * len(commands)
    pending = list(range(len(commands)))
    asking: dict[int, Address] = {}
    tries = 0
    while pending:
        if not router.loaded:
            await router.refresh()
        groups: dict[tuple[Address, bool], list[int]] = {}
        for i in pending:
            ask = asking.get(i)
            where = ask if ask is not None else router.owner(slots[i])
            if where is None:
                raise Unavailable(f"no master serves slot {slots[i]} in the map")
            groups.setdefault((where, ask is not None), []).append(i)
        sent = []
        for (where, via_ask), indexes in groups.items():
            body = []
            for i in indexes:
                if via_ask:
                    body.append(ASKING)
                body.append(commands[i])
            sent.append(_send_to_node(router.node(where).client, body, timeout))
        outcomes = await DeferredList(sent, consumeErrors=True)
        pending, asking = [], {}
        again: BaseException | None = None
        for ((_, via_ask), indexes), (ok, value) in zip(
            groups.items(), outcomes, strict=True
        ):
            if not ok:
                error = value.value
                if not router.unsent(error):
                    raise error  # some of them may have run
                pending += indexes
                again = error
                continue
            parts = value[1::2] if via_ask else value
            for i, (good, reply) in zip(indexes, parts, strict=True):
                if good:
                    results[i] = (good, reply)
                    continue
                text = reply.decode("utf-8", "replace")
                redirect = parse_redirect(text)
                if redirect is not None and redirect[0] == "ASK":
                    asking[i] = redirect[2]
                    router.counts["ask"] += 1
                elif redirect is not None:
                    router.map.move(redirect[1], redirect[2])
                    router.counts["moved"] += 1
                elif not text.startswith(RETRY_LATER):
                    results[i] = (good, reply)
                    continue
                pending.append(i)
                again = RemoteError(text)
        if pending:
            pending.sort()
            if tries >= router.max_redirects:
                for i in pending:
                    results[i] = (False, str(again).encode())
                break
            tries += 1
            if not asking:
                await router.sleep(tries)
                await router.refresh()
    return results


async def _transaction(
    router: Router, batch: CommandBatch, slot: int | None, timeout: float | None
) -> Any:
    tries = 0
    while True:
        if not router.loaded:
            await router.refresh()
        owner = router.owner(slot)
        if owner is None:
            raise Unavailable(f"no master serves slot {slot} in the map")
        try:
            parts = await router.node(owner).client.request(batch, timeout)
        except Exception as e:
            if not router.unsent(e) or tries >= router.max_redirects:
                raise
            tries += 1
            await router.sleep(tries)
            await router.refresh()
            continue
        # A slot that moved: every queued command answered MOVED (or
        # ASK) and EXEC answered EXECABORT, so nothing ran.
        redirects = [
            parse_redirect(body.decode("utf-8", "replace"))
            for ok, body in parts[1:-1]
            if not ok
        ]
        if parts[-1][0] or not redirects or tries >= router.max_redirects:
            return parts
        tries += 1
        for redirect in redirects:
            if redirect is not None and redirect[0] == "MOVED":
                router.map.move(redirect[1], redirect[2])
                router.counts["moved"] += 1
        # ASK (a slot being migrated): wait for the migration to end.
        await router.sleep(tries)
        await router.refresh()


def _send_to_node(client: Any, commands: list[bytes], timeout: float | None) -> Any:
    # A batch's reply is its (ok, body) pairs; a batch of one command is
    # answered as that command alone (a body, or a RemoteError), so it is
    # put in the same shape.
    if len(commands) > 1:
        return client.request(CommandBatch.of(commands), timeout)

    def error_reply(failure: Failure) -> Any:
        if type(failure.value) is RemoteError:
            return [(False, failure.value.message.encode("utf-8", "replace"))]
        return failure

    d = client.request(commands[0], timeout)
    return d.addCallbacks(lambda body: [(True, body)], error_reply)
