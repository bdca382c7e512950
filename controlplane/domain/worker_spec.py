"""The worker spec: the one JSON document a provider hands to the container.

It is the contract between the control plane (which renders it for every
attempt) and the worker (which runs it), so it lives in the domain; its JSON
Schema is published at docs/worker-spec.schema.json (generated from this
model; a test keeps the two equal).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, ValidationError

from controlplane.domain.errors import InvalidSpec
from controlplane.domain.json_int import JsonInt

__all__ = [
    "MAX_SPEC_BYTES",
    "AccessSpec",
    "CallbackSpec",
    "FetchSpec",
    "SpecOptions",
    "WorkerSpec",
    "parse_worker_spec",
    "spec_json_schema",
]

_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
MAX_SPEC_BYTES = 1 << 20
#: options come from submitters: numbers are numbers (``true`` is not 1, ``"18"`` is not 18)
_Fraction = Annotated[float, Field(strict=True, allow_inf_nan=False)]
_Padding = Annotated[_Fraction, Field(ge=0.0, lt=0.5)]
_S3Prefix = Annotated[str, Field(pattern=r"^s3://[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?(/[^?#]*)?$", max_length=1024)]
#: the finer rules (no "--" in a container, no ".." or percent-encoding in a name) are the worker's, at parse
_AzPrefix = Annotated[
    str, Field(pattern=r"^az://[a-z0-9]{3,24}/[a-z0-9][a-z0-9-]{1,61}[a-z0-9](/[^?#]*)?$", max_length=1024)
]
_Account = Annotated[str, Field(pattern=r"^[a-z0-9]{3,24}$")]
_Bucket = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
_Endpoint = Annotated[str, Field(pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$", max_length=1024)]
_WebHost = Annotated[
    str, Field(pattern=r"^(\*|(\*\.)?[A-Za-z0-9_.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?)$")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CallbackSpec(_Strict):
    url: str = Field(
        pattern=r"^https?://[^\s]+$",
        description="Base URL of this attempt on the control plane, e.g. "
        "https://cp.example/v1/attempts/ATTEMPT_ID; the worker POSTs to URL/heartbeat, "
        "URL/progress, URL/complete and URL/fail.",
    )
    token: SecretStr = Field(description="Per-attempt bearer token; never logged.")
    heartbeat_seconds: float = Field(default=10.0, ge=1.0, le=300.0)
    wait_for_go: bool = Field(
        default=False,
        description="A hedged launch's attempt: before any work, post heartbeats until the answer says "
        'the attempt is running ({"state": "running"}); an answer that it ended (409 attempt_ended: '
        "another attempt of the task won) means exit without touching the output.",
    )


class SpecOptions(_Strict):
    swapper: Literal["classic", "inswapper_128"] = "classic"
    face_selector: str = Field(default="all", pattern=r"^(all|largest|index:[0-9]{1,3})$")
    execution_provider: Literal["auto", "tensorrt", "cuda", "cpu"] = "auto"
    cpu_threads: JsonInt = Field(default=0, ge=0, le=256)
    allow_fallback: StrictBool = False
    #: auto: NVENC where a test encode on the node proves it works, else libx264 (faceswap.encoders)
    encoder: Literal["auto", "libx264", "libx265", "h264_nvenc", "hevc_nvenc"] = "auto"
    #: auto: NVDEC where a test decode on the node proves it works and it decodes the codec, else cpu
    decoder: Literal["auto", "cpu", "nvdec"] = "auto"
    quality: JsonInt = Field(default=18, ge=0, le=51)
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"] = "veryfast"
    image_quality: JsonInt = Field(default=95, ge=1, le=100)
    segment_frames: JsonInt = Field(default=120, ge=1, le=100_000)
    blend_blur: _Fraction = Field(default=0.3, ge=0.0, le=1.0)
    blend_mode: Literal["feather", "poisson"] = "feather"
    mask_padding: tuple[_Padding, _Padding, _Padding, _Padding] = Field(
        default=(0.0, 0.0, 0.0, 0.0), description="Box mask padding: top, right, bottom, left, each in [0, 0.5)"
    )


class AccessSpec(_Strict):
    """This attempt's grant: what its tenant may read and write, nothing more (checked before any I/O)."""

    s3_read: list[_S3Prefix] = Field(
        default_factory=list, max_length=256, description="s3://bucket/prefix folders the inputs may come from"
    )
    s3_write: list[_S3Prefix] = Field(
        default_factory=list, max_length=256, description="s3://bucket/prefix folders the output may go to"
    )
    web_hosts: list[_WebHost] = Field(
        default_factory=lambda: ["*"],
        max_length=256,
        description='Hosts http(s) inputs may come from: name, name:port, *.domain, or "*" for any public host',
    )
    az_read: list[_AzPrefix] = Field(
        default_factory=list,
        max_length=256,
        description="az://account/container/prefix folders of Azure Blob Storage the inputs may come from",
    )
    az_write: list[_AzPrefix] = Field(
        default_factory=list,
        max_length=256,
        description="az://account/container/prefix folders of Azure Blob Storage the output may go to",
    )


