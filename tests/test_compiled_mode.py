"""
Compiled or pure: ``framedclient.compiled`` says which build runs, and it is
the one imported.

CI runs the suite twice (.ci/run): once with the mypyc extensions built
(``FRAMEDCLIENT_EXPECT_MODE=compiled``) and once with ``FRAMEDCLIENT_PURE=1``
(``FRAMEDCLIENT_EXPECT_MODE=pure``); the expectation makes a build that
silently fell back to pure fail the compiled run.
"""

from __future__ import annotations

import ast
import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import framedclient
from framedclient import _mode

ROOT = Path(__file__).resolve().parents[1]
EXTENSIONS = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def _probe(env: dict[str, str]) -> dict[str, object]:
    """
    Import framedclient in a fresh interpreter: its mode and where each
    compiled name was loaded from.
    """
    code = (
        "import json, sys, warnings\n"
        "warnings.simplefilter('always')\n"
        "import framedclient\n"
        "from framedclient import _mode\n"
        "files = {n: sys.modules[n].__file__ for n in _mode.COMPILED_MODULES"
        " if n in sys.modules}\n"
        "print(json.dumps({'mode': str(framedclient.compiled),"
        " 'modules': list(framedclient.compiled.modules),"
        " 'describe': framedclient.compiled.describe(), 'files': files}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    probe: dict[str, object] = json.loads(result.stdout)
    return probe


def test_the_mode_matches_the_modules_that_were_imported():
    # framedclient.compiled is not a promise about a build, it is read from
    # the imported modules: compiled exactly when every one is an extension.
    for name in _mode.COMPILED_MODULES:
        __import__(name)
    loaded = {
        name: sys.modules[name].__file__ or "" for name in _mode.COMPILED_MODULES
    }
    from_extensions = {n for n, f in loaded.items() if f.endswith(EXTENSIONS)}
    if framedclient.compiled:
        assert from_extensions == set(_mode.COMPILED_MODULES)
        assert framedclient.compiled.modules == _mode.COMPILED_MODULES
        assert str(framedclient.compiled) == "compiled"
    else:
        assert from_extensions == set()
        assert str(framedclient.compiled) == "pure"
        assert framedclient.compiled.reason


def test_the_expected_mode_runs():
    expected = os.environ.get("FRAMEDCLIENT_EXPECT_MODE")
    if expected is None:
        # Outside CI's two runs either mode is right; the test above still
        # checks that the mode is told truthfully.
        expected = str(framedclient.compiled)
    assert expected in ("compiled", "pure"), expected
    assert str(framedclient.compiled) == expected, framedclient.compiled.describe()


def test_framedclient_pure_loads_every_source_even_with_extensions_installed():
    probe = _probe({_mode.PURE_ENV: "1"})
    assert probe["mode"] == "pure"
    assert probe["modules"] == []
    assert probe["describe"] == f"pure ({_mode.PURE_ENV}=1)"
    files = probe["files"]
    assert isinstance(files, dict) and files
    assert all(str(f).endswith(".py") for f in files.values()), files


def test_installed_extensions_are_imported_unless_pure_is_forced():
    # Where the extensions are built (CI's compiled run, a wheel), a plain
    # import runs them; where they are not, it runs the sources.
    built = all(_mode._extension_path(name) for name in _mode.COMPILED_MODULES)
    probe = _probe({_mode.PURE_ENV: ""})
    files = probe["files"]
    assert isinstance(files, dict)
    if built and not _mode._stale_sources():
        assert probe["mode"] == "compiled"
        assert all(str(f).endswith(EXTENSIONS) for f in files.values()), files
    else:
        assert probe["mode"] == "pure"
        assert all(str(f).endswith(".py") for f in files.values()), files


def test_setup_py_and_the_mode_module_compile_the_same_modules():
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    (listed,) = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(
            isinstance(t, ast.Name) and t.id == "COMPILED_MODULES" for t in node.targets
        )
    ]
    paths = ast.literal_eval(listed)
    names = tuple(p.removesuffix(".py").replace("/", ".") for p in paths)
    assert names == _mode.COMPILED_MODULES


def test_an_edited_source_is_not_shadowed_by_its_stale_extension(tmp_path):
    # An in-place build (FRAMEDCLIENT_COMPILE=1 python setup.py build_ext
    # --inplace) leaves .so files beside the sources; editing a source must
    # not leave the old compiled code running without a word.
    package = tmp_path / "framedclient"
    package.mkdir()
    source = package / "engine.py"
    source.write_text("X = 1\n")
    fake_extension = source.with_suffix(EXTENSIONS[0])
    fake_extension.write_bytes(b"")
    recorded = {"framedclient.engine": "0" * 64}
    (package / _mode.SOURCES_RECORD).write_text(json.dumps(recorded))
    original = _mode._PACKAGE_DIR
    _mode._PACKAGE_DIR = package
    try:
        assert _mode._stale_sources() == ["framedclient.engine"]
        import hashlib

        recorded["framedclient.engine"] = hashlib.sha256(b"X = 1\n").hexdigest()
        (package / _mode.SOURCES_RECORD).write_text(json.dumps(recorded))
        assert _mode._stale_sources() == []
        fake_extension.unlink()
        assert _mode._stale_sources() is None
    finally:
        _mode._PACKAGE_DIR = original


@pytest.mark.parametrize("value", ["1", "true", "yes", "on", "TRUE"])
def test_pure_accepts_the_usual_spellings_of_true(value):
    assert _mode._truthy(value)


@pytest.mark.parametrize("value", ["", "0", "no", "false", "off"])
def test_pure_is_off_for_the_usual_spellings_of_false(value):
    assert not _mode._truthy(value)
