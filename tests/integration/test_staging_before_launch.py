"""The scheduler stages a task's local inputs into the chosen target's store before launching it.

Real S3 (moto in server mode on 127.0.0.1), the real scheduler and store;
the providers are the no-op provider, which records what was launched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from controlplane.dataplane.objects import ObjectStore
from controlplane.dataplane.stager import Stager, sha256_of_file
from controlplane.dataplane.stores import Stores
from controlplane.domain import (
    Candidate,
    DataSensitivity,
    PlacementPlan,
    SignalSnapshot,
    Task,
    TaskKind,
    TaskSpec,
    TaskState,
)
from controlplane.domain.target_storage import TargetStorage
from controlplane.policy import Policy, parse_policy
from controlplane.runtime import standalone_scheduler
from controlplane.scheduler import Scheduler
from controlplane.store import Store, make_engine, upgrade
from providers.noop import NoopProvider
from tests.support.aws import isolate_aws_environment, moto_server
from tests.support.loopback import free_port

pytestmark = pytest.mark.timeout(60)

TENANT = "acme"
SPOT = Candidate(target="spot", provider="aws", private=False)
SPOT_WEST = Candidate(target="spot-west", provider="aws", private=False)
ONPREM = Candidate(target="onprem", provider="kubernetes", private=True)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def bucket(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Any, str]:
    isolate_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    client = boto3.client("s3", endpoint_url=moto_url)
    name = f"fp-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return client, name


@pytest.fixture
def store(tmp_path: Path) -> Store:
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    upgrade(engine=engine)
    return Store(engine)


def policy(spot_store: dict[str, str], west_store: dict[str, str], onprem_store: dict[str, str]) -> Policy:
    return parse_policy(
        {
            "targets": [
                {"name": "spot", "provider": "aws", "private": False, "storage": spot_store},
                {"name": "spot-west", "provider": "aws", "private": False, "storage": west_store},
                {"name": "onprem", "provider": "kubernetes", "private": True, "storage": onprem_store},
            ],
            "rules": [{"name": "default", "targets": ["spot", "spot-west", "onprem"]}],
        }
    )


def scheduler(
    store: Store, rules: Policy, stager: Stager, *candidates: Candidate, **providers: NoopProvider
) -> Scheduler:
    def fixed_plan(task: Task, snapshot: SignalSnapshot, policy: Policy, now: datetime) -> PlacementPlan:
        return PlacementPlan(task_id=task.id, policy_version="v", decided_at=now, rejections=(), candidates=candidates)

    return standalone_scheduler(
        store=store, policy=rules, providers=providers, scheduler_id="test", planner=fixed_plan, stager=stager
    )


def submit(store: Store, tmp_path: Path, *, source: str | None = None, private: bool = False) -> tuple[str, Path]:
    folder = tmp_path / "inputs" / TENANT / "upl_1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "face.png").write_bytes(b"a face" * 1000)
    task, _ = store.create_task(
        spec=TaskSpec(
            tenant=TENANT,
            kind=TaskKind.IMAGE,
            source_uri=source or str(folder / "face.png"),
            target_uri="https://img.example/scene.png",  # read in place by every target: never staged
            output_uri="s3://tenant-bucket/out.png",
            data_sensitivity=DataSensitivity.PRIVATE if private else DataSensitivity.INTERNAL,
        ),
        request_hash=uuid.uuid4().hex,
    )
    return task.id, folder / "face.png"


def keys(client: Any, bucket: str) -> list[str]:
    return [item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_local_inputs_are_staged_into_the_chosen_target_s_store_before_its_launch(
    store: Store, bucket: tuple[Any, str], moto_url: str, tmp_path: Path
) -> None:
    client, name = bucket
    on_moto = {"uri": f"s3://{name}/aws/", "endpoint_url": moto_url}
    aws = NoopProvider(name="aws")
    task_id, face = submit(store, tmp_path)
    scheduler(store, policy(on_moto, on_moto, on_moto), Stager(stores=Stores()), SPOT, aws=aws).place_batch()
    (attempt,) = store.attempts_for(task_id)
    assert aws.launched() == [attempt.id]
    # the local source is staged; the https:// target is fetched by the worker, so it is never copied
    assert keys(client, name) == [f"aws/{TENANT}/{task_id}/inputs/source-face.png"]
    head = client.head_object(Bucket=name, Key=f"aws/{TENANT}/{task_id}/inputs/source-face.png")
    assert head["Metadata"]["sha256"] == sha256_of_file(face)


def test_a_store_that_does_not_answer_fails_over_to_the_next_candidate(
    store: Store, bucket: tuple[Any, str], moto_url: str, tmp_path: Path
) -> None:
    client, name = bucket
    dead = {"uri": "s3://fp-dead/aws/", "endpoint_url": f"http://127.0.0.1:{free_port()}"}
    on_moto = {"uri": f"s3://{name}/west/", "endpoint_url": moto_url}
    aws = NoopProvider(name="aws")
    task_id, _face = submit(store, tmp_path)
    scheduler(store, policy(dead, on_moto, on_moto), Stager(stores=Stores()), SPOT, SPOT_WEST, aws=aws).place_batch()
    first, second = store.attempts_for(task_id)
    assert (first.target, first.state.value) == ("spot", "failed")
    assert "staging_unavailable" in (first.reason or "")
    assert aws.launched() == [second.id]  # the dead store's attempt was never launched
    assert second.target == "spot-west"
    assert keys(client, name) == [f"west/{TENANT}/{task_id}/inputs/source-face.png"]


def test_an_input_changed_since_upload_fails_the_task_everywhere(
    store: Store, bucket: tuple[Any, str], moto_url: str, tmp_path: Path
) -> None:
    client, name = bucket
    on_moto = {"uri": f"s3://{name}/aws/", "endpoint_url": moto_url}
    aws = NoopProvider(name="aws")
    task_id, face = submit(store, tmp_path)
    recorded = {face: sha256_of_file(face)}
    face.write_bytes(b"something else")
    stager = Stager(stores=Stores(), recorded_sha256=recorded.get)
    scheduler(store, policy(on_moto, on_moto, on_moto), stager, SPOT, SPOT_WEST, aws=aws).place_batch()
    assert aws.launched() == []
    failed = store.get_task(task_id)
    assert failed.state == TaskState.FAILED
    assert "staging_checksum_mismatch" in (failed.reason or "")
    assert keys(client, name) == []


def test_a_private_task_stages_to_its_private_target_only(
    store: Store, bucket: tuple[Any, str], moto_url: str, tmp_path: Path
) -> None:
    client, name = bucket
    cloud = {"uri": f"s3://{name}/aws/", "endpoint_url": moto_url}
    in_cluster = {"uri": f"s3://{name}/onprem/", "endpoint_url": moto_url}  # the cluster's own MinIO
    aws, kubernetes = NoopProvider(name="aws"), NoopProvider(name="kubernetes")
    task_id, _face = submit(store, tmp_path, private=True)
    rules = policy(cloud, cloud, in_cluster)
    # a (wrong) plan offering the cloud first: the scheduler refuses it, the stager never copies there
    scheduler(store, rules, Stager(stores=Stores()), SPOT, ONPREM, aws=aws, kubernetes=kubernetes).place_batch()
    assert aws.launched() == []
    (attempt,) = store.attempts_for(task_id)
    assert kubernetes.launched() == [attempt.id]
    assert keys(client, name) == [f"onprem/{TENANT}/{task_id}/inputs/source-face.png"]


def test_nothing_to_stage_touches_no_store(store: Store, tmp_path: Path) -> None:
    """The placement hot path: remote inputs a target reads in place, or a local target, open no store at all."""

    def no_store(_where: TargetStorage | str) -> ObjectStore:
        raise AssertionError("no store may be opened when nothing needs staging")

    aws = NoopProvider(name="aws")
    plain = {"uri": "s3://fp-work/aws/"}  # AWS's own S3: the task's s3:// inputs are read in place
    task_id, _face = submit(store, tmp_path, source="s3://tenant-bucket/face.png")
    minio = {"uri": "s3://fp-work/onprem/", "endpoint_url": "http://minio.example:9000"}
    scheduler(store, policy(plain, plain, minio), Stager(stores=no_store), SPOT, aws=aws).place_batch()
    assert len(aws.launched()) == 1
    assert store.get_task(task_id).state == TaskState.LAUNCHING