class FetchSpec(_Strict):
    """How the worker fetches http(s) and s3 inputs (the operator's settings)."""

    allow_internal_hosts: list[_WebHost] = Field(
        default_factory=list,
        max_length=256,
        description="Internal hosts (host or host:port) the operator allows despite the address rules",
    )
    max_bytes: int = Field(default=2 << 30, ge=1, description="Largest input, checked while downloading")
    connect_timeout_seconds: float = Field(default=10.0, gt=0.0, le=300.0)
    read_timeout_seconds: float = Field(default=60.0, gt=0.0, le=3600.0)


class WorkerSpec(_Strict):
    version: Literal[1] = 1
    task_id: str = Field(pattern=_ID)
    attempt_id: str = Field(pattern=_ID)
    source: str = Field(min_length=1, max_length=4096, description="Path, file://, s3://, az:// or https:// URI")
    target: str = Field(min_length=1, max_length=4096)
    output: str = Field(min_length=1, max_length=4096, description="Path, file://, s3:// or az:// URI")
    checkpoint: str | None = Field(
        default=None,
        max_length=4096,
        description="Directory, s3://bucket/prefix or az://account/container/prefix for video segments",
    )
    options: SpecOptions = Field(default_factory=SpecOptions)
    access: AccessSpec = Field(
        default_factory=AccessSpec,
        description="The tenant's grant; absent: no s3 or az at all and public web hosts only",
    )
    blob_endpoints: dict[_Account, _Endpoint] = Field(
        default_factory=dict,
        max_length=64,
        description="Azure Blob endpoint per storage account (e.g. Azurite's http://127.0.0.1:10000/devstoreaccount1); "
        "an account not named here is reached at https://<account>.blob.core.windows.net",
    )
    s3_endpoints: dict[_Bucket, _Endpoint] = Field(
        default_factory=dict,
        max_length=64,
        description="S3-compatible endpoint per bucket (an in-cluster MinIO or Ceph store); a bucket not named "
        "here is reached at the S3 endpoint of the worker's own AWS settings",
    )
    fetch: FetchSpec = Field(default_factory=FetchSpec)
    callback: CallbackSpec | None = None

    def wire_document(self) -> dict[str, Any]:
        """The JSON document the worker receives: the fields that were given, the token in clear.

        Defaults that were not given stay out, so the document is the one
        that was rendered (the worker applies the same defaults when it
        parses it back).
        """
        document = self.model_dump(mode="json", exclude_unset=True)
        if self.callback is not None:
            document["callback"]["token"] = self.callback.token.get_secret_value()
        return document

    def callback_token(self) -> str | None:
        """The attempt's bearer token, for scrubbing it out of error messages; None without a callback."""
        return self.callback.token.get_secret_value() if self.callback is not None else None


def parse_worker_spec(document: Mapping[str, Any], *, prefix: str = "worker_spec.") -> WorkerSpec:
    """``document`` as a :class:`WorkerSpec`; ``InvalidSpec`` naming the first bad field (``prefix`` + its path).

    The one place a rendered spec is checked: what comes out travels typed,
    and nothing downstream (the providers) checks it again.
    """
    try:
        return WorkerSpec.model_validate(dict(document))
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(part) for part in first["loc"]) or "worker_spec"
        raise InvalidSpec(f"{prefix}{path}: {first['msg']}") from exc


def spec_json_schema() -> str:
    schema = WorkerSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://fusionplane.dev/schemas/worker-spec.schema.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
