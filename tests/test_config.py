"""
One configuration: every setting is defined once in ``framedclient.config``,
validated there with errors that name it, and reachable as a
``FramedClient`` keyword.
"""

from __future__ import annotations

import math
import typing

import attrs
import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock

from framedclient.backoff import ConstantBackoff, ExponentialBackoff
from framedclient.client import FramedClient
from framedclient.codecs import FC1Codec, HeaderCodec, PipelinedCodec
from framedclient.config import (
    ClientConfig,
    ClientSettings,
    Collaborator,
    Count,
    InvalidSetting,
    InvalidSettingType,
    ProtocolConfig,
    Seconds,
    Share,
    Switch,
    setting_of,
)
from framedclient.errors import RequestTimeout
from framedclient.framing import Delimited
from framedclient.validation import Number
from tests.fakes import ScriptedEndpoint

CLIENT_FIELDS = attrs.fields(ClientConfig)
ALL_FIELDS = [(ClientConfig, f) for f in CLIENT_FIELDS] + [
    (ProtocolConfig, f) for f in attrs.fields(ProtocolConfig)
]


def fields_of_kind(*kinds: type) -> list[tuple[type, attrs.Attribute]]:
    return [(c, f) for c, f in ALL_FIELDS if isinstance(setting_of(f).kind, kinds)]


def ids(cases: list[tuple[type, attrs.Attribute]]) -> list[str]:
    return [f"{c.__name__}.{f.name}" for c, f in cases]


NUMERIC = fields_of_kind(Count, Seconds)
REQUIRED_SECONDS = [
    (c, f) for c, f in fields_of_kind(Seconds) if not setting_of(f).kind.optional
]
OPTIONAL = [
    (c, f)
    for c, f in fields_of_kind(Count, Seconds, Collaborator, Number)
    if setting_of(f).kind.optional
]
SHARES = fields_of_kind(Share)


def a_different_valid_value(field: attrs.Attribute) -> object:
    kind = setting_of(field).kind
    if isinstance(kind, Count):
        if isinstance(field.default, attrs.Factory):  # derived from the codec
            return 1234
        return 3 if field.default is None else field.default + 1
    if isinstance(kind, Share):
        return 0.25
    if isinstance(kind, Seconds):
        return 7.5
    if isinstance(kind, Number):
        return 2.5
    if isinstance(kind, Switch):
        return not field.default
    if field.name == "codec":
        return FC1Codec(max_frame=1024)
    if field.name == "backoff":
        return ConstantBackoff(2.0)
    if field.name == "balancer":
        return "round_robin"
    if field.name == "hedge_after":
        return "p99"
    raise AssertionError(f"no sample value for {field.name}")


# -- validation: each kind of bad value names the setting ---------------------------


@pytest.mark.parametrize(("cls", "field"), NUMERIC, ids=ids(NUMERIC))
@pytest.mark.parametrize("value", [True, False], ids=["True", "False"])
def test_a_bool_is_not_a_number(cls, field, value):
    with pytest.raises(TypeError, match=f"^{field.name} "):
        cls(**{field.name: value})


@pytest.mark.parametrize(("cls", "field"), NUMERIC, ids=ids(NUMERIC))
def test_a_string_is_not_a_number(cls, field):
    with pytest.raises(TypeError, match=f"^{field.name} .*got '5'"):
        cls(**{field.name: "5"})


@pytest.mark.parametrize(("cls", "field"), NUMERIC, ids=ids(NUMERIC))
def test_negative_values_are_refused(cls, field):
    with pytest.raises(ValueError, match=f"^{field.name} ") as raised:
        cls(**{field.name: -1})
    assert raised.value.setting == field.name
    assert raised.value.value == -1


@pytest.mark.parametrize(("cls", "field"), NUMERIC, ids=ids(NUMERIC))
def test_zero_is_refused_unless_the_setting_allows_none_of_a_thing(cls, field):
    if (cls, field.name) == (ClientConfig, "max_pending"):
        # No request may wait: every request beyond max_in_flight is shed.
        assert ClientConfig(max_pending=0).max_pending == 0
        return
    with pytest.raises(ValueError, match=f"^{field.name} must be"):
        cls(**{field.name: 0})


@pytest.mark.parametrize(
    ("cls", "field"), fields_of_kind(Seconds), ids=ids(fields_of_kind(Seconds))
)
@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_durations_must_be_finite(cls, field, value):
    with pytest.raises(ValueError, match=f"^{field.name} must be a positive, finite"):
        cls(**{field.name: value})


def required_fields():
    cases = [
        (c, f)
        for c, f in ALL_FIELDS
        if not getattr(setting_of(f).kind, "optional", False)
    ]
    return cases


@pytest.mark.parametrize(
    ("cls", "field"), required_fields(), ids=ids(required_fields())
)
def test_none_is_refused_where_it_means_nothing(cls, field):
    with pytest.raises(TypeError, match=f"^{field.name} ") as raised:
        cls(**{field.name: None})
    assert isinstance(raised.value, InvalidSettingType)
    assert isinstance(raised.value, InvalidSetting)


