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

#: The API reference, generated at build time (_ext/framedclient_docs.py):
#: its first page documents every name of ``framedclient.__all__`` (what
#: ``from framedclient import ...`` offers); then one page per public module
#: (found by walking the package, so modules that move or appear need no
#: edit here), without the names already on the first page.  These
#: packages are the applications built on the library (the gateway and the
#: benchmark), documented by their command lines (cli.md, benchmarks.md):
framedclient_api_exclude = ["framedclient.runner", "framedclient.bench"]

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
    # The type variable of a decorator's signature.
    ("py:class", "framedclient.config._F"),
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
# A class's page shows its constructor's docstring too: FramedClient's lists
# every setting there (framedclient.config.documents_settings).
autoclass_content = "both"
# Signatures read better without repeating every annotation; the types are in
# the signature line once ("description" would repeat them per parameter).
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# Names in signatures and in a page's table of contents without their
# module, which the page title already says: "FramedClient.request", not
# "framedclient.client.FramedClient.request".
add_module_names = False
# A signature too long for one line (FramedClient's, with every setting)
# gets one parameter per line.
python_maximum_signature_line_length = 88
toc_object_entries_show_parents = "hide"

myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

graphviz_output_format = "svg"

# Furo (as attrs, pip and black use): readable at any width, a sidebar
# that shows the whole site.  Its own CSS is widened a little in
# _static/framedclient.css so that code blocks fit (tests/test_docs_site.py).
html_theme = "furo"
html_title = f"framedclient {release}"
html_static_path = ["_static"]
html_css_files = ["framedclient.css"]

# Sphinx's "smart quotes" also turn -- into an en dash: "--pool-size" in
# the option tables became an en dash and "pool-size", which breaks when
# copied into a shell.  Every quote and dash in these pages stays as typed.
smartquotes = False
