"""The seed form launches: a high/public task on an unconfigured built-in AWS runs on local, not fails.

Before, the built-in aws target had no image or launch template, so such a
task failed ``invalid_spec: target aws: settings need launch_template or
image_id`` after five attempts, with no fallback to local.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from controlplane.domain import DataSensitivity, Priority, TaskKind, TaskSpec, TaskState
from controlplane.policy import parse_policy
from controlplane.policy.seed import BuiltinCloud, SeedClouds
from controlplane.runtime import standalone_scheduler
from controlplane.store import Store, upgrade
from providers.noop import NoopProvider

pytestmark = pytest.mark.timeout(60)

SEED = {"task_rules": [{"priority": "high", "data_sensitivity": "public", "use_cloud": True, "cloud_provider": "aws"}]}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    yield Store(engine)
    engine.dispose()


def _submit(store: Store) -> str:
    task, _ = store.create_task(
        spec=TaskSpec(
            tenant="acme",
            kind=TaskKind.IMAGE,
            source_uri="s3://in/f.png",
            target_uri="s3://in/t.png",
            output_uri="s3://out/o.png",
            priority=Priority.HIGH,
            data_sensitivity=DataSensitivity.PUBLIC,
        ),
        request_hash="high-public",
    )
    return task.id


@pytest.mark.parametrize(
    ("clouds", "target"),
    [
        (SeedClouds(), "local"),  # nothing configured: aws is not_configured, the task runs on local
        (SeedClouds(aws=BuiltinCloud(settings={"image_id": "ami-0123456789abcdef0"})), "aws"),
    ],
)
def test_a_high_public_task_on_the_seed_form_launches(store: Store, clouds: SeedClouds, target: str) -> None:
    policy = parse_policy(SEED, seed_clouds=clouds)
    providers = {name: NoopProvider(name=name) for name in ("local", "aws", "azure")}
    scheduler = standalone_scheduler(
        store=store,
        policy=lambda: policy,
        providers=dict(providers),
        scheduler_id="test",
    )
    task_id = _submit(store)
    assert scheduler.place_batch() == 1
    task = store.get_task(task_id)
    assert task.state is TaskState.LAUNCHING
    (attempt,) = store.attempts_for(task_id)
    assert attempt.target == target
    assert len(providers[target].launched()) == 1
    receipt = store.get_decisions(task_id)[-1]
    if target == "local":
        assert {r.target: r.code for r in receipt.rejections}["aws"] == "not_configured"
