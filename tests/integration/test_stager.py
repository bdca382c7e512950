"""The stager against moto S3 in server mode: streamed, checked, idempotent per attempt, nothing half-written.

The private-data refusal has its own file (tests/security/test_private_staging.py).
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from controlplane.dataplane.errors import ChecksumMismatch, StagingError, StagingUnavailable
from controlplane.dataplane.s3_store import S3Store
from controlplane.dataplane.stager import Stager, sha256_of_file
from controlplane.dataplane.stores import Stores
from controlplane.domain import DataSensitivity, Task, TaskKind, TaskSpec, TaskState
from controlplane.domain.target_storage import StorageKind, TargetStorage
from controlplane.domain.tenant_storage import TenantStorage
from controlplane.metrics import Metrics
from tests.support.aws import isolate_aws_environment, moto_server

pytestmark = pytest.mark.timeout(60)

TENANT = "acme"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def s3(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Any, str, TargetStorage]:
    isolate_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    client = boto3.client("s3", endpoint_url=moto_url)
    bucket = f"fp-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return client, bucket, TargetStorage(kind=StorageKind.S3, root=f"s3://{bucket}/aws/", endpoint_url=moto_url)


def make_task(source: Path, target: Path | str, *, sensitivity: DataSensitivity = DataSensitivity.INTERNAL) -> Task:
    now = datetime.now(UTC)
    spec = TaskSpec(
        tenant=TENANT,
        kind=TaskKind.IMAGE,
        source_uri=str(source),
        target_uri=str(target),
        output_uri="s3://out/x.png",
        data_sensitivity=sensitivity,
    )
    return Task(
        id=f"tsk_{uuid.uuid4().hex[:26].upper()}", spec=spec, state=TaskState.LAUNCHING, created_at=now, updated_at=now
    )


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path, TenantStorage]:
    folder = tmp_path / "inputs" / TENANT / "upl_1"
    folder.mkdir(parents=True)
    source, target = folder / "face.png", folder / "scene.mp4"
    source.write_bytes(b"face" * 5000)
    target.write_bytes(bytes(range(256)) * 50_000)  # 12.2 MB: a multipart upload of 3 parts
    return source, target, TenantStorage(input_roots=(tmp_path / "inputs",), output_root=tmp_path / "outputs")


def stage(stager: Stager, task: Task, storage: TargetStorage, attempt: str = "att_1") -> list[Any]:
    return stager.stage(
        task, attempt_id=attempt, target="aws-spot", provider="aws", storage=storage, private_target=False
    )


def outcome(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value("fusionplane_staging_total", {"outcome": name})
    return value or 0.0


def test_pending_needs_no_io_and_names_only_local_inputs(tmp_path: Path) -> None:
    task = make_task(tmp_path / "a.png", "s3://bucket/b.png")
    store = TargetStorage(kind=StorageKind.S3, root="s3://fp-work/aws/")
    assert Stager.pending(task, provider="aws", storage=store) == [("source", str(tmp_path / "a.png"))]
    assert Stager.pending(task, provider="local", storage=None) == []
    assert (
        Stager.pending(make_task(tmp_path / "a.png", "https://example.com/b.png"), provider="aws", storage=None) == []
    )  # unreachable is the planner's, not the stager's


def test_staging_copies_then_a_second_call_copies_nothing(
    s3: tuple[Any, str, TargetStorage], inputs: tuple[Path, Path, TenantStorage]
) -> None:
    client, bucket, storage = s3
    source, target, folders = inputs
    metrics = Metrics.create()
    stager = Stager(stores=Stores(), tenant_storage=folders, metrics=metrics)
    task = make_task(source, target)

    first = stage(stager, task, storage)
    assert [(item.field, item.copied) for item in first] == [("source", True), ("target", True)]
    assert first[0].uri == f"s3://{bucket}/aws/{TENANT}/{task.id}/inputs/source-face.png"
    assert first[1].uri == f"s3://{bucket}/aws/{TENANT}/{task.id}/inputs/target-scene.mp4"
    body = client.get_object(Bucket=bucket, Key=f"aws/{TENANT}/{task.id}/inputs/target-scene.mp4")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == sha256_of_file(target)
    stamp = client.head_object(Bucket=bucket, Key=f"aws/{TENANT}/{task.id}/inputs/target-scene.mp4")["ETag"]

    # a retry of the launch, or the next attempt on the same store: found, not copied again
    again = stage(stager, task, storage, attempt="att_2")
    assert [item.copied for item in again] == [False, False]
    assert client.head_object(Bucket=bucket, Key=f"aws/{TENANT}/{task.id}/inputs/target-scene.mp4")["ETag"] == stamp
    assert (outcome(metrics, "copied"), outcome(metrics, "already_there")) == (2, 2)
    assert (
        metrics.registry.get_sample_value("fusionplane_staged_bytes_total")
        == source.stat().st_size + target.stat().st_size
    )


def test_a_different_object_at_the_key_is_replaced(
    s3: tuple[Any, str, TargetStorage], inputs: tuple[Path, Path, TenantStorage]
) -> None:
    client, bucket, storage = s3
    source, target, folders = inputs
    task = make_task(source, target)
    key = f"aws/{TENANT}/{task.id}/inputs/source-face.png"
    client.put_object(Bucket=bucket, Key=key, Body=b"stale bytes from an earlier, different upload")
    staged = stage(Stager(stores=Stores(), tenant_storage=folders), task, storage)
    assert staged[0].copied
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == source.read_bytes()


def test_an_interrupted_copy_leaves_nothing_and_the_retry_completes(
    s3: tuple[Any, str, TargetStorage], inputs: tuple[Path, Path, TenantStorage]
) -> None:
    client, bucket, storage = s3
    _source, target, _folders = inputs
    store = S3Store(endpoint_url=storage.endpoint_url, part_bytes=5 << 20)

    class Broken(io.RawIOBase):
        """The disk fails 7 MB in: a crash of the copy halfway, as the store sees it."""

        def __init__(self) -> None:
            self._file, self._read = target.open("rb"), 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            if self._read > 7_000_000:
                raise OSError("input/output error")
            chunk = self._file.read(size)
            self._read += len(chunk)
            return chunk

    key = f"s3://{bucket}/aws/{TENANT}/tsk_X/inputs/target-scene.mp4"
    broken = Broken()
    with pytest.raises(OSError, match="input/output"):
        store.put(key, broken, sha256=sha256_of_file(target), size=target.stat().st_size)
    broken._file.close()
    assert store.head(key) is None
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # the parts sent were aborted
    with target.open("rb") as handle:
        store.put(key, handle, sha256=sha256_of_file(target), size=target.stat().st_size)
    assert store.head(key) is not None


def test_a_source_changed_after_its_digest_was_recorded_is_refused(
    s3: tuple[Any, str, TargetStorage], inputs: tuple[Path, Path, TenantStorage]
) -> None:
    client, bucket, storage = s3
    source, target, folders = inputs
    recorded = {source: sha256_of_file(source), target: sha256_of_file(target)}
    metrics = Metrics.create()
    stager = Stager(stores=Stores(), recorded_sha256=recorded.get, tenant_storage=folders, metrics=metrics)
    with target.open("r+b") as handle:  # one byte flipped on disk after the upload recorded its sha256
        handle.seek(9_000_000)
        handle.write(b"\xff")
    task = make_task(source, target)
    with pytest.raises(ChecksumMismatch, match=r"target: .*recorded sha256"):
        stage(stager, task, storage)
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bucket, Prefix="aws/").get("Contents", [])]
    assert f"aws/{TENANT}/{task.id}/inputs/target-scene.mp4" not in keys
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert outcome(metrics, "checksum_mismatch") == 1


def test_a_store_that_does_not_answer_is_transient(
    inputs: tuple[Path, Path, TenantStorage], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    from tests.support.loopback import free_port

    dead = TargetStorage(kind=StorageKind.S3, root="s3://b/p/", endpoint_url=f"http://127.0.0.1:{free_port()}")
    source, target, folders = inputs
    with pytest.raises(StagingUnavailable) as caught:
        stage(Stager(stores=Stores(), tenant_storage=folders), make_task(source, target), dead)
    assert caught.value.transient


def test_a_missing_bucket_is_not_transient(
    s3: tuple[Any, str, TargetStorage], inputs: tuple[Path, Path, TenantStorage]
) -> None:
    _client, _bucket, storage = s3
    source, target, folders = inputs
    gone = TargetStorage(kind=StorageKind.S3, root="s3://fp-no-such-bucket/p/", endpoint_url=storage.endpoint_url)
    with pytest.raises(StagingError) as caught:
        stage(Stager(stores=Stores(), tenant_storage=folders), make_task(source, target), gone)
    assert not caught.value.transient
    assert "NoSuchBucket" in str(caught.value)
