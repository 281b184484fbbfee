"""
The retry budget and retry delays.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from framedclient.retry import RetryBudget, retry_delay


def withdrawals(budget: RetryBudget, tries: int) -> int:
    return sum(budget.try_withdraw() for _ in range(tries))


def test_retries_are_capped_at_a_fifth_of_requests_without_a_floor():
    budget = RetryBudget(Clock(), ratio=0.2, min_per_second=0, cap=1000)
    for _ in range(100):
        budget.deposit()
    assert withdrawals(budget, 100) == 20


def test_floor_lets_a_quiet_client_retry_a_few_times_per_second():
    clock = Clock()
    budget = RetryBudget(clock, ratio=0.2, min_per_second=10, cap=100)
    assert withdrawals(budget, 100) == 10  # the initial floor
    clock.advance(1)
    assert withdrawals(budget, 100) == 10
    clock.advance(0.5)
    assert withdrawals(budget, 100) == 5


def test_a_long_quiet_period_cannot_bank_a_retry_storm():
    clock = Clock()
    budget = RetryBudget(clock, ratio=0.2, min_per_second=10, cap=50)
    clock.advance(3600)
    for _ in range(100_000):
        budget.requests += 1  # the hot path's way of counting
    assert withdrawals(budget, 1000) == 50


def test_invalid_budget_settings_are_rejected():
    with pytest.raises(ValueError, match="ratio"):
        RetryBudget(Clock(), ratio=1.5)
    with pytest.raises(ValueError, match="min_per_second"):
        RetryBudget(Clock(), min_per_second=-1)
    with pytest.raises(ValueError, match="cap"):
        RetryBudget(Clock(), cap=0)


def test_retry_delay_is_full_jitter_and_capped():
    assert retry_delay(1, base=0.025, random=lambda: 0.999) < 0.025
    assert retry_delay(3, base=0.025, random=lambda: 1.0) == pytest.approx(0.1)
    assert retry_delay(50, base=0.025, cap=1.0, random=lambda: 1.0) == 1.0
    assert retry_delay(5, random=lambda: 0.0) == 0.0
