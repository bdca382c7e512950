"""The dry-run task (a POST /v1/tasks body, offline) and the plan view of `fusionctl plan` and `POST /v1/plan`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controlplane.api.plan_view import plan_view
from controlplane.api.schemas import TaskCreate
from controlplane.api.task_file import (
    TaskFileError,
    load_task_file,
    loads_task,
    task_from_create,
    task_from_json,
)
from controlplane.domain import (
    Candidate,
    DataSensitivity,
    PlacementPlan,
    Priority,
    Rejection,
    TaskKind,
    TaskState,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_a_body_becomes_the_task_the_api_would_store_without_touching_files() -> None:
    task = task_from_json(
        {
            "source": "/nowhere/on/this/machine/face.png",
            "target": "/film/reel1.MOV",
            "priority": "high",
            "data_sensitivity": "private",
            "deadline_seconds": 600,
            "budget_usd": 3.5,
            "labels": {"campaign": "winter"},
            "options": {"quality": 20},
        },
        tenant="studio",
        now=NOW,
    )
    assert (task.id, task.state, task.created_at, task.updated_at) == ("dry-run", TaskState.QUEUED, NOW, NOW)
    spec = task.spec
    assert spec.tenant == "studio"
    assert spec.kind is TaskKind.VIDEO
    # local paths are kept as given: an offline dry run never resolves or checks them
    assert (spec.source_uri, spec.target_uri) == ("/nowhere/on/this/machine/face.png", "/film/reel1.MOV")
    assert spec.output_uri == "studio/dry-run/swapped.mov"
    assert (spec.priority, spec.data_sensitivity) == (Priority.HIGH, DataSensitivity.PRIVATE)
    assert (spec.deadline_seconds, spec.budget_usd, dict(spec.labels)) == (600, 3.5, {"campaign": "winter"})
    assert spec.options["quality"] == 20
    assert spec.options["swapper"] == "classic"  # defaults filled as the API fills them


def test_defaults_follow_the_api() -> None:
    task = task_from_json({"source": "s3://f/a.png", "target": "s3://m/b.webm"}, tenant="default", now=NOW)
    assert (task.spec.priority, task.spec.data_sensitivity) == (Priority.NORMAL, DataSensitivity.INTERNAL)
    # .webm is a video the worker does not write: the API's default output is .mp4
    assert task.spec.output_uri == "default/dry-run/swapped.mp4"
    under = task_from_create(
        TaskCreate(source="s3://f/a.png", target="s3://m/b.png"), tenant="acme", now=NOW, output_root=Path("/srv/out")
    )
    assert under.spec.output_uri == "/srv/out/acme/dry-run/swapped.png"
    given = task_from_create(
        TaskCreate(source="s3://f/a.png", target="s3://m/b.png", output="s3://o/x.png"), tenant="acme", now=NOW
    )
    assert given.spec.output_uri == "s3://o/x.png"


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("x.jpg", TaskKind.IMAGE),
        ("x.JPEG", TaskKind.IMAGE),
        ("x.png", TaskKind.IMAGE),
        ("x.webp", TaskKind.IMAGE),
        ("x.mp4", TaskKind.VIDEO),
        ("x.mov", TaskKind.VIDEO),
        ("x.mkv", TaskKind.VIDEO),
        ("x.webm", TaskKind.VIDEO),
        ("x.m4v", TaskKind.VIDEO),
        ("x.avi", TaskKind.VIDEO),
        ("x.png?v=1", TaskKind.IMAGE),
    ],
)
def test_kind_is_inferred_from_the_target_suffix(target: str, kind: TaskKind) -> None:
    body = TaskCreate(source="s3://f/a.png", target=f"s3://m/{target}")
    assert task_from_create(body, tenant="t", now=NOW).spec.kind is kind


@pytest.mark.parametrize(
    ("document", "path", "message"),
    [
        ([], "", "must be a JSON object"),
        ({"target": "s3://m/b.png"}, "source", "Field required"),
        ({"source": "a", "target": "b.png", "priority": "asap"}, "priority", "Input should be 'low', 'normal'"),
        ({"source": "a", "target": "b.png", "options": {"quality": 99}}, "options.quality", "Input should be less"),
        ({"source": "a", "target": "b.png", "colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({"source": "a", "target": "b.png", "deadline_seconds": 0}, "deadline_seconds", "Input should be greater"),
        ({"source": "a", "target": "b.txt"}, "kind", "cannot tell image from video by .txt; set kind"),
        ({"source": 1, "target": 2}, "source", "Input should be a valid string (and 1 more)"),
    ],
)
def test_errors_name_the_field(document: Any, path: str, message: str) -> None:
    with pytest.raises(TaskFileError) as info:
        task_from_json(document, tenant="t", now=NOW)
    assert info.value.path == path
    assert info.value.message.startswith(message), info.value.message


@pytest.mark.parametrize("tenant", ["no spaces", "..", "Acme", "a/b", "a.b", "x" * 64])
def test_tenant_is_checked(tenant: str) -> None:
    with pytest.raises(TaskFileError, match=r"^tenant: must be 1-63 lowercase"):
        task_from_json({"source": "a", "target": "b.png"}, tenant=tenant, now=NOW)


def test_files_and_text(tmp_path: Path) -> None:
    good = tmp_path / "task.json"
    good.write_text(json.dumps({"source": "a", "target": "b.png", "priority": "urgent"}), encoding="utf-8")
    assert load_task_file(good, tenant="t", now=NOW).spec.priority is Priority.URGENT
    with pytest.raises(TaskFileError, match=r"cannot read .*nope\.json"):
        load_task_file(tmp_path / "nope.json", tenant="t", now=NOW)
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(TaskFileError, match=r"broken\.json is not valid JSON"):
        load_task_file(broken, tenant="t", now=NOW)
    with pytest.raises(TaskFileError, match="NaN is not valid JSON"):
        loads_task('{"source": "a", "target": "b.png", "budget_usd": NaN}', tenant="t", now=NOW)


def test_plan_view_shape() -> None:
    result = PlacementPlan(
        task_id="dry-run",
        policy_version="abc123",
        decided_at=datetime(2026, 11, 24, 13, 0, tzinfo=UTC),
        candidates=(
            Candidate(
                target="azure-lowlatency",
                provider="azure",
                private=False,
                region="westeurope",
                instance_type="Standard_NC4as_T4_v3",
                max_price_usd_h=0.4,
                expected_usd_h=0.33,
                market="spot",
                expected_usd_per_task=0.0121,
                completion_chance=0.97,
                history_launches=12,
                hedge_group=1,
                reasons=("rule urgent-sla ranks it 1 of 3", "hedged"),
            ),
            Candidate(target="onprem", provider="kubernetes", private=True, reasons=("ranked 3",)),
        ),
        rejections=(Rejection(target="aws-spot", code="stale_price", detail="no fresh spot price"),),
        trace=("rule urgent-sla: matched",),
        signals_used={
            "free_gpus/onprem": {"value": 2.0, "age_seconds": 1.0, "ttl_seconds": float("inf"), "stale": False},
            "observed": datetime(2026, 11, 24, 12, 59, tzinfo=UTC),
        },
    )
    view = plan_view(result)
    assert view == {
        "policy_version": "abc123",
        "decided_at": "2026-11-24T13:00:00Z",
        "candidates": [
            {
                "target": "azure-lowlatency",
                "provider": "azure",
                "private": False,
                "region": "westeurope",
                "instance_type": "Standard_NC4as_T4_v3",
                "max_price_usd_h": 0.4,
                "expected_usd_h": 0.33,
                "market": "spot",
                "expected_usd_per_task": 0.0121,
                "completion_chance": 0.97,
                "history_launches": 12,
                "hedge": 1,
                "reasons": ["rule urgent-sla ranks it 1 of 3", "hedged"],
            },
            {
                "target": "onprem",
                "provider": "kubernetes",
                "private": True,
                "region": None,
                "instance_type": None,
                "max_price_usd_h": None,
                "expected_usd_h": None,
                "market": None,
                "expected_usd_per_task": None,
                "completion_chance": None,
                "history_launches": None,
                "hedge": None,
                "reasons": ["ranked 3"],
            },
        ],
        "rejected": [{"target": "aws-spot", "code": "stale_price", "reasons": ["no fresh spot price"]}],
        "trace": ["rule urgent-sla: matched"],
        # JSON has no infinity and the API refuses NaN/inf: they become null; times become strings
        "signals_used": {
            "free_gpus/onprem": {"value": 2.0, "age_seconds": 1.0, "ttl_seconds": None, "stale": False},
            "observed": "2026-11-24T12:59:00Z",
        },
        "replan_by": None,
    }
    json.dumps(view, allow_nan=False)
