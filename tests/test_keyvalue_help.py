"""
``help(RedisClient.from_endpoint)`` and ``help(MemcacheClient.from_endpoint)``
(and IDE tooltips, which read the same signature and docstring) show every
client setting with its default, as ``FramedClient.from_endpoint`` does: a
user of the built-in clients should not have to look up another class to
learn that ``pool_size`` or ``request_timeout`` exist.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import attrs
import pytest

from framedclient import MemcacheClient, RedisClient
from framedclient.codecs.memcache import MemcacheCodec
from framedclient.codecs.redis import RedisCodec
from framedclient.config import ClientConfig, settings_docs

CALLS = [RedisClient.from_endpoint, MemcacheClient.from_endpoint]
OWN_CODEC = {
    RedisClient.from_endpoint: "RedisCodec()",
    MemcacheClient.from_endpoint: "MemcacheCodec()",
}


@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.__qualname__)
def test_the_signature_lists_every_setting(call: Any) -> None:
    parameters = inspect.signature(call).parameters
    for field in attrs.fields(ClientConfig):
        assert field.name in parameters, field.name
        assert parameters[field.name].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["pool_size"].default == 4
    assert parameters["request_timeout"].default == 5.0
    # The client's own codec, not fc1, is its default.
    assert parameters["codec"].default is None
    # prepare, metrics, names... still pass through.
    assert list(parameters)[-1] == "options"


@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.__qualname__)
def test_help_shows_every_setting_with_its_default(call: Any) -> None:
    doc = inspect.getdoc(call) or ""
    for name, kind, default, _help in settings_docs():
        if name == "codec":
            continue
        assert re.search(
            rf"^:param {name}: \({re.escape(kind)}, default {re.escape(default)}\) ",
            doc,
            re.M,
        ), f"help({call.__qualname__}) does not show {name}"
    # codec is described once, with this client's default (never "fc1").
    assert len(re.findall(r"^:param codec:", doc, re.M)) == 1
    assert OWN_CODEC[call] in doc
    assert "default fc1" not in doc


def test_the_codec_keyword_still_takes_a_codec_and_refuses_another() -> None:
    from twisted.internet.task import Clock

    clock = Clock()
    redis = RedisClient.from_endpoint(
        clock, "tcp:127.0.0.1:6379", codec=RedisCodec(max_frame=1 << 20), start=False
    )
    assert isinstance(redis.client.codec, RedisCodec)
    mc = MemcacheClient.from_endpoint(clock, "tcp:127.0.0.1:11211", start=False)
    assert isinstance(mc.client.codec, MemcacheCodec)
    with pytest.raises(TypeError, match="codec must be a RedisCodec"):
        RedisClient.from_endpoint(clock, "tcp:127.0.0.1:6379", codec=MemcacheCodec())  # type: ignore[arg-type]
