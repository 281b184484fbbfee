"""
Codecs are plugins: ``--codec NAME[:options]`` and ``twist framedclient
--help`` see codecs that another package installs, through Twisted's plugin
system, with no change to framedclient.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import twisted.plugins
from framedclient.codecs import REQUEST, FC1Codec, HeaderCodec, PipelinedCodec
from framedclient.codecs.plugin import CodecPlugin, ICodecPlugin, codec_plugins
from framedclient.runner.codecspec import parse_codec
from framedclient.runner.options import Options

from .test_runner_options import parse

ROOT = Path(__file__).resolve().parent.parent

PLUGIN_FILE = """
from framedclient.codecs.plugin import CodecPlugin

shouting = CodecPlugin(
    "shouting",
    "upper-case lines, replies in order (a third-party test codec)",
    "max-frame=BYTES",
    "shouting_codec.make",
)

# A package cannot take over a built-in name.
impostor = CodecPlugin("fc1", "not the real fc1", "", "shouting_codec.make")
"""

CODEC_MODULE = """
from framedclient.codecs import PipelinedCodec
from framedclient.codecs.plugin import int_option, option_keys
from framedclient.framing import Delimited


def make(options):
    keys = option_keys(options, {"max-frame"})
    max_frame = int_option(keys, "max-frame", 1024, minimum=1)
    return PipelinedCodec(lambda: Delimited(b"\\n", max_frame=max_frame))
