"""The task layout in a target's store: staged inputs, output and checkpoints under ``<root><tenant>/<task>/``."""

from __future__ import annotations

import pytest

from controlplane.domain.target_storage import (
    StorageKind,
    TargetStorage,
    checkpoint_uri,
    output_uri,
    staged_uri,
    uri_file_name,
    worker_view,
)

S3 = TargetStorage(kind=StorageKind.S3, root="s3://fp-work/aws/")
BLOB = TargetStorage(kind=StorageKind.AZURE_BLOB, root="az://acct/work/")
PVC = TargetStorage(kind=StorageKind.PVC, root="pvc://work-claim/fp/", mount_path="/mnt/work")
LOCAL = TargetStorage(kind=StorageKind.LOCAL, root="/srv/fp/out/")


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        (S3, "s3://fp-work/aws/acme/tsk_1/inputs/source-face.png"),
        (BLOB, "az://acct/work/acme/tsk_1/inputs/source-face.png"),
        (PVC, "pvc://work-claim/fp/acme/tsk_1/inputs/source-face.png"),
        (LOCAL, "/srv/fp/out/acme/tsk_1/inputs/source-face.png"),
    ],
)
def test_staged_uri_is_under_the_task_prefix_of_every_kind(storage: TargetStorage, expected: str) -> None:
    assert staged_uri(storage, tenant="acme", task_id="tsk_1", field="source", name="face.png") == expected


def test_staged_uri_takes_the_last_segment_of_a_whole_uri() -> None:
    by_name = staged_uri(S3, tenant="acme", task_id="tsk_1", field="target", name="clip.mp4")
    by_path = staged_uri(S3, tenant="acme", task_id="tsk_1", field="target", name="/var/in/acme/upl_9/clip.mp4")
    by_url = staged_uri(S3, tenant="acme", task_id="tsk_1", field="target", name="https://h/x/clip.mp4?sig=1#f")
    assert by_name == by_path == by_url == "s3://fp-work/aws/acme/tsk_1/inputs/target-clip.mp4"


def test_output_takes_the_suffix_of_the_output_then_the_target() -> None:
    assert output_uri(S3, tenant="acme", task_id="t1", like=("/out/acme/result.JPG", "/in/b.mp4")).endswith(
        "/acme/t1/output.jpg"
    )
    assert output_uri(S3, tenant="acme", task_id="t1", like=("/out/acme/result", "/in/b.mp4")).endswith(
        "/acme/t1/output.mp4"
    )
    assert output_uri(S3, tenant="acme", task_id="t1").endswith("/acme/t1/output")


def test_checkpoint_is_one_folder_per_task() -> None:
    assert checkpoint_uri(BLOB, tenant="acme", task_id="t1") == "az://acct/work/acme/t1/checkpoint/"


def test_worker_view_maps_a_pvc_object_under_the_mount_path() -> None:
    uri = output_uri(PVC, tenant="acme", task_id="t1", like=("a.png",))
    assert worker_view(PVC, uri) == "/mnt/work/fp/acme/t1/output.png"
    assert worker_view(S3, "s3://fp-work/aws/x") == "s3://fp-work/aws/x"
    with pytest.raises(ValueError, match="not on claim"):
        worker_view(PVC, "pvc://other-claim/fp/acme/t1/output.png")


@pytest.mark.parametrize(
    ("uri", "name"),
    [
        ("/a/b/face.png", "face.png"),
        ("../../etc/passwd", "passwd"),
        ("/a/..", "input"),
        ("/a/.hidden", "hidden"),
        ("/a/b/", "b"),
        ("/a/we ird%2F$name.png", "we_ird_2F_name.png"),
        ("s3://b/k/x.png?versionId=3", "x.png"),
        ("", "input"),
    ],
)
def test_uri_file_name_is_one_safe_segment(uri: str, name: str) -> None:
    assert uri_file_name(uri) == name


def test_a_long_name_is_cut_and_keeps_its_extension() -> None:
    name = uri_file_name("/in/" + "a" * 300 + ".mp4")
    assert len(name) == 128
    assert name.endswith(".mp4")


@pytest.mark.parametrize("field", ["output", "checkpoint", "", "source/../x"])
def test_only_inputs_are_staged(field: str) -> None:
    with pytest.raises(ValueError, match="is not an input"):
        staged_uri(S3, tenant="acme", task_id="t1", field=field, name="x.png")
