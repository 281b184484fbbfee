"""
``twist framedclient`` options and ``--codec`` specs: every invalid value is
one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError

from framedclient.backoff import ConstantBackoff, parse_backoff
from framedclient.codecs import ERROR, REPLY, REQUEST, HeaderCodec, Matching
from framedclient.config import ClientConfig, Collaborator, Count, Seconds, Share
from framedclient.errors import FrameTooLarge
from framedclient.runner.app import RunnerService
from framedclient.runner.codecspec import codec_overhead, parse_codec
from framedclient.runner.options import (
    DEFAULT_HTTP,
    Options,
    UsageExit,
    config_options,
    options_table,
)
from framedclient.validation import Number

TWIST = str(Path(sys.executable).with_name("twist"))
ROOT = Path(__file__).resolve().parents[1]


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def twist(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    # From / so that the working directory adds nothing to sys.path; the
    # plugin is found on sys.path (twisted/plugins), with this checkout first
    # so that the code under test is the code beside this file even when
    # another checkout is the installed (editable) one.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [TWIST, *argv],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": path},
    )


# -- defaults and valid values ------------------------------------------------------


def test_defaults():
    options = parse()
    assert options["upstream"] == []
    assert options["codec-spec"] == "fc1"
    assert options["codec"].matching is Matching.BY_ID
    assert options["pool-size"] == 4
    assert options["max-in-flight"] == 512
    assert options["max-pending"] == 2048
    assert options["request-timeout"] == 5.0
    assert options["acquire-timeout"] is None
    assert options["connect-timeout"] is None
    assert options["heartbeat"] == 5.0  # 'auto': on, since fc1 has pings
    assert options["heartbeat-timeout"] == 5.0
    assert options["black-hole-after"] == 5
    assert options["max-in-flight-per-connection"] is None  # 'auto'
    assert options["failure-accrual"] == 5
    assert options["max-ejected-share"] == 0.5
    assert options["read-timeout"] is None
    assert options["http"] == DEFAULT_HTTP == "tcp:8080:interface=127.0.0.1"
    assert options["listen"] is None
    assert options["drain-timeout"] == 10.0
    assert not options["fail-fast"]


def test_heartbeats_are_off_by_default_for_codecs_without_pings():
    options = parse("--codec", "lines")
    assert options["heartbeat"] is None
    assert options["config"].heartbeat_interval is None
    assert parse("--heartbeat", "off")["config"].heartbeat_interval is None
    assert parse("--heartbeat", "auto")["config"].heartbeat_interval == 5.0


def test_values_are_converted():
    options = parse(
        "--upstream",
        "tcp:10.0.0.1:9000",
        "--upstream",
        "tls:example.com:9443",
        "--upstream",
        "srv:_fc._tcp.example.com@10.0.0.53",
        "--upstream",
        "dns:db.example.com:9000",
        "--pool-size",
        "2",
        "--max-pending",
        "0",
        "--request-timeout",
        "0.25",
        "--heartbeat",
        "1.5",
        "--backoff",
        "constant:2",
        "--listen",
        "unix:/tmp/fc.sock",
    )
    assert options["upstream"] == [
        "tcp:10.0.0.1:9000",
        "tls:example.com:9443",
        "srv:_fc._tcp.example.com@10.0.0.53",
        "dns:db.example.com:9000",
    ]
    assert options["pool-size"] == 2
    assert options["max-pending"] == 0
    assert options["request-timeout"] == 0.25
    assert options["heartbeat"] == 1.5
    assert options["backoff"] == ConstantBackoff(2.0)
    assert options["listen"] == "unix:/tmp/fc.sock"


# -- every ClientConfig setting is an option ------------------------------------


CONFIG_OPTIONS = config_options()


def test_every_client_setting_is_an_option():
    assert [o.field for o in CONFIG_OPTIONS] == [
        f.name for f in attrs.fields(ClientConfig)
    ]
    declared = {p[0] for p in Options.optParameters} | {f[0] for f in Options.optFlags}
    assert {o.option for o in CONFIG_OPTIONS} <= declared


def a_different_value(option):
    """
    ``(argv, expected value)`` for a value other than the default.
    """
    if option.flag is not None:
        return [f"--{option.option}"], option.flag
    kind = option.setting.kind
    if isinstance(kind, Count):
        value = 3 if option.default == kind.word else int(option.default) + 1
        return [f"--{option.option}", str(value)], value
    if isinstance(kind, Share):
        return [f"--{option.option}", "0.25"], 0.25
    if isinstance(kind, Seconds):
        return [f"--{option.option}", "7.5"], 7.5
    if isinstance(kind, Number):
        return [f"--{option.option}", "2.5"], 2.5
    if option.field == "codec":
        return ["--codec", "fc1:max-frame=1024"], parse_codec("fc1:max-frame=1024")
    if option.field == "backoff":
        return ["--backoff", "constant:2"], ConstantBackoff(2.0)
    if option.field == "balancer":
        return ["--balancer", "round-robin"], "round_robin"
    if option.field == "hedge_after":
        return ["--hedge-after", "p95"], "p95"
    raise AssertionError(option)


@pytest.mark.parametrize(
    "option", CONFIG_OPTIONS, ids=[o.option for o in CONFIG_OPTIONS]
)
def test_each_option_sets_its_setting(option):
    argv, expected = a_different_value(option)
    value = getattr(parse(*argv)["config"], option.field)
    if option.field == "codec":
        # Codecs do not compare equal; their reprs show every parameter.
        value, expected = repr(value), repr(expected)
    assert value == expected


def test_default_options_are_the_default_config():
    config = parse()["config"]
    defaults = ClientConfig()
    for field in attrs.fields(ClientConfig):
        if field.name not in ("codec", "backoff"):
            assert getattr(config, field.name) == getattr(defaults, field.name)
    assert config.codec.max_frame == defaults.codec.max_frame
    assert config.backoff == parse_backoff("grpc")


OPTIONAL_DURATIONS = [
    o
    for o in CONFIG_OPTIONS
    if isinstance(o.setting.kind, Seconds) and o.setting.kind.optional
]


@pytest.mark.parametrize("option", OPTIONAL_DURATIONS, ids=lambda o: o.option)
def test_off_turns_an_optional_duration_off(option):
    assert getattr(parse(f"--{option.option}", "off")["config"], option.field) is None


#: Every setting that ``None`` turns off (or leaves to be derived): on the
#: command line that is a word, ``off`` or ``auto``.  (Specs such as
#: --backoff have parsers of their own that word their errors.)
OPTIONAL_SETTINGS = [
    o
    for o in CONFIG_OPTIONS
    if o.flag is None
    and getattr(o.setting.kind, "optional", False)
    and not isinstance(o.setting.kind, Collaborator)
]


@pytest.mark.parametrize("option", OPTIONAL_SETTINGS, ids=lambda o: o.option)
def test_out_of_range_optional_settings_name_the_word_not_none(option, capsys):
    # The range is checked by ClientConfig, whose words are Python's
    # (None); the command line's user types 'off' (or 'auto').
    with pytest.raises(UsageExit):
        parse(f"--{option.option}", "-1")
    message = capsys.readouterr().err
    assert f"--{option.option} '-1': must be " in message
    assert "None" not in message


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--request-timeout", "0"], "number of seconds or 'off'"),
        (["--black-hole-after", "0"], "integer >= 1 or 'off'"),
        (["--max-in-flight-per-connection", "0"], "integer >= 1 or 'auto'"),
        (["--success-rate-factor", "-1"], "number >= 0 or 'off'"),
    ],
)
def test_out_of_range_optional_settings_say_what_the_command_line_takes(
    argv, says, capsys
):
    with pytest.raises(UsageExit):
        parse(*argv)
    assert says in capsys.readouterr().err


def test_help_lists_every_setting_with_its_help_text():
    options = Options()
    options.complete_help = True  # --help-all
    text = "".join(options.getUsage(width=80).split())
    for option in CONFIG_OPTIONS:
        assert f"--{option.option}" in text
        assert "".join(option.help.split()) in text, option.option


def usage_text(complete: bool) -> str:
    options = Options()
    options.complete_help = complete
    return options.getUsage(width=80)


def test_help_explains_first_then_groups_everyday_options_upstream_first():
    text = usage_text(complete=False)
    positions = [
        text.index(marker)
        for marker in (
            "Keep a pool of connections",  # the explanation, before the list
            "Upstream and codec:",
            "--upstream=ENDPOINT",
            "--codec=SPEC",
            "Requests and limits:",
            "--request-timeout=S",
            "HTTP gateway, proxy and processes:",
            "--http=ENDPOINT",
            "Logging, tracing and help:",
            "--help-all",
        )
    ]
    assert positions == sorted(positions)
    # Everyday options only: a page, not 247 lines.
    assert len(text.splitlines()) < 120
    assert "--abandoned-ttl" not in text
    assert "--max-pending-per-connection" not in text
    assert "`twist framedclient --help-all` lists all" in " ".join(text.split())


def test_help_all_lists_every_option_once_in_its_group():
    text = usage_text(complete=True)
    names = [o.rstrip("=") for o in Options().longOpt]
    for name in names:
        assert (
            text.count(f"\n  --{name}=")
            + text.count(f"\n  --{name} ")
            + text.count(f"\n  --{name}\n")
            == 1
        ), name
    assert "Other options:" not in text  # every option has its group
    assert "full-jitter:base=S,max=S" in text


def test_an_option_missing_from_the_groups_is_still_listed(monkeypatch):
    from framedclient.runner import options as module

    groups = [(t, [n for n in m if n != "balancer"]) for t, m in module.OPTION_GROUPS]
    monkeypatch.setattr(module, "OPTION_GROUPS", groups)
    text = usage_text(complete=True)
    assert text.index("Other options:") < text.index("--balancer=")


def test_help_of_an_auto_setting_names_auto_not_off():
    text = " ".join(usage_text(complete=True).split())
    assert "'auto': ceil(" in text
    assert "'off': ceil(" not in text


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("--uptream", "--upstream"),
        ("--pool-sise", "--pool-size"),
        ("--workrs", "--workers"),
    ],
)
def test_a_mistyped_option_gets_a_did_you_mean(capsys, typo, meant):
    with pytest.raises(SystemExit) as exit:
        parse(typo, "4")
    assert exit.value.code == 2
    error = capsys.readouterr().err
    assert f"option {typo} not recognized; did you mean {meant}?" in error
    assert len(error.splitlines()) == 1


def test_twist_framedserver_suggests_too(capsys):
    from framedclient.runner.framedserver import Options as ServerOptions

    with pytest.raises(SystemExit) as exit:
        ServerOptions().parseOptions(["--prot", "9000"])
    assert exit.value.code == 2
    assert (
        "option --prot not recognized; did you mean --port?" in capsys.readouterr().err
    )


def test_an_option_like_nothing_gets_no_suggestion(capsys):
    with pytest.raises(SystemExit):
        parse("--zzzzzz")
    error = capsys.readouterr().err
    assert "not recognized" in error
    assert "did you mean" not in error


def test_docs_show_the_generated_options_table():
    docs = (ROOT / "docs" / "gateway.md").read_text()
    assert options_table() in docs, (
        "docs/gateway.md's options table is out of date; replace it with the "
        "output of: python -c 'from framedclient.runner.options import "
        "options_table; print(options_table())'"
    )


def test_the_runner_builds_its_client_from_the_parsed_config():
    options = parse(
        "--upstream",
        "tcp:127.0.0.1:1",
        "--write-timeout",
        "3",
        "--abandoned-ttl",
        "off",
        "--max-queued-bytes",
        "1000",
    )
    service = RunnerService(MemoryReactorClock(), options)
    service.client_service.startService()
    client = service.client
    assert client is not None
    assert client.config is options["config"]
    assert client.max_queued_bytes == 1000
    assert client.factory.config.write_timeout == 3.0
    assert client.factory.config.abandoned_ttl is None


def test_the_reply_budget_options_reach_the_gateway():
    options = parse("--http-reply-budget", "1000000", "--http-write-timeout", "2.5")
    service = RunnerService(MemoryReactorClock(), options)
    assert service.gateway.replies.max_bytes == 1_000_000
    assert service.gateway.replies.write_deadline == 2.5


def test_the_reply_budget_defaults_hold_when_not_given():
    from framedclient.runner.replies import (
        DEFAULT_MAX_REPLY_BYTES,
        DEFAULT_WRITE_DEADLINE,
    )

    service = RunnerService(MemoryReactorClock(), parse())
    assert service.gateway.replies.max_bytes == DEFAULT_MAX_REPLY_BYTES
    assert service.gateway.replies.write_deadline == DEFAULT_WRITE_DEADLINE


# -- invalid values: one line, exit 2 ----------------------------------------------


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        (["--pool-size", "0"], "--pool-size"),
        (["--pool-size", "many"], "--pool-size"),
        (["--max-in-flight", "-3"], "--max-in-flight"),
        (["--max-pending", "x"], "--max-pending"),
        (["--request-timeout", "0"], "--request-timeout"),
        (["--request-timeout", "nan"], "--request-timeout"),
        (["--connect-timeout", "soon"], "--connect-timeout"),
        (["--drain-timeout", "inf"], "--drain-timeout"),
        (["--http-reply-budget", "0"], "--http-reply-budget"),
        (["--http-reply-budget", "lots"], "--http-reply-budget"),
        (["--http-write-timeout", "off"], "--http-write-timeout"),
        (["--http-write-timeout", "-1"], "--http-write-timeout"),
        (["--backoff", "linear"], "invalid backoff"),
        (["--codec", "protobuf"], "unknown codec"),
        (["--codec", "length:size=5"], "size must be one of"),
        (["--upstream", "carrier-pigeon:1"], "--upstream"),
        (["--upstream", "tcp:host"], "--upstream"),
        (["--upstream", "srv:example.com"], "--upstream 'srv:example.com': expected"),
        (["--upstream", "dns:db.example.com"], "dns:NAME:PORT"),
        (["--dns-refresh-min", "60", "--dns-refresh-max", "10"], "--dns-refresh-min"),
        (["--http", "tcp:eighty"], "--http"),
        (["--listen", "bogus:1"], "--listen"),
        (["--codec", "lines", "--heartbeat", "1"], "no ping frames"),
        (["--codec", "netstring", "--listen", "tcp:0"], "no request IDs"),
        (["--codec", "dns", "--listen", "tcp:0"], "declares header fields"),
        (["--write-timeout", "0"], "--write-timeout '0': must be a positive"),
        (["--abandoned-ttl", "soon"], "--abandoned-ttl 'soon': must be"),
        (["--max-write-buffer", "-1"], "--max-write-buffer '-1': must be an integer"),
        (["--max-queued-bytes", "1.5"], "--max-queued-bytes '1.5'"),
        (["--heartbeat-timeout", "off"], "--heartbeat-timeout 'off'"),
        (
            [
                "--codec",
                "length:size=1,id-size=1",
                "--max-pending-per-connection",
                "300",
            ],
            "--max-pending-per-connection '300': must be below the codec's ID",
        ),
        (["--no-such-option"], "no-such-option"),
    ],
)
def test_invalid_value_is_one_line_and_exit_2(argv, mentions, capsys):
    with pytest.raises(SystemExit) as raised:
        parse(*argv)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("twist framedclient: error: ")
    assert mentions in err
    assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        ["framedclient", "--pool-size", "zero"],
        ["framedclient", "--codec", "length:size=2,kind-size=3"],
        ["framedclient", "--upstream", "nope:x"],
        ["framedserver", "--port", "99999"],
    ],
)
def test_twist_exits_2_with_one_line_for_invalid_values(argv):
    result = twist(*argv)
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"twist {argv[0]}: error: --")
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow
def test_help_documents_every_option_with_its_default():
    result = twist("framedclient", "--help-all")
    assert result.returncode == 0
    text = result.stdout
    for option in Options.optParameters:
        assert f"--{option[0]}=" in text
        if option[2] is not None:
            assert f"[default: {option[2]}]" in " ".join(text.split()), option[0]
    for flag in ("--upstream=", "--fail-fast"):
        assert flag in text
    for unit in ("seconds", "Seconds"):
        assert unit in text
    assert "length:size=" in text


# -- --codec ---------------------------------------------------------------------


def test_length_codec_layout_from_the_spec():
    codec = parse_codec(
        "length:size=2,order=little,header=8,id-offset=0,id-size=4,kind-offset=4"
    )
    assert isinstance(codec, HeaderCodec)
    wire = codec.encode(REQUEST, 7, b"hi")
    # u16 LE length of what follows (8-byte header + body), then the header
    # (u32 LE id, u8 kind, 3 zero bytes), then the body.
    assert wire == b"\x0a\x00" + b"\x07\x00\x00\x00" + b"\x00\x00\x00\x00" + b"hi"
    framer = codec.new_framer()
    reply = b"\x0b\x00" + b"\x07\x00\x00\x00" + b"\x01\x00\x00\x00" + b"abc"
    [frame] = framer.feed(reply)
    assert codec.decode(frame) == (REPLY, 7, b"abc")
    assert codec.max_frame == 0xFFFF + 2
    assert codec_overhead(codec) == 10


def test_length_codec_with_custom_kinds_and_adjustment():
    codec = parse_codec(
        "length:size=4,adjust=-4,header=3,id-size=2,kind-offset=2,"
        "kinds=request:10;reply:11;error:12"
    )
    wire = codec.encode(REQUEST, 0x0102, b"x")
    # The length counts itself (adjust=-4): 4 + 3 + 1 = 8.
    assert wire == b"\x00\x00\x00\x08" + b"\x01\x02" + b"\x0a" + b"x"
    [frame] = codec.new_framer().feed(b"\x00\x00\x00\x09\x01\x02\x0cno")
    assert codec.decode(frame) == (ERROR, 0x0102, b"no")
    assert not codec.supports_ping


def test_length_codec_without_kind_field_treats_every_frame_as_a_reply():
    codec = parse_codec("length:size=1,id-size=1")
    [frame] = codec.new_framer().feed(b"\x02\x05z")
    assert codec.decode(frame) == (REPLY, 5, b"z")


def test_named_codecs():
    assert parse_codec("FC1").max_frame == 16 * 1024 * 1024
    assert parse_codec("fc1:max-frame=1024").max_frame == 1024
    lines = parse_codec("lines:delimiter=lf,max-frame=10")
    assert lines.matching is Matching.IN_ORDER
    assert lines.encode(REQUEST, 1, b"abc") == b"abc\n"
    with pytest.raises(FrameTooLarge):
        lines.encode(REQUEST, 1, b"x" * 11)
    assert parse_codec("netstring").encode(REQUEST, 1, b"abc") == b"3:abc,"
    redis = parse_codec("redis:max-frame=4096")
    assert redis.matching is Matching.IN_ORDER and redis.max_frame == 4096
    assert codec_overhead(redis) == 0


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("", "unknown codec ''"),
        ("fc1:max-frame=8", "at least 13"),
        ("fc1:max_frame=100", "unknown key"),
        ("fc1:max-frame", "not key=value"),
        ("lines:delimiter=tab", "delimiter must be one of"),
        ("length:size=2,size=4", "given twice"),
        ("length:order=middle", "order must be big or little"),
        ("length:id-size=3", "id-size must be one of"),
        ("length:header=2,id-size=4", "header=2"),
        ("length:kind-offset=0", "overlap"),
        ("length:kinds=request:0", "need kind-offset"),
        ("length:kind-offset=4,kinds=reply:1", "must include request"),
        ("length:kind-offset=4,kinds=request:0;reply:x", "must be an integer"),
        ("length:kind-offset=4,kinds=request:0;answer:1", "NAME:VALUE"),
        ("length:kind-offset=4,kinds=request:0;reply:0", "given twice"),
        ("length:size=1,header=300", "max-frame"),
    ],
)
def test_invalid_codec_specs_say_what_is_wrong(spec, complaint):
    with pytest.raises(ValueError) as raised:
        parse_codec(spec)
    message = str(raised.value)
    assert "\n" not in message
    assert complaint in message
    assert "accepted forms" in message


def test_codec_spec_numbers_are_integers():
    with pytest.raises(ValueError, match="must be an integer"):
        parse_codec("fc1:max-frame=1e6")
    assert math.isfinite(parse_codec("fc1:max-frame=0x1000").max_frame)


def test_narrow_id_codec_works_with_default_pending_cap():
    # A 16-bit ID with every other option left alone: the per-connection
    # cap defaults to what the ID space can hold.
    options = parse("--codec", "length:size=2,id-size=2")
    assert options["config"].max_pending_per_connection == 65_534
    assert options["max-pending-per-connection"] == 65_534


def test_an_upstream_may_carry_a_weight_and_a_bad_one_is_refused():
    assert parse("--upstream", "tcp:127.0.0.1:9000:weight=3")["upstream"] == [
        "tcp:127.0.0.1:9000:weight=3"
    ]
    with pytest.raises(UsageError, match=r"--upstream .*weight= takes"):
        Options().opt_upstream("tcp:127.0.0.1:9000:weight=0")
