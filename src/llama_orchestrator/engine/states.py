"""Instance and health states, and the transitions allowed between them.

A leaf module: of the project it imports only ``errors.py``, the exception root, which is
itself a leaf (``enum`` only), so ``TransitionError`` joins the package's exception tree
without giving states.py a dependency that could pull anything else in (issue 17). Every
state change goes through ``check_transition`` (called by the supervisor's single
``set_state``), so an arc not listed here is a bug that fails loudly instead of a silent
inconsistency.
"""

from __future__ import annotations

from enum import Enum

from llama_orchestrator.errors import OrchestratorError


class State(str, Enum):
    STOPPED = "stopped"  # not running, by wish (or never started)
    STARTING = "starting"  # spawned, waiting for /health 200
    RUNNING = "running"  # process up and answered /health 200
    BACKOFF = "backoff"  # exited unexpectedly, waiting before the next start
    STOPPING = "stopping"  # graceful signal sent, waiting for the group to exit
    EXITED = "exited"  # exited unexpectedly and the restart policy does not restart it
    FATAL = "fatal"  # gave up: start failed or restart retries exhausted


class Desired(str, Enum):
    RUNNING = "running"
    STOPPED = "stopped"


class Health(str, Enum):
    UNKNOWN = "unknown"
    LOADING = "loading"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    ERROR = "error"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING}),
    # STARTING -> EXITED: it ended while no daemon watched (found so at the next start)
    State.STARTING: frozenset(
        {State.RUNNING, State.STOPPING, State.BACKOFF, State.FATAL, State.EXITED}
    ),
    State.RUNNING: frozenset({State.STOPPING, State.BACKOFF, State.EXITED, State.FATAL}),
    State.BACKOFF: frozenset({State.STARTING, State.STOPPED, State.FATAL}),
    # STOPPING -> BACKOFF/FATAL/EXITED: a server stopped because it failed its checks;
    # STOPPING -> EXITED also when it ended while no daemon watched
    State.STOPPING: frozenset({State.STOPPED, State.BACKOFF, State.FATAL, State.EXITED}),
    State.EXITED: frozenset({State.STARTING, State.STOPPED}),
    State.FATAL: frozenset({State.STARTING, State.STOPPED}),
}

# States in which a server process may exist and must be owned.
ALIVE = frozenset({State.STARTING, State.RUNNING, State.STOPPING})


class TransitionError(OrchestratorError, RuntimeError):
    pass


def check_transition(old: State, new: State) -> None:
    if new not in TRANSITIONS[old]:
        raise TransitionError(f"illegal state transition {old.value} -> {new.value}")
