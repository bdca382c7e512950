"""Reading the worker spec inside the container, and turning its options into the core's.

The spec model itself is part of the domain (:mod:`controlplane.domain.worker_spec`).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from controlplane.domain.worker_spec import MAX_SPEC_BYTES, CallbackSpec, SpecOptions, WorkerSpec, spec_json_schema
from faceswap import BadInput, SwapOptions
from faceswap.access import Access
from faceswap.blend import BlendConfig
from faceswap.fetcher import FetchRules
from faceswap.netguard import AllowedHosts

__all__ = [
    "MAX_SPEC_BYTES",
    "CallbackSpec",
    "SpecOptions",
    "WorkerSpec",
    "load_spec",
    "spec_json_schema",
    "to_access",
    "to_fetch_rules",
    "to_swap_options",
]


def to_swap_options(options: SpecOptions) -> SwapOptions:
    """The core's options for a spec's options block."""
    data = options.model_dump()
    blend = BlendConfig(
        blur=data.pop("blend_blur"), padding=tuple(data.pop("mask_padding")), mode=data.pop("blend_mode")
    )
    return SwapOptions(blend=blend, **data)


def to_access(spec: WorkerSpec) -> Access:
    """The core's grant for a spec's access block; a bad prefix is bad input naming it."""
    try:
        return Access.parse(
            s3_read=spec.access.s3_read,
            s3_write=spec.access.s3_write,
            web_hosts=spec.access.web_hosts,
            az_read=spec.access.az_read,
            az_write=spec.access.az_write,
        )
    except ValueError as exc:
        raise BadInput(str(exc), field="access") from exc


def to_fetch_rules(spec: WorkerSpec) -> FetchRules:
    """The core's fetch rules for a spec's fetch block."""
    try:
        allowed = AllowedHosts.parse(spec.fetch.allow_internal_hosts)
    except ValueError as exc:
        raise BadInput(str(exc), field="fetch.allow_internal_hosts") from exc
    return FetchRules(
        allowed_internal=allowed,
        max_bytes=spec.fetch.max_bytes,
        connect_timeout_s=spec.fetch.connect_timeout_seconds,
        read_timeout_s=spec.fetch.read_timeout_seconds,
    )


def _field_name(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "spec"


def load_spec(path: Path) -> WorkerSpec:
    """Read and validate a spec file; errors name the offending field."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}", field="spec") from exc
    if len(raw) > MAX_SPEC_BYTES:
        raise BadInput(f"is larger than {MAX_SPEC_BYTES} bytes", field="spec")
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise BadInput(f"is not valid JSON: {exc}", field="spec") from exc
    try:
        return WorkerSpec.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadInput(first["msg"], field=_field_name(tuple(first["loc"]))) from exc
