"""A task for a dry run: the ``POST /v1/tasks`` body turned into a :class:`Task`, offline.

``fusionctl plan --task TASK.json`` and ``POST /v1/plan`` both plan a task
that is never stored or run, so this does what ``POST /v1/tasks`` does to
the body (validate it with :class:`TaskCreate`, infer the kind, default the
output) but not what only matters for a real run: local input paths are not
checked against the input roots (they may not exist on the machine planning
them) and nothing gets an id from the store. The task is ``dry-run``,
``queued``, created at the planning time.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from controlplane.api.schemas import TaskCreate
from controlplane.domain import (
    TENANT_PATTERN,
    TENANT_RULE,
    DataSensitivity,
    Priority,
    Task,
    TaskKind,
    TaskSpec,
    TaskState,
    is_tenant_name,
)
from controlplane.domain.fields import FieldError, loads_document, read_document

__all__ = [
    "DEFAULT_TENANT",
    "DRY_RUN_TASK_ID",
    "MAX_TASK_BYTES",
    "TENANT_PATTERN",
    "TaskFileError",
    "check_tenant",
    "infer_kind",
    "load_task_file",
    "loads_task",
    "output_suffix",
    "task_from_create",
    "task_from_json",
    "task_spec_from_request",
]

DRY_RUN_TASK_ID = "dry-run"
DEFAULT_TENANT = "default"
#: a task body is small; the API's own body limit is 1 MiB
MAX_TASK_BYTES = 1 << 20

# one inference for the API's submissions and for dry-run task files
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".m4v", ".avi")
_VIDEO_OUTPUT_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v")


class TaskFileError(FieldError):
    """A task body that is not valid; ``path`` is the JSON path of the bad field (``""``: the whole body)."""


def check_tenant(tenant: str) -> str:
    if not is_tenant_name(tenant):
        raise TaskFileError("tenant", f"must be {TENANT_RULE}")
    return tenant


def _suffix(uri: str) -> str:
    path = uri.split("?", 1)[0].split("#", 1)[0]
    return Path(path).suffix.lower()


def output_suffix(body: TaskCreate, kind: TaskKind) -> str:
    """The default output's suffix: the target's, or what the video pipeline writes."""
    suffix = _suffix(body.target) or (".png" if kind == TaskKind.IMAGE else ".mp4")
    if kind == TaskKind.VIDEO and suffix not in _VIDEO_OUTPUT_SUFFIXES:
        suffix = ".mp4"
    return suffix


def infer_kind(body: TaskCreate) -> TaskKind:
    """``kind`` as given, else from the target's suffix; :class:`TaskFileError` on ``kind`` when unclear."""
    if body.kind is not None:
        return body.kind
    suffix = _suffix(body.target)
    if suffix in _IMAGE_SUFFIXES:
        return TaskKind.IMAGE
    if suffix in _VIDEO_SUFFIXES:
        return TaskKind.VIDEO
    raise TaskFileError("kind", f"cannot tell image from video by {suffix or 'no suffix'}; set kind")


def _location(loc: tuple[int | str, ...]) -> str:
    """Pydantic's error location as a JSON path: ``labels.team``, ``options.quality``, ``a[2]``."""
    path = ""
    for part in loc:
        path = f"{path}[{part}]" if isinstance(part, int) else (f"{path}.{part}" if path else str(part))
    return path


def task_spec_from_request(
    body: TaskCreate, *, tenant: str, kind: TaskKind, source: str, target: str, output: str
) -> TaskSpec:
    """The one conversion of a ``POST /v1/tasks`` body into a :class:`TaskSpec`.

    The URIs come in checked (the API's submit) or as given (a dry run); the
    rest is the body's, as the submitter sent it.
    """
    return TaskSpec(
        tenant=tenant,
        kind=kind,
        source_uri=source,
        target_uri=target,
        output_uri=output,
        priority=Priority(body.priority),
        data_sensitivity=DataSensitivity(body.data_sensitivity),
        deadline_seconds=body.deadline_seconds,
        budget_usd=body.budget_usd,
        options=body.options.model_dump(mode="json"),
        labels=dict(body.labels),
    )


def task_from_create(body: TaskCreate, *, tenant: str, now: datetime, output_root: Path | None = None) -> Task:
    """The task ``POST /v1/tasks`` would store for ``body``, less the URI checks.

    The default output is the API's (``<tenant>/<task id>/swapped<suffix>``
    under the output root, relative when ``output_root`` is None); it does
    not affect placement, but the task reads like the real one.
    """
    tenant = check_tenant(tenant)
    kind = infer_kind(body)
    output = body.output or f"{tenant}/{DRY_RUN_TASK_ID}/swapped{output_suffix(body, kind)}"
    if output_root is not None and "://" not in output and not Path(output).is_absolute():
        output = str(output_root / output)
    spec = task_spec_from_request(body, tenant=tenant, kind=kind, source=body.source, target=body.target, output=output)
    return Task(id=DRY_RUN_TASK_ID, spec=spec, state=TaskState.QUEUED, created_at=now, updated_at=now)


def task_from_json(document: Any, *, tenant: str, now: datetime, output_root: Path | None = None) -> Task:
    """Validate a decoded ``POST /v1/tasks`` body; the first error names its field."""
    if not isinstance(document, dict):
        raise TaskFileError("", "must be a JSON object (the POST /v1/tasks body)")
    try:
        body = TaskCreate.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise TaskFileError(_location(tuple(first["loc"])), f"{first['msg']}{more}") from exc
    return task_from_create(body, tenant=tenant, now=now, output_root=output_root)


def loads_task(text: str | bytes, *, tenant: str, now: datetime) -> Task:
    document = loads_document(text, max_bytes=MAX_TASK_BYTES, error=TaskFileError)
    return task_from_json(document, tenant=tenant, now=now)


def load_task_file(path: Path | str, *, tenant: str, now: datetime) -> Task:
    """Read a task file (the ``POST /v1/tasks`` body); an unreadable or malformed file names the file."""
    return read_document(path, lambda raw: loads_task(raw, tenant=tenant, now=now), error=TaskFileError)
