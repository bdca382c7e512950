"""A small FusionPlane database for the simulator's replay tests (``fusionctl sim run --from-db``).

Built with the real store under a :class:`~simulator.clock.VirtualClock`,
so ``created_at`` and the attempts' events carry exactly the offsets a test
asks for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from controlplane.domain import AttemptState, DataSensitivity, Priority, TaskKind, TaskSpec
from controlplane.store import Store, make_engine, upgrade
from simulator.clock import VirtualClock
from tests.support.sim import T0

__all__ = ["Recorded", "record_tasks", "recorded_database"]

_TOKEN = hashlib.sha256(b"token").hexdigest()


@dataclass(frozen=True)
class Recorded:
    """One task to store: submitted ``at_s`` after ``T0``; ``ran`` = (start offset, seconds) of a succeeded attempt."""

    at_s: float
    tenant: str = "acme"
    kind: str = "image"
    priority: str = "normal"
    sensitivity: str = "public"
    deadline_s: int | None = None
    ran: tuple[float, float] | None = None
    instance: tuple[str, str | None, str | None] = ("kubernetes", None, None)
    labels: dict[str, str] = field(default_factory=dict)


def recorded_database(path: Path, tasks: Sequence[Recorded], *, start: datetime = T0) -> str:
    """A migrated SQLite store at ``path`` holding ``tasks``; its URL."""
    return record_tasks(f"sqlite:///{path}", tasks, start=start)


def record_tasks(url: str, tasks: Sequence[Recorded], *, start: datetime = T0) -> str:
    """Migrate the database at ``url`` and store ``tasks`` (and their attempts) in it; ``url``."""
    engine = make_engine(url)
    upgrade(engine=engine)
    clock = VirtualClock(start)
    store = Store(engine, clock=clock)
    # every moment something happens, in time order: the clock only moves forward
    steps: list[tuple[float, int, int]] = []
    for index, task in enumerate(tasks):
        steps.append((task.at_s, 0, index))
        if task.ran is not None:
            steps += [(task.ran[0], 1, index), (task.ran[0] + task.ran[1], 2, index)]
    ids: dict[int, str] = {}
    attempts: dict[int, str] = {}
    for at_s, what, index in sorted(steps):
        clock.move_to(max(at_s, clock.offset_s))
        task = tasks[index]
        if what == 0:
            created, _new = store.create_task(spec=_spec(task, index), request_hash=f"h{index}")
            ids[index] = created.id
        elif what == 1:
            provider, region, instance_type = task.instance
            attempt = store.create_attempt(
                task_id=ids[index],
                target=provider,
                provider=provider,
                region=region,
                instance_type=instance_type,
                token_sha256=_TOKEN,
            )
            store.start_running(attempt.id, actor="worker")
            attempts[index] = attempt.id
        else:
            store.transition_attempt(attempts[index], wanted=AttemptState.SUCCEEDED, actor="worker", exit_code=0)
    engine.dispose()
    return url


def _spec(task: Recorded, index: int) -> TaskSpec:
    return TaskSpec(
        tenant=task.tenant,
        kind=TaskKind(task.kind),
        source_uri=f"https://secret-bucket.example/{task.tenant}/private-input-{index}.png",
        target_uri=f"https://secret-bucket.example/{task.tenant}/private-target-{index}.png",
        output_uri=f"s3://secret-out/{task.tenant}/{index}.png",
        priority=Priority(task.priority),
        data_sensitivity=DataSensitivity(task.sensitivity),
        deadline_seconds=task.deadline_s,
        labels=task.labels,
    )
