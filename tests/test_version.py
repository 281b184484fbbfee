"""
The version is written once (framedclient/_version.py) and is what
``twist framedclient --version`` prints, not Twisted's version.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import framedclient
import twisted
from framedclient._version import __version__
from framedclient.runner import framedserver
from framedclient.runner.options import Options

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_version_is_the_one_in_version_py():
    assert framedclient.__version__ == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)?", __version__)


@pytest.mark.parametrize("options", [Options, framedserver.Options])
def test_version_option_prints_framedclients_version_and_exits_0(options, capsys):
    with pytest.raises(SystemExit) as exited:
        options().parseOptions(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"framedclient {__version__} ")
    assert f"Twisted {twisted.__version__}" in out
    # and which build runs (docs/design.md, "Compiled mode")
    assert framedclient.compiled.describe() in out


def test_twist_framedclient_version_names_framedclient():
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "twisted", "framedclient", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": path},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"framedclient {__version__} ")
