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
