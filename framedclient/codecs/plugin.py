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

import sys
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING

import attrs
from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface, implementer

if TYPE_CHECKING:
    from framedclient.codecs.base import Codec

__all__ = [
    "CodecPlugin",
    "CodecPluginFailed",
    "ICodecPlugin",
    "broken_plugin_modules",
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


class CodecPluginFailed(ValueError):
    """
    A codec plugin's factory could not be imported, or raised something
    other than :exc:`ValueError`: the plugin's fault, not the options'.
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
        """
        :raises ValueError: for options the factory refuses, and also when
            the factory cannot be imported or fails otherwise (naming the
            plugin and its factory: a bug of the plugin's package, which
            the operator reports, not a traceback).
        """
        factory = self.factory
        if isinstance(factory, str):
            from twisted.python.reflect import namedAny

            try:
                factory = namedAny(factory)  # type: ignore[no-untyped-call]
            except Exception as error:
                raise self._failed("cannot be imported", error) from error
        try:
            return factory(options)  # type: ignore[operator,no-any-return]
        except ValueError:
            raise  # the options' fault: the message says which
        except Exception as error:
            raise self._failed("failed", error) from error

    def _failed(self, what: str, error: Exception) -> CodecPluginFailed:
        text = " ".join(f"{type(error).__name__}: {error}".split())
        return CodecPluginFailed(
            f"the {self.name!r} codec plugin's factory {self.factory!r} "
            f"{what} ({text}); this is a bug or a missing "
            f"dependency of the package that installs it"
        )


def codec_plugins() -> dict[str, ICodecPlugin]:
    """
    Every codec plugin installed, by name, framedclient's own first.

    When two packages offer the same name, framedclient's built-in wins,
    then the plugin Twisted lists first: a package cannot silently change
    what ``--codec fc1`` means.
    """
    import twisted.plugin

    import twisted.plugins

    found: dict[str, ICodecPlugin] = {}
    # Twisted logs a plugin module that fails to import as a traceback, on
    # every scan (it caches only modules that load); this scan records the
    # failure instead, for one line that names the module.
    names = vars(twisted.plugin)
    logged = names["log"]
    _BROKEN.clear()
    names["log"] = _RecordFailures()
    try:
        scanned = list(twisted.plugin.getPlugins(ICodecPlugin, twisted.plugins))
    finally:
        names["log"] = logged
    # Built-ins are the plugins whose factory lives in framedclient.
    plugins = sorted(
        scanned,
        key=lambda p: not str(getattr(p, "factory", "")).startswith("framedclient."),
    )
    for plugin in plugins:
        found.setdefault(str(plugin.name).lower(), plugin)
    return found


#: Plugin modules that failed to import, by module name: what went wrong, in
#: one line (see :func:`broken_plugin_modules`).
_BROKEN: dict[str, str] = {}


class _RecordFailures:
    """
    Stands in for ``twisted.python.log`` inside :func:`twisted.plugin.getPlugins`
    during :func:`codec_plugins`: its only use there is ``log.err()`` in an
    ``except`` block, for a plugin module that raised on import.
    """

    def err(self, *args: object, **kwargs: object) -> None:
        error, tb = sys.exc_info()[1:]
        module = "a plugin module"
        where = ""
        while tb is not None:
            frame_module = tb.tb_frame.f_locals.get("pluginModule")
            if frame_module is not None:
                module = str(getattr(frame_module, "name", module))
            where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
            tb = tb.tb_next
        text = " ".join(f"{type(error).__name__}: {error}".split())
        _BROKEN[module] = f"{text} ({where})" if where else text


def broken_plugin_modules() -> dict[str, str]:
    """
    The plugin modules that raised on import during the last
    :func:`codec_plugins`,
    by name, each with its error and where it was raised: a package's broken
    plugin file then costs the operator one line saying which file and why
    (its codecs are missing), not a traceback per scan.
    """
    return dict(_BROKEN)


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
