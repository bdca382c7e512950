"""Retention of staged inputs: a finished task's copies in its targets' stores go once its retention has passed.

The stager copies a task's local inputs to ``<root><tenant>/<task id>/inputs/``
of each store it launched on. Once the task is final, no attempt of it
still live (a hedged sibling being cancelled may yet read them), and
``FUSIONPLANE_STAGED_RETENTION_S`` has passed since it finished, that prefix
is deleted from the store of every target it had an attempt on (as the
policy in force names that target's store; a target removed from the policy
since leaves its copies to the operator). Outputs and checkpoints (``output*``, ``checkpoint/``) are
the tenant's and are never touched here.

The job walks tasks by finish time: each run looks at the tasks that
finished between the last run's cut-off and this one's (after a restart:
the last :data:`LOOKBACK_S`), so each task is looked at once; a task that
cannot be cleaned yet (a live attempt, a store that did not answer) is kept
and tried again next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from controlplane.dataplane.errors import StoreError
from controlplane.dataplane.objects import ObjectStore
from controlplane.domain import Attempt, Task
from controlplane.domain.target_storage import TargetStorage

__all__ = ["LOOKBACK_S", "StagedRetention"]

log = logging.getLogger("fusionplane.dataplane.retention")

#: how far back the first run after a start looks for finished tasks
LOOKBACK_S = 7 * 86_400.0


class StagedRetention:
    """Deletes the staged inputs of finished tasks past their retention; :meth:`run` is the periodic job."""

    def __init__(
        self,
        *,
        finished_between: Callable[[datetime, datetime], Sequence[Task]],
        attempts_of: Callable[[str], Sequence[Attempt]],
        storage_of: Callable[[str, str], TargetStorage | None],
        stores: Callable[[TargetStorage], ObjectStore],
        retention_seconds: float,
        clock: Callable[[], datetime],
        lookback_seconds: float = LOOKBACK_S,
    ) -> None:
        self.finished_between, self.attempts_of = finished_between, attempts_of
        self.storage_of, self.stores = storage_of, stores
        self.retention = timedelta(seconds=retention_seconds)
        self.clock = clock
        self._lookback = timedelta(seconds=lookback_seconds)
        self._cutoff: datetime | None = None
        #: tasks past their retention not cleaned yet (a live attempt, a store that did not answer)
        self._again: dict[str, Task] = {}

    def run(self) -> dict[str, int]:
        """One pass; counts (tasks cleaned, objects removed, tasks kept for the next run), logged when any."""
        cutoff = self.clock() - self.retention
        after = self._cutoff if self._cutoff is not None else cutoff - self._lookback
        due = dict(self._again)
        due.update((task.id, task) for task in self.finished_between(after, cutoff))
        self._cutoff = cutoff
        counts = {"tasks": 0, "objects": 0, "kept": 0}
        self._again = {}
        for task in due.values():
            removed = self._clean(task)
            if removed is None:
                self._again[task.id] = task
                counts["kept"] += 1
            else:
                counts["tasks"] += 1
                counts["objects"] += removed
        if counts["objects"] or counts["kept"]:
            log.info("", extra={"event": "staged_inputs_pruned", **counts})
        return counts

    def _clean(self, task: Task) -> int | None:
        """Objects removed from every store the task's attempts ran on; None when it must wait."""
        attempts = self.attempts_of(task.id)
        if any(not attempt.state.is_final for attempt in attempts):
            return None  # a sibling still being stopped may read its inputs
        removed, stores = 0, set()
        for attempt in attempts:
            storage = self.storage_of(task.spec.tenant, attempt.target)
            if storage is None or storage in stores:
                continue
            stores.add(storage)
            try:
                prefix = f"{storage.task_prefix(task.spec.tenant, task.id)}inputs/"
                removed += self.stores(storage).delete_prefix(prefix)
            except StoreError as exc:
                log.warning("", extra={"event": "staged_inputs_prune_failed", "task_id": task.id, "error": str(exc)})
                if exc.transient:
                    return None
        return removed
