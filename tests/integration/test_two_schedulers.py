"""Two schedulers, each in its own process, on one database: every task launched once, by one of them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import Engine, func, select

from controlplane.domain import Priority, TaskKind, TaskSpec, TaskState
from controlplane.store import NewTask, Store
from controlplane.store.tables import attempts, events
from tests.support.no_metadata import subprocess_env

pytest_plugins = ["tests.integration.store_fixtures"]

REPO = Path(__file__).resolve().parents[2]


def test_two_scheduler_processes_never_launch_the_same_task(
    database_url: str, engine: Engine, store: Store, tmp_path: Path
) -> None:
    total = 1000
    queued = store.create_tasks(
        [
            NewTask(
                spec=TaskSpec(
                    tenant="acme",
                    kind=TaskKind.IMAGE,
                    source_uri="s3://faces/a.png",
                    target_uri=f"s3://media/{i}.png",
                    output_uri=f"s3://out/{i}.png",
                    priority=list(Priority)[i % 4],
                ),
                request_hash=str(i),
            )
            for i in range(total)
        ]
    )
    task_ids = {outcome[0].id for outcome in queued if isinstance(outcome, tuple)}
    assert len(task_ids) == total
    go = tmp_path / "go"
    processes = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.scheduler_process",
                "--database-url",
                database_url,
                "--name",
                name,
                "--go",
                str(go),
                "--out",
                str(tmp_path / f"{name}.json"),
                "--peer",
                str(tmp_path / f"{peer}.json"),
            ],
            cwd=REPO,
            env=subprocess_env(),
        )
        for name, peer in (("sched-a", "sched-b"), ("sched-b", "sched-a"))
    }
    try:
        # start both together: process start-up alone can outlast 1,000 placements
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"{name}.ready").exists() for name in processes):
            assert time.monotonic() < deadline, "the scheduler processes did not get ready"
            assert all(p.poll() is None for p in processes.values()), "a scheduler process exited early"
            time.sleep(0.01)
        go.touch()
        for process in processes.values():
            assert process.wait(timeout=240) == 0
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    launched = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in processes}
    a, b = launched["sched-a"], launched["sched-b"]
    # certain, not likely: neither process drains the queue before both have launched a task
    assert a, "both schedulers should have taken part"
    assert b, "both schedulers should have taken part"
    assert len(set(a)) == len(a)
    assert len(set(b)) == len(b)
    assert not set(a) & set(b)
    assert set(a) | set(b) == task_ids
    # the database agrees: one attempt and one claim per task, every task launching
    with engine.connect() as conn:
        per_task = conn.execute(select(attempts.c.task_id, func.count()).group_by(attempts.c.task_id)).all()
        claims = conn.execute(
            select(events.c.task_id, func.count()).where(events.c.kind == "task.claimed").group_by(events.c.task_id)
        ).all()
    assert len(per_task) == total
    assert all(n == 1 for _, n in per_task)
    assert len(claims) == total
    assert all(n == 1 for _, n in claims)
    assert store.count_tasks_by_state()[TaskState.LAUNCHING] == total
