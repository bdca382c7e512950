"""Retention removes a finished task's staged inputs once its retention has passed, and nothing else.

moto S3 in server mode, a real store on SQLite; the clock is injected.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from controlplane.dataplane.retention import StagedRetention
from controlplane.dataplane.stores import Stores, StoreSettings
from controlplane.domain import AttemptState, TaskKind, TaskSpec, TaskState
from controlplane.domain.target_storage import StorageKind, TargetStorage
from controlplane.store import Store, make_engine, upgrade
from controlplane.store.uploads import finished_between
from tests.support.aws import isolate_aws_environment, moto_server

pytestmark = pytest.mark.timeout(60)

RETENTION_S = 3600.0


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def world(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Any, str, TargetStorage, Store]:
    isolate_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    client = boto3.client("s3", endpoint_url=moto_url)
    bucket = f"fp-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    upgrade(engine=engine)
    storage = TargetStorage(kind=StorageKind.S3, root=f"s3://{bucket}/aws/", endpoint_url=moto_url)
    return client, bucket, storage, Store(engine)


def task_with_staged_inputs(client: Any, bucket: str, store: Store, *, attempt_state: AttemptState) -> str:
    spec = TaskSpec(
        tenant="acme",
        kind=TaskKind.IMAGE,
        source_uri="/in/a.png",
        target_uri="/in/b.png",
        output_uri=f"s3://{bucket}/aws/acme/x/output.png",
    )
    task, _ = store.create_task(spec=spec, request_hash=uuid.uuid4().hex)
    attempt = store.create_attempt(task_id=task.id, target="spot", provider="aws", token_sha256="0" * 64, actor="test")
    for key in ("inputs/source-a.png", "inputs/target-b.png", "output.png", "checkpoint/seg-0001.ts"):
        client.put_object(Bucket=bucket, Key=f"aws/acme/{task.id}/{key}", Body=io.BytesIO(b"bytes"))
    for state in (TaskState.PLANNED, TaskState.LAUNCHING, TaskState.RUNNING, TaskState.SUCCEEDED):
        store.transition_task(task.id, wanted=state, actor="test", target="spot")
    if attempt_state != AttemptState.LAUNCHING:
        store.transition_attempt(attempt.id, wanted=attempt_state, actor="test")
    return task.id


def keys(client: Any, bucket: str) -> set[str]:
    return {item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_staged_inputs_go_after_the_retention_and_outputs_stay(world: tuple[Any, str, TargetStorage, Store]) -> None:
    client, bucket, storage, store = world
    done = task_with_staged_inputs(client, bucket, store, attempt_state=AttemptState.CANCELLED)
    live = task_with_staged_inputs(client, bucket, store, attempt_state=AttemptState.LAUNCHING)
    now = [datetime.now(UTC)]
    retention = StagedRetention(
        finished_between=lambda after, until: finished_between(store, after=after, until=until),
        attempts_of=store.attempts_for,
        storage_of=lambda tenant, target: storage if target == "spot" else None,
        stores=Stores(),
        retention_seconds=RETENTION_S,
        clock=lambda: now[0],
    )
    # within the retention: nothing goes
    assert retention.run() == {"tasks": 0, "objects": 0, "kept": 0}
    assert len(keys(client, bucket)) == 8

    now[0] += timedelta(seconds=RETENTION_S + 60)
    assert retention.run() == {"tasks": 1, "objects": 2, "kept": 1}
    left = keys(client, bucket)
    assert not any(key.startswith(f"aws/acme/{done}/inputs/") for key in left)
    assert {f"aws/acme/{done}/output.png", f"aws/acme/{done}/checkpoint/seg-0001.ts"} <= left
    # the task whose (hedged) attempt is still live keeps its inputs until that attempt ends
    assert f"aws/acme/{live}/inputs/source-a.png" in left

    (attempt,) = store.attempts_for(live)
    store.transition_attempt(attempt.id, wanted=AttemptState.CANCELLED, actor="test")
    now[0] += timedelta(seconds=60)
    assert retention.run() == {"tasks": 1, "objects": 2, "kept": 0}
    assert not any("/inputs/" in key for key in keys(client, bucket))
    # each task is looked at once: a later run finds nothing to do
    now[0] += timedelta(seconds=60)
    assert retention.run() == {"tasks": 0, "objects": 0, "kept": 0}


def test_staged_inputs_on_a_claim_the_control_plane_mounts_go_too(tmp_path: Path) -> None:
    """A pvc store is cleaned through the control plane's mount of the claim (FUSIONPLANE_PVC_MOUNTS)."""
    mount = tmp_path / "mnt" / "work"
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    upgrade(engine=engine)
    store = Store(engine)
    spec = TaskSpec(
        tenant="acme", kind=TaskKind.IMAGE, source_uri="/in/a.png", target_uri="/in/b.png", output_uri="/o.png"
    )
    task, _ = store.create_task(spec=spec, request_hash=uuid.uuid4().hex)
    attempt = store.create_attempt(
        task_id=task.id, target="onprem", provider="kubernetes", token_sha256="0" * 64, actor="test"
    )
    for key in ("inputs/source-a.png", "inputs/target-b.png", "output.png", "checkpoint/seg-0001.ts"):
        (mount / "tasks" / "acme" / task.id / key).parent.mkdir(parents=True, exist_ok=True)
        (mount / "tasks" / "acme" / task.id / key).write_bytes(b"bytes")
    for state in (TaskState.PLANNED, TaskState.LAUNCHING, TaskState.RUNNING, TaskState.SUCCEEDED):
        store.transition_task(task.id, wanted=state, actor="test", target="onprem")
    store.transition_attempt(attempt.id, wanted=AttemptState.CANCELLED, actor="test")
    storage = TargetStorage(kind=StorageKind.PVC, root="pvc://fp-work/tasks/", mount_path="/mnt/work")
    now = datetime.now(UTC) + timedelta(seconds=RETENTION_S + 60)
    retention = StagedRetention(
        finished_between=lambda after, until: finished_between(store, after=after, until=until),
        attempts_of=store.attempts_for,
        storage_of=lambda tenant, target: storage if target == "onprem" else None,
        stores=Stores(StoreSettings(pvc_mounts={"fp-work": mount})),
        retention_seconds=RETENTION_S,
        clock=lambda: now,
    )

    assert retention.run() == {"tasks": 1, "objects": 2, "kept": 0}

    left = sorted(str(p.relative_to(mount)) for p in mount.rglob("*") if p.is_file())
    assert left == [f"tasks/acme/{task.id}/checkpoint/seg-0001.ts", f"tasks/acme/{task.id}/output.png"]
    engine.dispose()
