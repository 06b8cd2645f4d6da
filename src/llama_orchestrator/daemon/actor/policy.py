"""What to do after a failure: pure decisions, no I/O, unit-tested on their own.

The actor asks ``after_failure`` what comes next when its server exits, fails its
checks, or cannot even start, and does exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass

from llama_orchestrator.config.schema import RestartPolicy
from llama_orchestrator.engine.states import State


def backoff_delay(failures: int, base: float, multiplier: float, cap: float) -> float:
    """No wait for the first failure after a healthy run; then base * multiplier^(n-2)."""
    if failures <= 1:
        return 0.0
    try:
        delay = base * multiplier ** (failures - 2)
    except OverflowError:  # a long crash loop with a big multiplier: the cap rules
        return float(cap)
    return float(min(cap, delay))


@dataclass(frozen=True)
class Decision:
    state: State  # BACKOFF (then restart after ``delay``), EXITED or FATAL
    failures: int  # the failure streak after this one
    delay: float = 0.0
    reason: str = ""


def after_failure(
    policy: RestartPolicy | None,
    failures: int,
    *,
    was_running: bool,
    ran_for: float,
    reason: str,
    requested: bool = False,
) -> Decision:
    """The next step after a failure, given the streak so far.

    ``ran_for`` is how long the server had been ready (0 when it never was): a run that
    stayed healthy for ``stable_after`` seconds resets the streak first. A start that a
    person asked for (``up``, ``restart``, a request through the gateway) and that fails
    before it was ever ready is not retried (``requested``): they are told at once, and
    retrying a config that cannot start only hides the reason (issue 10).
    """
    stable_after = policy.stable_after if policy is not None else 10.0
    if was_running and ran_for >= stable_after:
        failures = 0
    failures += 1
    if requested and not was_running:
        return Decision(State.FATAL, failures, reason=f"{reason}; not retried (a failed start)")
    if policy is None or not policy.enabled:
        # RUNNING -> EXITED / STARTING -> FATAL: nothing restarts it
        return Decision(State.EXITED if was_running else State.FATAL, failures, reason=reason)
    if failures > policy.max_retries:
        final = f"{reason}; gave up after {policy.max_retries} restart(s)"
        return Decision(State.FATAL, failures, reason=final)
    delay = backoff_delay(
        failures, policy.backoff_base, policy.backoff_multiplier, policy.backoff_max
    )
    return Decision(State.BACKOFF, failures, delay, f"{reason}; restarting in {delay:.1f}s")
