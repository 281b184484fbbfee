"""
Generates, at every build, the parts of the documentation that describe the
code, from the code itself, so they cannot drift:

- ``api/``: the public API (``framedclient.__all__``) on one page, then one
  autodoc page per public module (``conf.py``'s ``framedclient_api_exclude``
  leaves some out), and their table of contents;
- ``_generated/gateway-options.md`` and ``_generated/framedserver-options.md``:
  every command-line option, from the option definitions;
- ``_generated/settings.md``: every client setting, its default and help;
- ``_generated/metrics.md``: every metric ``twist framedclient`` exposes,
  scraped from a gateway started for the purpose on 127.0.0.1;
- ``_generated/connection-states.dot`` and
  ``_generated/connection-transitions.md``: the connection state machine,
  read from the Automat machine in :mod:`framedclient.connection`.

Files are rewritten only when their text changes, so Sphinx rebuilds only
the pages that include them.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import attrs
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# -- API pages ---------------------------------------------------------------


def api_modules(exclude: list[str]) -> list[str]:
    """
    Every public module of framedclient: not private (no ``_`` at the start
    of any part of its name), not ``__main__``, not under ``exclude``.
    """
    import framedclient

    found = []
    for info in pkgutil.walk_packages(framedclient.__path__, "framedclient."):
        parts = info.name.split(".")
        if any(part.startswith("_") for part in parts):
            continue
        if any(info.name == e or info.name.startswith(e + ".") for e in exclude):
            continue
        found.append(info.name)
    return sorted(found)


def public_api() -> dict[str, list[tuple[str, Any]]]:
    """
    ``framedclient.__all__`` in groups, clients first: the names a user
    imports, each documented once, on the reference's first page.
    """
    import framedclient

    groups: dict[str, list[tuple[str, Any]]] = {
        "Clients": [],
        "Framing and codecs": [],
        "Errors": [],
        "More": [],
    }
    for name in framedclient.__all__:
        obj = getattr(framedclient, name)
        home = getattr(obj, "__module__", "")
        if isinstance(obj, type) and issubclass(obj, BaseException):
            groups["Errors"].append((name, obj))
        elif home.startswith(
            ("framedclient.client", "framedclient.clients", "framedclient.service")
        ) or home == "framedclient.config":
            groups["Clients"].append((name, obj))
        elif home.startswith(("framedclient.framing", "framedclient.codecs")):
            groups["Framing and codecs"].append((name, obj))
        else:
            groups["More"].append((name, obj))
    # The one name every program starts from comes first.
    groups["Clients"].sort(key=lambda item: item[0] != "FramedClient")
    return {title: names for title, names in groups.items() if names}


def _directive(obj: Any) -> str:
    if isinstance(obj, type):
        return "autoexception" if issubclass(obj, BaseException) else "autoclass"
    if callable(obj):
        return "autofunction"
    return "autodata"


def api_pages(srcdir: Path, exclude: list[str]) -> None:
    api = srcdir / "api"
    modules = api_modules(exclude)
    groups = public_api()
    public = {id(obj) for names in groups.values() for _name, obj in names}
    wanted = {f"{name}.rst" for name in modules} | {"index.rst"}
    if api.is_dir():
        for stale in api.glob("*.rst"):
            if stale.name not in wanted:
                stale.unlink()
    toc = "\n".join(f"   {name}" for name in modules if name != "framedclient")
    _write(
        api / "index.rst",
        "API reference\n=============\n\n"
        "Generated from the docstrings. :doc:`framedclient` documents what "
        "``from framedclient import ...`` offers: start there. The modules "
        "behind it follow, one page each, for the layers you may extend or "
        "replace (framing, codecs, pick policies, discovery) and for the "
        "details.\n\n"
        ".. toctree::\n   :maxdepth: 1\n   :caption: The public API\n\n"
        "   framedclient\n\n"
        f".. toctree::\n   :maxdepth: 1\n   :caption: Modules\n\n{toc}\n",
    )
    sections = []
    for title, names in groups.items():
        body = "\n\n".join(
            f".. {_directive(obj)}:: framedclient.{name}" for name, obj in names
        )
        sections.append(f"{title}\n{'-' * len(title)}\n\n{body}\n")
    title = "``framedclient``: the public API"
    _write(
        api / "framedclient.rst",
        f"{title}\n{'=' * len(title)}\n\n"
        ".. automodule:: framedclient\n   :no-members:\n\n"
        "Each name here is ``from framedclient import NAME``; the modules "
        "that define them have pages of their own (see the "
        ":doc:`index`), which list what else they hold.\n\n"
        + "\n".join(sections),
    )
    for name in modules:
        if name == "framedclient":
            continue
        module = importlib.import_module(name)
        # Documented on the first page: listed here by name only, so that
        # each object has one description and every reference one target.
        moved = sorted(
            member
            for member, obj in vars(module).items()
            if id(obj) in public and getattr(obj, "__module__", None) == name
        )
        options = f"   :exclude-members: {', '.join(moved)}\n" if moved else ""
        note = (
            "\nAlso defined here, documented with the public API: "
            + ", ".join(f":class:`~framedclient.{m}`" for m in moved)
            + ".\n"
            if moved
            else ""
        )
        title = f"``{name}``"
        _write(
            api / f"{name}.rst",
            f"{title}\n{'=' * len(title)}\n\n.. automodule:: {name}\n{options}{note}",
        )


# -- options -------------------------------------------------------------------


def option_tables(generated: Path) -> None:
    from framedclient.runner import framedserver
    from framedclient.runner.options import options_table

    _write(generated / "gateway-options.md", options_table())
    rows = ["| option | default | meaning |", "| --- | --- | --- |"]
    for long, _short, default, help in framedserver.Options.optParameters:
        shown = "off" if default is None else f"`{default}`"
        rows.append(f"| `--{long} VALUE` | {shown} | {_cell(help)} |")
    rows.append("| `--version` | | print framedclient's version and exit |")
    _write(generated / "framedserver-options.md", "\n".join(rows) + "\n")


def settings_table(generated: Path) -> None:
    """
    Every client setting once, with its default and what it does, from
    :func:`framedclient.config.settings_docs` (what ``help()`` shows too).
    """
    from framedclient.config import ClientConfig, setting_of, settings_docs

    options = {
        field.name: setting_of(field).option or field.name.replace("_", "-")
        for field in attrs.fields(ClientConfig)
    }
    rows = [
        "| setting | default | meaning | option |",
        "| --- | --- | --- | --- |",
    ]
    for name, kind, default, help in settings_docs():
        rows.append(
            f"| `{name}` ({_cell(kind)}) | `{_cell(default)}` | {_cell(help)} "
            f"| `--{options[name]}` |"
        )
    _write(generated / "settings.md", "\n".join(rows) + "\n")


# -- metrics -------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')


def _families(text: str) -> dict[str, dict[str, Any]]:
    """
    Prometheus text, as ``{name: {"type", "help", "labels"}}``.
    """
    families: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help = line[7:].partition(" ")
            families.setdefault(name, {"labels": set()})["help"] = help
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            families.setdefault(name, {"labels": set()})["type"] = kind
        elif line and not line.startswith("#"):
            match = _SAMPLE.match(line)
            if match is None:
                continue
            name = match.group(1)
            if name not in families:
                name = re.sub(r"_(bucket|sum|count|created)$", "", name)
            labels = set(_LABEL.findall(match.group(2) or "")) - {"le"}
            families.setdefault(name, {"labels": set()})["labels"] |= labels
    return families


def _library_metrics() -> str:
    # What an application's own FramedClient exposes (no gateway).
    from framedclient.metrics import prometheus_text
    from framedclient.testing import memory_client

    client, server = memory_client(pool_size=1)
    client.request(b"hello")
    server.flush()
    return prometheus_text(
        client.metrics, client.gauges(), use_prometheus_client=False
    ).decode()


def _gateway_metrics(root: Path) -> str:
    """
    ``GET /metrics`` of a ``twist framedclient`` started on 127.0.0.1 with
    its embedded backend, after one request, so that labelled families
    have a sample.
    """
    env = {**os.environ, "PYTHONPATH": str(root)}
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "twisted",
                "--log-format",
                "json",
                "framedclient",
                "--http",
                "tcp:0:interface=127.0.0.1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            env=env,
        )
        try:
            url = None
            assert proc.stdout is not None
            for line in proc.stdout:
                try:
                    event = json.loads(line.strip("\x1e \n"))
                except ValueError:
                    continue
                if "http_url" in event:
                    url = event["http_url"]
                    break
            if url is None:
                raise ExtensionError("twist framedclient did not start")
            with urllib.request.urlopen(url + "v1/request", b"hello", timeout=30):
                pass
            with urllib.request.urlopen(url + "metrics", timeout=30) as reply:
                text: str = reply.read().decode()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return text


def metrics_table(root: Path, generated: Path) -> None:
    library = _families(_library_metrics())
    gateway = _families(_gateway_metrics(root))
    missing = set(library) - set(gateway)
    if missing:
        raise ExtensionError(f"the gateway does not expose {sorted(missing)}")
    rows = [
        "| metric | type | labels | from | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, family in gateway.items():
        labels = ", ".join(f"`{label}`" for label in sorted(family["labels"]))
        where = "client" if name in library else "gateway"
        rows.append(
            f"| `{name}` | {family.get('type', '')} | {labels} | {where} "
            f"| {_cell(family.get('help', ''))} |"
        )
    _write(generated / "metrics.md", "\n".join(rows) + "\n")
    _write(generated / "metric-labels.md", label_values())


def label_values() -> str:
    from framedclient.connection import STATES
    from framedclient.errors import OUTCOMES
    from framedclient.health import STATES as HEALTH_STATES
    from framedclient.metrics import CONNECTION_EVENTS

    def listed(values: tuple[str, ...]) -> str:
        return ", ".join(f"`{v}`" for v in values)

    return (
        "| label | metric | values |\n| --- | --- | --- |\n"
        f"| `outcome` | `framedclient_requests_total` | {listed(OUTCOMES)} |\n"
        "| `outcome` | `framedclient_request_latency_seconds` | `ok` for replies, "
        "`error` for sent requests that failed |\n"
        f"| `event` | `framedclient_connection_events_total` "
        f"| {listed(CONNECTION_EVENTS)} |\n"
        f"| `state` | `framedclient_connections` | {listed(STATES)} |\n"
        f"| `state` | `framedclient_upstream_health` | {listed(HEALTH_STATES)} |\n"
        "| `kind` | `framedclient_dropped_replies_total` | `late` (the reply of "
        "a request that timed out or was cancelled), `unknown` |\n"
        "| `code` | `framedclient_http_responses_total` | the HTTP status of "
        "`POST /v1/request` responses |\n"
    )


# -- the connection state machine -------------------------------------------


def state_machine(generated: Path) -> None:
    from framedclient.connection import _Machine

    # Automat keeps the machine's table here; its own visualizer
    # (automat._visualize) reads the same attribute.
    automaton = _Machine.__automat_automaton__
    initial = automaton.initialState.name
    states = sorted({s.name for s in automaton.states()})
    moves: dict[tuple[str, str], list[str]] = defaultdict(list)
    stays: dict[str, list[str]] = defaultdict(list)
    for start, symbol, end, _outputs in automaton.allTransitions():
        if start.name == end.name:
            stays[start.name].append(symbol)
        else:
            moves[(start.name, end.name)].append(symbol)
    # Top to bottom, with the body text's size: drawn left to right the
    # graph was wider than the page and shrunk until its labels were too
    # small to read (tests/test_docs_site.py measures them on the page).
    lines = [
        "digraph connection {",
        "  rankdir=TB; nodesep=0.5;",
        '  node [shape=box, style=rounded, fontname="sans-serif", fontsize=16];',
        '  edge [fontname="sans-serif", fontsize=14];',
    ]
    for state in states:
        bold = ", penwidth=2" if state == initial else ""
        lines.append(f'  "{state}" [label="{state}"{bold}];')
    for (start, end), symbols in sorted(moves.items()):
        label = "\\n".join(sorted(symbols))
        lines.append(f'  "{start}" -> "{end}" [label="{label}"];')
    lines.append("}")
    _write(generated / "connection-states.dot", "\n".join(lines) + "\n")

    rows = ["| state | input | next state |", "| --- | --- | --- |"]
    for state in states:
        for (start, end), symbols in sorted(moves.items()):
            if start == state:
                for symbol in sorted(symbols):
                    rows.append(f"| {state} | `{symbol}` | {end} |")
        if stays[state]:
            kept = ", ".join(f"`{s}`" for s in sorted(stays[state]))
            rows.append(f"| {state} | {kept} | {state} (stays) |")
    _write(generated / "connection-transitions.md", "\n".join(rows) + "\n")


# -- short names of imported objects ------------------------------------------


_MISSING = object()


def _lookup(dotted: str) -> Any:
    """
    The object a dotted name names, importing the longest module prefix.
    """
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part, _MISSING)
            if obj is _MISSING:
                return _MISSING
        return obj
    return _MISSING


def _public_aliases(full: str) -> list[str]:
    """
    ``full`` (``framedclient.client.FramedClient.request``) as documented on
    the public API page (``framedclient.FramedClient.request``), if it is a
    name of ``framedclient.__all__`` or one of its members.
    """
    import framedclient

    aliases = []
    for name in framedclient.__all__:
        obj = getattr(framedclient, name)
        home = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
        if full == home or full.startswith(home + "."):
            aliases.append(f"framedclient.{name}{full[len(home):]}")
    return aliases


def resolve_imported(app: Sphinx, env: Any, node: Any, contnode: Any) -> Any:
    """
    Resolve a name in a docstring the way Python would: a short name to the
    object it is bound to in the docstring's module (``:class:`Kind``` in a
    module that imports ``Kind``), a re-exported name
    (``framedclient.FramedClient``) to the object it re-exports, documented
    in the module that defines it or, for the names of
    ``framedclient.__all__``, on the public API page (whose docstrings still
    speak in their own module's names).  A name bound to nothing, or to an
    object that is not documented, stays unresolved (and fails the build).
    """
    if node.get("refdomain") != "py" or node.get("reftype") == "mod":
        return None
    target = node["reftarget"].lstrip("~.")
    modname = node.get("py:module")
    classname = node.get("py:class")
    scopes: list[str] = []
    if modname:
        if classname:
            scopes.append(f"{modname}.{classname.split('.')[0]}")
            # A class documented on the public API page: its docstrings
            # name things as its own module does.
            documented = _lookup(f"{modname}.{classname}")
            home = getattr(documented, "__module__", None)
            if isinstance(home, str) and home != modname:
                scopes += [f"{home}.{classname.split('.')[-1]}", home]
        scopes.append(modname)
    candidates = [f"{scope}.{target}" for scope in scopes] + [target]
    domain = env.get_domain("py")
    for dotted in candidates:
        obj = _lookup(dotted)
        home = getattr(obj, "__module__", None)
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        if obj is _MISSING:
            # An attribute set per instance (documented with :ivar:) of a
            # class on the public API page.
            fulls = _public_aliases(dotted)
        elif not isinstance(home, str) or not isinstance(name, str):
            # A constant or an enum member, bound where it is defined.
            fulls = [dotted, *_public_aliases(dotted)]
        else:
            fulls = [f"{home}.{name}"]
            fulls += _public_aliases(fulls[0])
        for full in fulls:
            # Sphinx itself tried the name with the role's object type; "obj"
            # also finds what a role does not cover (a zope.interface
            # interface named with :class:).
            for reftype in (node["reftype"], "obj"):
                found = domain.resolve_xref(
                    env, node["refdoc"], app.builder, reftype, full, node, contnode
                )
                if found is not None:
                    return found
    return None


def plain_interface_names() -> None:
    """
    zope.interface classes print as ``<InterfaceClass a.b.IName>``, and
    autodoc writes annotations (``list[IName]``, ``IName | None``) with
    ``repr()``: in this build only, they print as the dotted names they are,
    so they link and nested annotations still parse.
    """
    from zope.interface.interface import InterfaceClass

    def dotted(self: Any) -> str:
        return f"{self.__module__}.{self.__name__}"

    InterfaceClass.__repr__ = dotted  # type: ignore[method-assign]


def public_bases(
    app: Sphinx, name: str, obj: Any, options: Any, bases: list[Any]
) -> None:
    """
    ``show-inheritance`` lists public bases only: a private base class
    (``_Resolving``) is an implementation detail with no page to link to.
    """
    bases[:] = [b for b in bases if not getattr(b, "__name__", "").startswith("_")]


def keep_published_signatures() -> None:
    """
    ``autodoc_preserve_defaults`` rewrites each default from the source
    text, matching the signature's defaults one by one to the ``def``
    line's; a signature that lists more than the ``def`` does (the settings
    :func:`framedclient.config.documents_settings` publishes on
    ``FramedClient.__init__`` and ``from_endpoint``) cannot be matched and
    failed the build.  Those signatures show their defaults already.
    """
    from sphinx.ext.autodoc import preserve_defaults

    original = preserve_defaults.update_default_value

    def update(obj: Any, bound_method: bool) -> None:
        function = getattr(obj, "__func__", obj)
        if "__signature__" in getattr(function, "__dict__", {}):
            return
        original(obj, bound_method)

    preserve_defaults.update_default_value = update


# -- hooks -------------------------------------------------------------------


def generate(app: Sphinx) -> None:
    srcdir = Path(app.srcdir)
    generated = srcdir / "_generated"
    api_pages(srcdir, list(app.config.framedclient_api_exclude))
    option_tables(generated)
    settings_table(generated)
    metrics_table(srcdir.parent, generated)
    state_machine(generated)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("framedclient_api_exclude", [], "env", list)
    app.connect("builder-inited", generate)
    app.connect("missing-reference", resolve_imported)
    app.connect("autodoc-process-bases", public_bases)
    # sphinxcontrib.zopeext documents interfaces with objtype "interface"
    # but registers no object type for it, so no role could find them:
    # :class: (and :interface:, :obj:) should.
    from sphinx.domains import ObjType
    from sphinx.domains.python import PythonDomain

    PythonDomain.object_types.setdefault(
        "interface", ObjType("interface", "interface", "class", "obj")
    )
    plain_interface_names()
    keep_published_signatures()
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
