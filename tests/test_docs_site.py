"""
The documentation site builds from what setup.py says it needs: the promise
of ``pip install -e '.[dev]' && bash .ci/docs`` (README, "Development").

The whole build (``bash .ci/docs``, with ``-W``) runs in CI; these tests hold
the parts of it a contributor's environment can silently get wrong.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import runpy
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: Every test here needs the docs toolchain (see tests/conftest.py).
pytestmark = pytest.mark.dev_extra

ROOT = Path(__file__).resolve().parents[1]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(spec: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    assert match, spec
    return _normal(match.group(1))


def setup_requirements(extra: str) -> set[str]:
    """
    The distributions ``pip install -e '.[EXTRA]'`` asks for by name:
    ``install_requires`` and the extra, read from setup.py's text (the
    installed metadata may be older than the checkout).
    """
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    call = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup"
    )
    keywords = {k.arg: k.value for k in call.keywords}

    def text(item: ast.expr) -> str:
        # f"twisted>={TWISTED_FLOOR}": the name is the literal start.
        if isinstance(item, ast.JoinedStr):
            item = item.values[0]
        assert isinstance(item, ast.Constant), ast.unparse(item)
        return str(item.value)

    def names(node: ast.AST) -> set[str]:
        assert isinstance(node, ast.List)
        return {_requirement_name(text(item)) for item in node.elts}

    extras = keywords["extras_require"]
    assert isinstance(extras, ast.Dict)
    chosen = [
        value
        for key, value in zip(extras.keys, extras.values, strict=True)
        if isinstance(key, ast.Constant) and key.value == extra
    ]
    assert chosen, f"setup.py has no {extra!r} extra"
    return names(keywords["install_requires"]) | names(chosen[0])


def installed_closure(names: set[str]) -> set[str]:
    """
    ``names`` and everything they require unconditionally, as installed here.
    """
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for spec in requires:
            if "extra ==" not in spec:
                todo.append(_requirement_name(spec))
    return seen


def top_level_imports(path: Path) -> set[str]:
    """
    The top-level packages a module imports when it is imported (the
    statements of its body; imports inside functions, ``if TYPE_CHECKING``
    or ``try`` blocks are optional by construction).
    """
    found: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def documented_modules() -> list[str]:
    import sys

    conf = runpy.run_path(str(ROOT / "docs" / "conf.py"))
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        import framedclient_docs
    finally:
        sys.path.remove(str(ROOT / "docs" / "_ext"))
    modules: list[str] = framedclient_docs.api_modules(conf["framedclient_api_exclude"])
    return modules


def module_file(name: str) -> Path:
    base = ROOT.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def test_the_dev_extra_installs_every_package_the_api_pages_import() -> None:
    # autodoc imports every documented module; with -W a module that cannot
    # be imported stops the build (framedclient.tracing without
    # opentelemetry-api did, in a venv with only the dev extra).
    allowed = installed_closure(setup_requirements("dev"))
    distributions = importlib.metadata.packages_distributions()
    stdlib = set(__import__("sys").stdlib_module_names) | {"__future__"}
    missing: dict[str, list[str]] = {}
    for name in documented_modules():
        for package in sorted(top_level_imports(module_file(name)) - stdlib):
            if package == "framedclient":
                continue
            provided_by = {_normal(d) for d in distributions.get(package, [])}
            if not provided_by & allowed:
                missing.setdefault(name, []).append(package)
    assert not missing, (
        f"documented modules import packages the dev extra does not install: "
        f"{missing}; add them to setup.py's dev extra"
    )


def test_the_dev_extra_installs_the_theme_and_the_extensions() -> None:
    conf = runpy.run_path(str(ROOT / "docs" / "conf.py"))
    needed = {conf["html_theme"]} | {
        ext.split(".")[0] for ext in conf["extensions"] if ext != "framedclient_docs"
    }
    distributions = importlib.metadata.packages_distributions()
    allowed = installed_closure(setup_requirements("dev"))
    for package in sorted(needed):
        provided_by = {_normal(d) for d in distributions.get(package, [])}
        assert provided_by & allowed, (
            f"docs/conf.py uses {package!r}, which setup.py's dev extra does "
            f"not install"
        )


# -- the built site, in headless Chromium ------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    The site as ``bash .ci/docs`` builds it (with -W: a warning fails here).
    """
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        ["bash", str(ROOT / ".ci" / "docs")],
        cwd=ROOT,
        env={**os.environ, "DOCS_OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from .test_runner_browser import _require_browser, _start_browser

    driver = _start_browser(_require_browser(), str(tmp_path_factory.mktemp("profile")))
    driver.set_window_size(1400, 1000)
    try:
        yield driver
    finally:
        driver.quit()


def _pages(site: Path) -> list[Path]:
    return sorted(site.glob("*.html")) + sorted(site.glob("api/*.html"))


_CUT = """
const cut = [];
for (const e of document.querySelectorAll('pre'))
    if (e.scrollWidth > e.clientWidth + 1) cut.push('code: ' + e.textContent.slice(0, 80));
for (const e of document.querySelectorAll('.sidebar-tree a'))
    if (e.scrollWidth > e.clientWidth + 1) cut.push('sidebar: ' + e.textContent);
return cut;
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_code_and_sidebar_names_are_not_cut_at_1400_px(
    site: Path, browser: Any
) -> None:
    cut = {}
    for page in _pages(site):
        browser.get(page.as_uri())
        found = browser.execute_script(_CUT)
        if found:
            cut[str(page.relative_to(site))] = found
    assert len(_pages(site)) > 20
    assert not cut, f"cut behind a scrollbar at 1,400 px: {cut}"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_state_diagram_labels_are_as_large_as_the_text(
    site: Path, browser: Any
) -> None:
    browser.get((site / "states.html").as_uri())
    shown, svg = browser.execute_script(
        """
        const o = document.querySelector('object.graphviz');
        return [o.getBoundingClientRect().width, o.data];
        """
    )
    # The drawing itself, opened alone (a file:// page cannot look inside
    # its <object>): its natural width and its labels' sizes.
    browser.get(svg)
    natural, fonts = browser.execute_script(
        """
        const svg = document.querySelector('svg');
        return [svg.getBoundingClientRect().width,
                [...svg.querySelectorAll('text')].map(
                    t => parseFloat(getComputedStyle(t).fontSize))];
        """
    )
    sizes = [size * shown / natural for size in fonts]
    assert sizes, "no labels found in the state diagram"
    # Body text is 16 px; below 12 px the labels were unreadable (issue 21).
    assert min(sizes) >= 12, sorted(sizes)[:5]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_option_names_are_printed_as_typed(site: Path) -> None:
    cli = (site / "cli.html").read_text(encoding="utf-8")
    assert "--pool-size" in cli
    # Smart quotes turned "--" into an en dash; copied into a shell it fails.
    assert "\u2013pool-size" not in cli and "&#8211;pool-size" not in cli


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_front_page_starts_a_newcomer_and_holds_no_contributor_notes(
    site: Path,
) -> None:
    front = (site / "index.html").read_text(encoding="utf-8")
    assert "Start here" in front
    for step in ("tutorial.html", "redis-service.html", "deploy.html"):
        assert f'href="{step}' in front, step
    assert "sample:" not in front and "not run" not in front


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_setting_is_on_the_pages_with_its_default(site: Path) -> None:
    from framedclient.config import settings_docs

    page = (site / "client.html").read_text(encoding="utf-8")
    # FramedClient is documented with the public API, on its first page.
    api = (site / "api" / "framedclient.html").read_text(encoding="utf-8")
    table = page[page.index('id="settings"') :]
    for name, _kind, default, _help in settings_docs():
        row = re.search(
            rf'<span class="pre">{name}</span>.*?</td>\s*<td><p><code[^>]*>'
            rf'<span class="pre">(?P<default>[^<]*)</span>',
            table,
            re.S,
        )
        assert row and row["default"] == default, name
        assert f"<strong>{name}</strong>" in api, name


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_api_reference_starts_with_the_public_names(site: Path) -> None:
    import framedclient

    index = (site / "api" / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'href="(framedclient[^"#]*)\.html"', index)
    assert links[0] == "framedclient", links[:3]
    first = (site / "api" / "framedclient.html").read_text(encoding="utf-8")
    documented = re.findall(r'<dt class="sig[^"]*" id="framedclient\.(\w+)"', first)
    assert set(documented) == set(framedclient.__all__) - {"__version__"}
    assert documented[0] == "FramedClient"
    # Described once: the module page names it, without a second entry.
    client = (site / "api" / "framedclient.client.html").read_text(encoding="utf-8")
    assert 'id="framedclient.client.FramedClient"' not in client
    assert 'id="framedclient.FramedClient"' in first


# -- the README, as GitHub shows it (it is not part of the Sphinx build) -----


def _slug(heading: str) -> str:
    # GitHub's anchors: lower case, punctuation dropped, spaces to dashes.
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _readme_links() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [
        (path, anchor)
        for path, anchor in re.findall(
            r"\]\(((?!https?:)[^)#\s]+)(?:#([^)\s]+))?\)", text
        )
    ]


def test_the_readme_links_to_pages_and_sections_that_exist() -> None:
    links = _readme_links()
    assert len(links) > 10
    for path, anchor in links:
        target = ROOT / path
        assert target.exists(), f"README links to {path}, which does not exist"
        if anchor:
            headings = re.findall(
                r"^#+ (.+)$", target.read_text(encoding="utf-8"), re.M
            )
            assert anchor in {_slug(h) for h in headings}, f"{path}#{anchor}"


def test_the_readme_sends_readers_to_the_page_with_the_systemd_unit() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    sentence = re.search(r"\[([^\]]+)\]\(([^)#]+)[^)]*\) a systemd unit", text)
    assert sentence, "the README no longer says where the systemd unit is"
    page = (ROOT / sentence.group(2)).read_text(encoding="utf-8")
    assert "[Service]" in page and "ExecStart=" in page, sentence.group(2)
