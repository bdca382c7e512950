"""Group commit: concurrent submissions share transactions and each gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from controlplane.api.submissions import SubmitQueue
from controlplane.domain import TaskKind, TaskSpec, TaskState
from controlplane.store import IdempotencyConflict, NewTask, Store, make_engine, upgrade


class CountingStore(Store):
    """A real SQLite store that remembers the size of every batch it was handed."""

    def __init__(self, path: Path, *, broken: bool = False) -> None:
        engine = make_engine(f"sqlite:///{path}")
        upgrade(engine=engine)
        super().__init__(engine)
        self.batches: list[int] = []
        self.broken = broken

    def create_tasks(self, batch: Sequence[NewTask]) -> list[object]:  # type: ignore[override]
        self.batches.append(len(batch))
        if self.broken:
            raise RuntimeError("disk full")
        return super().create_tasks(batch)  # type: ignore[return-value]


def _item(i: int, key: str | None = None, body: str | None = None) -> NewTask:
    return NewTask(
        spec=TaskSpec(
            tenant="acme",
            kind=TaskKind.IMAGE,
            source_uri="s3://f/a.png",
            target_uri=f"s3://m/{i}.png",
            output_uri=f"s3://o/{i}.png",
        ),
        request_hash=body or str(i),
        idempotency_key=key,
    )


def test_concurrent_submissions_share_transactions(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "s.db")
    sizes: list[int] = []
    queue = SubmitQueue(store, observe_batch=sizes.append)

    async def burst() -> list[object]:
        return await asyncio.gather(
            *(queue.submit(_item(i)) for i in range(200)),
            queue.submit(_item(1000, key="k", body="one")),
            queue.submit(_item(1001, key="k", body="two")),
            return_exceptions=True,
        )

    results = asyncio.run(burst())
    tasks, conflict = results[:201], results[201]
    assert all(isinstance(r, tuple) and r[1] for r in tasks)
    assert len({r[0].id for r in tasks}) == 201  # type: ignore[index]
    assert [r[0].spec.target_uri for r in tasks[:3]] == ["s3://m/0.png", "s3://m/1.png", "s3://m/2.png"]  # type: ignore[index]
    assert isinstance(conflict, IdempotencyConflict)
    assert sum(store.batches) == 202
    assert len(store.batches) < 202 / 10, store.batches  # shared, not one transaction each
    assert sizes == store.batches
    assert store.count_tasks_by_state()[TaskState.QUEUED] == 201


def test_a_failed_batch_fails_each_of_its_submissions_and_stores_nothing(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "s.db", broken=True)
    queue = SubmitQueue(store)

    async def burst() -> list[object]:
        return await asyncio.gather(*(queue.submit(_item(i)) for i in range(20)), return_exceptions=True)

    results = asyncio.run(burst())
    assert all(isinstance(r, RuntimeError) and "disk full" in str(r) for r in results)
    store.broken = False
    assert store.count_tasks_by_state()[TaskState.QUEUED] == 0


def test_writers_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one writer"):
        SubmitQueue(CountingStore(tmp_path / "s.db"), writers=0)


def test_a_submission_right_after_the_writer_finished_is_still_written(tmp_path: Path) -> None:
    # The handler whose task was the writer's last wakes before the finished writer's task is reaped
    # (both are scheduled callbacks, the handler's first): a submission it makes then must start a new
    # writer, not wait for the finished one for ever (a request left hanging until the client times out).
    store = CountingStore(tmp_path / "s.db")
    queue = SubmitQueue(store)

    async def one_after_the_other() -> list[tuple[object, bool]]:
        first = await queue.submit(_item(1))
        second = await queue.submit(_item(2))  # in the same step as the wakeup: no task in between
        return [first, second]

    first, second = asyncio.run(asyncio.wait_for(one_after_the_other(), timeout=10))
    assert first[1]
    assert second[1]
    assert store.batches == [1, 1]
