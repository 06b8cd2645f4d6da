"""engine/states.py: the transition table is the single source of truth, and a leaf module."""

from __future__ import annotations

import ast
import inspect

import pytest

from llama_orchestrator.engine import states
from llama_orchestrator.engine.states import (
    ALIVE,
    TRANSITIONS,
    State,
    TransitionError,
    check_transition,
)

ALL_ARCS = [(old, new) for old, targets in TRANSITIONS.items() for new in sorted(targets)]


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(State)
    for targets in TRANSITIONS.values():
        assert targets <= set(State)


@pytest.mark.parametrize(("old", "new"), ALL_ARCS, ids=lambda s: s.value)
def test_listed_arcs_are_allowed(old: State, new: State) -> None:
    check_transition(old, new)  # must not raise


ILLEGAL = [
    (State.STOPPED, State.RUNNING),  # must go through STARTING (health first)
    (State.STOPPED, State.STOPPING),
    (State.STOPPED, State.BACKOFF),
    (State.STOPPING, State.STARTING),  # a stop must finish before a start
    (State.STOPPING, State.RUNNING),
    (State.EXITED, State.RUNNING),
    (State.FATAL, State.RUNNING),
    (State.BACKOFF, State.RUNNING),
]


@pytest.mark.parametrize(("old", "new"), ILLEGAL, ids=lambda s: s.value)
def test_illegal_arcs_raise(old: State, new: State) -> None:
    assert new not in TRANSITIONS[old]
    with pytest.raises(TransitionError, match=f"{old.value} -> {new.value}"):
        check_transition(old, new)


def test_every_unlisted_arc_raises() -> None:
    for old in State:
        for new in State:
            if new in TRANSITIONS[old]:
                continue
            with pytest.raises(TransitionError):
                check_transition(old, new)


def test_no_self_loops() -> None:
    # A "transition" to the same state would emit a meaningless event.
    for old, targets in TRANSITIONS.items():
        assert old not in targets


def test_every_state_can_reach_stopped() -> None:
    assert {State.STARTING, State.RUNNING, State.STOPPING} == ALIVE
    # From every state there is a path to STOPPED (a `down` always converges).
    for start in State:
        seen, todo = {start}, [start]
        while todo:
            for nxt in TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert State.STOPPED in seen or start is State.STOPPED, start


def test_states_module_is_a_leaf() -> None:
    tree = ast.parse(inspect.getsource(states))
    imported: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in a leaf module"
            imported.append(node.module or "")
    assert imported, "expected at least the enum import"
    # errors.py, the exception root TransitionError derives from, is itself a leaf
    # (tests/test_errors.py holds that): importing it keeps states.py free of the project
    offenders = [
        m
        for m in imported
        if m.split(".")[0] == "llama_orchestrator" and m != "llama_orchestrator.errors"
    ]
    assert offenders == []
