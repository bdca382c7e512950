"""A task stored and claimed by scheduler ``s``, for store tests that start from a planned task."""

from __future__ import annotations

from itertools import count

from controlplane.domain import Task, TaskKind, TaskSpec
from controlplane.store import Store

__all__ = ["claimed_task", "image_spec"]

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
