"""The worker's callback bodies: heartbeat, progress, complete, fail.

One typed contract for both ends: the worker builds its bodies with these
models (``controlplane.worker.callbacks``) and the API parses them with the
same models (``controlplane.api.app``), so what a worker may send, and what
the control plane stores per heartbeat, is bounded in one place.

Unknown fields are ignored (and never stored), so a newer worker still
reports to an older control plane; every known field has a type and a bound.
A body is at most :data:`MAX_CALLBACK_BYTES` and nested at most
:data:`MAX_JSON_DEPTH` deep; :func:`parse_callback` checks both before
decoding (Python's decoder recurses, and very deep input would exhaust it).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, TypeVar

from annotated_types import Interval
from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, ValidationError

from controlplane.domain.fields import FieldError
from controlplane.domain.json_int import WHOLE_FLOAT

__all__ = [
    "MAX_CALLBACK_BYTES",
    "MAX_FAILURE_MESSAGE",
    "MAX_JSON_DEPTH",
    "MAX_PROGRESS_MESSAGE",
    "MAX_PROVIDER_REASON",
    "Completion",
    "Failure",
    "Heartbeat",
    "Progress",
    "callback_json",
    "parse_callback",
]

#: a callback body is small: a progress line or a job summary
MAX_CALLBACK_BYTES = 64 * 1024
#: deeper JSON is refused before it is decoded
MAX_JSON_DEPTH = 32
MAX_PROGRESS_MESSAGE = 500
MAX_FAILURE_MESSAGE = 4000
#: why the worker runs on its execution provider (the load check's findings, dlopen errors included)
MAX_PROVIDER_REASON = 1000
_MAX_COUNT = 10**12
_MAX_SECONDS = 10.0**9

_Count = Annotated[int, Strict(), Interval(ge=0, le=_MAX_COUNT), WHOLE_FLOAT]
_Seconds = Annotated[float, Field(strict=True, ge=0.0, le=_MAX_SECONDS, allow_inf_nan=False)]
_Name = Annotated[str, StringConstraints(max_length=64)]
_Provider = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
_ProviderReason = Annotated[str, StringConstraints(max_length=MAX_PROVIDER_REASON)]


class _Callback(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def stored(self) -> dict[str, Any]:
        """The fields the sender set, as JSON values: what the store keeps and the API shows."""
        return self.model_dump(mode="json", exclude_unset=True)


class Progress(_Callback):
    """How far a job is: ``POST .../progress``, and ``progress`` in a heartbeat."""

    frames: _Count | None = Field(default=None, description="frames done")
    total: _Count | None = Field(default=None, description="frames in the video")
    fps: _Seconds | None = Field(default=None, description="frames swapped per second")
    eta_s: _Seconds | None = Field(default=None, description="seconds left, null when not known yet")
    stage: _Name | None = None
    message: Annotated[str, StringConstraints(max_length=MAX_PROGRESS_MESSAGE)] | None = None
    execution_provider: _Provider | None = Field(default=None, description="tensorrt, cuda or cpu (first report)")
    execution_provider_reason: _ProviderReason | None = Field(default=None, description="why that provider")


class Heartbeat(_Callback):
    """``POST .../heartbeat``: the worker is alive; its last progress, if any."""

    progress: Progress = Field(default_factory=Progress)


class Completion(_Callback):
    """``POST .../complete``: the job's summary (``SwapResult.summary()``)."""

    output: Annotated[str, StringConstraints(max_length=4096)] | None = None
    kind: Annotated[str, StringConstraints(max_length=16)] | None = None
    frames: _Count | None = None
    frames_swapped: _Count | None = None
    faces_swapped: _Count | None = None
    segments_done: _Count | None = None
    segments_skipped: _Count | None = None
    fps: _Seconds | None = None
    wall_s: _Seconds | None = None
    timings_s: Annotated[dict[_Name, _Seconds], Field(max_length=32)] | None = None
    execution_provider: _Provider | None = Field(default=None, description="tensorrt, cuda or cpu")
    execution_provider_reason: _ProviderReason | None = Field(default=None, description="why that provider")
    #: a video's encoder and why it was chosen (``auto`` tries NVENC first)
    encoder: _Name | None = None
    encoder_reason: Annotated[str, StringConstraints(max_length=512)] | None = None
    #: a video's decoder (cpu or nvdec) and why it was chosen (``auto`` tries NVDEC first)
    decoder: _Name | None = None
    decoder_reason: Annotated[str, StringConstraints(max_length=512)] | None = None


class Failure(_Callback):
    """``POST .../fail``: why the job stopped, in the core's error taxonomy."""

    kind: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")] = "internal"
    field: Annotated[str, StringConstraints(max_length=128)] | None = None
    message: Annotated[str, StringConstraints(max_length=MAX_FAILURE_MESSAGE)] = ""
    exit_code: Annotated[int, Strict(), Interval(ge=0, le=255), WHOLE_FLOAT] | None = None


_Model = TypeVar("_Model", bound=_Callback)
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


def _depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects, counted without decoding (strings skipped)."""
    deepest = depth = 0
    for bracket in _BRACKETS.finditer(_STRINGS.sub(b"", raw)):
        depth += 1 if bracket.group() in (b"[", b"{") else -1
        deepest = max(deepest, depth)
    return deepest


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def parse_callback(raw: bytes, model: type[_Model]) -> _Model:
    """Decode and validate one callback body; :class:`FieldError` naming the field (``body`` for the whole)."""
    if len(raw) > MAX_CALLBACK_BYTES:
        raise FieldError("body", f"callback bodies are limited to {MAX_CALLBACK_BYTES} bytes")
    if not raw.strip():
        return model()
    if _depth(raw) > MAX_JSON_DEPTH:
        raise FieldError("body", f"is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: belt and braces after the depth check
        raise FieldError("body", "the body is not JSON") from exc
    if not isinstance(document, dict):
        raise FieldError("body", "the body must be a JSON object")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise FieldError(_location(tuple(first["loc"])), str(first["msg"])) from exc


def callback_json(body: _Callback) -> dict[str, Any]:
    """What the worker posts: the fields it set, as JSON values."""
    return body.stored()
