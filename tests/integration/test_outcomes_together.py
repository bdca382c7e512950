"""A round of attempts that start running or end, written in one transaction, decides what one by one would.

``follow`` hands the store a round's outcomes at once (``Store.apply_outcomes``,
``Store.start_running_many``); each item must be decided on the rows as the
items before it left them, exactly as separate calls would, hedged siblings
included; and a bad item must leave nothing of the round half-written.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from controlplane.domain import AttemptState, Candidate, PlacementPlan, TaskState
from controlplane.store import NotFound, Outcome, PlannedLaunch, Store, running
from tests.support.claimed import claimed_task

pytest_plugins = ["tests.integration.store_fixtures"]


def launched(store: Store, *, siblings: int = 1, running: bool = False) -> list[str]:
    """A new task launched on ``siblings`` attempts (a hedge group when more than one); their ids."""
    claimed = claimed_task(store)
    group = 1 if siblings > 1 else None
    candidates = tuple(
        Candidate(target=f"t{n}", provider="aws", private=False, hedge_group=group) for n in range(siblings)
    )
    plan = PlacementPlan(
        task_id=claimed.id, policy_version="v", decided_at=store.now(), candidates=candidates, rejections=()
    )
    launch = PlannedLaunch(
        plan=plan,
        candidate=candidates[0],
        token_sha256="a" * 64,
        hedged=candidates[1:],
        hedged_token_sha256=("b" * 64,) * (siblings - 1),
    )
    (attempts,) = store.start_launch_groups([launch], actor="s")
    ids = [attempt.id for attempt in attempts]
    if running:
        assert store.start_running(ids[0], actor="s").running
    return ids


def a_round(store: Store) -> tuple[list[Outcome], list[str]]:
    """Outcomes of every kind, on new tasks: the items, and their tasks in order."""
    run = launched(store)
    done = launched(store, running=True)
    quick = launched(store)  # succeeded before follow ever saw it run
    broken = launched(store, running=True)
    preempted = launched(store, running=True)
    race = launched(store, siblings=2)
    lone_failure = launched(store, siblings=2)
    already = launched(store, running=True)
    store.transition_attempt(already[0], wanted=AttemptState.SUCCEEDED, actor="s")
    items = [
        Outcome(attempt_id=run[0], attempt_state=AttemptState.RUNNING, task_state=TaskState.RUNNING),
        Outcome(attempt_id=done[0], attempt_state=AttemptState.SUCCEEDED, task_state=TaskState.SUCCEEDED),
        Outcome(attempt_id=quick[0], attempt_state=AttemptState.SUCCEEDED, task_state=TaskState.SUCCEEDED),
        Outcome(
            attempt_id=broken[0],
            attempt_state=AttemptState.FAILED,
            task_state=TaskState.FAILED,
            reason="unsupported media",
            exit_code=65,
        ),
        Outcome(attempt_id=preempted[0], attempt_state=AttemptState.PREEMPTED, task_state=TaskState.FAILED),
        # both siblings say they run, in one round: the first wins, the second is cancelled
        Outcome(attempt_id=race[0], attempt_state=AttemptState.RUNNING, task_state=TaskState.RUNNING),
        Outcome(attempt_id=race[1], attempt_state=AttemptState.RUNNING, task_state=TaskState.RUNNING),
        # a launching sibling fails while the other lives: it ends alone
        Outcome(attempt_id=lone_failure[0], attempt_state=AttemptState.FAILED, task_state=TaskState.FAILED),
        Outcome(attempt_id=already[0], attempt_state=AttemptState.FAILED, task_state=TaskState.FAILED),
    ]
    tasks = [store.get_attempt(ids[0]).task_id for ids in (run, done, quick, broken, preempted, race, lone_failure)]
    tasks.append(store.get_attempt(already[0]).task_id)
    return items, tasks


def what_became(store: Store, task_id: str) -> dict[str, Any]:
    """The task, its attempts and its events, with ids replaced by attempt numbers (comparable across tasks)."""
    task = store.get_task(task_id)
    attempts = store.attempts_for(task_id)
    names = {attempt.id: f"#{attempt.number}" for attempt in attempts}

    def plain(value: Any) -> str:
        return re.sub(r"att_[0-9A-Z]+", lambda m: names.get(m.group(0), "?"), repr(value))

    return {
        "task": (task.state, task.reason, task.target),
        "attempts": [(a.number, a.state, plain(a.reason), a.exit_code) for a in attempts],
        "events": [
            (e.kind, e.from_state, e.to_state, plain(e.detail), names.get(e.attempt_id or ""))
            for e in store.list_events(task_id)
            if e.kind not in ("task.created", "decision.recorded")
        ],
    }


@pytest.mark.parametrize("chunk", [500, 2], ids=["one-transaction", "chunks-of-2"])
def test_a_round_in_one_transaction_decides_what_separate_calls_decide(
    store: Store, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # chunks of 2 put the racing hedge siblings in two transactions: the second must still see the first's win
    monkeypatch.setattr(running, "_CHUNK", chunk)
    together, together_tasks = a_round(store)
    applied_together = store.apply_outcomes(together, actor="follow")
    alone, alone_tasks = a_round(store)
    applied_alone = [store.apply_outcomes([item], actor="follow")[0] for item in alone]

    assert applied_together == applied_alone == [True, True, True, True, True, True, False, True, False]
    for mine, theirs in zip(together_tasks, alone_tasks, strict=True):
        assert what_became(store, mine) == what_became(store, theirs)
    run, done, quick, broken, preempted, race, lone_failure, already = (
        what_became(store, task_id) for task_id in together_tasks
    )
    assert run["task"][0] == TaskState.RUNNING
    assert done["task"][0] == quick["task"][0] == TaskState.SUCCEEDED
    # the quick one passed through running, on the attempt and on the task, as it would one call at a time
    assert [(e[1], e[2]) for e in quick["events"] if e[0] == "task.transition"][-2:] == [
        ("launching", "running"),
        ("running", "succeeded"),
    ]
    assert broken["task"][:2] == (TaskState.FAILED, "unsupported media")
    assert preempted["task"][0] == TaskState.RUNNING  # retryable: the task waits for follow's failover
    assert [a[1] for a in race["attempts"]] == [AttemptState.RUNNING, AttemptState.CANCELLED]
    assert race["attempts"][1][2] == repr("hedge lost to #1")
    assert [a[1] for a in lone_failure["attempts"]] == [AttemptState.FAILED, AttemptState.LAUNCHING]
    assert lone_failure["task"][0] == TaskState.LAUNCHING
    assert already["attempts"][0][1] == AttemptState.SUCCEEDED  # already decided: left as it was


def test_start_running_many_lets_the_first_sibling_win(store: Store) -> None:
    first, second = launched(store, siblings=2)
    won, late = store.start_running_many([first, second], actor="follow")
    # the win cancelled the second (its resource is the caller's to stop); asked next, it has ended
    assert (won.outcome, [a.id for a in won.cancelled], late.outcome) == ("won", [second], "ended")
    assert store.get_attempt(second).state == AttemptState.CANCELLED
    assert store.get_task(won.attempt.task_id).state == TaskState.RUNNING


def test_an_unknown_attempt_leaves_the_whole_round_unwritten(store: Store) -> None:
    ids = launched(store, running=True)
    task_id = store.get_attempt(ids[0]).task_id
    before = what_became(store, task_id)
    items = [
        Outcome(attempt_id=ids[0], attempt_state=AttemptState.SUCCEEDED, task_state=TaskState.SUCCEEDED),
        Outcome(
            attempt_id="att_00000000000000000000000000", attempt_state=AttemptState.FAILED, task_state=TaskState.FAILED
        ),
    ]
    with pytest.raises(NotFound):
        store.apply_outcomes(items, actor="follow")
    assert what_became(store, task_id) == before


@pytest.mark.parametrize("chunk", [500, 3], ids=["one-transaction", "past-the-chunk"])
def test_starts_and_outcomes_in_one_transaction_decide_what_the_two_calls_decide(
    store: Store, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``start_and_settle``: a round's starts, then its outcomes, on the rows as the starts left them."""
    monkeypatch.setattr(running, "_CHUNK", chunk)

    def a_round_with_starts() -> tuple[list[str], list[Outcome], list[str]]:
        race = launched(store, siblings=2)  # both siblings say they run: the first wins
        then_ends = launched(store)  # starts, then its outcome in the same round
        outcomes, tasks = a_round(store)
        outcomes.append(
            Outcome(attempt_id=then_ends[0], attempt_state=AttemptState.SUCCEEDED, task_state=TaskState.SUCCEEDED)
        )
        tasks += [store.get_attempt(ids[0]).task_id for ids in (race, then_ends)]
        return [*race, then_ends[0]], outcomes, tasks

    starts, outcomes, tasks = a_round_with_starts()
    started, applied = store.start_and_settle(starts, outcomes, actor="follow")
    starts_apart, outcomes_apart, tasks_apart = a_round_with_starts()
    started_apart = store.start_running_many(starts_apart, actor="follow")
    applied_apart = store.apply_outcomes(outcomes_apart, actor="follow")

    assert [s.outcome for s in started] == [s.outcome for s in started_apart] == ["won", "ended", "won"]
    assert applied == applied_apart
    for mine, theirs in zip(tasks, tasks_apart, strict=True):
        assert what_became(store, mine) == what_became(store, theirs)
    assert store.start_and_settle([], [], actor="follow") == ([], [])
