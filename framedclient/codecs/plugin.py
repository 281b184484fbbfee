"""
Codecs as plugins: what ``twist framedclient --codec NAME[:options]`` can
name, found through Twisted's plugin system, so a package can offer its
own codec without touching framedclient.

A codec plugin is an object providing :class:`ICodecPlugin` (and
Twisted's ``IPlugin``) at module level in a ``twisted/plugins/*.py`` file of
any package on ``sys.path`` (that directory has no ``__init__.py``: it
extends Twisted's ``twisted.plugins`` package).  :class:`CodecPlugin` is a
ready-made one that imports its factory only when the codec is built, so
the plugin file stays cheap to import::

    # mypackage/twisted/plugins/mypackage_codecs.py
    from framedclient.codecs.plugin import CodecPlugin

    mycodec = CodecPlugin(
        name="mycodec",
        description="My protocol: u16 length, u32 ID.",
        options_help="max-frame=BYTES",
        factory="mypackage.codec.from_options",
    )

``from_options(options: str) -> Codec`` receives what follows ``NAME:``
(``""`` when nothing does) and raises ``ValueError`` with a one-line
message for options it cannot accept; :func:`option_keys` and
:func:`int_option` parse the usual ``key=value,...`` form.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING

import attrs
from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface, implementer

if TYPE_CHECKING:
    from framedclient.codecs.base import Codec

__all__ = [
    "CodecPlugin",
    "ICodecPlugin",
    "codec_plugins",
    "int_option",
    "option_keys",
]


class ICodecPlugin(Interface):  # type: ignore[misc]
    """
    A codec that ``--codec NAME[:options]`` can name.
    """

    name = Attribute("The NAME in --codec NAME[:options]: lower case, no ':'.")
    description = Attribute("One line for --help: what the codec speaks.")
    options_help = Attribute(
        "The options it accepts as written after 'NAME:' (e.g. "
        "'max-frame=BYTES'); empty if none."
    )

    def codec(options: str) -> Codec:  # type: ignore[misc]  # noqa: N805
        """
        Build the codec from the text after ``NAME:`` (``""`` if none).

        :raises ValueError: with a one-line message for options it cannot
            accept.
        """


@implementer(IPlugin, ICodecPlugin)
@attrs.frozen
class CodecPlugin:
    """
    A codec plugin whose factory is imported by name when the codec is
    built, so that listing plugins (``--help``) imports no codec module.

    :param name: the NAME in ``--codec NAME[:options]``.
    :param description: one line for ``--help``.
    :param options_help: the accepted options, as written after ``NAME:``.
    :param factory: the dotted name of a ``(options: str) -> Codec``
        callable, or the callable itself.
    """

    name: str
    description: str
    options_help: str
    factory: str | Callable[[str], Codec]

    def codec(self, options: str) -> Codec:
        factory = self.factory
        if isinstance(factory, str):
            from twisted.python.reflect import namedAny

            factory = namedAny(factory)  # type: ignore[no-untyped-call]
        return factory(options)  # type: ignore[operator,no-any-return]


def codec_plugins() -> dict[str, ICodecPlugin]:
    """
    Every codec plugin installed, by name, framedclient's own first.

    When two packages offer the same name, framedclient's built-in wins,
    then the plugin Twisted lists first: a package cannot silently change
    what ``--codec fc1`` means.
    """
    from twisted.plugin import getPlugins

    import twisted.plugins

    found: dict[str, ICodecPlugin] = {}
    # Built-ins are the plugins whose factory lives in framedclient.
    plugins = sorted(
        getPlugins(ICodecPlugin, twisted.plugins),
        key=lambda p: not str(getattr(p, "factory", "")).startswith("framedclient."),
    )
    for plugin in plugins:
        found.setdefault(str(plugin.name).lower(), plugin)
    return found


def option_keys(options: str, known: Collection[str]) -> dict[str, str]:
    """
    ``"key=value,key=value"`` as a dict, refusing unknown or repeated keys.

    :raises ValueError: naming the item that is wrong.
    """
    keys: dict[str, str] = {}
    if not options.strip():
        return keys
    for item in options.split(","):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise ValueError(f"{item.strip()!r} is not key=value")
        if key not in known:
            raise ValueError(f"unknown key {key!r} (known: {', '.join(sorted(known))})")
        if key in keys:
            raise ValueError(f"key {key!r} given twice")
        keys[key] = value.strip()
    return keys


def int_option(
    keys: dict[str, str],
    key: str,
    default: int,
    *,
    minimum: int | None = None,
    choices: Iterable[int] | None = None,
) -> int:
    """
    The integer value of ``key`` (decimal, or ``0x``...), or ``default``.

    :raises ValueError: not an integer, not one of ``choices``, or below
        ``minimum``.
    """
    raw = keys.get(key)
    if raw is None:
        return default
    try:
        value = int(raw, 0)
    except ValueError:
        raise ValueError(f"{key} must be an integer, got {raw!r}") from None
    if choices is not None:
        allowed = tuple(choices)
        if value not in allowed:
            raise ValueError(
                f"{key} must be one of {', '.join(map(str, allowed))}, got {value}"
            )
    if minimum is not None and value < minimum:
        raise ValueError(f"{key} must be at least {minimum}, got {value}")
    return value
