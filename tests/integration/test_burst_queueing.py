"""A burst of 500 tasks on the embedded defaults (2 local slots) all succeed: the queue holds what cannot run yet.

Before queueing, 490 of 500 such tasks failed with "no placement: local:
no_capacity". Here the real pieces run together: the REST API on uvicorn
(127.0.0.1), SQLite, the scheduler's ``place_until_idle`` and ``follow``
in a thread, and the local provider starting the stub worker
(tests/support/stub_worker.py, no work, no preemption), which reports by
the API's callbacks. While tasks wait, the reason shows in the task JSON,
``fusionctl tasks list`` and ``fusionctl explain``, and /metrics counts
them.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from controlplane.cli.tasks import COMMANDS
from controlplane.domain import TaskState
from controlplane.policy_sources import DEFAULT_POLICY_PATH, load_policy_file
from controlplane.runtime import standalone_scheduler
from controlplane.scheduler import Scheduler
from controlplane.store import Store
from controlplane.store.tables import attempts
from providers.local import LocalProvider
from tests.support.api_fixtures import ACME, OPERATOR, ApiServer
from tests.support.stores import sqlite_store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
BURST = 500
FUSIONCTL = click.Group("fusionctl", commands=COMMANDS)


def wait_for(condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with sqlite_store(tmp_path / "state.db") as made:
        yield made


def run_scheduler(scheduler: Scheduler, stop: threading.Event, errors: list[BaseException]) -> None:
    """The serve loop's placing and following, sooner (serve runs them on 0.5 s and 1 s intervals).

    Placing runs back to back, as slots free the moment a stub worker exits;
    following (the callbacks already end each attempt) every 0.25 s.
    """
    followed = 0.0
    try:
        while not stop.is_set():
            scheduler.place_until_idle(max_seconds=0.2)
            if time.monotonic() - followed >= 0.25:
                scheduler.follow()
                followed = time.monotonic()
            stop.wait(0.01)
    except BaseException as exc:  # reported by the test, not lost in the thread
        errors.append(exc)


def test_a_burst_of_500_on_two_local_slots_waits_and_every_task_succeeds(store: Store, tmp_path: Path) -> None:
    with ApiServer.start(store, tmp_path) as api:
        submitter, operator = api.client(ACME), api.client(OPERATOR)
        ids = []
        for n in range(BURST):
            response = submitter.post(
                "/v1/tasks", json=api.body(output=f"acme/burst/{n}.png", data_sensitivity="public")
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])

        embedded = load_policy_file(DEFAULT_POLICY_PATH)
        local = LocalProvider(
            state_dir=tmp_path / "local-provider",
            slots=2,  # the embedded default
            # -S: the stub imports only the standard library, and a bare interpreter starts faster
            worker_command=[sys.executable, "-S", str(REPO / "tests" / "support" / "stub_worker.py")],
            env={"PATH": "/usr/bin:/bin", "FUSIONPLANE_STUB_WORK_S": "0,0", "FUSIONPLANE_STUB_PREEMPT_RATE": "0"},
            # workers get a minimal environment: the stub's own settings are named to pass
            pass_env=("FUSIONPLANE_STUB_WORK_S", "FUSIONPLANE_STUB_PREEMPT_RATE"),
        )
        scheduler = standalone_scheduler(
            store=store,
            policy=lambda: embedded,
            providers={"local": local},
            callback_base=api.url,
            checkpoint_root=tmp_path / "checkpoints",
            scheduler_id="burst",
        )
        stop, errors = threading.Event(), []
        loop = threading.Thread(target=run_scheduler, args=(scheduler, stop, errors), name="scheduler")
        loop.start()
        try:
            last = ids[-1]
            # the newest task waits its turn, and says why, wherever an operator looks
            wait_for(
                lambda: operator.get(f"/v1/tasks/{last}").json()["queue_reason"] is not None,
                timeout_s=30,
                what="the last task to wait",
            )
            task = operator.get(f"/v1/tasks/{last}").json()
            assert (task["state"], task["queue_reason"], task["reason"]) == ("queued", "local: no_capacity", None)
            assert task["queued_since"] is not None
            env = {"FUSIONPLANE_URL": api.url, "FUSIONPLANE_TOKEN": OPERATOR}
            listed = CliRunner().invoke(FUSIONCTL, ["tasks", "list", "--state", "queued"], env=env)
            assert listed.exit_code == 0, listed.output
            assert "REASON" in listed.output.splitlines()[0]
            assert "waiting: local: no_capacity" in listed.output
            explained = CliRunner().invoke(FUSIONCTL, ["explain", last], env=env)
            assert explained.exit_code == 0, explained.output
            assert f"waiting      local: no_capacity since {task['queued_since']}" in explained.output
            metrics = operator.get("/metrics").text
            waiting = next(line for line in metrics.splitlines() if line.startswith("fusionplane_tasks_waiting "))
            assert float(waiting.split()[1]) > 0

            def finished() -> bool:
                assert not errors, errors
                failed = operator.get("/v1/tasks", params={"state": "failed", "limit": 1}).json()["tasks"]
                assert not failed, f"a task of the burst failed: {failed[0]['reason']}"
                succeeded = operator.get("/v1/tasks", params={"state": "succeeded", "limit": 1000}).json()["tasks"]
                return len(succeeded) == BURST

            wait_for(finished, timeout_s=180, what=f"{BURST} tasks to succeed")
        finally:
            stop.set()
            loop.join(timeout=30)
        assert not errors, errors

        counts = store.count_tasks_by_state()
        assert counts[TaskState.SUCCEEDED] == BURST
        assert counts[TaskState.FAILED] == 0
        # the queue kept the burst away from the slots: one attempt per task, none refused at launch
        with store.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(attempts)).scalar_one() == BURST
        metrics = operator.get("/metrics").text
        assert "fusionplane_tasks_waiting 0.0" in metrics
        assert "fusionplane_tasks_oldest_wait_seconds 0.0" in metrics
