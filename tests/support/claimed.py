"""A task stored and claimed by scheduler ``s``, for store tests that start from a planned task."""

from __future__ import annotations

from itertools import count

from controlplane.domain import Candidate, PlacementPlan, Task, TaskKind, TaskSpec
from controlplane.store import PlannedLaunch, Store

__all__ = ["claimed_task", "image_spec", "launched_on"]

_numbers = count()


def image_spec() -> TaskSpec:
    """An image task of tenant ``acme``, its inputs and output on s3."""
    return TaskSpec(
        tenant="acme",
        kind=TaskKind.IMAGE,
        source_uri="s3://in/face.png",
        target_uri="s3://in/target.png",
        output_uri="s3://out/result.png",
    )


def claimed_task(store: Store) -> Task:
    """A new image task (s3 inputs and output), claimed: ``planned``, ready for a receipt."""
    store.create_task(spec=image_spec(), request_hash=f"claimed-{next(_numbers)}")
    (task,) = store.claim_queued(batch_size=1, scheduler_id="s")
    return task


def launched_on(store: Store, *, target: str, region: str = "us-east-1") -> str:
    """A claimed task's attempt on an aws ``p3.2xlarge`` of ``target`` in ``region``, receipt stored: its id."""
    claimed = claimed_task(store)
    candidate = Candidate(target=target, provider="aws", private=False, region=region, instance_type="p3.2xlarge")
    plan = PlacementPlan(
        task_id=claimed.id, policy_version="v", decided_at=store.now(), candidates=(candidate,), rejections=()
    )
    ((attempt,),) = store.start_launch_groups(
        [PlannedLaunch(plan=plan, candidate=candidate, token_sha256="a" * 64)], actor="s"
    )
    return attempt.id