@pytest.mark.parametrize(("cls", "field"), OPTIONAL, ids=ids(OPTIONAL))
def test_none_is_accepted_where_it_means_off(cls, field):
    assert getattr(cls(**{field.name: None}), field.name) is None


@pytest.mark.parametrize(("cls", "field"), SHARES, ids=ids(SHARES))
@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, True, "0.5"])
def test_a_share_is_a_number_from_zero_to_one(cls, field, value):
    with pytest.raises(ValueError, match=f"^{field.name} must be a number from 0"):
        cls(**{field.name: value})
    assert getattr(cls(**{field.name: 0}), field.name) == 0
    assert getattr(cls(**{field.name: 1}), field.name) == 1


def test_heartbeats_are_on_by_default_for_codecs_with_ping_frames_only():
    assert ClientConfig().heartbeat_interval == 5.0
    assert ClientConfig(heartbeat_interval=None).heartbeat_interval is None
    lines = PipelinedCodec(lambda: Delimited(b"\n"))
    assert ClientConfig(codec=lines).heartbeat_interval is None
    # A bare connection keeps them off unless asked.
    assert ProtocolConfig().heartbeat_interval is None


def test_the_in_flight_cap_per_connection_is_twice_the_fair_share_by_default():
    config = ClientConfig(max_in_flight=512)
    assert config.in_flight_per_connection(4) == 256
    assert config.in_flight_per_connection(12) == 86  # ceil(1024 / 12)
    assert config.in_flight_per_connection(4096) == 1
    assert ClientConfig(max_in_flight_per_connection=10).in_flight_per_connection(
        4
    ) == 10
    # Never beyond what a connection's table or the codec's IDs can hold.
    small = HeaderCodec(lambda: Delimited(b"\n"), header_size=1, id_size=1)
    assert ClientConfig(
        codec=small, max_pending_per_connection=200, max_in_flight=4096
    ).in_flight_per_connection(1) == 200
    # The pool applies it (the number of connections changes with the
    # hosts); a connection's own config leaves it unset.
    assert config.protocol_config().max_in_flight is None


def test_wait_for_ready_must_be_a_bool():
    with pytest.raises(TypeError, match=r"^wait_for_ready must be True or False"):
        ClientConfig(wait_for_ready=1)


def test_a_codec_must_look_like_a_codec():
    with pytest.raises(TypeError, match=r"^codec must be a codec"):
        ClientConfig(codec="fc1")


def test_a_backoff_policy_must_look_like_one():
    with pytest.raises(TypeError, match=r"^backoff must be a backoff policy"):
        ClientConfig(backoff=42)  # type: ignore[arg-type]


def test_a_plain_backoff_function_is_a_backoff_setting():
    from twisted.application.internet import backoffPolicy

    policy = backoffPolicy()
    assert ClientConfig(backoff=policy).backoff is policy


def test_heartbeats_need_a_codec_with_ping_frames():
    codec = PipelinedCodec(lambda: Delimited(b"\n"))
    for cls in (ClientConfig, ProtocolConfig):
        with pytest.raises(
            ValueError, match=r"^heartbeat_interval is set but the codec"
        ):
            cls(codec=codec, heartbeat_interval=1.0)


def test_pending_requests_per_connection_must_fit_the_codec_id_space():
    codec = HeaderCodec(lambda: Delimited(b"\n"), header_size=1, id_size=1)
    with pytest.raises(ValueError, match=r"^max_pending_per_connection must be below"):
        ClientConfig(codec=codec, max_pending_per_connection=255)
    with pytest.raises(ValueError, match=r"^max_pending must be below"):
        ProtocolConfig(codec=codec, max_pending=100_000)
    assert ClientConfig(codec=codec, max_pending_per_connection=200)


def test_default_pending_requests_per_connection_fit_a_narrow_id_space():
    # A 16-bit ID (DNS) works with default settings: the default cap comes
    # down to the ID space; wide IDs keep 100,000.
    narrow = HeaderCodec(lambda: Delimited(b"\n"), header_size=2, id_size=2)
    assert ClientConfig(codec=narrow).max_pending_per_connection == 65_534
    assert ClientConfig(codec=narrow).protocol_config().max_pending == 65_534
    assert ProtocolConfig(codec=narrow).max_pending == 65_534
    assert ClientConfig().max_pending_per_connection == 100_000
    assert ProtocolConfig().max_pending == 100_000


def test_configs_are_frozen():
    config = ClientConfig()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.pool_size = 2  # type: ignore[misc]
    assert attrs.evolve(config, pool_size=2).pool_size == 2


def test_evolve_validates_too():
    with pytest.raises(ValueError, match=r"^pool_size"):
        attrs.evolve(ClientConfig(), pool_size=0)


def test_every_setting_is_documented_in_the_class_docstring():
    for cls in (ClientConfig, ProtocolConfig):
        for field in attrs.fields(cls):
            assert f":param {field.name}: {setting_of(field).doc()}" in cls.__doc__


