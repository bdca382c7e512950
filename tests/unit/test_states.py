"""The task and attempt state machines: every allowed transition passes, every other is refused."""

from __future__ import annotations

import itertools

import pytest

from controlplane.domain import (
    AttemptState,
    InvalidTransition,
    TaskState,
    check_attempt_transition,
    check_task_transition,
)
from controlplane.domain.states import ATTEMPT_TRANSITIONS, TASK_TRANSITIONS

TASK_ALLOWED = {
    ("queued", "planned"),
    ("queued", "failed"),
    ("queued", "cancelled"),
    ("planned", "launching"),
    ("planned", "queued"),
    ("planned", "failed"),
    ("planned", "cancelled"),
    ("launching", "running"),
    ("launching", "planned"),
    ("launching", "queued"),
    ("launching", "succeeded"),
    ("launching", "failed"),
    ("launching", "cancelled"),
    ("running", "succeeded"),
    ("running", "planned"),
    ("running", "queued"),
    ("running", "failed"),
    ("running", "cancelled"),
}
_ATTEMPT_FINAL = ("succeeded", "failed", "preempted", "lost", "cancelled")
ATTEMPT_ALLOWED = {("launching", "running")} | {
    (live, end) for live in ("launching", "running") for end in _ATTEMPT_FINAL
}


def test_the_tables_are_what_the_docs_say() -> None:
    assert {(a.value, b.value) for a, targets in TASK_TRANSITIONS.items() for b in targets} == TASK_ALLOWED
    assert {(a.value, b.value) for a, targets in ATTEMPT_TRANSITIONS.items() for b in targets} == ATTEMPT_ALLOWED


@pytest.mark.parametrize(("current", "wanted"), list(itertools.product(TaskState, TaskState)))
def test_task_transitions(current: TaskState, wanted: TaskState) -> None:
    if (current.value, wanted.value) in TASK_ALLOWED:
        check_task_transition(current, wanted)
    else:
        with pytest.raises(InvalidTransition) as caught:
            check_task_transition(current, wanted)
        assert (caught.value.kind, caught.value.current, caught.value.wanted) == ("task", current.value, wanted.value)


@pytest.mark.parametrize(("current", "wanted"), list(itertools.product(AttemptState, AttemptState)))
def test_attempt_transitions(current: AttemptState, wanted: AttemptState) -> None:
    if (current.value, wanted.value) in ATTEMPT_ALLOWED:
        check_attempt_transition(current, wanted)
    else:
        with pytest.raises(InvalidTransition, match="attempt"):
            check_attempt_transition(current, wanted)


def test_final_states_have_no_way_out() -> None:
    for state in TaskState:
        assert state.is_final == (state.value in ("succeeded", "failed", "cancelled"))
        if state.is_final:
            assert TASK_TRANSITIONS[state] == frozenset()
    for attempt_state in AttemptState:
        assert attempt_state.is_final == (attempt_state.value in _ATTEMPT_FINAL)
        if attempt_state.is_final:
            assert ATTEMPT_TRANSITIONS[attempt_state] == frozenset()
    # no self-loops anywhere
    assert all(state not in targets for state, targets in TASK_TRANSITIONS.items())
    assert all(state not in targets for state, targets in ATTEMPT_TRANSITIONS.items())