"""


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """
    A package that ships a codec plugin, on sys.path (and on the plugin
    package's path, which Twisted computes from sys.path at import).
    """
    plugins = tmp_path / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "shouting_codecs.py").write_text(PLUGIN_FILE)
    (tmp_path / "shouting_codec.py").write_text(CODEC_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        twisted.plugins, "__path__", [*twisted.plugins.__path__, str(plugins)]
    )
    return tmp_path


def test_builtins_are_plugins():
    plugins = codec_plugins()
    for name in (
        "fc1",
        "lines",
        "netstring",
        "redis",
        "length",
        "memcache-binary",
        "dns",
    ):
        assert ICodecPlugin.providedBy(plugins[name])
    assert isinstance(parse_codec("fc1"), FC1Codec)
    assert isinstance(parse_codec("lines"), PipelinedCodec)


def test_memcache_and_dns_by_name():
    memcache = parse_codec("memcache-binary:max-frame=4096")
    assert isinstance(memcache, HeaderCodec)
    assert memcache.max_frame == 4096
    # A plain body is the key of a GET.
    assert memcache.encode(REQUEST, 1, b"k")[:4] == b"\x80\x00\x00\x01"
    dns = parse_codec("dns")
    assert dns.max_id == 0xFFFF


def test_a_third_party_codec_is_parsed_by_name(third_party: Path):
    codec = parse_codec("shouting:max-frame=64")
    assert type(codec).__name__ == "PipelinedCodec"
    assert codec.max_frame == 64
    assert codec.encode(REQUEST, 1, b"HI") == b"HI\n"


def test_a_third_party_codec_reports_its_option_errors(third_party: Path):
    with pytest.raises(ValueError, match="unknown key 'color'") as raised:
        parse_codec("shouting:color=red")
    # The accepted forms list every installed codec.
    assert "'shouting[:max-frame=BYTES]'" in str(raised.value)
    assert "'dns[:max-frame=BYTES]'" in str(raised.value)


def test_a_third_party_codec_cannot_take_a_builtin_name(third_party: Path):
    assert isinstance(parse_codec("fc1"), FC1Codec)


def test_the_gateway_options_take_a_third_party_codec(third_party: Path):
    options = parse("--codec", "shouting")
    assert options["codec-spec"] == "shouting"
    assert options["codec"].max_frame == 1024


def test_help_lists_third_party_codecs(third_party: Path):
    usage = Options().getUsage(width=80)
    assert "  shouting[:max-frame=BYTES]" in usage
    assert "upper-case lines, replies in order" in usage
    assert "  memcache-binary[:max-frame=BYTES]" in usage


def test_twist_help_lists_codecs_of_an_installed_package(third_party: Path):
    # The real thing: a fresh process that finds the package on its path.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(third_party)])
    twist = [sys.executable, "-m", "twisted", "framedclient", "--help"]
    result = subprocess.run(
        twist, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "  shouting[:max-frame=BYTES]" in result.stdout
    assert "  dns[:max-frame=BYTES]" in result.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "twisted", "framedclient", "--codec", "shouting:x=1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert "invalid codec 'shouting:x=1': unknown key 'x'" in bad.stderr


def test_codec_plugin_takes_a_callable_too():
    plugin = CodecPlugin("inline", "an inline factory", "", lambda options: FC1Codec())
    assert isinstance(plugin.codec(""), FC1Codec)


def test_plugin_file_imports_no_codec_module():
    # Listing plugins must stay cheap: the built-in plugin file names its
    # factories; importing it loads none of the codec modules.
    code = textwrap.dedent(
        """
        import sys
        import twisted.plugins.framedclient_codecs
        loaded = [m for m in ("framedclient.codecs.builtin",
                              "framedclient.codecs.memcache",
                              "framedclient.codecs.dns",
                              "framedclient.codecs.redis") if m in sys.modules]
        print(loaded)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip() == "[]"


# -- plugins that fail ----------------------------------------------------------------

FAILING_PLUGINS = """
from framedclient.codecs.plugin import CodecPlugin

crashing = CodecPlugin("crashing", "raises TypeError", "", "failing_codec.crash")
missing = CodecPlugin("missing", "needs a module not installed", "", "failing_codec_dep.make")
"""

FAILING_CODEC = """
def crash(options):
    return 1 + "x"
"""


@pytest.fixture
def failing(third_party: Path) -> Path:
    """
    A package whose codec factories fail: one raises TypeError, one's
    module cannot be imported (a dependency is missing).
    """
    plugins = third_party / "twisted" / "plugins"
    (plugins / "failing_codecs.py").write_text(FAILING_PLUGINS)
    (third_party / "failing_codec.py").write_text(FAILING_CODEC)
    (third_party / "failing_codec_dep.py").write_text("import not_installed_dep\n")
    return third_party


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("crashing", "factory 'failing_codec.crash' failed (TypeError: "),
        (
            "missing",
            "factory 'failing_codec_dep.make' cannot be imported "
            "(ModuleNotFoundError: No module named 'not_installed_dep')",
        ),
    ],
)
def test_a_failing_codec_plugin_is_one_line_and_exit_2(failing, capsys, name, says):
    with pytest.raises(SystemExit) as exit:
        parse("--codec", name)
    assert exit.value.code == 2
    error = capsys.readouterr().err
    assert len(error.splitlines()) == 1, error
    assert f"--codec: invalid codec {name!r}: the {name!r} codec plugin's " in error
    assert says in error
    assert "Traceback" not in error


def test_twist_reports_a_failing_codec_plugin_in_one_line(failing: Path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(failing)])
    result = subprocess.run(
        [sys.executable, "-m", "twisted", "framedclient", "--codec", "crashing"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.count("\n") == 1
    assert "the 'crashing' codec plugin's factory" in result.stderr


@pytest.fixture
def broken_module(third_party: Path) -> Path:
    (third_party / "twisted" / "plugins" / "broken_codecs.py").write_text(
        "raise RuntimeError('this plugin file is broken')\n"
    )
    return third_party


def test_a_plugin_module_that_raises_is_one_line_once_not_tracebacks(
    broken_module, capsys
):
    from twisted.logger import globalLogPublisher

    from framedclient.codecs.plugin import broken_plugin_modules
    from framedclient.runner.codecspec import installed_codecs

    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        first = installed_codecs()
        second = installed_codecs()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    # The other codecs, its neighbours' included, are still there.
    assert "shouting" in first and "fc1" in first and first.keys() == second.keys()
    assert [e for e in logged if e.get("log_failure") or e.get("isError")] == []
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    assert "plugin module twisted.plugins.broken_codecs failed to import" in error
    assert "RuntimeError: this plugin file is broken" in error
    assert "broken_codecs.py:1" in error
    assert list(broken_plugin_modules()) == ["twisted.plugins.broken_codecs"]
