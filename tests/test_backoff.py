"""daemon/actor/policy.py: backoff_delay (0 for the first failure, then base * m^n, capped) and
after_failure, the pure decision of what follows a failure."""

from __future__ import annotations

import pytest

from llama_orchestrator.config.schema import RestartPolicy
from llama_orchestrator.daemon.actor.policy import backoff_delay


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


def test_after_failure_backs_off_then_gives_up() -> None:
    from llama_orchestrator.daemon.actor.policy import after_failure
    from llama_orchestrator.engine.states import State

    policy = RestartPolicy(max_retries=2, backoff_base=1.0, backoff_multiplier=2.0)
    first = after_failure(policy, 0, was_running=True, ran_for=0.5, reason="boom")
    assert (first.state, first.failures, first.delay) == (State.BACKOFF, 1, 0.0)
    second = after_failure(policy, 1, was_running=False, ran_for=0.0, reason="boom")
    assert (second.state, second.failures, second.delay) == (State.BACKOFF, 2, 1.0)
    third = after_failure(policy, 2, was_running=False, ran_for=0.0, reason="boom")
    assert third.state is State.FATAL and "gave up after 2 restart(s)" in third.reason


def test_after_failure_a_stable_run_resets_the_streak() -> None:
    from llama_orchestrator.daemon.actor.policy import after_failure
    from llama_orchestrator.engine.states import State

    policy = RestartPolicy(max_retries=2, stable_after=10)
    d = after_failure(policy, 2, was_running=True, ran_for=10.0, reason="x")
    assert (d.state, d.failures, d.delay) == (State.BACKOFF, 1, 0.0)


def test_after_failure_of_a_requested_start_is_not_retried_and_no_policy_means_no_restart() -> None:
    from llama_orchestrator.daemon.actor.policy import after_failure
    from llama_orchestrator.engine.states import State

    policy = RestartPolicy()
    d = after_failure(policy, 0, was_running=False, ran_for=0.0, reason="x", requested=True)
    assert d.state is State.FATAL and "not retried" in d.reason
    off = RestartPolicy(enabled=False)
    assert after_failure(off, 0, was_running=True, ran_for=99, reason="x").state is State.EXITED
    assert after_failure(off, 0, was_running=False, ran_for=0, reason="x").state is State.FATAL
