"""
Every client setting is visible where a user looks for it, with its default
and what it does: ``help(FramedClient.from_endpoint)`` and IDE tooltips
(the signature and the docstring), type checkers (``ClientKeywords``), and
the documentation site (docs/client.md's table, the API reference).
"""

from __future__ import annotations

import inspect
import re
import typing

import attrs
import pytest

from framedclient import FramedClient
from framedclient.client import ClientKeywords
from framedclient.config import (
    ClientConfig,
    InvalidSetting,
    documents_settings,
    setting_of,
    settings_docs,
)
from framedclient.testing import memory_client

FIELDS = attrs.fields(ClientConfig)
PUBLISHED = [FramedClient.from_endpoint, FramedClient.__init__]


@pytest.mark.parametrize("call", PUBLISHED, ids=lambda c: c.__name__)
def test_the_signature_lists_every_setting_with_its_default(call: object) -> None:
    parameters = inspect.signature(call).parameters  # type: ignore[arg-type]
    for field in FIELDS:
        assert field.name in parameters, field.name
        parameter = parameters[field.name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
        if isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            # Made fresh per client: shown by its text (codec=fc1).
            assert repr(parameter.default) == setting_of(field).default_text
        else:
            assert parameter.default == field.default, field.name


def test_help_shows_every_setting_with_its_default_and_its_help() -> None:
    for call in PUBLISHED:
        doc = inspect.getdoc(call) or ""
        for name, kind, default, help in settings_docs():
            line = re.search(
                rf"^:param {name}: \((?P<kind>[^,]+), default (?P<default>\S+)\) "
                rf"(?P<help>.+?)(?=^:param |\Z)",
                doc,
                re.M | re.S,
            )
            assert line, f"{call.__qualname__}'s docstring does not show {name}"
            assert line["kind"] == kind and line["default"] == default
            assert " ".join(line["help"].split()) == " ".join(help.split())
    # The hand-written part stays.
    assert "Discovery strings" in (inspect.getdoc(FramedClient.from_endpoint) or "")


def test_the_defaults_shown_are_the_defaults_in_force() -> None:
    client, _server = memory_client()
    shown = dict((name, default) for name, _, default, _ in settings_docs())
    assert shown["pool_size"] == str(client.config.pool_size) == "4"
    assert shown["max_in_flight"] == str(client.config.max_in_flight)
    assert shown["codec"] == "fc1"
    assert shown["request_timeout"] == f"{client.config.request_timeout:g}"


def test_from_endpoint_still_takes_its_collaborators_and_refuses_bad_settings() -> None:
    signature = inspect.signature(FramedClient.from_endpoint)
    # **options still carries prepare, metrics, names, ... after the settings.
    assert list(signature.parameters)[-1] == "options"
    signature.bind(object(), "tcp:127.0.0.1:9000", pool_size=2, prepare=None)
    with pytest.raises(InvalidSetting, match="pool_size"):
        memory_client(pool_size=0)
    with pytest.raises(TypeError, match="did you mean 'pool_size'"):
        memory_client(pool_sise=2)


def test_the_constructor_signature_replaces_its_settings_keyword() -> None:
    parameters = inspect.signature(FramedClient).parameters
    assert "settings" not in parameters
    assert {"config", "prepare", "metrics", "pool_size", "tracing"} <= set(parameters)


def test_client_keywords_lists_every_setting_for_type_checkers() -> None:
    hints = typing.get_type_hints(ClientKeywords)
    missing = [field.name for field in FIELDS if field.name not in hints]
    assert not missing, f"ClientKeywords lacks {missing}: IDEs would not offer them"


def test_a_callable_without_keyword_settings_is_refused() -> None:
    def plain(a: int) -> None:
        """Nothing to publish."""

    with pytest.raises(TypeError, match="takes no \\*\\*settings"):
        documents_settings(plain)


def test_the_types_shown_are_as_written_also_after_attrs_resolves_them() -> None:
    # tests/test_config.py (and any user) may call attrs.resolve_types(),
    # which swaps the fields' type text for the objects.
    attrs.resolve_types(ClientConfig)
    kinds = {name: kind for name, kind, _, _ in settings_docs()}
    assert kinds["codec"] == "Codec"
    assert kinds["request_timeout"] == "float | None"
