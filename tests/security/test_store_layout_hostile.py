"""Hostile tenants and task ids never climb out of their prefix in a shared store."""

from __future__ import annotations

import pytest

from controlplane.domain.target_storage import StorageKind, TargetStorage, checkpoint_uri, output_uri, staged_uri

S3 = TargetStorage(kind=StorageKind.S3, root="s3://fp-work/aws/")


@pytest.mark.parametrize("tenant", ["..", "../other", "other/acme", "", "Acme", "acme\n", "a" * 64, "acme?x=1"])
def test_a_tenant_that_is_not_one_name_is_refused(tenant: str) -> None:
    with pytest.raises(ValueError, match="tenant"):
        staged_uri(S3, tenant=tenant, task_id="t1", field="source", name="x.png")
    with pytest.raises(ValueError, match="tenant"):
        output_uri(S3, tenant=tenant, task_id="t1")
    with pytest.raises(ValueError, match="tenant"):
        checkpoint_uri(S3, tenant=tenant, task_id="t1")


@pytest.mark.parametrize("task_id", ["..", "../t2", "t1/../../x", "", "t1?x", "t1#f", ".hidden", "t" * 129])
def test_a_task_id_that_is_not_one_segment_is_refused(task_id: str) -> None:
    with pytest.raises(ValueError, match="task id"):
        staged_uri(S3, tenant="acme", task_id=task_id, field="source", name="x.png")


@pytest.mark.parametrize("name", ["../../other/t1/output.png", "..", "a/../../b", "x?y=../z", "\x00/\x00", "%2e%2e/x"])
def test_a_staged_name_stays_inside_the_task_prefix(name: str) -> None:
    uri = staged_uri(S3, tenant="acme", task_id="t1", field="source", name=name)
    assert uri.startswith("s3://fp-work/aws/acme/t1/inputs/source-")
    rest = uri.removeprefix("s3://fp-work/aws/acme/t1/inputs/")
    assert "/" not in rest
    assert "?" not in rest
    assert "\x00" not in rest
    assert "%" not in rest
