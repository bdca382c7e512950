"""How the worker starts on every backend: names, labels/tags, the spec file and the cloud-init user data.

Rendered here, once, so Kubernetes, EC2 and Azure start the same container
the same way and the secret handling cannot drift between them:

- **The spec** (with the per-attempt callback token) is a file mounted
  read-only at ``/run/fusionplane/spec.json``: a Kubernetes Secret volume, or
  a file cloud-init writes with mode 0600 on the VM. Never an environment
  variable (visible in ``docker inspect`` and ``kubectl describe``), never a
  tag or label (readable by anyone who can list instances), never a log line.
- **Names** are derived from the attempt id, so a second ``launch`` of the
  same attempt finds the first resource (idempotency), and so does a
  restarted control plane.
- **Labels and tags** carry only ids (task, attempt, owner): safe to list.

Why the token may sit in EC2/Azure user data: user data is readable from the
VM itself (instance metadata) and by principals allowed to describe the
instance's attribute (``ec2:DescribeInstanceAttribute`` /
``Microsoft.Compute/virtualMachines/read`` does not return custom data).
The token authorises only the callbacks of one attempt and is refused once
that attempt is final, so what it exposes is bounded by the VM's own
lifetime. The API stores only its sha256.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "LABEL_ATTEMPT",
    "LABEL_OWNER",
    "LABEL_TASK",
    "SPEC_DIR",
    "SPEC_PATH",
    "WorkerImage",
    "cloud_init",
    "resource_name",
    "resource_tags",
    "spec_json",
]

SPEC_DIR = "/run/fusionplane"
SPEC_PATH = f"{SPEC_DIR}/spec.json"
#: label/tag keys (Kubernetes label syntax; EC2 and Azure accept them as tag keys)
LABEL_TASK = "fusionplane.io/task-id"
LABEL_ATTEMPT = "fusionplane.io/attempt-id"
LABEL_OWNER = "fusionplane.io/owner"
_NAME_SAFE = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True, kw_only=True)
class WorkerImage:
    """The container every backend runs, and where its models and caches live on a VM."""

    image: str
    #: ``--gpus all`` on VMs (the GPU image); False for the CPU image
    gpus: bool = True
    #: host directories mounted into the container on VMs (models read-only, TensorRT cache writable)
    models_dir: str = "/var/lib/fusionplane/models"
    trt_cache_dir: str = "/var/lib/fusionplane/trt-cache"
    #: extra ``docker run`` environment (never secrets: they would show in ``docker inspect``)
    env: Mapping[str, str] = field(default_factory=dict)
    #: seconds Docker waits after SIGTERM (the worker checkpoints and exits 75)
    stop_timeout_s: int = 60


def resource_name(prefix: str, attempt_id: str, *, max_length: int = 63) -> str:
    """A deterministic, DNS-safe name for the attempt's resource (Job, VM): same attempt, same name."""
    body = _NAME_SAFE.sub("-", attempt_id.lower()).strip("-")
    name = f"{prefix}-{body}"[:max_length].rstrip("-")
    if not name or not name[0].isalpha():
        raise ValueError(f"cannot make a resource name from {attempt_id!r}")
    return name


def resource_tags(*, task_id: str, attempt_id: str, owner: str) -> dict[str, str]:
    """Labels/tags for every backend resource: ids only, nothing secret."""
    return {LABEL_TASK: task_id, LABEL_ATTEMPT: attempt_id, LABEL_OWNER: owner}


def spec_json(worker_spec: Mapping[str, Any]) -> str:
    """The spec file's content (stable key order, so re-rendering the same attempt gives the same bytes)."""
    return json.dumps(dict(worker_spec), sort_keys=True, separators=(",", ":"))


def cloud_init(worker_spec: Mapping[str, Any], image: WorkerImage, *, attempt_id: str) -> str:
    """``#cloud-config`` user data for EC2 and Azure VMs: write the spec (0600), run the worker once.

    The VM shuts itself down when the container exits (both clouds' spot VMs
    are created to terminate/delete on stop or eviction), so a finished
    attempt stops billing even if the control plane is away; the outcome is
    the worker's callback, and the exit code is kept in
    ``/run/fusionplane/exit_code`` for debugging.
    """
    spec_b64 = base64.b64encode(spec_json(worker_spec).encode()).decode()
    env = " ".join(f"-e {shlex.quote(f'{k}={v}')}" for k, v in sorted(image.env.items()))
    gpus = "--gpus all " if image.gpus else ""
    container = shlex.quote(f"fusionplane-{attempt_id}"[:128])
    run = (
        f"docker run --rm --name {container} {gpus}--stop-timeout {int(image.stop_timeout_s)} "
        f"-v {shlex.quote(image.models_dir)}:/models:ro -v {shlex.quote(image.trt_cache_dir)}:/cache/trt "
        f"-v {SPEC_PATH}:{SPEC_PATH}:ro {env + ' ' if env else ''}{shlex.quote(image.image)} "
        f"--spec {SPEC_PATH}"
    )
    script = "\n".join(
        [
            "#!/bin/sh",
            "# FusionPlane worker bootstrap: one attempt, then power off",
            f"mkdir -p {shlex.quote(image.models_dir)} {shlex.quote(image.trt_cache_dir)}",
            f"chown 1000:1000 {shlex.quote(image.trt_cache_dir)}",
            f"{run}; echo $? > {SPEC_DIR}/exit_code",
            "shutdown -h now",
            "",
        ]
    )
    # write_files with base64 content: the spec never appears in a shell command line (ps) or the runcmd log
    return "\n".join(
        [
            "#cloud-config",
            "write_files:",
            f"  - path: {SPEC_PATH}",
            "    permissions: '0600'",
            "    owner: '1000:1000'",
            "    encoding: b64",
            f"    content: {spec_b64}",
            "  - path: /usr/local/sbin/fusionplane-worker",
            "    permissions: '0700'",
            "    encoding: b64",
            f"    content: {base64.b64encode(script.encode()).decode()}",
            "runcmd:",
            "  - [/usr/local/sbin/fusionplane-worker]",
            "",
        ]
    )
