"""
The one type rule for the arguments of text-keyed protocols (a Redis
command's arguments, a memcached value): what becomes which bytes, and a
refusal that says what to do for anything else.

An argument is ``bytes`` (sent as is; ``bytearray`` and ``memoryview`` are
copied at the call, so a later change to the buffer changes nothing sent),
``str`` (UTF-8), ``int`` (decimal) or ``float`` (``repr``: the shortest
text that reads back as the same float).  ``bool`` is refused although it
is an ``int``: ``True`` would be sent as ``1`` where a reader might expect
``true`` or ``True``, and the protocols have no boolean to map it to.
Anything else is refused, never converted: ``bytes([104, 105])`` is
``b"hi"``, so a list sent through ``bytes()`` would store text nobody
wrote.
"""

from __future__ import annotations

__all__ = ["ARGUMENT_TYPES", "argument_bytes", "refusal"]

#: What the rule accepts, as a message shows it.
ARGUMENT_TYPES = "bytes, str, int or float"


def argument_bytes(value: object, where: str) -> bytes:
    """
    ``value`` as the bytes to send; the slow path (callers test for exact
    ``bytes`` themselves first, the usual case, in one test).

    :param where: names the argument for the error message, as the caller
        wrote it (``"set(): value"``, ``"SET: argument 2"``).
    :raises TypeError: ``value`` is of another type, or a ``bool``.
    """
    cls = value.__class__
    if cls is bytes:
        return value  # type: ignore[return-value]
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, int) and cls is not bool:
        return b"%d" % value
    if isinstance(value, float):
        return repr(value).encode("ascii")
    if isinstance(value, (bytes, bytearray, memoryview)):
        # A subclass of bytes, or a mutable buffer: copied now.
        return bytes(value)
    raise refusal(value, where)


def refusal(value: object, where: str) -> TypeError:
    """The error for an argument of the wrong type: what it was, what to do."""
    kind = type(value).__name__
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    if value is None:
        fix = "there is no null argument: leave it out, or delete the key"
    elif isinstance(value, bool):
        fix = "there is no boolean: pass 1 or 0 (or b'true' / b'false')"
    elif isinstance(value, dict):
        fix = (
            "serialize it first (json.dumps(value)), or store its fields "
            "one by one (Redis: hset(key, mapping))"
        )
    elif isinstance(value, (list, tuple, set, frozenset)):
        fix = (
            "serialize it first (json.dumps(items)), or pass its items as "
            "separate arguments where the command takes several (f(*items))"
        )
    else:
        fix = "convert it first (bytes, str(value), json.dumps(value), ...)"
    got = "None" if value is None else f"{kind} {shown}"
    return TypeError(
        f"{where} must be {ARGUMENT_TYPES}, got {got}: {fix}; nothing was sent"
    )
