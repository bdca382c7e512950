"""The planner guard: a target that could never read a task's inputs, or write its output where the tenant
gets it back, is rejected ``unreachable_input`` / ``unreachable_output`` with the field and the reason."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from controlplane.domain import SignalSample, SignalSnapshot, Task, TaskKind, TaskSpec, TaskState
from controlplane.domain.target_storage import Reach, StorageKind, TargetStorage, reach, reach_output
from controlplane.policy import parse_policy, plan

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
EMPTY = SignalSnapshot(taken_at=NOW, samples={})
S3 = TargetStorage(kind=StorageKind.S3, root="s3://fp-work/aws/")
MINIO = TargetStorage(kind=StorageKind.S3, root="s3://fp-work/k8s/", endpoint_url="http://minio.fp:9000")
BLOB = TargetStorage(kind=StorageKind.AZURE_BLOB, root="az://fpwork/work/")
PVC = TargetStorage(kind=StorageKind.PVC, root="pvc://fp-work/tasks/", mount_path="/mnt/work")


def _task(source: str, target: str = "https://img.example/t.png", output: str = "/var/fp/out/acme/o.png") -> Task:
    spec = TaskSpec(tenant="acme", kind=TaskKind.IMAGE, source_uri=source, target_uri=target, output_uri=output)
    return Task(id="tsk_1", spec=spec, state=TaskState.QUEUED, created_at=NOW, updated_at=NOW)


def _policy(*targets: dict[str, Any]) -> Any:
    return parse_policy({"targets": list(targets), "rules": []})


AWS_BARE = {"name": "aws", "provider": "aws", "private": False}
AWS_STORE = {**AWS_BARE, "storage": {"uri": "s3://fp-work/aws/"}}
AZURE_BARE = {"name": "azure", "provider": "azure", "private": False}
AZURE_STORE = {**AZURE_BARE, "storage": {"uri": "az://fpwork/work/"}}
LOCAL = {"name": "local", "provider": "local", "private": True}


def _verdicts(task: Task, *targets: dict[str, Any]) -> dict[str, str]:
    result = plan(task, EMPTY, _policy(*targets), NOW)
    out = {c.target: "candidate" for c in result.candidates}
    out.update({r.target: r.code for r in result.rejections})
    return out


@pytest.mark.parametrize(
    ("provider", "storage", "uri", "expected"),
    [
        ("local", None, "/var/fp/in/a.png", Reach.IN_PLACE),
        ("local", None, "s3://b/a.png", Reach.IN_PLACE),
        ("aws", None, "/var/fp/in/a.png", Reach.UNREACHABLE),
        ("aws", S3, "/var/fp/in/a.png", Reach.STAGED),
        ("aws", None, "s3://b/a.png", Reach.IN_PLACE),  # the instance profile reads S3
        ("aws", S3, "s3://b/a.png", Reach.IN_PLACE),
        ("aws", None, "az://acct/c/a.png", Reach.UNREACHABLE),
        ("aws", S3, "az://acct/c/a.png", Reach.STAGED),  # copied store to store
        ("azure", None, "s3://b/a.png", Reach.UNREACHABLE),
        ("azure", BLOB, "s3://b/a.png", Reach.STAGED),
        ("azure", BLOB, "az://fpwork/c/a.png", Reach.IN_PLACE),
        ("azure", BLOB, "az://other/c/a.png", Reach.STAGED),
        ("kubernetes", None, "s3://b/a.png", Reach.IN_PLACE),
        ("kubernetes", MINIO, "s3://b/a.png", Reach.STAGED),  # its own endpoint: AWS objects are copied in
        ("kubernetes", PVC, "/var/fp/in/a.png", Reach.STAGED),
        ("azure", None, "https://img.example/a.png", Reach.IN_PLACE),
        ("aws", S3, "ftp://img.example/a.png", Reach.UNREACHABLE),
    ],
)
def test_reach_of_an_input(provider: str, storage: TargetStorage | None, uri: str, expected: Reach) -> None:
    assert reach(provider=provider, storage=storage, uri=uri) is expected


@pytest.mark.parametrize(
    ("provider", "storage", "uri", "expected"),
    [
        ("local", None, "/var/fp/out/o.png", Reach.IN_PLACE),
        ("aws", None, "/var/fp/out/o.png", Reach.UNREACHABLE),  # written on a VM, lost with it
        ("aws", S3, "/var/fp/out/o.png", Reach.STAGED),  # written to the store instead
        ("aws", None, "s3://b/o.png", Reach.IN_PLACE),
        ("azure", BLOB, "s3://b/o.png", Reach.UNREACHABLE),  # never silently written somewhere else
        ("azure", BLOB, "az://fpwork/c/o.png", Reach.IN_PLACE),
    ],
)
def test_reach_of_an_output(provider: str, storage: TargetStorage | None, uri: str, expected: Reach) -> None:
    assert reach_output(provider=provider, storage=storage, uri=uri) is expected


def test_a_local_input_keeps_storeless_clouds_out_and_names_the_field() -> None:
    result = plan(_task("/var/fp/in/acme/face.png"), EMPTY, _policy(AWS_BARE, AZURE_STORE, LOCAL), NOW)
    assert [c.target for c in result.candidates] == ["azure", "local"]
    (rejection,) = result.rejections
    assert (rejection.target, rejection.code) == ("aws", "unreachable_input")
    assert rejection.detail.startswith("source: a file input cannot reach a aws target with no storage")


def test_an_s3_input_reaches_azure_only_through_its_store() -> None:
    task = _task("s3://faces/acme/face.png")
    assert _verdicts(task, AZURE_BARE, LOCAL) == {"azure": "unreachable_input", "local": "candidate"}
    assert _verdicts(task, AZURE_STORE, LOCAL) == {"azure": "candidate", "local": "candidate"}


def test_the_target_field_is_checked_like_the_source() -> None:
    result = plan(_task("https://img.example/s.png", target="az://acct/c/t.png"), EMPTY, _policy(AWS_STORE), NOW)
    assert [c.target for c in result.candidates] == ["aws"]  # staged store to store
    bare = plan(_task("https://img.example/s.png", target="az://acct/c/t.png"), EMPTY, _policy(AWS_BARE), NOW)
    assert bare.rejections[0].code == "unreachable_input"
    assert bare.rejections[0].detail.startswith("target: a az input")


def test_an_output_no_worker_could_write_is_unreachable_output() -> None:
    local_output = _task("s3://faces/acme/face.png")
    assert _verdicts(local_output, AWS_BARE) == {"aws": "unreachable_output"}
    assert _verdicts(local_output, AWS_STORE) == {"aws": "candidate"}
    s3_output = _task("https://img.example/s.png", output="s3://out/acme/o.png")
    assert _verdicts(s3_output, AZURE_STORE, AWS_BARE) == {"azure": "unreachable_output", "aws": "candidate"}


def test_the_guard_comes_before_signals_so_the_receipt_names_the_data() -> None:
    # a full target that also cannot reach the input is rejected for the input: capacity passes, data never does
    full = SignalSample(source="free_gpus", key="aws", value=0, observed_at=NOW, ttl_seconds=60)
    snapshot = SignalSnapshot(taken_at=NOW, samples={"free_gpus/aws": full})
    result = plan(_task("/var/fp/in/acme/face.png"), snapshot, _policy(AWS_BARE), NOW)
    assert result.rejections[0].code == "unreachable_input"
