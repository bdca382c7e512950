"""Request and response bodies of the REST API, validated field by field.

Everything a submitter sends is checked here, before anything is stored:
enums, bounds, label syntax, URI schemes, and that local paths resolve
(symlinks followed) inside the caller's tenant folders of the input and
output roots.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Interval
from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, field_validator

from controlplane.api.remote_uris import RemoteRules, check_remote_input, check_remote_output
from controlplane.domain import DataSensitivity, Priority, TaskKind
from controlplane.domain.json_int import WHOLE_FLOAT
from controlplane.domain.tenant_storage import resolved_inside, tenant_folder
from controlplane.domain.worker_spec import SpecOptions

__all__ = ["MAX_DEADLINE_S", "FieldError", "TaskCreate", "check_input_uri", "check_output_uri", "error_body"]

MAX_DEADLINE_S = 7 * 24 * 3600
MAX_LABELS = 32
_LABEL_KEY = r"^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_INPUT_SCHEMES = ("s3://", "az://", "https://", "http://", "file://")
_OUTPUT_SCHEMES = ("s3://", "az://", "file://")

#: the OpenAPI side of ``_CONTROL``: no control characters (the validators below say which field has one)
_NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]*$"
#: the OpenAPI side of ``infer_kind`` (api/task_file.py): a suffix it knows, before any query or fragment
_KNOWN_SUFFIX = (
    r"^[^?#]*[^/?#]\.([Jj][Pp][Ee]?[Gg]|[Pp][Nn][Gg]|[Ww][Ee][Bb][Pp]|[Mm][Pp]4|[Mm][Oo][Vv]|[Mm][Kk][Vv]"
    r"|[Ww][Ee][Bb][Mm]|[Mm]4[Vv]|[Aa][Vv][Ii])([?#].*)?$"
)

LabelValue = Annotated[str, StringConstraints(max_length=256), Field(json_schema_extra={"pattern": _NO_CONTROL})]
Uri = Annotated[
    str, StringConstraints(min_length=1, max_length=4096), Field(json_schema_extra={"pattern": _NO_CONTROL})
]
#: an http(s) URL; the address rules come after the schema (controlplane/api/notify_url.py)
NotifyUrl = Annotated[
    str, StringConstraints(min_length=8, max_length=2048, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^\x00-\x1f\x7f-\x9f]*$")
]


class TaskCreate(BaseModel):
    """``POST /v1/tasks``."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        # without a kind, the target's suffix must tell image from video (a 422 on kind otherwise)
        json_schema_extra={
            "anyOf": [
                {"required": ["kind"], "properties": {"kind": {"enum": [k.value for k in TaskKind]}}},
                {"properties": {"target": {"pattern": _KNOWN_SUFFIX}}},
            ]
        },
    )

    kind: TaskKind | None = Field(default=None, description="image or video; inferred from the target's suffix")
    source: Uri = Field(description="The face to put in: s3://, az://, https://, file:// or a path under an input root")
    target: Uri = Field(description="The image or video to change")
    output: Uri | None = Field(default=None, description="Where to write; default under the output root")
    options: SpecOptions = Field(default_factory=SpecOptions)
    priority: Priority = Priority.NORMAL
    data_sensitivity: DataSensitivity = DataSensitivity.INTERNAL
    # strict: ``true`` is not 1 and ``"10"`` is not 10 (a 422 naming the field, as the CLI's plan --task)
    deadline_seconds: Annotated[int, Strict(), Interval(ge=1, le=MAX_DEADLINE_S), WHOLE_FLOAT] | None = None
    budget_usd: Annotated[float, Field(strict=True, allow_inf_nan=False)] | None = Field(
        default=None, ge=0.0, le=1_000_000.0
    )
    labels: dict[Annotated[str, StringConstraints(pattern=_LABEL_KEY)], LabelValue] = Field(
        default_factory=dict, json_schema_extra={"maxProperties": MAX_LABELS, "additionalProperties": False}
    )
    notify_url: NotifyUrl | None = Field(
        default=None,
        description="Where the outcome is POSTed, signed (docs/api.md, Webhooks); default: the tenant's, if set",
    )
    notify_events: list[Literal["running"]] = Field(
        default_factory=list,
        max_length=1,
        description="States told besides succeeded, failed and cancelled",
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels")
        for key, text in value.items():
            if _CONTROL.search(text):
                raise ValueError(f"label {key!r} contains control characters")
        return value

    @field_validator("source", "target", "output", "notify_url")
    @classmethod
    def _no_control_characters(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL.search(value):
            raise ValueError("contains control characters")
        return value


class FieldError(ValueError):
    """A value that passed the schema but not the server's rules; names its field."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def _tenant_folders(roots: list[Path], tenant: str | None, *, field: str) -> list[Path]:
    """``<root>/<tenant>`` of each root, roots resolved; a tenant that cannot name a folder reads nothing."""
    if tenant is None:
        raise FieldError("local paths are only allowed for a tenant's own folders", field=field)
    try:
        return [tenant_folder(root, tenant) for root in roots]
    except ValueError as exc:
        raise FieldError(str(exc), field=field) from exc


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def check_input_uri(
    uri: str, *, field: str, input_roots: list[Path], tenant: str | None = None, remote: RemoteRules | None = None
) -> str:
    """Return the URI to hand the worker; local paths must resolve inside ``<input root>/<tenant>/``.

    Symlinks and ``..`` are resolved before the check, so neither another
    tenant's folder nor anything outside the roots can be reached through a
    link. Without a ``tenant`` no local path is accepted. Remote URIs follow
    the worker's rules (no internal addresses, the tenant's s3 and az prefixes
    and web hosts in ``remote``; None: no s3 or az, public web hosts only).
    """
    if uri.startswith(_INPUT_SCHEMES[:4]):
        if uri.startswith("s3://") and "/" not in uri[5:].strip("/"):
            raise FieldError("s3 URIs need a bucket and a key: s3://bucket/key", field=field)
        try:
            return check_remote_input(uri, field=field, rules=remote or RemoteRules())
        except ValueError as exc:
            raise FieldError(str(exc), field=field) from None
    if "://" in uri and not uri.startswith("file://"):
        raise FieldError("unsupported URI scheme; use s3://, az://, https://, file:// or a path", field=field)
    path = _local(uri)
    if not path.is_absolute():
        raise FieldError("local paths must be absolute", field=field)
    folders = _tenant_folders(input_roots, tenant, field=field)
    for folder in folders:
        real = resolved_inside(path, folder)
        if real is not None and real.name.startswith(".") and real.parent.name.startswith("upl_"):
            # an upload's part or bookkeeping (api/upload_state.py): only a finished upload is an input
            raise FieldError("is an unfinished upload; submit the URI its upload gave once complete", field=field)
        if real is not None:
            return str(real)
    where = " or ".join(f"{folder}/" for folder in folders) or "nowhere (no input root is configured)"
    raise FieldError(f"is outside your input folder: local inputs must resolve under {where}", field=field)


def check_output_uri(
    uri: str, *, field: str, output_root: Path, tenant: str | None = None, remote: RemoteRules | None = None
) -> str:
    """Outputs go to s3:// or az:// (the tenant's write prefixes) or a new file under ``<output root>/<tenant>/``.

    A relative path is taken from the output root. The path must not exist
    yet: a task never replaces a file that is already there (another task's
    finished output included).
    """
    if uri.startswith(("s3://", "az://")):
        try:
            return check_remote_output(uri, field=field, rules=remote or RemoteRules())
        except ValueError as exc:
            raise FieldError(str(exc), field=field) from None
    if "://" in uri and not uri.startswith("file://"):
        raise FieldError("outputs go to s3://, az:// or a path under the output root", field=field)
    path = _local(uri)
    root = Path(os.path.realpath(output_root))
    (folder,) = _tenant_folders([root], tenant, field=field)
    real = resolved_inside(path if path.is_absolute() else root / path, folder)
    if real is None:
        raise FieldError(f"is outside your output folder: local outputs must resolve under {folder}/", field=field)
    if os.path.lexists(real):
        raise FieldError("already exists: a task writes a new file, it never replaces one", field=field)
    return str(real)


def error_body(*, code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    """The one JSON error shape: ``{"error": {"code", "message", "field"}}``."""
    return {"error": {"code": code, "message": message, "field": field, **extra}}
