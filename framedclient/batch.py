"""
N requests sent as **one unit**: one Deferred, one limiter slot, one
timeout, one result list in the caller's order.

A :class:`RequestBatch` is a request body like any other (it passes through
:meth:`FramedClient.request <framedclient.FramedClient.request>`, leases,
the dispatcher's queues, retries and hedging unchanged), but the
connection sends each of its bodies as a request of its own and gathers
their replies into the one result::

    results = await client.request(RequestBatch([b"a", b"b", b"c"]))
    # [b"A", b"B", RemoteError("no such key")]: one entry per body, in order

Why one unit rather than N requests: a caller who needs all N answers pays
for one Deferred, one slot and one settle instead of N (the fan-out of a
``get_many``, a pipeline), which is most of a small request's cost.

Semantics, for every codec:

- **Each slot** holds its reply's body, or, for an error reply, the
  :class:`~framedclient.errors.RemoteError` the codec made of it (a
  codec with statuses gives its own subclass): an error reply of one body
  is data, and does not hide the other replies.
- **The unit fails whole** only for what happens to all of it: its
  timeout (one deadline for all N), a cancel, a lost connection, a full
  table, a body the codec refuses (named by its index; nothing of the unit
  is sent).  Replies already received are then dropped with it.
- **Codecs with request IDs** (fc1, memcached, header codecs): each body
  gets its own ID; replies may come in any order and are put in their
  slots.  A unit that times out or is cancelled keeps every ID still
  unanswered reserved as a tombstone (with a cancel frame for each where
  the codec has them) until its late reply, ``abandoned_ttl`` or the end
  of the connection, exactly as a single request does; an answered ID is
  free at once.  Each ID counts against the connection's ``max_pending``
  (the table holds N entries), so a unit larger than the room left is
  refused with :class:`~framedclient.errors.Overloaded`.
- **Codecs matching in order** (``PipelinedCodec``): the unit takes the
  next N replies, as a Redis ``CommandBatch`` does; a unit that times out
  stays in the queue until its N replies have passed.  Codecs that allow
  one request at a time (``exclusive``) refuse units.
- **The limiter counts a unit as one request.** ``max_in_flight`` bounds
  the callers waiting, which is what it protects (memory and Deferreds of
  the client, fairness among callers); the load a unit puts on one
  connection is bounded by ``max_pending``, which counts its IDs.  Counting
  N would let one large unit wait behind the whole queue, or deadlock when
  N exceeds ``max_in_flight``.
- Metrics count the unit as one request, with the latency of its last
  reply.
"""

from __future__ import annotations

from collections.abc import Iterable

from framedclient.codecs.base import Message

__all__ = ["RequestBatch"]


class RequestBatch(Message):
    """
    Request bodies sent as one unit (see the module's documentation): its
    reply is a list with one entry per body, in this order.

    :param bodies: the request bodies (``bytes``, ``bytearray``, copied
        now, or :class:`~framedclient.codecs.base.Message`), at least one.
    :raises TypeError: ``bodies`` is not an iterable of bodies (a single
        ``bytes`` is refused: it is one body, not many), or one body is of
        a type no codec takes, named by its index.
    :raises ValueError: ``bodies`` is empty.

    :ivar bodies: the bodies, as a tuple.
    """

    __slots__ = ("bodies",)

    bodies: tuple[bytes | Message, ...]

    def __init__(self, bodies: Iterable[bytes | Message]) -> None:
        if isinstance(bodies, (bytes, bytearray, str, Message)) or not hasattr(
            bodies, "__iter__"
        ):
            raise TypeError(
                f"RequestBatch takes a list of request bodies, got one "
                f"{type(bodies).__name__} {bodies!r:.40}: RequestBatch([body]); "
                f"nothing was sent"
            )
        checked: list[bytes | Message] = []
        for i, body in enumerate(bodies):
            if body.__class__ is bytes or (
                isinstance(body, (bytes, Message))
                and not isinstance(body, RequestBatch)
            ):
                checked.append(body)
            elif isinstance(body, bytearray):
                checked.append(bytes(body))
            else:
                what = (
                    "a RequestBatch (batches do not nest: join their bodies)"
                    if isinstance(body, RequestBatch)
                    else type(body).__name__
                )
                hint = (
                    " (encode text first: body.encode())"
                    if isinstance(body, str)
                    else ""
                )
                raise TypeError(
                    f"RequestBatch: bodies[{i}] must be bytes or a Message, got "
                    f"{what}{hint}; nothing was sent"
                )
        if not checked:
            raise ValueError(
                "RequestBatch needs at least one body (an empty batch has no "
                "reply to wait for); nothing was sent"
            )
        super().__init__()
        self.bodies = tuple(checked)

    def __len__(self) -> int:
        """
        Bytes of payload of all the bodies: what the client counts against
        ``max_queued_bytes``.
        """
        return sum(len(b) for b in self.bodies)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RequestBatch) and other.bodies == self.bodies

    __hash__ = None  # type: ignore[assignment]  # a Message: mutable

    def __repr__(self) -> str:
        return f"<RequestBatch of {len(self.bodies)} bodies>"
