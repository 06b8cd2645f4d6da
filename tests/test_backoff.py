"""daemon/supervisor.py backoff_delay: 0 for the first failure, then base * m^n, capped."""

from __future__ import annotations

import pytest

from llama_orchestrator.config.schema import RestartPolicy
from llama_orchestrator.daemon.actor import backoff_delay


def test_first_failure_restarts_at_once() -> None:
    assert backoff_delay(1, 1.0, 2.0, 60.0) == 0.0
    assert backoff_delay(0, 1.0, 2.0, 60.0) == 0.0


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 16.0), (7, 32.0), (8, 60.0), (50, 60.0)],
)
def test_exponential_then_capped(failures: int, expected: float) -> None:
    assert backoff_delay(failures, 1.0, 2.0, 60.0) == pytest.approx(expected)


def test_other_base_and_multiplier() -> None:
    got = [backoff_delay(n, 0.5, 3.0, 10.0) for n in range(1, 7)]
    assert got == pytest.approx([0.0, 0.5, 1.5, 4.5, 10.0, 10.0])


def test_multiplier_one_is_constant() -> None:
    assert {backoff_delay(n, 2.5, 1.0, 60.0) for n in range(2, 20)} == {2.5}


def test_cap_below_base_wins() -> None:
    assert backoff_delay(2, 5.0, 2.0, 1.0) == 1.0


def test_monotonic_non_decreasing_and_float() -> None:
    delays = [backoff_delay(n, 1.0, 2.0, 60.0) for n in range(1, 40)]
    assert delays == sorted(delays)
    assert all(isinstance(d, float) for d in delays)


def test_schema_bounds_do_not_overflow() -> None:
    policy = RestartPolicy.model_validate(
        {"max_retries": 1000, "backoff_multiplier": 10.0, "backoff_base": 1.0, "backoff_max": 1.0}
    )
    # every failure count the supervisor can reach before FATAL must give a capped delay
    for failures in range(1, policy.max_retries + 1):
        delay = backoff_delay(
            failures, policy.backoff_base, policy.backoff_multiplier, policy.backoff_max
        )
        assert 0.0 <= delay <= policy.backoff_max


def test_moderate_counts_stay_capped() -> None:
    assert backoff_delay(300, 1.0, 2.0, 60.0) == 60.0
