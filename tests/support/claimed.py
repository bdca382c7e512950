"""A task stored and claimed by scheduler ``s``, for store tests that start from a planned task."""

from __future__ import annotations

from itertools import count

from controlplane.domain import Task, TaskKind, TaskSpec
from controlplane.store import Store

__all__ = ["claimed_task"]

_numbers = count()


def claimed_task(store: Store) -> Task:
    """A new image task (s3 inputs and output), claimed: ``planned``, ready for a receipt."""
    spec = TaskSpec(
        tenant="acme",
        kind=TaskKind.IMAGE,
        source_uri="s3://in/face.png",
        target_uri="s3://in/target.png",
        output_uri="s3://out/result.png",
    )
    store.create_task(spec=spec, request_hash=f"claimed-{next(_numbers)}")
    (task,) = store.claim_queued(batch_size=1, scheduler_id="s")
    return task
