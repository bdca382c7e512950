"""An attempt its worker ends over the callback API counts in ``fusionplane_attempts_total`` once, by target."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.domain import TaskState
from controlplane.metrics import Metrics
from controlplane.store import Store, make_engine, upgrade
from tests.support.api_fixtures import ACME, ApiServer, attempt_token


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ApiServer, Metrics]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    metrics = Metrics.create()
    with ApiServer.start(Store(engine), tmp_path, metrics=metrics) as api:
        yield api, metrics
    engine.dispose()


def _launched(api: ApiServer, name: str) -> tuple[str, str]:
    response = api.client(ACME).post("/v1/tasks", json=api.body(tenant="acme"))
    assert response.status_code == 202, response.text
    task_id = response.json()["id"]
    api.advance_to(task_id, TaskState.PLANNED, TaskState.LAUNCHING)
    token, digest = attempt_token(name)
    attempt = api.store.create_attempt(task_id=task_id, target="home", provider="local", token_sha256=digest)
    return attempt.id, token


def test_a_completed_and_a_preempted_attempt_are_counted_once(served: tuple[ApiServer, Metrics]) -> None:
    api, metrics = served

    def ended(outcome: str) -> float:
        labels = {"provider": "local", "target": "home", "outcome": outcome}
        return metrics.registry.get_sample_value("fusionplane_attempts_total", labels) or 0.0

    done, token = _launched(api, "done")
    for _ in range(2):  # the second report of the same ending changes nothing
        api.client(token).post(f"/v1/attempts/{done}/complete", json={"frames": 1})
    assert ended("succeeded") == 1

    spot, token = _launched(api, "spot")
    failure = {"kind": "preempted", "message": "spot notice", "exit_code": 75}
    assert api.client(token).post(f"/v1/attempts/{spot}/fail", json=failure).status_code == 200
    assert ended("preempted") == 1
