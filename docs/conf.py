"""
Sphinx configuration of the framedclient documentation site.

Build it with ``.ci/docs`` (``sphinx-build -W --keep-going docs docs/_build``);
the pages are the Markdown files in this directory (read by myst-parser, so
they stay readable on GitHub), the API reference comes from the docstrings
(autodoc), and the tables and diagrams that describe the code are generated
from the code at build time by ``_ext/framedclient_docs.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The checkout's framedclient, not an installed one; and the local extension.
sys.path[:0] = [str(ROOT), str(HERE / "_ext")]

from framedclient._version import __version__  # noqa: E402

project = "framedclient"
author = "framedclient developers"
copyright = "2026, framedclient developers"
release = version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.graphviz",
    "sphinx.ext.intersphinx",
    # zope.interface classes (ICodecPlugin) as documented interfaces.
    "sphinxcontrib.zopeext.autointerface",
    "framedclient_docs",
]

# Links to the Python documentation resolve offline against the inventory
# of Debian's python3.11-doc package (.ci/docs installs it); nothing is
# fetched at build time.  Twisted has no such package: its names are exempt
# from nitpicking below.
PYTHON_INVENTORY = "/usr/share/doc/python3.11/html/objects.inv"
intersphinx_mapping = {
    "python": ("https://docs.python.org/3.11/", PYTHON_INVENTORY),
}
intersphinx_timeout = 1

#: The API reference: one page per module, in this order.  To document a new
#: module, add its dotted name here (one line); its page is generated at
#: build time from its docstrings.
framedclient_api_modules = [
    "framedclient",
    "framedclient.client",
    "framedclient.dispatch",
    "framedclient.upstreams",
    "framedclient.metrics.telemetry",
    "framedclient.config",
    "framedclient.validation",
    "framedclient.errors",
    "framedclient.framing",
    "framedclient.codecs",
    "framedclient.codecs.base",
    "framedclient.codecs.fc1",
    "framedclient.codecs.header",
    "framedclient.codecs.pipelined",
    "framedclient.codecs.redis",
    "framedclient.codecs.arguments",
    "framedclient.clients.redis",
    "framedclient.clients.redis_pubsub",
    "framedclient.codecs.redis_pubsub",
    "framedclient.codecs.memcache",
    "framedclient.clients.memcache",
    "framedclient.clients.base",
    "framedclient.codecs.dns",
    "framedclient.codecs.builtin",
    "framedclient.codecs.plugin",
    "framedclient.protocol",
    "framedclient.streams",
    "framedclient.connection",
    "framedclient.pool",
    "framedclient.balance",
    "framedclient.ketama",
    "framedclient.hedging",
    "framedclient.tracing",
    "framedclient.membership",
    "framedclient.health",
    "framedclient.discovery",
    "framedclient.engine",
    "framedclient.backoff",
    "framedclient.retry",
    "framedclient.deadlines",
    "framedclient.liveness",
    "framedclient.metrics",
    "framedclient.metrics.histogram",
    "framedclient.metrics.recorder",
    "framedclient.metrics.prometheus",
    "framedclient.service",
    "framedclient.server",
    "framedclient.gctune",
    "framedclient.testing",
    "framedclient.testing.memory",
    "framedclient.testing.faultproxy",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# _generated/ holds files that pages include; they are not pages themselves.
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]

# Every cross-reference must resolve: a broken :class: in a docstring fails
# the build (-W).  Names outside this project cannot resolve offline (no
# intersphinx inventories are fetched), so only those are exempt, by prefix.
nitpicky = True
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(twisted|zope|automat|attrs|attr|prometheus_client|hypothesis"
        r"|opentelemetry)\..*",
    ),
    # zope.interface classes in annotations, as autodoc prints them.
    (r"py:class", r"<InterfaceClass (twisted|zope)\..*"),
]
# Twisted and prometheus_client names that modules import only for type
# checking: signatures show them unqualified.
nitpick_ignore = [
    ("py:class", name)
    for name in (
        "IListeningPort",
        "IProtocol",
        "IProtocolFactory",
        "IReactorTime",
        "IDelayedCall",
        "Deferred",
        "Metric",
    )
] + [
    # Private helpers named in signatures of public methods.
    ("py:class", "framedclient.hedging._Hedged"),
]

autodoc_default_options = {
    "members": True,
    "undoc-members": True,
    "show-inheritance": True,
    # A package's __all__ re-exports names documented in their own modules;
    # documenting them twice would make every short reference ambiguous.
    "ignore-module-all": True,
}
autodoc_member_order = "bysource"
# Signatures read better without repeating every annotation; the types are in
# the signature line once ("description" would repeat them per parameter).
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

graphviz_output_format = "svg"

html_theme = "alabaster"
html_title = f"framedclient {release}"
html_static_path: list[str] = []
