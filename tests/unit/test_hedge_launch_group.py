"""Which candidates a hedged plan launches together, and how the store starts them in one transaction."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controlplane.domain import (
    AttemptState,
    Candidate,
    DataSensitivity,
    PlacementPlan,
    Task,
    TaskKind,
    TaskSpec,
    TaskState,
)
from controlplane.domain.worker_spec import WorkerSpec
from controlplane.scheduler.placing import _launched_together
from controlplane.scheduler.workerspec import render_worker_spec
from controlplane.store import PlannedLaunch, Store, make_engine, upgrade

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def candidate(target: str, group: int | None = None, provider: str = "aws") -> Candidate:
    return Candidate(target=target, provider=provider, private=False, hedge_group=group)


@pytest.mark.parametrize(
    ("usable", "together"),
    [
        ([], []),
        ([candidate("a")], ["a"]),
        ([candidate("a"), candidate("b")], ["a"]),
        ([candidate("a", 1), candidate("b", 1), candidate("c")], ["a", "b"]),
        ([candidate("a", 1), candidate("b", 1), candidate("c", 1)], ["a", "b", "c"]),
        # one hedged candidate left usable (the other's provider is not configured here): a launch alone
        ([candidate("a", 1), candidate("c")], ["a"]),
        # the hedge group leads the plan; a hedged candidate after a plain one is not launched with it
        ([candidate("a"), candidate("b", 1), candidate("c", 1)], ["a"]),
    ],
    ids=["none", "one", "plain", "hedge-2", "hedge-3", "hedge-of-one", "plain-first"],
)
def test_the_leading_hedge_group_is_launched_together(usable: list[Candidate], together: list[str]) -> None:
    assert [c.target for c in _launched_together(usable)] == together


def task() -> Task:
    return Task(
        id="tsk_1",
        spec=TaskSpec(
            tenant="acme",
            kind=TaskKind.IMAGE,
            source_uri="s3://faces/a.png",
            target_uri="s3://media/b.png",
            output_uri="s3://out/c.png",
            data_sensitivity=DataSensitivity.PUBLIC,
        ),
        state=TaskState.PLANNED,
        created_at=NOW,
        updated_at=NOW,
    )


def test_only_a_hedged_attempts_spec_waits_for_the_go() -> None:
    def render(**hedged: bool) -> dict[str, Any]:
        return render_worker_spec(
            task=task(), attempt_id="att_1", token="t", callback_base="http://cp", checkpoint_root=None, **hedged
        ).wire_document()

    hedged, alone = render(hedged=True), render()
    assert hedged["callback"]["wait_for_go"] is True
    assert "wait_for_go" not in alone["callback"]
    assert WorkerSpec.model_validate(hedged).callback is not None
    parsed = WorkerSpec.model_validate(alone).callback
    assert parsed is not None
    assert parsed.wait_for_go is False


@pytest.fixture
def store(tmp_path: Path) -> Store:
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    upgrade(engine=engine)
    return Store(engine)


def planned(store: Store) -> PlacementPlan:
    store.create_task(spec=task().spec, request_hash="h")
    (claimed,) = store.claim_queued(batch_size=1, scheduler_id="s")
    return PlacementPlan(
        task_id=claimed.id,
        policy_version="v",
        decided_at=NOW,
        candidates=(candidate("a", 1), candidate("b", 1, "azure")),
        rejections=(),
    )


def both_siblings(plan: PlacementPlan, **extra: Any) -> PlannedLaunch:
    """The plan's two candidates launched together (token hashes "a..." and "b..."), with ``extra`` fields."""
    fields: dict[str, Any] = {"hedged_token_sha256": ("b" * 64,), **extra}
    return PlannedLaunch(
        plan=plan, candidate=plan.candidates[0], token_sha256="a" * 64, hedged=plan.candidates[1:], **fields
    )


def test_start_launches_numbers_the_siblings_and_returns_the_first(store: Store) -> None:
    plan = planned(store)
    launch = both_siblings(plan)
    (first,) = store.start_launches([launch], actor="s")
    assert first is not None
    assert (first.number, first.target, first.hedge_group) == (1, "a", 1)
    attempts = store.attempts_for(plan.task_id)
    assert [(a.number, a.target, a.provider, a.hedge_group, a.state) for a in attempts] == [
        (1, "a", "aws", 1, AttemptState.LAUNCHING),
        (2, "b", "azure", 1, AttemptState.LAUNCHING),
    ]
    assert store.attempt_token_sha256(attempts[1].id) == "b" * 64
    assert store.get_task(plan.task_id).state == TaskState.LAUNCHING


@pytest.mark.parametrize("hashes", [(), ("b" * 64, "c" * 64), ("not hex",)], ids=["missing", "extra", "bad"])
def test_a_hedged_launch_needs_one_good_token_hash_per_sibling(store: Store, hashes: tuple[str, ...]) -> None:
    plan = planned(store)
    launch = both_siblings(plan, hedged_token_sha256=hashes)
    with pytest.raises(ValueError, match="token"):
        store.start_launches([launch], actor="s")
    assert store.attempts_for(plan.task_id) == []  # nothing half-written
    assert store.get_decisions(plan.task_id) == []
    assert store.get_task(plan.task_id).state == TaskState.PLANNED


def test_each_sibling_is_stored_with_its_own_output_uri(store: Store) -> None:
    """The attempt rows carry where each worker writes, so no write per launch is needed before it goes out."""
    plan = planned(store)
    launch = both_siblings(
        plan, output_uris=("s3://out/c.png", "https://acct.blob.core.windows.net/out/acme/tsk_1/output.png")
    )
    store.start_launches([launch], actor="s")
    assert [a.output_uri for a in store.attempts_for(plan.task_id)] == [
        "s3://out/c.png",
        "https://acct.blob.core.windows.net/out/acme/tsk_1/output.png",
    ]


def test_output_uris_must_name_one_output_per_sibling(store: Store) -> None:
    plan = planned(store)
    launch = both_siblings(plan, output_uris=("s3://out/c.png",))
    with pytest.raises(ValueError, match="output_uris"):
        store.start_launches([launch], actor="s")
    assert store.attempts_for(plan.task_id) == []  # nothing half-written
    assert store.get_task(plan.task_id).state == TaskState.PLANNED
