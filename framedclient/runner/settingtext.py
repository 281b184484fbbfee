"""
The client's settings as the status page shows them: with units
("request timeout 5 s", "max write buffer 8 MiB"), the word the command
line uses for an unset value ("off", "auto"), specs rather than object
reprs for the codec and the backoff policy, and the truth about tracing
(set, but inactive without OpenTelemetry).

Derived from each setting's :class:`~framedclient.config.Kind`, so a new
setting gets its unit without a change here.
"""

from __future__ import annotations

from typing import Any

import attrs

from framedclient.config import (
    ClientConfig,
    Collaborator,
    Count,
    HedgeDelay,
    Seconds,
    Switch,
    setting_of,
)

__all__ = ["setting_texts"]

_BINARY_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def byte_text(count: int) -> str:
    """
    ``8 MiB`` for a whole number of a binary unit, else ``N bytes``: the
    text is exact, as the setting is.
    """
    for unit, size in _BINARY_UNITS:
        if count >= size and count % size == 0:
            return f"{count // size} {unit}"
    return f"{count} bytes"


def setting_texts(
    config: ClientConfig,
    *,
    codec: str,
    backoff: str | None,
    tracing_active: bool,
) -> dict[str, str]:
    """
    One display text per :class:`ClientConfig` field.

    :param codec: the codec's spec (``fc1``), shown instead of its repr.
    :param backoff: the ``--backoff`` spec, if the runner has one.
    :param tracing_active: whether the client makes spans (what
        ``/v1/stats`` says as ``"tracing"``).
    """
    texts: dict[str, str] = {}
    for field in attrs.fields(ClientConfig):
        value: Any = getattr(config, field.name)
        texts[field.name] = _text(field.name, setting_of(field).kind, value)
    texts["codec"] = codec
    if config.backoff is None:
        texts["backoff"] = "grpc (default)"
    elif backoff is not None:
        texts["backoff"] = backoff
    if config.tracing and not tracing_active:
        texts["tracing"] = "off (opentelemetry-api is not installed)"
    elif not config.tracing:
        texts["tracing"] = "off (--no-tracing)"
    return texts


def _text(name: str, kind: Any, value: Any) -> str:
    if isinstance(kind, Switch):
        return "on" if value else "off"
    if isinstance(kind, Seconds) or (
        isinstance(kind, HedgeDelay) and not isinstance(value, str)
    ):
        if value is None:
            return "off"
        return f"{value:g} s"
    if isinstance(kind, Count):
        if value is None:
            return kind.word
        if kind.metavar == "BYTES":
            return byte_text(value)
        return str(value)
    if isinstance(kind, Collaborator) and value is not None:
        # An object's repr is nothing an operator typed.
        return type(value).__name__
    try:
        return str(kind.show(value, cli=True))
    except Exception:
        return repr(value)
