"""
``--codec``: a wire format spelt on the command line, ``NAME[:options]``.

The names are codec plugins (:mod:`framedclient.codecs.plugin`): the
built-ins (``fc1``, ``lines``, ``netstring``, ``redis``, ``length:``,
``memcache-binary``, ``dns``; their option grammar is in
:mod:`framedclient.codecs.builtin`) and any a package installed::

    fc1                                  the reference protocol (default)
    fc1:max-frame=1048576
    lines:delimiter=lf,max-frame=4096
    length:size=2,order=little,header=8,id-offset=0,id-size=4,kind-offset=4

Every mistake is a :exc:`ValueError` with a one-line message that quotes the
spec, says what is wrong and lists the accepted forms, so the option parser
can show it as is.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Mapping

from framedclient.codecs import Codec
from framedclient.codecs.plugin import (
    CodecPluginFailed,
    ICodecPlugin,
    broken_plugin_modules,
    codec_plugins,
)

__all__ = [
    "accepted_codec_forms",
    "codec_help",
    "codec_overhead",
    "describe_codec",
    "installed_codecs",
    "parse_codec",
]


def parse_codec(spec: str) -> Codec:
    """
    Build the codec a ``--codec`` value names.

    :param spec: ``NAME[:options]``, NAME one of the installed codec plugins.
    :raises ValueError: with a one-line message naming the mistake and the
        accepted forms.
    """
    name, _, params = spec.strip().partition(":")
    name = name.strip().lower()
    plugins = installed_codecs()
    try:
        plugin = plugins.get(name)
        if plugin is None:
            raise ValueError(f"unknown codec {name!r}")
        codec: Codec = plugin.codec(params)
        return codec
    except CodecPluginFailed as error:
        # The spec is fine; the forms would not help.
        raise ValueError(f"invalid codec {spec!r}: {error}") from None
    except ValueError as error:
        raise ValueError(
            f"invalid codec {spec!r}: {error}; {accepted_codec_forms(plugins)}"
        ) from None
    except Exception as error:
        # A plugin of its own making (not a CodecPlugin) that failed.
        text = " ".join(f"{type(error).__name__}: {error}".split())
        raise ValueError(
            f"invalid codec {spec!r}: the {name!r} codec plugin failed "
            f"({text}); this is a bug of the package that installs it"
        ) from None


def installed_codecs() -> dict[str, ICodecPlugin]:
    """
    The installed codec plugins, as :func:`codec_plugins` finds them; a
    plugin module that failed to import is said once per process on stderr,
    in one line naming the module and its error (its codecs are missing),
    where Twisted would print a traceback on every scan.
    """
    plugins = codec_plugins()
    for module, error in broken_plugin_modules().items():
        if module not in _REPORTED:
            _REPORTED.add(module)
            sys.stderr.write(
                f"framedclient: warning: plugin module {module} failed to "
                f"import, its codecs are not available: {error}\n"
            )
            sys.stderr.flush()
    return plugins


_REPORTED: set[str] = set()


def accepted_codec_forms(plugins: Mapping[str, object] | None = None) -> str:
    """
    ``accepted forms: 'fc1[:max-frame=BYTES]', ...``: one form per
    installed codec, for error messages.
    """
    found = installed_codecs() if plugins is None else plugins
    forms = []
    for name, plugin in found.items():
        options = getattr(plugin, "options_help", "")
        forms.append(f"'{name}[:{options}]'" if options else f"'{name}'")
    return "accepted forms: " + ", ".join(forms) + " (every key optional)"


def codec_help(width: int = 80) -> str:
    """
    The ``--codec`` section of ``--help``: every installed codec, with its
    options and description (indented, so the usage text keeps it as is).
    """
    lines = ["--codec NAME[:options] (every key optional; BYTES and N are integers):"]
    for name, plugin in installed_codecs().items():
        options = getattr(plugin, "options_help", "")
        form = f"  {name}[:{options}]" if options else f"  {name}"
        # Long forms break after a comma: they hold no spaces to break at.
        while len(form) > width and "," in form[:width]:
            cut = form.rindex(",", 0, width) + 1
            lines.append(form[:cut])
            form = " " * (len(name) + 4) + form[cut:]
        lines.append(form)
        lines.extend(
            textwrap.wrap(
                str(getattr(plugin, "description", "")),
                width,
                initial_indent="      ",
                subsequent_indent="      ",
                break_on_hyphens=False,
            )
        )
    return "\n".join(lines)


def describe_codec(spec: str) -> str:
    """
    The spec normalised for logs: lower-case name, no spaces.
    """
    return "".join(spec.split()) or "fc1"


def codec_overhead(codec: Codec) -> int:
    """
    Bytes a codec adds around a request body (framing and header).

    The gateway subtracts it from ``codec.max_frame`` to know the largest
    body it can forward, so an oversized body is refused with a 400 before
    it is sent, instead of making the server close the connection and fail
    every other request on it.
    """
    from framedclient.codecs import REQUEST

    try:
        return len(codec.encode(REQUEST, 1, b""))
    except ValueError:
        # A codec that refuses an empty body (Redis: not a command) frames
        # bodies as they are.
        return 0
