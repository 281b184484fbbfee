"""
Tests for framedclient.backoff: the reconnect-delay policies.
"""

from __future__ import annotations

import math
import random
import time

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from framedclient.backoff import (
    BackoffPolicy,
    CallableBackoff,
    ConstantBackoff,
    ExponentialBackoff,
    FullJitterBackoff,
    as_backoff_policy,
    parse_backoff,
)

# gRPC's defaults without jitter: initial 1 s, x1.6 per failure, capped at 120.
GRPC_BACKOFFS = [
    1.0,
    1.6,
    2.56,
    4.096,
    6.5536,
    10.48576,
    16.777216,
    26.8435456,
    42.94967296,
    68.719476736,
    109.9511627776,
    120.0,
    120.0,
]

random_values = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
attempts = st.integers(min_value=1, max_value=10**9)


def delays(policy: BackoffPolicy, count: int) -> list[float]:
    return [policy.delay(attempt) for attempt in range(1, count + 1)]


class TestExponentialBackoff:
    def test_defaults_are_grpcs(self) -> None:
        policy = ExponentialBackoff()
        assert (
            policy.initial,
            policy.multiplier,
            policy.jitter,
            policy.max_delay,
            policy.min_connect_timeout,
        ) == (1.0, 1.6, 0.2, 120.0, 20.0)

    def test_middle_random_value_means_no_jitter(self) -> None:
        policy = ExponentialBackoff(random=lambda: 0.5)
        assert delays(policy, len(GRPC_BACKOFFS)) == pytest.approx(GRPC_BACKOFFS)

    def test_lowest_random_value_shortens_by_jitter(self) -> None:
        policy = ExponentialBackoff(random=lambda: 0.0)
        expected = [0.8 * backoff for backoff in GRPC_BACKOFFS]
        assert delays(policy, len(GRPC_BACKOFFS)) == pytest.approx(expected)

    def test_highest_random_value_lengthens_by_jitter_up_to_the_cap(self) -> None:
        policy = ExponentialBackoff(random=lambda: 0.999999)
        expected = [min(1.2 * backoff, 120.0) for backoff in GRPC_BACKOFFS]
        assert delays(policy, len(GRPC_BACKOFFS)) == pytest.approx(expected, rel=1e-5)
        # 109.95 * 1.2 would be 131.9: clamped.
        assert policy.delay(11) == 120.0

    def test_zero_jitter_ignores_random(self) -> None:
        policy = ExponentialBackoff(jitter=0.0, random=lambda: 0.0)
        assert delays(policy, 3) == pytest.approx([1.0, 1.6, 2.56])

    def test_seeded_random_gives_a_reproducible_sequence(self) -> None:
        first = ExponentialBackoff(random=random.Random(42).random)
        second = ExponentialBackoff(random=random.Random(42).random)
        assert delays(first, 20) == delays(second, 20)

    def test_jitter_disperses_clients_that_failed_together(self) -> None:
        source = random.Random(7)
        policies = [ExponentialBackoff(random=source.random) for _ in range(100)]
        assert len({policy.delay(3) for policy in policies}) == 100

    @given(attempt=attempts, value=random_values)
    def test_delay_stays_within_jitter_of_backoff_and_under_the_cap(
        self, attempt: int, value: float
    ) -> None:
        policy = ExponentialBackoff(random=lambda: value)
        backoff = min(1.0 * 1.6 ** min(attempt - 1, 1000), 120.0)
        delay = policy.delay(attempt)
        assert 0.0 <= delay <= 120.0
        assert 0.8 * backoff * (1 - 1e-12) <= delay <= 1.2 * backoff * (1 + 1e-12)

    @given(
        attempt=attempts,
        value=random_values,
        jitter=st.floats(min_value=0.0, max_value=1.0),
        max_delay=st.floats(min_value=1.0, max_value=1e6),
    )
    def test_delay_is_never_negative_nor_above_max_delay(
        self, attempt: int, value: float, jitter: float, max_delay: float
    ) -> None:
        policy = ExponentialBackoff(
            jitter=jitter, max_delay=max_delay, random=lambda: value
        )
        assert 0.0 <= policy.delay(attempt) <= max_delay

    def test_huge_attempt_numbers_stay_at_the_cap(self) -> None:
        policy = ExponentialBackoff(random=lambda: 0.5)
        assert policy.delay(10**6) == 120.0
        assert policy.delay(10**400) == 120.0
        assert policy.connect_timeout(10**6) == 120.0

    def test_huge_attempt_with_integer_multiplier_is_instant(self) -> None:
        # An int multiplier must not trigger exact big-integer powers.
        policy = ExponentialBackoff(multiplier=2, random=lambda: 0.5)
        started = time.perf_counter()
        assert policy.delay(10**9) == 120.0
        assert time.perf_counter() - started < 0.1

    def test_multiplier_one_keeps_the_initial_delay(self) -> None:
        policy = ExponentialBackoff(multiplier=1.0, random=lambda: 0.5)
        assert delays(policy, 3) == [1.0, 1.0, 1.0]
        assert policy.delay(10**6) == 1.0

    def test_connect_timeout_is_at_least_min_connect_timeout(self) -> None:
        policy = ExponentialBackoff()
        assert [policy.connect_timeout(n) for n in range(7)] == [20.0] * 7

    def test_connect_timeout_follows_the_backoff_of_that_attempt(self) -> None:
        policy = ExponentialBackoff()
        # Attempt after 7 failures: backoff 1.6 ** 7 = 26.8 > 20.
        assert policy.connect_timeout(7) == pytest.approx(26.8435456)
        assert policy.connect_timeout(100) == 120.0

    def test_connect_timeout_of_first_attempt_is_initial_if_larger(self) -> None:
        policy = ExponentialBackoff(min_connect_timeout=0.5)
        assert policy.connect_timeout(0) == 1.0
        assert policy.connect_timeout(1) == pytest.approx(1.6)

    def test_connect_timeout_is_not_jittered(self) -> None:
        policy = ExponentialBackoff(random=lambda: 0.0)
        assert policy.connect_timeout(10) == pytest.approx(1.6**10)

    def test_delay_rejects_attempt_zero(self) -> None:
        with pytest.raises(ValueError, match=r">= 1"):
            ExponentialBackoff().delay(0)

    def test_connect_timeout_rejects_negative_attempt(self) -> None:
        with pytest.raises(ValueError, match=r">= 0"):
            ExponentialBackoff().connect_timeout(-1)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"initial": 0}, "initial must be a finite number > 0"),
            ({"initial": -1}, "initial must be"),
            ({"initial": math.nan}, "initial must be"),
            ({"multiplier": 0.9}, "multiplier must be a finite number >= 1"),
            ({"multiplier": math.inf}, "multiplier must be"),
            ({"jitter": -0.1}, "jitter must be between 0 and 1"),
            ({"jitter": 1.5}, "jitter must be between 0 and 1"),
            ({"jitter": math.nan}, "jitter must be"),
            ({"max_delay": 0.5}, r"max_delay must be a finite number >= initial"),
            ({"max_delay": math.inf}, "max_delay must be"),
            ({"min_connect_timeout": 0}, "min_connect_timeout must be"),
        ],
    )
    def test_invalid_arguments_name_the_parameter_and_range(
        self, kwargs: dict[str, float], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            ExponentialBackoff(**kwargs)  # type: ignore[arg-type]

    def test_random_must_be_callable(self) -> None:
        with pytest.raises(TypeError, match="random"):
            ExponentialBackoff(random=0.5)  # type: ignore[arg-type]

    def test_jitter_bounds_are_accepted(self) -> None:
        assert ExponentialBackoff(jitter=1.0, random=lambda: 0.0).delay(1) == 0.0
        assert ExponentialBackoff(jitter=0.0).delay(1) == 1.0

    def test_repr_shows_parameters_but_not_the_random_source(self) -> None:
        assert repr(ExponentialBackoff(random=lambda: 0.5)) == (
            "ExponentialBackoff(initial=1.0, multiplier=1.6, jitter=0.2, "
            "max_delay=120.0, min_connect_timeout=20.0)"
        )

    def test_is_immutable_and_compares_by_parameters(self) -> None:
        policy = ExponentialBackoff()
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            policy.initial = 2.0  # type: ignore[misc]
        assert policy == ExponentialBackoff(random=lambda: 0.5)
        assert hash(policy) == hash(ExponentialBackoff())
        assert policy != ExponentialBackoff(initial=2.0)

    def test_has_no_instance_dict(self) -> None:
        assert not hasattr(ExponentialBackoff(), "__dict__")


class TestFullJitterBackoff:
    def test_delay_is_random_fraction_of_doubling_ceiling(self) -> None:
        policy = FullJitterBackoff(random=lambda: 0.5)
        assert delays(policy, 9) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]

    def test_lowest_random_value_retries_at_once(self) -> None:
        policy = FullJitterBackoff(random=lambda: 0.0)
        assert delays(policy, 5) == [0.0] * 5

    @given(
        attempt=attempts,
        value=random_values,
        base=st.floats(min_value=0.001, max_value=10.0),
    )
    def test_delay_is_within_zero_and_the_capped_ceiling(
        self, attempt: int, value: float, base: float
    ) -> None:
        policy = FullJitterBackoff(base=base, max_delay=60.0, random=lambda: value)
        ceiling = min(60.0, base * 2.0 ** min(attempt - 1, 1000))
        assert 0.0 <= policy.delay(attempt) <= ceiling

    def test_huge_attempt_numbers_stay_at_the_cap(self) -> None:
        policy = FullJitterBackoff(random=lambda: 0.999999)
        assert policy.delay(10**6) == pytest.approx(120.0, rel=1e-5)
        assert policy.delay(10**400) <= 120.0
        assert policy.connect_timeout(10**6) == 120.0

    def test_connect_timeout_is_max_of_ceiling_and_minimum(self) -> None:
        policy = FullJitterBackoff()
        assert [policy.connect_timeout(n) for n in range(7)] == [
            20.0,
            20.0,
            20.0,
            20.0,
            20.0,
            32.0,
            64.0,
        ]

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"base": 0}, "base must be a finite number > 0"),
            ({"max_delay": 0.5}, "max_delay must be a finite number >= base"),
            ({"min_connect_timeout": -1}, "min_connect_timeout must be"),
        ],
    )
    def test_invalid_arguments_name_the_parameter_and_range(
        self, kwargs: dict[str, float], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            FullJitterBackoff(**kwargs)  # type: ignore[arg-type]

    def test_repr_shows_parameters(self) -> None:
        assert repr(FullJitterBackoff(base=0.5, max_delay=30)) == (
            "FullJitterBackoff(base=0.5, max_delay=30, min_connect_timeout=20.0)"
        )


class TestConstantBackoff:
    def test_same_delay_and_connect_timeout_for_every_attempt(self) -> None:
        policy = ConstantBackoff(2.0, connect_timeout=5.0)
        assert [policy.delay(n) for n in (1, 2, 10**6)] == [2.0, 2.0, 2.0]
        assert [policy.connect_timeout(n) for n in (0, 1, 10**6)] == [5.0] * 3

    def test_default_connect_timeout_is_grpcs_minimum(self) -> None:
        assert ConstantBackoff(0).connect_timeout(0) == 20.0

    def test_repr_uses_the_constructor_names(self) -> None:
        assert repr(ConstantBackoff(2.0)) == (
            "ConstantBackoff(delay=2.0, connect_timeout=20.0)"
        )

    def test_compares_by_value(self) -> None:
        assert ConstantBackoff(2.0) == ConstantBackoff(delay=2.0)
        assert ConstantBackoff(2.0) != ConstantBackoff(3.0)

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ((-1.0,), "delay must be a finite number >= 0"),
            ((math.inf,), "delay must be"),
            ((1.0, 0.0), "connect_timeout must be a finite number > 0"),
        ],
    )
    def test_invalid_arguments_name_the_parameter_and_range(
        self, args: tuple[float, ...], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            ConstantBackoff(*args)

    def test_delay_rejects_attempt_zero(self) -> None:
        with pytest.raises(ValueError):
            ConstantBackoff(1.0).delay(0)


class TestParseBackoff:
    def test_grpc_alone_is_the_default_policy(self) -> None:
        assert parse_backoff("grpc") == ExponentialBackoff()

    def test_grpc_with_parameters(self) -> None:
        assert parse_backoff("grpc:initial=0.5,max=30,multiplier=1.6,jitter=0.2") == (
            ExponentialBackoff(initial=0.5, max_delay=30.0)
        )

    def test_grpc_min_connect_timeout(self) -> None:
        policy = parse_backoff("grpc:min_connect_timeout=5")
        assert policy == ExponentialBackoff(min_connect_timeout=5.0)

    def test_full_jitter_with_parameters(self) -> None:
        assert parse_backoff("full-jitter:base=1,max=60") == FullJitterBackoff(
            base=1.0, max_delay=60.0
        )

    def test_full_jitter_alone(self) -> None:
        assert parse_backoff("full-jitter") == FullJitterBackoff()

    def test_constant(self) -> None:
        assert parse_backoff("constant:2") == ConstantBackoff(2.0)

    def test_case_and_spaces_are_forgiven(self) -> None:
        assert parse_backoff(" GRPC : initial = 2 , max = 10 ") == ExponentialBackoff(
            initial=2.0, max_delay=10.0
        )

    @pytest.mark.parametrize(
        ("spec", "reason"),
        [
            ("", "unknown policy ''"),
            ("exponential", "unknown policy 'exponential'"),
            ("grpc:initial", "'initial' is not key=value"),
            ("grpc:base=1", "unknown key 'base'"),
            ("grpc:initial=soon", "initial='soon' is not a number"),
            ("grpc:max=1,max=2", "key 'max' given twice"),
            ("grpc:jitter=2", "jitter must be between 0 and 1"),
            ("grpc:initial=200", "max_delay must be a finite number >= initial"),
            ("full-jitter:initial=1", "unknown key 'initial'"),
            ("constant", "constant needs a delay in seconds"),
            ("constant:", "constant needs a delay in seconds"),
            ("constant:fast", "'fast' is not a number"),
            ("constant:-1", "delay must be a finite number >= 0"),
        ],
    )
    def test_invalid_spec_gives_one_line_with_the_accepted_forms(
        self, spec: str, reason: str
    ) -> None:
        with pytest.raises(ValueError) as raised:
            parse_backoff(spec)
        message = str(raised.value)
        assert "\n" not in message
        assert message.startswith(f"invalid backoff {spec!r}: ")
        assert reason in message
        for form in ("'grpc'", "'full-jitter:", "'constant:S'"):
            assert form in message


def test_a_plain_callable_is_called_with_the_number_of_failed_attempts():
    seen = []
    policy = as_backoff_policy(lambda attempt: seen.append(attempt) or 2.0 * attempt)
    assert isinstance(policy, CallableBackoff)
    assert [policy.delay(n) for n in (1, 2, 3)] == [2.0, 4.0, 6.0]
    assert seen == [1, 2, 3]
    assert policy.connect_timeout(0) == 20.0


def test_a_policy_object_is_used_as_it_is():
    policy = ConstantBackoff(2.0)
    assert as_backoff_policy(policy) is policy
