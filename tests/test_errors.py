"""
Tests for framedclient.errors: one failure vocabulary.  Each error class
names its outcome; metrics, the gateway, the proxy and the soak count in
those words; the caller's mistakes are apart from the peer's.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure

import framedclient
from framedclient import errors
from framedclient.bench import soak
from framedclient.codecs import FC1Codec
from framedclient.errors import (
    OUTCOMES,
    ClientClosed,
    ConnectFailed,
    ConnectionLost,
    CorruptFrame,
    FramedClientError,
    FrameTooLarge,
    InvalidRequest,
    Overloaded,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    RequestTooLarge,
    Unavailable,
    codec_refusal,
    outcome_of,
)
from framedclient.metrics import Metrics
from framedclient.runner import gateway, proxy
from framedclient.testing import memory_client

DOCS = Path(__file__).resolve().parent.parent / "docs"

# One instance of every error class framedclient defines.
EXAMPLES: list[FramedClientError] = [
    RemoteError("no such key"),
    RequestTimeout(1.0),
    ConnectionLost(True),
    ConnectFailed(3, "refused"),
    Overloaded("full"),
    Unavailable("none ready"),
    ProtocolError("bad"),
    FrameTooLarge(100, 10),
    CorruptFrame("bad header"),
    ClientClosed("closing"),
    InvalidRequest("newline in a line"),
    RequestTooLarge(100, 10),
]


def all_error_classes() -> set[type[FramedClientError]]:
    found: set[type[FramedClientError]] = set()
    todo: list[type[FramedClientError]] = [FramedClientError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("framedclient.") and cls not in found:
            found.add(cls)
            todo.extend(cls.__subclasses__())
    return found


def test_every_error_class_has_an_example() -> None:
    assert {type(e) for e in EXAMPLES} | {FramedClientError} >= {
        cls for cls in all_error_classes() if cls.__module__ == "framedclient.errors"
    }


def test_every_error_class_names_an_outcome_in_outcomes() -> None:
    for cls in all_error_classes():
        assert cls.outcome in OUTCOMES, cls


def test_outcomes_start_with_ok_and_hold_each_name_once() -> None:
    assert OUTCOMES[0] == "ok"
    assert len(set(OUTCOMES)) == len(OUTCOMES)
    assert {"cancelled", "internal"} <= set(OUTCOMES)


def test_every_outcome_but_the_catch_alls_comes_from_an_error_class() -> None:
    named = {cls.outcome for cls in all_error_classes()}
    assert set(OUTCOMES) - named == {"ok", "cancelled"}


def test_metrics_use_the_one_list() -> None:
    from framedclient import metrics

    assert metrics.OUTCOMES is OUTCOMES


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
def test_metrics_accept_every_error_outcome(error: FramedClientError) -> None:
    m = Metrics()
    m.record_failure(error.outcome, None)
    assert m.outcomes[error.outcome] == 1


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (RemoteError("x"), "remote_error"),
        (RequestTimeout(1.0), "timeout"),
        (ConnectionLost(False), "connection_lost"),
        (ConnectFailed(2, "refused"), "unavailable"),
        (Overloaded("x"), "overloaded"),
        (Unavailable("x"), "unavailable"),
        (FrameTooLarge(10, 5), "protocol_error"),
        (CorruptFrame("x"), "protocol_error"),
        (ClientClosed("x"), "closed"),
        (InvalidRequest("x"), "invalid_request"),
        (RequestTooLarge(10, 5), "request_too_large"),
        (CancelledError(), "cancelled"),
        (asyncio.CancelledError(), "cancelled"),
        (KeyError("bug"), "internal"),
        (None, "internal"),
    ],
)
def test_outcome_of_maps_any_error(error: BaseException | None, outcome: str) -> None:
    assert outcome_of(error) == outcome


def test_errors_module_does_not_import_twisted() -> None:
    source = Path(errors.__file__).read_text()
    assert not re.search(r"^\s*(from|import) twisted", source, re.MULTILINE)


# -- the caller's mistakes apart from the peer's --------------------------------


def test_a_body_too_large_to_send_is_not_a_protocol_error() -> None:
    error = RequestTooLarge(101, 100)
    assert not isinstance(error, ProtocolError)
    assert isinstance(error, InvalidRequest) and isinstance(error, ValueError)
    assert (error.length, error.limit) == (101, 100)
    assert "101" in str(error) and "100" in str(error)
    assert "nothing was sent" in str(error)


def test_an_invalid_body_is_still_a_value_error() -> None:
    with pytest.raises(ValueError):
        raise InvalidRequest("a newline inside a line")


def test_codec_refusal_turns_an_encode_size_check_into_request_too_large() -> None:
    with pytest.raises(FrameTooLarge) as raised:
        FC1Codec(max_frame=100).encode(0, 1, b"x" * 100)
    refusal = codec_refusal(raised.value)
    assert isinstance(refusal, RequestTooLarge)
    assert (refusal.length, refusal.limit) == (113, 100)
    assert refusal.__cause__ is raised.value


def test_codec_refusal_turns_any_other_encode_error_into_invalid_request() -> None:
    cause = TypeError("can't concat str to bytes")
    refusal = codec_refusal(cause)
    assert type(refusal) is InvalidRequest and refusal.__cause__ is cause
    assert "can't concat str to bytes" in str(refusal)


def test_codec_refusal_keeps_an_invalid_request_as_is() -> None:
    error = InvalidRequest("already the caller's")
    assert codec_refusal(error) is error


def test_client_fails_a_body_too_large_alone_with_request_too_large() -> None:
    client, server = memory_client(codec=FC1Codec(max_frame=100), pool_size=1)
    too_big = client.request(b"x" * 200)
    fits = client.request(b"fits")
    server.flush()
    results: list[object] = []
    too_big.addErrback(results.append)
    fits.addCallback(results.append)
    assert isinstance(results[0], Failure) and results[0].check(RequestTooLarge)
    assert results[1] == b"fits"


def test_connect_failed_is_exported_and_keeps_attempts_and_cause() -> None:
    error = framedclient.ConnectFailed(3, "connection refused")
    assert isinstance(error, ConnectionLost) and not error.written
    assert (error.attempts, error.cause) == (3, "connection refused")
    assert "3 connection attempts failed" in str(error)


# -- every reader of the vocabulary maps every outcome ---------------------------


def test_gateway_maps_every_failure_outcome_to_a_status() -> None:
    assert set(gateway.OUTCOME_KINDS) == set(OUTCOMES) - {"ok"}
    for kind in gateway.OUTCOME_KINDS.values():
        assert kind in gateway.ERROR_STATUSES


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (Overloaded("x"), 503, "overloaded"),
        (ConnectFailed(2, "refused"), 503, "unavailable"),
        (RequestTimeout(1.0), 504, "timeout"),
        (RemoteError("no such key"), 500, "remote_error"),
        (ConnectionLost(True), 502, "connection_lost"),
        (FrameTooLarge(10, 5), 502, "protocol_error"),
        (RequestTooLarge(10, 5), 413, "too_large"),
        (InvalidRequest("newline"), 400, "bad_body"),
        (CancelledError(), 503, "cancelled"),
        (KeyError("bug"), 500, "internal"),
    ],
)
def test_gateway_status_comes_from_the_outcome(
    error: BaseException, status: int, kind: str
) -> None:
    got_kind, _ = gateway.classify(Failure(error))
    assert (gateway.ERROR_STATUSES[got_kind][0], got_kind) == (status, kind)


def test_gateway_passes_the_servers_own_error_message() -> None:
    assert gateway.classify(Failure(RemoteError("no such key"))) == (
        "remote_error",
        "no such key",
    )


def test_proxy_names_every_failure_outcome() -> None:
    assert set(proxy._OUTCOME_KINDS) == set(OUTCOMES) - {"ok"}


def test_soak_reports_a_row_for_every_outcome() -> None:
    rows = set(soak.OUTCOMES)
    for outcome in OUTCOMES:
        if outcome == "connection_lost":
            assert {soak.LOST_WRITTEN, soak.LOST_UNWRITTEN} <= rows
        elif outcome == "internal":
            assert soak.UNEXPECTED in rows
        else:
            assert outcome in rows


def test_client_docs_list_every_outcome() -> None:
    text = (DOCS / "client.md").read_text()
    section = text.split("## What a request can end with", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| [^|]+ \| `([a-z_]+)` \|", section, re.MULTILINE))
    assert listed == set(OUTCOMES)


def test_remote_error_carries_the_servers_code_when_there_is_one():
    plain = RemoteError("no such key")
    assert (plain.message, plain.code, plain.reply) == ("no such key", None, None)
    assert str(plain) == "server replied with an error: no such key"
    coded = RemoteError("NXDOMAIN", 3, reply=b"raw")
    assert (coded.message, coded.code, coded.reply) == ("NXDOMAIN", 3, b"raw")
    assert str(coded) == "server replied with error 3: NXDOMAIN"
    assert outcome_of(coded) == "remote_error"