def test_request_timeout_means_the_same_at_both_layers():
    client = setting_of(attrs.fields(ClientConfig).request_timeout).help
    protocol = setting_of(attrs.fields(ProtocolConfig).request_timeout).help
    assert "from the call to its outcome" in client
    assert "from the call to its outcome" in protocol


def test_the_client_gives_its_connections_its_per_connection_settings():
    config = ClientConfig(
        max_pending_per_connection=7,
        max_write_buffer=1000,
        write_timeout=2.0,
        read_timeout=3.0,
        heartbeat_interval=4.0,
        heartbeat_timeout=5.0,
        abandoned_ttl=6.0,
        black_hole_after=8,
        max_in_flight_per_connection=6,
    )
    assert config.protocol_config() == ProtocolConfig(
        black_hole_after=8,
        codec=config.codec,
        request_timeout=None,
        max_pending=7,
        max_write_buffer=1000,
        write_timeout=2.0,
        read_timeout=3.0,
        heartbeat_interval=4.0,
        heartbeat_timeout=5.0,
        abandoned_ttl=6.0,
    )


# -- FramedClient keywords ------------------------------------------------------------


def client(**kw):
    clock = Clock()
    endpoint = ScriptedEndpoint(auto="up")
    kw.setdefault("pool_size", 1)
    kw.setdefault("backoff", ExponentialBackoff(random=lambda: 0.5))
    return FramedClient([endpoint], clock, **kw), endpoint, clock


def test_client_settings_keywords_are_the_config_fields_with_their_types():
    hints = typing.get_type_hints(ClientSettings)
    attrs.resolve_types(ClientConfig)
    assert hints == {f.name: f.type for f in attrs.fields(ClientConfig)}


@pytest.mark.parametrize("field", CLIENT_FIELDS, ids=[f.name for f in CLIENT_FIELDS])
def test_every_setting_is_a_framed_client_keyword(field):
    value = a_different_valid_value(field)
    c, _, _ = client(**{field.name: value}, start=False)
    assert getattr(c.config, field.name) == value


def test_a_client_built_from_a_config_keeps_it():
    config = ClientConfig(pool_size=1, request_timeout=1.5)
    c = FramedClient([ScriptedEndpoint()], Clock(), config=config, start=False)
    assert c.config is config
    assert c.request_timeout == 1.5


def test_an_unknown_keyword_is_named_with_the_closest_setting():
    with pytest.raises(TypeError, match="'pool_sise'; did you mean 'pool_size'"):
        FramedClient([ScriptedEndpoint()], Clock(), pool_sise=2)


def test_config_and_setting_keywords_together_are_refused():
    with pytest.raises(TypeError, match="config= and setting keywords"):
        FramedClient([ScriptedEndpoint()], Clock(), config=ClientConfig(), pool_size=2)


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("pool_size", True), ("request_timeout", True), ("request_timeout", "5")],
)
def test_framed_client_refuses_wrong_types_naming_the_setting(keyword, value):
    with pytest.raises(TypeError, match=f"^{keyword} "):
        FramedClient([ScriptedEndpoint()], Clock(), **{keyword: value})


def test_abandoned_ttl_set_on_the_client_releases_abandoned_ids_on_time():
    c, endpoint, clock = client(abandoned_ttl=5.0)
    d = c.request(b"never answered")
    clock.advance(0)
    d.addErrback(lambda f: f.trap(CancelledError))
    d.cancel()
    (proto,) = endpoint.protocols
    assert proto.table_size == 1
    clock.advance(4.9)
    assert proto.table_size == 1
    clock.advance(0.1)
    assert proto.table_size == 0


def test_the_client_request_timeout_is_the_whole_deadline_not_the_connections():
    c, endpoint, clock = client(request_timeout=2.0)
    assert c.factory.config.request_timeout is None
    d = c.request(b"never answered")
    failures = []
    d.addErrback(failures.append)
    clock.advance(1.9)
    assert failures == []
    clock.advance(0.1)
    assert failures[0].check(RequestTimeout)


def test_settings_and_constructor_arguments_share_one_error_class():
    # The kinds moved to framedclient.validation (below every module that
    # takes arguments); config re-exports them, so old imports keep working
    # and one except clause catches a bad setting and a bad argument alike.
    from framedclient import config, validation
    from framedclient.pool import Limiter

    for name in ("InvalidSetting", "InvalidSettingType", "SettingKind", "Count", "Seconds",
                 "Share", "Switch"):
        assert getattr(config, name) is getattr(validation, name)
    for bad in (
        lambda: ClientConfig(pool_size=0),
        lambda: ExponentialBackoff(jitter=2),
        lambda: Limiter(Clock(), 0, 1),
    ):
        with pytest.raises(config.InvalidSetting):
            bad()
    with pytest.raises(config.InvalidSettingType) as raised:
        ExponentialBackoff(initial="1")  # type: ignore[arg-type]
    assert (raised.value.owner, raised.value.setting) == ("ExponentialBackoff", "initial")
